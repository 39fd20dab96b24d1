import HummingbirdCore
import HummingbirdProxyProtocol
import Logging
import NIOCore
import NIOEmbedded
import NIOProxyProtocol
import ProxyProtocol
import Testing

/// `ProxyProtocolChannel`'s header timeout on an embedded channel, whose clock the test moves:
/// it covers the header only, however the header is split, and nothing after it.
@Suite struct ProxyProtocolChannelTests {
    /// A base channel that records, as text, what reaches it.
    struct RecordingBase: ServerChildChannel {
        struct Value: ServerChildChannelValue {
            let channel: any Channel
        }

        final class Recorder: ChannelInboundHandler {
            typealias InboundIn = ByteBuffer
            let reads: NIOLoopBoundBox<[String]>

            init(_ reads: NIOLoopBoundBox<[String]>) {
                self.reads = reads
            }

            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                reads.value.append(String(buffer: unwrapInboundIn(data)))
            }
        }

        let reads: NIOLoopBoundBox<[String]>

        func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(Recorder(reads))
                return Value(channel: channel)
            }
        }

        func handle(value: Value, logger: Logger) async {}
    }

    /// A connection from a trusted proxy, set up by a `ProxyProtocolChannel` with a 200 ms header
    /// timeout.
    struct Connection {
        let channel = EmbeddedChannel()
        let value: ProxyProtocolChannel<RecordingBase>.Value
        let received: NIOLoopBoundBox<[String]>

        init() throws {
            let configuration = ProxyProtocolConfiguration(
                trustedProxies: try TrustedProxies(parsing: ["127.0.0.0/8"]), headerTimeout: .milliseconds(200))
            received = NIOLoopBoundBox([], eventLoop: channel.eventLoop)
            value = try ProxyProtocolChannel(RecordingBase(reads: received), configuration: configuration).setup(
                channel: channel, logger: Logger(label: "test")
            )
            .wait()
            channel.localAddress = try SocketAddress(ipAddress: "127.0.0.1", port: 80)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
        }

        func send(_ bytes: [UInt8]) throws {
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        }

        func advance(milliseconds: Int64) {
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(milliseconds))
        }

        var reads: [String] { received.value }
    }

    static let v2Header = Array(
        try! ProxyHeader(
            version: .v2,
            addresses: .inet(
                source: .init(ProxyIPv4Address(192, 0, 2, 31), port: 3100), destination: .init(ProxyIPv4Address(198, 51, 100, 1), port: 80))
        ).encoded().readableBytesView)

    static let request = "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"

    /// A header in two pieces 50 ms apart, within the timeout: accepted, and the request after it
    /// reaches the base channel.
    @Test func aHeaderInPiecesWithinTheTimeoutIsServed() throws {
        let connection = try Connection()
        try connection.send(Array(Self.v2Header.prefix(10)))
        connection.advance(milliseconds: 50)
        #expect(connection.reads == [])
        try connection.send(Array(Self.v2Header.dropFirst(10)) + Array(Self.request.utf8))
        let info = try connection.value.connectionInfo.wait()
        #expect(info.source.ipAddress == "192.0.2.31")
        #expect(info.source.port == 3100)
        #expect(connection.reads == [Self.request])
        connection.advance(milliseconds: 1000)
        #expect(connection.channel.isActive)
    }

    /// After a complete header the timeout no longer applies: a request twice the timeout later
    /// is served.
    @Test func aRequestLongAfterACompleteHeaderIsServed() throws {
        let connection = try Connection()
        try connection.send(Array("PROXY TCP4 192.0.2.32 198.51.100.1 3200 80\r\n".utf8))
        #expect(try connection.value.connectionInfo.wait().source.port == 3200)
        connection.advance(milliseconds: 400)
        #expect(connection.channel.isActive)
        try connection.send(Array(Self.request.utf8))
        #expect(connection.reads == [Self.request])
    }

    /// Half a header: closed at the timeout, not a millisecond before, and nothing reaches the
    /// base channel.
    @Test func anUnfinishedHeaderIsClosedAtTheTimeout() throws {
        let connection = try Connection()
        try connection.send(Array(Self.v2Header.prefix(Self.v2Header.count / 2)))
        connection.advance(milliseconds: 199)
        #expect(connection.channel.isActive)
        connection.advance(milliseconds: 1)
        #expect(!connection.channel.isActive)
        #expect(throws: ProxyProtocolError.self) { try connection.value.connectionInfo.wait() }
        #expect(connection.reads == [])
    }
}
