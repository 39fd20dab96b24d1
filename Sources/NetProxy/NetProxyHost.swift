import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOProxyProtocol
import NIOSSL
import Prometheus
import ProxyProtocol
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Runs named services on regular ports and on PROXY ports, the way Prosody's mod_net_proxy
/// does.
///
/// ```swift
/// var configuration = NetProxyConfiguration()
/// configuration.proxyPortMappings = [15222: "c2s"]
/// configuration.trustedProxies = ["10.0.0.0/8"]
/// let host = try NetProxyHost(configuration: configuration, services: [c2s], logger: logger)
/// try await ServiceGroup(services: [host], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
///
/// On a PROXY port a connection is accepted only from a trusted proxy, and only after a valid
/// header; the service then gets it as if the client had connected directly (with TLS first,
/// on `proxy_tls_ports`). On graceful shutdown the host stops accepting, closes connections
/// still waiting for a header, and lets the others drain for the grace period.
public final class NetProxyHost: Service, Sendable {
    /// The accept queue's length. SwiftNIO's default, 128, overflows under bursts of new
    /// connections, and each overflow costs the client a SYN retransmission (a second or more);
    /// the kernel caps it at `net.core.somaxconn`.
    static let listenBacklog: Int32 = 1024

    /// A listener and the address it is bound to.
    public struct BoundListener: Hashable, Sendable {
        /// What the listener is for.
        public var plan: ListenerPlan
        /// Where it is bound (with the actual port, when the plan said 0).
        public var address: SocketAddress
    }

    /// Where the host is in its life; each step happens once.
    private enum Lifecycle {
        case idle
        case starting
        case running
        case stopping
        case stopped
    }

    private struct State {
        var lifecycle = Lifecycle.idle
        var serverChannels: [Channel] = []
        var listeners: [BoundListener] = []
        var connections: [ObjectIdentifier: Channel] = [:]
        /// Runs the connections of async services; owned by the host and awaited on shutdown.
        var serviceTasks: Task<Void, Never>?
    }

    /// The configuration the host was created with.
    public let configuration: NetProxyConfiguration
    /// Problems that do not stop the host (an unmapped PROXY port, an empty trust list).
    public let warnings: [String]
    /// The listeners the configuration asks for, in the order they are bound.
    public let plan: [ListenerPlan]
    private let services: [String: NetProxyService]
    private let proxyConfiguration: ProxyProtocolConfiguration
    private let tlsContext: NIOSSLContext?
    private let logger: Logger
    private let group: EventLoopGroup
    private let metrics: HostMetrics
    private let refusals: RateLimitedLog
    /// Counts and logs a refused PROXY connection; one closure for all of them.
    private let onRefusal: @Sendable (ProxyProtocolError) -> Void
    private let asyncConnections = AsyncStream.makeStream(of: AsyncServiceConnection.self)
    private let state = NIOLockedValueBox(State())

    /// Checks the configuration against the services; the error names the entry at fault.
    public init(
        configuration: NetProxyConfiguration,
        services: [NetProxyService] = NetProxyService.builtins,
        logger: Logger = Logger(label: "netproxy"),
        eventLoopGroup: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        metricsRegistry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()
    ) throws(NetProxyConfigurationError) {
        var byName: [String: NetProxyService] = [:]
        for service in services {
            guard byName[service.name] == nil else { throw NetProxyConfigurationError("service \"\(service.name)\" is registered twice") }
            byName[service.name] = service
        }
        let metrics = HostMetrics(registry: metricsRegistry)
        let refusals = RateLimitedLog(logger: logger)
        for name in configuration.forwardServices.keys.sorted() {
            guard byName[name] == nil else {
                throw NetProxyConfigurationError("forward_services.\(name): the name is taken by another service")
            }
            try Self.checkServiceName(name, "forward_services.\(name)")
            try configuration.forwardServices[name]!.check("forward_services.\(name)")
            byName[name] = .forward(name: name, configuration.forwardServices[name]!, metrics: metrics, log: refusals)
            metrics.registerForwardService(name)
        }
        // Routes lead to the services above, never to another multiplexer (no loops).
        let routable = byName
        for name in configuration.multiplexServices.keys.sorted() {
            guard byName[name] == nil else {
                throw NetProxyConfigurationError("multiplex_services.\(name): the name is taken by another service")
            }
            try Self.checkServiceName(name, "multiplex_services.\(name)")
            let multiplex = configuration.multiplexServices[name]!
            guard multiplex.detectTimeout > 0 && multiplex.detectTimeout <= 86400 else {
                throw NetProxyConfigurationError(
                    "multiplex_services.\(name).detect_timeout: \(multiplex.detectTimeout) is not a number of seconds from above 0 to 86400")
            }
            let routes = multiplex.routes.sorted { $0.key.name < $1.key.name }.map { ("routes.\($0.key.name)", $0.value) }
            for (key, target) in routes + [("default", multiplex.defaultService)] where routable[target] == nil {
                let kind = configuration.multiplexServices[target] == nil ? "an unknown service" : "another multiplexer"
                throw NetProxyConfigurationError(
                    "multiplex_services.\(name).\(key): \"\(target)\" is \(kind) (known: \(routable.keys.sorted().joined(separator: ", ")))")
            }
            byName[name] = .multiplex(
                name: name, multiplex, services: routable, asyncConnections: asyncConnections.continuation, logger: logger)
        }
        let plan = try HostPlan(configuration, serviceNames: Set(byName.keys))
        try Self.checkForwardLoops(configuration, plan.listeners)
        self.configuration = configuration
        self.warnings = plan.warnings
        self.plan = plan.listeners
        self.services = byName
        self.proxyConfiguration = ProxyProtocolConfiguration(
            trustedProxies: plan.trustedProxies,
            headerTimeout: .fractionalSeconds(configuration.headerTimeout),
            maximumHeaderLength: configuration.maximumHeaderSize
        )
        self.tlsContext = try Self.makeTLSContext(configuration)
        self.logger = logger
        self.group = eventLoopGroup
        self.metrics = metrics
        self.refusals = refusals
        self.onRefusal = { error in
            metrics.rejected(reason: error.reason.name)
            refusals.warning("refused \(error)")
        }
    }

    /// Names for the configuration's keys: no spaces or odd characters, and none that would make
    /// `<name>_ports` one of the host's own keys.
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

    /// A forward whose target is a listener of that same forward (its regular port, or its PROXY
    /// port when it sends a header) would connect to itself without end, until no descriptor is
    /// left. Other services of the host are fine targets. (A name that resolves to the host, or a
    /// loop through other services, cannot be seen here.)
    private static func checkForwardLoops(_ configuration: NetProxyConfiguration, _ listeners: [ListenerPlan]) throws(NetProxyConfigurationError) {
        for name in configuration.forwardServices.keys.sorted() {
            let forward = configuration.forwardServices[name]!
            guard let target = ProxyIPAddress(forward.targetHost) else { continue }
            for listener in listeners where listener.port == forward.targetPort {
                switch listener.kind {
                case .service(name): break
                case .proxy(service: name, tls: false) where forward.sendProxy != nil: break
                default: continue
                }
                guard let bound = ProxyIPAddress(listener.host) else { continue }
                let wildcard = bound == .v4(ProxyIPv4Address(0, 0, 0, 0)) || bound == .v6(ProxyIPv6Address(high: 0, low: 0))
                if wildcard || bound.unmapped == target.unmapped {
                    throw NetProxyConfigurationError("forward_services.\(name): the target \(forward.target) is this host's own \(listener)")
                }
            }
        }
    }

    private static func makeTLSContext(_ configuration: NetProxyConfiguration) throws(NetProxyConfigurationError) -> NIOSSLContext? {
        guard !configuration.proxyTLSPorts.isEmpty, let certificatePath = configuration.tlsCertificatePath,
            let keyPath = configuration.tlsKeyPath
        else { return nil }
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch {
            throw NetProxyConfigurationError("proxy_tls_certificate: cannot load \(certificatePath): \(error)")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw NetProxyConfigurationError("proxy_tls_key: cannot load \(keyPath): \(error)")
        }
        do {
            return try NIOSSLContext(
                configuration: .makeServerConfiguration(
                    certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)))
        } catch {
            throw NetProxyConfigurationError("proxy_tls_certificate/proxy_tls_key: \(error)")
        }
    }

    /// The bound listeners, once started.
    public var listeners: [BoundListener] { state.withLockedValue { $0.listeners } }

    /// The Prometheus text exposition of the host's counters.
    public var metricsExposition: String { metrics.exposition }

    /// Binds every listener; throws (after closing what was bound) if one cannot be bound, or
    /// if the host was started before.
    @discardableResult
    public func start() async throws -> [BoundListener] {
        let first = state.withLockedValue { state -> Bool in
            guard case .idle = state.lifecycle else { return false }
            state.lifecycle = .starting
            state.serviceTasks = Task { [asyncConnections, logger] in
                await withDiscardingTaskGroup { group in
                    for await connection in asyncConnections.stream {
                        group.addTask { await connection.run(logger: logger) }
                    }
                }
            }
            return true
        }
        guard first else { throw NetProxyConfigurationError("the host can be started once only") }
        for warning in warnings {
            logger.warning("\(warning)")
        }
        do {
            for listener in plan {
                let channels = try await bind(listener)
                var bound = BoundListener(plan: listener, address: channels[0].localAddress!)
                bound.plan.port = bound.address.port ?? listener.port
                state.withLockedValue {
                    $0.serverChannels.append(contentsOf: channels)
                    $0.listeners.append(bound)
                }
                logger.info("listening: \(bound.plan)")
            }
            let shared = ForeignListeners.shared(among: listeners.map(\.address))
            guard shared.isEmpty else {
                throw NetProxyConfigurationError(
                    "another process listens on \(shared.map { "\($0)" }.joined(separator: ", ")) too (started at the same time?)")
            }
        } catch {
            await shutdown(gracePeriod: .zero)
            throw error
        }
        state.withLockedValue { $0.lifecycle = .running }
        return listeners
    }

    /// Runs the host as a `Service`: starts it unless ``start()`` already did, waits for a
    /// graceful shutdown request (SIGINT/SIGTERM in a `ServiceGroup`), then shuts down with the
    /// configured grace period (none if the task is cancelled).
    public func run() async throws {
        if state.withLockedValue({ if case .idle = $0.lifecycle { return true } else { return false } }) {
            try await start()
        }
        try? await gracefulShutdown()
        await shutdown(gracePeriod: Task.isCancelled ? .zero : .fractionalSeconds(configuration.shutdownGracePeriod))
    }

    /// Stops accepting, closes connections waiting for a header, lets the others finish for up to
    /// `gracePeriod`, then closes what is left and waits for the services' tasks to end.
    public func shutdown(gracePeriod: TimeAmount) async {
        let proceed = state.withLockedValue { state -> Bool in
            switch state.lifecycle {
            case .stopping, .stopped: return false
            case .idle, .starting, .running:
                state.lifecycle = .stopping
                return true
            }
        }
        guard proceed else { return }
        let listeners = state.withLockedValue { state in
            defer { state.serverChannels = [] }
            return state.serverChannels
        }
        for channel in listeners {
            try? await channel.close()
        }
        let connections = state.withLockedValue { Array($0.connections.values) }
        logger.info("shutting down: \(connections.count) connection(s) open, draining for up to \(gracePeriod)")
        for channel in connections {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        // Whichever comes first: every connection closed, or the end of the grace period.
        let loop = group.any()
        let drained = loop.makePromise(of: Void.self)
        let once = NIOLockedValueBox(false)
        let finish: @Sendable () -> Void = {
            let first = once.withLockedValue { done in
                defer { done = true }
                return !done
            }
            if first { drained.succeed() }
        }
        let deadline = loop.scheduleTask(in: gracePeriod, finish)
        EventLoopFuture.andAllComplete(connections.map(\.closeFuture), on: loop).whenComplete { _ in
            deadline.cancel()
            finish()
        }
        try? await drained.futureResult.get()
        let remaining = state.withLockedValue { Array($0.connections.values) }
        if !remaining.isEmpty {
            logger.info("closing \(remaining.count) connection(s) still open after the grace period")
        }
        for channel in remaining {
            try? await channel.close()
        }
        refusals.flush()
        // No connection can start an async service any more; end their tasks and wait for them.
        asyncConnections.continuation.finish()
        let tasks = state.withLockedValue { $0.serviceTasks }
        tasks?.cancel()
        await tasks?.value
        state.withLockedValue { $0.lifecycle = .stopped }
    }

    /// A listening socket per event loop, all on the listener's port with `SO_REUSEPORT`, each
    /// with its own loop as the child group.
    ///
    /// SwiftNIO puts a server channel on one loop and hands each accepted connection to a loop of
    /// the group, which for a connection on another thread means waking that thread and a trip
    /// through its task queue. Here the kernel spreads new connections over the loops' sockets,
    /// and a connection stays on the thread that accepted it.
    ///
    /// `SO_REUSEPORT` would also let a second process of the same user bind the port and take
    /// part of its connections (a host started twice by mistake). So a fixed port is first bound
    /// without it, which fails if anyone listens there, with `SO_REUSEPORT` or not; and
    /// ``start()`` looks for other processes' sockets once everything is bound
    /// (``ForeignListeners``). Port 0 needs no probe: the first socket takes a free port, and
    /// the others join it.
    private func bind(_ listener: ListenerPlan) async throws -> [Channel] {
        var channels: [Channel] = []
        do {
            var port = listener.port
            if port != 0 {
                let probe = try await ServerBootstrap(group: group)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .bind(host: listener.host, port: port)
                    .get()
                try await probe.close()
            }
            let episode = AcceptErrorHandler.Episode()
            for loop in group.makeIterator() {
                let channel = try await bootstrap(listener, on: loop, episode: episode).bind(host: listener.host, port: port).get()
                channels.append(channel)
                port = channel.localAddress?.port ?? port
            }
            return channels
        } catch {
            for channel in channels {
                try? await channel.close()
            }
            throw NetProxyConfigurationError("cannot listen for \(listener): \(error)")
        }
    }

    private func bootstrap(_ listener: ListenerPlan, on loop: EventLoop, episode: AcceptErrorHandler.Episode) -> ServerBootstrap {
        ServerBootstrap(group: loop)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
            .serverChannelOption(.backlog, value: Self.listenBacklog)
            .serverChannelInitializer { [logger, metrics] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        AcceptErrorHandler(listener: listener, episode: episode, logger: logger, metrics: metrics)
                    )
                }
            }
            .childChannelInitializer { [self, halfClosure = allowsHalfClosure(listener)] channel in
                channel.eventLoop.makeCompletedFuture {
                    // Set here rather than as a child channel option, which the bootstrap applies
                    // through a chain of futures for every connection.
                    if halfClosure { try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true) }
                    try self.setUp(channel, for: listener)
                }
            }
    }

    /// Whether connections on `listener` see the client's half-close: only where the service asked
    /// for it (the metrics endpoint answers requests already received, then closes).
    private func allowsHalfClosure(_ listener: ListenerPlan) -> Bool {
        switch listener.kind {
        case .metrics: return true
        case .service(let name): return services[name]?.allowsHalfClosure ?? false
        case .proxy(let name, _): return name.flatMap { services[$0] }?.allowsHalfClosure ?? false
        }
    }

    private func setUp(_ channel: Channel, for listener: ListenerPlan) throws {
        track(channel)
        let pipeline = channel.pipeline.syncOperations
        switch listener.kind {
        case .metrics:
            try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
            try pipeline.addHandler(
                HTTPResponder { [metrics] head in
                    guard head.method == .GET || head.method == .HEAD, head.uri.split(separator: "?").first == "/metrics" else {
                        return .init(status: .notFound, contentType: "text/plain; charset=utf-8", body: "not found; try GET /metrics\n")
                    }
                    return .init(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.exposition)
                })
        case .service(let name):
            metrics.accepted(proxyListener: false)
            try pipeline.addHandler(
                ServiceDispatcher(service: services[name], logger: logger, metrics: metrics, asyncConnections: asyncConnections.continuation))
        case .proxy(let name, let tls):
            metrics.accepted(proxyListener: true)
            // Accepted headers are counted by the dispatcher, which looks the header up anyway.
            try pipeline.addHandler(ProxyProtocolServerHandler(configuration: proxyConfiguration, onRefusal: onRefusal))
            if tls, let tlsContext {
                try pipeline.addHandler(NIOSSLServerHandler(context: tlsContext))
            }
            try pipeline.addHandler(
                ServiceDispatcher(
                    service: name.flatMap { services[$0] }, logger: logger, metrics: metrics, asyncConnections: asyncConnections.continuation))
        }
    }

    private func track(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        let accepted = state.withLockedValue { state -> Bool in
            switch state.lifecycle {
            case .starting, .running:
                state.connections[id] = channel
                return true
            case .idle, .stopping, .stopped:
                return false
            }
        }
        guard accepted else {
            channel.close(promise: nil)
            return
        }
        channel.closeFuture.whenComplete { [state] _ in
            state.withLockedValue { _ = $0.connections.removeValue(forKey: id) }
        }
    }
}

extension TimeAmount {
    /// Seconds as the configuration gives them, fractions included. `HostPlan` has checked
    /// them to be at most 86400, so the nanoseconds fit an `Int64`.
    static func fractionalSeconds(_ seconds: Double) -> TimeAmount {
        .nanoseconds(Int64(seconds * 1_000_000_000))
    }
}
