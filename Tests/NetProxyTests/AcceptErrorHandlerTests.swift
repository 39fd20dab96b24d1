import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@testable import NetProxy

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `AcceptErrorHandler` on an embedded stand-in for a listening socket, errors injected as the
/// socket would report them.
@Suite struct AcceptErrorHandlerTests {
    struct Listener {
        let loop = EmbeddedEventLoop()
        let lines = NIOLockedValueBox<[String]>([])
        let metrics = HostMetrics()
        let episode = AcceptErrorHandler.Episode()

        /// A socket of the echo listener on 127.0.0.1:7000 (one per event loop in the host;
        /// they share the episode).
        func socket() throws -> EmbeddedChannel {
            let role = ListenerRole(
                plan: ListenerPlan(kind: .service("echo"), host: "127.0.0.1", port: 0), kind: .service(nil), tls: nil, allowsHalfClosure: false,
                connections: ConnectionPolicy(idleTimeout: .seconds(60), tlsHandshakeTimeout: nil, maxConnections: nil, maxConnectionsPerSource: 10))
            let lines = self.lines
            let handler = AcceptErrorHandler(
                slot: ListenerSlot(role), episode: episode, logger: Logger(label: "test") { _ in RecordingLogHandler(lines: lines) },
                metrics: metrics)
            let channel = EmbeddedChannel(handler: handler, loop: loop)
            channel.localAddress = try SocketAddress(ipAddress: "127.0.0.1", port: 7000)
            return channel
        }

        var logged: [String] { lines.withLockedValue { $0 } }

        func failures(_ errno: String) -> Double? {
            metricValue(metrics.exposition, #"netproxy_accept_errors_total{errno="\#(errno)"}"#)
        }
    }

    static let emfile = IOError(errnoCode: EMFILE, reason: "accept")

    static var outOfDescriptorsLine: String {
        let limit = DescriptorLimit.current.map { "soft limit \($0.soft), hard limit \($0.hard)" } ?? "limit unknown"
        return
            "error cannot accept on echo on 127.0.0.1:7000: EMFILE (Too many open files); descriptors: \(limit); pausing accepts for 500 ms at a time until one succeeds"
    }

    /// Out of descriptors: accepting stops (autoRead off) for 500 ms, then resumes; every failure
    /// is counted, the episode logged once, and its end logged at the next accepted connection.
    @Test func runningOutOfDescriptorsPausesAcceptingAndIsLoggedOncePerEpisode() throws {
        let listener = Listener()
        let socket = try listener.socket()
        socket.pipeline.fireErrorCaught(Self.emfile)
        socket.pipeline.fireErrorCaught(Self.emfile)
        socket.pipeline.fireErrorCaught(Self.emfile)
        #expect(socket.autoReadSetting == false)
        #expect(listener.failures("EMFILE") == 3)
        #expect(listener.logged == [Self.outOfDescriptorsLine])

        listener.loop.advanceTime(by: .milliseconds(499))
        #expect(socket.autoReadSetting == false)
        listener.loop.advanceTime(by: .milliseconds(1))
        #expect(socket.autoReadSetting == true)

        let accepted = EmbeddedChannel(loop: listener.loop)
        try socket.writeInbound(accepted as Channel)
        #expect(try socket.readInbound(as: Channel.self) === accepted)
        let logged = listener.logged
        #expect(logged.count == 2)
        let end = try #require(logged.last)
        #expect(end.hasPrefix("notice accepting again on echo on 127.0.0.1:7000 after 3 failed accept(s) over "), "\(end)")
        #expect(end.hasSuffix(" ms"), "\(end)")

        // A later episode is logged again; an accept outside an episode logs nothing.
        try socket.writeInbound(accepted as Channel)
        _ = try socket.readInbound(as: Channel.self)
        socket.pipeline.fireErrorCaught(Self.emfile)
        #expect(listener.logged.count == 3)
        #expect(listener.logged.last == Self.outOfDescriptorsLine)
        #expect(listener.failures("EMFILE") == 4)
    }

    /// The listener's sockets share an episode: a run of failures on several is logged once.
    @Test func socketsOfOneListenerShareTheEpisode() throws {
        let listener = Listener()
        let first = try listener.socket()
        let second = try listener.socket()
        first.pipeline.fireErrorCaught(Self.emfile)
        second.pipeline.fireErrorCaught(Self.emfile)
        #expect(listener.logged == [Self.outOfDescriptorsLine])
        #expect(listener.failures("EMFILE") == 2)
        #expect(first.autoReadSetting == false)
        #expect(second.autoReadSetting == false)
    }

    /// An error that waiting does not cure is counted and logged, and accepting goes on.
    @Test func anAbortedConnectionDoesNotPauseAccepting() throws {
        let listener = Listener()
        let socket = try listener.socket()
        socket.pipeline.fireErrorCaught(IOError(errnoCode: ECONNABORTED, reason: "accept"))
        #expect(socket.autoReadSetting == nil)
        #expect(listener.logged == ["warning accept failed on echo on 127.0.0.1:7000: ECONNABORTED (Software caused connection abort)"])
        #expect(listener.failures("ECONNABORTED") == 1)
    }

    /// Errors other than a socket's are passed on untouched.
    @Test func otherErrorsPassOn() throws {
        let listener = Listener()
        let socket = try listener.socket()
        socket.pipeline.fireErrorCaught(ChannelError.ioOnClosedChannel)
        #expect(throws: ChannelError.ioOnClosedChannel) { try socket.throwIfErrorCaught() }
        #expect(listener.logged == [])
    }
}
