import NIOCore
import ProxyProtocol
import Testing

@testable import NetProxy

/// The register of a host's own forward connections, which a listener consults for each
/// connection it accepts.
@Suite struct OutgoingConnectionsTests {
    static func address(_ ip: String, _ port: Int) -> SocketAddress { try! SocketAddress(ipAddress: ip, port: port) }

    /// A plain forward's socket is bound to every address of its family: a connection from its
    /// port is ours if it comes from this machine, and from elsewhere it is someone else's.
    @Test func aPlainForwardsPortIsOursFromThisMachineOnly() {
        let outgoing = OutgoingConnections()
        outgoing.localAddresses = LocalAddresses([ProxyIPAddress("10.1.2.3")!])
        let registration = outgoing.register(Self.address("0.0.0.0", 40000))
        let here = Self.address("127.0.0.1", 7000)
        #expect(outgoing.isOurs(peer: Self.address("127.0.0.1", 40000), localAddress: here))
        #expect(outgoing.isOurs(peer: Self.address("::ffff:127.0.0.1", 40000), localAddress: here))
        #expect(outgoing.isOurs(peer: Self.address("10.1.2.3", 40000), localAddress: here))
        #expect(outgoing.isOurs(peer: Self.address("192.0.2.9", 40000), localAddress: Self.address("192.0.2.9", 7000)))
        #expect(!outgoing.isOurs(peer: Self.address("192.0.2.9", 40000), localAddress: here))
        #expect(!outgoing.isOurs(peer: Self.address("127.0.0.1", 40001), localAddress: here))
        outgoing.unregister(registration!)
        #expect(!outgoing.isOurs(peer: Self.address("127.0.0.1", 40000), localAddress: here))
    }

    /// A transparent forward's socket has the client's address: only that address and port.
    @Test func aTransparentForwardsAddressIsOursExactly() {
        let outgoing = OutgoingConnections()
        let here = Self.address("127.0.0.1", 7000)
        let first = outgoing.register(Self.address("198.51.100.7", 40123))!
        let second = outgoing.register(Self.address("2001:db8::7", 40123))!
        #expect(outgoing.isOurs(peer: Self.address("198.51.100.7", 40123), localAddress: here))
        #expect(outgoing.isOurs(peer: Self.address("::ffff:198.51.100.7", 40123), localAddress: here))
        #expect(outgoing.isOurs(peer: Self.address("2001:db8::7", 40123), localAddress: here))
        #expect(!outgoing.isOurs(peer: Self.address("198.51.100.8", 40123), localAddress: here))
        outgoing.unregister(first)
        #expect(!outgoing.isOurs(peer: Self.address("198.51.100.7", 40123), localAddress: here))
        #expect(outgoing.isOurs(peer: Self.address("2001:db8::7", 40123), localAddress: here))
        outgoing.unregister(second)
        #expect(!outgoing.isOurs(peer: Self.address("2001:db8::7", 40123), localAddress: here))
    }

    /// Two registrations of one port (two families) need two removals.
    @Test func aPortIsFreedByItsLastUser() {
        let outgoing = OutgoingConnections()
        let here = Self.address("127.0.0.1", 7000)
        let v4 = outgoing.register(Self.address("0.0.0.0", 50000))!
        let v6 = outgoing.register(Self.address("::", 50000))!
        outgoing.unregister(v4)
        #expect(outgoing.isOurs(peer: Self.address("::1", 50000), localAddress: here))
        outgoing.unregister(v6)
        #expect(!outgoing.isOurs(peer: Self.address("::1", 50000), localAddress: here))
    }

    /// UNIX peers are never forwards' connections.
    @Test func unixPeersAreNotOurs() throws {
        let outgoing = OutgoingConnections()
        #expect(outgoing.register(try SocketAddress(unixDomainSocketPath: "/tmp/x.sock")) == nil)
        #expect(!outgoing.isOurs(peer: try SocketAddress(unixDomainSocketPath: "/tmp/x.sock"), localAddress: nil))
    }
}
