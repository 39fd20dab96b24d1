import NIOCore
import NIOTLS

/// Tells the ``ConnectionGuard`` of a connection, as an outbound user event, that it is in use
/// although no byte counted as activity moved: an HTTP server sends it for each complete part
/// of a request, so that a request trickled in a byte at a time is not activity, and a
/// complete one is.
struct ConnectionActivity: Sendable {}

/// First in the pipeline of every connection the host holds (and of a forward's connection to
/// its target): closes it when no byte has been read or written for its idle timeout, or when
/// its TLS handshake has not finished in time, and gives its places in the budgets back when
/// it closes.
///
/// Deadlines are checked by the event loop's ``IdleSweep``; on the connection's path this
/// handler only stores the time of the last read or write.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    // What the socket reads and writes; passed on as they came.
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Why a connection is closed by its guard.
    enum Expiry {
        case idle
        case tlsHandshake
    }

    /// How long the connection may go without activity; a service with its own `idle_timeout`
    /// replaces it when it takes the connection.
    var idleTimeout: TimeAmount
    /// Whether a byte read counts as activity. An HTTP server turns it off and sends
    /// ``ConnectionActivity`` for each complete request part instead.
    var countsReads = true
    /// When the TLS handshake must have finished by; `nil` when there is none to wait for.
    var handshakeDeadline: NIODeadline?
    /// The listener the connection came from: its counters, its log.
    let listener: ListenerLoad
    /// Where the connection is counted in ``ConnectionBudget`` by source, once it is.
    private(set) var source: SourceKey?
    /// The client, once known (the header's source on a PROXY port), for log lines.
    private var client: SocketAddress?
    /// Whether this is an accepted connection, rather than one opened on its behalf (a
    /// forward's target side).
    private let accepted: Bool
    private let sweeps: IdleSweeps
    /// Shared with the companion's guard: the two sides of a relay time out as one connection,
    /// counted and logged once.
    private var pair: TimeoutMark?
    /// Set when the idle clock starts, then at each read or write; in the event loop's time
    /// (`EventLoop.now`), which a test's embedded loop advances at will.
    private var lastActivity = NIODeadline.uptimeNanoseconds(0)
    /// Whether the idle clock runs: from the hand-over to the service (before it, the header's
    /// deadline and the TLS handshake's apply), at once for a connection opened on behalf of
    /// another.
    private var idleClockRuns: Bool
    private var context: ChannelHandlerContext?
    private var sweep: IdleSweep?
    /// Its place in the sweep's array, for constant-time removal.
    var sweepIndex = -1
    /// What the access log will say of the connection, while the log is on; a companion shares
    /// its accepted connection's.
    var record: ConnectionRecord?

    /// - Parameters:
    ///   - accepted: `true` for an accepted connection, which ``AcceptGate`` counted in and this
    ///     guard releases when it closes; `false` for one opened on its behalf.
    init(idleTimeout: TimeAmount, listener: ListenerLoad, sweeps: IdleSweeps, accepted: Bool) {
        self.idleTimeout = idleTimeout
        self.listener = listener
        self.sweeps = sweeps
        self.accepted = accepted
        self.idleClockRuns = !accepted
    }

    /// Starts the idle clock: the connection is handed to its service now.
    func startIdleClock() {
        idleClockRuns = true
        lastActivity = context?.eventLoop.now ?? .now()
    }

    /// The guard of the connection that `pipeline` belongs to.
    static func find(in pipeline: ChannelPipeline.SynchronousOperations) -> ConnectionGuard? {
        try? pipeline.handler(type: ConnectionGuard.self)
    }

    /// A guard for a connection opened on behalf of this one (a forward's target), with the same
    /// idle timeout and listener, not counted again.
    func companion() -> ConnectionGuard {
        let mark = pair ?? TimeoutMark()
        pair = mark
        let companion = ConnectionGuard(idleTimeout: idleTimeout, listener: listener, sweeps: sweeps, accepted: false)
        companion.pair = mark
        companion.record = record
        return companion
    }

    /// Counts the connection against its client's budget: `false` (and nothing counted) when the
    /// client already holds `limit` connections.
    func admitSource(_ address: SocketAddress, limit: Int) -> Bool {
        client = address
        guard source == nil, let key = SourceKey(address) else { return true }
        guard listener.budget.admit(key, limit: limit) else { return false }
        source = key
        return true
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if idleClockRuns { lastActivity = context.eventLoop.now }
        let sweep = sweeps.sweep(for: context.eventLoop)
        sweep.add(self)
        self.sweep = sweep
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        sweep?.remove(self)
        sweep = nil
        self.context = nil
        if let source {
            listener.budget.release(source)
            self.source = nil
        }
        if accepted {
            listener.release()
            record?.write(now: context.eventLoop.now)
        }
        record = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if countsReads && idleClockRuns { lastActivity = context.eventLoop.now }
        if accepted, let record { record.bytesIn += unwrapInboundIn(data).readableBytes }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if idleClockRuns { lastActivity = context.eventLoop.now }
        if accepted, let record { record.bytesOut += unwrapOutboundIn(data).readableBytes }
        context.write(data, promise: promise)
    }

    // How the connection ends, for the access log: the first of these to happen names it.

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let record {
            if event is ChannelShouldQuiesceEvent {
                record.quiesced = true
            } else if let event = event as? ChannelEvent, event == .inputClosed {
                record.ended(accepted ? "client_closed" : "target_closed")
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        record?.ended(accepted ? "client_closed" : "target_closed")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        record?.ended(accepted ? "error" : "target_error", reason: ConnectionRecord.kind(of: error))
        context.fireErrorCaught(error)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if accepted, let record { record.ended(record.quiesced ? "shutdown" : "closed") }
        context.close(mode: mode, promise: promise)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is ConnectionActivity else { return context.triggerUserOutboundEvent(event, promise: promise) }
        lastActivity = context.eventLoop.now
        promise?.succeed()
    }

    /// What has expired at `now`, if anything.
    func expiry(at now: NIODeadline) -> Expiry? {
        if let handshakeDeadline, now >= handshakeDeadline { return .tlsHandshake }
        return idleClockRuns && now - lastActivity >= idleTimeout ? .idle : nil
    }

    /// Closes the connection for `expiry`, counted and logged by its listener. Writes still
    /// queued are dropped: nobody was taking them.
    func expire(_ expiry: Expiry) {
        guard let context else { return }
        sweep?.remove(self)
        if let pair {
            // The other side of the relay timed out first; closing it is closing this one.
            guard !pair.timedOut else { return context.close(promise: nil) }
            pair.timedOut = true
        }
        let peer = (client ?? context.channel.remoteAddress)?.displayText ?? "(unknown)"
        record?.ended(expiry == .idle ? "idle_timeout" : "tls_handshake_timeout")
        switch expiry {
        case .idle:
            listener.timedOut(
                .idle, "\(accepted ? "connection from" : "forward connection to") \(peer): no byte in either direction for \(idleTimeout.secondsText)"
            )
        case .tlsHandshake:
            listener.timedOut(.tlsHandshake, "connection from \(peer): TLS handshake not finished in time")
        }
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ConnectionGuard: Sendable {}

/// Whether one side of a relay has timed out.
final class TimeoutMark {
    var timedOut = false
}

/// Right after the TLS handler of a TLS listener: gives the handshake its deadline once the
/// connection is active (after the PROXY header, or at accept for a direct client), and lifts
/// it when the handshake has finished.
final class TLSHandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let connectionGuard: ConnectionGuard
    private let timeout: TimeAmount

    init(guard connectionGuard: ConnectionGuard, timeout: TimeAmount) {
        self.connectionGuard = connectionGuard
        self.timeout = timeout
    }

    func channelActive(context: ChannelHandlerContext) {
        connectionGuard.handshakeDeadline = context.eventLoop.now + timeout
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSUserEvent {
            connectionGuard.handshakeDeadline = nil
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension TLSHandshakeDeadline: Sendable {}
