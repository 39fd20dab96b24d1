import Atomics

/// Connections of one service in a phase that must not pile up (a forward's connect, a
/// multiplexer's detection), against the service's limit, over all event loops.
final class PendingCount: Sendable {
    let limit: Int
    private let count = ManagedAtomic<Int>(0)

    init(limit: Int) {
        self.limit = limit
    }

    /// Enters the phase: `false` (and nothing counted) when `limit` connections are in it.
    func enter() -> Bool {
        if count.wrappingIncrementThenLoad(ordering: .relaxed) > limit {
            count.wrappingDecrement(ordering: .relaxed)
            return false
        }
        return true
    }

    /// Leaves the phase; once per successful ``enter()``.
    func leave() {
        count.wrappingDecrement(ordering: .relaxed)
    }
}
