import NIOCore
import NIOProxyProtocol
import ProxyProtocol

/// What a forward knows of the host it runs in: its outgoing connections, to be recognised when
/// they arrive back, and this machine's addresses, which a transparent connection cannot take.
struct OwnHost: Sendable {
    let outgoing: OutgoingConnections
    let addresses: LocalAddresses

    /// Whether a transparent forward may connect from `info`'s client address.
    ///
    /// Not for a `LOCAL` header (the balancer speaking for itself, as in a health check), nor for
    /// a header without addresses: there is no client to stand for, and the source is the
    /// balancer's own socket. Nor for a client on this machine: its address is taken already
    /// (binding it fails with `EADDRINUSE`), and a connection from it needs no disguise.
    func canImpersonate(_ info: ConnectionInfo) -> Bool {
        if let header = info.proxy?.header, header.command != .proxy || header.addresses.family == .unspecified { return false }
        guard let source = ProxyIPAddress(info.source) else { return false }
        return !addresses.contains(source)
    }
}
