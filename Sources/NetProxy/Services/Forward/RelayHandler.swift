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
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    /// A `read` held back while the partner could not write.
    private var readPending = false
    private var inputClosed = false
    private var outputClosed = false
    private var failed = false

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
        if partner?.isWritable ?? true {
            context.read()
        } else {
            readPending = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event as? ChannelEvent {
        case .inputClosed:
            inputClosed = true
            partner?.closeOutput()
            closeIfDone()
        case .outputClosed:
            outputClosed = true
            closeIfDone()
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let partner = self.partner
        self.partner = nil
        if failed {
            partner?.close()
        } else {
            // A clean end (SwiftNIO closes without an `inputClosed` when the peer's end comes
            // after this side's output was closed): what this side read still goes out.
            partner?.closeAfterPendingWrites()
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A reset or a failed write: the partner is closed at once, through channelInactive.
        failed = true
        context.close(promise: nil)
    }

    // MARK: What the partner asks of this side

    private var isWritable: Bool { context?.channel.isWritable ?? false }

    private func write(_ bytes: ByteBuffer) {
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    private func flush() {
        context?.flush()
    }

    private func resumeReading() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }

    /// The partner's peer stops sending: so does this side, after what is queued. An empty
    /// write marks the point, so that a handler in between (TLS) has sent everything first.
    private func closeOutput() {
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { result in
            guard case .success = result else { return context.close(promise: nil) }
            context.close(mode: .output, promise: nil)
        }
    }

    /// This side's partner is gone after a clean end: close once what is queued is sent.
    private func closeAfterPendingWrites() {
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    private func closeIfDone() {
        if inputClosed && outputClosed { context?.close(promise: nil) }
    }

    private func close() {
        context?.close(promise: nil)
    }
}

@available(*, unavailable)
extension RelayHandler: Sendable {}
