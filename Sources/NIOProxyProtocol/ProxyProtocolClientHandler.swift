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
    ///
    /// The addresses are known only once the channel is active, so the TLVs are checked now
    /// against the largest address block, IPv6's: whatever the connection, the header can be sent.
    ///
    /// - Throws: `ProxyHeaderEncodingError.Kind.v1CannotSendTLVs` for TLVs in a version 1
    ///   header; `ProxyHeaderEncodingError.Kind.tlvsTooLong(length:maximum:)` when the TLVs
    ///   (and the CRC32C TLV to append) do not fit a version 2 header with IPv6 addresses.
    public init(version: ProxyVersion, tlvs: ProxyTLVs = ProxyTLVs(), appendingCRC32C: Bool = false) throws(ProxyHeaderEncodingError) {
        switch version {
        case .v1:
            if !tlvs.isEmpty { throw ProxyHeaderEncodingError(.v1CannotSendTLVs) }
        case .v2:
            try Self.checkRoom(for: tlvs, appendingCRC32C: appendingCRC32C)
        }
        self.header = .fromChannel(version, tlvs, appendingCRC32C: appendingCRC32C)
    }

    /// Refuses TLVs that would not fit a version 2 header beside IPv6 addresses.
    private static func checkRoom(for tlvs: ProxyTLVs, appendingCRC32C: Bool) throws(ProxyHeaderEncodingError) {
        // The encoder fills in a CRC32C TLV the header already carries, and appends one otherwise.
        let carriesChecksum = tlvs.contains { $0.type == .crc32c && $0.value.readableBytes == 4 }
        let appendedChecksumLength = appendingCRC32C && !carriesChecksum ? 3 + 4 : 0
        let length = tlvs.bytes.readableBytes + appendedChecksumLength
        let room = ProxyHeader.maximumV2Length - ProxyHeader.v2FixedLength - ProxyAddressFamily.inet6.addressBlockLength
        guard length <= room else { throw ProxyHeaderEncodingError(.tlvsTooLong(length: length, maximum: room)) }
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
        let bytes: ByteBuffer
        do {
            bytes = try encodedHeader(for: context.channel)
        } catch {
            // The initializers leave room for any addresses, so this is not expected; if it
            // happens, the connection closes rather than go on without its header.
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        context.write(wrapOutboundOut(bytes), promise: nil)
        if flush { context.flush() }
    }

    private func encodedHeader(for channel: Channel) throws(ProxyHeaderEncodingError) -> ByteBuffer {
        switch header {
        case .encoded(let bytes):
            return bytes
        case .fromChannel(let version, let tlvs, let appendingCRC32C):
            var addresses = ProxyAddresses.unspecified
            if let local = channel.localAddress, let remote = channel.remoteAddress {
                addresses = ProxyAddresses(source: local, destination: remote) ?? .unspecified
            }
            let header = ProxyHeader(version: version, addresses: addresses, tlvs: tlvs)
            return try header.encoded(appendingCRC32C: appendingCRC32C && version == .v2)
        }
    }
}

@available(*, unavailable)
extension ProxyProtocolClientHandler: Sendable {}
