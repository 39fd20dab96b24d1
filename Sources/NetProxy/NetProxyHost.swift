import Foundation
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
    private struct ReloadSummary: Sendable {
        var added: Int
        var removed: Int
        var kept: Int
    }

    /// A reload from its start until it ends, is abandoned at its deadline, or is abandoned by a
    /// shutdown. Only the one in ``State/reload`` may commit; one abandoned undoes itself.
    private struct ReloadInProgress {
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
    private enum Lifecycle {
        case idle
        case starting
        case running
        case stopping
        case stopped
    }

    /// A listener's sockets, and the slot their connections read their role from.
    private struct OpenListener {
        var key: ListenerKey
        var slot: ListenerSlot
        var channels: [Channel]
        var bound: BoundListener
        /// Its connections' count, limit and metrics.
        var load: ListenerLoad
        /// The socket file of a UNIX listener, removed when the listener closes.
        var unixFile: (path: String, identity: UnixSocketFile.FileIdentity, settings: ProxyUnixSocket)?
    }

    private struct State {
        var lifecycle = Lifecycle.idle
        var runtime: HostRuntime
        var listeners: [OpenListener] = []
        /// The reload in progress, if any.
        var reload: ReloadInProgress?
        /// Numbers reloads, for ``ReloadInProgress/id``.
        var reloadsStarted: UInt64 = 0
        var connections: [ObjectIdentifier: Channel] = [:]
        /// Runs the connections of async services; owned by the host and awaited on shutdown.
        var serviceTasks: Task<Void, Never>?
    }

    /// The configuration in force: the one the host was created with, or the last one reloaded.
    public var configuration: NetProxyConfiguration { state.withLockedValue { $0.runtime.configuration } }
    /// Problems of the configuration in force that do not stop the host (an unmapped PROXY port,
    /// an empty trust list).
    public var warnings: [String] { state.withLockedValue { $0.runtime.warnings } }
    /// The listeners the configuration in force asks for, in the order they are bound.
    public var plan: [ListenerPlan] { state.withLockedValue { $0.runtime.plan } }
    /// The services given in code; a configuration adds its forward and multiplex services.
    private let registered: [String: NetProxyService]
    private let logger: Logger
    private let group: EventLoopGroup
    /// The group's event loops: a TCP listener has a socket on each.
    private let eventLoops: Int
    private let metrics: HostMetrics
    private let refusals: RateLimitedLog
    /// What the whole process holds, against `max_connections` and per source.
    private let budget: ConnectionBudget
    /// Where connections' deadlines are checked, one per event loop.
    private let sweeps: IdleSweeps
    /// The forwards' connections to their targets, refused if they arrive here.
    private let outgoing: OutgoingConnections
    private let asyncConnections = AsyncStream.makeStream(of: AsyncServiceConnection.self)
    private let state: NIOLockedValueBox<State>
    /// Settings of reloads that tests change.
    let reloadSettings = NIOLockedValueBox(ReloadSettings())

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
        let eventLoops = Array(eventLoopGroup.makeIterator()).count
        let outgoing = OutgoingConnections()
        let runtime = try HostRuntime(
            configuration, registered: byName, metrics: metrics, log: refusals, asyncConnections: asyncConnections.continuation,
            outgoing: outgoing, eventLoops: eventLoops, logger: logger)
        outgoing.localAddresses = runtime.localAddresses
        self.outgoing = outgoing
        self.registered = byName
        self.eventLoops = eventLoops
        self.state = NIOLockedValueBox(State(runtime: runtime))
        self.logger = logger
        self.group = eventLoopGroup
        self.metrics = metrics
        self.refusals = refusals
        self.budget = ConnectionBudget(maxConnections: runtime.maxConnections)
        self.sweeps = IdleSweeps(group: eventLoopGroup)
    }

    /// The bound listeners, once started.
    public var listeners: [BoundListener] { state.withLockedValue { $0.listeners.map(\.bound) } }

    /// The Prometheus text exposition of the host's counters.
    public var metricsExposition: String { metrics.exposition }

    /// Binds every listener; throws (after closing what was bound) if one cannot be bound, or
    /// if the host was started before.
    @discardableResult
    public func start() async throws -> [BoundListener] {
        let runtime = state.withLockedValue { state -> HostRuntime? in
            guard case .idle = state.lifecycle else { return nil }
            state.lifecycle = .starting
            state.serviceTasks = Task { [asyncConnections, logger] in
                await withDiscardingTaskGroup { group in
                    for await connection in asyncConnections.stream {
                        group.addTask { await connection.run(logger: logger) }
                    }
                }
            }
            return state.runtime
        }
        guard let runtime else { throw NetProxyConfigurationError("the host can be started once only") }
        for warning in runtime.warnings {
            logger.warning("\(warning)")
        }
        do {
            let opened = try await open(runtime, keeping: [:], reloadID: nil)
            let started = state.withLockedValue { state -> Bool in
                guard case .starting = state.lifecycle else { return false }
                state.listeners = opened
                state.lifecycle = .running
                return true
            }
            guard started else {
                await close(opened)
                throw NetProxyConfigurationError("the host was shut down while starting")
            }
            await startAccepting(opened)
        } catch {
            await shutdown(gracePeriod: .zero)
            throw error
        }
        return listeners
    }

    /// Reads the configuration anew with `load` and applies it as ``reload(configuration:)``
    /// does. An error from `load` is counted and logged as a failed reload, and thrown as it is.
    public func reload(loading load: () async throws -> NetProxyConfiguration) async throws {
        let configuration: NetProxyConfiguration
        do {
            configuration = try await load()
        } catch {
            failed(error)
            throw error
        }
        try await reload(configuration: configuration)
    }

    /// Applies `configuration` to new connections; the connections already accepted keep what
    /// they had.
    ///
    /// Listeners that the new configuration still asks for keep their sockets (no connection is
    /// refused during a reload) and take their new role: service, trust list, policies and
    /// certificates. New listeners are bound, but accept only once the new configuration is in
    /// force, and dropped ones are closed. If a check or a bind fails, nothing changes: the error,
    /// which names the entry at fault, is logged and thrown, and the configuration in force keeps
    /// serving. Each reload is counted in `netproxy_reloads_total{result}`.
    ///
    /// Certificate and key files are read only if they are regular files (never a FIFO or a
    /// device, which could block), and a reload that has not finished within 30 seconds, stuck on
    /// a file system or a name server, fails in the same way; what it still does afterwards is
    /// undone. A shutdown never waits for a reload longer than that.
    public func reload(configuration: NetProxyConfiguration) async throws(NetProxyConfigurationError) {
        do {
            let summary = try await replaceRuntimeWithinDeadline(configuration)
            metrics.reloaded(success: true)
            logger.info("configuration reloaded: \(summary.added) listener(s) added, \(summary.removed) closed, \(summary.kept) kept")
        } catch {
            failed(error)
            throw error
        }
    }

    private func failed(_ error: any Error) {
        metrics.reloaded(success: false)
        logger.error("reload failed; the configuration in force is unchanged: \(error)")
    }

    /// Runs ``replaceRuntime(_:reloadID:)`` in a task of its own and returns its outcome, or its
    /// failure once the reload's deadline passes or a shutdown abandons it, whichever comes
    /// first: neither the caller nor a shutdown waits for a reload stuck on a file or a name
    /// server. A reload that goes on after that finds itself abandoned and undoes what it did.
    private func replaceRuntimeWithinDeadline(
        _ configuration: NetProxyConfiguration
    ) async throws(NetProxyConfigurationError) -> ReloadSummary {
        let loop = group.any()
        let (id, outcome) = try state.withLockedValue { state -> Result<(UInt64, EventLoopFuture<ReloadSummary>), NetProxyConfigurationError> in
            guard case .running = state.lifecycle else { return .failure(NetProxyConfigurationError("the host is not running")) }
            guard state.reload == nil else { return .failure(NetProxyConfigurationError("a reload is already in progress")) }
            state.reloadsStarted += 1
            let reload = ReloadInProgress(id: state.reloadsStarted, outcome: loop.makePromise())
            state.reload = reload
            return .success((reload.id, reload.outcome.futureResult))
        }.get()
        let timeout = reloadSettings.withLockedValue { $0.timeout }
        let deadline = loop.scheduleTask(in: timeout) { [self] in
            abandonReload(
                id, phases: [.building, .binding],
                NetProxyConfigurationError(
                    "the reload did not finish within \(Self.secondsText(timeout)) s (a file system or a name server that does not answer?) and is abandoned; whatever it still does is undone"
                ))
        }
        Task { [self] in
            let result: Result<ReloadSummary, NetProxyConfigurationError>
            do throws(NetProxyConfigurationError) {
                result = .success(try await replaceRuntime(configuration, reloadID: id))
            } catch {
                result = .failure(error)
            }
            deadline.cancel()
            endReload(id, result)
        }
        do {
            return try await outcome.get()
        } catch let error as NetProxyConfigurationError {
            throw error
        } catch {
            throw NetProxyConfigurationError("\(error)")
        }
    }

    /// Fails reload `id` with `error` if it is still the one in progress and in one of `phases`;
    /// it then no longer holds the host, and a later reload may start.
    private func abandonReload(_ id: UInt64, phases: Set<ReloadInProgress.Phase>, _ error: NetProxyConfigurationError) {
        let abandoned = state.withLockedValue { state -> ReloadInProgress? in
            guard let reload = state.reload, reload.id == id, phases.contains(reload.phase) else { return nil }
            state.reload = nil
            return reload
        }
        abandoned?.outcome.fail(error)
    }

    /// Hands reload `id`'s result to its caller, unless it was abandoned, which has answered already.
    private func endReload(_ id: UInt64, _ result: Result<ReloadSummary, NetProxyConfigurationError>) {
        let current = state.withLockedValue { state -> ReloadInProgress? in
            guard let reload = state.reload, reload.id == id else { return nil }
            state.reload = nil
            return reload
        }
        guard let current else {
            logger.notice("a reload abandoned earlier has ended; it changed nothing")
            return
        }
        current.outcome.completeWith(result.mapError { $0 })
    }

    /// Why a start or reload `reloadID` must stop and undo what it did, or `nil` if it may go on.
    private static func abortReason(_ state: State, reloadID: UInt64?) -> NetProxyConfigurationError? {
        switch state.lifecycle {
        case .stopping, .stopped: return NetProxyConfigurationError("the host is shutting down")
        case .idle, .starting, .running: break
        }
        if let reloadID, state.reload?.id != reloadID {
            return NetProxyConfigurationError("the reload was abandoned")
        }
        return nil
    }

    /// Builds the runtime for `configuration` on a thread of its own: it reads files and resolves
    /// names, which may block, and a blocked thread must be neither one of the few that run the
    /// process's async code nor one of a pool that other work needs.
    private func buildRuntime(_ configuration: NetProxyConfiguration) async throws(NetProxyConfigurationError) -> HostRuntime {
        let beforeBuilding = reloadSettings.withLockedValue { $0.beforeBuildingRuntime }
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<HostRuntime, NetProxyConfigurationError>, Never>) in
            Thread.detachNewThread {
                [registered, metrics, refusals, connections = asyncConnections.continuation, outgoing, eventLoops, logger] in
                beforeBuilding?()
                continuation.resume(
                    returning: Result { () throws(NetProxyConfigurationError) in
                        try HostRuntime(
                            configuration, registered: registered, metrics: metrics, log: refusals, asyncConnections: connections,
                            outgoing: outgoing, eventLoops: eventLoops, logger: logger)
                    })
            }
        }
        return try result.get()
    }

    /// `amount` in seconds, without a fraction when it has none.
    private static func secondsText(_ amount: TimeAmount) -> String {
        amount.nanoseconds % 1_000_000_000 == 0 ? "\(amount.nanoseconds / 1_000_000_000)" : "\(Double(amount.nanoseconds) / 1e9)"
    }

    /// Builds the runtime for `configuration`, binds its new listeners and puts it in force, as
    /// reload `reloadID`: if that reload is abandoned meanwhile, or the host shuts down, it
    /// undoes what it did and throws.
    private func replaceRuntime(
        _ configuration: NetProxyConfiguration, reloadID: UInt64
    ) async throws(NetProxyConfigurationError) -> ReloadSummary {
        let runtime = try await buildRuntime(configuration)
        let current = try state.withLockedValue { state -> Result<[OpenListener], NetProxyConfigurationError> in
            if let reason = Self.abortReason(state, reloadID: reloadID) { return .failure(reason) }
            state.reload?.phase = .binding
            return .success(state.listeners)
        }.get()
        // A UNIX listener whose file was removed (or replaced) since is bound anew: no client can
        // reach the old socket.
        let intact = current.filter { listener in
            guard let file = listener.unixFile, !UnixSocketFile.isPublished(file.path, as: file.identity) else { return true }
            logger.warning("proxy_unix_sockets.\(file.path): the socket file is gone or replaced; binding it anew")
            return false
        }
        let keeping = Dictionary(uniqueKeysWithValues: intact.map { ($0.key, $0) })
        let opened: [OpenListener]
        do {
            opened = try await open(runtime, keeping: keeping, reloadID: reloadID)
        } catch let error as NetProxyConfigurationError {
            throw error
        } catch {
            throw NetProxyConfigurationError("\(error)")
        }
        let added = opened.filter { keeping[$0.key] == nil }
        let kept = Set(opened.map(\.key)).intersection(keeping.keys)
        let removed = current.filter { !kept.contains($0.key) }
        let abortReason = state.withLockedValue { state -> NetProxyConfigurationError? in
            if let reason = Self.abortReason(state, reloadID: reloadID) { return reason }
            state.reload?.phase = .committed
            for (listener, role) in zip(opened, runtime.roles) where keeping[listener.key] != nil {
                listener.slot.role = role
                listener.load.setMaxConnections(role.connections.maxConnections)
            }
            budget.maxConnections = runtime.maxConnections
            outgoing.localAddresses = runtime.localAddresses
            state.listeners = opened
            state.runtime = runtime
            return nil
        }
        if let abortReason {
            await close(added)
            throw abortReason
        }
        await startAccepting(added)
        for warning in runtime.warnings {
            logger.warning("\(warning)")
        }
        await close(removed)
        // A kept socket file's new mode and owner (checked when the runtime was built).
        for listener in opened {
            guard let file = listener.unixFile, let before = keeping[listener.key]?.unixFile,
                before.settings.fileAttributes != file.settings.fileAttributes
            else { continue }
            do {
                try UnixSocketFile.update(file.path, ifStill: file.identity, settings: file.settings, key: "proxy_unix_sockets.\(file.path)")
            } catch {
                logger.error("reloaded, but \(error)")
            }
        }
        return ReloadSummary(added: added.count, removed: removed.count, kept: opened.count - added.count)
    }

    /// The listeners of `runtime` in its order: those in `keeping` as they are (with their new
    /// plan), the others bound now, not accepting yet. If one cannot be bound, or another process
    /// listens on a new address too, what was bound here is closed and the error thrown; likewise
    /// if the host shuts down meanwhile, or reload `reloadID` (`nil` at start-up) is abandoned.
    private func open(_ runtime: HostRuntime, keeping: [ListenerKey: OpenListener], reloadID: UInt64?) async throws -> [OpenListener] {
        var result: [OpenListener] = []
        var added: [OpenListener] = []
        do {
            for (key, role) in zip(ListenerKey.keys(runtime.plan), runtime.roles) {
                if var listener = keeping[key] {
                    listener.bound.plan = role.plan
                    listener.bound.plan.port = listener.bound.address.port ?? role.plan.port
                    if let path = listener.unixFile?.path, let settings = runtime.configuration.proxyUnixSockets[path] {
                        listener.unixFile?.settings = settings
                    }
                    result.append(listener)
                    continue
                }
                // A shutdown or an abandoned reload meanwhile: stop binding (what was bound is
                // closed below).
                if let reason = state.withLockedValue({ Self.abortReason($0, reloadID: reloadID) }) {
                    throw reason
                }
                let listener: OpenListener
                do {
                    listener = try await bind(role, key: key, configuration: runtime.configuration)
                } catch {
                    // Our own socket in the way: a port moving to or from a wildcard address.
                    func isWildcard(_ host: String) -> Bool { ProxyIPAddress(host)?.isWildcard ?? false }
                    let own = keeping.values.first { other in
                        other.unixFile == nil && role.plan.path == nil && other.bound.address.port == role.plan.port
                            && (isWildcard(other.bound.plan.host) || isWildcard(role.plan.host))
                    }
                    guard let own else { throw error }
                    throw NetProxyConfigurationError(
                        "\(error); this host's \(own.bound.plan) holds the port until the reload ends: change its address in two reloads (remove, then add)"
                    )
                }
                added.append(listener)
                result.append(listener)
                logger.info("listening: \(listener.bound.plan)")
            }
            let shared = ForeignListeners.shared(among: added.map(\.bound.address))
            guard shared.isEmpty else {
                throw NetProxyConfigurationError(
                    "another process listens on \(shared.map { "\($0)" }.joined(separator: ", ")) too (started at the same time?)")
            }
        } catch {
            await close(added)
            throw error
        }
        return result
    }

    /// Lets listeners bound by ``open(_:keeping:reloadID:)`` accept, once their configuration is in force.
    private func startAccepting(_ listeners: [OpenListener]) async {
        for channel in listeners.flatMap(\.channels) {
            try? await channel.setOption(.autoRead, value: true).get()
        }
    }

    /// Closes listeners' sockets (never their connections) and removes their socket files.
    private func close(_ listeners: [OpenListener]) async {
        for listener in listeners {
            for channel in listener.channels {
                try? await channel.close()
            }
            if let file = listener.unixFile {
                _ = UnixSocketFile.remove(file.path, ifStill: file.identity)
            }
        }
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
        let (proceed, reload) = state.withLockedValue { state -> (Bool, ReloadInProgress?) in
            switch state.lifecycle {
            case .stopping, .stopped: return (false, nil)
            case .idle, .starting, .running:
                state.lifecycle = .stopping
                return (true, state.reload)
            }
        }
        guard proceed else { return }
        if let reload {
            // A reload still building its runtime has bound nothing, and may be stuck: it is
            // abandoned, and undoes whatever it finishes later. One binding listeners sees the
            // host stopping when it tries to commit, and closes what it bound: it is waited for
            // (until its deadline at most), so that nothing it opened outlives the shutdown.
            abandonReload(reload.id, phases: [.building], NetProxyConfigurationError("the host is shutting down"))
            _ = try? await reload.outcome.futureResult.get()
        }
        await close(state.withLockedValue { $0.listeners })
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

    /// Binds a listener for `role`: its sockets take their role from the slot, which a reload
    /// may replace.
    private func bind(_ role: ListenerRole, key: ListenerKey, configuration: NetProxyConfiguration) async throws -> OpenListener {
        let slot = ListenerSlot(role)
        var plan = role.plan
        if let path = plan.path, let settings = configuration.proxyUnixSockets[path] {
            let (channel, identity) = try await bindUnix(path, settings: settings, slot: slot)
            let address = try SocketAddress(unixDomainSocketPath: path)
            return OpenListener(
                key: key, slot: slot, channels: [channel], bound: BoundListener(plan: plan, address: address),
                load: makeLoad(address, role: role, slot: slot), unixFile: (path, identity, settings))
        }
        let channels = try await bindTCP(plan, slot: slot)
        let address = channels[0].localAddress!
        plan.port = address.port ?? plan.port
        return OpenListener(
            key: key, slot: slot, channels: channels, bound: BoundListener(plan: plan, address: address),
            load: makeLoad(address, role: role, slot: slot), unixFile: nil)
    }

    /// The load of a listener bound at `address`, given to its sockets before they accept.
    private func makeLoad(_ address: SocketAddress, role: ListenerRole, slot: ListenerSlot) -> ListenerLoad {
        let isMetrics = if case .metrics = role.setup { true } else { false }
        let load = ListenerLoad(
            label: address.displayText, maxConnections: role.connections.maxConnections, countsInProcess: !isMetrics, budget: budget,
            metrics: metrics, log: refusals, logger: logger)
        slot.load = load
        return load
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
    /// without it, which fails if anyone listens there, with `SO_REUSEPORT` or not; and ``open``
    /// looks for other processes' sockets once everything is bound (``ForeignListeners``).
    /// Port 0 needs no probe: the first socket takes a free port, and the others join it.
    private func bindTCP(_ listener: ListenerPlan, slot: ListenerSlot) async throws -> [Channel] {
        var channels: [Channel] = []
        do {
            var port = listener.port
            if port != 0 { try ForeignListeners.probe(listener.host, port: port) }
            let episode = AcceptErrorHandler.Episode()
            for loop in group.makeIterator() {
                let channel = try await bootstrap(slot: slot, group: loop, episode: episode)
                    .serverChannelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
                    .bind(host: listener.host, port: port).get()
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

    /// One socket for the whole group (`SO_REUSEPORT` does not spread UNIX connections). It is
    /// bound in a private directory, and renamed into place once its mode and owner are set, so
    /// no client sees it before, and a stale socket file is replaced in one step
    /// (``UnixSocketFile``).
    private func bindUnix(_ path: String, settings: ProxyUnixSocket, slot: ListenerSlot) async throws -> (Channel, UnixSocketFile.FileIdentity) {
        let key = "proxy_unix_sockets.\(path)"
        let temporary = try UnixSocketFile.prepare(path, key: key)
        let channel: Channel
        do {
            channel = try await bootstrap(slot: slot, group: group, episode: AcceptErrorHandler.Episode())
                .bind(unixDomainSocketPath: temporary.path).get()
        } catch {
            UnixSocketFile.discard(temporary)
            throw NetProxyConfigurationError("\(key): cannot listen: \(error)")
        }
        let identity: UnixSocketFile.FileIdentity
        do {
            identity = try UnixSocketFile.publish(temporary: temporary, as: path, settings: settings, key: key)
        } catch {
            try? await channel.close()
            throw error
        }
        if let other = UnixSocketFile.competitor(for: path) {
            try? await channel.close()
            UnixSocketFile.remove(path, ifStill: identity)
            throw NetProxyConfigurationError("\(key): another process listens on a socket bound for \(path) (\(other)): started at the same time?")
        }
        return (channel, identity)
    }

    private func bootstrap(slot: ListenerSlot, group: EventLoopGroup, episode: AcceptErrorHandler.Episode) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: Self.listenBacklog)
            // Accepting starts once the configuration the listener belongs to is in force
            // (``startAccepting(_:)``); until then connections wait in the backlog.
            .serverChannelOption(.autoRead, value: false)
            .serverChannelInitializer { [logger, metrics] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        AcceptGate(slot: slot),
                        AcceptErrorHandler(slot: slot, episode: episode, logger: logger, metrics: metrics)
                    )
                }
            }
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let role = slot.role
                    // Counted against max_connections by the listener's AcceptGate. First in the
                    // pipeline, so that it sees every byte.
                    let connectionGuard = ConnectionGuard(
                        idleTimeout: role.connections.idleTimeout, listener: slot.load, sweeps: self.sweeps, accepted: true)
                    try channel.pipeline.syncOperations.addHandler(connectionGuard)
                    if self.isOwnForward(channel, on: slot.load) { return }
                    // Set here rather than as a child channel option, which the bootstrap applies
                    // through a chain of futures for every connection.
                    if role.allowsHalfClosure { try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true) }
                    try self.setUp(channel, as: role, guard: connectionGuard)
                }
            }
    }

    private func setUp(_ channel: Channel, as role: ListenerRole, guard connectionGuard: ConnectionGuard) throws {
        track(channel)
        let pipeline = channel.pipeline.syncOperations
        let sourceLimit = role.connections.maxConnectionsPerSource
        switch role.setup {
        case .metrics:
            // A request trickled in byte by byte is not activity; a complete one is.
            connectionGuard.countsReads = false
            connectionGuard.startIdleClock()
            try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
            try pipeline.addHandler(
                HTTPResponder { [metrics] head in
                    guard head.method == .GET || head.method == .HEAD, head.uri.split(separator: "?").first == "/metrics" else {
                        return .init(status: .notFound, contentType: "text/plain; charset=utf-8", body: "not found; try GET /metrics\n")
                    }
                    return .init(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.exposition)
                })
        case .service(let service):
            metrics.accepted(proxyListener: false)
            try pipeline.addHandler(
                ServiceDispatcher(
                    service: service, guard: connectionGuard, sourceLimit: sourceLimit, logger: logger, metrics: metrics,
                    asyncConnections: asyncConnections.continuation))
        case .proxy(let service, let policy):
            metrics.accepted(proxyListener: true)
            // A direct client is served as on a regular port: no header is read.
            let direct = policy.directClients.map { clients in channel.remoteAddress.map(clients.contains) ?? false } ?? false
            if !direct {
                // Accepted headers are counted by the dispatcher, which looks the header up anyway.
                try pipeline.addHandler(ProxyProtocolServerHandler(configuration: policy.header, onRefusal: connectionGuard.listener.onRefusal))
            }
            if let tls = role.tls {
                try pipeline.addHandler(NIOSSLServerHandler(context: tls))
                if let timeout = role.connections.tlsHandshakeTimeout {
                    try pipeline.addHandler(TLSHandshakeDeadline(guard: connectionGuard, timeout: timeout))
                }
            }
            try pipeline.addHandler(
                ServiceDispatcher(
                    service: service, guard: connectionGuard, sourceLimit: sourceLimit, logger: logger, metrics: metrics,
                    asyncConnections: asyncConnections.continuation))
        }
    }

    /// Whether `channel` is one of this host's own forward connections, arrived back here (a
    /// loop, or a relay into a PROXY port that would launder trust); it is then closed, and
    /// counted and logged as a `forward_loop` rejection.
    private func isOwnForward(_ channel: Channel, on listener: ListenerLoad) -> Bool {
        guard let peer = channel.remoteAddress, outgoing.isOurs(peer: peer, localAddress: channel.localAddress) else { return false }
        metrics.rejected(reason: "forward_loop")
        refusals.warning(
            "refused a connection from \(peer.displayText) on \(listener.label): it is this host's own forward connection (a forward whose target leads back to this host)"
        )
        channel.close(promise: nil)
        return true
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
