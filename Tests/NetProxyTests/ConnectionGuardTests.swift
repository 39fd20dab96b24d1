import NIOCore
import NIOEmbedded
import NIOTLS
import Testing

@testable import NetProxy

/// `ConnectionGuard`'s deadlines as the event loop's `IdleSweep` checks them, every 250 ms of
/// the embedded loop's time.
@Suite struct ConnectionGuardTests {
    /// An accepted connection from 203.0.113.9:4321 with a 10 s idle timeout, handed to its
    /// service at time 0 (its idle clock starts), counted as open on its listener.
    struct Connection {
        let loop = EmbeddedEventLoop()
        let fixture: ListenerFixture
        let connectionGuard: ConnectionGuard
        let channel: EmbeddedChannel

        init(idleTimeout: TimeAmount = .seconds(10), handshakeTimeout: TimeAmount? = nil) throws {
            fixture = ListenerFixture(loop: loop)
            #expect(fixture.load.admit())
            connectionGuard = ConnectionGuard(idleTimeout: idleTimeout, listener: fixture.load, sweeps: fixture.sweeps, accepted: true)
            channel = EmbeddedChannel(handler: connectionGuard, loop: loop)
            if let handshakeTimeout {
                try channel.pipeline.syncOperations.addHandler(TLSHandshakeDeadline(guard: connectionGuard, timeout: handshakeTimeout))
            }
            try channel.activate()
            connectionGuard.startIdleClock()
        }

        /// Advances the loop to `milliseconds` after the start.
        func at(_ milliseconds: Int64) {
            loop.advanceTime(to: .uptimeNanoseconds(UInt64(milliseconds) * 1_000_000))
        }
    }

    /// Silent for the 10 s: closed at the first sweep at or after 10 s, counted and logged, and its
    /// place on the listener given back.
    @Test func aSilentConnectionIsClosedAtItsIdleDeadlineNeverBefore() throws {
        let connection = try Connection()
        connection.at(9999)
        #expect(connection.channel.isActive)
        #expect(connection.fixture.metric("netproxy_connections") == 1)
        connection.at(10000)
        #expect(!connection.channel.isActive)
        #expect(connection.fixture.metric("netproxy_timeouts_total", ("kind", "idle")) == 1)
        #expect(
            connection.fixture.logged == [
                "warning closing connection from 203.0.113.9:4321: no byte in either direction for 10 s on 127.0.0.1:7000"
            ])
        // The handlers leave the pipeline on the loop's next turn.
        connection.loop.run()
        #expect(connection.fixture.metric("netproxy_connections") == 0)
    }

    /// A deadline between two sweeps is met by the next sweep: within the sweep period, never
    /// before the deadline.
    @Test func theDeadlineIsMetByTheNextSweep() throws {
        let connection = try Connection()
        connection.at(100)
        connection.channel.pipeline.fireChannelRead(ByteBuffer(string: "x"))
        // Deadline 10.1 s; sweeps at 10.0 s and 10.25 s.
        connection.at(10249)
        #expect(connection.channel.isActive)
        connection.at(10250)
        #expect(!connection.channel.isActive)
    }

    /// A read, a write and a reported `ConnectionActivity` each start the idle time again.
    @Test(arguments: ["read", "write", "activity"])
    func activityPostponesTheDeadline(kind: String) throws {
        let connection = try Connection()
        connection.at(5100)
        switch kind {
        case "read": connection.channel.pipeline.fireChannelRead(ByteBuffer(string: "x"))
        case "write": try connection.channel.writeOutbound(ByteBuffer(string: "x"))
        default: connection.channel.pipeline.triggerUserOutboundEvent(ConnectionActivity(), promise: nil)
        }
        connection.at(15249)
        #expect(connection.channel.isActive)
        connection.at(15250)
        #expect(!connection.channel.isActive)
        #expect(connection.fixture.metric("netproxy_timeouts_total", ("kind", "idle")) == 1)
    }

    /// With reads not counted (the HTTP services), bytes trickling in are not activity.
    @Test func readsCountOnlyWhenAskedTo() throws {
        let connection = try Connection()
        connection.connectionGuard.countsReads = false
        for millisecond in stride(from: Int64(1000), through: 9000, by: 1000) {
            connection.at(millisecond)
            connection.channel.pipeline.fireChannelRead(ByteBuffer(string: "x"))
        }
        connection.at(10000)
        #expect(!connection.channel.isActive)
    }

    /// Before the hand-over to a service the idle clock does not run (the header's and the
    /// handshake's deadlines apply then).
    @Test func theIdleClockWaitsForTheHandOver() throws {
        let loop = EmbeddedEventLoop()
        let fixture = ListenerFixture(loop: loop)
        let connectionGuard = ConnectionGuard(idleTimeout: .seconds(1), listener: fixture.load, sweeps: fixture.sweeps, accepted: false)
        // accepted: false runs the clock at once; an accepted one waits.
        let waiting = ConnectionGuard(idleTimeout: .seconds(1), listener: fixture.load, sweeps: fixture.sweeps, accepted: true)
        #expect(fixture.load.admit())
        let opened = EmbeddedChannel(handler: connectionGuard, loop: loop)
        let accepted = EmbeddedChannel(handler: waiting, loop: loop)
        try opened.activate()
        try accepted.activate()
        loop.advanceTime(by: .seconds(30))
        #expect(!opened.isActive)
        #expect(accepted.isActive)
        waiting.startIdleClock()
        loop.advanceTime(by: .milliseconds(999))
        #expect(accepted.isActive)
        loop.advanceTime(by: .milliseconds(1))
        #expect(!accepted.isActive)
    }

    /// A TLS handshake not finished within its timeout closes the connection, counted as
    /// `tls_handshake`, although the idle timeout is far off.
    @Test func anUnfinishedHandshakeIsClosedAtItsDeadline() throws {
        let connection = try Connection(idleTimeout: .seconds(60), handshakeTimeout: .seconds(1))
        connection.at(999)
        #expect(connection.channel.isActive)
        connection.at(1000)
        #expect(!connection.channel.isActive)
        #expect(connection.fixture.metric("netproxy_timeouts_total", ("kind", "tls_handshake")) == 1)
        #expect(connection.fixture.metric("netproxy_timeouts_total", ("kind", "idle")) == 0)
        #expect(
            connection.fixture.logged == ["warning closing connection from 203.0.113.9:4321: TLS handshake not finished in time on 127.0.0.1:7000"])
    }

    /// A finished handshake lifts the deadline, and its handler leaves the pipeline.
    @Test func aFinishedHandshakeLiftsTheDeadline() throws {
        let connection = try Connection(idleTimeout: .seconds(60), handshakeTimeout: .seconds(1))
        connection.at(500)
        connection.channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        #expect((try? connection.channel.pipeline.syncOperations.handler(type: TLSHandshakeDeadline.self)) == nil)
        connection.at(30000)
        #expect(connection.channel.isActive)
        #expect(connection.fixture.metric("netproxy_timeouts_total", ("kind", "tls_handshake")) == 0)
    }

    /// Connections leaving the sweep out of order (a swap-remove) leave the others' deadlines
    /// intact.
    @Test func theSweepKeepsTheOthersWhenOneLeaves() throws {
        let loop = EmbeddedEventLoop()
        let fixture = ListenerFixture(loop: loop)
        let channels = try [1, 2, 3].map { (seconds: Int64) in
            let channel = EmbeddedChannel(
                handler: ConnectionGuard(idleTimeout: .seconds(seconds), listener: fixture.load, sweeps: fixture.sweeps, accepted: false),
                loop: loop)
            try channel.activate()
            return channel
        }
        try channels[0].close().wait()
        loop.run()
        loop.advanceTime(to: .uptimeNanoseconds(1_999_999_999))
        #expect(channels[1].isActive && channels[2].isActive)
        loop.advanceTime(to: .uptimeNanoseconds(2_000_000_000))
        #expect(!channels[1].isActive && channels[2].isActive)
        loop.advanceTime(to: .uptimeNanoseconds(3_000_000_000))
        #expect(!channels[2].isActive)
        #expect(fixture.metric("netproxy_timeouts_total", ("kind", "idle")) == 2)
    }
}
