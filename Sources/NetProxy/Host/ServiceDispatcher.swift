import Logging
import NIOCore
import NIOProxyProtocol

/// Hands a connection to its service once it is ready: at once on a regular port, after the
/// PROXY header (and TLS, where configured) on a PROXY port, whose handler holds `channelActive`
/// back until then.
final class ServiceDispatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let service: NetProxyService?
    private let connectionGuard: ConnectionGuard
    private let sourceLimit: Int
    private let logger: Logger
    private let metrics: HostMetrics
    private let asyncConnections: AsyncStream<AsyncServiceConnection>.Continuation

    /// - Parameters:
    ///   - service: `nil` for an unmapped PROXY port: the connection is closed.
    ///   - sourceLimit: `max_connections_per_source` for this connection's client.
    ///   - asyncConnections: Where connections to async services go, for the host to run.
    init(
        service: NetProxyService?, guard connectionGuard: ConnectionGuard, sourceLimit: Int, logger: Logger, metrics: HostMetrics,
        asyncConnections: AsyncStream<AsyncServiceConnection>.Continuation
    ) {
        self.service = service
        self.connectionGuard = connectionGuard
        self.sourceLimit = sourceLimit
        self.logger = logger
        self.metrics = metrics
        self.asyncConnections = asyncConnections
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        guard let peer = channel.remoteAddress else {
            context.close(promise: nil)
            return
        }
        let proxy = context.pipeline.syncOperations.proxiedConnectionInfo
        let source = proxy?.source ?? peer
        let port = channel.localAddress?.port ?? 0
        if let proxy { metrics.proxied(proxy.header) }
        connectionGuard.startIdleClock()
        if let record = connectionGuard.record {
            record.client = source
            record.proxied = proxy != nil
            record.service = service?.name
        }
        // The client is known now: on a PROXY port only once the header has arrived.
        guard connectionGuard.admitSource(source, limit: sourceLimit) else {
            connectionGuard.listener.limited(
                .maxConnectionsPerSource,
                "connection from \(source.displayText)\(proxy == nil ? "" : " (through \(peer.displayText))") closed: it holds \(sourceLimit) connection(s), its max_connections_per_source"
            )
            connectionGuard.record?.ended("refused", reason: "max_connections_per_source")
            context.close(promise: nil)
            return
        }
        guard let service else {
            logger.warning("closing connection on unmapped PROXY port \(port): proxy \(peer.displayText), client \(source.displayText)")
            metrics.rejected(reason: "unmapped_port")
            connectionGuard.record?.ended("refused", reason: "unmapped_port")
            context.close(promise: nil)
            return
        }
        let info = ConnectionInfo(
            service: service.name, port: port, peer: peer, source: source,
            destination: proxy?.destination ?? channel.localAddress, proxy: proxy
        )
        guard service.take(channel, info, asyncConnections: asyncConnections, logger: logger) else {
            context.close(promise: nil)
            return
        }
        // Per connection, so at debug: at the default level a busy host would spend more on its
        // log than on its connections.
        if let proxy {
            logger.debug(
                "connection handed to \(service.name) on port \(port): proxy \(peer.displayText), client \(source.displayText)\(proxy.carriesAddresses ? "" : " (\(proxy.header.command == .local ? "LOCAL" : "no addresses in header"))")",
                metadata: info.loggerMetadata
            )
        } else {
            logger.debug("connection handed to \(service.name) on port \(port): client \(source.displayText)", metadata: info.loggerMetadata)
        }
        context.fireChannelActive()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

extension NetProxyService {
    /// Hands `channel` to the service (its handlers go to the end of the pipeline); `false` if
    /// it could not take it, and the connection must close.
    func take(
        _ channel: Channel, _ info: ConnectionInfo, asyncConnections: AsyncStream<AsyncServiceConnection>.Continuation, logger: Logger
    ) -> Bool {
        if let idleTimeout, let connectionGuard = ConnectionGuard.find(in: channel.pipeline.syncOperations) {
            connectionGuard.idleTimeout = idleTimeout
        }
        do {
            switch kind {
            case .channel(let initializer):
                try initializer(channel, info)
            case .async(let handler):
                let asyncChannel = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                let connection = AsyncServiceConnection(channel: asyncChannel, info: info, handler: handler)
                // Not enqueued: the host is shutting down, and nothing will run the service.
                guard case .enqueued = asyncConnections.yield(connection) else { return false }
            }
            return true
        } catch {
            logger.error("service \(name) could not take the connection: \(error)", metadata: info.loggerMetadata)
            return false
        }
    }
}
