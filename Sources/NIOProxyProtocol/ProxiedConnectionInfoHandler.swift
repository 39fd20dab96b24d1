import NIOCore

/// Keeps a connection's ``ProxiedConnectionInfo`` in its pipeline, passing everything through.
///
/// ``ProxyProtocolServerHandler`` puts it in its own place once the header is accepted. Look it
/// up with `channel.pipeline.syncOperations.proxiedConnectionInfo` (on the event loop) or
/// `channel.pipeline.proxiedConnectionInfo()` (anywhere).
public final class ProxiedConnectionInfoHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    public typealias InboundIn = NIOAny

    /// The connection's addresses.
    public let info: ProxiedConnectionInfo

    /// Creates a handler that keeps `info`.
    public init(_ info: ProxiedConnectionInfo) {
        self.info = info
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// The connection's PROXY information, once its header has been accepted; `nil` before, or
    /// when the pipeline has no PROXY handler.
    public var proxiedConnectionInfo: ProxiedConnectionInfo? {
        (try? handler(type: ProxiedConnectionInfoHandler.self))?.info
    }
}

extension ChannelPipeline {
    /// The connection's PROXY information, once its header has been accepted; `nil` before, or
    /// when the pipeline has no PROXY handler.
    public func proxiedConnectionInfo() -> EventLoopFuture<ProxiedConnectionInfo?> {
        handler(type: ProxiedConnectionInfoHandler.self)
            .map { Optional($0.info) }
            .recover { _ in nil }
    }
}
