import Atomics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOProxyProtocol

/// One listener's connections: how many are open against its `max_connections`, its series in
/// the metrics, and its log of timeouts, limits and pauses. Shared by the listener's sockets
/// (one per event loop) and kept across reloads with them.
final class ListenerLoad: Sendable {
    /// How the listener is named in metrics and logs: `127.0.0.1:7000`, `[::1]:7000`,
    /// `unix:/run/netproxy/c2s.sock`.
    let label: String
    let budget: ConnectionBudget
    let metrics: ListenerMetrics
    private let log: RateLimitedLog
    private let logger: Logger
    private let open = ManagedAtomic<Int>(0)
    private let limit: ManagedAtomic<Int>
    /// A pause at a limit: since when, and what the log has said of pauses.
    private struct Pause {
        var since: NIODeadline?
        /// Whether this pause's start was logged (then its end is, too).
        var logged = false
        var lastLogged = NIODeadline.uptimeNanoseconds(0)
        /// Pauses not logged since the last line.
        var unlogged = 0
    }

    /// The least time between two "stops accepting" lines of a listener.
    static let pauseLogInterval = TimeAmount.seconds(10)

    private let pause = NIOLockedValueBox(Pause())
    /// Whether the listener's connections count against the process's `max_connections`; the
    /// metrics endpoint's do not, so that it can be scraped when the process is full.
    private let countsInProcess: Bool
    /// Counts and logs a refused PROXY connection, a header timeout as a timeout too.
    let onRefusal: @Sendable (ProxyProtocolError) -> Void

    init(
        label: String, maxConnections: Int?, countsInProcess: Bool = true, budget: ConnectionBudget, metrics: HostMetrics, log: RateLimitedLog,
        logger: Logger
    ) {
        self.label = label
        self.countsInProcess = countsInProcess
        self.budget = budget
        let series = metrics.listener(label)
        self.metrics = series
        self.log = log
        self.logger = logger
        self.limit = ManagedAtomic(maxConnections ?? .max)
        self.onRefusal = { error in
            // Routine (a health check), not a refusal: counted as closed before the header.
            if error.closedEarly {
                metrics.rejected(reason: ProxyProtocolError.Reason.closedBeforeHeader.name)
                logger.debug("connection closed before its first byte on \(label)")
                return
            }
            metrics.rejected(reason: error.reason.name)
            if error.reason == .headerTimeout { series.timedOut(.header) }
            log.warning("refused \(error) on \(label)")
        }
    }

    /// Sets this listener's own `max_connections` (`nil`: only the process's), on a reload.
    func setMaxConnections(_ value: Int?) {
        limit.store(value ?? .max, ordering: .relaxed)
        budget.wakeWaiting()
    }

    /// How many more connections the listener may take now, under its limit and the process's.
    var room: Int {
        let own = limit.load(ordering: .relaxed) - open.load(ordering: .sequentiallyConsistent)
        return countsInProcess ? min(own, budget.room) : own
    }

    /// Counts a connection just accepted: `false` (and nothing counted) when the listener or the
    /// process is at its limit.
    func admit() -> Bool {
        if open.wrappingIncrementThenLoad(ordering: .sequentiallyConsistent) > limit.load(ordering: .relaxed) {
            open.wrappingDecrement(ordering: .sequentiallyConsistent)
            return false
        }
        guard !countsInProcess || budget.admit() else {
            open.wrappingDecrement(ordering: .sequentiallyConsistent)
            return false
        }
        metrics.opened()
        return true
    }

    /// An admitted connection closed.
    func release() {
        // The gauge first: it then never reads more than the count it follows.
        metrics.closed()
        open.wrappingDecrement(ordering: .sequentiallyConsistent)
        if countsInProcess {
            budget.release()
        } else {
            budget.wakeWaitingIfAny()
        }
    }

    /// Counts and logs (rate-limited) a connection closed at a limit.
    func limited(_ limit: ConnectionLimit, _ message: @autoclosure () -> String) {
        metrics.limited(limit)
        log.warning(message())
    }

    /// Counts and logs (rate-limited) a connection closed at a deadline.
    func timedOut(_ kind: TimeoutKind, _ message: @autoclosure () -> String) {
        metrics.timedOut(kind)
        log.warning("closing \(message()) on \(label)")
    }

    /// A socket of the listener stopped accepting at a limit. The first pause of an episode
    /// says so, at most once per ``pauseLogInterval`` (a limit reached and left many times a
    /// second would otherwise fill the log); the pauses in between are counted in the next line.
    func paused() {
        let now = NIODeadline.now()
        let unlogged = pause.withLockedValue { state -> Int? in
            guard state.since == nil else { return nil }
            state.since = now
            guard now - state.lastLogged >= Self.pauseLogInterval else {
                state.unlogged += 1
                return nil
            }
            defer { state.unlogged = 0 }
            state.lastLogged = now
            state.logged = true
            return state.unlogged
        }
        guard let unlogged else { return }
        let reason =
            budget.room <= 0 && countsInProcess
            ? "the process holds \(budget.openConnections) connection(s), its max_connections"
            : "it holds \(open.load(ordering: .relaxed)) connection(s), its max_connections"
        let more = unlogged > 0 ? " (\(unlogged) shorter pause(s) since the last line)" : ""
        logger.warning("\(label) stops accepting: \(reason); new connections wait in the backlog\(more)")
    }

    /// A socket of the listener accepts again; the first after a logged pause says so.
    func resumed() {
        let since = pause.withLockedValue { state -> NIODeadline? in
            defer {
                state.since = nil
                state.logged = false
            }
            return state.logged ? state.since : nil
        }
        guard let since else { return }
        logger.notice("\(label) accepts again after \((NIODeadline.now() - since).nanoseconds / 1_000_000) ms at its limit")
    }
}

extension ProxyProtocolError {
    /// A connection closed or reset before its first byte (a balancer's connect-only health
    /// check, sometimes gone so soon that even its address is unknown): routine, not a refusal.
    var closedEarly: Bool {
        receivedBytes == 0 && [.closedBeforeHeader, .unknownSource, .readFailed].contains(reason)
    }
}
