import Atomics
import NIOConcurrencyHelpers
import NIOCore
import NIOProxyProtocol
import ProxyProtocol

/// Who a connection is counted against by `max_connections_per_source`: an IPv4 address, or
/// an IPv6 /64 (one subscriber's network, which a client can fill with addresses at will).
/// IPv4-mapped IPv6 addresses count as the IPv4 address.
enum SourceKey: Hashable, Sendable {
    case v4(UInt32)
    case v6Prefix(UInt64)

    /// `nil` for a UNIX socket, which has no source to count.
    init?(_ address: SocketAddress) {
        switch ProxyIPAddress(address)?.unmapped {
        case .v4(let v4)?: self = .v4(v4.rawValue)
        case .v6(let v6)?: self = .v6Prefix(v6.high)
        case nil: return nil
        }
    }
}

/// What the whole process holds: connections open (against `max_connections`) and
/// connections per source (against `max_connections_per_source`); and the listeners that
/// stopped accepting at a limit, to wake when a connection closes.
final class ConnectionBudget: Sendable {
    private let open = ManagedAtomic<Int>(0)
    private let limit: ManagedAtomic<Int>
    /// Connections per source, in shards by the source's hash: each accept and close locks one
    /// shard, so loops rarely wait for each other.
    private let bySource = (0..<16).map { _ in NIOLockedValueBox<[SourceKey: Int]>([:]) }
    /// Accept gates waiting for room, by identity; ``paused`` mirrors their number so that a
    /// close checks an atomic, not a lock.
    private let waiting = NIOLockedValueBox<[ObjectIdentifier: @Sendable () -> Void]>([:])
    private let paused = ManagedAtomic<Int>(0)

    init(maxConnections: Int) {
        limit = ManagedAtomic(maxConnections)
    }

    /// `max_connections`; a reload changes it for the connections that follow.
    var maxConnections: Int {
        get { limit.load(ordering: .relaxed) }
        set {
            limit.store(newValue, ordering: .relaxed)
            wakeWaiting()
        }
    }

    /// Connections open in the process now.
    var openConnections: Int { open.load(ordering: .relaxed) }

    /// How many more connections the process may take now.
    var room: Int { limit.load(ordering: .relaxed) - open.load(ordering: .sequentiallyConsistent) }

    /// Counts a new connection: `false` (and nothing counted) when the process is at its limit.
    func admit() -> Bool {
        if open.wrappingIncrementThenLoad(ordering: .sequentiallyConsistent) > limit.load(ordering: .relaxed) {
            open.wrappingDecrement(ordering: .sequentiallyConsistent)
            return false
        }
        return true
    }

    /// A counted connection closed.
    func release() {
        open.wrappingDecrement(ordering: .sequentiallyConsistent)
        wakeWaitingIfAny()
    }

    /// Wakes the gates waiting for room, if there are any (a listener's own count went down).
    func wakeWaitingIfAny() {
        if paused.load(ordering: .sequentiallyConsistent) > 0 { wakeWaiting() }
    }

    /// Counts a connection from `source`: `false` (and nothing counted) when it already holds
    /// `limit`.
    func admit(_ source: SourceKey, limit: Int) -> Bool {
        shard(source).withLockedValue { counts in
            let count = counts[source, default: 0]
            guard count < limit else { return false }
            counts[source] = count + 1
            return true
        }
    }

    /// A connection counted for `source` closed.
    func release(_ source: SourceKey) {
        shard(source).withLockedValue { counts in
            let count = counts[source, default: 1] - 1
            counts[source] = count > 0 ? count : nil
        }
    }

    /// Calls `wake` once, at the next close or change of a limit: an accept gate waits this way
    /// for room. The gate registers, then checks again, so no close slips between its check and
    /// its registration unseen.
    private func shard(_ source: SourceKey) -> NIOLockedValueBox<[SourceKey: Int]> {
        bySource[Int(UInt(bitPattern: source.hashValue) % UInt(bySource.count))]
    }

    func waitForRoom(_ id: ObjectIdentifier, _ wake: @escaping @Sendable () -> Void) {
        let added = waiting.withLockedValue { waiting in
            waiting.updateValue(wake, forKey: id) == nil
        }
        if added { paused.wrappingIncrement(ordering: .sequentiallyConsistent) }
    }

    /// Wakes every gate waiting for room; each checks again and waits again if still full.
    func wakeWaiting() {
        let woken = waiting.withLockedValue { waiting in
            defer { waiting = [:] }
            return Array(waiting.values)
        }
        guard !woken.isEmpty else { return }
        paused.wrappingDecrement(by: woken.count, ordering: .sequentiallyConsistent)
        for wake in woken { wake() }
    }
}
