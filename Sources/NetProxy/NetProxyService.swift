import NIOCore

/// A named service: what the host does with a connection once it is handed on.
///
/// The host calls ``start`` on the connection's event loop, after the PROXY header (if any) has
/// been accepted and before the service sees `channelActive` or a byte; it adds the service's
/// handlers to the end of the pipeline. The channel then behaves as if the client had connected
/// directly: the first byte read is the client's first byte.
///
/// ## When the client stops sending
///
/// By default, as in SwiftNIO, the connection closes as soon as the client closes its sending
/// side: the service sees `channelInactive`, and writes still queued are dropped. A service that
/// answers after the client has finished sending (an echo, a request read to its end) sets
/// ``allowsHalfClosure``: it then gets `ChannelEvent.inputClosed` as a user inbound event and
/// the connection stays open until the service closes it. Such a service must close on that
/// event (once its last write has completed), or the connection is never closed and keeps its
/// descriptor.
public struct NetProxyService: Sendable {
    /// The name the configuration uses (`<name>_ports`, `proxy_port_mappings`).
    public let name: String
    /// Whether the service gets `ChannelEvent.inputClosed` when the client closes its sending side,
    /// instead of the connection closing at once. Off by default.
    public let allowsHalfClosure: Bool
    /// Sets the connection up for the service.
    public let start: @Sendable (Channel, ConnectionInfo) throws -> Void

    /// A service from a channel initializer.
    ///
    /// - Parameters:
    ///   - name: The name the configuration uses.
    ///   - allowsHalfClosure: Deliver the client's half-close as `ChannelEvent.inputClosed`
    ///     instead of closing the connection; the service must then close it.
    ///   - channelInitializer: Adds the service's handlers; runs on the connection's event loop.
    public init(
        name: String,
        allowsHalfClosure: Bool = false,
        channelInitializer: @escaping @Sendable (Channel, ConnectionInfo) throws -> Void
    ) {
        self.name = name
        self.allowsHalfClosure = allowsHalfClosure
        self.start = channelInitializer
    }

    /// A service written as an async function over the connection's bytes. The connection closes
    /// when the function returns or throws, once everything it wrote has been sent.
    ///
    /// - Parameters:
    ///   - name: The name the configuration uses.
    ///   - allowsHalfClosure: When `true`, the inbound stream ends when the client closes its
    ///     sending side and the function may go on writing; when `false` (the default) the
    ///     connection closes at that point.
    ///   - handler: The service; the connection closes when it returns.
    public static func async(
        name: String,
        allowsHalfClosure: Bool = false,
        _ handler: @escaping @Sendable (
            NIOAsyncChannelInboundStream<ByteBuffer>, NIOAsyncChannelOutboundWriter<ByteBuffer>, ConnectionInfo
        ) async throws -> Void
    ) -> NetProxyService {
        NetProxyService(name: name, allowsHalfClosure: allowsHalfClosure) { channel, info in
            let asyncChannel = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            Task {
                try? await asyncChannel.executeThenClose { inbound, outbound in
                    try await handler(inbound, outbound, info)
                    // executeThenClose closes at once, which drops writes still queued. Writes
                    // complete in order, so once this empty one has, everything before it is sent.
                    try await channel.writeAndFlush(ByteBuffer())
                }
            }
        }
    }
}
