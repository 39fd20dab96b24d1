import NIOCore

/// A named service: what the host does with a connection once it is handed on.
///
/// The host calls ``start`` on the connection's event loop, after the PROXY header (if any) has
/// been accepted and before the service sees `channelActive` or a byte; it adds the service's
/// handlers to the end of the pipeline. The channel then behaves as if the client had connected
/// directly: the first byte read is the client's first byte.
public struct NetProxyService: Sendable {
    /// The name the configuration uses (`<name>_ports`, `proxy_port_mappings`).
    public let name: String
    /// Sets the connection up for the service.
    public let start: @Sendable (Channel, ConnectionInfo) throws -> Void

    /// A service from a channel initializer.
    public init(name: String, channelInitializer: @escaping @Sendable (Channel, ConnectionInfo) throws -> Void) {
        self.name = name
        self.start = channelInitializer
    }

    /// A service written as an async function over the connection's bytes. The connection closes
    /// when the function returns or throws.
    public static func async(
        name: String,
        _ handler: @escaping @Sendable (
            NIOAsyncChannelInboundStream<ByteBuffer>, NIOAsyncChannelOutboundWriter<ByteBuffer>, ConnectionInfo
        ) async throws -> Void
    ) -> NetProxyService {
        NetProxyService(name: name) { channel, info in
            let asyncChannel = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            Task {
                try? await asyncChannel.executeThenClose { inbound, outbound in
                    try await handler(inbound, outbound, info)
                }
            }
        }
    }
}
