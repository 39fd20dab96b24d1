import NIOCore
import NIOProxyProtocol
import ProxyProtocol
import Testing

@Suite struct IPNetworkTests {
    @Test func parsesAddressesAndPrefixes() throws {
        #expect(try IPNetwork("10.0.0.0/8").description == "10.0.0.0/8")
        #expect(try IPNetwork("127.0.0.1").description == "127.0.0.1")
        #expect(try IPNetwork("127.0.0.1").prefixLength == 32)
        #expect(try IPNetwork("2001:DB8::/32").description == "2001:db8::/32")
        #expect(try IPNetwork("::1").prefixLength == 128)
        #expect(try IPNetwork("0.0.0.0/0").prefixLength == 0)
    }

    @Test(arguments: [
        ("10.0.0.300/8", IPNetworkParseError.Reason.invalidAddress("10.0.0.300")),
        ("", .invalidAddress("")),
        ("localhost", .invalidAddress("localhost")),
        ("10.0.0.0/33", .invalidPrefixLength("33", maximum: 32)),
        ("10.0.0.0/", .invalidPrefixLength("", maximum: 32)),
        ("10.0.0.0/08", .invalidPrefixLength("08", maximum: 32)),
        ("10.0.0.0/+8", .invalidPrefixLength("+8", maximum: 32)),
        ("::/129", .invalidPrefixLength("129", maximum: 128)),
        ("10.0.0.1/8", .hostBitsSet(suggestion: "10.0.0.0/8")),
        ("2001:db8::1/32", .hostBitsSet(suggestion: "2001:db8::/32")),
    ])
    func rejectsBadEntries(entry: String, reason: IPNetworkParseError.Reason) {
        #expect(throws: IPNetworkParseError(entry: entry, reason: reason)) { try IPNetwork(entry) }
    }

    @Test func errorsNameTheEntry() {
        #expect(throws: IPNetworkParseError(entry: "10.0.0.1/8", reason: .hostBitsSet(suggestion: "10.0.0.0/8"))) {
            try TrustedProxies(parsing: ["127.0.0.1", "10.0.0.1/8"])
        }
        let error = IPNetworkParseError(entry: "10.0.0.1/8", reason: .hostBitsSet(suggestion: "10.0.0.0/8"))
        #expect(error.description == "\"10.0.0.1/8\": address has bits set beyond the prefix; did you mean 10.0.0.0/8?")
    }

    @Test func reasonsCompareWithTheirDetailsAndSayWhatIsWrong() {
        #expect(IPNetworkParseError.Reason.invalidAddress("a") == .invalidAddress("a"))
        #expect(IPNetworkParseError.Reason.invalidAddress("a") != .invalidAddress("b"))
        #expect(IPNetworkParseError.Reason.invalidPrefixLength("33", maximum: 32) != .invalidPrefixLength("33", maximum: 128))
        #expect(IPNetworkParseError.Reason.hostBitsSet(suggestion: "10.0.0.0/8") != .invalidAddress("10.0.0.0/8"))
        #expect(
            IPNetworkParseError(entry: "localhost", reason: .invalidAddress("localhost")).description
                == "\"localhost\": \"localhost\" is not an IPv4 or IPv6 address")
        #expect(
            IPNetworkParseError(entry: "::/129", reason: .invalidPrefixLength("129", maximum: 128)).description
                == "\"::/129\": prefix length \"129\" is not a number from 0 to 128")
    }

    @Test func membership() throws {
        let net = try IPNetwork("192.168.16.0/20")
        #expect(net.contains(ProxyIPAddress("192.168.16.0")!))
        #expect(net.contains(ProxyIPAddress("192.168.31.255")!))
        #expect(!net.contains(ProxyIPAddress("192.168.32.0")!))
        #expect(!net.contains(ProxyIPAddress("192.168.15.255")!))
        #expect(net.contains(ProxyIPAddress("::ffff:192.168.20.1")!))
        #expect(!net.contains(ProxyIPAddress("::192.168.20.1")!))
        let v6 = try IPNetwork("2001:db8:80::/41")
        #expect(v6.contains(ProxyIPAddress("2001:db8:80::1")!))
        #expect(v6.contains(ProxyIPAddress("2001:db8:ff:ffff::")!))
        #expect(!v6.contains(ProxyIPAddress("2001:db8:100::")!))
        #expect(!v6.contains(ProxyIPAddress("10.0.0.1")!))
        let mapped = try IPNetwork("::ffff:10.0.0.0/104")
        #expect(mapped.contains(ProxyIPAddress("10.1.2.3")!))
        #expect(!mapped.contains(ProxyIPAddress("11.1.2.3")!))
        #expect(try IPNetwork("0.0.0.0/0").contains(ProxyIPAddress("203.0.113.9")!))
        #expect(!(try IPNetwork("0.0.0.0/0").contains(ProxyIPAddress("2001:db8::1")!)))
    }

    @Test func socketAddressesBecomeIPAddresses() throws {
        #expect(ProxyIPAddress(try SocketAddress(ipAddress: "192.0.2.1", port: 9)) == ProxyIPAddress("192.0.2.1"))
        #expect(ProxyIPAddress(try SocketAddress(ipAddress: "2001:db8::8:9", port: 9)) == ProxyIPAddress("2001:db8::8:9"))
        #expect(ProxyIPAddress(try SocketAddress(ipAddress: "::ffff:10.0.0.1", port: 9)) == ProxyIPAddress("::ffff:10.0.0.1"))
        #expect(ProxyIPAddress(try SocketAddress(unixDomainSocketPath: "/tmp/x")) == nil)
    }

    @Test func trustedProxies() throws {
        let trusted = try TrustedProxies(parsing: ["127.0.0.2", "10.0.0.0/8", "::1"])
        #expect(trusted.contains(try SocketAddress(ipAddress: "127.0.0.2", port: 1)))
        #expect(trusted.contains(try SocketAddress(ipAddress: "::ffff:127.0.0.2", port: 1)))
        #expect(trusted.contains(try SocketAddress(ipAddress: "10.200.0.1", port: 1)))
        #expect(trusted.contains(try SocketAddress(ipAddress: "::1", port: 1)))
        #expect(!trusted.contains(try SocketAddress(ipAddress: "127.0.0.3", port: 1)))
        #expect(!trusted.contains(try SocketAddress(unixDomainSocketPath: "/tmp/x")))
        #expect(!TrustedProxies.everyone.contains(try SocketAddress(unixDomainSocketPath: "/tmp/x")))
        #expect(TrustedProxies.everyone.contains(try SocketAddress(ipAddress: "203.0.113.1", port: 1)))
        #expect(TrustedProxies.everyone.contains(try SocketAddress(ipAddress: "2001:db8::1", port: 1)))
        #expect(!TrustedProxies([]).contains(try SocketAddress(ipAddress: "127.0.0.1", port: 1)))
        #expect(TrustedProxies.loopback.contains(try SocketAddress(ipAddress: "::ffff:127.0.0.1", port: 9)))
    }
}
