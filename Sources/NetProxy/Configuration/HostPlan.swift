import NIOProxyProtocol
import ProxyProtocol

/// The listeners a configuration asks for, checked against the registered services.
///
/// The checks run in a fixed order (interfaces, regular ports, PROXY ports, metrics, port
/// numbers, trust, limits), so a configuration with several faults always reports the same one.
struct HostPlan {
    /// How one PROXY listener reads headers, after `proxy_port_options`.
    struct ProxyPolicy {
        var header: ProxyProtocolConfiguration
        /// Sources served without a header; `nil` for none.
        var directClients: TrustedProxies?
        /// Deadlines and budgets after `proxy_port_options` (or the UNIX socket's options).
        var connections: ConnectionPolicy
    }

    let listeners: [ListenerPlan]
    let warnings: [String]
    /// By PROXY port.
    let policies: [Int: ProxyPolicy]
    /// By `proxy_unix_sockets` path: every peer is trusted, the rest as the socket's options or
    /// the global keys say.
    let unixPolicies: [String: ProxyPolicy]
    /// `max_connections`, or its default from the descriptor limit.
    let maxConnections: Int
    /// `max_connections_per_source`, or its default.
    let maxConnectionsPerSource: Int

    /// - Parameter eventLoops: The host's event loops: a TCP listener has a socket on each.
    init(_ configuration: NetProxyConfiguration, serviceNames: Set<String>, eventLoops: Int) throws(NetProxyConfigurationError) {
        var warnings: [String] = []
        try Self.checkInterfaces(configuration.interfaces, "interfaces")
        var listeners = try Self.regularListeners(configuration, serviceNames: serviceNames)
        listeners += try Self.proxyListeners(configuration, serviceNames: serviceNames, warnings: &warnings)
        listeners += try Self.unixListeners(configuration, serviceNames: serviceNames)
        listeners += try Self.metricsListeners(configuration)
        try Self.checkPorts(listeners)
        let globals = try Self.globalLists(configuration, warnings: &warnings)
        try Self.checkLimits(configuration, warnings: &warnings)
        let proxyPorts = listeners.compactMap { listener -> Int? in
            guard listener.kind.isProxy, listener.path == nil else { return nil }
            return listener.port
        }
        let maxConnections =
            configuration.maxConnections
            ?? Self.defaultMaxConnections(
                descriptorLimit: DescriptorLimit.current?.soft, listeningSockets: Self.listeningSockets(listeners, eventLoops: eventLoops))
        // Under a low descriptor limit the default max_connections is small, and 100 per source
        // would let one client take all of it.
        let perSource = configuration.maxConnectionsPerSource ?? (configuration.maxConnections == nil ? min(100, max(1, maxConnections / 4)) : 100)
        (self.policies, self.unixPolicies) = try Self.proxyPolicies(
            configuration, globals, proxyPorts: proxyPorts, tlsPorts: Set(configuration.proxyTLSPorts), perSource: perSource,
            warnings: &warnings)
        try Self.checkServiceIdleTimeouts(configuration, serviceNames: serviceNames)
        let explicitPerSource =
            [("max_connections_per_source", configuration.maxConnectionsPerSource)]
            + configuration.proxyPortOptions.keys.sorted().map { port in
                ("proxy_port_options.\(port).max_connections_per_source", configuration.proxyPortOptions[port]!.maxConnectionsPerSource)
            }
        for case (let key, let limit?) in explicitPerSource where limit >= maxConnections {
            warnings.append("\(key) (\(limit)) is not below max_connections (\(maxConnections)): one client can take every connection")
        }
        self.maxConnections = maxConnections
        self.maxConnectionsPerSource = perSource
        self.listeners = listeners
        self.warnings = warnings
    }

    private static func checkInterfaces(_ list: [String], _ key: String) throws(NetProxyConfigurationError) {
        for (index, entry) in list.enumerated() where ProxyIPAddress(entry) == nil {
            throw NetProxyConfigurationError("\(key)[\(index)]: \"\(entry)\" is not an IPv4 or IPv6 address")
        }
    }

    private static func unknownService(_ name: String, _ serviceNames: Set<String>) -> String {
        "unknown service \"\(name)\" (known: \(serviceNames.sorted().joined(separator: ", ")))"
    }

    /// `<service>_ports` on `<service>_interfaces` (or `interfaces`), services in name order.
    private static func regularListeners(
        _ configuration: NetProxyConfiguration, serviceNames: Set<String>
    ) throws(NetProxyConfigurationError) -> [ListenerPlan] {
        for name in configuration.servicePorts.keys.sorted() where !serviceNames.contains(name) {
            throw NetProxyConfigurationError(.unknownService, "\(name)_ports: \(unknownService(name, serviceNames))")
        }
        for name in configuration.serviceInterfaces.keys.sorted() {
            guard serviceNames.contains(name) else {
                throw NetProxyConfigurationError(.unknownService, "\(name)_interfaces: \(unknownService(name, serviceNames))")
            }
            try checkInterfaces(configuration.serviceInterfaces[name]!, "\(name)_interfaces")
        }
        var listeners: [ListenerPlan] = []
        for name in configuration.servicePorts.keys.sorted() {
            for port in configuration.servicePorts[name]! {
                for host in configuration.serviceInterfaces[name] ?? configuration.interfaces {
                    listeners.append(ListenerPlan(kind: .service(name), host: host, port: port))
                }
            }
        }
        return listeners
    }

    /// `proxy_ports` (or the mapped ports) on `proxy_interfaces`, with their mappings and TLS;
    /// an unmapped port is a warning, not an error.
    private static func proxyListeners(
        _ configuration: NetProxyConfiguration, serviceNames: Set<String>, warnings: inout [String]
    ) throws(NetProxyConfigurationError) -> [ListenerPlan] {
        for port in configuration.proxyPortMappings.keys.sorted() {
            let name = configuration.proxyPortMappings[port]!
            guard serviceNames.contains(name) else {
                throw NetProxyConfigurationError(.unknownService, "proxy_port_mappings: port \(port) maps to \(unknownService(name, serviceNames))")
            }
        }
        let proxyPorts = configuration.proxyPorts ?? configuration.proxyPortMappings.keys.sorted()
        for port in configuration.proxyPortMappings.keys.sorted() where !proxyPorts.contains(port) {
            throw NetProxyConfigurationError("proxy_port_mappings: port \(port) is not in proxy_ports")
        }
        for port in configuration.proxyTLSPorts where !proxyPorts.contains(port) {
            throw NetProxyConfigurationError("proxy_tls_ports: port \(port) is not a PROXY port")
        }
        _ = try ConfigurationChecks.tlsFiles(configuration)
        let proxyInterfaces = configuration.proxyInterfaces ?? configuration.interfaces
        try checkInterfaces(proxyInterfaces, "proxy_interfaces")
        var listeners: [ListenerPlan] = []
        for port in proxyPorts {
            let service = configuration.proxyPortMappings[port]
            if service == nil {
                warnings.append("PROXY port \(port) has no entry in proxy_port_mappings: its connections will be closed after the header")
            }
            let tls = configuration.proxyTLSPorts.contains(port)
            for host in proxyInterfaces {
                listeners.append(ListenerPlan(kind: .proxy(service: service, tls: tls), host: host, port: port))
            }
        }
        return listeners
    }

    /// `proxy_unix_sockets`, paths in order; each maps to a service, as a PROXY port does.
    private static func unixListeners(
        _ configuration: NetProxyConfiguration, serviceNames: Set<String>
    ) throws(NetProxyConfigurationError) -> [ListenerPlan] {
        try configuration.proxyUnixSockets.keys.sorted().map { path throws(NetProxyConfigurationError) in
            let socket = configuration.proxyUnixSockets[path]!
            guard serviceNames.contains(socket.service) else {
                throw NetProxyConfigurationError(.unknownService, "proxy_unix_sockets.\(path): \(unknownService(socket.service, serviceNames))")
            }
            guard (0...0o777).contains(socket.mode) else {
                throw NetProxyConfigurationError("proxy_unix_sockets.\(path): mode \(String(socket.mode, radix: 8)) is not a file mode (0-0777)")
            }
            return ListenerPlan(kind: .proxy(service: socket.service, tls: false), host: "", port: 0, path: path)
        }
    }

    /// `metrics_port` on `metrics_interfaces` (or `interfaces`); none without a port.
    private static func metricsListeners(_ configuration: NetProxyConfiguration) throws(NetProxyConfigurationError) -> [ListenerPlan] {
        guard let metricsPort = configuration.metricsPort else { return [] }
        let metricsInterfaces = configuration.metricsInterfaces ?? configuration.interfaces
        try checkInterfaces(metricsInterfaces, "metrics_interfaces")
        return metricsInterfaces.map { ListenerPlan(kind: .metrics, host: $0, port: metricsPort) }
    }

    /// Every port in range (a configuration built in code skips the parser's check), and no
    /// address and port twice (port 0 is a new free port each time).
    private static func checkPorts(_ listeners: [ListenerPlan]) throws(NetProxyConfigurationError) {
        for listener in listeners where listener.path == nil {
            try ConfigurationChecks.port(listener.port, "\(listener)")
        }
        var seen: [String: ListenerPlan] = [:]
        for listener in listeners where listener.port != 0 && listener.path == nil {
            // The parsed address, so that two spellings of one address are the same key.
            let key = "\(ProxyIPAddress(listener.host)!)|\(listener.port)"
            if let first = seen[key] {
                throw NetProxyConfigurationError(
                    .conflict, key: nil, "port \(listener.port) on \(listener.host) is used twice: \(first) and \(listener)")
            }
            seen[key] = listener
        }
    }

    /// `proxy_trusted_proxies` (empty trusts everyone, as the module does, with a warning),
    /// `proxy_direct_clients` and `proxy_versions`, checked even where every port overrides them.
    private static func globalLists(
        _ configuration: NetProxyConfiguration, warnings: inout [String]
    ) throws(NetProxyConfigurationError) -> (trust: TrustedProxies, direct: TrustedProxies) {
        let trust: TrustedProxies
        if configuration.trustedProxies.isEmpty {
            warnings.append("proxy_trusted_proxies is empty: ANY client may send a PROXY header and claim any address")
            trust = .everyone
        } else {
            trust = try networks(configuration.trustedProxies, "proxy_trusted_proxies")
            warnAboutEveryone(configuration.trustedProxies, "proxy_trusted_proxies", warnings: &warnings)
        }
        let direct = try networks(configuration.directClients, "proxy_direct_clients")
        warnAboutEveryone(configuration.directClients, "proxy_direct_clients", warnings: &warnings)
        try ConfigurationChecks.versions(configuration.acceptedVersions, "proxy_versions")
        return (trust, direct)
    }

    /// Each PROXY port's policy: the global keys, overridden by its `proxy_port_options` entry.
    private static func proxyPolicies(
        _ configuration: NetProxyConfiguration, _ globals: (trust: TrustedProxies, direct: TrustedProxies), proxyPorts: [Int],
        tlsPorts: Set<Int>, perSource: Int, warnings: inout [String]
    ) throws(NetProxyConfigurationError) -> ([Int: ProxyPolicy], [String: ProxyPolicy]) {
        for port in configuration.proxyPortOptions.keys.sorted() where !proxyPorts.contains(port) {
            throw NetProxyConfigurationError("proxy_port_options: port \(port) is not a PROXY port")
        }
        var policies: [Int: ProxyPolicy] = [:]
        for port in proxyPorts where policies[port] == nil {
            let options = configuration.proxyPortOptions[port] ?? ProxyPortOptions()
            let prefix = "proxy_port_options.\(port)."
            let trustKey = options.trustedProxies == nil ? "proxy_trusted_proxies" : prefix + "trusted_proxies"
            let trustEntries = options.trustedProxies ?? configuration.trustedProxies
            let trust =
                try options.trustedProxies.map { entries throws(NetProxyConfigurationError) in
                    entries.isEmpty ? TrustedProxies.everyone : try networks(entries, trustKey)
                } ?? globals.trust
            if let entries = options.trustedProxies {
                if entries.isEmpty { warnings.append("\(trustKey) is empty: ANY client may send a PROXY header and claim any address") }
                warnAboutEveryone(entries, trustKey, warnings: &warnings)
            }
            if let entries = options.directClients { warnAboutEveryone(entries, prefix + "direct_clients", warnings: &warnings) }
            let directKey = options.directClients == nil ? "proxy_direct_clients" : prefix + "direct_clients"
            let direct =
                try options.directClients.map { entries throws(NetProxyConfigurationError) in try networks(entries, directKey) } ?? globals.direct
            if let clash = direct.networks.first(where: { client in trust.networks.contains { $0.overlaps(client) } }) {
                let proxy = trust.networks.first { $0.overlaps(clash) }!
                let shown = trustEntries.isEmpty ? "(empty: everyone)" : "\(proxy)"
                throw NetProxyConfigurationError(
                    .conflict, key: directKey,
                    "\(directKey): \(clash) overlaps \(trustKey) \(shown) on PROXY port \(port): a source is either a trusted proxy or a direct client"
                )
            }
            if let versions = options.acceptedVersions { try ConfigurationChecks.versions(versions, prefix + "versions") }
            if let custom = options.headerTimeout {
                try checkHeaderTimeout(custom, prefix + "header_timeout", warnings: &warnings)
            }
            if options.tlsHandshakeTimeout != nil && !tlsPorts.contains(port) {
                throw NetProxyConfigurationError("\(prefix)tls_handshake_timeout: port \(port) is not in proxy_tls_ports")
            }
            policies[port] = ProxyPolicy(
                header: header(configuration, options, trust: trust), directClients: direct.networks.isEmpty ? nil : direct,
                connections: try ConnectionPolicy(configuration, options, keyPrefix: prefix, tls: tlsPorts.contains(port), perSource: perSource))
        }
        // A UNIX socket's file permissions decide who connects: every peer there is trusted.
        var unix: [String: ProxyPolicy] = [:]
        for path in configuration.proxyUnixSockets.keys.sorted() {
            let options = configuration.proxyUnixSockets[path]!.options
            let key = "proxy_unix_sockets.\(path)"
            if options.trustedProxies != nil || options.directClients != nil {
                throw NetProxyConfigurationError("\(key): every peer of a UNIX socket is trusted; its file's mode and owner decide who connects")
            }
            if let versions = options.acceptedVersions { try ConfigurationChecks.versions(versions, key + ".versions") }
            if let custom = options.headerTimeout {
                try checkHeaderTimeout(custom, key + ".header_timeout", warnings: &warnings)
            }
            unix[path] = ProxyPolicy(
                header: header(configuration, options, trust: TrustedProxies([], includesUnixDomainSockets: true)), directClients: nil,
                connections: try ConnectionPolicy(configuration, options, keyPrefix: key + ".", tls: false, perSource: perSource))
        }
        return (policies, unix)
    }

    /// How a listener reads headers: `options` where given, else the global keys.
    private static func header(
        _ configuration: NetProxyConfiguration, _ options: ProxyPortOptions, trust: TrustedProxies
    ) -> ProxyProtocolConfiguration {
        ProxyProtocolConfiguration(
            trustedProxies: trust, headerTimeout: options.headerTimeout ?? configuration.headerTimeout,
            maximumHeaderLength: configuration.maximumHeaderLength, acceptedVersions: options.acceptedVersions ?? configuration.acceptedVersions,
            acceptsLocal: options.acceptsLocal ?? configuration.acceptsLocal,
            unspecifiedAddresses: options.unspecifiedAddresses ?? configuration.unspecifiedAddresses)
    }

    /// Entries of a trust or direct-client list that cover all of IPv4 or all of IPv6
    /// (`0.0.0.0/0`, `::/0`, `::ffff:0:0/96`) are allowed, with a warning naming each: such a
    /// list trusts (or serves without a header) every client of that family.
    private static func warnAboutEveryone(_ entries: [String], _ key: String, warnings: inout [String]) {
        let consequence =
            key.hasSuffix("direct_clients")
            ? "every such client is served without a PROXY header"
            : "any such client may send a PROXY header and claim any address"
        for (index, entry) in entries.enumerated() {
            guard let network = try? IPNetwork(entry) else { continue }
            func coversAll(_ first: String, _ last: String) -> Bool {
                network.contains(ProxyIPAddress(first)!) && network.contains(ProxyIPAddress(last)!)
            }
            let families =
                [("IPv4", coversAll("0.0.0.0", "255.255.255.255")), ("IPv6", coversAll("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))]
                .filter(\.1).map(\.0)
            guard !families.isEmpty else { continue }
            warnings.append("\(key)[\(index)]: \(entry) covers every \(families.joined(separator: " and ")) address: \(consequence)")
        }
    }

    /// A list of addresses and networks; the error names `key`.
    private static func networks(_ entries: [String], _ key: String) throws(NetProxyConfigurationError) -> TrustedProxies {
        do {
            return try TrustedProxies(parsing: entries)
        } catch {
            throw NetProxyConfigurationError("\(key): \(error)")
        }
    }

    /// A header timeout: in range, and a warning under the specification's 3 s.
    private static func checkHeaderTimeout(_ timeout: Duration, _ key: String, warnings: inout [String]) throws(NetProxyConfigurationError) {
        try checkDuration(timeout, key)
        if timeout < .seconds(3) { warnings.append("\(key) is \(timeout.secondsText); the PROXY specification asks for at least 3 s") }
    }

    /// A timeout or grace period: from 1 ns to a day, as a file's seconds can give it (a
    /// `Duration` set in code can be anything).
    static func checkDuration(_ duration: Duration, _ key: String) throws(NetProxyConfigurationError) {
        guard duration >= .nanoseconds(1) && duration <= .maximum else {
            throw NetProxyConfigurationError("\(key): \(duration.secondsText) is not a duration from above 0 to 86400 s")
        }
    }

    /// The header size and the two durations; a header timeout under the specification's 3 s
    /// is allowed, with a warning.
    private static func checkLimits(_ configuration: NetProxyConfiguration, warnings: inout [String]) throws(NetProxyConfigurationError) {
        guard (ProxyHeader.v2FixedLength...ProxyHeader.maximumV2Length).contains(configuration.maximumHeaderLength) else {
            throw NetProxyConfigurationError("proxy_max_header_size: \(configuration.maximumHeaderLength) is not in 16...65551")
        }
        try checkHeaderTimeout(configuration.headerTimeout, "proxy_header_timeout", warnings: &warnings)
        try checkDuration(configuration.shutdownGracePeriod, "shutdown_grace_period")
        try checkDuration(configuration.idleTimeout, "idle_timeout")
        try checkDuration(configuration.tlsHandshakeTimeout, "tls_handshake_timeout")
        if let maxConnections = configuration.maxConnections { try NetProxyConfiguration.checkCount(maxConnections, "max_connections") }
        if let perSource = configuration.maxConnectionsPerSource {
            try NetProxyConfiguration.checkCount(perSource, "max_connections_per_source")
        }
    }

    /// `<service>_idle_timeout`: a known service (or the metrics endpoint), in range.
    private static func checkServiceIdleTimeouts(
        _ configuration: NetProxyConfiguration, serviceNames: Set<String>
    ) throws(NetProxyConfigurationError) {
        for name in configuration.serviceIdleTimeouts.keys.sorted() {
            guard serviceNames.contains(name) || name == "metrics" else {
                throw NetProxyConfigurationError(.unknownService, "\(name)_idle_timeout: \(unknownService(name, serviceNames))")
            }
            try checkDuration(configuration.serviceIdleTimeouts[name]!, "\(name)_idle_timeout")
        }
    }

    /// Half of what the descriptor limit leaves once the listening sockets, the metrics
    /// endpoint's connections and a reserve (the event loops' own descriptors, files read on
    /// reload) are taken: a forwarded connection holds two descriptors, so even then the host
    /// stops accepting before `accept` fails. At least 16.
    static func defaultMaxConnections(descriptorLimit: UInt64?, listeningSockets: Int) -> Int {
        guard let limit = descriptorLimit else { return 10_000 }
        let half = (Int(clamping: limit) - 64 - metricsMaxConnections - listeningSockets) / 2
        return min(max(half, 16), NetProxyConfiguration.maximumCount)
    }

    /// The deadlines and budgets of a regular or metrics listener: the global keys, with
    /// `<service>_idle_timeout` (`metrics_idle_timeout`).
    func regularConnectionPolicy(_ configuration: NetProxyConfiguration, _ kind: ListenerPlan.Kind) -> ConnectionPolicy {
        let name: String? =
            switch kind.base {
            case .service(let name): name
            case .metrics: "metrics"
            case .proxy: nil
            }
        // The metrics endpoint is outside the process's max_connections, so that it can be
        // scraped when the process is full; it has a small budget of its own instead.
        let isMetrics = kind.isMetrics
        return ConnectionPolicy(
            idleTimeout: (name.flatMap { configuration.serviceIdleTimeouts[$0] } ?? configuration.idleTimeout).timeAmount,
            tlsHandshakeTimeout: nil, maxConnections: isMetrics ? Self.metricsMaxConnections : nil,
            maxConnectionsPerSource: maxConnectionsPerSource)
    }

    /// Connections the metrics endpoint holds at once (scrapers, and a person with curl).
    static let metricsMaxConnections = 32

    /// Every listener's sockets: one per event loop for a TCP listener, one for a UNIX socket.
    static func listeningSockets(_ listeners: [ListenerPlan], eventLoops: Int) -> Int {
        listeners.reduce(0) { $0 + ($1.path == nil ? eventLoops : 1) }
    }
}
