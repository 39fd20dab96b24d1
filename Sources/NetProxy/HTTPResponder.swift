import NIOCore
import NIOHTTP1

/// A minimal HTTP/1.1 responder: one complete response per request, keep-alive when the client
/// asks for it, and on a quiesce request the connection closes after the response in progress.
/// When the client half-closes, the connection closes once the responses already written are
/// sent (`NIOHTTP1` holds the event back until the response to a pipelined request is written).
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
    private var request: HTTPRequestHead?
    private var quiescing = false
    /// The end of the last response written; once it completes, everything written has been sent.
    private var lastResponseSent: EventLoopFuture<Void>?

    init(respond: @escaping (HTTPRequestHead) -> Response) {
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let head = request else { return }
            request = nil
            send(respond(head), to: head, context: context)
        }
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
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        lastResponseSent = done
        if !keepAlive {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Finish the request in progress, if any; an idle connection closes now.
            quiescing = true
            if request == nil { context.close(promise: nil) }
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed {
            // No further request can arrive, and one in progress cannot be completed.
            guard let lastResponseSent else { return context.close(promise: nil) }
            lastResponseSent.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
