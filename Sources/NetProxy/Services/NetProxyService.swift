import Logging
import NIOCore

/// A named service: what the host does with a connection once it is handed on.
///
/// The host calls the service's channel initializer (the closure given to
/// ``init(name:allowsHalfClosure:channelInitializer:)``) on the connection's event loop, after
/// the PROXY header (if any) has been accepted and before the service sees `channelActive` or a
/// byte; it adds the service's handlers to the end of the pipeline. The channel then behaves as
/// if the client had connected directly: the first byte read is the client's first byte.
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
    /// An async service's function.
    public typealias AsyncHandler =
        @Sendable (
            NIOAsyncChannelInboundStream<ByteBuffer>, NIOAsyncChannelOutboundWriter<ByteBuffer>, ConnectionInfo
        ) async throws -> Void

    enum Kind: Sendable {
        case channel(@Sendable (Channel, ConnectionInfo) throws -> Void)
        case async(AsyncHandler)
    }

    /// The name the configuration uses (`<name>_ports`, `proxy_port_mappings`).
    public let name: String
    /// Whether the service gets `ChannelEvent.inputClosed` when the client closes its sending side,
    /// instead of the connection closing at once. Off by default.
    public let allowsHalfClosure: Bool
    let kind: Kind
    /// The service's own `idle_timeout` (forward and multiplex services), which replaces the
    /// listener's when it takes a connection.
    var idleTimeout: TimeAmount?

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
        self.kind = .channel(channelInitializer)
    }

    /// A service written as an async function over the connection's bytes.
    ///
    /// The host runs the function in a task it owns: on shutdown it waits for the function to
    /// return (cancelling it once the grace period is over), and logs what it throws with the
    /// connection. The connection closes when the function returns or throws, once everything
    /// it wrote has been sent.
    ///
    /// - Parameters:
    ///   - name: The name the configuration uses.
    ///   - allowsHalfClosure: When `true`, the inbound stream ends when the client closes its
    ///     sending side and the function may go on writing; when `false` (the default) the
    ///     connection closes at that point.
    ///   - handler: The service; the connection closes when it returns.
    public static func async(name: String, allowsHalfClosure: Bool = false, _ handler: @escaping AsyncHandler) -> NetProxyService {
        NetProxyService(name: name, allowsHalfClosure: allowsHalfClosure, kind: .async(handler))
    }

    private init(name: String, allowsHalfClosure: Bool, kind: Kind) {
        self.name = name
        self.allowsHalfClosure = allowsHalfClosure
        self.kind = kind
    }
}

/// A connection handed to an async service, waiting for the host's task group to run it.
struct AsyncServiceConnection: Sendable {
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    let info: ConnectionInfo
    let handler: NetProxyService.AsyncHandler

    func run(logger: Logger) async {
        let rawChannel = channel.channel
        do {
            try await channel.executeThenClose { inbound, outbound in
                try await handler(inbound, outbound, info)
                // executeThenClose closes at once, which drops writes still queued. Writes
                // complete in order, so once this empty one has, everything before it is sent.
                try await rawChannel.writeAndFlush(ByteBuffer())
            }
        } catch is CancellationError {
            // The host is shutting down after its grace period.
        } catch {
            logger.warning("service \(info.service) failed: \(error)", metadata: info.loggerMetadata)
        }
    }
}
