import Hummingbird
import NIOCore
import NIOProxyProtocol

/// A request context whose remote address is the client from the PROXY header.
///
/// It conforms to `RemoteAddressRequestContext`, so `TracingMiddleware` and anything else that
/// reads `remoteAddress` sees the real client rather than the load balancer.
public struct ProxiedRequestContext: RequestContext, RemoteAddressRequestContext {
    /// Hummingbird's per-request storage.
    public var coreContext: CoreRequestContextStorage
    /// The connection's PROXY information; `nil` when the server does not read headers.
    public let proxy: ProxiedConnectionInfo?
    /// The client: the header's source, or the socket's peer without a header.
    public let remoteAddress: SocketAddress?

    /// Creates the context for a request on `source`'s connection.
    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.proxy = ProxiedConnection.current
        self.remoteAddress = proxy?.source ?? source.channel.remoteAddress
    }
}
