import NIOCore
import NIOEmbedded
import NIOProxyProtocol
import ProxyProtocol
import TestSupport
import Testing

/// What reaches the handlers after the PROXY handler, in order.
typealias ProxyEventRecorder = EventRecorder<ProxiedConnectionInfo>

/// Counts `read` requests that pass the PROXY handler towards the socket.
final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = NIOAny
    var reads = 0

    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}

struct ServerHarness {
    let channel = EmbeddedChannel()
    let handler: ProxyProtocolServerHandler
    let recorder = ProxyEventRecorder()
    let reads = ReadCounter()

    static let proxy = try! SocketAddress(ipAddress: "127.0.0.1", port: 40000)
    static let local = try! SocketAddress(ipAddress: "127.0.0.1", port: 443)

    init(_ configuration: ProxyProtocolConfiguration = .init(), peer: SocketAddress = proxy) throws {
        handler = ProxyProtocolServerHandler(configuration: configuration)
        try channel.pipeline.syncOperations.addHandlers([reads, handler, recorder])
        channel.localAddress = Self.local
        try channel.connect(to: peer).wait()
    }

    func send(_ bytes: [UInt8]) throws {
        try channel.writeInbound(ByteBuffer(bytes: bytes))
    }

    func send(_ text: String) throws {
        try send(Array(text.utf8))
    }

    /// The error the handler's future failed with.
    func failure() -> ProxyProtocolError? {
        do {
            _ = try handler.connectionInfo.wait()
            return nil
        } catch {
            return error as? ProxyProtocolError
        }
    }
}

@Suite struct ServerHandlerTests {
    static let v1Line = "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n"

    static func expectedInfo(_ header: ProxyHeader, length: Int) throws -> ProxiedConnectionInfo {
        try ProxiedConnectionInfo(header: header, headerLength: length, peer: ServerHarness.proxy, localAddress: ServerHarness.local)
    }

    @Test func headerInOneByteWrites() throws {
        let harness = try ServerHarness()
        for byte in Array((Self.v1Line + "hello").utf8) {
            try harness.send([byte])
        }
        let header = ProxyHeader(
            version: .v1,
            addresses: .inet(
                source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 51234), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)))
        let info = try Self.expectedInfo(header, length: 45)
        #expect(harness.recorder.events == [.active, .user(info), .read("h"), .read("e"), .read("l"), .read("l"), .read("o")])
        #expect(try harness.handler.connectionInfo.wait() == info)
        #expect(info.source == (try SocketAddress(ipAddress: "192.0.2.1", port: 51234)))
        #expect(info.destination == (try SocketAddress(ipAddress: "198.51.100.7", port: 443)))
        #expect(info.peer == ServerHarness.proxy)
        #expect(harness.channel.pipeline.syncOperations.proxiedConnectionInfo == info)
        #expect(try harness.channel.pipeline.proxiedConnectionInfo().wait() == info)
        #expect(throws: (any Error).self) { try harness.channel.pipeline.syncOperations.handler(type: ProxyProtocolServerHandler.self) }
        #expect(harness.channel.isActive)
    }

    @Test func headerAndPayloadInOneWrite() throws {
        let harness = try ServerHarness()
        let header = try ProxyHeader(
            version: .v2,
            addresses: .inet6(
                source: .init(ProxyIPv6Address("2001:db8::1")!, port: 1000), destination: .init(ProxyIPv6Address("2001:db8::2")!, port: 2000)),
            tlvs: [.authority("example.com"), .uniqueID([1, 2, 3])])
        var bytes = try header.encoded(appendingCRC32C: true)
        let length = bytes.readableBytes
        bytes.writeString("GET / HTTP/1.1\r\n\r\n")
        try harness.channel.writeInbound(bytes)
        let info = try harness.handler.connectionInfo.wait()
        #expect(harness.recorder.events == [.active, .user(info), .read("GET / HTTP/1.1\r\n\r\n")])
        #expect(info.headerLength == length)
        #expect(info.header.tlvs.authority == "example.com")
        #expect(info.source == (try SocketAddress(ipAddress: "2001:db8::1", port: 1000)))
        #expect(info.carriesAddresses)
    }

    /// An address family v2 does not define closes the connection (Prosody's module left it
    /// open, with the header's bytes still in the stream).
    @Test func unknownVersion2FamilyCloses() throws {
        let harness = try ServerHarness()
        try harness.send(ProxyHeader.v2Signature + [0x21, 0x41, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12) + Array("x".utf8))
        #expect(!harness.channel.isActive)
        #expect(harness.recorder.events == [])
        #expect(harness.failure()?.reason == .invalidHeader)
        #expect(harness.failure()?.underlying as? ProxyHeaderError == ProxyHeaderError(.v2UnsupportedFamily(0x41), at: 13))
    }

    @Test func invalidHeaderClosesAndPassesNothingOn() throws {
        let harness = try ServerHarness()
        let bytes = "PROXY TCP4 192.0.2.1 198.51.100.7 51234 4430000\r\nsecret"
        try harness.send(bytes)
        #expect(!harness.channel.isActive)
        #expect(harness.recorder.events == [])
        let failure = try #require(harness.failure())
        #expect(failure.reason == .invalidHeader)
        #expect(failure.peer == ServerHarness.proxy)
        #expect(failure.receivedBytes == bytes.utf8.count)
        #expect(failure.underlying as? ProxyHeaderError == ProxyHeaderError(.v1InvalidPort(.destinationPort, "4430000"), at: 40))
        #expect(
            harness.failure()?.description
                == "connection from 127.0.0.1:40000: invalid PROXY header: v1 header, byte 40: destination port \"4430000\" is not a port (0-65535, no leading zeros)"
        )
    }

    @Test func untrustedSourceIsClosedWithoutARead() throws {
        let configuration = ProxyProtocolConfiguration(trustedProxies: try TrustedProxies(parsing: ["127.0.0.2"]))
        let peer = try SocketAddress(ipAddress: "127.0.0.3", port: 5555)
        let harness = try ServerHarness(configuration, peer: peer)
        #expect(!harness.channel.isActive)
        #expect(harness.reads.reads == 0)
        #expect(harness.recorder.events == [])
        #expect(harness.failure()?.reason == .untrustedSource)
        #expect(harness.failure()?.peer == peer)
        #expect(harness.failure()?.receivedBytes == 0)
    }

    @Test func trustsIPv4MappedPeers() throws {
        let peer = try SocketAddress(ipAddress: "::ffff:127.0.0.1", port: 5555)
        let harness = try ServerHarness(peer: peer)
        #expect(harness.channel.isActive)
        #expect(harness.reads.reads >= 1)
    }

    @Test func timesOut() throws {
        let harness = try ServerHarness(ProxyProtocolConfiguration(headerTimeout: .seconds(3)))
        try harness.send("PROXY TCP4 ")
        harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(2999))
        #expect(harness.channel.isActive)
        harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!harness.channel.isActive)
        let failure = harness.failure()
        #expect(failure?.reason == .headerTimeout)
        #expect(failure?.peer == ServerHarness.proxy)
        #expect(failure?.headerTimeout == .seconds(3))
        #expect(failure?.receivedBytes == 11)
        #expect(harness.recorder.events == [])
    }

    @Test func timeoutIsCancelledByTheHeader() throws {
        let harness = try ServerHarness(ProxyProtocolConfiguration(headerTimeout: .seconds(3)))
        try harness.send(Self.v1Line)
        harness.channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(harness.channel.isActive)
    }

    @Test func closedBeforeHeader() throws {
        let harness = try ServerHarness()
        try harness.send("PROXY TCP4 1.2")
        harness.channel.pipeline.fireChannelInactive()
        #expect(harness.failure()?.reason == .closedBeforeHeader)
        #expect(harness.failure()?.receivedBytes == 14)
        #expect(harness.recorder.events == [])
    }

    @Test func halfClosedBeforeHeader() throws {
        let harness = try ServerHarness()
        try harness.send("PROXY")
        harness.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(!harness.channel.isActive)
        #expect(harness.failure()?.reason == .closedBeforeHeader)
        #expect(harness.failure()?.receivedBytes == 5)
    }

    @Test func resetBeforeHeader() throws {
        let harness = try ServerHarness()
        harness.channel.pipeline.fireErrorCaught(IOError(errnoCode: 104, reason: "read"))
        #expect(!harness.channel.isActive)
        let failure = try #require(harness.failure())
        #expect(failure.reason == .readFailed)
        // The channel's own error, not a description of it.
        #expect((failure.underlying as? IOError)?.errnoCode == 104)
    }

    @Test func quiesceDuringHeaderCloses() throws {
        let harness = try ServerHarness()
        try harness.send("PROXY TCP4")
        harness.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(!harness.channel.isActive)
        #expect(harness.failure()?.reason == .shuttingDown)
    }

    @Test func localUsesSocketAddresses() throws {
        let harness = try ServerHarness()
        try harness.send(Array(try ProxyHeader.local.encoded().readableBytesView) + Array("ping".utf8))
        let info = try harness.handler.connectionInfo.wait()
        #expect(info.source == ServerHarness.proxy)
        #expect(info.destination == ServerHarness.local)
        #expect(!info.carriesAddresses)
        #expect(harness.recorder.events == [.active, .user(info), .read("ping")])
    }

    /// The reference module's fault: LOCAL with dummy addresses (as load balancers send for
    /// health checks) left the address block in the stream. All `len` bytes must go.
    @Test func localSkipsItsWholeBody() throws {
        let harness = try ServerHarness()
        let dummy: [UInt8] =
            [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x11, 0x00, 0x0F]
            + [10, 0, 0, 1, 10, 0, 0, 2, 0x1F, 0x90, 0x00, 0x50] + [0x04, 0x00, 0x00]
        try harness.send(dummy + Array("ping".utf8))
        let info = try harness.handler.connectionInfo.wait()
        #expect(info.headerLength == 31)
        #expect(info.source == ServerHarness.proxy)
        #expect(harness.recorder.readBytes == "ping")
    }

    @Test func localCanBeRefused() throws {
        let harness = try ServerHarness(ProxyProtocolConfiguration(acceptsLocal: false))
        try harness.send(Array(try ProxyHeader.local.encoded().readableBytesView))
        #expect(harness.failure()?.reason == .localNotAccepted)
        #expect(!harness.channel.isActive)
    }

    @Test func unspecifiedAddressesFollowThePolicy() throws {
        #expect(ProxyProtocolConfiguration().unspecifiedAddresses == .useSocketAddresses)
        #expect(ProxyProtocolConfiguration.UnspecifiedAddressPolicy.reject != .useSocketAddresses)
        let accepting = try ServerHarness()
        try accepting.send("PROXY UNKNOWN\r\n")
        #expect(try accepting.handler.connectionInfo.wait().source == ServerHarness.proxy)
        let refusing = try ServerHarness(ProxyProtocolConfiguration(unspecifiedAddresses: .reject))
        try refusing.send("PROXY UNKNOWN\r\n")
        #expect(refusing.failure()?.reason == .unspecifiedAddressesNotAccepted)
        let refusingV2 = try ServerHarness(ProxyProtocolConfiguration(unspecifiedAddresses: .reject))
        try refusingV2.send(Array(try ProxyHeader(version: .v2, addresses: .unspecified).encoded().readableBytesView))
        #expect(refusingV2.failure()?.reason == .unspecifiedAddressesNotAccepted)
    }

    /// A client that trickles the header a byte at a time does not move the deadline (Prosody's
    /// module had no timeout at all).
    @Test func tricklingDoesNotExtendTheTimeout() throws {
        let harness = try ServerHarness(ProxyProtocolConfiguration(headerTimeout: .seconds(3)))
        for byte in "PRO" {
            try harness.send(String(byte))
            harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(byte == "O" ? 999 : 1000))
        }
        #expect(harness.channel.isActive)
        harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!harness.channel.isActive)
        #expect(harness.failure()?.reason == .headerTimeout)
        #expect(harness.failure()?.receivedBytes == 3)
        #expect(harness.recorder.events == [])
    }

    /// A version 1 line longer than the specification's 107 bytes is refused at byte 107,
    /// whether it arrives at once or a byte at a time (Prosody's module buffered up to 8 MiB).
    @Test func longVersion1LinesAreRefusedAtTheLimit() throws {
        let atOnce = try ServerHarness()
        try atOnce.send("PROXY " + String(repeating: "A", count: 1_000_000))
        #expect(!atOnce.channel.isActive)
        #expect(atOnce.failure()?.reason == .invalidHeader)
        #expect(atOnce.failure()?.underlying as? ProxyHeaderError == ProxyHeaderError(.headerTooLong(limit: 107), at: 107))
        #expect(atOnce.recorder.events == [])
        let trickled = try ServerHarness()
        let line = Array(("PROXY " + String(repeating: "A", count: 200)).utf8)
        for byte in line.prefix(106) {
            try trickled.send([byte])
        }
        #expect(trickled.channel.isActive)
        // The 107th byte is not the line's LF: no valid line can end any more.
        try trickled.send([line[106]])
        #expect(!trickled.channel.isActive)
        #expect(trickled.failure()?.underlying as? ProxyHeaderError == ProxyHeaderError(.headerTooLong(limit: 107), at: 107))
    }

    @Test func limitsHeaderSizeAndVersions() throws {
        let small = try ServerHarness(ProxyProtocolConfiguration(maximumHeaderLength: 64))
        let header = try ProxyHeader(version: .v2, addresses: .unspecified, tlvs: [ProxyTLV(type: .noop, bytes: [UInt8](repeating: 0, count: 100))])
        try small.send(Array(try header.encoded().readableBytesView.prefix(16)))
        #expect(small.failure()?.reason == .invalidHeader)
        #expect(small.failure()?.underlying as? ProxyHeaderError == ProxyHeaderError(.headerTooLong(limit: 64), at: 14))
        let v2Only = try ServerHarness(ProxyProtocolConfiguration(acceptedVersions: .v2))
        try v2Only.send("P")
        #expect(v2Only.failure()?.underlying as? ProxyHeaderError == ProxyHeaderError(.versionNotAccepted(.v1), at: 0))
    }

    /// The limit is checked where the configuration is made, not on a connection: outside
    /// 16...65551 is a programming error and traps at the call.
    @Test func headerLengthLimitIsCheckedWhereItIsSet() async {
        #expect(ProxyProtocolConfiguration(maximumHeaderLength: 16).maximumHeaderLength == 16)
        #expect(ProxyProtocolConfiguration(maximumHeaderLength: 65551).maximumHeaderLength == 65551)
        await #expect(processExitsWith: .failure) { _ = ProxyProtocolConfiguration(maximumHeaderLength: 15) }
        await #expect(processExitsWith: .failure) { _ = ProxyProtocolConfiguration(maximumHeaderLength: 65552) }
    }

    @Test func abstractUnixAddressIsUnusable() throws {
        let harness = try ServerHarness()
        let header = try ProxyHeader(
            version: .v2,
            addresses: .unix(
                source: .init(path: String(repeating: "a", count: 108)), destination: .init(path: "/b")))
        try harness.send(Array(try header.encoded().readableBytesView))
        #expect(harness.failure()?.reason == .unusableAddress)
        #expect(harness.failure()?.underlying != nil)
    }

    /// A Linux abstract name (leading NUL) cannot be a SocketAddress: refused, not shortened.
    @Test func abstractUnixNameIsUnusable() throws {
        let harness = try ServerHarness()
        let header = try ProxyHeader(
            version: .v2,
            addresses: .unix(
                source: .init(bytes: ByteBuffer(bytes: [0] + Array("abstract".utf8))), destination: .init(path: "/b")))
        try harness.send(Array(try header.encoded().readableBytesView))
        #expect(harness.failure()?.reason == .unusableAddress)
        #expect(harness.failure().map { "\($0.underlying!)" } == "UNIX address \"\\0abstract\" has a NUL byte (an abstract socket name)")
        #expect(!harness.channel.isActive)
    }

    @Test func unixAddressesBecomeSocketAddresses() throws {
        let harness = try ServerHarness()
        let header = try ProxyHeader(version: .v2, addresses: .unix(source: .init(path: "/run/a.sock"), destination: .init(path: "/run/b.sock")))
        try harness.send(Array(try header.encoded().readableBytesView))
        let info = try harness.handler.connectionInfo.wait()
        #expect(info.source == (try SocketAddress(unixDomainSocketPath: "/run/a.sock")))
    }

    /// Added to a channel that is already active: starts at once and does not replay channelActive.
    @Test func addedToAnActiveChannel() throws {
        let channel = EmbeddedChannel()
        try channel.connect(to: ServerHarness.proxy).wait()
        let handler = ProxyProtocolServerHandler()
        let recorder = ProxyEventRecorder()
        try channel.pipeline.syncOperations.addHandlers([handler, recorder])
        try channel.writeInbound(ByteBuffer(string: Self.v1Line + "x"))
        let info = try handler.connectionInfo.wait()
        #expect(recorder.events == [.user(info), .read("x")])
    }

    @Test func userEventsWhileWaitingPassThrough() throws {
        let harness = try ServerHarness()
        harness.channel.pipeline.fireUserInboundEventTriggered("custom")
        #expect(harness.recorder.events == [.event("custom")])
        #expect(harness.channel.isActive)
    }

    /// Removed by another handler before a header: refused as such, not as a close.
    @Test func removedBeforeHeader() throws {
        let harness = try ServerHarness()
        try harness.send("PROXY TCP4")
        try harness.channel.pipeline.syncOperations.removeHandler(harness.handler).wait()
        #expect(harness.failure()?.reason == .removedBeforeHeader)
        #expect(harness.failure()?.receivedBytes == 10)
    }

    /// The observer sees each refusal once, with the same error as the future.
    @Test func onRefusalRunsOnceBeforeTheClose() throws {
        final class Box: @unchecked Sendable { var errors: [ProxyProtocolError] = [] }
        let box = Box()
        let channel = EmbeddedChannel()
        let handler = ProxyProtocolServerHandler { box.errors.append($0) }
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: ServerHarness.proxy).wait()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n"))
        channel.pipeline.fireChannelInactive()
        #expect(box.errors.map(\.reason) == [.invalidHeader])
        #expect(box.errors.first?.underlying as? ProxyHeaderError == ProxyHeaderError(.invalidSignature, at: 0))
    }
}
