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
