import NIOCore
import NIOEmbedded
import NIOProxyProtocol
import ProxyProtocol
import Testing

/// Writes a greeting as soon as the channel is active, like a TLS client starting its handshake.
final class GreetOnActive: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "hello")), promise: nil)
        context.fireChannelActive()
    }
}

@Suite struct ClientHandlerTests {
    static let header = ProxyHeader(
        version: .v1,
        addresses: .inet(
            source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 51234), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)))

    func outbound(_ channel: EmbeddedChannel) throws -> [String] {
        var writes: [String] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
            writes.append(String(buffer: buffer))
        }
        return writes
    }

    @Test func headerPrecedesWritesMadeOnActive() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([try ProxyProtocolClientHandler(header: Self.header), GreetOnActive()])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        #expect(try outbound(channel) == ["PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n", "hello"])
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: ProxyProtocolClientHandler.self) }
    }

    @Test func sendsAtOnceOnAnActiveChannel() throws {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.addHandler(try ProxyProtocolClientHandler(header: .local))
        try channel.writeAndFlush(ByteBuffer(string: "after")).wait()
        let writes = try outbound(channel)
        #expect(writes.count == 2)
        #expect(writes.last == "after")
        #expect(Array(writes.first!.utf8).count == 16)
    }

    @Test func writesBeforeActiveWaitBehindTheHeader() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(try ProxyProtocolClientHandler(header: Self.header))
        channel.write(ByteBuffer(string: "early"), promise: nil)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.flush()
        #expect(try outbound(channel) == ["PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n", "early"])
    }

    @Test func refusesHeadersTheVersionCannotCarry() {
        #expect(throws: ProxyHeaderEncodingError(.v1CannotSendLocal)) {
            try ProxyProtocolClientHandler(header: ProxyHeader(version: .v1, command: .local, addresses: .unspecified))
        }
    }

    /// TLVs of `length` wire bytes: 35,000-byte TLVs and one for the rest.
    static func tlvs(length: Int) throws -> ProxyTLVs {
        var tlvs = ProxyTLVs()
        var remaining = length
        while remaining > 0 {
            let wireLength = min(remaining, 35_000)
            tlvs.append(try ProxyTLV(type: .init(0xE1), value: ByteBuffer(repeating: 0x41, count: wireLength - 3)))
            remaining -= wireLength
        }
        return tlvs
    }

    /// The connection's addresses are not known until it is active: TLVs that could not go
    /// beside IPv6 addresses are refused when the handler is made, never sent or trapped on.
    @Test func refusesTLVsThatCannotFitBesideAnyAddresses() throws {
        // One 70,000-byte TLV cannot even be made; TLVs of 70,000 bytes together can.
        #expect(throws: ProxyHeaderEncodingError(.tlvValueTooLong(type: .init(0xE1), length: 70_000, maximum: 65_535))) {
            try ProxyTLV(type: .init(0xE1), value: ByteBuffer(repeating: 0x41, count: 70_000))
        }
        let tooLong = try Self.tlvs(length: 70_000)
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "2001:db8::2", port: 2000)).wait()
        #expect(throws: ProxyHeaderEncodingError(.tlvsTooLong(length: 70_000, maximum: 65_499))) {
            try channel.pipeline.syncOperations.addHandler(try ProxyProtocolClientHandler(version: .v2, tlvs: tooLong))
        }
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        #expect(channel.isActive)
        let atTheLimit = try Self.tlvs(length: 65_499)
        #expect(throws: ProxyHeaderEncodingError(.tlvsTooLong(length: 65_506, maximum: 65_499))) {
            try ProxyProtocolClientHandler(version: .v2, tlvs: atTheLimit, appendingCRC32C: true)
        }
        #expect(
            ProxyHeaderEncodingError(.tlvsTooLong(length: 70_000, maximum: 65_499)).description
                == "TLVs of 70000 bytes are 4501 over the maximum of 65499 that a v2 header with IPv6 addresses leaves them")
    }

    /// TLVs at the limit go out on an IPv6 connection as a 65,535-byte body; a CRC32C TLV the
    /// TLVs already carry is filled in, not appended, so it needs no more room.
    @Test(arguments: [false, true])
    func sendsTLVsAtTheLimit(carryingChecksum: Bool) throws {
        var tlvs = try Self.tlvs(length: 65_499 - (carryingChecksum ? 7 : 0))
        if carryingChecksum { tlvs.append(.crc32c) }
        let channel = EmbeddedChannel()
        channel.localAddress = try SocketAddress(ipAddress: "2001:db8::1", port: 1000)
        try channel.pipeline.syncOperations.addHandler(
            try ProxyProtocolClientHandler(version: .v2, tlvs: tlvs, appendingCRC32C: carryingChecksum))
        try channel.connect(to: SocketAddress(ipAddress: "2001:db8::2", port: 2000)).wait()
        let header = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(header.readableBytes == ProxyHeader.maximumV2Length)
        guard case .complete(let parsed, _) = try ProxyHeaderParser().parse(header) else {
            Issue.record("expected a complete header")
            return
        }
        #expect(parsed.source == ProxyEndpoint(ProxyIPAddress("2001:db8::1")!, port: 1000))
        #expect(parsed.tlvs.bytes.readableBytes == 65_499)
        #expect(channel.isActive)
    }

    @Test func addressesFromSocketAddresses() throws {
        let v4 = ProxyAddresses(
            source: try SocketAddress(ipAddress: "192.0.2.1", port: 1), destination: try SocketAddress(ipAddress: "192.0.2.2", port: 2))
        #expect(v4 == .inet(source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 1), destination: .init(ProxyIPv4Address(192, 0, 2, 2), port: 2)))
        let mixed = ProxyAddresses(
            source: try SocketAddress(ipAddress: "192.0.2.1", port: 1), destination: try SocketAddress(ipAddress: "::1", port: 2))
        #expect(mixed == .inet6(source: .init(ProxyIPv6Address("::ffff:192.0.2.1")!, port: 1), destination: .init(ProxyIPv6Address("::1")!, port: 2)))
        #expect(
            ProxyAddresses(source: try SocketAddress(unixDomainSocketPath: "/a"), destination: try SocketAddress(ipAddress: "::1", port: 2)) == nil)
    }
}
