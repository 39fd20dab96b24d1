import CoreMetrics
import NIOProxyProtocol
import Prometheus
import ProxyProtocol

/// The host's counters, kept in its own Prometheus registry (so several hosts, as in tests, do
/// not share or fight over the global metrics system), which `metrics_port` serves; they are
/// also reported to the swift-metrics factory the host was given.
///
/// Every counter is made once, up front: making one goes through the registry's lock, and
/// counting happens on every connection. They are exported from zero.
struct HostMetrics: Sendable {
    /// The values of the `reason` label, exported from zero: the PROXY handler's reasons, and
    /// the host's own.
    static let rejectionReasons = ProxyProtocolError.Reason.all.map(\.name) + ["unmapped_port", "forward_loop"]

    /// The values of the `errno` label of accept errors, exported from zero.
    static let acceptErrnos = ["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"]

    let registry = PrometheusCollectorRegistry()
    private let factory: any MetricsFactory
    private let acceptedProxy: CoreMetrics.Counter
    private let acceptedRegular: CoreMetrics.Counter
    private let headers: [ProxyVersion: CoreMetrics.Counter]
    private let local: [ProxyVersion: CoreMetrics.Counter]
    private let rejections: [String: CoreMetrics.Counter]
    private let acceptErrors: [String: CoreMetrics.Counter]
    private let reloads: (success: CoreMetrics.Counter, failure: CoreMetrics.Counter)

    /// Counters in a registry of their own, and reported to `external` too unless it is
    /// swift-metrics' no-op factory (the global one before the process bootstraps another).
    init(reportingTo external: any MetricsFactory = NOOPMetricsHandler.instance) {
        let own = PrometheusMetricsFactory(registry: registry)
        let factory: any MetricsFactory = external is NOOPMetricsHandler ? own : MultiplexMetricsHandler(factories: [own, external])
        self.factory = factory
        func counter(_ label: String, _ name: String, _ value: String) -> CoreMetrics.Counter {
            CoreMetrics.Counter(label: label, dimensions: [(name, value)], factory: factory)
        }
        acceptedProxy = counter("netproxy_connections_accepted_total", "listener", "proxy")
        acceptedRegular = counter("netproxy_connections_accepted_total", "listener", "regular")
        var headers: [ProxyVersion: CoreMetrics.Counter] = [:]
        var local: [ProxyVersion: CoreMetrics.Counter] = [:]
        for version in ProxyVersion.allCases {
            headers[version] = counter("netproxy_proxy_headers_total", "version", version.description)
            local[version] = counter("netproxy_proxy_local_total", "version", version.description)
        }
        self.headers = headers
        self.local = local
        var rejections: [String: CoreMetrics.Counter] = [:]
        for reason in Self.rejectionReasons {
            rejections[reason] = counter("netproxy_connections_rejected_total", "reason", reason)
        }
        self.rejections = rejections
        var acceptErrors: [String: CoreMetrics.Counter] = [:]
        for name in Self.acceptErrnos {
            acceptErrors[name] = counter("netproxy_accept_errors_total", "errno", name)
        }
        self.acceptErrors = acceptErrors
        reloads = (counter("netproxy_reloads_total", "result", "success"), counter("netproxy_reloads_total", "result", "failure"))
        // Which version runs, as Prometheus exporters say it: a gauge at 1 labelled with it.
        let buildInfo = MetricNameDescriptor(
            namespace: "netproxy", metricName: "build", unitName: "info", helpText: "The running NetProxy's version, in the label.")
        registry.makeGauge(descriptor: buildInfo, labels: [("version", NetProxyHost.version)]).set(Int64(1))
    }

    /// `netproxy_access_log_dropped_total`: access log lines lost, to a full buffer or a failed write.
    func accessLogDropped() -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: "netproxy_access_log_dropped_total", dimensions: [], factory: factory)
    }

    /// A reload of the configuration succeeded, or changed nothing because it failed.
    func reloaded(success: Bool) {
        (success ? reloads.success : reloads.failure).increment()
    }

    /// A connection was accepted on a PROXY or a regular listener.
    func accepted(proxyListener: Bool) {
        (proxyListener ? acceptedProxy : acceptedRegular).increment()
    }

    /// A PROXY header was accepted.
    func proxied(_ header: ProxyHeader) {
        (header.command == .local ? local : headers)[header.version]!.increment()
    }

    /// A connection was closed before reaching a service.
    func rejected(reason: String) {
        let counter =
            rejections[reason]
            ?? CoreMetrics.Counter(label: "netproxy_connections_rejected_total", dimensions: [("reason", reason)], factory: factory)
        counter.increment()
    }

    /// A listener's `accept` failed with `errno`.
    func acceptFailed(errno: String) {
        let counter =
            acceptErrors[errno]
            ?? CoreMetrics.Counter(label: "netproxy_accept_errors_total", dimensions: [("errno", errno)], factory: factory)
        counter.increment()
    }

    /// The values of the `reason` label of forward failures, exported from zero.
    static let forwardFailureReasons = ["refused", "timeout", "unreachable", "resolve", "transparent", "header", "resources", "other"]

    /// Makes a forward service's failure counters, so they are exported from zero.
    func registerForwardService(_ name: String) {
        for reason in Self.forwardFailureReasons {
            _ = forwardFailures(service: name, reason: reason)
        }
    }

    /// A forward service could not connect to its target.
    func forwardFailed(service: String, reason: String) {
        forwardFailures(service: service, reason: reason).increment()
    }

    private func forwardFailures(service: String, reason: String) -> CoreMetrics.Counter {
        CoreMetrics.Counter(
            label: "netproxy_forward_failures_total", dimensions: [("service", service), ("reason", reason)], factory: factory)
    }

    /// `netproxy_multiplex_routed_total{service,by}`: connections a multiplexer handed to
    /// `service`, chosen `by` (`alpn`, `sni`, `tls`, `http`, `xmpp`, `ssh`, `default`, `timeout`).
    /// A multiplex service makes its counters when it is made, so they are exported from zero.
    func multiplexRouted(service: String, by: String) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: "netproxy_multiplex_routed_total", dimensions: [("service", service), ("by", by)], factory: factory)
    }

    /// A listener's series (connections open, timeouts, connections closed at a limit), all
    /// exported from zero. Made when the listener is bound.
    func listener(_ label: String) -> ListenerMetrics {
        ListenerMetrics(label: label, factory: factory)
    }

    /// The Prometheus text exposition of every counter.
    var exposition: String { registry.emitToString() }
}

/// Why the host closed a connection at a deadline: the `kind` label of
/// `netproxy_timeouts_total`.
enum TimeoutKind: String, CaseIterable, Sendable {
    case idle
    case tlsHandshake = "tls_handshake"
    case connect
    case header
}

/// Which limit a connection was closed at: the `limit` label of
/// `netproxy_connections_limited_total`.
enum ConnectionLimit: String, CaseIterable, Sendable {
    case maxConnections = "max_connections"
    case maxConnectionsPerSource = "max_connections_per_source"
    case pendingConnects = "pending_connects"
    case pendingDetections = "pending_detections"
}

/// One listener's series: `netproxy_connections{listener}` (open now),
/// `netproxy_timeouts_total{listener,kind}` and `netproxy_connections_limited_total{listener,limit}`.
struct ListenerMetrics: Sendable {
    private let open: CoreMetrics.Meter
    private let timeouts: [TimeoutKind: CoreMetrics.Counter]
    private let limits: [ConnectionLimit: CoreMetrics.Counter]

    init(label: String, factory: any MetricsFactory) {
        // The registry hands back the gauge a listener of the same name had before (a port given
        // up and taken again), whose connections may still be open: it is not reset here.
        open = CoreMetrics.Meter(label: "netproxy_connections", dimensions: [("listener", label)], factory: factory)
        var timeouts: [TimeoutKind: CoreMetrics.Counter] = [:]
        for kind in TimeoutKind.allCases {
            timeouts[kind] = CoreMetrics.Counter(
                label: "netproxy_timeouts_total", dimensions: [("listener", label), ("kind", kind.rawValue)], factory: factory)
        }
        self.timeouts = timeouts
        var limits: [ConnectionLimit: CoreMetrics.Counter] = [:]
        for limit in ConnectionLimit.allCases {
            limits[limit] = CoreMetrics.Counter(
                label: "netproxy_connections_limited_total", dimensions: [("listener", label), ("limit", limit.rawValue)], factory: factory)
        }
        self.limits = limits
    }

    func opened() { open.increment() }
    func closed() { open.decrement() }
    func timedOut(_ kind: TimeoutKind) { timeouts[kind]!.increment() }
    func limited(_ limit: ConnectionLimit) { limits[limit]!.increment() }
}
