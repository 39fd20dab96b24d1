import NIOConcurrencyHelpers
import NIOCore

/// Collects the bytes a channel reads and tells when it closes; usable from any thread.
public final class ByteCollector: ChannelInboundHandler, Sendable {
    public typealias InboundIn = ByteBuffer

    private let state = NIOLockedValueBox<(bytes: [UInt8], events: [String], closed: Bool)>(([], [], false))
    private let closedPromise: EventLoopPromise<Void>?
    private let expectedCount: Int?
    private let countReached: EventLoopPromise<Void>?

    /// - Parameters:
    ///   - eventLoop: Where `closed` and `received` complete.
    ///   - expecting: A byte count that completes `received` once reached.
    public init(eventLoop: EventLoop, expecting count: Int? = nil) {
        self.closedPromise = eventLoop.makePromise()
        self.expectedCount = count
        self.countReached = eventLoop.makePromise()
        if count == 0 { countReached?.succeed() }
    }

    public var bytes: [UInt8] { state.withLockedValue { $0.bytes } }
    public var string: String { String(decoding: bytes, as: UTF8.self) }
    /// The user inbound events seen, as text.
    public var userEvents: [String] { state.withLockedValue { $0.events } }
    public var closed: EventLoopFuture<Void> { closedPromise!.futureResult }
    public var received: EventLoopFuture<Void> { countReached!.futureResult }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let count = state.withLockedValue {
            $0.bytes.append(contentsOf: buffer.readableBytesView)
            return $0.bytes.count
        }
        if let expectedCount, count >= expectedCount { countReached?.succeed() }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        let text = String(describing: event)
        state.withLockedValue { $0.events.append(text) }
        context.fireUserInboundEventTriggered(event)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        state.withLockedValue { $0.closed = true }
        closedPromise?.succeed()
        countReached?.fail(ChannelError.eof)
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
