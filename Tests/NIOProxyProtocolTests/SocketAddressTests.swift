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
}
