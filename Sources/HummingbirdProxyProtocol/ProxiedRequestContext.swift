import Hummingbird
import NIOCore
import NIOProxyProtocol

/// A request context whose remote address is the client from the PROXY header.
///
/// It conforms to `RemoteAddressRequestContext`, so `TracingMiddleware` and anything else that
/// reads `remoteAddress` sees the real client rather than the load balancer. Its logger carries
/// the client (`client`) and, behind a proxy, the proxy (`proxy`) as metadata, so the request
/// log (`LogRequestMiddleware`) and every line logged through `context.logger` name them. The
/// header's TLVs are in ``proxy``: `context.proxy?.header.tlvs.authority`.
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
        if let remoteAddress {
            logger[metadataKey: "client"] = "\(remoteAddress.displayText)"
        }
        if let proxy {
            logger[metadataKey: "proxy"] = "\(proxy.peer.displayText)"
        }
    }
}
