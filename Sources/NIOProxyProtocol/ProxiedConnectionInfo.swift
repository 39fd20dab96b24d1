import NIOCore
import ProxyProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// What a connection's PROXY header says, and the addresses to use for it.
public struct ProxiedConnectionInfo: Hashable, Sendable {
    /// The header as received.
    public var header: ProxyHeader
    /// The header's length on the wire.
    public var headerLength: Int
    /// The socket's peer: the proxy.
    public var peer: SocketAddress
    /// The socket's local address.
    public var localAddress: SocketAddress?
    /// The client: the header's source, or the socket's peer when the header carries no
    /// addresses (`LOCAL`, `UNKNOWN`, `UNSPEC`).
    public var source: SocketAddress
    /// The address the client connected to: the header's destination, or the socket's local
    /// address when the header carries none.
    public var destination: SocketAddress?

    /// Whether the header carried addresses (false for `LOCAL`, `UNKNOWN` and `UNSPEC`).
    public var carriesAddresses: Bool { header.command == .proxy && header.addresses != .unspecified }

    /// Builds the effective addresses for a header received from `peer`.
    public init(header: ProxyHeader, headerLength: Int, peer: SocketAddress, localAddress: SocketAddress?) throws {
        self.header = header
        self.headerLength = headerLength
        self.peer = peer
        self.localAddress = localAddress
        guard header.command == .proxy else {
            self.source = peer
            self.destination = localAddress
            return
        }
        switch header.addresses {
        case .unspecified:
            self.source = peer
            self.destination = localAddress
        case .inet, .inet6:
            self.source = SocketAddress(header.addresses.source!)
            self.destination = SocketAddress(header.addresses.destination!)
        case .unix(let source, let destination):
            self.source = try SocketAddress(unixAddress: source)
            self.destination = try SocketAddress(unixAddress: destination)
        }
    }
}

/// A UNIX address from a header that a `SocketAddress` cannot hold.
struct UnusableUnixAddress: Error, CustomStringConvertible {
    var address: ProxyUnixAddress
    var description: String { "UNIX address \(String(reflecting: address.path)) has a NUL byte (an abstract socket name)" }
}

extension SocketAddress {
    /// The socket address of a UNIX path from a header; an abstract name (with NUL bytes) is an
    /// error rather than a silently shortened path.
    init(unixAddress: ProxyUnixAddress) throws {
        guard !unixAddress.bytes.readableBytesView.contains(0) else { throw UnusableUnixAddress(address: unixAddress) }
        try self.init(unixDomainSocketPath: unixAddress.path)
    }

    /// The socket address of an IP endpoint from a header. Every endpoint has one, so this
    /// cannot fail.
    public init(_ endpoint: ProxyEndpoint) {
        // Built in place: this runs twice for every proxied connection.
        switch endpoint.address {
        case .v4(let v4):
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(endpoint.port).bigEndian
            address.sin_addr.s_addr = v4.rawValue.bigEndian
            self.init(address, host: "")
        case .v6(let v6):
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = in_port_t(endpoint.port).bigEndian
            withUnsafeMutableBytes(of: &address.sin6_addr) { bytes in
                bytes.storeBytes(of: v6.high.bigEndian, toByteOffset: 0, as: UInt64.self)
                bytes.storeBytes(of: v6.low.bigEndian, toByteOffset: 8, as: UInt64.self)
            }
            self.init(address, host: "")
        }
    }

    /// The IP endpoint of a socket address; `nil` for UNIX sockets.
    public var proxyEndpoint: ProxyEndpoint? {
        guard let address = ProxyIPAddress(self), let port else { return nil }
        return ProxyEndpoint(address, port: UInt16(port))
    }
}

extension ProxyAddresses {
    /// The addresses of a connection from `source` to `destination`, for a header sent on its
    /// behalf. When one side is IPv4 and the other IPv6, the IPv4 side is written in its
    /// IPv4-mapped IPv6 form. `nil` for UNIX sockets.
    public init?(source: SocketAddress, destination: SocketAddress) {
        guard let s = source.proxyEndpoint, let d = destination.proxyEndpoint else { return nil }
        func widened(_ endpoint: ProxyEndpoint) -> ProxyEndpoint {
            guard case .v4(let v4) = endpoint.address else { return endpoint }
            return ProxyEndpoint(.v6(ProxyIPv6Address(ipv4Mapped: v4)), port: endpoint.port)
        }
        if let same = ProxyAddresses(source: s, destination: d) {
            self = same
        } else {
            self = ProxyAddresses(source: widened(s), destination: widened(d))!
        }
    }
}
