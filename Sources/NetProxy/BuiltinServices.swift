import NIOCore
import NIOHTTP1

extension NetProxyService {
    /// `echo`: sends back every byte until the client half-closes, then closes.
    public static let echo = NetProxyService(name: "echo") { channel, _ in
        try channel.pipeline.syncOperations.addHandler(EchoService())
    }

    /// `whoami`: writes one JSON line describing the connection, then closes.
    public static let whoami = NetProxyService(name: "whoami") { channel, info in
        try channel.pipeline.syncOperations.addHandler(WhoamiService(info: info))
    }

    /// `http`: HTTP/1.1 with keep-alive; every GET is answered with the connection's JSON.
    public static let http = NetProxyService(name: "http") { channel, info in
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
        try channel.pipeline.syncOperations.addHandler(WhoamiHTTPService(info: info))
    }

    /// The services `netproxy` provides.
    public static let builtins: [NetProxyService] = [.echo, .whoami, .http]
}

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
        // The client is done sending: everything it sent has been echoed, so the exchange is over.
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
        }
        // A quiesce request is ignored: the connection drains until the client closes or the
        // host's grace period ends.
    }
}

final class WhoamiService: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let info: ConnectionInfo

    init(info: ConnectionInfo) {
        self.info = info
    }

    func channelActive(context: ChannelHandlerContext) {
        let line = ByteBuffer(string: info.json + "\n")
        context.writeAndFlush(wrapOutboundOut(line)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Whatever the client sends is not part of the exchange.
    }
}

final class WhoamiHTTPService: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let info: ConnectionInfo
    private var request: HTTPRequestHead?
    private var quiescing = false

    init(info: ConnectionInfo) {
        self.info = info
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
            respond(context: context, to: head)
        }
    }

    private func respond(context: ChannelHandlerContext, to head: HTTPRequestHead) {
        let (status, body): (HTTPResponseStatus, String) = head.method == .GET || head.method == .HEAD
            ? (.ok, info.json + "\n")
            : (.methodNotAllowed, "{\"error\":\"only GET is served\"}\n")
        let keepAlive = head.isKeepAlive && !quiescing
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        if status == .methodNotAllowed { headers.add(name: "Allow", value: "GET, HEAD") }
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
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
        context.fireUserInboundEventTriggered(event)
    }
}
