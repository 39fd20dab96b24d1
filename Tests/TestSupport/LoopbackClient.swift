import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A plain client for tests: connects from a chosen loopback address (or to a UNIX socket),
/// sends, and collects everything until the server closes. The one way tests hold a simple
/// conversation with a server, in every test target.
public enum LoopbackClient {
    /// Connects to `host:port` from `source` (any port), with `handlers` first in the pipeline;
    /// the collector's `received` completes once `expecting` bytes have arrived.
    public static func connect(
        to port: Int, host: String = "127.0.0.1", from source: String = "127.0.0.1", expecting count: Int? = nil,
        handlers: @escaping @Sendable (Channel) throws -> Void = { _ in }
    ) async throws -> (Channel, ByteCollector) {
        let source = try SocketAddress(ipAddress: source, port: 0)
        return try await connect(expecting: count, handlers: handlers) { $0.bind(to: source).connect(host: host, port: port) }
    }

    /// The server had not closed after ``exchangeTimeout``.
    public struct NoEnd: Error, CustomStringConvertible {
        public var received: [UInt8]
        public var description: String { "the server had not closed after \(LoopbackClient.exchangeTimeout) (\(received.count) byte(s) received)" }
    }

    /// How long an exchange waits for the server to close: no test may hang on a server that
    /// stops answering.
    public static let exchangeTimeout = TimeAmount.seconds(60)

    /// Sends `bytes` (then half-closes if asked) and returns everything read until the server
    /// closes. The server may close before it has taken everything (a refused header): what it
    /// sent until then is its answer.
    public static func exchange(
        port: Int, host: String = "127.0.0.1", from source: String = "127.0.0.1", send bytes: [UInt8],
        halfClose: Bool = false, handlers: @escaping @Sendable (Channel) throws -> Void = { _ in }
    ) async throws -> [UInt8] {
        let source = try SocketAddress(ipAddress: source, port: 0)
        return try await exchange(send: bytes, halfClose: halfClose, handlers: handlers) { $0.bind(to: source).connect(host: host, port: port) }
    }

    /// ``exchange(port:host:from:send:halfClose:handlers:)`` with the UNIX socket at `path`.
    public static func exchange(
        unixSocket path: String, send bytes: [UInt8], halfClose: Bool = false, handlers: @escaping @Sendable (Channel) throws -> Void = { _ in }
    ) async throws -> [UInt8] {
        try await exchange(send: bytes, halfClose: halfClose, handlers: handlers) { $0.connect(unixDomainSocketPath: path) }
    }

    /// Whether `error`, thrown by a connect, says the connection was refused: nothing listens
    /// there.
    public static func isRefused(_ error: any Error) -> Bool {
        if let error = error as? IOError { return error.errnoCode == ECONNREFUSED }
        if let error = error as? NIOConnectionError {
            return !error.connectionErrors.isEmpty && error.connectionErrors.allSatisfy { isRefused($0.error) }
        }
        return false
    }

    /// Connects with `connect`; then, on the channel's event loop (a header timeout may be
    /// short, and the tasks of a busy test run slow to resume), `then`.
    private static func connect(
        expecting count: Int?, handlers: @escaping @Sendable (Channel) throws -> Void,
        then: @escaping @Sendable (Channel) -> EventLoopFuture<Void> = { $0.eventLoop.makeSucceededVoidFuture() },
        _ connect: (ClientBootstrap) -> EventLoopFuture<Channel>
    ) async throws -> (Channel, ByteCollector) {
        let group = MultiThreadedEventLoopGroup.singleton
        let collectorBox = NIOLockedValueBox<ByteCollector?>(nil)
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try handlers(channel)
                    let collector = ByteCollector(eventLoop: channel.eventLoop, expecting: count)
                    collectorBox.withLockedValue { $0 = collector }
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
        let channel = try await connect(bootstrap).flatMap { channel in then(channel).map { channel } }.get()
        return (channel, collectorBox.withLockedValue { $0 }!)
    }

    private static func exchange(
        send bytes: [UInt8], halfClose: Bool, handlers: @escaping @Sendable (Channel) throws -> Void,
        _ connect: (ClientBootstrap) -> EventLoopFuture<Channel>
    ) async throws -> [UInt8] {
        let timedOut = NIOLockedValueBox(false)
        let (channel, collector) = try await self.connect(
            expecting: nil, handlers: handlers,
            then: { channel in
                // Failures to send are not the exchange's: the server may close before it has
                // taken everything.
                let timeout = channel.eventLoop.scheduleTask(in: exchangeTimeout) {
                    timedOut.withLockedValue { $0 = true }
                    channel.close(promise: nil)
                }
                channel.closeFuture.whenComplete { _ in timeout.cancel() }
                let sent = bytes.isEmpty ? channel.eventLoop.makeSucceededVoidFuture() : channel.writeAndFlush(ByteBuffer(bytes: bytes))
                return sent.flatMap { halfClose ? channel.close(mode: .output) : channel.eventLoop.makeSucceededVoidFuture() }
                    .recover { _ in }
            }, connect)
        try await collector.closed.get()
        try? await channel.close()
        if timedOut.withLockedValue({ $0 }) { throw NoEnd(received: collector.bytes) }
        return collector.bytes
    }
}
