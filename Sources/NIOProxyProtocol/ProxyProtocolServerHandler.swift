import NIOCore
import ProxyProtocol

/// Reads a PROXY header at the start of a connection, then gets out of the way.
///
/// Put it first in a child channel's pipeline:
///
/// ```swift
/// let proxy = ProxyProtocolServerHandler(configuration: .init(trustedProxies: try .init(parsing: ["10.0.0.0/8"])))
/// try channel.pipeline.syncOperations.addHandler(proxy)
/// try channel.pipeline.syncOperations.addHandler(MyProtocolHandler())
/// ```
///
/// - A peer that is not a trusted proxy is closed as soon as the channel is active; no read is
///   issued for it.
/// - Until a valid header has arrived, the handlers after it see nothing: not the bytes, not even
///   `channelActive`. A server-speaks-first protocol therefore cannot greet a client before it
///   knows who the client is.
/// - Once the header is complete it replaces itself with a ``ProxiedConnectionInfoHandler``,
///   then passes on `channelActive`, a ``ProxiedConnectionInfo`` user inbound event, and every
///   byte after the header, exactly once and in order.
/// - Anything else (an invalid or too long header, a timeout, EOF, a reset, a quiesce request, a
///   refused `LOCAL` or address-less header) closes the connection and fails ``connectionInfo``
///   with a ``ProxyProtocolError`` that says why. The handler logs nothing: an untrusted peer
///   must not be able to fill the application's log. Log or count refusals from the future, or
///   from the `onRefusal` closure, which runs first.
///
/// The result reaches the application three ways: ``connectionInfo`` (a future), the user inbound
/// event, and at any later time `channel.pipeline.syncOperations.proxiedConnectionInfo`.
public final class ProxyProtocolServerHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let configuration: ProxyProtocolConfiguration
    private let onRefusal: (@Sendable (ProxyProtocolError) -> Void)?
    private var stateMachine: ProxyHeaderStateMachine
    private var timeout: NIOScheduledCallback?
    private var heldBackActive = false
    private var eventLoop: EventLoop?
    /// Made only when someone asks for ``connectionInfo``: most servers never do, and a promise
    /// per connection is an allocation each.
    private var promise: EventLoopPromise<ProxiedConnectionInfo>?
    private var outcome: Result<ProxiedConnectionInfo, ProxyProtocolError>?

    /// Creates a handler.
    ///
    /// - Parameters:
    ///   - configuration: Who may send headers, and which headers are accepted.
    ///   - onRefusal: Called on the event loop for each refused connection, before it closes.
    public init(
        configuration: ProxyProtocolConfiguration = ProxyProtocolConfiguration(),
        onRefusal: (@Sendable (ProxyProtocolError) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.onRefusal = onRefusal
        self.stateMachine = ProxyHeaderStateMachine(configuration: configuration)
    }

    /// The outcome: the connection's addresses, or the ``ProxyProtocolError`` it was closed for.
    ///
    /// Available once the handler is in a pipeline.
    public var connectionInfo: EventLoopFuture<ProxiedConnectionInfo> {
        guard let eventLoop else {
            preconditionFailure("ProxyProtocolServerHandler.connectionInfo is available once the handler is in a pipeline")
        }
        if let promise { return promise.futureResult }
        switch outcome {
        case .success(let info): return eventLoop.makeSucceededFuture(info)
        case .failure(let error): return eventLoop.makeFailedFuture(error)
        case nil:
            let promise = eventLoop.makePromise(of: ProxiedConnectionInfo.self)
            self.promise = promise
            return promise.futureResult
        }
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        eventLoop = context.eventLoop
        if context.channel.isActive {
            perform(stateMachine.channelActive(peer: context.channel.remoteAddress), context: context)
        }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        perform(stateMachine.handlerRemoved(), context: context)
        timeout?.cancel()
    }

    public func channelActive(context: ChannelHandlerContext) {
        // Held back until the header has been accepted.
        heldBackActive = true
        perform(stateMachine.channelActive(peer: context.channel.remoteAddress), context: context)
    }

    public func read(context: ChannelHandlerContext) {
        // No read for a connection that is refused, or not yet checked.
        if stateMachine.allowsReads { context.read() }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        perform(stateMachine.bytesReceived(unwrapInboundIn(data)), context: context)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        perform(stateMachine.readComplete(), context: context)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        if stateMachine.isAccepted {
            context.fireChannelInactive()
        } else {
            perform(stateMachine.inputClosed(), context: context)
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if stateMachine.isAccepted {
            context.fireUserInboundEventTriggered(event)
        } else if event is ChannelShouldQuiesceEvent {
            perform(stateMachine.quiesceRequested(), context: context)
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            perform(stateMachine.inputClosed(), context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        if stateMachine.isAccepted {
            context.fireErrorCaught(error)
        } else {
            perform(stateMachine.errorCaught(error), context: context)
        }
    }

    private func perform(_ action: ProxyHeaderStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .startReading:
            // A callback rather than a scheduled closure: no promise and no closure to allocate.
            // It fails only on a loop that is shutting down, which closes the channel anyway.
            timeout = try? context.eventLoop.assumeIsolated().scheduleCallback(
                in: TimeAmount(configuration.headerTimeout), handler: HeaderTimeout(handler: self, context: context))
            context.read()
        case .readMore:
            context.read()
        case .refuse(let reason, let receivedBytes, let underlying):
            timeout?.cancel()
            let error = ProxyProtocolError(
                reason, peer: context.channel.remoteAddress, receivedBytes: receivedBytes, underlying: underlying,
                headerTimeout: reason == .headerTimeout ? configuration.headerTimeout : nil
            )
            onRefusal?(error)
            outcome = .failure(error)
            promise?.fail(error)
            context.close(promise: nil)
        case .accept(let header, let length, let remainder):
            timeout?.cancel()
            accept(context: context, header: header, length: length, remainder: remainder)
        }
    }

    private func accept(context: ChannelHandlerContext, header: ProxyHeader, length: Int, remainder: ByteBuffer) {
        let info: ProxiedConnectionInfo
        do {
            info = try ProxiedConnectionInfo(
                header: header, headerLength: length,
                peer: context.channel.remoteAddress!, localAddress: context.channel.localAddress
            )
        } catch {
            return perform(stateMachine.addressUnusable(error), context: context)
        }
        do {
            try context.pipeline.syncOperations.addHandler(ProxiedConnectionInfoHandler(info), position: .after(self))
        } catch {
            return perform(stateMachine.pipelineFailed(error), context: context)
        }
        outcome = .success(info)
        promise?.succeed(info)
        if heldBackActive { context.fireChannelActive() }
        context.fireUserInboundEventTriggered(info)
        if remainder.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(remainder))
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

@available(*, unavailable)
extension ProxyProtocolServerHandler: Sendable {}

extension ProxyProtocolServerHandler {
    /// Refuses the connection when the header timeout fires.
    private struct HeaderTimeout: NIOScheduledCallbackHandler {
        let handler: ProxyProtocolServerHandler
        let context: ChannelHandlerContext

        func handleScheduledCallback(eventLoop: some EventLoop) {
            handler.perform(handler.stateMachine.timedOut(), context: context)
        }
    }
}
