import NIOCore
import ProxyProtocol

/// Sends a PROXY header as the very first bytes of a connection, then leaves the pipeline.
///
/// Put it first in a client channel's pipeline, before any TLS handler: the header goes out
/// when the channel becomes active (or at once, if it already is), before `channelActive`
/// reaches the handlers after it, so it precedes a TLS handshake and anything the application
/// writes. A write that somehow comes earlier still waits behind the header.
///
/// ```swift
/// let header = ProxyHeader(version: .v2, addresses: .init(source: client, destination: server)!)
/// try channel.pipeline.syncOperations.addHandler(try ProxyProtocolClientHandler(header: header))
/// ```
public final class ProxyProtocolClientHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = NIOAny
    public typealias OutboundIn = NIOAny
    public typealias OutboundOut = ByteBuffer

    private enum Header {
        case encoded(ByteBuffer)
        case fromChannel(ProxyVersion, ProxyTLVs, appendingCRC32C: Bool)
    }

    private let header: Header
    private var sent = false

    /// Sends `header`. It is encoded now, so a header the version cannot carry fails here rather
    /// than on the connection.
    public init(header: ProxyHeader, appendingCRC32C: Bool = false) throws(ProxyHeaderEncodingError) {
        self.header = .encoded(try header.encoded(appendingCRC32C: appendingCRC32C))
    }

    /// Sends a `PROXY` header with the connection's own addresses (local as source, remote as
    /// destination), as `curl --haproxy-protocol` does; `UNKNOWN`/`UNSPEC` for UNIX sockets.
    public init(version: ProxyVersion, tlvs: ProxyTLVs = ProxyTLVs(), appendingCRC32C: Bool = false) throws(ProxyHeaderEncodingError) {
        if version == .v1 && !tlvs.isEmpty { throw ProxyHeaderEncodingError(.v1CannotSendTLVs) }
        self.header = .fromChannel(version, tlvs, appendingCRC32C: appendingCRC32C)
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive {
            sendHeader(context: context)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    public func channelActive(context: ChannelHandlerContext) {
        sendHeader(context: context)
        context.fireChannelActive()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        sendHeader(context: context, flush: false)
        context.write(data, promise: promise)
    }

    private func sendHeader(context: ChannelHandlerContext, flush: Bool = true) {
        guard !sent else { return }
        sent = true
        context.write(wrapOutboundOut(encodedHeader(for: context.channel)), promise: nil)
        if flush { context.flush() }
    }

    private func encodedHeader(for channel: Channel) -> ByteBuffer {
        switch header {
        case .encoded(let bytes):
            return bytes
        case .fromChannel(let version, let tlvs, let appendingCRC32C):
            var addresses = ProxyAddresses.unspecified
            if let local = channel.localAddress, let remote = channel.remoteAddress {
                addresses = ProxyAddresses(source: local, destination: remote) ?? .unspecified
            }
            let header = ProxyHeader(version: version, addresses: addresses, tlvs: tlvs)
            // Cannot fail: v1 without TLVs and TCP addresses, or v2 with addresses of one family.
            return try! header.encoded(appendingCRC32C: appendingCRC32C && version == .v2)
        }
    }
}

@available(*, unavailable)
extension ProxyProtocolClientHandler: Sendable {}
