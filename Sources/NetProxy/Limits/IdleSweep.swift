import NIOConcurrencyHelpers
import NIOCore

/// The connections of one event loop that have a deadline, checked together every ``period``.
///
/// A timer per connection would cost a heap insertion on every accept and, on every close, a
/// linear search of the loop's scheduled tasks (SwiftNIO cancels by scanning), which grows with
/// the number of connections held. Here a connection's deadline is two stored values; joining
/// and leaving are an array append and a swap-remove, and one repeating task per loop, running
/// only while the loop has connections, compares them with the clock. A deadline is therefore
/// met within ``period``. Deadlines are in the event loop's time (`EventLoop.now`), like the
/// sweep's schedule.
final class IdleSweep {
    /// How often deadlines are checked: the most a connection outlives its deadline by.
    static let period = TimeAmount.milliseconds(250)

    private let eventLoop: EventLoop
    private var members: [ConnectionGuard] = []
    private var next: Scheduled<Void>?

    init(eventLoop: EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Starts checking `member`'s deadlines.
    func add(_ member: ConnectionGuard) {
        member.sweepIndex = members.count
        members.append(member)
        if next == nil { scheduleSweep() }
    }

    /// Stops checking `member`, in constant time.
    func remove(_ member: ConnectionGuard) {
        let index = member.sweepIndex
        guard index >= 0, index < members.count, members[index] === member else { return }
        let last = members.removeLast()
        if index < members.count {
            members[index] = last
            last.sweepIndex = index
        }
        member.sweepIndex = -1
    }

    private func scheduleSweep() {
        next = eventLoop.assumeIsolated().scheduleTask(in: Self.period) { [self] in sweep() }
    }

    private func sweep() {
        // Stopped on a round with nothing to check, so an idle loop does not wake up.
        guard !members.isEmpty else {
            next = nil
            return
        }
        defer { scheduleSweep() }
        let now = eventLoop.now
        // Expiring closes the channel, which removes it from `members`: collect first.
        var expired: [(ConnectionGuard, ConnectionGuard.Expiry)] = []
        for member in members {
            if let expiry = member.expiry(at: now) { expired.append((member, expiry)) }
        }
        for (member, expiry) in expired {
            member.expire(expiry)
        }
    }
}

/// One ``IdleSweep`` per event loop of a group, each used on its own loop only.
final class IdleSweeps: Sendable {
    /// A sweep with the loop it belongs to. Unchecked: it is made off the loop (before the
    /// host starts, when nothing runs on it), and from then on touched on its loop only, which
    /// ``sweep(for:)`` asserts.
    private struct Owned: @unchecked Sendable {
        let sweep: IdleSweep
    }

    private let byLoop: [ObjectIdentifier: Owned]
    /// Loops outside the group (never in the host; kept safe for other callers).
    private let others = NIOLockedValueBox<[ObjectIdentifier: Owned]>([:])

    init(group: EventLoopGroup) {
        var byLoop: [ObjectIdentifier: Owned] = [:]
        for loop in group.makeIterator() {
            byLoop[ObjectIdentifier(loop)] = Owned(sweep: IdleSweep(eventLoop: loop))
        }
        self.byLoop = byLoop
    }

    /// The sweep of `eventLoop`; call on that loop.
    func sweep(for eventLoop: EventLoop) -> IdleSweep {
        eventLoop.assertInEventLoop()
        if let owned = byLoop[ObjectIdentifier(eventLoop)] { return owned.sweep }
        return others.withLockedValue { others in
            if let owned = others[ObjectIdentifier(eventLoop)] { return owned.sweep }
            let owned = Owned(sweep: IdleSweep(eventLoop: eventLoop))
            others[ObjectIdentifier(eventLoop)] = owned
            return owned.sweep
        }
    }
}
