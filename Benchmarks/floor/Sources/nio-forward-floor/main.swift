// nio-forward-floor LISTEN_PORT=TARGET_PORT[,resend] ...
//
// The least a SwiftNIO program does for a PROXY port mapped to a forward: read a version 2
// header, connect to a target on 127.0.0.1 and relay both ways, with backpressure and
// half-closure. It takes SwiftNIO's best settings that netproxy takes (a listening socket per
// event loop with SO_REUSEPORT, 16 accepts per read, a backlog of 1024, 512-byte first reads)
// and none of netproxy's work: no trust list, deadlines, budgets, loop check, metrics, log or
// configuration. `resend` writes the client's header to the target first, as received.
//
// Benchmarks/forward.sh runs it beside netproxy: what it costs over HAProxy is SwiftNIO's and
// Swift's share of the gap; what netproxy costs over it is netproxy's own.
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads the client's version 2 header, then connects and leaves a relay in its place.
final class HeaderThenConnect: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    private let target: SocketAddress
    private let resend: Bool
    private var buffered: ByteBuffer?
    private var connecting = false
    /// The client half-closed while the target was connecting: passed on once the relay is in.
    private var inputClosed = false

    init(target: SocketAddress, resend: Bool) {
        self.target = target
        self.resend = resend
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard !connecting else {
            buffered!.writeBuffer(&bytes)
            return
        }
        if buffered == nil { buffered = bytes } else { buffered!.writeBuffer(&bytes) }
        guard let received = buffered, received.readableBytes >= 16 else { return }
        guard received.readableBytesView.prefix(12).elementsEqual(Self.signature),
            let length = received.getInteger(at: received.readerIndex + 14, as: UInt16.self)
        else {
            context.close(promise: nil)
            return
        }
        guard received.readableBytes >= 16 + Int(length) else { return }
        connect(context: context, headerLength: 16 + Int(length))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, event == .inputClosed else {
            return context.fireUserInboundEventTriggered(event)
        }
        // Before a whole header there is nothing to forward; during the connect, it waits.
        if connecting { inputClosed = true } else { context.close(promise: nil) }
    }

    private func connect(context: ChannelHandlerContext, headerLength: Int) {
        connecting = true
        let header = buffered!.readSlice(length: headerLength)!
        let (clientSide, targetSide) = Relay.pair()
        let targetHandler = NIOLoopBound(targetSide, eventLoop: context.eventLoop)
        ClientBootstrap(group: context.eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.syncOptions!.setOption(.allowRemoteHalfClosure, value: true)
                    try channel.syncOptions!.setOption(.recvAllocator, value: firstReads)
                    try channel.pipeline.syncOperations.addHandler(targetHandler.value)
                }
            }
            .connect(to: target)
            .assumeIsolated()
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    guard context.channel.isActive else { return channel.close(promise: nil) }
                    if resend { channel.write(header, promise: nil) }
                    try! context.pipeline.syncOperations.addHandler(clientSide, position: .after(self))
                    if let rest = buffered, rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
                    buffered = nil
                    context.fireChannelReadComplete()
                    if inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
                    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                case .failure:
                    context.close(promise: nil)
                }
            }
    }
}

/// One side of a relay: what one channel reads, its partner writes; a channel stops reading
/// while its partner cannot write; a half-close and a close pass across.
final class Relay: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: Relay?
    private var context: ChannelHandlerContext?
    private var readPending = false

    static func pair() -> (Relay, Relay) {
        let one = Relay()
        let other = Relay()
        one.partner = other
        other.partner = one
        return (one, other)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.context?.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.context?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.closeAfterWrites(mode: .all)
        partner = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            partner?.closeAfterWrites(mode: .output)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.readIfPending() }
    }

    func read(context: ChannelHandlerContext) {
        if partner?.context?.channel.isWritable ?? true {
            context.read()
        } else {
            readPending = true
        }
    }

    /// Closes once every byte written so far has gone out: a close, or a half-close of a channel
    /// whose input has ended, would drop what is still queued.
    private func closeAfterWrites(mode: CloseMode) {
        guard let context else { return }
        let written = context.eventLoop.makePromise(of: Void.self)
        // Writes complete in order: this empty one completes after all the others.
        context.writeAndFlush(NIOAny(ByteBuffer()), promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in context.close(mode: mode, promise: nil) }
    }

    private func readIfPending() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }
}

let firstReads = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)

var routes: [(port: Int, target: SocketAddress, resend: Bool)] = []
for argument in CommandLine.arguments.dropFirst() {
    let parts = argument.split(separator: "=")
    let target = parts.count == 2 ? parts[1].split(separator: ",") : []
    guard parts.count == 2, let port = Int(parts[0]), let targetPort = target.first.flatMap({ Int($0) }),
        target.count == 1 || (target.count == 2 && target[1] == "resend")
    else {
        print("usage: nio-forward-floor LISTEN_PORT=TARGET_PORT[,resend] ...")
        exit(2)
    }
    routes.append((port, try SocketAddress(ipAddress: "127.0.0.1", port: targetPort), target.count == 2))
}
guard !routes.isEmpty else {
    print("usage: nio-forward-floor LISTEN_PORT=TARGET_PORT[,resend] ...")
    exit(2)
}

let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
var listeners: [Channel] = []
for route in routes {
    for loop in group.makeIterator() {
        let listener = try ServerBootstrap(group: loop, childGroup: loop)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.syncOptions!.setOption(.allowRemoteHalfClosure, value: true)
                    try channel.syncOptions!.setOption(.recvAllocator, value: firstReads)
                    try channel.pipeline.syncOperations.addHandler(HeaderThenConnect(target: route.target, resend: route.resend))
                }
            }
            .bind(host: "127.0.0.1", port: route.port)
            .wait()
        listeners.append(listener)
    }
}
print("nio-forward-floor is listening")
// Until a signal ends the process.
try listeners[0].closeFuture.wait()
