import NIOCore

/// One side of a relay between two channels on the same event loop: what one side reads, the
/// other writes.
///
/// - Backpressure: a side reads only while its partner's channel is writable, so a slow reader
///   on one side holds the other side's sender back instead of filling memory.
/// - Half-closure: when a side's peer stops sending, the partner's output is closed once
///   everything read before has been written; the channels close when both directions are done.
/// - Failure: when either channel fails (a reset, a failed write), both close at once. When a
///   side closes cleanly, the other sends what is queued first, then closes.
///
/// Both channels need `allowRemoteHalfClosure`, or a half-close would close the whole side.
///
/// The rules are ``RelayStateMachine``'s: this handler tells it what happens and does what it
/// returns.
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var machine = RelayStateMachine()

    /// Two handlers that relay to each other; add each to its channel's pipeline.
    static func pair() -> (RelayHandler, RelayHandler) {
        let first = RelayHandler()
        let second = RelayHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    // MARK: This side's events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.write(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.flush()
    }

    func read(context: ChannelHandlerContext) {
        perform(machine.readRequested(partnerWritable: partner?.isWritable ?? true), context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event as? ChannelEvent {
        case .inputClosed:
            perform(machine.inputClosed(), context: context)
        case .outputClosed:
            perform(machine.outputClosed(), context: context)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Detached before the partner is told: what this side's closing still fires (a change of
        // writability) no longer reaches the partner.
        let partner = self.partner
        self.partner = nil
        perform(machine.channelInactive(), context: context, partner: partner)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        perform(machine.errorCaught(), context: context)
    }

    // MARK: What the partner asks of this side

    private var isWritable: Bool { context?.channel.isWritable ?? false }

    private func write(_ bytes: ByteBuffer) {
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    private func flush() {
        context?.flush()
    }

    private func partnerBecameWritable() {
        guard let context else { return }
        perform(machine.partnerBecameWritable(), context: context)
    }

    private func partnerInputClosed() {
        guard let context else { return }
        perform(machine.partnerInputClosed(), context: context)
    }

    private func partnerClosed() {
        guard let context else { return }
        perform(machine.partnerClosed(), context: context)
    }

    private func partnerFailed() {
        guard let context else { return }
        perform(machine.partnerFailed(), context: context)
    }

    // MARK: Actions

    private func perform(_ action: RelayStateMachine.Action, context: ChannelHandlerContext) {
        perform(action, context: context, partner: partner)
    }

    private func perform(_ action: RelayStateMachine.Action, context: ChannelHandlerContext, partner: RelayHandler?) {
        switch action {
        case .none:
            break
        case .read:
            context.read()
        case .closePartnerOutput:
            partner?.partnerInputClosed()
        case .closePartnerOutputThenClose:
            partner?.partnerInputClosed()
            context.close(promise: nil)
        case .closePartnerAfterPendingWrites:
            partner?.partnerClosed()
        case .closePartner:
            partner?.partnerFailed()
        case .sendPendingWritesThenCloseOutput:
            sendPendingWrites(context: context) { succeeded in
                self.machine.pendingWritesSentBeforeHalfClose(succeeded: succeeded)
            }
        case .sendPendingWritesThenClose:
            sendPendingWrites(context: context) { _ in self.machine.pendingWritesSentBeforeClose() }
        case .closeOutput:
            context.close(mode: .output, promise: nil)
        case .close:
            context.close(promise: nil)
        }
    }

    /// An empty write marks the end of what is queued: it completes once everything before it is
    /// sent, through any handler in between (TLS). `then` gives the action that follows.
    private func sendPendingWrites(context: ChannelHandlerContext, then: @escaping (Bool) -> RelayStateMachine.Action) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { result in
            let succeeded = if case .success = result { true } else { false }
            self.perform(then(succeeded), context: context)
        }
    }
}

@available(*, unavailable)
extension RelayHandler: Sendable {}
