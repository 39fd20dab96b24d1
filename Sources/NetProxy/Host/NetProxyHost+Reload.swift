import Foundation
import NIOCore
import ProxyProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

extension NetProxyHost {
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
    ///
    /// - Throws: ``NetProxyConfigurationError`` for a configuration the host cannot run;
    ///   ``NetProxyHostError`` when the host is not running or stopping, another reload is in
    ///   progress, the deadline passed, or a new listener cannot be bound.
    public func reload(configuration: NetProxyConfiguration) async throws {
        do {
            let summary = try await replaceRuntimeWithinDeadline(configuration)
            metrics.reloaded(success: true)
            logger.info("configuration reloaded: \(summary.added) listener(s) added, \(summary.removed) closed, \(summary.kept) kept")
        } catch {
            failed(error)
            throw error
        }
    }

    func failed(_ error: any Error) {
        metrics.reloaded(success: false)
        logger.error("reload failed; the configuration in force is unchanged: \(error)")
    }

    /// Runs ``replaceRuntime(_:reloadID:)`` in a task of its own and returns its outcome, or its
    /// failure once the reload's deadline passes or a shutdown abandons it, whichever comes
    /// first: neither the caller nor a shutdown waits for a reload stuck on a file or a name
    /// server. A reload that goes on after that finds itself abandoned and undoes what it did.
    func replaceRuntimeWithinDeadline(
        _ configuration: NetProxyConfiguration
    ) async throws -> ReloadSummary {
        let loop = group.any()
        let (id, outcome) = try state.withLockedValue { state -> Result<(UInt64, EventLoopFuture<ReloadSummary>), NetProxyHostError> in
            guard case .running = state.lifecycle else { return .failure(NetProxyHostError(.notRunning, "the host is not running")) }
            guard state.reload == nil else { return .failure(NetProxyHostError(.reloadInProgress, "a reload is already in progress")) }
            state.reloadsStarted += 1
            let reload = ReloadInProgress(id: state.reloadsStarted, outcome: loop.makePromise())
            state.reload = reload
            return .success((reload.id, reload.outcome.futureResult))
        }.get()
        let timeout = reloadSettings.withLockedValue { $0.timeout }
        let deadline = loop.scheduleTask(in: timeout) { [self] in
            abandonReload(
                id, phases: [.building, .binding],
                NetProxyHostError(
                    .reloadTimedOut,
                    "the reload did not finish within \(timeout.secondsText) (a file system or a name server that does not answer?) and is abandoned; whatever it still does is undone"
                ))
        }
        Task { [self] in
            let result: Result<ReloadSummary, any Error>
            do {
                result = .success(try await replaceRuntime(configuration, reloadID: id))
            } catch {
                result = .failure(error)
            }
            deadline.cancel()
            endReload(id, result)
        }
        return try await outcome.get()
    }

    /// Fails reload `id` with `error` if it is still the one in progress and in one of `phases`;
    /// it then no longer holds the host, and a later reload may start.
    func abandonReload(_ id: UInt64, phases: Set<ReloadInProgress.Phase>, _ error: NetProxyHostError) {
        let abandoned = state.withLockedValue { state -> ReloadInProgress? in
            guard let reload = state.reload, reload.id == id, phases.contains(reload.phase) else { return nil }
            state.reload = nil
            return reload
        }
        abandoned?.outcome.fail(error)
    }

    /// Hands reload `id`'s result to its caller, unless it was abandoned, which has answered already.
    func endReload(_ id: UInt64, _ result: Result<ReloadSummary, any Error>) {
        let current = state.withLockedValue { state -> ReloadInProgress? in
            guard let reload = state.reload, reload.id == id else { return nil }
            state.reload = nil
            return reload
        }
        guard let current else {
            logger.notice("a reload abandoned earlier has ended; it changed nothing")
            return
        }
        current.outcome.completeWith(result)
    }

    /// Why a start or reload `reloadID` must stop and undo what it did, or `nil` if it may go on.
    static func abortReason(_ state: State, reloadID: UInt64?) -> NetProxyHostError? {
        switch state.lifecycle {
        case .stopping, .stopped: return NetProxyHostError(.shuttingDown, "the host is shutting down")
        case .idle, .starting, .running: break
        }
        if let reloadID, state.reload?.id != reloadID {
            return NetProxyHostError(.reloadTimedOut, "the reload was abandoned")
        }
        return nil
    }

    /// Builds the runtime for `configuration` on a thread of its own: it reads files and resolves
    /// names, which may block, and a blocked thread must be neither one of the few that run the
    /// process's async code nor one of a pool that other work needs.
    func buildRuntime(
        _ configuration: NetProxyConfiguration
    ) async throws(NetProxyConfigurationError) -> (HostRuntime, AccessLogFile?) {
        let beforeBuilding = reloadSettings.withLockedValue { $0.beforeBuildingRuntime }
        typealias Built = Result<(HostRuntime, AccessLogFile?), NetProxyConfigurationError>
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Built, Never>) in
            Thread.detachNewThread {
                [registered, context] in
                beforeBuilding?()
                continuation.resume(
                    returning: Result { () throws(NetProxyConfigurationError) in
                        let runtime = try HostRuntime(configuration, registered: registered, context: context)
                        // Opened anew, on this thread like the other files: a log rotated away
                        // is followed by a new file.
                        let accessLog = try configuration.accessLog.map { path throws(NetProxyConfigurationError) in try AccessLogFile.opening(path) }
                        return (runtime, accessLog)
                    })
            }
        }
        return try result.get()
    }

    /// Builds the runtime for `configuration`, binds its new listeners and puts it in force, as
    /// reload `reloadID`: if that reload is abandoned meanwhile, or the host shuts down, it
    /// undoes what it did and throws.
    func replaceRuntime(
        _ configuration: NetProxyConfiguration, reloadID: UInt64
    ) async throws -> ReloadSummary {
        let (runtime, accessLogFile) = try await buildRuntime(configuration)
        let current = try state.withLockedValue { state -> Result<[Listener], NetProxyHostError> in
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
        let opened = try await open(runtime, keeping: keeping, reloadID: reloadID)
        let added = opened.filter { keeping[$0.key] == nil }
        let kept = Set(opened.map(\.key)).intersection(keeping.keys)
        let removed = current.filter { !kept.contains($0.key) }
        let abortReason = state.withLockedValue { state -> NetProxyHostError? in
            if let reason = Self.abortReason(state, reloadID: reloadID) { return reason }
            state.reload?.phase = .committed
            for (listener, role) in zip(opened, runtime.roles) where keeping[listener.key] != nil {
                listener.slot.role = role
                listener.load.setMaxConnections(role.connections.maxConnections)
            }
            budget.maxConnections = runtime.maxConnections
            outgoing.localAddresses = runtime.localAddresses
            state.lifecycle = .running(opened)
            state.runtime = runtime
            context.accessLog.use(accessLogFile)
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
    func open(_ runtime: HostRuntime, keeping: [ListenerKey: Listener], reloadID: UInt64?) async throws -> [Listener] {
        var result: [Listener] = []
        var added: [Listener] = []
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
                let listener: Listener
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
                    throw NetProxyHostError(
                        .cannotListen,
                        "\(error); this host's \(own.bound.plan) holds the port until the reload ends: change its address in two reloads (remove, then add)"
                    )
                }
                added.append(listener)
                result.append(listener)
                logger.info("listening: \(listener.bound.plan)")
            }
            let shared = ForeignListeners.shared(among: added.map(\.bound.address))
            guard shared.isEmpty else {
                throw NetProxyHostError(
                    .cannotListen,
                    "another process listens on \(shared.map { "\($0)" }.joined(separator: ", ")) too (started at the same time?)")
            }
        } catch {
            await close(added)
            throw error
        }
        return result
    }

    /// Lets listeners bound by ``open(_:keeping:reloadID:)`` accept, once their configuration is in force.
    func startAccepting(_ listeners: [Listener]) async {
        for channel in listeners.flatMap(\.channels) {
            try? await channel.setOption(.autoRead, value: true).get()
        }
    }

    /// Closes listeners' sockets (never their connections) and removes their socket files.
    func close(_ listeners: [Listener]) async {
        for listener in listeners {
            for channel in listener.channels {
                try? await channel.close()
            }
            if let file = listener.unixFile {
                _ = UnixSocketFile.remove(file.path, ifStill: file.identity)
            }
        }
    }
}
