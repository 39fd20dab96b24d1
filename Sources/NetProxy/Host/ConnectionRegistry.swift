import NIOConcurrencyHelpers
import NIOCore

/// The host's open connections, for the shutdown to drain and then close.
///
/// One shard per event loop: a connection stays on the loop that accepted it, so registering it
/// and its leaving take a lock that no other loop takes (only a shutdown does).
final class ConnectionRegistry: Sendable {
    private struct Shard {
        var accepting = true
        var channels: [ObjectIdentifier: Channel] = [:]
    }

    private let shards: [ObjectIdentifier: NIOLockedValueBox<Shard>]
    /// For a channel on a loop outside the group (none in the host; kept for safety).
    private let other = NIOLockedValueBox(Shard())

    init(group: EventLoopGroup) {
        shards = Dictionary(uniqueKeysWithValues: group.makeIterator().map { (ObjectIdentifier($0), NIOLockedValueBox(Shard())) })
    }

    /// Registers `channel` until it closes; `false` once the registry stopped accepting (the
    /// host is shutting down), and the caller closes it.
    func add(_ channel: Channel) -> Bool {
        let shard = shards[ObjectIdentifier(channel.eventLoop)] ?? other
        let id = ObjectIdentifier(channel)
        let added = shard.withLockedValue { shard in
            guard shard.accepting else { return false }
            shard.channels[id] = channel
            return true
        }
        guard added else { return false }
        channel.closeFuture.whenComplete { _ in
            shard.withLockedValue { _ = $0.channels.removeValue(forKey: id) }
        }
        return true
    }

    /// Takes no more connections, and returns those open now.
    func stopAccepting() -> [Channel] {
        all { shard in
            shard.accepting = false
            return Array(shard.channels.values)
        }
    }

    /// The connections open now.
    var open: [Channel] {
        all { Array($0.channels.values) }
    }

    private func all(_ body: (inout Shard) -> [Channel]) -> [Channel] {
        (Array(shards.values) + [other]).flatMap { $0.withLockedValue(body) }
    }
}
