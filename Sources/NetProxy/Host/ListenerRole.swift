import Atomics
import NIOConcurrencyHelpers
import NIOSSL

/// What a connection on a listener gets. The host reads it for every new connection, so a
/// reload changes it for the next connection and never for one already accepted. A class, so
/// that reading it on that path costs one reference, not a copy of every field.
final class ListenerRole: Sendable, AtomicReference {
    /// The plan's ``ListenerPlan/Kind`` with its service looked up.
    enum Kind: Sendable {
        case metrics
        /// A regular port; `nil` never happens (the plan checks every name) but closes.
        case service(NetProxyService?)
        /// A PROXY port or socket; the service is `nil` when it has no mapping.
        case proxy(NetProxyService?, HostPlan.ProxyPolicy)
    }

    let plan: ListenerPlan
    let kind: Kind
    /// TLS after the header (or at once, for a direct client).
    let tls: NIOSSLContext?
    /// Whether the service asked to see the client's half-close.
    let allowsHalfClosure: Bool
    /// Deadlines and budgets of its connections.
    let connections: ConnectionPolicy

    init(plan: ListenerPlan, kind: Kind, tls: NIOSSLContext?, allowsHalfClosure: Bool, connections: ConnectionPolicy) {
        self.plan = plan
        self.kind = kind
        self.tls = tls
        self.allowsHalfClosure = allowsHalfClosure
        self.connections = connections
    }
}

/// The role of a listener's sockets, shared by their child channel initializers and replaced by
/// a reload.
final class ListenerSlot: Sendable {
    /// Read for every connection by the listener's sockets on every loop: an atomic reference,
    /// not a lock they would all share.
    private let current: ManagedAtomic<ListenerRole>
    private let loadReference = ManagedAtomicLazyReference<ListenerLoad>()

    init(_ role: ListenerRole) {
        current = ManagedAtomic(role)
    }

    var role: ListenerRole {
        get { current.load(ordering: .acquiring) }
        set { current.store(newValue, ordering: .releasing) }
    }

    /// The listener's load, set once its address is known (after the bind, before the first
    /// accept), then read without a lock.
    var load: ListenerLoad {
        get { loadReference.load()! }
        set { _ = loadReference.storeIfNilThenLoad(newValue) }
    }
}
