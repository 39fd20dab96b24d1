import ProxyProtocol

/// One socket the host listens on, as the configuration asks for it.
public struct ListenerPlan: Hashable, Sendable, CustomStringConvertible {
    /// What a listener is for.
    ///
    /// A struct rather than an enum, so that a later kind of listener is not a breaking change:
    /// compare with `==`, or read ``service``, ``isProxy``, ``isTLS`` and ``isMetrics``.
    public struct Kind: Hashable, Sendable {
        enum Base: Hashable, Sendable {
            case service(String)
            case proxy(service: String?, tls: Bool)
            case metrics
        }

        let base: Base

        /// A regular port of a service: clients connect directly.
        public static func service(_ name: String) -> Kind { Kind(base: .service(name)) }
        /// A PROXY port; `service` is `nil` when the port has no mapping. `tls` when TLS starts
        /// right after the header.
        public static func proxy(service: String?, tls: Bool) -> Kind { Kind(base: .proxy(service: service, tls: tls)) }
        /// The Prometheus metrics endpoint.
        public static let metrics = Kind(base: .metrics)

        /// The service that gets the connections: a regular port's, or a PROXY port's mapping;
        /// `nil` for an unmapped PROXY port and for the metrics endpoint.
        public var service: String? {
            switch base {
            case .service(let name): name
            case .proxy(let service, _): service
            case .metrics: nil
            }
        }

        /// Whether connections start with a PROXY header.
        public var isProxy: Bool { if case .proxy = base { true } else { false } }
        /// Whether TLS starts right after the header.
        public var isTLS: Bool { if case .proxy(_, true) = base { true } else { false } }
        /// Whether this is the metrics endpoint.
        public var isMetrics: Bool { base == .metrics }
    }

    /// What the listener is for.
    public var kind: Kind
    /// The interface address to bind; empty for a UNIX socket.
    public var host: String
    /// The port to bind; 0 for any free port, and for a UNIX socket.
    public var port: Int
    /// The path of a UNIX socket listener (`proxy_unix_sockets`); `nil` for TCP.
    public var path: String? = nil

    public var description: String { description(at: addressText) }

    /// Where it listens: `127.0.0.1:15222`, `[::1]:15222`, `unix:/path`.
    package var addressText: String {
        if let path { return "unix:\(path)" }
        // An out-of-range port (refused by the start-up checks) still prints, unformatted.
        guard let port = UInt16(exactly: port), let ip = ProxyIPAddress(host) else { return "\(host) port \(port)" }
        return ProxyEndpoint(ip, port: port).description
    }

    /// What it is for, listening at `addresses` (one, or several of the same port).
    package func description(at addresses: String) -> String {
        switch kind.base {
        case .service(let name): return "\(name) on \(addresses)"
        case .proxy(let service, let tls):
            return "PROXY\(tls ? "+TLS" : "") on \(addresses) -> \(service ?? "(unmapped: connections closed after the header)")"
        case .metrics: return "metrics on \(addresses)"
        }
    }
}
