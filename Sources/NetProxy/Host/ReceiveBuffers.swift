import NIOCore

/// How large a buffer each connection's first read gets.
///
/// A SwiftNIO channel keeps the buffer of its last read for the next one, for as long as it is
/// open. With SwiftNIO's default first size, 2,048 bytes, an idle connection that has only sent
/// a PROXY header (28 to about 250 bytes) holds 2 KiB it will not use. Starting at 512 bytes
/// covers a header with a few TLVs in one read; a connection that carries more grows its buffer
/// at its first full read (to 8 KiB, then up to SwiftNIO's 64 KiB), as before.
enum ReceiveBuffers {
    static let allocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)

    /// Gives `channel` the host's first read size; a channel without synchronous options keeps
    /// SwiftNIO's default.
    static func apply(to channel: Channel) throws {
        try channel.syncOptions?.setOption(.recvAllocator, value: allocator)
    }
}
