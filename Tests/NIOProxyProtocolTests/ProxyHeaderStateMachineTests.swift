import NIOCore
import ProxyProtocol
import Testing

@testable import NIOProxyProtocol

/// The rules of the server side, without a channel: each event and the action it leads to.
@Suite struct ProxyHeaderStateMachineTests {
    static let proxy = try! SocketAddress(ipAddress: "127.0.0.1", port: 40000)
    static let stranger = try! SocketAddress(ipAddress: "192.0.2.99", port: 40000)
    static let line = "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n"

    /// A readable summary of an action, so tests compare exact outcomes.
    static func describe(_ action: ProxyHeaderStateMachine.Action) -> String {
        switch action {
        case .none: return "none"
        case .startReading: return "startReading"
        case .readMore: return "readMore"
        case .refuse(let reason, let count, let underlying):
            return "refuse \(reason) after \(count)" + (underlying.map { ": \($0)" } ?? "")
        case .accept(let header, let length, let remainder):
            return "accept v\(header.version.rawValue) \(header.command) length \(length) remainder \"\(String(buffer: remainder))\""
        }
    }

    func machine(_ configuration: ProxyProtocolConfiguration = .init()) -> ProxyHeaderStateMachine {
        ProxyHeaderStateMachine(configuration: configuration)
    }

    @Test func trustIsCheckedBeforeAnyRead() {
        var trusted = machine()
        #expect(!trusted.allowsReads)
        #expect(Self.describe(trusted.channelActive(peer: Self.proxy)) == "startReading")
        #expect(trusted.allowsReads)
        var untrusted = machine()
        #expect(Self.describe(untrusted.channelActive(peer: Self.stranger)) == "refuse untrusted_source after 0")
        #expect(!untrusted.allowsReads)
        var unknown = machine()
        #expect(Self.describe(unknown.channelActive(peer: nil)) == "refuse unknown_source after 0")
        // A second activation changes nothing.
        #expect(Self.describe(trusted.channelActive(peer: Self.stranger)) == "none")
    }

    @Test func headerInPiecesThenTheRemainder() {
        var machine = machine()
        _ = machine.channelActive(peer: Self.proxy)
        let bytes = Array((Self.line + "hello").utf8)
        for byte in bytes.prefix(Self.line.utf8.count - 1) {
            #expect(Self.describe(machine.bytesReceived(ByteBuffer(bytes: [byte]))) == "none")
            #expect(Self.describe(machine.readComplete()) == "readMore")
        }
        let last = machine.bytesReceived(ByteBuffer(bytes: bytes[(Self.line.utf8.count - 1)...]))
        #expect(Self.describe(last) == "accept v1 PROXY length 45 remainder \"hello\"")
        #expect(machine.isAccepted)
        // After acceptance, nothing is the machine's business any more.
        #expect(Self.describe(machine.readComplete()) == "none")
        #expect(Self.describe(machine.inputClosed()) == "none")
        #expect(Self.describe(machine.timedOut()) == "none")
        #expect(Self.describe(machine.handlerRemoved()) == "none")
        #expect(Self.describe(machine.bytesReceived(ByteBuffer(string: "x"))) == "none")
    }

    @Test func eachEventBeforeTheHeaderHasItsReason() {
        let events: [(String, (inout ProxyHeaderStateMachine) -> ProxyHeaderStateMachine.Action)] = [
            ("refuse closed_before_header after 6", { $0.inputClosed() }),
            ("refuse header_timeout after 6", { $0.timedOut() }),
            ("refuse shutting_down after 6", { $0.quiesceRequested() }),
            ("refuse removed_before_header after 6", { $0.handlerRemoved() }),
            ("refuse read_failed after 6: read: Connection reset by peer) (errno: 104)", { $0.errorCaught(IOError(errnoCode: 104, reason: "read")) }),
        ]
        for (expected, event) in events {
            var machine = machine()
            _ = machine.channelActive(peer: Self.proxy)
            _ = machine.bytesReceived(ByteBuffer(string: "PROXY "))
            #expect(Self.describe(event(&machine)) == expected)
            // Refused once: later events do nothing.
            #expect(Self.describe(machine.inputClosed()) == "none")
            #expect(!machine.allowsReads)
        }
    }

    @Test func invalidBytesCarryTheParserError() {
        var machine = machine()
        _ = machine.channelActive(peer: Self.proxy)
        #expect(Self.describe(machine.bytesReceived(ByteBuffer(string: "PROXY TCP5"))) == "none")
        #expect(
            Self.describe(machine.bytesReceived(ByteBuffer(string: " ")))
                == "refuse invalid_header after 11: v1 header, byte 6: protocol family \"TCP5\" is not TCP4, TCP6 or UNKNOWN")
    }

    @Test func policies() throws {
        let local = try ProxyHeader.local.encoded()
        var refusingLocal = machine(.init(acceptsLocal: false))
        _ = refusingLocal.channelActive(peer: Self.proxy)
        #expect(Self.describe(refusingLocal.bytesReceived(local)) == "refuse local_not_accepted after 16")
        var acceptingLocal = machine()
        _ = acceptingLocal.channelActive(peer: Self.proxy)
        #expect(Self.describe(acceptingLocal.bytesReceived(local)) == "accept v2 LOCAL length 16 remainder \"\"")
        var refusingUnknown = machine(.init(unspecifiedAddresses: .reject))
        _ = refusingUnknown.channelActive(peer: Self.proxy)
        #expect(Self.describe(refusingUnknown.bytesReceived(ByteBuffer(string: "PROXY UNKNOWN\r\n"))) == "refuse unspecified_not_accepted after 15")
    }

    @Test func failuresAfterAcceptance() {
        var machine = machine()
        _ = machine.channelActive(peer: Self.proxy)
        _ = machine.bytesReceived(ByteBuffer(string: Self.line))
        #expect(Self.describe(machine.pipelineFailed(ChannelError.ioOnClosedChannel)) == "refuse pipeline_failed after 0: I/O on closed channel")
        var other = self.machine()
        _ = other.channelActive(peer: Self.proxy)
        _ = other.bytesReceived(ByteBuffer(string: Self.line))
        #expect(Self.describe(other.addressUnusable(ChannelError.ioOnClosedChannel)) == "refuse unusable_address after 0: I/O on closed channel")
        // Before acceptance those two cannot happen: nothing to do.
        var waiting = self.machine()
        _ = waiting.channelActive(peer: Self.proxy)
        #expect(Self.describe(waiting.pipelineFailed(ChannelError.ioOnClosedChannel)) == "none")
    }
}
