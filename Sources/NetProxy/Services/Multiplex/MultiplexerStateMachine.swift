import NIOCore

/// What a ``Multiplexer`` does on each event of its connection: it holds the connection's first
/// bytes and its place under detection, decides which service gets the connection, and returns
/// the action to take; the handler only performs it, so the rules are tested without a channel.
///
/// The place under detection (a count the service's connections share) is taken and given back
/// here, with the transitions, so that it is given back exactly once.
struct MultiplexerStateMachine {
    /// Where the connection is.
    enum State: Equatable {
        /// Not active yet.
        case idle
        /// Counted under detection, its bytes held until one decides.
        case detecting
        /// Given to a service: the multiplexer is out of the way.
        case handedOff
        /// Closed at activation: `max_pending_detections` connections were under detection.
        case rejected
        /// Closed while under detection, or after leaving it.
        case closed
    }

    /// What the handler does.
    enum Action: Equatable {
        case none
        /// Start the `detect_timeout` clock.
        case startDetecting
        /// Over `max_pending_detections`: count it, say so, and close the connection.
        case reject
        /// Stop the clock: the connection closed under detection.
        case stopDetecting
        /// Stop the clock and give the connection to `service`: it is activated there and gets the
        /// bytes held (`nil`: none came), then the end of input if it came.
        case handOff(service: String, received: ByteBuffer?, inputClosed: Bool)
    }

    /// More than any detector needs: past this many bytes without a match, the default service
    /// gets the connection.
    static let decisionLength = 24

    private let routes: [MultiplexServiceConfiguration.DetectedProtocol: String]
    private let defaultService: String
    /// Connections of the service under detection, this one while ``State/detecting``.
    private let detecting: PendingCount
    private(set) var state = State.idle
    /// The bytes so far, while ``State/detecting``; apart from ``state`` so that appending to them
    /// does not copy them.
    private(set) var received: ByteBuffer?

    init(routes: [MultiplexServiceConfiguration.DetectedProtocol: String], defaultService: String, detecting: PendingCount) {
        self.routes = routes
        self.defaultService = defaultService
        self.detecting = detecting
    }

    /// The connection is active: it is under detection if there is room.
    mutating func channelActive() -> Action {
        // A channel is activated once.
        guard case .idle = state else { return .none }
        guard detecting.enter() else {
            state = .rejected
            return .reject
        }
        state = .detecting
        return .startDetecting
    }

    /// Bytes from the client: handed on with those before once they decide.
    mutating func channelRead(_ bytes: ByteBuffer) -> Action {
        // Nothing reads before the channel is active, nor after the multiplexer is done.
        guard case .detecting = state else { return .none }
        if received == nil {
            received = bytes
        } else {
            var bytes = bytes
            received!.writeBuffer(&bytes)
        }
        guard let service = decision(received!.readableBytesView) else { return .none }
        return handOff(to: service, inputClosed: false)
    }

    /// The client stopped sending: nothing more will come to decide by, so the default service
    /// gets the connection.
    mutating func inputClosed() -> Action {
        guard case .detecting = state else { return .none }
        return handOff(to: defaultService, inputClosed: true)
    }

    /// `detect_timeout` passed with nothing decided: the default service gets a silent client.
    mutating func detectTimeout() -> Action {
        guard case .detecting = state else { return .none }
        return handOff(to: defaultService, inputClosed: false)
    }

    /// The connection closed: under detection, its place there is given back.
    mutating func channelInactive() -> Action {
        switch state {
        case .detecting:
            detecting.leave()
            received = nil
            state = .closed
            return .stopDetecting
        case .idle, .handedOff, .rejected:
            // A service closing the connection while it is being handed over finds it handed off.
            state = .closed
            return .none
        case .closed:
            return .none
        }
    }

    private mutating func handOff(to service: String, inputClosed: Bool) -> Action {
        let received = self.received
        self.received = nil
        detecting.leave()
        state = .handedOff
        return .handOff(service: service, received: received, inputClosed: inputClosed)
    }

    /// The service `bytes` (a connection's first) choose; `nil` while they may still be the start
    /// of a protocol, up to ``decisionLength`` bytes.
    private func decision(_ bytes: ByteBufferView) -> String? {
        var undecided = false
        for proto in MultiplexServiceConfiguration.DetectedProtocol.all {
            switch proto.matches(bytes) {
            case true?:
                return routes[proto] ?? defaultService
            case nil:
                undecided = true
            case false?:
                break
            }
        }
        return !undecided || bytes.count >= Self.decisionLength ? defaultService : nil
    }
}
