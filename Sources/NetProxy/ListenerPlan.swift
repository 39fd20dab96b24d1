import Foundation
import NIOProxyProtocol
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
    /// The interface address to bind.
    public var host: String
    /// The port to bind; 0 for any free port.
    public var port: Int

    public var description: String {
        // An out-of-range port (refused by the start-up checks) still prints, unformatted.
        let endpoint = UInt16(exactly: port).flatMap { port in ProxyIPAddress(host).map { ProxyEndpoint($0, port: port) } }
        let address = endpoint?.description ?? "\(host) port \(port)"
        switch kind {
        case .service(let name): return "\(name) on \(address)"
        case .proxy(let service, let tls):
            return "PROXY\(tls ? "+TLS" : "") on \(address) -> \(service ?? "(unmapped: connections closed after the header)")"
        case .metrics: return "metrics on \(address)"
        }
    }
}

/// The listeners a configuration asks for, checked against the registered services.
struct HostPlan {
    var listeners: [ListenerPlan] = []
    var warnings: [String] = []
    var trustedProxies: TrustedProxies

    init(_ configuration: NetProxyConfiguration, serviceNames: Set<String>) throws(NetProxyConfigurationError) {
        func checkInterfaces(_ list: [String], _ key: String) throws(NetProxyConfigurationError) {
            for (index, entry) in list.enumerated() where ProxyIPAddress(entry) == nil {
                throw NetProxyConfigurationError("\(key)[\(index)]: \"\(entry)\" is not an IPv4 or IPv6 address")
            }
        }
        func unknownService(_ name: String) -> String {
            "unknown service \"\(name)\" (known: \(serviceNames.sorted().joined(separator: ", ")))"
        }
        try checkInterfaces(configuration.interfaces, "interfaces")

        // Regular ports.
        for name in configuration.servicePorts.keys.sorted() {
            guard serviceNames.contains(name) else { throw NetProxyConfigurationError("\(name)_ports: \(unknownService(name))") }
        }
        for name in configuration.serviceInterfaces.keys.sorted() {
            guard serviceNames.contains(name) else { throw NetProxyConfigurationError("\(name)_interfaces: \(unknownService(name))") }
            try checkInterfaces(configuration.serviceInterfaces[name]!, "\(name)_interfaces")
        }
        for name in configuration.servicePorts.keys.sorted() {
            for port in configuration.servicePorts[name]! {
                for host in configuration.serviceInterfaces[name] ?? configuration.interfaces {
                    listeners.append(ListenerPlan(kind: .service(name), host: host, port: port))
                }
            }
        }

        // PROXY ports.
        for port in configuration.proxyPortMappings.keys.sorted() {
            let name = configuration.proxyPortMappings[port]!
            guard serviceNames.contains(name) else {
                throw NetProxyConfigurationError("proxy_port_mappings: port \(port) maps to \(unknownService(name))")
            }
        }
        let proxyPorts = configuration.proxyPorts ?? configuration.proxyPortMappings.keys.sorted()
        for port in configuration.proxyPortMappings.keys.sorted() where !proxyPorts.contains(port) {
            throw NetProxyConfigurationError("proxy_port_mappings: port \(port) is not in proxy_ports")
        }
        for port in configuration.proxyTLSPorts where !proxyPorts.contains(port) {
            throw NetProxyConfigurationError("proxy_tls_ports: port \(port) is not a PROXY port")
        }
        if !configuration.proxyTLSPorts.isEmpty {
            guard configuration.tlsCertificatePath != nil, configuration.tlsKeyPath != nil else {
                throw NetProxyConfigurationError("proxy_tls_ports needs proxy_tls_certificate and proxy_tls_key")
            }
        }
        let proxyInterfaces = configuration.proxyInterfaces ?? configuration.interfaces
        try checkInterfaces(proxyInterfaces, "proxy_interfaces")
        for port in proxyPorts {
            let service = configuration.proxyPortMappings[port]
            if service == nil {
                warnings.append("PROXY port \(port) has no entry in proxy_port_mappings: its connections will be closed after the header")
            }
            for host in proxyInterfaces {
                listeners.append(ListenerPlan(kind: .proxy(service: service, tls: configuration.proxyTLSPorts.contains(port)), host: host, port: port))
            }
        }

        if let metricsPort = configuration.metricsPort {
            let metricsInterfaces = configuration.metricsInterfaces ?? configuration.interfaces
            try checkInterfaces(metricsInterfaces, "metrics_interfaces")
            for host in metricsInterfaces {
                listeners.append(ListenerPlan(kind: .metrics, host: host, port: metricsPort))
            }
        }

        for listener in listeners where !(0...65535).contains(listener.port) {
            throw NetProxyConfigurationError("\(listener): \(listener.port) is not a port (0-65535)")
        }
        // The same address and port twice (port 0 is a new free port each time).
        var seen: [String: ListenerPlan] = [:]
        for listener in listeners where listener.port != 0 {
            let key = "\(ProxyIPAddress(listener.host)!)|\(listener.port)"
            if let first = seen[key] {
                throw NetProxyConfigurationError("port \(listener.port) on \(listener.host) is used twice: \(first) and \(listener)")
            }
            seen[key] = listener
        }

        // Trust.
        if configuration.trustedProxies.isEmpty {
            trustedProxies = .everyone
            warnings.append("proxy_trusted_proxies is empty: ANY client may send a PROXY header and claim any address")
        } else {
            do {
                trustedProxies = try TrustedProxies(parsing: configuration.trustedProxies)
            } catch {
                throw NetProxyConfigurationError("proxy_trusted_proxies: \(error)")
            }
        }
        guard (ProxyHeader.v2FixedLength...ProxyHeader.maximumV2Length).contains(configuration.maximumHeaderSize) else {
            throw NetProxyConfigurationError("proxy_max_header_size: \(configuration.maximumHeaderSize) is not in 16...65551")
        }
        for (key, seconds) in [("proxy_header_timeout", configuration.headerTimeout), ("shutdown_grace_period", configuration.shutdownGracePeriod)]
        where !(seconds > 0 && seconds <= 86400) {
            throw NetProxyConfigurationError("\(key): \(seconds) is not a number of seconds from above 0 to 86400")
        }
        if configuration.headerTimeout < 3 {
            warnings.append("proxy_header_timeout is \(configuration.headerTimeout) s; the PROXY specification asks for at least 3 s")
        }
    }
}
