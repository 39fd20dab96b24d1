import HummingbirdCore
import Logging
import NIOCore
import NIOProxyProtocol

/// A Hummingbird child channel that reads a PROXY header before the channel it wraps sees a byte.
///
/// The header handler goes first in the pipeline, before TLS and HTTP decoding. A connection
/// that is refused (untrusted peer, invalid header, timeout) is closed without reaching the base
/// channel. For an accepted one, ``ProxiedConnection/current`` holds the header's information
/// while the base channel handles it, which is where request contexts are made.
public struct ProxyProtocolChannel<BaseChannel: ServerChildChannel>: ServerChildChannel {
    /// The base channel's value and the outcome of the header.
    public struct Value: ServerChildChannelValue {
        /// What the base channel set up.
        public let base: BaseChannel.Value
        /// Succeeds once the header is accepted; fails if the connection is refused.
        public let connectionInfo: EventLoopFuture<ProxiedConnectionInfo>
        /// The child channel.
        public var channel: any Channel { base.channel }
    }

    private let baseChannel: BaseChannel
    private let configuration: ProxyProtocolConfiguration

    /// Wraps `baseChannel`; headers are read as `configuration` says.
    public init(_ baseChannel: BaseChannel, configuration: ProxyProtocolConfiguration) {
        self.baseChannel = baseChannel
        self.configuration = configuration
    }

    /// Puts the header handler first, then sets up the base channel behind it.
    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let handler = ProxyProtocolServerHandler(configuration: configuration) { error in
                logger.debug("refused \(error)")
            }
            try channel.pipeline.syncOperations.addHandler(handler)
            return handler.connectionInfo
        }.flatMap { connectionInfo in
            baseChannel.setup(channel: channel, logger: logger).map { Value(base: $0, connectionInfo: connectionInfo) }
        }
    }

    /// Waits for the header, then lets the base channel handle the connection with
    /// ``ProxiedConnection/current`` set. A refused connection is already closed: nothing to do.
    public func handle(value: Value, logger: Logger) async {
        guard let info = try? await value.connectionInfo.get() else { return }
        await ProxiedConnection.$current.withValue(info) {
            await baseChannel.handle(value: value.base, logger: logger)
        }
    }
}

extension ProxyProtocolChannel: HTTPChannelHandler where BaseChannel: HTTPChannelHandler {
    /// The base channel's responder.
    public var responder: HTTPChannelHandler.Responder { baseChannel.responder }
}

/// The PROXY information of the connection being served.
public enum ProxiedConnection {
    /// Set while a ``ProxyProtocolChannel`` connection is handled; `nil` elsewhere.
    @TaskLocal public static var current: ProxiedConnectionInfo?
}

extension HTTPServerBuilder {
    /// An HTTP/1.1 server that reads a PROXY header first on every connection.
    ///
    /// ```swift
    /// let app = Application(
    ///     router: Router(context: ProxiedRequestContext.self),
    ///     server: .proxyProtocol(configuration: .init(trustedProxies: try .init(parsing: ["10.0.0.0/8"])))
    /// )
    /// ```
    public static func proxyProtocol(
        configuration: ProxyProtocolConfiguration, http1: HTTP1Channel.Configuration = .init()
    ) -> HTTPServerBuilder {
        proxyProtocol(configuration: configuration) { responder in
            HTTP1Channel(responder: responder, configuration: http1)
        }
    }

    /// A server whose child channel, built by `makeChannel`, sits behind a PROXY header: for
    /// example TLS right after the header,
    /// `{ try TLSChannel(HTTP1Channel(responder: $0), tlsConfiguration: tls) }`.
    public static func proxyProtocol<Base: ServerChildChannel>(
        configuration: ProxyProtocolConfiguration,
        _ makeChannel: @escaping @Sendable (@escaping HTTPChannelHandler.Responder) throws -> Base
    ) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            ProxyProtocolChannel(try makeChannel(responder), configuration: configuration)
        }
    }
}
