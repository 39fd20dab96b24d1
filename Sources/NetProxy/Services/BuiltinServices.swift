import NIOCore
import NIOHTTP1
import ProxyProtocol

extension NetProxyService {
    /// `echo`: sends back every byte; once the client half-closes and everything has been sent
    /// back, closes. It reads only while it can write, so a client that sends without reading
    /// holds at most a few hundred KiB of the server's memory.
    public static let echo = NetProxyService(name: "echo", allowsHalfClosure: true) { channel, _ in
        // NIO's BackPressureHandler holds reads back while the channel is not writable.
        try channel.pipeline.syncOperations.addHandlers(BackPressureHandler(), EchoService())
    }

    /// `whoami`: writes one JSON line describing the connection, then closes (once the client
    /// has closed too, or after two seconds).
    public static let whoami = NetProxyService(name: "whoami", allowsHalfClosure: true) { channel, info in
        try channel.pipeline.syncOperations.addHandler(WhoamiService(info: info))
    }

    /// `http`: HTTP/1.1 with keep-alive; every GET is answered with the connection's JSON. A
    /// client that half-closes still gets the answers to the requests it sent.
    public static let http = NetProxyService(name: "http", allowsHalfClosure: true) { channel, info in
        // A request trickled in byte by byte is not activity; a complete one is.
        ConnectionGuard.find(in: channel.pipeline.syncOperations)?.countsReads = false
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
        let json = info.json + "\n"
        try channel.pipeline.syncOperations.addHandler(
            HTTPResponder { head in
                guard head.method == .GET || head.method == .HEAD else {
                    return .init(
                        status: .methodNotAllowed, contentType: "application/json",
                        body: "{\"error\":\"only GET is served\"}\n", extraHeaders: [("Allow", "GET, HEAD")])
                }
                return .init(status: .ok, contentType: "application/json", body: json)
            })
    }

    /// The services `netproxy` provides.
    public static let builtins: [NetProxyService] = [.echo, .whoami, .http]
}

/// Writes back what it reads. With `BackPressureHandler` in front it reads only while it can
/// write, so what it keeps queued is bounded by the write buffer's high watermark plus one read
/// loop (by default 64 KiB + 4 x 64 KiB).
final class EchoService: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client is done sending: close once everything it sent has gone back.
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.closeAfterPendingWrites()
        }
        // A quiesce request is ignored: the connection drains until the client closes or the
        // host's grace period ends.
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// Writes the connection's JSON line, then closes without a reset: closing a socket with
/// unread bytes from the client sends a RST, which can discard the line before the client
/// reads it. So it ends its output once the line is written and closes when the client has
/// closed too (or after ``linger``), reading and dropping whatever the client sends meanwhile.
///
/// The output is closed only once the line's write has completed: a handler in between (TLS)
/// may still hold the line when the socket's own writes are done.
final class WhoamiService: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// How long to wait for the client's close after the line is sent.
    static let linger = TimeAmount.seconds(2)

    let info: ConnectionInfo
    private var lineSent = false
    private var inputClosed = false
    private var lingering: NIOScheduledCallback?

    init(info: ConnectionInfo) {
        self.info = info
    }

    func channelActive(context: ChannelHandlerContext) {
        var line = context.channel.allocator.buffer(capacity: 512)
        info.writeJSON(into: &line)
        line.writeJSONByte("\n")
        context.writeAndFlush(wrapOutboundOut(line)).assumeIsolated().whenComplete { [self] result in
            lineSent = true
            guard case .success = result, !inputClosed else { return context.close(promise: nil) }
            context.close(mode: .output, promise: nil)
            // A callback rather than a scheduled closure: no promise and no closure to allocate.
            lingering = try? context.eventLoop.assumeIsolated().scheduleCallback(in: Self.linger, handler: Linger(context: context))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Whatever the client sends is not part of the exchange.
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, event == .inputClosed else { return }
        inputClosed = true
        if lineSent {
            lingering?.cancel()
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        lingering?.cancel()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Closes a connection whose client has not closed within ``linger``.
    private struct Linger: NIOScheduledCallbackHandler {
        let context: ChannelHandlerContext

        func handleScheduledCallback(eventLoop: some EventLoop) {
            context.close(promise: nil)
        }
    }
}
