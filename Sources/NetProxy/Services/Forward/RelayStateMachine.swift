/// What one side of a relay (a ``RelayHandler``) does on each event: its own channel's, and the
/// partner's requests. It holds the side's state and returns the action to take; the handler only
/// performs it, so the rules are tested without a channel.
///
/// - Backpressure: a `read` is passed on only while the partner can write; one held `read` is made
///   once the partner can write again.
/// - Half-closure: the end of this side's input closes the partner's output, after what is queued
///   there; once both this side's input and output are done, this side closes.
/// - Closing: when this side's channel is closed, the partner closes after sending what it holds,
///   or at once if this side failed (a reset, a failed write).
struct RelayStateMachine {
    /// How far this side's closing has got.
    enum State: Equatable {
        /// Both directions flow.
        case open
        /// This side's peer stopped sending; this side still writes what the partner reads.
        case inputClosed
        /// This side's output is shut down; its peer may still send.
        case outputClosed
        /// Both directions are done: this side's close is asked for.
        case closing
        /// A read or write of this side failed: its close is asked for, and the partner is to
        /// close at once. `inputClosed` is whether this side's input had ended before.
        case failed(inputClosed: Bool)
        /// This side's channel is closed and the partner has been told how.
        case closed
    }

    /// What the handler does. Where a case names two things, they are done in that order.
    enum Action: Equatable {
        case none
        /// Pass the `read` on to this side's channel.
        case read
        /// Ask the partner to close its output once what it holds is sent
        /// (``RelayStateMachine/partnerInputClosed()`` there).
        case closePartnerOutput
        /// Ask the partner to close its output (as ``closePartnerOutput``), then close this side.
        /// Partner first: this side's close makes the partner close entirely.
        case closePartnerOutputThenClose
        /// Ask the partner to close after sending what it holds (``RelayStateMachine/partnerClosed()``).
        case closePartnerAfterPendingWrites
        /// Ask the partner to close at once (``RelayStateMachine/partnerFailed()``).
        case closePartner
        /// Write and flush an empty buffer, which completes once everything written before it is
        /// sent (through any handler in between, such as TLS), and report its result with
        /// ``RelayStateMachine/pendingWritesSentBeforeHalfClose(succeeded:)``.
        case sendPendingWritesThenCloseOutput
        /// As ``sendPendingWritesThenCloseOutput``, reported with
        /// ``RelayStateMachine/pendingWritesSentBeforeClose()``.
        case sendPendingWritesThenClose
        /// Shut this side's output down.
        case closeOutput
        /// Close this side's channel.
        case close
    }

    private(set) var state = State.open
    /// A `read` held back while the partner could not write. Apart from ``state``: a side holds
    /// or passes reads the same way however far its closing has got.
    private(set) var readHeld = false

    // MARK: This side's events

    /// This side's pipeline asks for a read; `partnerWritable` is whether the partner's channel
    /// can take more (`true` when there is no partner any more).
    mutating func readRequested(partnerWritable: Bool) -> Action {
        guard partnerWritable else {
            readHeld = true
            return .none
        }
        return .read
    }

    /// This side's peer stopped sending (`ChannelEvent.inputClosed`).
    mutating func inputClosed() -> Action {
        switch state {
        case .open:
            state = .inputClosed
            return .closePartnerOutput
        case .outputClosed:
            state = .closing
            return .closePartnerOutputThenClose
        case .failed(inputClosed: false):
            // TLS reports a peer's end without close_notify as an error, then the end: the partner
            // still half-closes, until this side's close closes it.
            state = .failed(inputClosed: true)
            return .closePartnerOutput
        case .inputClosed, .closing, .failed(inputClosed: true), .closed:
            // A channel reports the end of its input once, and not once it is closed.
            return .none
        }
    }

    /// This side's output is shut down (`ChannelEvent.outputClosed`).
    mutating func outputClosed() -> Action {
        switch state {
        case .open:
            state = .outputClosed
            return .none
        case .inputClosed:
            state = .closing
            return .close
        case .outputClosed, .closing, .failed, .closed:
            // Once only; and a failed side's close is already asked for.
            return .none
        }
    }

    /// A read or write of this side failed (`errorCaught`).
    mutating func errorCaught() -> Action {
        switch state {
        case .open, .outputClosed:
            state = .failed(inputClosed: false)
        case .inputClosed, .closing:
            state = .failed(inputClosed: true)
        case .failed, .closed:
            break
        }
        // Whatever the state: closing an already closed channel does nothing.
        return .close
    }

    /// This side's channel is closed (`channelInactive`).
    mutating func channelInactive() -> Action {
        switch state {
        case .open, .inputClosed, .outputClosed, .closing:
            // A clean end (SwiftNIO closes without an `inputClosed` when the peer's end comes after
            // this side's output was closed): what this side read still goes out.
            state = .closed
            return .closePartnerAfterPendingWrites
        case .failed:
            state = .closed
            return .closePartner
        case .closed:
            return .none
        }
    }

    // MARK: The partner's events and requests

    /// The partner's channel can write again: a held `read` is made.
    mutating func partnerBecameWritable() -> Action {
        guard readHeld else { return .none }
        readHeld = false
        return .read
    }

    // What the partner asks is done in every state, and leaves ``state`` as it is: this side's own
    // events say what becomes of its channel. On a channel already closing or closed the writes and
    // closes fail there, which is harmless.

    /// The partner's peer stopped sending: so does this side, after what is queued.
    func partnerInputClosed() -> Action {
        .sendPendingWritesThenCloseOutput
    }

    /// What was queued before the partner's input ended is sent, or failed to be.
    func pendingWritesSentBeforeHalfClose(succeeded: Bool) -> Action {
        succeeded ? .closeOutput : .close
    }

    /// The partner's channel closed after a clean end.
    func partnerClosed() -> Action {
        .sendPendingWritesThenClose
    }

    /// What was queued when the partner closed cleanly is sent, or failed to be.
    func pendingWritesSentBeforeClose() -> Action {
        .close
    }

    /// The partner's channel closed after a failure: what this side holds is dropped.
    func partnerFailed() -> Action {
        .close
    }
}
