import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded

@testable import NetProxy

/// First in an embedded channel's pipeline (nearest the socket): records, in order, what the
/// handlers behind it send towards the socket, and does what a socket would where
/// `EmbeddedChannel` does not.
///
/// `EmbeddedChannel` closes the whole channel for `close(mode: .output)`; a socket shuts its
/// output down and reports `ChannelEvent.outputClosed`. This handler does the latter, so that
/// half-closure can be tested.
final class SocketSide: ChannelOutboundHandler {
    /// A `ByteBuffer` written arrives as `IOData` too.
    typealias OutboundIn = IOData

    /// `write <n>` (bytes), `flush`, `read`,
    /// `close output`, `close all`, `activity` (a ``ConnectionActivity``); prefixed with
    /// `closed: ` once the channel is closed (where a socket would fail them).
    private(set) var events: [String] = []

    private func record(_ event: String, _ context: ChannelHandlerContext) {
        events.append(context.channel.isActive ? event : "closed: \(event)")
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .byteBuffer(let bytes) = unwrapOutboundIn(data) else { preconditionFailure("a file region") }
        record("write \(bytes.readableBytes)", context)
        context.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        record("flush", context)
        context.flush()
    }

    func read(context: ChannelHandlerContext) {
        record("read", context)
        context.read()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .output:
            record("close output", context)
            promise?.succeed()
            context.fireUserInboundEventTriggered(ChannelEvent.outputClosed)
        case .all, .input:
            record(mode == .all ? "close all" : "close input", context)
            context.close(mode: mode, promise: promise)
        }
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if event is ConnectionActivity {
            record("activity", context)
            promise?.succeed()
            return
        }
        context.triggerUserOutboundEvent(event, promise: promise)
    }
}

extension EmbeddedChannel {
    /// Everything flushed to the socket so far, as text.
    func sentText() throws -> String {
        var text = ""
        while let data = try readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { preconditionFailure("a file region") }
            text += String(buffer: buffer)
        }
        return text
    }

    /// Each buffer flushed to the socket so far, as text, in order.
    func sentBuffers() throws -> [String] {
        var buffers: [String] = []
        while let buffer = try readOutbound(as: ByteBuffer.self) {
            buffers.append(String(buffer: buffer))
        }
        return buffers
    }

    /// Makes the channel active, as an accepted connection from `peer`.
    func activate(peer: String = "203.0.113.9", port: Int = 4321) throws {
        localAddress = try SocketAddress(ipAddress: "127.0.0.1", port: 7000)
        try connect(to: SocketAddress(ipAddress: peer, port: port)).wait()
    }

    /// The last value set for `autoRead` (`EmbeddedChannel` keeps it but does not act on it).
    var autoReadSetting: Bool? {
        options.last { $0.option is ChannelOptions.Types.AutoReadOption }?.value as? Bool
    }
}

/// What the host's limits need around a connection: a listener's load with its metrics and log,
/// and the event loop's idle sweep.
struct ListenerFixture {
    static let label = "127.0.0.1:7000"

    let lines = NIOLockedValueBox<[String]>([])
    let metrics: HostMetrics
    let load: ListenerLoad
    let sweeps: IdleSweeps
    let logger: Logger

    init(loop: EmbeddedEventLoop, maxConnections: Int? = nil) {
        let lines = self.lines
        logger = Logger(label: "test") { _ in RecordingLogHandler(lines: lines) }
        metrics = HostMetrics()
        load = ListenerLoad(
            label: Self.label, maxConnections: maxConnections, budget: ConnectionBudget(maxConnections: 1000), metrics: metrics,
            log: RateLimitedLog(logger: logger), logger: logger)
        sweeps = IdleSweeps(group: loop)
    }

    /// What a host would lend its services, with this fixture's metrics and log.
    var context: HostContext {
        HostContext(
            metrics: metrics, refusals: RateLimitedLog(logger: logger),
            asyncConnections: AsyncStream.makeStream(of: AsyncServiceConnection.self).continuation, outgoing: OutgoingConnections(),
            accessLog: AccessLog(dropped: metrics.accessLogDropped(), logger: logger), eventLoops: 1, logger: logger)
    }

    /// A series of this listener: `name{listener="127.0.0.1:7000"[,label="value"]}`.
    func metric(_ name: String, _ label: (String, String)? = nil) -> Double? {
        let extra = label.map { #",\#($0.0)="\#($0.1)""# } ?? ""
        return metricValue(metrics.exposition, #"\#(name){listener="\#(Self.label)"\#(extra)}"#)
    }

    var logged: [String] { lines.withLockedValue { $0 } }
}

/// A service's handler that records what reaches it: `active <service>`, `read <text>`,
/// `inputClosed`, `inactive`.
final class ServiceRecorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let info: ConnectionInfo
    private let events: NIOLoopBoundBox<[String]>

    init(_ info: ConnectionInfo, events: NIOLoopBoundBox<[String]>) {
        self.info = info
        self.events = events
    }

    func channelActive(context: ChannelHandlerContext) {
        events.value.append("active \(info.service)")
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        events.value.append("read \(String(buffer: unwrapInboundIn(data)))")
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { events.value.append("inputClosed") }
    }

    func channelInactive(context: ChannelHandlerContext) {
        events.value.append("inactive")
    }
}

/// A connection as a service is handed it: from 203.0.113.9:4321, to port 7000.
func connectionInfo(service: String) throws -> ConnectionInfo {
    let client = try SocketAddress(ipAddress: "203.0.113.9", port: 4321)
    return ConnectionInfo(
        service: service, port: 7000, peer: client, source: client, destination: try SocketAddress(ipAddress: "127.0.0.1", port: 7000),
        proxy: nil)
}
