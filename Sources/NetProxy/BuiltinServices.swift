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
        let json = info.json + "\n"
        try channel.pipeline.syncOperations.addHandler(HTTPResponder { head in
            guard head.method == .GET || head.method == .HEAD else {
                return .init(status: .methodNotAllowed, contentType: "application/json",
                             body: "{\"error\":\"only GET is served\"}\n", extraHeaders: [("Allow", "GET, HEAD")])
            }
            return .init(status: .ok, contentType: "application/json", body: json)
        })
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
