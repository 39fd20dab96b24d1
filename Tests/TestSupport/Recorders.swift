import NIOConcurrencyHelpers
import NIOCore

/// Collects the bytes a channel reads (and passes them on) and tells when it closes; usable from
/// any thread.
public final class ByteCollector: ChannelInboundHandler, Sendable {
    public typealias InboundIn = ByteBuffer

    private struct State {
        var bytes: [UInt8] = []
        var finished = false
        var reached = false
    }

    private let state = NIOLockedValueBox(State())
    private let closedPromise: EventLoopPromise<Void>
    private let expectedCount: Int?
    private let countPromise: EventLoopPromise<Void>

    /// - Parameters:
    ///   - eventLoop: Where `closed` and `received` complete.
    ///   - expecting: A byte count that completes `received` once reached.
    public init(eventLoop: EventLoop, expecting count: Int? = nil) {
        self.closedPromise = eventLoop.makePromise()
        self.expectedCount = count
        self.countPromise = eventLoop.makePromise()
    }

    public var bytes: [UInt8] { state.withLockedValue { $0.bytes } }
    public var string: String { String(decoding: bytes, as: UTF8.self) }
    /// Completes when the peer closes (or half-closes), the channel closes, or the handler
    /// leaves the pipeline.
    public var closed: EventLoopFuture<Void> { closedPromise.futureResult }
    /// Completes when the expected count has arrived; fails if the channel closes first.
    public var received: EventLoopFuture<Void> { countPromise.futureResult }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let reachedNow = state.withLockedValue { state -> Bool in
            state.bytes.append(contentsOf: buffer.readableBytesView)
            guard let expectedCount, !state.reached, state.bytes.count >= expectedCount else { return false }
            state.reached = true
            return true
        }
        if reachedNow { countPromise.succeed() }
        context.fireChannelRead(data)
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // With half-closure allowed, the peer's close arrives as this event, not channelInactive.
        if let event = event as? ChannelEvent, event == .inputClosed { finish() }
        context.fireUserInboundEventTriggered(event)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        finish()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        finish()
    }

    private func finish() {
        let (first, reached) = state.withLockedValue { state -> (Bool, Bool) in
            defer {
                state.finished = true
                state.reached = true
            }
            return (!state.finished, state.reached)
        }
        guard first else { return }
        closedPromise.succeed()
        if !reached { countPromise.fail(ChannelError.eof) }
    }
}

/// Writes back every byte it reads.
public final class EchoHandler: ChannelInboundHandler, Sendable {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}
