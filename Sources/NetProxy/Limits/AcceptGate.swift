import NIOCore

/// First in a listening socket's pipeline: counts each accepted connection against its
/// listener's and the process's `max_connections`, and holds the socket's reads while either is
/// reached, so that it accepts nothing more and the kernel's backlog holds new connections until
/// one closes. A connection's ``ConnectionGuard``, which the host's child initializer adds before
/// anything else (SwiftNIO runs it for every connection handed on from here), gives its place
/// back when it closes.
///
/// One read accepts up to `maxMessagesPerRead` connections, and the sockets of a listener (one
/// per event loop) read at the same time, so a read may bring more than the room left. Those
/// connections are parked here, not yet registered with the event loop (no read, no service),
/// and handed on in order as places free up: no connection is closed for a limit, and the
/// listener never holds more than its limit. Near the limit the gate lowers
/// `maxMessagesPerRead` to the room left, so parking stays rare and small.
final class AcceptGate: ChannelDuplexHandler {
    typealias InboundIn = Channel
    typealias InboundOut = Channel
    typealias OutboundIn = NIOAny

    /// The load is read from the slot: the socket is made before its listener's address, and so
    /// its load, is known (it accepts only after).
    private let slot: ListenerSlot
    private var load: ListenerLoad { slot.load }
    private var context: ChannelHandlerContext?
    /// A read held back for want of room.
    private var held = false
    /// Accepted connections over the limit, oldest first.
    private var parked: [Channel] = []
    /// The socket's own `maxMessagesPerRead`, and the value in force now.
    private var batch: UInt = 4
    private var currentBatch: UInt = 4

    init(slot: ListenerSlot) {
        self.slot = slot
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let configured = try? context.channel.syncOptions?.getOption(.maxMessagesPerRead) {
            batch = configured
            currentBatch = configured
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        closeParked()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeParked()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let connection = unwrapInboundIn(data)
        if parked.isEmpty && load.admit() {
            context.fireChannelRead(data)
        } else {
            // Counted as limited, though it is only delayed: those still in the backlog are not
            // seen by the process, the pause is logged.
            load.metrics.limited(.maxConnections)
            parked.append(connection)
        }
    }

    func read(context: ChannelHandlerContext) {
        if !readIfRoom(context) { hold() }
    }

    /// Reads (accepts) as many connections as there is room for; `false` if there is none, or
    /// parked connections come first.
    private func readIfRoom(_ context: ChannelHandlerContext) -> Bool {
        let room = load.room
        guard parked.isEmpty, room > 0 else { return false }
        let wanted = UInt(min(room, Int(batch)))
        if wanted != currentBatch, (try? context.channel.syncOptions?.setOption(.maxMessagesPerRead, value: wanted)) != nil {
            currentBatch = wanted
        }
        context.read()
        return true
    }

    private func hold() {
        guard let context else { return }
        let first = !held
        held = true
        let wake = NIOLoopBound(self, eventLoop: context.eventLoop)
        load.budget.waitForRoom(ObjectIdentifier(self)) {
            wake.eventLoop.execute { wake.value.retry() }
        }
        if first { load.paused() }
        // A close between the check and the registration has woken nobody: check again.
        if load.room > 0 { retry() }
    }

    private func retry() {
        guard let context, context.channel.isActive else { return }
        // Parked connections first, in the order they came.
        while let next = parked.first, load.admit() {
            parked.removeFirst()
            context.fireChannelRead(wrapInboundOut(next))
        }
        if !parked.isEmpty { return hold() }
        guard held else { return }
        guard readIfRoom(context) else { return hold() }
        held = false
        load.resumed()
    }

    private func closeParked() {
        let connections = parked
        parked = []
        for connection in connections { connection.close(promise: nil) }
    }
}

@available(*, unavailable)
extension AcceptGate: Sendable {}
