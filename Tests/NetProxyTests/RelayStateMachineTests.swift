import Testing

@testable import NetProxy

/// `RelayStateMachine` without a channel: each state's answer to each event, and the orders the
/// two sides of a relay go through together.
@Suite struct RelayStateMachineTests {
    typealias State = RelayStateMachine.State
    typealias Action = RelayStateMachine.Action

    /// An event of the side's own channel.
    enum Event: CaseIterable, Sendable {
        case inputClosed, outputClosed, errorCaught, channelInactive
    }

    static let allStates: [State] = [
        .open, .inputClosed, .outputClosed, .closing, .failed(inputClosed: false), .failed(inputClosed: true), .closed,
    ]

    /// A machine brought to `state` by its own channel's events.
    static func machine(in state: State) -> RelayStateMachine {
        var machine = RelayStateMachine()
        let events: [Event] =
            switch state {
            case .open: []
            case .inputClosed: [.inputClosed]
            case .outputClosed: [.outputClosed]
            case .closing: [.inputClosed, .outputClosed]
            case .failed(inputClosed: false): [.errorCaught]
            case .failed(inputClosed: true): [.inputClosed, .errorCaught]
            case .closed: [.channelInactive]
            }
        for event in events { _ = machine.handle(event) }
        #expect(machine.state == state)
        return machine
    }

    /// From a state, an event: the action, and the state after.
    struct Transition: Sendable, CustomTestStringConvertible {
        let from: State
        let event: Event
        let action: Action
        let to: State

        init(_ from: State, _ event: Event, _ action: Action, _ to: State) {
            (self.from, self.event, self.action, self.to) = (from, event, action, to)
        }

        var testDescription: String { "\(from), \(event)" }
    }

    /// Every state and event.
    static let transitions: [Transition] = [
        Transition(.open, .inputClosed, .closePartnerOutput, .inputClosed),
        Transition(.open, .outputClosed, .none, .outputClosed),
        Transition(.open, .errorCaught, .close, .failed(inputClosed: false)),
        Transition(.open, .channelInactive, .closePartnerAfterPendingWrites, .closed),

        Transition(.inputClosed, .inputClosed, .none, .inputClosed),
        Transition(.inputClosed, .outputClosed, .close, .closing),
        Transition(.inputClosed, .errorCaught, .close, .failed(inputClosed: true)),
        Transition(.inputClosed, .channelInactive, .closePartnerAfterPendingWrites, .closed),

        Transition(.outputClosed, .inputClosed, .closePartnerOutputThenClose, .closing),
        Transition(.outputClosed, .outputClosed, .none, .outputClosed),
        Transition(.outputClosed, .errorCaught, .close, .failed(inputClosed: false)),
        Transition(.outputClosed, .channelInactive, .closePartnerAfterPendingWrites, .closed),

        Transition(.closing, .inputClosed, .none, .closing),
        Transition(.closing, .outputClosed, .none, .closing),
        Transition(.closing, .errorCaught, .close, .failed(inputClosed: true)),
        Transition(.closing, .channelInactive, .closePartnerAfterPendingWrites, .closed),

        Transition(.failed(inputClosed: false), .inputClosed, .closePartnerOutput, .failed(inputClosed: true)),
        Transition(.failed(inputClosed: false), .outputClosed, .none, .failed(inputClosed: false)),
        Transition(.failed(inputClosed: false), .errorCaught, .close, .failed(inputClosed: false)),
        Transition(.failed(inputClosed: false), .channelInactive, .closePartner, .closed),

        Transition(.failed(inputClosed: true), .inputClosed, .none, .failed(inputClosed: true)),
        Transition(.failed(inputClosed: true), .outputClosed, .none, .failed(inputClosed: true)),
        Transition(.failed(inputClosed: true), .errorCaught, .close, .failed(inputClosed: true)),
        Transition(.failed(inputClosed: true), .channelInactive, .closePartner, .closed),

        Transition(.closed, .inputClosed, .none, .closed),
        Transition(.closed, .outputClosed, .none, .closed),
        Transition(.closed, .errorCaught, .close, .closed),
        Transition(.closed, .channelInactive, .none, .closed),
    ]

    /// The table leaves no state and event out, and has each once.
    @Test func theTableCoversEveryStateAndEvent() {
        let covered = Self.transitions.map { "\($0.from) \($0.event)" }
        let expected = Self.allStates.flatMap { state in Event.allCases.map { "\(state) \($0)" } }
        #expect(covered.sorted() == expected.sorted())
    }

    @Test(arguments: transitions)
    func eachStateAnswersEachEvent(_ transition: Transition) {
        var machine = Self.machine(in: transition.from)
        #expect(machine.handle(transition.event) == transition.action)
        #expect(machine.state == transition.to)
        #expect(!machine.readHeld)
    }

    // MARK: Backpressure

    /// A read passes while the partner can write; otherwise one read is held, however many are
    /// asked for, and made when the partner can write again, once.
    @Test func aReadIsHeldWhileThePartnerCannotWrite() {
        var machine = RelayStateMachine()
        #expect(machine.readRequested(partnerWritable: true) == .read)
        #expect(!machine.readHeld)
        #expect(machine.partnerBecameWritable() == .none)

        #expect(machine.readRequested(partnerWritable: false) == .none)
        #expect(machine.readRequested(partnerWritable: false) == .none)
        #expect(machine.readHeld)
        #expect(machine.partnerBecameWritable() == .read)
        #expect(!machine.readHeld)
        #expect(machine.partnerBecameWritable() == .none)
        #expect(machine.state == .open)
    }

    /// Holding reads does not depend on how far the side's closing has got, nor changes it.
    @Test(arguments: allStates)
    func readsAreHeldTheSameInEveryState(state: State) {
        var machine = Self.machine(in: state)
        #expect(machine.readRequested(partnerWritable: true) == .read)
        #expect(machine.readRequested(partnerWritable: false) == .none)
        #expect(machine.readHeld)
        #expect(machine.partnerBecameWritable() == .read)
        #expect(!machine.readHeld)
        #expect(machine.state == state)
    }

    /// A held read stays held through the side's own events.
    @Test func aHeldReadOutlastsTheSidesEvents() {
        var machine = RelayStateMachine()
        #expect(machine.readRequested(partnerWritable: false) == .none)
        #expect(machine.inputClosed() == .closePartnerOutput)
        #expect(machine.readHeld)
        #expect(machine.partnerBecameWritable() == .read)
    }

    // MARK: The partner's requests

    /// What the partner asks is done in every state, and leaves the state as it was.
    @Test(arguments: allStates)
    func thePartnersRequestsAreDoneInEveryState(state: State) {
        let machine = Self.machine(in: state)
        #expect(machine.partnerInputClosed() == .sendPendingWritesThenCloseOutput)
        #expect(machine.pendingWritesSentBeforeHalfClose(succeeded: true) == .closeOutput)
        #expect(machine.pendingWritesSentBeforeHalfClose(succeeded: false) == .close)
        #expect(machine.partnerClosed() == .sendPendingWritesThenClose)
        #expect(machine.pendingWritesSentBeforeClose() == .close)
        #expect(machine.partnerFailed() == .close)
        #expect(machine.state == state)
    }

    // MARK: Two sides together

    /// A client's half-close: the target's output closes after what it holds; the target's own
    /// end then closes both, the client's side first, the target's after what it holds.
    @Test func aHalfCloseThenTheOtherHalfCloseTheRelay() {
        var client = RelayStateMachine()
        var target = RelayStateMachine()

        #expect(client.inputClosed() == .closePartnerOutput)
        #expect(target.partnerInputClosed() == .sendPendingWritesThenCloseOutput)
        // Only once what was queued before is sent.
        #expect(target.pendingWritesSentBeforeHalfClose(succeeded: true) == .closeOutput)
        #expect(target.outputClosed() == .none)
        #expect((client.state, target.state) == (.inputClosed, .outputClosed))

        // The target answers, then ends: the client's output closes the same way.
        #expect(target.inputClosed() == .closePartnerOutputThenClose)
        #expect(client.partnerInputClosed() == .sendPendingWritesThenCloseOutput)
        #expect(client.pendingWritesSentBeforeHalfClose(succeeded: true) == .closeOutput)
        #expect(client.outputClosed() == .close)
        #expect((client.state, target.state) == (.closing, .closing))

        // The client's side closes first, cleanly: the target's after what it holds.
        #expect(client.channelInactive() == .closePartnerAfterPendingWrites)
        #expect(target.partnerClosed() == .sendPendingWritesThenClose)
        #expect(target.pendingWritesSentBeforeClose() == .close)
        #expect(target.channelInactive() == .closePartnerAfterPendingWrites)
        #expect((client.state, target.state) == (.closed, .closed))
    }

    /// The target's output closes first (the target ended first, or the client did and it
    /// answered): the client's end then closes the client's side after asking the same of the
    /// target's output.
    @Test func theLastHalfCloseClosesItsSideAfterPassingOn() {
        var client = RelayStateMachine()
        var target = RelayStateMachine()
        #expect(target.inputClosed() == .closePartnerOutput)
        #expect(client.partnerInputClosed() == .sendPendingWritesThenCloseOutput)
        #expect(client.pendingWritesSentBeforeHalfClose(succeeded: true) == .closeOutput)
        #expect(client.outputClosed() == .none)
        #expect(client.inputClosed() == .closePartnerOutputThenClose)
        #expect(target.partnerInputClosed() == .sendPendingWritesThenCloseOutput)
        #expect(target.pendingWritesSentBeforeHalfClose(succeeded: true) == .closeOutput)
        #expect(target.outputClosed() == .close)
        #expect((client.state, target.state) == (.closing, .closing))
    }

    /// A half-close whose queued bytes cannot be sent closes the side instead: a clean close, so
    /// the other side still sends what it holds.
    @Test func aHalfCloseThatCannotSendClosesTheSide() {
        var client = RelayStateMachine()
        var target = RelayStateMachine()
        #expect(client.inputClosed() == .closePartnerOutput)
        #expect(target.partnerInputClosed() == .sendPendingWritesThenCloseOutput)
        #expect(target.pendingWritesSentBeforeHalfClose(succeeded: false) == .close)
        #expect(target.channelInactive() == .closePartnerAfterPendingWrites)
        #expect(client.partnerClosed() == .sendPendingWritesThenClose)
        #expect(client.pendingWritesSentBeforeClose() == .close)
    }

    /// A clean close of one side: the other closes once what it holds is sent.
    @Test func aCleanCloseClosesThePartnerAfterItsQueuedBytes() {
        var client = RelayStateMachine()
        let target = RelayStateMachine()
        #expect(client.channelInactive() == .closePartnerAfterPendingWrites)
        #expect(target.partnerClosed() == .sendPendingWritesThenClose)
        #expect(target.pendingWritesSentBeforeClose() == .close)
        #expect(target.state == .open)
    }

    /// A failure: the failed side closes, and its close closes the other at once, with no write
    /// before.
    @Test func aFailureClosesBothAtOnce() {
        var client = RelayStateMachine()
        var target = RelayStateMachine()
        #expect(client.errorCaught() == .close)
        #expect(client.channelInactive() == .closePartner)
        #expect(target.partnerFailed() == .close)
        // The target's own close comes after: it did not fail itself.
        #expect(target.channelInactive() == .closePartnerAfterPendingWrites)
        #expect((client.state, target.state) == (.closed, .closed))
    }

    /// A failure after a half-close still closes the other side at once.
    @Test func aFailureAfterAHalfCloseClosesBothAtOnce() {
        var client = RelayStateMachine()
        #expect(client.inputClosed() == .closePartnerOutput)
        #expect(client.outputClosed() == .close)
        #expect(client.errorCaught() == .close)
        #expect(client.channelInactive() == .closePartner)
    }

    /// TLS reports a peer's end without close_notify as an error, then the end: the partner's
    /// output is closed once, and at the failed side's close the partner is closed at once.
    @Test func anEndAfterAFailureStillHalfClosesThePartnerOnce() {
        var client = RelayStateMachine()
        #expect(client.errorCaught() == .close)
        #expect(client.inputClosed() == .closePartnerOutput)
        #expect(client.inputClosed() == .none)
        #expect(client.channelInactive() == .closePartner)
    }
}

extension RelayStateMachine {
    /// `event`, by name.
    fileprivate mutating func handle(_ event: RelayStateMachineTests.Event) -> Action {
        switch event {
        case .inputClosed: inputClosed()
        case .outputClosed: outputClosed()
        case .errorCaught: errorCaught()
        case .channelInactive: channelInactive()
        }
    }
}
