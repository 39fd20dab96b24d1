import Logging

/// What the host lends every runtime, service and connection handler it makes: one value, rather
/// than each of its parts passed by hand through every layer.
struct HostContext: Sendable {
    /// The host's counters.
    let metrics: HostMetrics
    /// Warnings about refused connections, rate-limited.
    let refusals: RateLimitedLog
    /// Where connections to async services go, for the host to run.
    let asyncConnections: AsyncStream<AsyncServiceConnection>.Continuation
    /// The forwards' connections to their targets, refused if they arrive back.
    let outgoing: OutgoingConnections
    /// One line per ended connection, when the configuration asks for it.
    let accessLog: AccessLog
    /// The host's event loops: a TCP listener has a socket on each.
    let eventLoops: Int
    let logger: Logger
}
