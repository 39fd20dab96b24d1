import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOProxyProtocol
import NIOSSL
import ProxyProtocol
import TestSupport
import Testing

/// A loopback server whose child channels start with a PROXY handler.
final class LoopbackServer: Sendable {
    let channel: Channel
    private let results = NIOLockedValueBox<[Result<ProxiedConnectionInfo, any Error>]>([])
    private let collectors = NIOLockedValueBox<[ByteCollector]>([])

    var port: Int { channel.localAddress!.port! }
    var outcomes: [Result<ProxiedConnectionInfo, any Error>] { results.withLockedValue { $0 } }
    var collected: [ByteCollector] { collectors.withLockedValue { $0 } }

    /// - Parameter application: adds the handlers after the PROXY handler.
    init(
        group: EventLoopGroup,
        configuration: ProxyProtocolConfiguration,
        application: @escaping @Sendable (Channel) throws -> Void
    ) async throws {
        let results = self.results
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = ProxyProtocolServerHandler(configuration: configuration)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    handler.connectionInfo.whenComplete { result in results.withLockedValue { $0.append(result) } }
                    try application(channel)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// The application used by most tests: echo, and keep a copy of what was read.
    static func echoing(group: EventLoopGroup, configuration: ProxyProtocolConfiguration) async throws -> LoopbackServer {
        let box = NIOLockedValueBox<LoopbackServer?>(nil)
        let server = try await LoopbackServer(group: group, configuration: configuration) { channel in
            let collector = ByteCollector(eventLoop: channel.eventLoop)
            box.withLockedValue { $0 }!.collectors.withLockedValue { $0.append(collector) }
            try channel.pipeline.syncOperations.addHandlers([collector, EchoHandler()])
        }
        box.withLockedValue { $0 = server }
        return server
    }

    func waitForOutcome() async throws -> Result<ProxiedConnectionInfo, any Error> {
        for _ in 0..<500 {
            if let first = outcomes.first { return first }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw ChannelError.connectTimeout(.seconds(5))
    }
}

@Suite(.serialized, .timeLimit(.minutes(1))) struct LoopbackTests {
    static let trusted = ProxyProtocolConfiguration(trustedProxies: try! TrustedProxies(parsing: ["127.0.0.2"]))
    static let clientHeader = ProxyHeader(
        version: .v2,
        addresses: .inet(
            source: .init(ProxyIPv4Address(203, 0, 113, 9), port: 61000), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)))

    func connect(
        group: EventLoopGroup, from source: String, to port: Int, handlers: @escaping @Sendable (Channel) throws -> Void
    ) async throws -> Channel {
        try await ClientBootstrap(group: group)
            .bind(to: try SocketAddress(ipAddress: source, port: 0))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try handlers(channel) }
            }
            .connect(host: "127.0.0.1", port: port).get()
    }

    /// One-byte header writes, then 1 MiB echoed back byte for byte.
    @Test func oneMebibyteAfterAByteWiseHeader() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        // 28 awaited one-byte writes can take longer than the default header timeout on a loaded
        // machine; the timeout is not what this test is about.
        let configuration = ProxyProtocolConfiguration(trustedProxies: Self.trusted.trustedProxies, headerTimeout: .seconds(60))
        let server = try await LoopbackServer.echoing(group: group, configuration: configuration)
        // Seeded, so that a failure comes back with the same bytes on every run.
        var stream = ByteStream(seed: 0x1_0000_0001)
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        bytes.withUnsafeMutableBytes { stream.fill($0) }
        let payload = bytes
        let collector = NIOLockedValueBox<ByteCollector?>(nil)
        let client = try await connect(group: group, from: "127.0.0.2", to: server.port) { channel in
            let c = ByteCollector(eventLoop: channel.eventLoop, expecting: payload.count)
            collector.withLockedValue { $0 = c }
            try channel.pipeline.syncOperations.addHandler(c)
        }
        for byte in try Self.clientHeader.encoded().readableBytesView {
            try await client.writeAndFlush(ByteBuffer(bytes: [byte]))
        }
        try await client.writeAndFlush(ByteBuffer(bytes: payload))
        try await collector.withLockedValue { $0 }!.received.get()
        #expect(collector.withLockedValue { $0 }!.bytes == payload)
        let info = try server.outcomes.first!.get()
        #expect(info.source == (try SocketAddress(ipAddress: "203.0.113.9", port: 61000)))
        #expect(info.peer.ipAddress == "127.0.0.2")
        #expect(server.collected.first!.bytes == payload)
        try await client.close()
        try await server.channel.close()
        try await group.shutdownGracefully()
    }

    @Test func untrustedSourceIsClosedWithNothingRead() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await LoopbackServer.echoing(group: group, configuration: Self.trusted)
        let collector = NIOLockedValueBox<ByteCollector?>(nil)
        let client = try await connect(group: group, from: "127.0.0.3", to: server.port) { channel in
            let c = ByteCollector(eventLoop: channel.eventLoop)
            collector.withLockedValue { $0 = c }
            try channel.pipeline.syncOperations.addHandler(c)
        }
        client.writeAndFlush(ByteBuffer(string: "PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\nspoofed"), promise: nil)
        try await collector.withLockedValue { $0 }!.closed.get()
        let outcome = try await server.waitForOutcome()
        guard case .failure(let error as ProxyProtocolError) = outcome else {
            Issue.record("expected a ProxyProtocolError, got \(outcome)")
            return
        }
        #expect(error.reason == .untrustedSource)
        #expect(error.peer?.ipAddress == "127.0.0.3")
        #expect(server.collected.first!.bytes == [])
        #expect(collector.withLockedValue { $0 }!.bytes == [])
        try await server.channel.close()
        try await group.shutdownGracefully()
    }

    @Test func timesOutASilentClient() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var configuration = Self.trusted
        configuration.headerTimeout = .milliseconds(200)
        let server = try await LoopbackServer.echoing(group: group, configuration: configuration)
        let collector = NIOLockedValueBox<ByteCollector?>(nil)
        _ = try await connect(group: group, from: "127.0.0.2", to: server.port) { channel in
            let c = ByteCollector(eventLoop: channel.eventLoop)
            collector.withLockedValue { $0 = c }
            try channel.pipeline.syncOperations.addHandler(c)
        }
        try await collector.withLockedValue { $0 }!.closed.get()
        guard case .failure(let error as ProxyProtocolError) = try await server.waitForOutcome() else {
            Issue.record("expected a ProxyProtocolError")
            return
        }
        #expect(error.reason == .headerTimeout)
        #expect(error.headerTimeout == .milliseconds(200))
        try await server.channel.close()
        try await group.shutdownGracefully()
    }

    /// PROXY header in clear, then TLS, with the client handler in front of the TLS client.
    @Test func tlsAfterTheHeader() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let certificate = TestCertificate.localhost
        let serverContext = try certificate.serverContext()
        let clientContext = try certificate.clientContext()
        let server = try await LoopbackServer(group: group, configuration: Self.trusted) { channel in
            try channel.pipeline.syncOperations.addHandlers([NIOSSLServerHandler(context: serverContext), EchoHandler()])
        }
        let collector = NIOLockedValueBox<ByteCollector?>(nil)
        let header = try ProxyHeader(version: .v2, addresses: Self.clientHeader.addresses, tlvs: [.authority("localhost")])
        let client = try await connect(group: group, from: "127.0.0.2", to: server.port) { channel in
            let c = ByteCollector(eventLoop: channel.eventLoop, expecting: 11)
            collector.withLockedValue { $0 = c }
            try channel.pipeline.syncOperations.addHandlers([
                try ProxyProtocolClientHandler(header: header, appendingCRC32C: true),
                try NIOSSLClientHandler(context: clientContext, serverHostname: "localhost"),
                c,
            ])
        }
        try await client.writeAndFlush(ByteBuffer(string: "hello-tls-1"))
        try await collector.withLockedValue { $0 }!.received.get()
        #expect(collector.withLockedValue { $0 }!.string == "hello-tls-1")
        let info = try server.outcomes.first!.get()
        #expect(info.header.tlvs.authority == "localhost")
        #expect(info.source == (try SocketAddress(ipAddress: "203.0.113.9", port: 61000)))
        try await client.close()
        try await server.channel.close()
        try await group.shutdownGracefully()
    }

    /// A StartTLS exchange: plain text after the header, then TLS on the same connection.
    @Test func startTLSAfterTheHeader() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let certificate = TestCertificate.localhost
        let serverContext = try certificate.serverContext()
        let clientContext = try certificate.clientContext()
        let sourceSeenUnderTLS = NIOLockedValueBox<SocketAddress?>(nil)
        let server = try await LoopbackServer(group: group, configuration: Self.trusted) { channel in
            try channel.pipeline.syncOperations.addHandler(StartTLSServer(context: serverContext, sourceSeen: sourceSeenUnderTLS))
        }
        let collector = NIOLockedValueBox<ByteCollector?>(nil)
        let client = try await connect(group: group, from: "127.0.0.2", to: server.port) { channel in
            let c = ByteCollector(eventLoop: channel.eventLoop, expecting: 4)
            collector.withLockedValue { $0 = c }
            try channel.pipeline.syncOperations.addHandlers([try ProxyProtocolClientHandler(header: Self.clientHeader), c])
        }
        try await client.writeAndFlush(ByteBuffer(string: "STARTTLS\n"))
        try await collector.withLockedValue { $0 }!.received.get()
        #expect(collector.withLockedValue { $0 }!.string == "GO!\n")
        let secure = ByteCollector(eventLoop: client.eventLoop, expecting: 6)
        try await client.eventLoop.submit {
            let sync = client.pipeline.syncOperations
            try sync.addHandler(try NIOSSLClientHandler(context: clientContext, serverHostname: "localhost"), position: .first)
            try sync.addHandler(secure)
        }.get()
        try await client.writeAndFlush(ByteBuffer(string: "secret"))
        try await secure.received.get()
        #expect(secure.string == "secret")
        #expect(sourceSeenUnderTLS.withLockedValue { $0 } == (try SocketAddress(ipAddress: "203.0.113.9", port: 61000)))
        try await client.close()
        try await server.channel.close()
        try await group.shutdownGracefully()
    }

    /// The client handler and the server handler agree on every kind of header.
    @Test(
        arguments: try [
            ProxyHeader(
                version: .v1,
                addresses: .inet6(
                    source: .init(ProxyIPv6Address("2001:db8::5")!, port: 5), destination: .init(ProxyIPv6Address("2001:db8::6")!, port: 6))),
            ProxyHeader.v1Unknown,
            ProxyHeader.local,
            ProxyHeader(
                version: .v2,
                addresses: .inet(
                    source: .init(ProxyIPv4Address(10, 1, 2, 3), port: 1), destination: .init(ProxyIPv4Address(10, 3, 2, 1), port: 2)),
                tlvs: [
                    .alpn("h2"), .uniqueID([9, 9]),
                    .ssl(ProxySSLInfo(client: [.ssl], verify: 0, subTLVs: [ProxyTLV(type: .sslVersion, value: ByteBuffer(string: "TLSv1.3"))])),
                ]),
        ])
    func clientAndServerHandlersAgree(header: ProxyHeader) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await LoopbackServer.echoing(group: group, configuration: Self.trusted)
        let collector = NIOLockedValueBox<ByteCollector?>(nil)
        let crc = header.version == .v2 && header.addresses != .unspecified
        let client = try await connect(group: group, from: "127.0.0.2", to: server.port) { channel in
            let c = ByteCollector(eventLoop: channel.eventLoop, expecting: 4)
            collector.withLockedValue { $0 = c }
            try channel.pipeline.syncOperations.addHandlers([try ProxyProtocolClientHandler(header: header, appendingCRC32C: crc), c])
        }
        try await client.writeAndFlush(ByteBuffer(string: "ping"))
        try await collector.withLockedValue { $0 }!.received.get()
        let info = try server.outcomes.first!.get()
        var expected = header
        if crc { expected.tlvs.append(try ProxyTLV(type: .crc32c, value: ByteBuffer(integer: info.header.tlvs.crc32c!))) }
        #expect(info.header == expected)
        #expect(collector.withLockedValue { $0 }!.string == "ping")
        try await client.close()
        try await server.channel.close()
        try await group.shutdownGracefully()
    }
}

/// Answers `STARTTLS\n` with `GO!\n`, then adds TLS in front and echoes.
final class StartTLSServer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let context: NIOSSLContext
    let sourceSeen: NIOLockedValueBox<SocketAddress?>
    var line = ""

    init(context: NIOSSLContext, sourceSeen: NIOLockedValueBox<SocketAddress?>) {
        self.context = context
        self.sourceSeen = sourceSeen
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        line += String(buffer: unwrapInboundIn(data))
        guard line == "STARTTLS\n" else { return }
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "GO!\n")), promise: nil)
        let sync = context.pipeline.syncOperations
        try! sync.addHandler(NIOSSLServerHandler(context: self.context), position: .first)
        try! sync.addHandler(EchoHandler())
        sourceSeen.withLockedValue { $0 = sync.proxiedConnectionInfo?.source }
        sync.removeHandler(context: context, promise: nil)
    }
}
