import NIOCore

/// The service a multiplexer chose for a connection, and why.
struct MultiplexDecision: Equatable, Sendable {
    /// Why: the `by` label of `netproxy_multiplex_routed_total`.
    enum Reason: String, CaseIterable, Sendable {
        /// A `tls_routes` rule with a protocol and no name.
        case alpn
        /// A `tls_routes` rule with a name (and perhaps a protocol).
        case sni
        /// `routes.tls`: TLS that no rule matched, or a service without `tls_routes`.
        case tls
        case http
        case xmpp
        case ssh
        /// Nothing known, a protocol without a route, a ClientHello that could not be read, or
        /// the end of the client's input under detection.
        case `default`
        /// `detect_timeout` passed under detection.
        case timeout
    }

    var service: String
    var by: Reason
    /// The `tls_routes` rule that matched, by its index.
    var rule: Int?
    /// The ClientHello read, for a service with `tls_routes`.
    var clientHello: ClientHello?
    /// Why the ClientHello could not be read, when it could not.
    var clientHelloError: ClientHelloError?

    init(service: String, by: Reason, rule: Int? = nil, clientHello: ClientHello? = nil, clientHelloError: ClientHelloError? = nil) {
        self.service = service
        self.by = by
        self.rule = rule
        self.clientHello = clientHello
        self.clientHelloError = clientHelloError
    }
}

/// What a ``Multiplexer`` does on each event of its connection: it holds the connection's first
/// bytes and its place under detection, decides which service gets the connection, and returns
/// the action to take; the handler only performs it, so the rules are tested without a channel.
///
/// The place under detection (a count the service's connections share) is taken and given back
/// here, with the transitions, so that it is given back exactly once.
///
/// With `tls_routes`, a connection that starts as TLS stays under detection until its whole
/// ClientHello has come (``ClientHelloReader``), and its rules choose; one that cannot be read
/// (malformed, or longer than 16 KiB and a record header) goes to the default service, as does
/// one still incomplete at `detect_timeout`. Without `tls_routes` nothing waits past the first
/// bytes.
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
        /// Stop the clock and give the connection to the service decided: it is activated there
        /// and gets the bytes held (`nil`: none came), then the end of input if it came.
        case handOff(MultiplexDecision, received: ByteBuffer?, inputClosed: Bool)
    }

    /// More than any detector needs: past this many bytes without a match, the default service
    /// gets the connection.
    static let decisionLength = 24

    private let routes: [MultiplexServiceConfiguration.DetectedProtocol: String]
    private let tlsRouter: TLSRouter
    private let defaultService: String
    /// Connections of the service under detection, this one while ``State/detecting``.
    private let detecting: PendingCount
    private(set) var state = State.idle
    /// The bytes so far, while ``State/detecting``; apart from ``state`` so that appending to them
    /// does not copy them.
    private(set) var received: ByteBuffer?
    /// The ClientHello so far, once the bytes are TLS and the service has `tls_routes`.
    private(set) var clientHello: ClientHelloReader?

    init(
        routes: [MultiplexServiceConfiguration.DetectedProtocol: String], tlsRouter: TLSRouter = TLSRouter(), defaultService: String,
        detecting: PendingCount
    ) {
        self.routes = routes
        self.tlsRouter = tlsRouter
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
            var more = bytes
            received!.writeBuffer(&more)
        }
        if clientHello != nil { return readClientHello(bytes) }
        switch detect(received!.readableBytesView) {
        case nil:
            return .none
        case let proto?? where proto == .tls && !tlsRouter.isEmpty:
            clientHello = ClientHelloReader()
            return readClientHello(received!)
        case let proto??:
            guard let service = routes[proto] else { return handOff(MultiplexDecision(service: defaultService, by: .default), inputClosed: false) }
            return handOff(MultiplexDecision(service: service, by: MultiplexDecision.Reason(rawValue: proto.name)!), inputClosed: false)
        case .some(nil):
            return handOff(MultiplexDecision(service: defaultService, by: .default), inputClosed: false)
        }
    }

    /// Gives the ClientHello reader `bytes`, the connection's next: the rules decide once it is
    /// whole; one that cannot be read goes to the default service.
    private mutating func readClientHello(_ bytes: ByteBuffer) -> Action {
        let hello: ClientHello
        do {
            guard let whole = try clientHello!.read(bytes) else { return .none }
            hello = whole
        } catch {
            return handOff(MultiplexDecision(service: defaultService, by: .default, clientHelloError: error), inputClosed: false)
        }
        if let rule = tlsRouter.match(hello) {
            return handOff(MultiplexDecision(service: rule.service, by: rule.by, rule: rule.index, clientHello: hello), inputClosed: false)
        }
        if let service = routes[.tls] {
            return handOff(MultiplexDecision(service: service, by: .tls, clientHello: hello), inputClosed: false)
        }
        return handOff(MultiplexDecision(service: defaultService, by: .default, clientHello: hello), inputClosed: false)
    }

    /// The client stopped sending: nothing more will come to decide by, so the default service
    /// gets the connection.
    mutating func inputClosed() -> Action {
        guard case .detecting = state else { return .none }
        return handOff(MultiplexDecision(service: defaultService, by: .default), inputClosed: true)
    }

    /// `detect_timeout` passed with nothing decided: the default service gets a silent client.
    mutating func detectTimeout() -> Action {
        guard case .detecting = state else { return .none }
        return handOff(MultiplexDecision(service: defaultService, by: .timeout), inputClosed: false)
    }

    /// The connection closed: under detection, its place there is given back.
    mutating func channelInactive() -> Action {
        switch state {
        case .detecting:
            detecting.leave()
            received = nil
            clientHello = nil
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

    private mutating func handOff(_ decision: MultiplexDecision, inputClosed: Bool) -> Action {
        let received = self.received
        self.received = nil
        clientHello = nil
        detecting.leave()
        state = .handedOff
        return .handOff(decision, received: received, inputClosed: inputClosed)
    }

    /// The protocol `bytes` (a connection's first) start: `.some(nil)` for none known, `nil` while
    /// they may still be the start of one, up to ``decisionLength`` bytes.
    private func detect(_ bytes: ByteBufferView) -> MultiplexServiceConfiguration.DetectedProtocol?? {
        var undecided = false
        for proto in MultiplexServiceConfiguration.DetectedProtocol.all {
            switch proto.matches(bytes) {
            case true?:
                return proto
            case nil:
                undecided = true
            case false?:
                break
            }
        }
        return !undecided || bytes.count >= Self.decisionLength ? .some(nil) : nil
    }
}
