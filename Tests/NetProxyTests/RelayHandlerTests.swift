import NIOCore
import NIOEmbedded
import Testing

@testable import NetProxy

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Two embedded channels on one loop joined by `RelayHandler.pair()`: the client's side and the
/// target's side of a forward.
struct RelayPair {
    let loop = EmbeddedEventLoop()
    let client: EmbeddedChannel
    let target: EmbeddedChannel
    let clientSocket = SocketSide()
    let targetSocket = SocketSide()

    init() throws {
        let (clientRelay, targetRelay) = RelayHandler.pair()
        client = EmbeddedChannel(loop: loop)
        target = EmbeddedChannel(loop: loop)
        try client.pipeline.syncOperations.addHandlers(clientSocket, clientRelay)
        try target.pipeline.syncOperations.addHandlers(targetSocket, targetRelay)
        try client.activate()
        try target.activate(peer: "192.0.2.80", port: 80)
    }
}

/// `RelayHandler`'s relaying, backpressure, half-closure and closing, step by step.
@Suite struct RelayHandlerTests {
    /// The two channels and what each sends to its socket. The loop is made on the test's thread.
    static func relay() throws -> (client: EmbeddedChannel, target: EmbeddedChannel, clientSocket: SocketSide, targetSocket: SocketSide) {
        let pair = try RelayPair()
        return (pair.client, pair.target, pair.clientSocket, pair.targetSocket)
    }

    static func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    /// What one side reads goes out on the other once, in order, at the end of the read; nothing
    /// comes back on the side it was read from.
    @Test func bytesPassOnceInOrderBothWays() throws {
        let (client, target, clientSocket, targetSocket) = try Self.relay()
        client.pipeline.fireChannelRead(Self.bytes("one "))
        client.pipeline.fireChannelRead(Self.bytes("two"))
        // Written, not yet flushed: the flush comes with the end of the read.
        #expect(try target.sentBuffers() == [])
        client.pipeline.fireChannelReadComplete()
        target.pipeline.fireChannelRead(Self.bytes("answer"))
        target.pipeline.fireChannelReadComplete()
        client.pipeline.fireChannelRead(Self.bytes(" three"))
        client.pipeline.fireChannelReadComplete()

        #expect(try target.sentBuffers() == ["one ", "two", " three"])
        #expect(try client.sentBuffers() == ["answer"])
        #expect(targetSocket.events == ["write 4", "write 3", "flush", "write 6", "flush"])
        #expect(clientSocket.events == ["write 6", "flush"])
        #expect(client.isActive && target.isActive)
    }

    /// The client's half-close reaches the target once what it sent before has gone out; the
    /// target may still answer, and its own half-close closes both.
    @Test func aHalfClosePassesOnAndBothHalvesCloseTheRelay() throws {
        let (client, target, clientSocket, targetSocket) = try Self.relay()
        client.pipeline.fireChannelRead(Self.bytes("request"))
        client.pipeline.fireChannelReadComplete()
        client.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        // The empty write marks the point after which the output is closed.
        #expect(targetSocket.events == ["write 7", "flush", "write 0", "flush", "close output"])
        #expect(try target.sentBuffers() == ["request", ""])
        #expect(client.isActive && target.isActive)

        target.pipeline.fireChannelRead(Self.bytes("reply"))
        target.pipeline.fireChannelReadComplete()
        #expect(try client.sentBuffers() == ["reply"])
        #expect(client.isActive && target.isActive)

        target.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        // Both directions done: the client's side closes, and its close closes the target's after
        // what it holds (nothing). The closes that follow (each side's own, and the target's asking
        // the same of the client's) find the channels closed: nothing reaches a socket.
        #expect(
            clientSocket.events == [
                "write 5", "flush", "write 0", "flush", "close output", "close all", "closed: write 0", "closed: flush", "closed: close all",
            ])
        #expect(
            targetSocket.events == ["write 7", "flush", "write 0", "flush", "close output", "write 0", "flush", "close all", "closed: close all"])
        #expect(!client.isActive && !target.isActive)
    }

    /// A side reads only while its partner can write: a `read` asked while the partner is not
    /// writable is held, and made once it is.
    @Test func aPartnerThatCannotWriteStopsReading() throws {
        let (client, target, clientSocket, targetSocket) = try Self.relay()
        client.read()
        #expect(clientSocket.events == ["read"])

        target.isWritable = false
        target.pipeline.fireChannelWritabilityChanged()
        client.read()
        client.read()
        #expect(clientSocket.events == ["read"])

        target.isWritable = true
        target.pipeline.fireChannelWritabilityChanged()
        // One held read, however many were asked for.
        #expect(clientSocket.events == ["read", "read"])
        target.pipeline.fireChannelWritabilityChanged()
        #expect(clientSocket.events == ["read", "read"])
        // The other direction was never held.
        #expect(targetSocket.events == [])
    }

    /// A clean close of one side closes the other once what it holds is sent.
    @Test func oneSideClosingClosesTheOtherAfterItsQueuedBytes() throws {
        let (client, target, _, targetSocket) = try Self.relay()
        client.pipeline.fireChannelRead(Self.bytes("last words"))
        try client.close().wait()
        #expect(try target.sentBuffers() == ["last words", ""])
        #expect(targetSocket.events == ["write 10", "write 0", "flush", "close all"])
        #expect(!target.isActive)
    }

    /// A failed side (a reset) closes the other at once: what it had not sent is dropped.
    @Test func aFailureClosesBothAtOnce() throws {
        let (client, target, _, targetSocket) = try Self.relay()
        client.pipeline.fireChannelRead(Self.bytes("unsent"))
        client.pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read"))
        #expect(!client.isActive)
        #expect(!target.isActive)
        #expect(targetSocket.events == ["write 6", "close all"])
        #expect(try target.sentBuffers() == [])
    }
}
