import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOProxyProtocol
import ProxyProtocol
import Testing

@testable import NetProxy

/// The built-in services' handlers on embedded channels, handed a connection as the host hands
/// it (`NetProxyService.take`).
@Suite struct BuiltinServiceHandlerTests {
    /// A channel given to `service`, with a socket stand-in first; active.
    static func serve(_ service: NetProxyService, info: ConnectionInfo? = nil) throws -> (EmbeddedChannel, SocketSide) {
        let channel = EmbeddedChannel()
        let socket = SocketSide()
        try channel.pipeline.syncOperations.addHandler(socket)
        let continuation = AsyncStream.makeStream(of: AsyncServiceConnection.self).continuation
        #expect(
            service.take(channel, try info ?? connectionInfo(service: service.name), asyncConnections: continuation, logger: .init(label: "test")))
        try channel.activate()
        return (channel, socket)
    }

    /// A connection through a proxy at 10.0.0.5, whose version 1 header names 203.0.113.9:4321
    /// as the client of 198.51.100.7:443.
    static func proxiedInfo() throws -> ConnectionInfo {
        let header = try ProxyHeader(
            version: .v1,
            addresses: .inet(
                source: .init(ProxyIPv4Address(203, 0, 113, 9), port: 4321), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)))
        let proxy = try ProxiedConnectionInfo(
            header: header, headerLength: try header.encoded().readableBytes, peer: try SocketAddress(ipAddress: "10.0.0.5", port: 51000),
            localAddress: try SocketAddress(ipAddress: "10.0.0.1", port: 7000))
        return ConnectionInfo(
            service: "whoami", port: 7000, peer: proxy.peer, source: proxy.source, destination: proxy.destination, proxy: proxy)
    }

    // MARK: whoami

    /// The line is written at once; the output is closed after it; the connection closes when the
    /// client closes its side.
    @Test func whoamiWritesTheConnectionsLineThenClosesWithTheClient() throws {
        let (channel, socket) = try Self.serve(.whoami, info: try Self.proxiedInfo())
        // `PROXY TCP4 203.0.113.9 198.51.100.7 4321 443\r\n` is 46 bytes.
        let line =
            #"{"service":"whoami","port":7000,"peer":{"ip":"10.0.0.5","port":51000},"source":{"ip":"203.0.113.9","port":4321},"destination":{"ip":"198.51.100.7","port":443},"proxy":{"version":1,"command":"PROXY","family":"TCP4","transport":null,"source":{"ip":"203.0.113.9","port":4321},"destination":{"ip":"198.51.100.7","port":443},"tlvs":[],"header_length":46}}"#
            + "\n"
        #expect(try channel.sentText() == line)
        #expect(socket.events == ["write \(line.utf8.count)", "flush", "close output"])
        #expect(channel.isActive)
        try channel.writeInbound(ByteBuffer(string: "ignored"))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(socket.events == ["write \(line.utf8.count)", "flush", "close output", "close all"])
        #expect(!channel.isActive)
    }

    /// A client that never closes is closed two seconds after the line, not before.
    @Test func whoamiLingersTwoSecondsForTheClientsClose() throws {
        let (channel, socket) = try Self.serve(.whoami)
        #expect(
            try channel.sentText()
                == #"{"service":"whoami","port":7000,"peer":{"ip":"203.0.113.9","port":4321},"source":{"ip":"203.0.113.9","port":4321},"destination":{"ip":"127.0.0.1","port":7000},"proxy":null}"#
                + "\n")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1999))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!channel.isActive)
        #expect(socket.events.suffix(2) == ["close output", "close all"])
    }

    // MARK: echo

    /// Each read goes back as it came, flushed at the end of the read; the client's half-close
    /// closes the connection once everything went back.
    @Test func echoSendsBackEveryByteThenClosesAfterTheHalfClose() throws {
        let (channel, socket) = try Self.serve(.echo)
        channel.pipeline.fireChannelRead(ByteBuffer(string: "hello, "))
        channel.pipeline.fireChannelRead(ByteBuffer(string: "echo"))
        #expect(try channel.sentBuffers() == [])
        channel.pipeline.fireChannelReadComplete()
        #expect(try channel.sentBuffers() == ["hello, ", "echo"])
        channel.pipeline.fireChannelRead(ByteBuffer(string: "bye"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(try channel.sentBuffers() == ["bye", ""])
        #expect(socket.events == ["write 7", "write 4", "flush", "write 3", "write 0", "flush", "close all"])
        #expect(!channel.isActive)
    }

    /// Echo asks for no read while its writes are held back.
    @Test func echoReadsOnlyWhileItCanWrite() throws {
        let (channel, socket) = try Self.serve(.echo)
        channel.read()
        #expect(socket.events == ["read"])
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        channel.read()
        // NIO's BackPressureHandler flushes when the writes back up, and holds the read.
        #expect(socket.events == ["read", "flush"])
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(socket.events == ["read", "flush", "read"])
    }

    // MARK: http

    /// One response per request, with the connection's JSON, keep-alive.
    @Test func httpAnswersARequestWithTheConnectionsJSON() throws {
        let info = try connectionInfo(service: "http")
        let (channel, _) = try Self.serve(.http, info: info)
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        let body = info.json + "\n"
        #expect(
            try channel.sentText()
                == "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: keep-alive\r\n\r\n" + body)
        #expect(channel.isActive)
    }

    @Test func httpRefusesOtherMethodsNamingTheAllowedOnes() throws {
        let (channel, _) = try Self.serve(.http)
        try channel.writeInbound(ByteBuffer(string: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"))
        let body = "{\"error\":\"only GET is served\"}\n"
        #expect(
            try channel.sentText()
                == "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nAllow: GET, HEAD\r\nConnection: keep-alive\r\n\r\n"
                + body)
    }

    /// A responder that answers with the request's URI, behind NIOHTTP1's server pipeline.
    static func uriResponder() throws -> (EmbeddedChannel, SocketSide) {
        let channel = EmbeddedChannel()
        let socket = SocketSide()
        try channel.pipeline.syncOperations.addHandler(socket)
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
        try channel.pipeline.syncOperations.addHandler(
            HTTPResponder { head in .init(status: .ok, contentType: "text/plain", body: head.uri) })
        try channel.activate()
        return (channel, socket)
    }

    static func response(_ body: String, keepAlive: Bool = true) -> String {
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: \(keepAlive ? "keep-alive" : "close")\r\n\r\n\(body)"
    }

    /// Requests sent in one go are answered in their order; `Connection: close` on the last closes
    /// the connection after its answer.
    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        let (channel, _) = try Self.uriResponder()
        try channel.writeInbound(
            ByteBuffer(
                string: "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        )
        #expect(try channel.sentText() == Self.response("/a") + Self.response("/b") + Self.response("/c", keepAlive: false))
        #expect(!channel.isActive)
    }

    /// Activity is reported for each complete request part (head, body chunk, end), never for
    /// bytes of a part still arriving.
    @Test func eachCompleteRequestPartIsReportedAsActivity() throws {
        let (channel, socket) = try Self.uriResponder()
        for byte in "GET /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r".utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        #expect(socket.events.filter { $0 == "activity" } == [])
        try channel.writeInbound(ByteBuffer(string: "\n"))
        #expect(socket.events == ["activity"])
        try channel.writeInbound(ByteBuffer(string: "abc"))
        // The body chunk, then the end; then the answer.
        #expect(socket.events.prefix(3) == ["activity", "activity", "activity"])
        #expect(try channel.sentText() == Self.response("/slow"))
    }

    /// After the client's half-close, the connection closes once the answers to what it sent are
    /// written.
    @Test func aHalfCloseAfterARequestClosesAfterItsAnswer() throws {
        let (channel, _) = try Self.uriResponder()
        try channel.setOption(.allowRemoteHalfClosure, value: true).wait()
        try channel.writeInbound(ByteBuffer(string: "GET /last HTTP/1.1\r\nHost: x\r\n\r\n"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(try channel.sentText() == Self.response("/last"))
        #expect(!channel.isActive)
    }

    /// A quiesce request closes an idle connection at once, and one with a request in progress
    /// after that request's answer, which says `Connection: close`.
    @Test func quiescingFinishesTheRequestInProgress() throws {
        func responder() throws -> EmbeddedChannel {
            let channel = EmbeddedChannel(handler: HTTPResponder { head in .init(status: .ok, contentType: "text/plain", body: head.uri) })
            try channel.activate()
            return channel
        }
        let idle = try responder()
        idle.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(!idle.isActive)

        let busy = try responder()
        try busy.writeInbound(HTTPServerRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/busy")))
        busy.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(busy.isActive)
        try busy.writeInbound(HTTPServerRequestPart.end(nil))
        guard case .head(let head)? = try busy.readOutbound(as: HTTPServerResponsePart.self) else {
            Issue.record("no response head")
            return
        }
        #expect(head.headers[canonicalForm: "Connection"] == ["close"])
        guard case .body(.byteBuffer(let body))? = try busy.readOutbound(as: HTTPServerResponsePart.self) else {
            Issue.record("no response body")
            return
        }
        #expect(String(buffer: body) == "/busy")
        #expect(try busy.readOutbound(as: HTTPServerResponsePart.self) == .end(nil))
        #expect(!busy.isActive)
    }
}
