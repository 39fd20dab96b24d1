import NIOCore
import ProxyProtocol

/// Why a connection was closed before its PROXY header was accepted.
public struct ProxyProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The reasons a connection is refused.
    public enum Reason: Hashable, Sendable {
        /// The socket's peer is not a trusted proxy; nothing was read.
        case untrustedSource
        /// The channel has no peer address to check.
        case unknownSource
        /// The bytes are not a valid header.
        case invalidHeader(ProxyHeaderError)
        /// The header did not arrive in time.
        case headerTimeout(TimeAmount)
        /// The peer closed (or half-closed) the connection after this many bytes, before a header.
        case closedBeforeHeader(receivedBytes: Int)
        /// Reading failed, for example on a reset.
        case readFailed(String)
        /// The server began shutting down while the header was awaited.
        case quiesced
        /// A `LOCAL` header arrived and the configuration refuses them.
        case localNotAccepted
        /// A header without addresses arrived and the configuration refuses them.
        case unspecifiedAddressesNotAccepted
        /// The header's addresses cannot be a socket address (such as an abstract UNIX name).
        case unusableAddress(String)
    }

    /// Why the connection was refused.
    public var reason: Reason
    /// The socket's peer, when known.
    public var peer: SocketAddress?

    /// Creates an error for a connection from `peer`.
    public init(_ reason: Reason, peer: SocketAddress?) {
        self.reason = reason
        self.peer = peer
    }

    public var description: String {
        let from = peer.map { "connection from \($0.displayText)" } ?? "connection"
        switch reason {
        case .untrustedSource: return "\(from): not a trusted proxy"
        case .unknownSource: return "\(from): peer address unknown, cannot check trust"
        case .invalidHeader(let error): return "\(from): invalid PROXY header: \(error)"
        case .headerTimeout(let timeout): return "\(from): no complete PROXY header within \(timeout)"
        case .closedBeforeHeader(let count): return "\(from): closed after \(count) byte(s), before a complete PROXY header"
        case .readFailed(let message): return "\(from): read failed before a complete PROXY header: \(message)"
        case .quiesced: return "\(from): server shutting down before a complete PROXY header"
        case .localNotAccepted: return "\(from): LOCAL PROXY headers are not accepted"
        case .unspecifiedAddressesNotAccepted: return "\(from): PROXY headers without addresses are not accepted"
        case .unusableAddress(let message): return "\(from): PROXY header address unusable: \(message)"
        }
    }
}

extension SocketAddress {
    /// `192.0.2.1:80`, `[2001:db8::1]:80` or a UNIX path, for log lines.
    package var displayText: String {
        if let endpoint = proxyEndpoint { return endpoint.description }
        return pathname ?? description
    }
}
