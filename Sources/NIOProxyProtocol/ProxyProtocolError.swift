import NIOCore
import ProxyProtocol

/// Why a connection was closed before its PROXY header was accepted.
///
/// ``reason`` says what happened; ``underlying`` keeps the error behind it (a
/// `ProxyHeaderError` for an invalid header, the channel's error for a failed read), and
/// ``receivedBytes`` how much had arrived.
public struct ProxyProtocolError: Error, Sendable, CustomStringConvertible {
    /// The reasons a connection is refused.
    ///
    /// Later versions may add reasons: compare with `==` and keep a default branch when
    /// switching over ``name``.
    public struct Reason: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, CaseIterable {
            case untrustedSource = "untrusted_source"
            case unknownSource = "unknown_source"
            case invalidHeader = "invalid_header"
            case headerTimeout = "header_timeout"
            case closedBeforeHeader = "closed_before_header"
            case readFailed = "read_failed"
            case shuttingDown = "shutting_down"
            case localNotAccepted = "local_not_accepted"
            case unspecifiedAddressesNotAccepted = "unspecified_not_accepted"
            case unusableAddress = "unusable_address"
            case removedBeforeHeader = "removed_before_header"
            case pipelineFailed = "pipeline_failed"
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// The socket's peer is not a trusted proxy; nothing was read.
        public static let untrustedSource = Reason(.untrustedSource)
        /// The channel has no peer address to check.
        public static let unknownSource = Reason(.unknownSource)
        /// The bytes are not a valid header; ``ProxyProtocolError/underlying`` is the
        /// `ProxyHeaderError` that says what and where.
        public static let invalidHeader = Reason(.invalidHeader)
        /// The header did not arrive within the configured time.
        public static let headerTimeout = Reason(.headerTimeout)
        /// The peer closed (or half-closed) the connection before a complete header.
        public static let closedBeforeHeader = Reason(.closedBeforeHeader)
        /// Reading failed, for example on a reset; ``ProxyProtocolError/underlying`` is the error.
        public static let readFailed = Reason(.readFailed)
        /// The server began shutting down while the header was awaited.
        public static let shuttingDown = Reason(.shuttingDown)
        /// A `LOCAL` header arrived and the configuration refuses them.
        public static let localNotAccepted = Reason(.localNotAccepted)
        /// A header without addresses arrived and the configuration refuses them.
        public static let unspecifiedAddressesNotAccepted = Reason(.unspecifiedAddressesNotAccepted)
        /// The header's addresses cannot be a socket address (such as an abstract UNIX name);
        /// ``ProxyProtocolError/underlying`` says why.
        public static let unusableAddress = Reason(.unusableAddress)
        /// Another handler removed the PROXY handler before a header arrived.
        public static let removedBeforeHeader = Reason(.removedBeforeHeader)
        /// The pipeline refused the handler that keeps the connection's information (it was
        /// closing); ``ProxyProtocolError/underlying`` is its error.
        public static let pipelineFailed = Reason(.pipelineFailed)

        /// Every reason this version knows, for example to export a counter per reason from zero.
        public static let all: [Reason] = Base.allCases.map(Reason.init)

        /// A stable snake_case name, for metrics labels and structured logs.
        public var name: String { base.rawValue }

        public var description: String { name }
    }

    /// Why the connection was refused.
    public var reason: Reason
    /// The socket's peer, when known.
    public var peer: SocketAddress?
    /// How many bytes had arrived when the connection was refused.
    public var receivedBytes: Int
    /// The error behind the refusal, where there is one.
    public var underlying: (any Error)?
    /// The configured header timeout, for ``Reason/headerTimeout``.
    public var headerTimeout: Duration?

    /// Creates an error for a connection from `peer`.
    public init(
        _ reason: Reason, peer: SocketAddress?, receivedBytes: Int = 0, underlying: (any Error)? = nil,
        headerTimeout: Duration? = nil
    ) {
        self.reason = reason
        self.peer = peer
        self.receivedBytes = receivedBytes
        self.underlying = underlying
        self.headerTimeout = headerTimeout
    }

    public var description: String {
        let from = peer.map { "connection from \($0.displayText)" } ?? "connection"
        let cause = underlying.map { ": \($0)" } ?? ""
        switch reason {
        case .untrustedSource: return "\(from): not a trusted proxy"
        case .unknownSource: return "\(from): peer address unknown, cannot check trust"
        case .invalidHeader: return "\(from): invalid PROXY header\(cause)"
        case .headerTimeout:
            let within = headerTimeout.map { " within \(TimeAmount($0))" } ?? " in time"
            return "\(from): no complete PROXY header\(within) (\(receivedBytes) byte(s) received)"
        case .closedBeforeHeader: return "\(from): closed after \(receivedBytes) byte(s), before a complete PROXY header"
        case .readFailed: return "\(from): read failed before a complete PROXY header\(cause)"
        case .shuttingDown: return "\(from): server shutting down before a complete PROXY header"
        case .localNotAccepted: return "\(from): LOCAL PROXY headers are not accepted"
        case .unspecifiedAddressesNotAccepted: return "\(from): PROXY headers without addresses are not accepted"
        case .unusableAddress: return "\(from): PROXY header address unusable\(cause)"
        case .removedBeforeHeader: return "\(from): PROXY handler removed before a complete header"
        case .pipelineFailed: return "\(from): pipeline closing as the header was accepted\(cause)"
        default: return "\(from): refused (\(reason))"
        }
    }
}
