import NIOCore
import NIOProxyProtocol
import NIOSSL

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

extension NetProxyHost {
    func setUp(_ channel: Channel, as role: ListenerRole, guard connectionGuard: ConnectionGuard) throws {
        track(channel)
        let pipeline = channel.pipeline.syncOperations
        let sourceLimit = role.connections.maxConnectionsPerSource
        switch role.kind {
        case .metrics:
            // A request trickled in byte by byte is not activity; a complete one is.
            connectionGuard.countsReads = false
            connectionGuard.startIdleClock()
            try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
            try pipeline.addHandler(
                HTTPResponder { [metrics] head in
                    guard head.method == .GET || head.method == .HEAD, head.uri.split(separator: "?").first == "/metrics" else {
                        return .init(status: .notFound, contentType: "text/plain; charset=utf-8", body: "not found; try GET /metrics\n")
                    }
                    return .init(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.exposition)
                })
        case .service(let service):
            metrics.accepted(proxyListener: false)
            try pipeline.addHandler(
                ServiceDispatcher(
                    service: service, guard: connectionGuard, sourceLimit: sourceLimit, logger: logger, metrics: metrics,
                    asyncConnections: asyncConnections.continuation))
        case .proxy(let service, let policy):
            metrics.accepted(proxyListener: true)
            // A direct client is served as on a regular port: no header is read.
            let direct = policy.directClients.map { clients in channel.remoteAddress.map(clients.contains) ?? false } ?? false
            if !direct {
                // Accepted headers are counted by the dispatcher, which looks the header up anyway.
                var onRefusal = connectionGuard.listener.onRefusal
                if let record = connectionGuard.record {
                    // The record is the event loop's, as is this closure's only call.
                    let record = NIOLoopBound(record, eventLoop: channel.eventLoop)
                    onRefusal = { [onRefusal] error in
                        record.value.ended(error.closedEarly ? "client_closed" : "refused", reason: error.reason.name)
                        onRefusal(error)
                    }
                }
                try pipeline.addHandler(ProxyProtocolServerHandler(configuration: policy.header, onRefusal: onRefusal))
            }
            if let tls = role.tls {
                try pipeline.addHandler(NIOSSLServerHandler(context: tls))
                if let timeout = role.connections.tlsHandshakeTimeout {
                    try pipeline.addHandler(TLSHandshakeDeadline(guard: connectionGuard, timeout: timeout))
                }
            }
            try pipeline.addHandler(
                ServiceDispatcher(
                    service: service, guard: connectionGuard, sourceLimit: sourceLimit, logger: logger, metrics: metrics,
                    asyncConnections: asyncConnections.continuation))
        }
    }

    /// Whether `channel` is one of this host's own forward connections, arrived back here (a
    /// loop, or a relay into a PROXY port that would launder trust); it is then closed, and
    /// counted and logged as a `forward_loop` rejection.
    func isOwnForward(_ channel: Channel, on listener: ListenerLoad) -> Bool {
        guard let peer = channel.remoteAddress, outgoing.isOurs(peer: peer, localAddress: channel.localAddress) else { return false }
        metrics.rejected(reason: "forward_loop")
        refusals.warning(
            "refused a connection from \(peer.displayText) on \(listener.label): it is this host's own forward connection (a forward whose target leads back to this host)"
        )
        channel.close(promise: nil)
        return true
    }

    func track(_ channel: Channel) {
        if !connections.add(channel) { channel.close(promise: nil) }
    }
}
