import NIOCore
import NIOHTTP1

/// A minimal HTTP/1.1 responder: one complete response per request, keep-alive when the client
/// asks for it, and on a quiesce request the connection closes after the response in progress.
///
/// - Backpressure: while the channel is not writable, a complete request waits for its answer.
///   `NIOHTTP1`'s pipelining handler reads nothing more until that answer is written, so a
///   client that pipelines requests and never reads holds the write buffer's high watermark and
///   one read's worth of requests, not a response per request it sent.
/// - Half-closure: the connection closes once the answers to the requests received are sent
///   (`NIOHTTP1` holds the event back until the response to a pipelined request is written).
/// - Idle timeout: each complete request part (head, body chunk, end) is reported to the
///   ``ConnectionGuard`` as activity, which counts no single bytes here, so a request header
///   trickled in too slowly is closed at the idle timeout.
final class HTTPResponder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    struct Response {
        var status: HTTPResponseStatus
        var contentType: String
        var body: String
        var extraHeaders: [(String, String)] = []
    }

    private let respond: (HTTPRequestHead) -> Response
    /// The request being received.
    private var request: HTTPRequestHead?
    /// A complete request whose answer waits for the channel to become writable.
    private var waiting: HTTPRequestHead?
    private var quiescing = false
    private var inputClosed = false
    /// The end of the last response written; once it completes, everything written has been sent.
    private var lastResponseSent: EventLoopFuture<Void>?

    init(respond: @escaping (HTTPRequestHead) -> Response) {
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.triggerUserOutboundEvent(ConnectionActivity(), promise: nil)
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let head = request else { return }
            request = nil
            if context.channel.isWritable && waiting == nil {
                send(respond(head), to: head, context: context)
            } else {
                waiting = head
            }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let head = waiting {
            waiting = nil
            send(respond(head), to: head, context: context)
            closeIfDone(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    private func send(_ response: Response, to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let keepAlive = head.isKeepAlive && !quiescing
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.utf8.count))
        for (name, value) in response.extraHeaders { headers.add(name: name, value: value) }
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: response.body)))), promise: nil)
        }
        // Recorded before the write: writing the end lets NIOHTTP1 hand over the next pipelined
        // request at once, and its answer, written inside this call, must stay the last one.
        let ended = context.eventLoop.makePromise(of: Void.self)
        lastResponseSent = ended.futureResult
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: ended)
        let done = ended.futureResult
        if !keepAlive {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    /// After a half-close, closes once nothing is left to answer and the last answer is sent.
    private func closeIfDone(context: ChannelHandlerContext) {
        guard inputClosed, waiting == nil else { return }
        guard let lastResponseSent else { return context.close(promise: nil) }
        lastResponseSent.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Finish the request in progress, if any; an idle connection closes now.
            quiescing = true
            if request == nil && waiting == nil { context.close(promise: nil) }
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed {
            // No further request can arrive, and one in progress cannot be completed.
            inputClosed = true
            closeIfDone(context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
