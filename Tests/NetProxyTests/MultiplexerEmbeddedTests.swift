import NIOCore
import NIOEmbedded
import Testing

@testable import NetProxy

/// A multiplexer service whose routes lead to recording services, on an embedded loop.
struct MultiplexHarness {
    static let routes: [MultiplexServiceConfiguration.DetectedProtocol: String] = [
        .tls: "tls-svc", .http: "http-svc", .xmpp: "xmpp-svc", .ssh: "ssh-svc",
    ]

    let loop = EmbeddedEventLoop()
    let fixture: ListenerFixture
    /// What the services saw, across every connection of a test.
    let events: NIOLoopBoundBox<[String]>
    let multiplexer: NetProxyService

    init(
        detectTimeout: Duration = .seconds(5), maxPendingDetections: Int = 256,
        routes: [MultiplexServiceConfiguration.DetectedProtocol: String] = Self.routes, tlsRoutes: [MultiplexServiceConfiguration.TLSRoute] = []
    ) {
        fixture = ListenerFixture(loop: loop)
        let events = NIOLoopBoundBox([String](), eventLoop: loop)
        self.events = events
        var services: [String: NetProxyService] = [:]
        for name in Set(routes.values).union(tlsRoutes.map(\.service)).sorted() + ["other-svc"] {
            services[name] = NetProxyService(name: name, allowsHalfClosure: true) { channel, info in
                try channel.pipeline.syncOperations.addHandler(ServiceRecorder(info, events: events))
            }
        }
        var configuration = MultiplexServiceConfiguration(routes: routes, defaultService: "other-svc")
        configuration.tlsRoutes = tlsRoutes
        configuration.detectTimeout = detectTimeout
        configuration.maxPendingDetections = maxPendingDetections
        multiplexer = NetProxyService.multiplex(name: "mux", configuration, services: services, context: fixture.context)
    }

    /// A connection handed to the multiplexer as the host hands it: its guard first, then the
    /// service's handlers, then `channelActive`.
    func connect(from client: String = "203.0.113.9") throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(loop: loop)
        let connectionGuard = ConnectionGuard(idleTimeout: .seconds(60), listener: fixture.load, sweeps: fixture.sweeps, accepted: false)
        try channel.pipeline.syncOperations.addHandler(connectionGuard)
        var info = try connectionInfo(service: "mux")
        info.source = try SocketAddress(ipAddress: client, port: 4321)
        #expect(
            multiplexer.take(
                channel, info, asyncConnections: AsyncStream.makeStream(of: AsyncServiceConnection.self).continuation, logger: fixture.logger))
        try channel.activate(peer: client)
        return channel
    }

    func isDetecting(_ channel: EmbeddedChannel) -> Bool {
        (try? channel.pipeline.syncOperations.handler(type: Multiplexer.self)) != nil
    }
}

/// The multiplexer on embedded channels: what it hands on, to whom, and when.
@Suite struct MultiplexerEmbeddedTests {

    /// The first bytes of a protocol, split over two reads inside a detector's decision: nothing
    /// is handed on after the first, and after the second the service gets them as one read.
    @Test func firstBytesSplitAcrossReadsPickTheServiceAndArriveIntact() throws {
        let mux = MultiplexHarness()
        let channel = try mux.connect()
        try channel.writeInbound(ByteBuffer(string: "<stre"))
        #expect(mux.events.value == [])
        #expect(mux.isDetecting(channel))
        try channel.writeInbound(ByteBuffer(string: "am:stream>"))
        #expect(mux.events.value == ["active xmpp-svc", "read <stream:stream>"])
        #expect(!mux.isDetecting(channel))
        try channel.writeInbound(ByteBuffer(string: "<iq/>"))
        #expect(mux.events.value == ["active xmpp-svc", "read <stream:stream>", "read <iq/>"])
    }

    /// Byte by byte, each protocol's start reaches its service with nothing lost, doubled or
    /// reordered.
    @Test(arguments: [
        ("tls-svc", [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC] as [UInt8]),
        ("http-svc", Array("GET / HTTP/1.1\r\n".utf8)),
        ("http-svc", Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0".utf8)),
        ("xmpp-svc", Array("<?xml version='1.0'?>".utf8)),
        ("ssh-svc", Array("SSH-2.0-OpenSSH_9.2\r\n".utf8)),
        ("other-svc", Array("EHLO example.org\r\n".utf8)),
        ("other-svc", Array("hello there, nothing known here\n".utf8)),
    ])
    func byteByByteEachProtocolReachesItsService(service: String, bytes: [UInt8]) throws {
        let mux = MultiplexHarness()
        let channel = try mux.connect()
        var reads = 0
        for byte in bytes {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            reads += 1
            if !mux.isDetecting(channel) { break }
        }
        #expect(!mux.isDetecting(channel))
        for byte in bytes.dropFirst(reads) {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        let seen = mux.events.value
        #expect(seen.first == "active \(service)")
        #expect(seen.dropFirst().map { $0.dropFirst("read ".count) }.joined() == String(decoding: bytes, as: UTF8.self))
        // Held until decided, then replayed as one read.
        #expect(seen.dropFirst().first == "read " + String(decoding: bytes.prefix(reads), as: UTF8.self))
    }

    /// A silent client goes to the default service at `detect_timeout`, never before; what it
    /// sent that decided nothing is replayed to it.
    @Test func theDetectTimeoutHandsASilentClientToTheDefault() throws {
        let mux = MultiplexHarness()
        let channel = try mux.connect()
        try channel.writeInbound(ByteBuffer(string: "GE"))
        mux.loop.advanceTime(by: .milliseconds(4999))
        #expect(mux.events.value == [])
        #expect(mux.isDetecting(channel))
        mux.loop.advanceTime(by: .milliseconds(1))
        #expect(mux.events.value == ["active other-svc", "read GE"])
        #expect(!mux.isDetecting(channel))
        #expect(channel.isActive)
    }

    @Test func aClientThatSaysNothingGetsTheDefaultWithNoRead() throws {
        let mux = MultiplexHarness()
        let channel = try mux.connect()
        mux.loop.advanceTime(by: .seconds(5))
        #expect(mux.events.value == ["active other-svc"])
        #expect(channel.isActive)
    }

    /// A decision before the timeout cancels it: the service is chosen once.
    @Test func aDecisionCancelsTheTimeout() throws {
        let mux = MultiplexHarness()
        let channel = try mux.connect()
        try channel.writeInbound(ByteBuffer(string: "SSH-"))
        mux.loop.advanceTime(by: .seconds(10))
        #expect(mux.events.value == ["active ssh-svc", "read SSH-"])
        #expect(channel.isActive)
    }

    /// The end of the client's input decides for the default service, which gets the bytes, then
    /// the end.
    @Test func theEndOfInputDecidesForTheDefault() throws {
        let mux = MultiplexHarness()
        let channel = try mux.connect()
        try channel.writeInbound(ByteBuffer(string: "GE"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(mux.events.value == ["active other-svc", "read GE", "inputClosed"])
    }

    /// At `max_pending_detections` a new connection is closed at once, counted and logged; a
    /// connection that is decided, or closes, gives its place back.
    @Test func pendingDetectionsAreCapped() throws {
        let capped = MultiplexHarness(maxPendingDetections: 2)
        let first = try capped.connect(from: "203.0.113.1")
        let second = try capped.connect(from: "203.0.113.2")
        let third = try capped.connect(from: "203.0.113.3")
        #expect(first.isActive && second.isActive)
        #expect(!third.isActive)
        #expect(capped.fixture.metric("netproxy_connections_limited_total", ("limit", "pending_detections")) == 1)
        #expect(
            capped.fixture.logged == [
                "warning multiplex mux: client 203.0.113.3:4321 closed: 2 connections under detection, its max_pending_detections"
            ])

        // Decided: its place is free.
        try first.writeInbound(ByteBuffer(string: "SSH-"))
        let fourth = try capped.connect(from: "203.0.113.4")
        #expect(fourth.isActive)
        #expect(!(try capped.connect(from: "203.0.113.5")).isActive)

        // Closed while under detection: its place is free too.
        try second.close().wait()
        let sixth = try capped.connect(from: "203.0.113.6")
        #expect(sixth.isActive)
        #expect(capped.isDetecting(sixth))
        #expect(capped.fixture.metric("netproxy_connections_limited_total", ("limit", "pending_detections")) == 2)
    }
}
