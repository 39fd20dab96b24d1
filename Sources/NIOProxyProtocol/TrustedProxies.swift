import NIOCore
import ProxyProtocol

/// The proxies allowed to send PROXY headers: addresses and CIDR networks.
///
/// Anyone who may send a header may claim any client address, so a receiver accepts headers only
/// from its own load balancers.
public struct TrustedProxies: Hashable, Sendable {
    /// The trusted networks; empty with ``trustsEveryone`` false trusts no one.
    public var networks: [IPNetwork]
    /// Whether every source is trusted. Only for tests and closed networks.
    public var trustsEveryone: Bool

    /// Trusts the given networks.
    public init(_ networks: [IPNetwork]) {
        self.networks = networks
        self.trustsEveryone = false
    }

    /// Parses entries such as `127.0.0.1`, `::1` or `10.0.0.0/8`; the error names the bad entry.
    public init(parsing entries: [String]) throws(IPNetworkParseError) {
        var networks: [IPNetwork] = []
        for entry in entries {
            networks.append(try IPNetwork(entry))
        }
        self.init(networks)
    }

    /// Trusts every source.
    public static let everyone: TrustedProxies = {
        var proxies = TrustedProxies([])
        proxies.trustsEveryone = true
        return proxies
    }()

    /// The loopback addresses `127.0.0.1` and `::1`.
    public static let loopback = try! TrustedProxies(parsing: ["127.0.0.1", "::1"])

    /// Whether `address` may send headers.
    public func contains(_ address: IPAddress) -> Bool {
        trustsEveryone || networks.contains { $0.contains(address) }
    }

    /// Whether a socket peer may send headers; a UNIX socket peer is trusted only by ``everyone``.
    public func contains(_ address: SocketAddress) -> Bool {
        if trustsEveryone { return true }
        guard let ip = address.ipAddress.flatMap({ IPAddress($0) }) else { return false }
        return contains(ip)
    }
}
