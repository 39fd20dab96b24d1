import ProxyProtocol

/// One socket the host listens on, as the configuration asks for it.
public struct ListenerPlan: Hashable, Sendable, CustomStringConvertible {
    /// What a listener is for.
    public enum Kind: Hashable, Sendable {
        /// A regular port of a service: clients connect directly.
        case service(String)
        /// A PROXY port; `service` is `nil` when the port has no mapping. `tls` when TLS starts
        /// right after the header.
        case proxy(service: String?, tls: Bool)
        /// The Prometheus metrics endpoint.
        case metrics
    }

    /// What the listener is for.
    public var kind: Kind
    /// The interface address to bind; empty for a UNIX socket.
    public var host: String
    /// The port to bind; 0 for any free port, and for a UNIX socket.
    public var port: Int
    /// The path of a UNIX socket listener (`proxy_unix_sockets`); `nil` for TCP.
    public var path: String? = nil

    public var description: String {
        // An out-of-range port (refused by the start-up checks) still prints, unformatted.
        let endpoint = UInt16(exactly: port).flatMap { port in ProxyIPAddress(host).map { ProxyEndpoint($0, port: port) } }
        let address = path.map { "unix:\($0)" } ?? endpoint?.description ?? "\(host) port \(port)"
        switch kind {
        case .service(let name): return "\(name) on \(address)"
        case .proxy(let service, let tls):
            return "PROXY\(tls ? "+TLS" : "") on \(address) -> \(service ?? "(unmapped: connections closed after the header)")"
        case .metrics: return "metrics on \(address)"
        }
    }
}
