import Foundation
import NIOProxyProtocol
import ProxyProtocol

/// The host's configuration, with the keys and conventions of Prosody's mod_net_proxy.
///
/// ```json
/// {
///   "interfaces": ["127.0.0.1", "::1"],
///   "c2s_ports": [5222],
///   "proxy_port_mappings": { "15222": "c2s", "15269": "s2s" },
///   "proxy_trusted_proxies": ["127.0.0.1", "10.0.0.0/8"]
/// }
/// ```
///
/// A service is enabled when the configuration gives it `<service>_ports` (an empty list: no
/// regular port) or maps a PROXY port to it. Port 0 binds any free port (for tests).
public struct NetProxyConfiguration: Hashable, Sendable {
    /// Addresses every listener binds unless its own `_interfaces` key says otherwise.
    public var interfaces: [String] = ["127.0.0.1", "::1"]
    /// `<service>_ports`: each service's regular (non-PROXY) ports.
    public var servicePorts: [String: [Int]] = [:]
    /// `<service>_interfaces`: where a service's regular ports bind.
    public var serviceInterfaces: [String: [String]] = [:]
    /// `proxy_ports`; `nil` means the ports named in ``proxyPortMappings``.
    public var proxyPorts: [Int]?
    /// `proxy_interfaces`; `nil` means ``interfaces``.
    public var proxyInterfaces: [String]?
    /// `proxy_port_mappings`: which service takes the connections of each PROXY port.
    public var proxyPortMappings: [Int: String] = [:]
    /// `proxy_trusted_proxies`: addresses and CIDR networks allowed to send headers. Empty trusts
    /// everyone (with a warning at start-up), as the module does.
    public var trustedProxies: [String] = ["127.0.0.1", "::1"]
    /// `proxy_header_timeout`, in seconds in the file.
    public var headerTimeout: Duration = .seconds(10)
    /// `proxy_versions`: the header versions accepted, `[1, 2]` in the file.
    public var acceptedVersions: ProxyVersions = .all
    /// `proxy_local` (`"accept"` or `"reject"`): whether version 2 `LOCAL` headers (a balancer's
    /// health checks) are accepted.
    public var acceptsLocal: Bool = true
    /// `proxy_unspecified` (`"accept"` or `"reject"`): what to do with headers without addresses
    /// (v2 `UNSPEC`, v1 `UNKNOWN`); accepted, the connection keeps its socket addresses.
    public var unspecifiedAddresses: ProxyProtocolConfiguration.UnspecifiedAddressPolicy = .useSocketAddresses
    /// `proxy_direct_clients`: addresses and CIDR networks that connect to PROXY ports directly,
    /// without a header (monitoring, a sidecar). They are served at once with their socket
    /// address, as on a regular port. Overlapping ``trustedProxies`` is an error.
    public var directClients: [String] = []
    /// `proxy_port_options`: settings of single PROXY ports that override the global ones.
    public var proxyPortOptions: [Int: ProxyPortOptions] = [:]
    /// `proxy_unix_sockets`: UNIX socket listeners of the PROXY protocol, by path. A peer there
    /// counts as a trusted proxy: the socket file's permissions decide who may connect.
    public var proxyUnixSockets: [String: ProxyUnixSocket] = [:]
    /// `proxy_max_header_size`, in bytes (16...65551).
    public var maximumHeaderLength: Int = 4096
    /// `proxy_tls_ports`: PROXY ports where TLS starts right after the header.
    public var proxyTLSPorts: [Int] = []
    /// `proxy_tls_certificate`: a PEM file with the certificate chain for ``proxyTLSPorts``.
    public var tlsCertificatePath: String?
    /// `proxy_tls_key`: a PEM file with the private key for ``proxyTLSPorts``.
    public var tlsKeyPath: String?
    /// `proxy_tls_certificates`: more certificates for ``proxyTLSPorts``, chosen by the name a
    /// client asks for (SNI): an exact name such as `xmpp.example.com`, or a wildcard such as
    /// `*.example.com` for one label. Clients without SNI, or asking for another name, get
    /// ``tlsCertificatePath``.
    public var tlsCertificates: [String: TLSCertificateFiles] = [:]
    /// `proxy_tls_alpn`: the application protocols offered by ALPN, in order of preference
    /// (such as `["xmpp-client"]`); empty for no ALPN.
    public var tlsALPN: [String] = []
    /// `metrics_port`: where Prometheus text is served at `/metrics`; `nil` for none.
    public var metricsPort: Int?
    /// `metrics_interfaces`; `nil` means ``interfaces``.
    public var metricsInterfaces: [String]?
    /// `shutdown_grace_period`, in seconds in the file: how long connections may drain on SIGINT/SIGTERM.
    public var shutdownGracePeriod: Duration = .seconds(10)
    /// `idle_timeout`, in seconds in the file: a connection with no byte read and none written for this long
    /// is closed. Ten minutes (nginx's `proxy_timeout`): far above an XMPP client's 60 s
    /// whitespace keep-alive and common clients' 300 s ping interval, short enough that
    /// abandoned connections do not pile up.
    public var idleTimeout: Duration = .seconds(600)
    /// `<service>_idle_timeout`: ``idleTimeout`` for the regular ports of one service (or of
    /// the metrics endpoint, as `metrics_idle_timeout`).
    public var serviceIdleTimeouts: [String: Duration] = [:]
    /// `tls_handshake_timeout`, in seconds in the file: from the end of the PROXY header (or the accept, for
    /// a direct client) to a finished TLS handshake on ``proxyTLSPorts``.
    public var tlsHandshakeTimeout: Duration = .seconds(10)
    /// `max_connections`: connections open at once in the whole process. At the limit the
    /// listeners stop accepting (new connections wait in the kernel's backlog) until one closes.
    /// `nil`: half the descriptor limit less 64 (at least 16), since a forwarded connection
    /// takes two descriptors.
    public var maxConnections: Int?
    /// `max_connections_per_source`: connections open at once from one client, counted over the
    /// whole process: the PROXY header's source on PROXY ports, the socket's peer elsewhere;
    /// IPv6 clients by /64. Over it a connection is closed at accept (after the header on a
    /// PROXY port). `nil`: 100; when ``maxConnections`` is left to its default too, at most a
    /// quarter of it, so that under a low descriptor limit one client cannot take every place.
    public var maxConnectionsPerSource: Int?
    /// `forward_services`: services that relay connections to another server, by name.
    public var forwardServices: [String: ForwardServiceConfiguration] = [:]
    /// `multiplex_services`: services that pick another service by the protocol a connection
    /// starts with, by name.
    public var multiplexServices: [String: MultiplexServiceConfiguration] = [:]

    /// `access_log`: where to write one line per ended connection (logfmt: time, listener,
    /// service, client, proxy, target, bytes each way, duration, how it ended): a file
    /// path, or `"stdout"` for standard output; `nil` (the default) for no access log. A file is
    /// opened for appending at start and again at each reload, so that a log rotated away is
    /// followed by a new file.
    public var accessLog: String?

    /// The defaults: no services, loopback interfaces, loopback trusted.
    public init() {}

    /// The largest value a connection limit may take.
    static let maximumCount = 10_000_000

    /// A limit on a number of connections: from 1 to ``maximumCount``; the error names `key`.
    static func checkCount(_ value: Int, _ key: String) throws(NetProxyConfigurationError) {
        guard (1...maximumCount).contains(value) else {
            throw NetProxyConfigurationError("\(key): \(value) is not a number of connections from 1 to \(maximumCount)")
        }
    }

    /// Echo, whoami and http, each on a regular port and a PROXY port, on loopback only: what
    /// `netproxy` serves without a configuration file.
    public static var builtinServicesOnLoopback: NetProxyConfiguration {
        var configuration = NetProxyConfiguration()
        configuration.servicePorts = ["echo": [7000], "whoami": [7001], "http": [8080]]
        configuration.proxyPortMappings = [17000: "echo", 17001: "whoami", 18080: "http"]
        return configuration
    }

    /// The top-level keys with fixed names, for the suggestion an unknown key gets.
    static let topLevelKeys = [
        "interfaces",
        "proxy_ports",
        "proxy_interfaces",
        "proxy_port_mappings",
        "proxy_trusted_proxies",
        "proxy_header_timeout",
        "proxy_versions",
        "proxy_local",
        "proxy_unspecified",
        "proxy_direct_clients",
        "proxy_port_options",
        "proxy_unix_sockets",
        "proxy_tls_certificates",
        "proxy_tls_alpn",
        "proxy_max_header_size",
        "proxy_tls_ports",
        "proxy_tls_certificate",
        "proxy_tls_key",
        "metrics_port",
        "metrics_interfaces",
        "shutdown_grace_period",
        "idle_timeout",
        "tls_handshake_timeout",
        "max_connections",
        "max_connections_per_source",
        "forward_services",
        "multiplex_services",
        "access_log",
    ]

    /// Parses a JSON configuration file's contents. Unknown keys are errors, so a misspelt key
    /// cannot silently leave a default (such as the trust list) in force (the error suggests the
    /// nearest known key); so are a key given twice and a trailing comma, which other readers
    /// resolve by guessing. A key that starts with `_` is a comment, here and in each service's,
    /// port's and socket's settings.
    public init(json: Data) throws(NetProxyConfigurationError) {
        let document = try StrictJSONParser.parse(Array(json))
        guard case .object(let root) = document else {
            throw NetProxyConfigurationError(.syntax, key: nil, "the configuration must be a JSON object")
        }
        for key in root.keys.sorted() {
            let value = root[key]!
            switch key {
            case "interfaces": interfaces = try value.strings(key)
            case "proxy_ports": proxyPorts = try value.ports(key)
            case "proxy_interfaces": proxyInterfaces = try value.strings(key)
            case "proxy_port_mappings": proxyPortMappings = try value.mappings(key)
            case "proxy_trusted_proxies": trustedProxies = try value.strings(key)
            case "proxy_header_timeout": headerTimeout = try value.seconds(key)
            case "proxy_versions": acceptedVersions = try value.versions(key)
            case "proxy_local": acceptsLocal = try value.acceptOrReject(key)
            case "proxy_unspecified": unspecifiedAddresses = try value.acceptOrReject(key) ? .useSocketAddresses : .reject
            case "proxy_direct_clients": directClients = try value.strings(key)
            case "proxy_port_options": proxyPortOptions = try value.portOptions(key)
            case "proxy_unix_sockets": proxyUnixSockets = try value.unixSockets(key)
            case "proxy_tls_certificates": tlsCertificates = try value.certificates(key)
            case "proxy_tls_alpn": tlsALPN = try value.strings(key)
            case "proxy_max_header_size": maximumHeaderLength = try value.integer(key)
            case "proxy_tls_ports": proxyTLSPorts = try value.ports(key)
            case "proxy_tls_certificate": tlsCertificatePath = try value.string(key)
            case "proxy_tls_key": tlsKeyPath = try value.string(key)
            case "metrics_port": metricsPort = try value.port(key)
            case "metrics_interfaces": metricsInterfaces = try value.strings(key)
            case "shutdown_grace_period": shutdownGracePeriod = try value.seconds(key)
            case "idle_timeout": idleTimeout = try value.seconds(key)
            case "tls_handshake_timeout": tlsHandshakeTimeout = try value.seconds(key)
            case "max_connections": maxConnections = try value.count(key)
            case "max_connections_per_source": maxConnectionsPerSource = try value.count(key)
            case "forward_services": forwardServices = try value.forwardServices(key)
            case "multiplex_services": multiplexServices = try value.multiplexServices(key)
            case "access_log":
                let path = try value.string(key)
                guard !path.isEmpty else { throw NetProxyConfigurationError("\(key): expected a file path or \"stdout\", found an empty string") }
                accessLog = path
            case _ where key.hasSuffix("_ports") && key.count > 6:
                servicePorts[String(key.dropLast(6))] = try value.ports(key)
            case _ where key.hasSuffix("_interfaces") && key.count > 11:
                serviceInterfaces[String(key.dropLast(11))] = try value.strings(key)
            case _ where key.hasSuffix("_idle_timeout") && key.count > 13:
                serviceIdleTimeouts[String(key.dropLast(13))] = try value.seconds(key)
            case _ where key.hasPrefix("_"):
                // A comment: the file's own notes ("_comment", "_why"), ignored.
                continue
            default:
                let suggestion = ConfigurationChecks.closest(to: key, among: Self.topLevelKeys).map { "; did you mean \"\($0)\"?" } ?? ""
                throw NetProxyConfigurationError(.unknownKey, key: key, "unknown key \"\(key)\"\(suggestion)")
            }
        }
    }
}
