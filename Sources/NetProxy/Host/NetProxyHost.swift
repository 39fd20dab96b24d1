import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
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
/// let host = try NetProxyHost(configuration: configuration, services: [c2s], logger: logger) { listeners in
///     logger.info("listening on \(listeners.map(\.address))")
/// }
/// try await ServiceGroup(services: [host], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
///
/// ``run()`` is the host's whole life: it binds the listeners, calls `onServerRunning` with
/// them, serves until a graceful shutdown (or the task's cancellation), drains, and returns
/// once every connection and every async service has ended.
///
/// On a PROXY port a connection is accepted only from a trusted proxy, and only after a valid
/// header; the service then gets it as if the client had connected directly (with TLS first,
/// on `proxy_tls_ports`). On graceful shutdown the host stops accepting, closes connections
/// still waiting for a header, and lets the others drain for the grace period.
public final class NetProxyHost: Service, Sendable {
    /// NetProxy's version, which `netproxy --version` prints and `netproxy_build_info{version}`
    /// exports.
    public static let version = "0.9.0"

    /// The accept queue's length. SwiftNIO's default, 128, overflows under bursts of new
    /// connections, and each overflow costs the client a SYN retransmission (a second or more);
    /// the kernel caps it at `net.core.somaxconn`.
    static let listenBacklog: Int32 = 1024

    /// How many connections one read of a listening socket accepts. SwiftNIO's default is 4;
    /// under load 16 took fewer trips through the event loop per connection (3% more connections
    /// per second, 4% less CPU each, measured with `Benchmarks/ab.sh`; 64 gained nothing more).
    /// ``AcceptGate`` lowers it near a limit.
    static let acceptBatch: UInt = 16

    /// How long a reload may take before it fails and is abandoned, the configuration in force
    /// staying. Building a runtime reads certificate files and resolves forward targets' names
    /// (each within ``HostRuntime/resolveTimeout``), and binds listeners: well under a second
    /// unless something hangs, such as a file system or a name server that does not answer.
    static let reloadTimeout = TimeAmount.seconds(30)

    /// What tests may change about reloads, through `@testable import`.
    struct ReloadSettings: Sendable {
        /// How long a reload may take; ``NetProxyHost/reloadTimeout`` unless a test shortens it.
        var timeout = NetProxyHost.reloadTimeout
        /// Runs on the reload's own thread before the new runtime is built: a test makes it
        /// block, as a file system or a name server could.
        var beforeBuildingRuntime: (@Sendable () -> Void)? = nil
    }

    /// What one reload did to the listeners.
    struct ReloadSummary: Sendable {
        var added: Int
        var removed: Int
        var kept: Int
    }

    /// A reload from its start until it ends, is abandoned at its deadline, or is abandoned by a
    /// shutdown. Only the one in ``State/reload`` may commit; one abandoned undoes itself.
    struct ReloadInProgress {
        enum Phase {
            /// Building the new runtime on a thread of its own: nothing is bound yet.
            case building
            /// Binding the new runtime's listeners.
            case binding
            /// In force; what is left (starting to accept, closing dropped listeners) does not block.
            case committed
        }

        /// Tells this reload from later ones, once it is abandoned.
        var id: UInt64
        var phase = Phase.building
        /// The caller's outcome: the reload's own, or the failure that abandoned it.
        var outcome: EventLoopPromise<ReloadSummary>
    }

    /// A listener and the address it is bound to.
    public struct BoundListener: Hashable, Sendable {
        /// What the listener is for.
        public var plan: ListenerPlan
        /// Where it is bound (with the actual port, when the plan said 0).
        public var address: SocketAddress
    }

    /// Where the host is in its life; each step happens once.
    enum Lifecycle {
        case idle
        /// Binding the first listeners.
        case starting
        /// Serving on these listeners; a reload replaces them.
        case running([Listener])
        /// Closing its listeners and draining connections.
        case stopping
        case stopped
    }

    /// A listener while it is open: its sockets (one per event loop, or one for a UNIX
    /// socket), the slot their connections read their role from, and its public view.
    struct Listener {
        var key: ListenerKey
        var slot: ListenerSlot
        var channels: [Channel]
        var bound: BoundListener
        /// Its connections' count, limit and metrics.
        var load: ListenerLoad
        /// The socket file of a UNIX listener, removed when the listener closes.
        var unixFile: (path: String, identity: UnixSocketFile.FileIdentity, settings: ProxyUnixSocket)?
    }

    struct State {
        var lifecycle = Lifecycle.idle
        /// What the configuration in force makes; from creation to the end.
        var runtime: HostRuntime
        /// The reload in progress, if any. It starts only while running, and outlives that
        /// state when a shutdown abandons it or waits for it.
        var reload: ReloadInProgress?
        /// Numbers reloads, for ``ReloadInProgress/id``.
        var reloadsStarted: UInt64 = 0

        /// The listeners open while running; none in any other state.
        var listeners: [Listener] {
            if case .running(let listeners) = lifecycle { return listeners }
            return []
        }
    }

    /// The configuration in force: the one the host was created with, or the last one reloaded.
    public var configuration: NetProxyConfiguration { state.withLockedValue { $0.runtime.configuration } }
    /// Problems of the configuration in force that do not stop the host (an unmapped PROXY port,
    /// an empty trust list).
    public var warnings: [String] { state.withLockedValue { $0.runtime.warnings } }
    /// The listeners the configuration in force asks for, in the order they are bound.
    public var plan: [ListenerPlan] { state.withLockedValue { $0.runtime.plan } }
    /// The services given in code; a configuration adds its forward and multiplex services.
    let registered: [String: NetProxyService]
    let group: EventLoopGroup
    /// What the host lends its runtimes and services: metrics, logs, the register of outgoing
    /// connections.
    let context: HostContext
    var logger: Logger { context.logger }
    var eventLoops: Int { context.eventLoops }
    var metrics: HostMetrics { context.metrics }
    var refusals: RateLimitedLog { context.refusals }
    /// The forwards' connections to their targets, refused if they arrive here.
    var outgoing: OutgoingConnections { context.outgoing }
    /// What the whole process holds, against `max_connections` and per source.
    let budget: ConnectionBudget
    /// Where connections' deadlines are checked, one per event loop.
    let sweeps: IdleSweeps
    /// The connections open now, for the shutdown.
    let connections: ConnectionRegistry
    let asyncConnections = AsyncStream.makeStream(of: AsyncServiceConnection.self)
    let state: NIOLockedValueBox<State>
    /// Settings of reloads that tests change.
    let reloadSettings = NIOLockedValueBox(ReloadSettings())
    /// Called by ``run()`` once every listener is bound and accepting.
    let onServerRunning: @Sendable ([BoundListener]) async -> Void

    /// Checks the configuration against the services; the error names the entry at fault.
    ///
    /// The host counts in a Prometheus registry of its own, which `metrics_port` and
    /// ``metricsExposition`` show, and reports the same metrics to `metricsFactory`: by default
    /// the one the process bootstrapped `MetricsSystem` with, if any.
    ///
    /// `onServerRunning` is called by ``run()`` with the bound listeners (and the ports the
    /// system chose for port 0) once every listener accepts.
    public init(
        configuration: NetProxyConfiguration,
        services: [NetProxyService] = NetProxyService.builtins,
        logger: Logger = Logger(label: "netproxy"),
        eventLoopGroup: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        metricsFactory: any MetricsFactory = MetricsSystem.factory,
        onServerRunning: @escaping @Sendable ([BoundListener]) async -> Void = { _ in }
    ) throws(NetProxyConfigurationError) {
        var byName: [String: NetProxyService] = [:]
        for service in services {
            guard byName[service.name] == nil else {
                throw NetProxyConfigurationError(.conflict, key: nil, "service \"\(service.name)\" is registered twice")
            }
            byName[service.name] = service
        }
        let metrics = HostMetrics(reportingTo: metricsFactory)
        let context = HostContext(
            metrics: metrics, refusals: RateLimitedLog(logger: logger),
            asyncConnections: asyncConnections.continuation, outgoing: OutgoingConnections(),
            accessLog: AccessLog(dropped: metrics.accessLogDropped(), logger: logger),
            eventLoops: Array(eventLoopGroup.makeIterator()).count, logger: logger)
        let runtime = try HostRuntime(configuration, registered: byName, context: context)
        context.outgoing.localAddresses = runtime.localAddresses
        self.context = context
        self.registered = byName
        self.state = NIOLockedValueBox(State(runtime: runtime))
        self.group = eventLoopGroup
        self.budget = ConnectionBudget(maxConnections: runtime.maxConnections)
        self.sweeps = IdleSweeps(group: eventLoopGroup)
        self.connections = ConnectionRegistry(group: eventLoopGroup)
        self.onServerRunning = onServerRunning
    }

    /// The bound listeners, while the host runs.
    public var listeners: [BoundListener] { state.withLockedValue { $0.listeners.map(\.bound) } }

    /// The Prometheus text exposition of the host's counters.
    public var metricsExposition: String { metrics.exposition }

    /// Runs the host as a `Service`, its whole life in this task.
    ///
    /// Binds every listener (throwing, with nothing left open, if one cannot be bound or the
    /// host ran before), calls `onServerRunning`, then serves until a graceful shutdown request
    /// (SIGINT/SIGTERM in a `ServiceGroup`). Then it stops accepting, closes connections still
    /// waiting for a header, lets the others finish for `shutdown_grace_period`, and closes
    /// what is left; cancelling the task skips the grace period. It returns once every
    /// connection is closed and every async service has returned (cancelled at the end of the
    /// grace period).
    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            // Started first: a second run() throws here, before it could become a second reader
            // of the stream. Connections that arrive meanwhile wait in the stream.
            let listeners = try await start()
            group.addTask { [asyncConnections, logger] in
                await withDiscardingTaskGroup { services in
                    for await connection in asyncConnections.stream {
                        services.addTask { await connection.run(logger: logger) }
                    }
                }
            }
            await onServerRunning(listeners)
            try? await gracefulShutdown()
            await shutdown(gracePeriod: Task.isCancelled ? .zero : configuration.shutdownGracePeriod.timeAmount)
            // What the grace period did not see finish is cancelled.
            group.cancelAll()
        }
    }

    /// The first step of ``run()``: binds every listener; throws (after closing what was bound)
    /// if one cannot be bound, or if the host ran before. Async services are served only inside
    /// ``run()``.
    @discardableResult
    package func start() async throws -> [BoundListener] {
        let runtime = state.withLockedValue { state -> HostRuntime? in
            guard case .idle = state.lifecycle else { return nil }
            state.lifecycle = .starting
            return state.runtime
        }
        guard let runtime else { throw NetProxyHostError(.alreadyStarted, "the host can be started once only") }
        for warning in runtime.warnings {
            logger.warning("\(warning)")
        }
        do {
            // Opened before any listener: a connection's line has somewhere to go.
            context.accessLog.use(
                try runtime.configuration.accessLog.map { path throws(NetProxyConfigurationError) in try AccessLogFile.opening(path) })
            let opened = try await open(runtime, keeping: [:], reloadID: nil)
            let started = state.withLockedValue { state -> Bool in
                guard case .starting = state.lifecycle else { return false }
                state.lifecycle = .running(opened)
                return true
            }
            guard started else {
                await close(opened)
                throw NetProxyHostError(.shuttingDown, "the host was shut down while starting")
            }
            await startAccepting(opened)
        } catch {
            await shutdown(gracePeriod: .zero)
            throw error
        }
        return listeners
    }

    /// The last step of ``run()``: stops accepting, closes connections waiting for a header,
    /// lets the others finish for up to `gracePeriod`, then closes what is left and ends the
    /// stream of async services' connections. A test calls it to shut down at a chosen moment.
    package func shutdown(gracePeriod: TimeAmount) async {
        let stopping = state.withLockedValue { state -> (listeners: [Listener], reload: ReloadInProgress?, wasRunning: Bool)? in
            switch state.lifecycle {
            case .stopping, .stopped: return nil
            case .idle, .starting, .running:
                let listeners = state.listeners
                let wasRunning = if case .running = state.lifecycle { true } else { false }
                state.lifecycle = .stopping
                return (listeners, state.reload, wasRunning)
            }
        }
        guard let (listeners, reload, wasRunning) = stopping else { return }
        if let reload {
            // A reload still building its runtime has bound nothing, and may be stuck: it is
            // abandoned, and undoes whatever it finishes later. One binding listeners sees the
            // host stopping when it tries to commit, and closes what it bound: it is waited for
            // (until its deadline at most), so that nothing it opened outlives the shutdown.
            abandonReload(reload.id, phases: [.building], NetProxyHostError(.shuttingDown, "the host is shutting down"))
            _ = try? await reload.outcome.futureResult.get()
        }
        await close(listeners)
        let draining = connections.stopAccepting()
        // A start that failed has served nothing: its error is the news, not a shutdown.
        if wasRunning {
            logger.info("shutting down: \(draining.count) connection(s) open, draining for up to \(gracePeriod)")
        }
        for channel in draining {
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
        EventLoopFuture.andAllComplete(draining.map(\.closeFuture), on: loop).whenComplete { _ in
            deadline.cancel()
            finish()
        }
        try? await drained.futureResult.get()
        let remaining = connections.open
        if !remaining.isEmpty {
            logger.info("closing \(remaining.count) connection(s) still open after the grace period")
        }
        for channel in remaining {
            try? await channel.close()
        }
        // The close's own future completes before the handlers are removed (when each records its
        // access log line); the close future after.
        for channel in remaining {
            try? await channel.closeFuture.get()
        }
        refusals.flush()
        // Every connection has recorded its line: each closed before its close future completed.
        await context.accessLog.finish()
        // No connection can start an async service any more: ``run()`` waits for those running.
        asyncConnections.continuation.finish()
        state.withLockedValue { $0.lifecycle = .stopped }
    }
}
