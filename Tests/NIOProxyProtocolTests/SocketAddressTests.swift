import NIOCore
import NIOProxyProtocol
import ProxyProtocol
import Testing

@Suite struct SocketAddressTests {
    @Test(arguments: ["192.0.2.1", "0.0.0.0", "255.255.255.255", "2001:db8::8:9", "::", "::ffff:10.0.0.1"])
    func everyEndpointIsASocketAddress(address: String) throws {
        let endpoint = ProxyEndpoint(try #require(ProxyIPAddress(address)), port: 65535)
        // No `try`: the conversion cannot fail.
        let socketAddress = SocketAddress(endpoint)
        #expect(socketAddress == (try SocketAddress(ipAddress: address, port: 65535)))
        #expect(socketAddress.proxyEndpoint == endpoint)
    }

    @Test func displayTextIsOneFormForEveryFamily() throws {
        #expect(try SocketAddress(ipAddress: "192.0.2.1", port: 80).displayText == "192.0.2.1:80")
        #expect(try SocketAddress(ipAddress: "2001:DB8::1", port: 80).displayText == "[2001:db8::1]:80")
        #expect(try SocketAddress(unixDomainSocketPath: "/run/x.sock").displayText == "unix:/run/x.sock")
    }
}
