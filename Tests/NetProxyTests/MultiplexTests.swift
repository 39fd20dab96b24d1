import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ProxyProtocol
import TestSupport
import Testing

@testable import NetProxy

/// `multiplex_services`: the first bytes pick the service, which gets them intact and sees the
/// client from the PROXY header. (Bytes split across reads, and the detection timeout's exact
/// moment, are tested on embedded channels: `MultiplexerEmbeddedTests`.)
@Suite(.timeLimit(.minutes(1))) struct MultiplexTests {
    /// Greets with `<service> <client>\n`, then echoes; closes once the client has closed and
    /// everything went back.
    final class Tag: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let info: ConnectionInfo
        init(_ info: ConnectionInfo) { self.info = info }

        func channelActive(context: ChannelHandlerContext) {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "\(info.service) \(info.source.displayText)\n")), promise: nil)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.writeAndFlush(data, promise: nil)
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            guard let event = event as? ChannelEvent, event == .inputClosed else { return }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    static let tags = ["tls-svc", "http-svc", "xmpp-svc", "ssh-svc", "other-svc"].map { name in
        NetProxyService(name: name, allowsHalfClosure: true) { channel, info in try channel.pipeline.syncOperations.addHandler(Tag(info)) }
    }

    /// A host whose multiplexer routes each protocol to its tag service.
    static func host(detectTimeout: Double = 30) async throws -> (RunningHost, port: Int) {
        let running = try await RunningHost(
            """
            {"interfaces": ["127.0.0.1"], "proxy_port_mappings": {"0": "mux"},
             "multiplex_services": {"mux": {"routes": {"tls": "tls-svc", "http": "http-svc", "xmpp": "xmpp-svc", "ssh": "ssh-svc"},
                                            "default": "other-svc", "detect_timeout": \(detectTimeout)}}}
            """, services: NetProxyService.builtins + tags)
        return (running, running.port(.proxy(service: "mux", tls: false)))
    }

    static let header = Array(
        try! ProxyHeader(
            version: .v1,
            addresses: .inet(
                source: .init(ProxyIPv4Address(192, 0, 2, 77), port: 7777), destination: .init(ProxyIPv4Address(192, 0, 2, 1), port: 5222))
        ).encoded().readableBytesView)

    @Test(arguments: [
        ("tls-svc", [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03] as [UInt8]),
        ("http-svc", Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)),
        ("http-svc", Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)),
        ("xmpp-svc", Array("<?xml version='1.0'?><stream:stream to='example.com'>".utf8)),
        ("xmpp-svc", Array("<stream:stream to='example.com'>".utf8)),
        ("ssh-svc", Array("SSH-2.0-OpenSSH_9.2\r\n".utf8)),
        ("other-svc", Array("hello there, nothing known\n".utf8)),
        ("other-svc", Array("get / HTTP/1.1\r\n".utf8)),
        ("other-svc", Array("EHLO example.org\r\n".utf8)),
        ("other-svc", [0x16, 0x03, 0x05, 0x00, 0x05, 0x01]),
    ])
    func firstBytesPickTheServiceAndArriveIntact(service: String, bytes: [UInt8]) async throws {
        let (running, port) = try await Self.host()
        let reply = try await LoopbackClient.exchange(port: port, send: Self.header + bytes, halfClose: true)
        #expect(reply == Array("\(service) 192.0.2.77:7777\n".utf8) + bytes)
        await running.stop()
    }

    /// A client that stops sending before its protocol is known: the default service gets the
    /// bytes, then the end, as on a direct connection.
    @Test func clientThatStopsSendingDuringDetection() async throws {
        let (running, port) = try await Self.host()
        let reply = try await LoopbackClient.exchange(port: port, send: Self.header + Array("GE".utf8), halfClose: true)
        #expect(String(decoding: reply, as: UTF8.self) == "other-svc 192.0.2.77:7777\nGE")
        await running.stop()
    }

    /// The same for a default service that does not take half-closure: it gets the bytes, then
    /// the connection closes.
    @Test func serviceWithoutHalfClosureGetsTheBytesThenTheClose() async throws {
        let seen = NIOLockedValueBox<[UInt8]>([])
        let closed = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Void.self)
        final class Recorder: ChannelInboundHandler, Sendable {
            typealias InboundIn = ByteBuffer
            let seen: NIOLockedValueBox<[UInt8]>
            let closed: EventLoopPromise<Void>
            init(_ seen: NIOLockedValueBox<[UInt8]>, _ closed: EventLoopPromise<Void>) {
                self.seen = seen
                self.closed = closed
            }
            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                let bytes = Array(unwrapInboundIn(data).readableBytesView)
                seen.withLockedValue { $0 += bytes }
            }
            func channelInactive(context: ChannelHandlerContext) {
                closed.succeed()
            }
        }
        let recorder = NetProxyService(name: "recorder") { channel, _ in
            try channel.pipeline.syncOperations.addHandler(Recorder(seen, closed))
        }
        let running = try await RunningHost(
            #"{"interfaces": ["127.0.0.1"], "proxy_port_mappings": {"0": "mux"}, "multiplex_services": {"mux": {"routes": {}, "default": "recorder"}}}"#,
            services: [recorder])
        let port = running.port(.proxy(service: "mux", tls: false))
        let reply = try await LoopbackClient.exchange(port: port, send: Self.header + Array("GE".utf8), halfClose: true)
        #expect(reply == [])
        // The client sees the end of the stream before the server's close has run its handlers:
        // wait for them.
        try await closed.futureResult.get()
        #expect(seen.withLockedValue { $0 } == Array("GE".utf8))
        await running.stop()
    }

    /// A client that says nothing (the server speaks first) gets the default service after
    /// `detect_timeout`.
    @Test func silentClientGetsTheDefault() async throws {
        let (running, port) = try await Self.host(detectTimeout: 0.3)
        let greeting = "other-svc 192.0.2.77:7777\n"
        let (channel, collector) = try await LoopbackClient.connect(to: port, expecting: greeting.utf8.count)
        try await channel.writeAndFlush(ByteBuffer(bytes: Self.header))
        try await collector.received.get()
        #expect(collector.string == greeting)
        try await channel.close()
        await running.stop()
    }

    /// curl speaking HTTP through the multiplexer to the built-in http service.
    @Test(.enabled(if: Peer.available("curl")), .tags(.interop)) func curlReachesTheHTTPService() async throws {
        let running = try await RunningHost(
            """
            {"interfaces": ["127.0.0.1"], "proxy_port_mappings": {"0": "mux"}, "proxy_trusted_proxies": ["127.0.0.0/8"],
             "multiplex_services": {"mux": {"routes": {"http": "http"}, "default": "echo"}}}
            """)
        let port = running.port(.proxy(service: "mux", tls: false))
        let (body, client) = try await Peer.curl(["--haproxy-protocol", "--interface", "127.0.0.12", "http://127.0.0.1:\(port)/"])
        #expect(body["service"] as? String == "http")
        #expect(endpoint(body["source"]) == client)
        await running.stop()
    }

    static let httpMethods = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "ACL", "BASELINE-CONTROL", "BIND", "CHECKIN",
        "CHECKOUT", "COPY", "LABEL", "LINK", "LOCK", "MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL", "MKREDIRECTREF", "MKWORKSPACE", "MOVE",
        "ORDERPATCH", "PROPFIND", "PROPPATCH", "QUERY", "REBIND", "REPORT", "SEARCH", "UNBIND", "UNCHECKOUT", "UNLINK", "UNLOCK", "UPDATE",
        "UPDATEREDIRECTREF", "VERSION-CONTROL",
    ]

    static let http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

    /// What the http detector says of `bytes`: `nil` while undecided.
    static func http(_ bytes: some Sequence<UInt8>) -> Bool? {
        MultiplexServiceConfiguration.DetectedProtocol.http.matches(ByteBuffer(bytes: bytes).readableBytesView)
    }

    static func http(_ text: String) -> Bool? {
        http(text.utf8)
    }

    /// What it says when the bytes come one at a time: its first answer.
    static func httpByteAtATime(_ text: String) -> Bool? {
        let bytes = Array(text.utf8)
        for count in 1...bytes.count {
            if let answer = http(bytes[..<count]) { return answer }
        }
        return nil
    }

    /// Every registered method and a space is HTTP; any shorter start of one is undecided.
    @Test(arguments: httpMethods) func httpMethodsMatchAndTheirPrefixesWait(method: String) {
        #expect(Self.http(method + " ") == true)
        #expect(Self.http(method + " /index.html HTTP/1.1\r\n") == true)
        #expect(Self.httpByteAtATime(method + " /index.html HTTP/1.1\r\n") == true)
        for count in 0...method.count {
            #expect(Self.http(String(method.prefix(count))) == nil, "\(method.prefix(count))")
        }
    }

    /// Other protocols' first words, an unknown method, a lower-case one, a longer word, and a tab
    /// for the space.
    @Test(arguments: [
        "EHLO example.org\r\n", "HELO example.org\r\n", "MAIL FROM:<a@example.org>\r\n", "USER alice\r\n", "SET key value\r\n",
        "RFB 003.008\n", "NICK alice\r\n", "FOO / HTTP/1.1\r\n", "get / HTTP/1.1\r\n", "GETX / HTTP/1.1\r\n", "GET\t/ HTTP/1.1\r\n",
        "PRI / HTTP/1.1\r\n", "PRI * HTTP/1.1\r\n\r\n", "PRI * HTTP/2.0\r\n\r\nXY\r\n\r\n", "PRI * HTTP/2.0\n\nSM\n\n",
    ]) func httpLookAlikesDoNotMatch(text: String) {
        #expect(Self.http(text) == false)
        #expect(Self.httpByteAtATime(text) == false)
    }

    /// The HTTP/2 preface matches once whole, and is undecided until then; `PRI ` alone is not a
    /// request.
    @Test func http2PrefaceMatchesWhole() {
        #expect(Self.http(Self.http2Preface) == true)
        #expect(Self.http(Self.http2Preface + "\0\0\u{12}\u{4}") == true)
        #expect(Self.httpByteAtATime(Self.http2Preface) == true)
        for count in 0..<Self.http2Preface.utf8.count {
            #expect(Self.http(Self.http2Preface.utf8.prefix(count)) == nil, "\(count)")
        }
        #expect(Self.http("PRI ") == nil)
        #expect(Self.http("PRI *") == nil)
    }

    @Test(arguments: [
        (#"{"routes": {"ftp": "echo"}, "default": "echo"}"#, NetProxyConfigurationError.Kind.invalidValue, "multiplex_services.mux.routes"),
        (#"{"routes": {"http": "nope"}, "default": "echo"}"#, .unknownService, "multiplex_services.mux.routes.http"),
        (#"{"routes": {}, "default": "mux"}"#, .conflict, "multiplex_services.mux.default"),
        (#"{"routes": {}}"#, .invalidValue, "multiplex_services.mux"),
    ])
    func badConfigurationsNameTheEntry(entry: String, kind: NetProxyConfigurationError.Kind, key: String) throws {
        let json = #"{"proxy_port_mappings": {"0": "mux"}, "multiplex_services": {"mux": \#(entry)}}"#
        expect(startupError(json), kind, key: key)
    }
}
