import CoreMetrics
import NIOProxyProtocol
import Prometheus
import ProxyProtocol

/// The host's counters, kept in its own Prometheus registry (so several hosts, as in tests, do
/// not share or fight over the global metrics system).
struct HostMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        self.factory = PrometheusMetricsFactory(registry: registry)
    }

    /// A connection was accepted on a listener (`proxy` or `regular`).
    func accepted(listener: String) {
        count("netproxy_connections_accepted_total", [("listener", listener)])
    }

    /// A PROXY header was accepted.
    func proxied(_ header: ProxyHeader) {
        if header.command == .local {
            count("netproxy_proxy_local_total", [("version", header.version.description)])
        } else {
            count("netproxy_proxy_headers_total", [("version", header.version.description)])
        }
    }

    /// A connection was closed before reaching a service.
    func rejected(reason: String) {
        count("netproxy_connections_rejected_total", [("reason", reason)])
    }

    private func count(_ label: String, _ dimensions: [(String, String)]) {
        Counter(label: label, dimensions: dimensions, factory: factory).increment()
    }

    /// The Prometheus text exposition of every counter.
    var exposition: String { registry.emitToString() }
}

extension ProxyProtocolError.Reason {
    /// A short label value for metrics.
    var metricLabel: String {
        switch self {
        case .untrustedSource: return "untrusted_source"
        case .unknownSource: return "unknown_source"
        case .invalidHeader: return "invalid_header"
        case .headerTimeout: return "header_timeout"
        case .closedBeforeHeader: return "closed_before_header"
        case .readFailed: return "read_failed"
        case .quiesced: return "shutting_down"
        case .localNotAccepted: return "local_not_accepted"
        case .unspecifiedAddressesNotAccepted: return "unspecified_not_accepted"
        case .unusableAddress: return "unusable_address"
        }
    }
}
