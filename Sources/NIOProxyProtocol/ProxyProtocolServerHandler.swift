import Logging
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
///   refused `LOCAL` or address-less header) closes the connection, logs the peer and the reason,
///   and fails ``connectionInfo`` with a ``ProxyProtocolError``.
///
/// The result reaches the application three ways: ``connectionInfo`` (a future), the user inbound
/// event, and at any later time `channel.pipeline.syncOperations.proxiedConnectionInfo`.
public final class ProxyProtocolServerHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State {
        /// Added, the channel not active yet.
        case idle
        /// Waiting for the rest of the header.
        case reading
        /// The header was accepted; the handler is leaving the pipeline.
        case done
        /// The connection was refused and is closing.
        case failed
    }

    private let configuration: ProxyProtocolConfiguration
    private let parser: ProxyHeaderParser
    private let logger: Logger
    private var state = State.idle
    private var received: ByteBuffer?
    private var timeout: Scheduled<Void>?
    private var heldBackActive = false
    private var promise: EventLoopPromise<ProxiedConnectionInfo>?

    /// Creates a handler; `logger` gets one line for each refused connection.
    public init(
        configuration: ProxyProtocolConfiguration = ProxyProtocolConfiguration(),
        logger: Logger = Logger(label: "NIOProxyProtocol")
    ) {
        self.configuration = configuration
        self.parser = ProxyHeaderParser(
            acceptedVersions: configuration.acceptedVersions,
            maximumLength: configuration.maximumHeaderLength
        )
        self.logger = logger
    }

    /// The outcome: the connection's addresses, or the ``ProxyProtocolError`` it was closed for.
    ///
    /// Available once the handler is in a pipeline.
    public var connectionInfo: EventLoopFuture<ProxiedConnectionInfo> {
        guard let promise else {
            preconditionFailure("ProxyProtocolServerHandler.connectionInfo is available once the handler is in a pipeline")
        }
        return promise.futureResult
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        promise = context.eventLoop.makePromise()
        if context.channel.isActive {
            start(context: context)
        }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        timeout?.cancel()
        if state == .idle || state == .reading {
            // Removed by someone else before a header: nothing was accepted.
            state = .failed
            promise?.fail(ProxyProtocolError(.closedBeforeHeader(receivedBytes: received?.readableBytes ?? 0), peer: context.channel.remoteAddress))
        }
    }

    public func channelActive(context: ChannelHandlerContext) {
        // Held back until the header has been accepted.
        heldBackActive = true
        start(context: context)
    }

    private func start(context: ChannelHandlerContext) {
        guard state == .idle else { return }
        state = .reading
        guard let peer = context.channel.remoteAddress else {
            return fail(context: context, .unknownSource)
        }
        guard configuration.trustedProxies.contains(peer) else {
            return fail(context: context, .untrustedSource)
        }
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: configuration.headerTimeout) { [self] in
            fail(context: context, .headerTimeout(configuration.headerTimeout))
        }
        context.read()
    }

    public func read(context: ChannelHandlerContext) {
        // No read for a connection that is refused, or not yet checked.
        guard state == .reading || state == .done else { return }
        context.read()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard state == .reading else { return }
        var bytes = unwrapInboundIn(data)
        if received == nil {
            received = bytes
        } else {
            received!.writeBuffer(&bytes)
        }
        let result: ProxyHeaderParseResult
        do {
            result = try parser.parse(received!)
        } catch {
            return fail(context: context, .invalidHeader(error))
        }
        if case .complete(let header, let length) = result {
            accept(context: context, header: header, length: length)
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        // While the header is incomplete, keep reading even if the channel does not auto-read.
        if state == .reading { context.read() }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .idle, .reading:
            fail(context: context, .closedBeforeHeader(receivedBytes: received?.readableBytes ?? 0))
        case .done:
            context.fireChannelInactive()
        case .failed:
            break
        }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard state == .reading else {
            if state == .done { context.fireUserInboundEventTriggered(event) }
            return
        }
        if event is ChannelShouldQuiesceEvent {
            fail(context: context, .quiesced)
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            fail(context: context, .closedBeforeHeader(receivedBytes: received?.readableBytes ?? 0))
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        switch state {
        case .idle, .reading: fail(context: context, .readFailed(String(describing: error)))
        case .done: context.fireErrorCaught(error)
        case .failed: break
        }
    }

    private func accept(context: ChannelHandlerContext, header: ProxyHeader, length: Int) {
        if header.command == .local && !configuration.acceptsLocal {
            return fail(context: context, .localNotAccepted)
        }
        if header.command == .proxy && header.addresses == .unspecified && configuration.unspecifiedAddresses == .reject {
            return fail(context: context, .unspecifiedAddressesNotAccepted)
        }
        let info: ProxiedConnectionInfo
        do {
            info = try ProxiedConnectionInfo(
                header: header, headerLength: length,
                proxyAddress: context.channel.remoteAddress!, localAddress: context.channel.localAddress
            )
        } catch {
            return fail(context: context, .unusableAddress(String(describing: error)))
        }
        state = .done
        timeout?.cancel()
        var payload = received!
        payload.moveReaderIndex(forwardBy: length)
        received = nil

        do {
            try context.pipeline.syncOperations.addHandler(ProxiedConnectionInfoHandler(info), position: .after(self))
        } catch {
            // The pipeline is closing under us; there is no one to hand the connection to.
            return fail(context: context, .readFailed(String(describing: error)))
        }
        promise?.succeed(info)
        if heldBackActive { context.fireChannelActive() }
        context.fireUserInboundEventTriggered(info)
        if payload.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(payload))
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func fail(context: ChannelHandlerContext, _ reason: ProxyProtocolError.Reason) {
        guard state != .failed && state != .done else { return }
        state = .failed
        timeout?.cancel()
        received = nil
        let error = ProxyProtocolError(reason, peer: context.channel.remoteAddress)
        logger.log(level: reason == .quiesced ? .debug : .warning, "refused \(error)")
        promise?.fail(error)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ProxyProtocolServerHandler: Sendable {}
