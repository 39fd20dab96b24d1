import NIOCore
import ProxyProtocol

/// The server side of a PROXY header, without I/O: events in, an action out.
///
/// ``ProxyProtocolServerHandler`` feeds it what happens on the channel and does what it answers;
/// the rules (trust before any read, policies, which refusal for which event) live here alone.
struct ProxyHeaderStateMachine {
    enum State {
        /// Added; the channel is not active yet.
        case idle
        /// Waiting for the rest of the header; `received` holds what has arrived.
        case awaitingHeader(received: ByteBuffer?)
        /// The header was accepted; the handler is leaving the pipeline.
        case accepted
        /// The connection was refused.
        case refused
    }

    /// What the handler must do.
    enum Action {
        /// Nothing.
        case none
        /// Arm the header timeout and ask for the first read.
        case startReading
        /// Ask for more bytes (the channel may not read by itself).
        case readMore
        /// Refuse: cancel the timeout, fail the outcome with this error, close.
        case refuse(ProxyProtocolError.Reason, receivedBytes: Int, underlying: (any Error)?)
        /// The header is complete and allowed: hand the connection on, then pass `remainder` (the
        /// client's first bytes, possibly none) after it.
        case accept(ProxyHeader, length: Int, remainder: ByteBuffer)
    }

    private(set) var state = State.idle
    private let parser: ProxyHeaderParser
    private let configuration: ProxyProtocolConfiguration

    init(configuration: ProxyProtocolConfiguration) {
        self.configuration = configuration
        self.parser = ProxyHeaderParser(
            acceptedVersions: configuration.acceptedVersions, maximumHeaderLength: configuration.maximumHeaderLength
        )
    }

    /// Whether a `read` may pass towards the socket: never before the peer is found trusted.
    var allowsReads: Bool {
        switch state {
        case .awaitingHeader, .accepted: return true
        case .idle, .refused: return false
        }
    }

    /// Whether events belong to the handlers after this one (the header was accepted).
    var isAccepted: Bool {
        if case .accepted = state { return true }
        return false
    }

    private var receivedBytes: Int {
        if case .awaitingHeader(let received) = state { return received?.readableBytes ?? 0 }
        return 0
    }

    /// The channel is active (or the handler was added to an active one): check the peer.
    mutating func channelActive(peer: SocketAddress?) -> Action {
        guard case .idle = state else { return .none }
        guard let peer else { return refuse(.unknownSource) }
        guard configuration.trustedProxies.contains(peer) else { return refuse(.untrustedSource) }
        state = .awaitingHeader(received: nil)
        return .startReading
    }

    /// Bytes arrived.
    mutating func bytesReceived(_ bytes: ByteBuffer) -> Action {
        guard case .awaitingHeader(var received) = state else { return .none }
        // Free the state's reference first, so appending does not copy the buffer.
        state = .awaitingHeader(received: nil)
        if received == nil {
            received = bytes
        } else {
            var bytes = bytes
            received!.writeBuffer(&bytes)
        }
        state = .awaitingHeader(received: received)
        let result: ProxyHeaderParseResult
        do {
            result = try parser.parse(received!)
        } catch {
            return refuse(.invalidHeader, underlying: error)
        }
        guard case .complete(let header, let length) = result else { return .none }
        if header.command == .local && !configuration.acceptsLocal {
            return refuse(.localNotAccepted)
        }
        if header.command == .proxy && header.addresses == .unspecified && configuration.unspecifiedAddresses == .reject {
            return refuse(.unspecifiedAddressesNotAccepted)
        }
        var remainder = received!
        remainder.moveReaderIndex(forwardBy: length)
        state = .accepted
        return .accept(header, length: length, remainder: remainder)
    }

    /// A read finished; while the header is incomplete, keep reading.
    mutating func readComplete() -> Action {
        if case .awaitingHeader = state { return .readMore }
        return .none
    }

    /// The peer closed its side (half-closure) or the channel went inactive.
    mutating func inputClosed() -> Action {
        refuseIfWaiting(.closedBeforeHeader)
    }

    /// The header timeout fired.
    mutating func timedOut() -> Action {
        refuseIfWaiting(.headerTimeout)
    }

    /// The server asked connections to wind down.
    mutating func quiesceRequested() -> Action {
        refuseIfWaiting(.shuttingDown)
    }

    /// An error reached the handler.
    mutating func errorCaught(_ error: any Error) -> Action {
        refuseIfWaiting(.readFailed, underlying: error)
    }

    /// The handler is leaving the pipeline; only after acceptance is that its own doing.
    mutating func handlerRemoved() -> Action {
        refuseIfWaiting(.removedBeforeHeader)
    }

    /// The accepted header's addresses cannot be used.
    mutating func addressUnusable(_ error: any Error) -> Action {
        guard case .accepted = state else { return .none }
        return refuse(.unusableAddress, underlying: error)
    }

    /// The pipeline would not take the handler that keeps the connection's information.
    mutating func pipelineFailed(_ error: any Error) -> Action {
        guard case .accepted = state else { return .none }
        return refuse(.pipelineFailed, underlying: error)
    }

    private mutating func refuseIfWaiting(_ reason: ProxyProtocolError.Reason, underlying: (any Error)? = nil) -> Action {
        switch state {
        case .idle, .awaitingHeader: return refuse(reason, underlying: underlying)
        case .accepted, .refused: return .none
        }
    }

    private mutating func refuse(_ reason: ProxyProtocolError.Reason, underlying: (any Error)? = nil) -> Action {
        let count = receivedBytes
        state = .refused
        return .refuse(reason, receivedBytes: count, underlying: underlying)
    }
}
