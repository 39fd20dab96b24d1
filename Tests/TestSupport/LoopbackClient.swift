import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A plain TCP client for tests: connects from a chosen loopback address, sends, and collects
/// everything until the server closes.
public enum LoopbackClient {
    /// Connects to `host:port` from `source` (any port), with `handlers` first in the pipeline;
    /// the collector's `received` completes once `expecting` bytes have arrived.
    public static func connect(
        to port: Int, host: String = "127.0.0.1", from source: String = "127.0.0.1", expecting count: Int? = nil,
        handlers: @escaping @Sendable (Channel) throws -> Void = { _ in }
    ) async throws -> (Channel, ByteCollector) {
        let group = MultiThreadedEventLoopGroup.singleton
        let collectorBox = NIOLockedValueBox<ByteCollector?>(nil)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .bind(to: try SocketAddress(ipAddress: source, port: 0))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try handlers(channel)
                    let collector = ByteCollector(eventLoop: channel.eventLoop, expecting: count)
                    collectorBox.withLockedValue { $0 = collector }
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: host, port: port).get()
        return (channel, collectorBox.withLockedValue { $0 }!)
    }

    /// Sends `bytes` (then half-closes if asked) and returns everything read until the server
    /// closes.
    public static func exchange(
        port: Int, host: String = "127.0.0.1", from source: String = "127.0.0.1", send bytes: [UInt8],
        halfClose: Bool = false, handlers: @escaping @Sendable (Channel) throws -> Void = { _ in }
    ) async throws -> [UInt8] {
        let (channel, collector) = try await connect(to: port, host: host, from: source, handlers: handlers)
        if !bytes.isEmpty {
            try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
        }
        if halfClose {
            try await channel.close(mode: .output)
        }
        try await collector.closed.get()
        try? await channel.close()
        return collector.bytes
    }
}
