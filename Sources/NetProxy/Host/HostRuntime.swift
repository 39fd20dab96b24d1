import Logging
import NIOCore
import ProxyProtocol

/// What the host makes of one configuration: its services, its listeners, and what a connection
/// on each listener gets. Built and checked whole before it replaces the one in force, so a
/// reload applies completely or not at all.
struct HostRuntime: Sendable {
    let configuration: NetProxyConfiguration
    let services: [String: NetProxyService]
    let plan: [ListenerPlan]
    let warnings: [String]
    /// A role per listener, in plan order.
    let roles: [ListenerRole]
    /// `max_connections` for the whole process.
    let maxConnections: Int
    /// This machine's addresses when the runtime was built.
    let localAddresses: LocalAddresses

    /// - Parameters:
    ///   - registered: The services given to the host in code; the configuration adds its
    ///     forward and multiplex services to them.
    ///   - context: What the host lends the services it makes.
    init(
        _ configuration: NetProxyConfiguration, registered: [String: NetProxyService], context: HostContext
    ) throws(NetProxyConfigurationError) {
        let local = LocalAddresses.current()
        let own = OwnHost(outgoing: context.outgoing, addresses: local)
        var byName = registered
        for name in configuration.forwardServices.keys.sorted() {
            guard byName[name] == nil else {
                throw NetProxyConfigurationError(.conflict, "forward_services.\(name): the name is taken by another service")
            }
            try Self.checkServiceName(name, "forward_services.\(name)")
            try configuration.forwardServices[name]!.check("forward_services.\(name)")
            byName[name] = .forward(name: name, configuration.forwardServices[name]!, own: own, context: context)
        }
        // Routes lead to the services above, never to another multiplexer (no loops).
        let routable = byName
        var warnings: [String] = []
        for name in configuration.multiplexServices.keys.sorted() {
            guard byName[name] == nil else {
                throw NetProxyConfigurationError(.conflict, "multiplex_services.\(name): the name is taken by another service")
            }
            try Self.checkServiceName(name, "multiplex_services.\(name)")
            let multiplex = configuration.multiplexServices[name]!
            try HostPlan.checkDuration(multiplex.detectTimeout, "multiplex_services.\(name).detect_timeout")
            if let idle = multiplex.idleTimeout {
                try HostPlan.checkDuration(idle, "multiplex_services.\(name).idle_timeout")
                if idle < multiplex.detectTimeout {
                    warnings.append(
                        "multiplex_services.\(name).idle_timeout (\(idle.secondsText)) is shorter than its detect_timeout (\(multiplex.detectTimeout.secondsText)): a silent client is closed before the default service gets it"
                    )
                }
            }
            try NetProxyConfiguration.checkCount(multiplex.maxPendingDetections, "multiplex_services.\(name).max_pending_detections")
            let routes = try multiplex.checkedServices("multiplex_services.\(name)")
            for (key, target) in routes + [("default", multiplex.defaultService)] where routable[target] == nil {
                let kind = configuration.multiplexServices[target] == nil ? "an unknown service" : "another multiplexer"
                throw NetProxyConfigurationError(
                    configuration.multiplexServices[target] == nil ? .unknownService : .conflict,
                    "multiplex_services.\(name).\(key): \"\(target)\" is \(kind) (known: \(routable.keys.sorted().joined(separator: ", ")))")
            }
            byName[name] = .multiplex(name: name, multiplex, services: routable, context: context)
        }
        let plan = try HostPlan(configuration, serviceNames: Set(byName.keys), eventLoops: context.eventLoops)
        warnings += try Self.checkForwardTargets(configuration, plan.listeners, local: local)
        for path in configuration.proxyUnixSockets.keys.sorted() {
            try UnixSocketFile.check(path, settings: configuration.proxyUnixSockets[path]!, key: "proxy_unix_sockets.\(path)")
        }
        let tls = try ServerTLS.makeContext(configuration)
        self.configuration = configuration
        self.services = byName
        self.plan = plan.listeners
        self.warnings = plan.warnings + warnings
        self.maxConnections = plan.maxConnections
        self.localAddresses = local
        self.roles = plan.listeners.map { listener in
            let regular = plan.regularConnectionPolicy(configuration, listener.kind)
            switch listener.kind.base {
            case .metrics:
                return ListenerRole(plan: listener, kind: .metrics, tls: nil, allowsHalfClosure: true, connections: regular)
            case .service(let name):
                let service = byName[name]
                return ListenerRole(
                    plan: listener, kind: .service(service), tls: nil, allowsHalfClosure: service?.allowsHalfClosure ?? false,
                    connections: regular)
            case .proxy(let name, let isTLS):
                let service = name.flatMap { byName[$0] }
                let policy = listener.path.map { plan.unixPolicies[$0]! } ?? plan.policies[listener.port]!
                return ListenerRole(
                    plan: listener, kind: .proxy(service, policy), tls: isTLS ? tls : nil, allowsHalfClosure: service?.allowsHalfClosure ?? false,
                    connections: policy.connections)
            }
        }
        for name in configuration.forwardServices.keys {
            context.metrics.registerForwardService(name)
        }
    }

    /// The forward and multiplex services' names are configuration keys too: no spaces or odd
    /// characters, and none that would make `<name>_ports` one of the host's own keys.
    private static func checkServiceName(_ name: String, _ key: String) throws(NetProxyConfigurationError) {
        let allowed = name.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-"
        }
        guard !name.isEmpty, allowed else {
            throw NetProxyConfigurationError("\(key): a service name is letters, digits, \"-\" and \"_\"")
        }
        guard !["proxy", "proxy_tls", "metrics"].contains(name) else {
            throw NetProxyConfigurationError("\(key): \"\(name)\" is reserved (\(name)_ports is a key of its own)")
        }
    }

    /// How long a forward target's name may take to resolve for the check below.
    static let resolveTimeout = TimeAmount.seconds(2)

    /// A forward whose target is one of this host's own listeners (its address, or any address
    /// of this machine when the listener binds them all) is refused, naming both. It would loop
    /// until no descriptor is left, or, relaying without a header into a PROXY port, let any
    /// client write a header that arrives from a trusted address: this host's. Names are
    /// resolved (within ``resolveTimeout``); one that does not resolve is a warning, and the
    /// connections' own check (``OutgoingConnections``) still refuses a loop through it.
    private static func checkForwardTargets(
        _ configuration: NetProxyConfiguration, _ listeners: [ListenerPlan], local: LocalAddresses
    ) throws(NetProxyConfigurationError) -> [String] {
        let names = Set(configuration.forwardServices.values.flatMap(\.targets).map(\.host).filter { ProxyIPAddress($0) == nil })
        let resolved = BoundedResolver.resolve(names, timeout: resolveTimeout)
        var warnings: [String] = []
        for name in configuration.forwardServices.keys.sorted() {
            for target in configuration.forwardServices[name]!.targets {
                let key = "forward_services.\(name).target"
                guard let addresses = ProxyIPAddress(target.host).map({ [$0] }) ?? resolved[target.host] else {
                    warnings.append(
                        "\(key): \(target.host) did not resolve within \(resolveTimeout.nanoseconds / 1_000_000_000) s, so whether it is this host is not known; a connection that comes back to this host is refused"
                    )
                    continue
                }
                for listener in listeners where listener.path == nil && listener.port == target.port {
                    guard let bound = ProxyIPAddress(listener.host), addresses.contains(where: { bound.reaches(by: $0, local: local) }) else {
                        continue
                    }
                    throw NetProxyConfigurationError(
                        .conflict,
                        "\(key): \(target) is this host's own listener, \(listener): a forward into its own host would loop, or let any client pass for a trusted proxy"
                    )
                }
            }
        }
        return warnings
    }
}
