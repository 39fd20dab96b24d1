import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

extension NetProxyHost {
    /// Binds a listener for `role`: its sockets take their role from the slot, which a reload
    /// may replace.
    func bind(_ role: ListenerRole, key: ListenerKey, configuration: NetProxyConfiguration) async throws -> Listener {
        let slot = ListenerSlot(role)
        var plan = role.plan
        if let path = plan.path, let settings = configuration.proxyUnixSockets[path] {
            let (channel, identity) = try await bindUnix(path, settings: settings, slot: slot)
            let address = try SocketAddress(unixDomainSocketPath: path)
            return Listener(
                key: key, slot: slot, channels: [channel], bound: BoundListener(plan: plan, address: address),
                load: makeLoad(address, role: role, slot: slot), unixFile: (path, identity, settings))
        }
        let channels = try await bindTCP(plan, slot: slot)
        let address = channels[0].localAddress!
        plan.port = address.port ?? plan.port
        return Listener(
            key: key, slot: slot, channels: channels, bound: BoundListener(plan: plan, address: address),
            load: makeLoad(address, role: role, slot: slot), unixFile: nil)
    }

    /// The load of a listener bound at `address`, given to its sockets before they accept.
    func makeLoad(_ address: SocketAddress, role: ListenerRole, slot: ListenerSlot) -> ListenerLoad {
        let isMetrics = if case .metrics = role.kind { true } else { false }
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
    func bindTCP(_ listener: ListenerPlan, slot: ListenerSlot) async throws -> [Channel] {
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
            throw NetProxyHostError(.cannotListen, "cannot listen for \(listener): \(error)")
        }
    }

    /// One socket for the whole group (`SO_REUSEPORT` does not spread UNIX connections). It is
    /// bound in a private directory, and renamed into place once its mode and owner are set, so
    /// no client sees it before, and a stale socket file is replaced in one step
    /// (``UnixSocketFile``).
    func bindUnix(_ path: String, settings: ProxyUnixSocket, slot: ListenerSlot) async throws -> (Channel, UnixSocketFile.FileIdentity) {
        let key = "proxy_unix_sockets.\(path)"
        let temporary = try UnixSocketFile.prepare(path, key: key)
        let channel: Channel
        do {
            channel = try await bootstrap(slot: slot, group: group, episode: AcceptErrorHandler.Episode())
                .bind(unixDomainSocketPath: temporary.path).get()
        } catch {
            UnixSocketFile.discard(temporary)
            throw NetProxyHostError(.cannotListen, "\(key): cannot listen: \(error)")
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
            throw NetProxyHostError(
                .cannotListen, "\(key): another process listens on a socket bound for \(path) (\(other)): started at the same time?")
        }
        return (channel, identity)
    }

    func bootstrap(slot: ListenerSlot, group: EventLoopGroup, episode: AcceptErrorHandler.Episode) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: Self.listenBacklog)
            .serverChannelOption(.maxMessagesPerRead, value: Self.acceptBatch)
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
                    if self.context.accessLog.isEnabled {
                        let isProxyListener = if case .proxy = role.kind { true } else { false }
                        connectionGuard.record = ConnectionRecord(
                            log: self.context.accessLog, listener: slot.load.label, peer: channel.remoteAddress,
                            isProxyListener: isProxyListener, started: channel.eventLoop.now)
                    }
                    try channel.pipeline.syncOperations.addHandler(connectionGuard)
                    if self.isOwnForward(channel, on: slot.load) {
                        connectionGuard.record?.ended("refused", reason: "forward_loop")
                        return
                    }
                    // Set here rather than as a child channel option, which the bootstrap applies
                    // through a chain of futures for every connection.
                    if role.allowsHalfClosure { try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true) }
                    try ReceiveBuffers.apply(to: channel)
                    try self.setUp(channel, as: role, guard: connectionGuard)
                }
            }
    }
}
