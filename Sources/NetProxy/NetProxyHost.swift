import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOProxyProtocol
import NIOSSL
import Prometheus
import ServiceLifecycle

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
    /// A listener and the address it is bound to.
    public struct BoundListener: Hashable, Sendable {
        /// What the listener is for.
        public var plan: ListenerPlan
        /// Where it is bound (with the actual port, when the plan said 0).
        public var address: SocketAddress
    }

    private struct State {
        var serverChannels: [Channel] = []
        var listeners: [BoundListener] = []
        var connections: [ObjectIdentifier: Channel] = [:]
        var started = false
        var stopping = false
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
        let plan = try HostPlan(configuration, serviceNames: Set(byName.keys))
        self.configuration = configuration
        self.warnings = plan.warnings
        self.plan = plan.listeners
        self.services = byName
        self.proxyConfiguration = ProxyProtocolConfiguration(
            trustedProxies: plan.trustedProxies,
            headerTimeout: .nanoseconds(Int64(configuration.headerTimeout * 1_000_000_000)),
            maximumHeaderLength: configuration.maximumHeaderSize
        )
        self.tlsContext = try Self.makeTLSContext(configuration)
        self.logger = logger
        self.group = eventLoopGroup
        self.metrics = HostMetrics(registry: metricsRegistry)
        self.refusals = RateLimitedLog(logger: logger)
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
            return try NIOSSLContext(configuration: .makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)))
        } catch {
            throw NetProxyConfigurationError("proxy_tls_certificate/proxy_tls_key: \(error)")
        }
    }

    /// The bound listeners, once started.
    public var listeners: [BoundListener] { state.withLockedValue { $0.listeners } }

    /// The Prometheus text exposition of the host's counters.
    public var metricsExposition: String { metrics.exposition }

    /// Binds every listener; throws (after closing what was bound) if one cannot be bound.
    @discardableResult
    public func start() async throws -> [BoundListener] {
        guard state.withLockedValue({ state in defer { state.started = true }; return !state.started }) else {
            return listeners
        }
        for warning in warnings {
            logger.warning("\(warning)")
        }
        do {
            for listener in plan {
                let channel = try await bind(listener)
                let bound = BoundListener(plan: listener, address: channel.localAddress!)
                state.withLockedValue {
                    $0.serverChannels.append(channel)
                    $0.listeners.append(bound)
                }
                logger.info("listening: \(listener.description.replacingOccurrences(of: ":\(listener.port)", with: ":\(bound.address.port!)"))")
            }
        } catch {
            await closeListeners()
            throw error
        }
        return listeners
    }

    /// Starts, waits for a graceful shutdown request (SIGINT/SIGTERM in a `ServiceGroup`), then
    /// shuts down.
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await shutdown(gracePeriod: Task.isCancelled ? .zero : .nanoseconds(Int64(configuration.shutdownGracePeriod * 1_000_000_000)))
    }

    /// Stops accepting, closes connections waiting for a header, lets the others finish for up to
    /// `gracePeriod`, then closes what is left.
    public func shutdown(gracePeriod: TimeAmount) async {
        guard state.withLockedValue({ state in defer { state.stopping = true }; return !state.stopping }) else { return }
        await closeListeners()
        let connections = state.withLockedValue { Array($0.connections.values) }
        logger.info("shutting down: \(connections.count) connection(s) open, draining for up to \(gracePeriod)")
        for channel in connections {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = NIODeadline.now() + gracePeriod
        while NIODeadline.now() < deadline && !state.withLockedValue({ $0.connections.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let remaining = state.withLockedValue { Array($0.connections.values) }
        for channel in remaining {
            try? await channel.close()
        }
    }

    private func closeListeners() async {
        let channels = state.withLockedValue { state in
            defer { state.serverChannels = [] }
            return state.serverChannels
        }
        for channel in channels {
            try? await channel.close()
        }
    }

    private func bind(_ listener: ListenerPlan) async throws -> Channel {
        do {
            return try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelInitializer { [logger, metrics] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            AcceptErrorHandler(listener: listener, logger: logger, metrics: metrics)
                        )
                    }
                }
                .childChannelOption(.allowRemoteHalfClosure, value: allowsHalfClosure(listener))
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try self.setUp(channel, for: listener)
                    }
                }
                .bind(host: listener.host, port: listener.port)
                .get()
        } catch {
            throw NetProxyConfigurationError("cannot listen for \(listener): \(error)")
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
            try pipeline.addHandler(HTTPResponder { [metrics] head in
                guard head.method == .GET, head.uri.split(separator: "?").first == "/metrics" else {
                    return .init(status: .notFound, contentType: "text/plain; charset=utf-8", body: "not found; try GET /metrics\n")
                }
                return .init(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.exposition)
            })
        case .service(let name):
            metrics.accepted(proxyListener: false)
            try pipeline.addHandler(ServiceDispatcher(service: services[name], logger: logger, metrics: metrics))
        case .proxy(let name, let tls):
            metrics.accepted(proxyListener: true)
            let proxy = ProxyProtocolServerHandler(configuration: proxyConfiguration) { [metrics, refusals] error in
                metrics.rejected(reason: error.reason.name)
                refusals.warning("refused \(error)")
            }
            try pipeline.addHandler(proxy)
            proxy.connectionInfo.whenSuccess { [metrics] info in metrics.proxied(info.header) }
            if tls, let tlsContext {
                try pipeline.addHandler(NIOSSLServerHandler(context: tlsContext))
            }
            try pipeline.addHandler(ServiceDispatcher(service: name.flatMap { services[$0] }, logger: logger, metrics: metrics))
        }
    }

    private func track(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        let stopping = state.withLockedValue { state -> Bool in
            if !state.stopping { state.connections[id] = channel }
            return state.stopping
        }
        if stopping {
            channel.close(promise: nil)
            return
        }
        channel.closeFuture.whenComplete { [state] _ in
            state.withLockedValue { _ = $0.connections.removeValue(forKey: id) }
        }
    }
}
