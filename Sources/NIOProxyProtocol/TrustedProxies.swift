import NIOCore
import ProxyProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The proxies allowed to send PROXY headers: addresses and CIDR networks.
///
/// Anyone who may send a header may claim any client address, so a receiver accepts headers only
/// from its own load balancers.
public struct TrustedProxies: Hashable, Sendable {
    /// The trusted networks; empty trusts no one.
    public var networks: [IPNetwork]
    /// Whether every peer on a UNIX domain socket is trusted. Default: no. Set it for a socket
    /// whose file permissions admit only the proxy (a UNIX peer has no address to check).
    public var includesUnixDomainSockets: Bool

    /// Trusts the given networks and, when `includesUnixDomainSockets`, every UNIX socket peer.
    public init(_ networks: [IPNetwork], includesUnixDomainSockets: Bool = false) {
        self.networks = networks
        self.includesUnixDomainSockets = includesUnixDomainSockets
    }

    /// Parses entries such as `127.0.0.1`, `::1` or `10.0.0.0/8`; the error names the bad entry.
    public init(parsing entries: [String]) throws(IPNetworkParseError) {
        var networks: [IPNetwork] = []
        for entry in entries {
            networks.append(try IPNetwork(entry))
        }
        self.init(networks)
    }

    /// Trusts every IP source (`0.0.0.0/0` and `::/0`). Only for tests and closed networks.
    public static let everyone = try! TrustedProxies(parsing: ["0.0.0.0/0", "::/0"])

    /// The loopback addresses `127.0.0.1` and `::1`.
    public static let loopback = try! TrustedProxies(parsing: ["127.0.0.1", "::1"])

    /// Whether `address` may send headers.
    public func contains(_ address: ProxyIPAddress) -> Bool {
        networks.contains { $0.contains(address) }
    }

    /// Whether a socket peer may send headers; a UNIX socket peer only with
    /// ``includesUnixDomainSockets``.
    public func contains(_ address: SocketAddress) -> Bool {
        ProxyIPAddress(address).map(contains) ?? includesUnixDomainSockets
    }
}

extension ProxyIPAddress {
    /// The address of an IP socket address, read from its bytes (no text on the way: this runs
    /// for every connection); `nil` for a UNIX socket.
    public init?(_ address: SocketAddress) {
        switch address {
        case .v4(let v4):
            self = .v4(ProxyIPv4Address(rawValue: UInt32(bigEndian: v4.address.sin_addr.s_addr)))
        case .v6(let v6):
            var raw = v6.address.sin6_addr
            let (high, low) = withUnsafeBytes(of: &raw) { bytes in
                (bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            }
            self = .v6(ProxyIPv6Address(high: UInt64(bigEndian: high), low: UInt64(bigEndian: low)))
        case .unixDomainSocket:
            return nil
        }
    }
}
