import NIOCore

extension ChannelHandlerContext {
    /// Closes the channel once every write queued before this call has been sent. Writes complete
    /// in order, so an empty write's completion marks that point.
    func closeAfterPendingWrites() {
        writeAndFlush(NIOAny(ByteBuffer())).assumeIsolated().whenComplete { [self] _ in
            close(promise: nil)
        }
    }
}
