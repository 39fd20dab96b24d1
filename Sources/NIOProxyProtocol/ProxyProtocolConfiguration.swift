import NIOCore
import ProxyProtocol

/// How a server reads PROXY headers.
public struct ProxyProtocolConfiguration: Sendable {
    /// What to do with a header that carries no addresses: version 2 `PROXY` with an `UNSPEC`
    /// family or transport, or version 1 `UNKNOWN`.
    ///
    /// A struct rather than an enum, so that a new policy is not a breaking change: compare with
    /// `==`.
    public struct UnspecifiedAddressPolicy: Hashable, Sendable {
        private enum Base: Hashable, Sendable {
            case useSocketAddresses
            case reject
        }

        private var base: Base

        private init(_ base: Base) { self.base = base }

        /// Accept, and use the socket's own endpoints (the specification's advice for `UNKNOWN`).
        public static let useSocketAddresses = UnspecifiedAddressPolicy(.useSocketAddresses)
        /// Close the connection.
        public static let reject = UnspecifiedAddressPolicy(.reject)
    }

    /// Who may send headers. Default: loopback only.
    public var trustedProxies: TrustedProxies
    /// How long the whole header may take to arrive. Default 10 seconds; the specification asks
    /// for at least 3.
    public var headerTimeout: Duration
    /// The longest header accepted, 16...65551. Default 4096: far above any header a load
    /// balancer sends without large TLVs, and a bound on what one connection can make us buffer.
    /// Read-only: the initializer checks it.
    public private(set) var maximumHeaderLength: Int
    /// The versions accepted. Default: both.
    public var acceptedVersions: ProxyVersions
    /// Whether version 2 `LOCAL` headers (health checks) are accepted. Default: yes.
    public var acceptsLocal: Bool
    /// What to do with headers without addresses. Default: ``UnspecifiedAddressPolicy/useSocketAddresses``.
    public var unspecifiedAddresses: UnspecifiedAddressPolicy

    /// Creates a configuration; every default is the documented one.
    ///
    /// A `maximumHeaderLength` outside 16...65551 is a programming error, and traps here rather
    /// than on a connection; check a value read from a file before passing it.
    public init(
        trustedProxies: TrustedProxies = .loopback,
        headerTimeout: Duration = .seconds(10),
        maximumHeaderLength: Int = 4096,
        acceptedVersions: ProxyVersions = .all,
        acceptsLocal: Bool = true,
        unspecifiedAddresses: UnspecifiedAddressPolicy = .useSocketAddresses
    ) {
        precondition(
            (ProxyHeader.v2FixedLength...ProxyHeader.maximumV2Length).contains(maximumHeaderLength),
            "maximumHeaderLength must be 16...65551, not \(maximumHeaderLength)"
        )
        self.trustedProxies = trustedProxies
        self.headerTimeout = headerTimeout
        self.maximumHeaderLength = maximumHeaderLength
        self.acceptedVersions = acceptedVersions
        self.acceptsLocal = acceptsLocal
        self.unspecifiedAddresses = unspecifiedAddresses
    }
}
