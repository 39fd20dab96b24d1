import NIOCore
import Testing

@testable import NetProxy

/// `MultiplexerStateMachine` without a channel: when a connection is handed on, to whom, with
/// which bytes, and its place under detection.
@Suite struct MultiplexerStateMachineTests {
    typealias State = MultiplexerStateMachine.State
    typealias Action = MultiplexerStateMachine.Action

    static let routes: [MultiplexServiceConfiguration.DetectedProtocol: String] = [
        .tls: "tls-svc", .http: "http-svc", .xmpp: "xmpp-svc", .ssh: "ssh-svc",
    ]

    static func machine(
        routes: [MultiplexServiceConfiguration.DetectedProtocol: String] = routes, detecting: PendingCount = PendingCount(limit: 256)
    ) -> MultiplexerStateMachine {
        MultiplexerStateMachine(routes: routes, defaultService: "other-svc", detecting: detecting)
    }

    /// A machine under detection.
    static func detectingMachine(_ detecting: PendingCount = PendingCount(limit: 256)) -> MultiplexerStateMachine {
        var machine = machine(detecting: detecting)
        #expect(machine.channelActive() == .startDetecting)
        return machine
    }

    static func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    /// The decision for one of the test services, by the protocol its name starts with
    /// (`other-svc`: the default).
    static func decided(_ service: String) -> MultiplexDecision {
        let name = String(service.prefix { $0 != "-" })
        return MultiplexDecision(service: service, by: MultiplexDecision.Reason(rawValue: name) ?? .default)
    }

    /// How many more connections `count` takes now; it is left as it was.
    static func free(_ count: PendingCount) -> Int {
        var taken = 0
        while count.enter() { taken += 1 }
        for _ in 0..<taken { count.leave() }
        return taken
    }

    // MARK: Deciding

    /// The first bytes of a protocol, over two reads: nothing after the first, and after the second
    /// its service with both as one buffer.
    @Test func bytesSplitAcrossReadsAreHandedOnTogether() {
        var machine = Self.detectingMachine()
        #expect(machine.channelRead(Self.bytes("<stre")) == .none)
        #expect(machine.state == .detecting)
        #expect(machine.received == Self.bytes("<stre"))
        #expect(
            machine.channelRead(Self.bytes("am:stream>"))
                == .handOff(Self.decided("xmpp-svc"), received: Self.bytes("<stream:stream>"), inputClosed: false))
        #expect(machine.state == .handedOff)
        #expect(machine.received == nil)
    }

    /// Byte by byte, each protocol is decided at the byte that tells it, and handed on with every
    /// byte so far.
    @Test(arguments: [
        ("tls-svc", [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC] as [UInt8], 6),
        ("http-svc", Array("GET / HTTP/1.1\r\n".utf8), 4),
        ("http-svc", Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0".utf8), 24),
        ("other-svc", Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r".utf8), 24),
        ("xmpp-svc", Array("<?xml version='1.0'?>".utf8), 5),
        ("xmpp-svc", Array("<stream:stream to='example.org'>".utf8), 14),
        ("ssh-svc", Array("SSH-2.0-OpenSSH_9.2\r\n".utf8), 4),
        ("other-svc", Array("GET\t/\r\n".utf8), 4),
        ("other-svc", Array("<?xmm".utf8), 5),
        ("other-svc", Array("EHLO example.org\r\n".utf8), 1),
        ("other-svc", Array("hello there, nothing known here\n".utf8), 1),
    ])
    func eachProtocolIsDecidedAtTheByteThatTellsIt(service: String, bytes: [UInt8], decidedAt: Int) {
        var machine = Self.detectingMachine()
        for byte in bytes.prefix(decidedAt - 1) {
            #expect(machine.channelRead(ByteBuffer(bytes: [byte])) == .none)
        }
        #expect(machine.state == .detecting)
        #expect(
            machine.channelRead(ByteBuffer(bytes: [bytes[decidedAt - 1]]))
                == .handOff(Self.decided(service), received: ByteBuffer(bytes: bytes.prefix(decidedAt)), inputClosed: false))
        #expect(machine.state == .handedOff)
    }

    /// A protocol with no route goes to the default service.
    @Test func aProtocolWithoutARouteGoesToTheDefault() {
        var machine = Self.machine(routes: [.http: "http-svc"])
        #expect(machine.channelActive() == .startDetecting)
        #expect(
            machine.channelRead(Self.bytes("SSH-2.0")) == .handOff(Self.decided("other-svc"), received: Self.bytes("SSH-2.0"), inputClosed: false))
    }

    /// The end of the client's input decides for the default service, which gets the bytes so far
    /// and the end.
    @Test func theEndOfInputDecidesForTheDefault() {
        var machine = Self.detectingMachine()
        #expect(machine.channelRead(Self.bytes("GE")) == .none)
        #expect(machine.inputClosed() == .handOff(Self.decided("other-svc"), received: Self.bytes("GE"), inputClosed: true))
        #expect(machine.state == .handedOff)

        var silent = Self.detectingMachine()
        #expect(silent.inputClosed() == .handOff(Self.decided("other-svc"), received: nil, inputClosed: true))
    }

    /// `detect_timeout` hands the connection to the default service with what it sent, if
    /// anything.
    @Test func theDetectTimeoutDecidesForTheDefault() {
        var machine = Self.detectingMachine()
        #expect(machine.channelRead(Self.bytes("GE")) == .none)
        #expect(
            machine.detectTimeout() == .handOff(MultiplexDecision(service: "other-svc", by: .timeout), received: Self.bytes("GE"), inputClosed: false)
        )

        var silent = Self.detectingMachine()
        #expect(silent.detectTimeout() == .handOff(MultiplexDecision(service: "other-svc", by: .timeout), received: nil, inputClosed: false))
    }

    // MARK: Every state

    /// An event in a state: the action, and the state after.
    struct Transition: Sendable, CustomTestStringConvertible {
        enum Event: Sendable { case channelActive, decisiveRead, inputClosed, detectTimeout, channelInactive }

        let from: State
        let event: Event
        let action: Action
        let to: State

        init(_ from: State, _ event: Event, _ action: Action, _ to: State) {
            (self.from, self.event, self.action, self.to) = (from, event, action, to)
        }

        var testDescription: String { "\(from), \(event)" }
    }

    /// Every state and event. Out of ``State/detecting`` nothing is decided: before activation
    /// nothing is read, and once handed off, rejected or closed, the multiplexer is done.
    static let transitions: [Transition] = [
        Transition(.idle, .channelActive, .startDetecting, .detecting),
        Transition(.idle, .decisiveRead, .none, .idle),
        Transition(.idle, .inputClosed, .none, .idle),
        Transition(.idle, .detectTimeout, .none, .idle),
        Transition(.idle, .channelInactive, .none, .closed),

        Transition(.detecting, .channelActive, .none, .detecting),
        Transition(.detecting, .decisiveRead, .handOff(Self.decided("ssh-svc"), received: bytes("SSH-"), inputClosed: false), .handedOff),
        Transition(.detecting, .inputClosed, .handOff(Self.decided("other-svc"), received: nil, inputClosed: true), .handedOff),
        Transition(
            .detecting, .detectTimeout, .handOff(MultiplexDecision(service: "other-svc", by: .timeout), received: nil, inputClosed: false), .handedOff
        ),
        Transition(.detecting, .channelInactive, .stopDetecting, .closed),

        Transition(.handedOff, .channelActive, .none, .handedOff),
        Transition(.handedOff, .decisiveRead, .none, .handedOff),
        Transition(.handedOff, .inputClosed, .none, .handedOff),
        Transition(.handedOff, .detectTimeout, .none, .handedOff),
        // A service that closes the connection while it is handed over.
        Transition(.handedOff, .channelInactive, .none, .closed),

        Transition(.rejected, .channelActive, .none, .rejected),
        Transition(.rejected, .decisiveRead, .none, .rejected),
        Transition(.rejected, .inputClosed, .none, .rejected),
        Transition(.rejected, .detectTimeout, .none, .rejected),
        Transition(.rejected, .channelInactive, .none, .closed),

        Transition(.closed, .channelActive, .none, .closed),
        Transition(.closed, .decisiveRead, .none, .closed),
        Transition(.closed, .inputClosed, .none, .closed),
        Transition(.closed, .detectTimeout, .none, .closed),
        Transition(.closed, .channelInactive, .none, .closed),
    ]

    /// The table leaves no state and event out, and has each once.
    @Test func theTableCoversEveryStateAndEvent() {
        let states: [State] = [.idle, .detecting, .handedOff, .rejected, .closed]
        let events: [Transition.Event] = [.channelActive, .decisiveRead, .inputClosed, .detectTimeout, .channelInactive]
        let covered = Self.transitions.map { "\($0.from) \($0.event)" }
        #expect(covered.sorted() == states.flatMap { state in events.map { "\(state) \($0)" } }.sorted())
    }

    /// Each transition, and the place under detection: taken only in ``State/detecting``, given
    /// back on leaving it.
    @Test(arguments: transitions)
    func eachStateAnswersEachEvent(_ transition: Transition) {
        // One place: a rejected connection finds it taken by another.
        let detecting = PendingCount(limit: 1)
        var machine = Self.machine(detecting: detecting)
        switch transition.from {
        case .idle:
            break
        case .detecting:
            #expect(machine.channelActive() == .startDetecting)
        case .handedOff:
            #expect(machine.channelActive() == .startDetecting)
            #expect(machine.channelRead(Self.bytes("GET ")) == .handOff(Self.decided("http-svc"), received: Self.bytes("GET "), inputClosed: false))
        case .rejected:
            #expect(detecting.enter())
            #expect(machine.channelActive() == .reject)
            detecting.leave()
        case .closed:
            #expect(machine.channelInactive() == .none)
        }
        #expect(machine.state == transition.from)

        let action: Action =
            switch transition.event {
            case .channelActive: machine.channelActive()
            case .decisiveRead: machine.channelRead(Self.bytes("SSH-"))
            case .inputClosed: machine.inputClosed()
            case .detectTimeout: machine.detectTimeout()
            case .channelInactive: machine.channelInactive()
            }
        #expect(action == transition.action)
        #expect(machine.state == transition.to)
        #expect(Self.free(detecting) == (transition.to == .detecting ? 0 : 1))
        #expect(machine.received == nil)
    }

    // MARK: Places under detection

    /// Over `max_pending_detections` a connection is rejected and takes no place; a connection
    /// gives its place back once, when handed off or closed under detection, never again after.
    @Test func placesUnderDetectionAreTakenAndGivenBackOnce() {
        let detecting = PendingCount(limit: 2)
        var first = Self.detectingMachine(detecting)
        var second = Self.detectingMachine(detecting)
        var third = Self.machine(detecting: detecting)
        #expect(third.channelActive() == .reject)
        #expect(Self.free(detecting) == 0)
        #expect(third.channelInactive() == .none)
        #expect(Self.free(detecting) == 0)

        // Handed off: its place is free, and its close gives nothing back twice.
        #expect(first.channelRead(Self.bytes("SSH-")) == .handOff(Self.decided("ssh-svc"), received: Self.bytes("SSH-"), inputClosed: false))
        #expect(Self.free(detecting) == 1)
        #expect(first.channelInactive() == .none)
        #expect(Self.free(detecting) == 1)

        // Closed under detection: its place is free too, once.
        #expect(second.channelRead(Self.bytes("GE")) == .none)
        #expect(second.channelInactive() == .stopDetecting)
        #expect(second.received == nil)
        #expect(Self.free(detecting) == 2)
        #expect(second.channelInactive() == .none)
        #expect(second.detectTimeout() == .none)
        #expect(Self.free(detecting) == 2)
    }
}
