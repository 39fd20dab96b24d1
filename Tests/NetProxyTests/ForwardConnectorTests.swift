import NIOCore
import NIOEmbedded
import Testing

@testable import NetProxy

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// What of `ForwardConnector` runs without a socket. Its connect goes through a `ClientBootstrap`,
/// which needs a real event loop: the relay it sets up is tested on its own
/// (`RelayHandlerTests`), the connect itself over sockets (`ForwardTests`).
@Suite struct ForwardConnectorTests {
    /// At `max_pending_connects` a client is closed before any connect starts, counted and logged.
    @Test func aClientOverThePendingConnectsCapIsClosedBeforeAnyConnect() throws {
        let loop = EmbeddedEventLoop()
        let fixture = ListenerFixture(loop: loop)
        let pending = PendingCount(limit: 1)
        #expect(pending.enter())
        var configuration = ForwardServiceConfiguration(targetHost: "192.0.2.80", targetPort: 80)
        configuration.maxPendingConnects = 1
        let connector = ForwardConnector(
            name: "fw", configuration: configuration, target: (ForwardTarget(host: "192.0.2.80", port: 80), nil),
            info: try connectionInfo(service: "fw"), own: OwnHost(outgoing: OutgoingConnections(), addresses: LocalAddresses([])), pending: pending,
            context: fixture.context)
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandlers(
            ConnectionGuard(idleTimeout: .seconds(60), listener: fixture.load, sweeps: fixture.sweeps, accepted: false), connector)
        try channel.activate()
        #expect(!channel.isActive)
        #expect(fixture.metric("netproxy_connections_limited_total", ("limit", "pending_connects")) == 1)
        #expect(
            fixture.logged == [
                "warning forward fw: client 203.0.113.9:4321 closed: 1 connects to 192.0.2.80:80 in progress, its max_pending_connects"
            ])
        // Its place was never taken: the one connect in progress still holds the only one.
        #expect(!pending.enter())
    }

    /// While the target connects, the client's socket keeps reading (no `epoll_ctl` to stop and
    /// start it) until 64 KiB wait; then reads stop until the relay starts.
    @Test func readsGoOnUntilTheConnectBufferIsFull() throws {
        let loop = EmbeddedEventLoop()
        let fixture = ListenerFixture(loop: loop)
        let connector = ForwardConnector(
            name: "fw", configuration: ForwardServiceConfiguration(targetHost: "192.0.2.80", targetPort: 80),
            target: (ForwardTarget(host: "192.0.2.80", port: 80), nil), info: try connectionInfo(service: "fw"),
            own: OwnHost(outgoing: OutgoingConnections(), addresses: LocalAddresses([])), pending: PendingCount(limit: 1), context: fixture.context)
        let reads = ReadCounter()
        // Not activated: the connect (which needs a socket) never starts.
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandlers(reads, connector)
        channel.pipeline.fireChannelRead(ByteBuffer(repeating: 1, count: ForwardConnector.connectBufferLimit - 1))
        channel.read()
        #expect(reads.count == 1)
        channel.pipeline.fireChannelRead(ByteBuffer(repeating: 2, count: 1))
        channel.read()
        #expect(reads.count == 1)
    }

    /// A failed connect's error, as the `reason` label of `netproxy_forward_failures_total`.
    @Test func connectFailuresAreNamedByReason() {
        #expect(ForwardConnector.reason(ChannelError.connectTimeout(.seconds(5))) == "timeout")
        #expect(ForwardConnector.reason(IOError(errnoCode: ECONNREFUSED, reason: "connect")) == "refused")
        #expect(ForwardConnector.reason(IOError(errnoCode: EHOSTUNREACH, reason: "connect")) == "unreachable")
        for errno in [EMFILE, ENFILE, ENOBUFS, ENOMEM] {
            #expect(ForwardConnector.reason(IOError(errnoCode: errno, reason: "socket")) == "resources")
        }
        #expect(ForwardConnector.reason(ChannelError.ioOnClosedChannel) == "other")
    }

    /// A failed connect in an operator's words, for the log and `netproxy send`.
    @Test func connectFailuresAreDescribedInWords() {
        #expect(ConnectFailure.describe(ChannelError.connectTimeout(.seconds(5))) == "no answer within 5 s")
        #expect(ConnectFailure.describe(ChannelError.connectTimeout(.milliseconds(1500))) == "no answer within 1.5 s")
        #expect(ConnectFailure.describe(IOError(errnoCode: ECONNREFUSED, reason: "connect")) == "connection refused")
        #expect(ConnectFailure.describe(IOError(errnoCode: EHOSTUNREACH, reason: "connect")) == "no route to host")
    }

    /// A transparent connect binds the client's address with the option of its family; an IPv4
    /// client in an IPv6 header binds as IPv4; a UNIX client cannot be stood for.
    @Test func transparentSourcesBindTheClientsAddress() throws {
        guard case .success(let (v4, v4Option)) = ForwardConnector.transparentSource(try SocketAddress(ipAddress: "203.0.113.9", port: 4321)) else {
            Issue.record("no IPv4 source")
            return
        }
        #expect(v4 == (try SocketAddress(ipAddress: "203.0.113.9", port: 4321)))
        #expect(v4Option.optionLevel.rawValue == CInt(SOL_IP) && v4Option.optionName.rawValue == CInt(IP_TRANSPARENT))

        guard
            case .success(let (mapped, mappedOption)) = ForwardConnector.transparentSource(
                try SocketAddress(ipAddress: "::ffff:203.0.113.9", port: 4321))
        else {
            Issue.record("no source for a mapped address")
            return
        }
        #expect(mapped == (try SocketAddress(ipAddress: "203.0.113.9", port: 4321)))
        #expect(mappedOption.optionLevel.rawValue == CInt(SOL_IP) && mappedOption.optionName.rawValue == CInt(IP_TRANSPARENT))

        guard case .success(let (v6, v6Option)) = ForwardConnector.transparentSource(try SocketAddress(ipAddress: "2001:db8::9", port: 4321)) else {
            Issue.record("no IPv6 source")
            return
        }
        #expect(v6 == (try SocketAddress(ipAddress: "2001:db8::9", port: 4321)))
        // IPV6_TRANSPARENT is 75 in Linux's in6.h.
        #expect(v6Option.optionLevel.rawValue == CInt(IPPROTO_IPV6) && v6Option.optionName.rawValue == 75)

        guard case .failure(let error) = ForwardConnector.transparentSource(try SocketAddress(unixDomainSocketPath: "/tmp/client.sock")) else {
            Issue.record("a UNIX client was given a source")
            return
        }
        #expect(error.description == "the client is a UNIX socket")
    }
}

/// Counts the `read`s that reach the channel.
private final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    private(set) var count = 0

    func read(context: ChannelHandlerContext) {
        count += 1
        context.read()
    }
}
