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
    /// `proxy_header_timeout`, in seconds.
    public var headerTimeout: Double = 10
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
    public var maximumHeaderSize: Int = 4096
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
    /// `shutdown_grace_period`, in seconds: how long connections may drain on SIGINT/SIGTERM.
    public var shutdownGracePeriod: Double = 10
    /// `idle_timeout`, in seconds: a connection with no byte read and none written for this long
    /// is closed. Ten minutes (nginx's `proxy_timeout`): far above an XMPP client's 60 s
    /// whitespace keep-alive and common clients' 300 s ping interval, short enough that
    /// abandoned connections do not pile up.
    public var idleTimeout: Double = 600
    /// `<service>_idle_timeout`: ``idleTimeout`` for the regular ports of one service (or of
    /// the metrics endpoint, as `metrics_idle_timeout`).
    public var serviceIdleTimeouts: [String: Double] = [:]
    /// `tls_handshake_timeout`, in seconds: from the end of the PROXY header (or the accept, for
    /// a direct client) to a finished TLS handshake on ``proxyTLSPorts``.
    public var tlsHandshakeTimeout: Double = 10
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

    /// The configuration `netproxy` runs without arguments: echo, whoami and http, each on a
    /// regular port and a PROXY port, on loopback only.
    public static var defaultServe: NetProxyConfiguration {
        var configuration = NetProxyConfiguration()
        configuration.servicePorts = ["echo": [7000], "whoami": [7001], "http": [8080]]
        configuration.proxyPortMappings = [17000: "echo", 17001: "whoami", 18080: "http"]
        return configuration
    }

    /// Parses a JSON configuration file's contents. Unknown keys are errors, so a misspelt key
    /// cannot silently leave a default (such as the trust list) in force; so are a key given
    /// twice and a trailing comma, which other readers resolve by guessing.
    public init(json: Data) throws(NetProxyConfigurationError) {
        let document = try StrictJSONParser.parse(Array(json))
        guard case .object(let root) = document else {
            throw NetProxyConfigurationError("the configuration must be a JSON object")
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
            case "proxy_max_header_size": maximumHeaderSize = try value.integer(key)
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
            case _ where key.hasSuffix("_ports") && key.count > 6:
                servicePorts[String(key.dropLast(6))] = try value.ports(key)
            case _ where key.hasSuffix("_interfaces") && key.count > 11:
                serviceInterfaces[String(key.dropLast(11))] = try value.strings(key)
            case _ where key.hasSuffix("_idle_timeout") && key.count > 13:
                serviceIdleTimeouts[String(key.dropLast(13))] = try value.seconds(key)
            default:
                throw NetProxyConfigurationError("unknown key \"\(key)\"")
            }
        }
    }
}

/// Any JSON value, so each setting can be checked with an error that names its key.
enum JSONInput {
    case null
    case bool(Bool)
    case integer(Int)
    case number(Double)
    case string(String)
    case array([JSONInput])
    case object([String: JSONInput])

    var isArray: Bool {
        if case .array = self { return true }
        return false
    }

    func string(_ key: String) throws(NetProxyConfigurationError) -> String {
        guard case .string(let text) = self else { throw NetProxyConfigurationError("\(key): expected a string") }
        return text
    }

    func strings(_ key: String) throws(NetProxyConfigurationError) -> [String] {
        try list(key, of: "strings") { item, path throws(NetProxyConfigurationError) in try item.string(path) }
    }

    /// A list whose items are read by `item`, each error naming `key[index]`.
    private func list<Item>(
        _ key: String, of what: String, _ item: (JSONInput, String) throws(NetProxyConfigurationError) -> Item
    ) throws(NetProxyConfigurationError) -> [Item] {
        guard case .array(let items) = self else { throw NetProxyConfigurationError("\(key): expected a list of \(what)") }
        var result: [Item] = []
        for (index, element) in items.enumerated() {
            result.append(try item(element, "\(key)[\(index)]"))
        }
        return result
    }

    func integer(_ key: String) throws(NetProxyConfigurationError) -> Int {
        guard case .integer(let value) = self else { throw NetProxyConfigurationError("\(key): expected a whole number") }
        return value
    }

    func seconds(_ key: String) throws(NetProxyConfigurationError) -> Double {
        let value: Double
        switch self {
        case .integer(let integer): value = Double(integer)
        case .number(let number): value = number
        default: throw NetProxyConfigurationError("\(key): expected a number of seconds")
        }
        guard value > 0 else { throw NetProxyConfigurationError("\(key): expected a number of seconds above 0") }
        return value
    }

    /// A limit on a number of connections: a whole number from 1 to ``NetProxyConfiguration/maximumCount``.
    func count(_ key: String) throws(NetProxyConfigurationError) -> Int {
        let value = try integer(key)
        try NetProxyConfiguration.checkCount(value, key)
        return value
    }

    func port(_ key: String) throws(NetProxyConfigurationError) -> Int {
        let port = try integer(key)
        guard (0...65535).contains(port) else { throw NetProxyConfigurationError("\(key): \(port) is not a port (0-65535)") }
        return port
    }

    func ports(_ key: String) throws(NetProxyConfigurationError) -> [Int] {
        try list(key, of: "ports") { item, path throws(NetProxyConfigurationError) in try item.port(path) }
    }

    func mappings(_ key: String) throws(NetProxyConfigurationError) -> [Int: String] {
        try byPort(key, of: "service name") { value, path throws(NetProxyConfigurationError) in try value.string(path) }
    }
}

extension JSONInput {
    /// An object of service name -> settings object, as `forward_services` and
    /// `multiplex_services` are: `make` builds an entry from its required field, `apply` reads
    /// each other field and answers whether it knows it. Errors name `key.name.field`.
    private func services<Service>(
        _ key: String, required: String,
        make: (JSONInput, _ path: String) throws(NetProxyConfigurationError) -> Service,
        apply: (inout Service, _ field: String, JSONInput, _ path: String) throws(NetProxyConfigurationError) -> Bool
    ) throws(NetProxyConfigurationError) -> [String: Service] {
        guard case .object(let entries) = self else { throw NetProxyConfigurationError("\(key): expected an object of service name to settings") }
        var services: [String: Service] = [:]
        for name in entries.keys.sorted() {
            let path = "\(key).\(name)"
            guard case .object(let fields) = entries[name]! else { throw NetProxyConfigurationError("\(path): expected an object") }
            guard let first = fields[required] else { throw NetProxyConfigurationError("\(path): \"\(required)\" is missing") }
            var service = try make(first, "\(path).\(required)")
            try entries[name]!.fields(path) { field, value, fieldPath throws(NetProxyConfigurationError) in
                if field == required { return true }
                return try apply(&service, field, value, fieldPath)
            }
            services[name] = service
        }
        return services
    }

    /// `forward_services`: name -> `{"target", "send_proxy", "pass_tlvs", "crc32c", "transparent",
    /// "connect_timeout"}`.
    func forwardServices(_ key: String) throws(NetProxyConfigurationError) -> [String: ForwardServiceConfiguration] {
        try services(key, required: "target") { target, path throws(NetProxyConfigurationError) in
            // One "host:port", or a list of them (one per address family).
            func parse(_ item: JSONInput, _ itemPath: String) throws(NetProxyConfigurationError) -> ForwardTarget {
                let (host, port) = try ForwardServiceConfiguration.parseTarget(try item.string(itemPath), itemPath)
                return ForwardTarget(host: host, port: port)
            }
            let targets = try target.isArray ? target.list(path, of: "\"host:port\" targets", parse) : [parse(target, path)]
            return ForwardServiceConfiguration(targets: targets)
        } apply: { service, field, value, path throws(NetProxyConfigurationError) in
            switch field {
            case "send_proxy":
                switch try value.string(path) {
                case "none": service.sendProxy = nil
                case "v1": service.sendProxy = .v1
                case "v2": service.sendProxy = .v2
                case let text: throw NetProxyConfigurationError("\(path): \"\(text)\" is not none, v1 or v2")
                }
            case "pass_tlvs": service.passTLVs = try value.bool(path)
            case "crc32c": service.crc32c = try value.bool(path)
            case "transparent": service.transparent = try value.bool(path)
            case "connect_timeout": service.connectTimeout = try value.seconds(path)
            case "idle_timeout": service.idleTimeout = try value.seconds(path)
            case "max_pending_connects": service.maxPendingConnects = try value.count(path)
            default: return false
            }
            return true
        }
    }

    /// `multiplex_services`: name -> `{"routes": {protocol: service}, "default", "detect_timeout"}`.
    func multiplexServices(_ key: String) throws(NetProxyConfigurationError) -> [String: MultiplexServiceConfiguration] {
        try services(key, required: "default") { defaultService, path throws(NetProxyConfigurationError) in
            MultiplexServiceConfiguration(routes: [:], defaultService: try defaultService.string(path))
        } apply: { service, field, value, path throws(NetProxyConfigurationError) in
            switch field {
            case "detect_timeout": service.detectTimeout = try value.seconds(path)
            case "idle_timeout": service.idleTimeout = try value.seconds(path)
            case "max_pending_detections": service.maxPendingDetections = try value.count(path)
            case "routes":
                guard case .object(let routes) = value else { throw NetProxyConfigurationError("\(path): expected an object") }
                for protocolName in routes.keys.sorted() {
                    guard let proto = MultiplexServiceConfiguration.DetectedProtocol(name: protocolName) else {
                        let known = MultiplexServiceConfiguration.DetectedProtocol.all.map(\.name).joined(separator: ", ")
                        throw NetProxyConfigurationError("\(path): unknown protocol \"\(protocolName)\" (known: \(known))")
                    }
                    service.routes[proto] = try routes[protocolName]!.string("\(path).\(protocolName)")
                }
            default: return false
            }
            return true
        }
    }

    func bool(_ key: String) throws(NetProxyConfigurationError) -> Bool {
        guard case .bool(let value) = self else { throw NetProxyConfigurationError("\(key): expected true or false") }
        return value
    }
}

extension JSONInput {
    /// `[1, 2]`, `[1]` or `[2]`.
    func versions(_ key: String) throws(NetProxyConfigurationError) -> ProxyVersions {
        let numbers = try list(key, of: "versions (1, 2)") { item, path throws(NetProxyConfigurationError) -> ProxyVersions in
            switch try item.integer(path) {
            case 1: return .v1
            case 2: return .v2
            case let other: throw NetProxyConfigurationError("\(path): \(other) is not a PROXY protocol version (1 or 2)")
            }
        }
        let versions = numbers.reduce(into: ProxyVersions()) { $0.formUnion($1) }
        guard !versions.isEmpty else { throw NetProxyConfigurationError("\(key): no version would be accepted") }
        return versions
    }

    /// `"accept"` (true) or `"reject"` (false).
    func acceptOrReject(_ key: String) throws(NetProxyConfigurationError) -> Bool {
        switch try string(key) {
        case "accept": return true
        case "reject": return false
        case let text: throw NetProxyConfigurationError("\(key): \"\(text)\" is not accept or reject")
        }
    }

    /// An object keyed by port number, each value (`what`) read by `read`; errors name `key.port`.
    fileprivate func byPort<Value>(
        _ key: String, of what: String, _ read: (JSONInput, String) throws(NetProxyConfigurationError) -> Value
    ) throws(NetProxyConfigurationError) -> [Int: Value] {
        guard case .object(let object) = self else { throw NetProxyConfigurationError("\(key): expected an object of port to \(what)") }
        var result: [Int: Value] = [:]
        for portText in object.keys.sorted() {
            guard let port = Int(portText), String(port) == portText, (0...65535).contains(port) else {
                throw NetProxyConfigurationError("\(key): \"\(portText)\" is not a port (0-65535)")
            }
            result[port] = try read(object[portText]!, "\(key).\(portText)")
        }
        return result
    }

    /// Reads each field of an object with `apply`, which answers whether it knows the field.
    fileprivate func fields(
        _ key: String, _ apply: (_ field: String, JSONInput, _ path: String) throws(NetProxyConfigurationError) -> Bool
    ) throws(NetProxyConfigurationError) {
        guard case .object(let fields) = self else { throw NetProxyConfigurationError("\(key): expected an object") }
        for field in fields.keys.sorted() {
            guard try apply(field, fields[field]!, "\(key).\(field)") else {
                throw NetProxyConfigurationError("\(key): unknown key \"\(field)\"")
            }
        }
    }

    /// `proxy_port_options`: port -> `{"trusted_proxies", "versions", "local", "unspecified",
    /// "header_timeout", "direct_clients", "idle_timeout", "tls_handshake_timeout",
    /// "max_connections", "max_connections_per_source"}`.
    func portOptions(_ key: String) throws(NetProxyConfigurationError) -> [Int: ProxyPortOptions] {
        try byPort(key, of: "options") { value, path throws(NetProxyConfigurationError) in
            var options = ProxyPortOptions()
            try value.fields(path) { field, value, path throws(NetProxyConfigurationError) in
                switch field {
                case "trusted_proxies": options.trustedProxies = try value.strings(path)
                case "direct_clients": options.directClients = try value.strings(path)
                case "tls_handshake_timeout": options.tlsHandshakeTimeout = try value.seconds(path)
                default: return try options.readHeaderPolicy(field, value, path)
                }
                return true
            }
            return options
        }
    }

    /// `proxy_unix_sockets`: path -> service name, or -> `{"service", "mode", "owner", "group",
    /// "versions", "local", "unspecified", "header_timeout", "idle_timeout", "max_connections",
    /// "max_connections_per_source"}` with the mode as an octal string such as `"0660"`.
    func unixSockets(_ key: String) throws(NetProxyConfigurationError) -> [String: ProxyUnixSocket] {
        guard case .object(let object) = self else { throw NetProxyConfigurationError("\(key): expected an object of path to service") }
        var result: [String: ProxyUnixSocket] = [:]
        for path in object.keys.sorted() {
            let entryKey = "\(key).\(path)"
            if case .string(let service) = object[path]! {
                result[path] = ProxyUnixSocket(service: service)
                continue
            }
            guard case .object(let fields) = object[path]!, let service = fields["service"] else {
                throw NetProxyConfigurationError("\(entryKey): expected a service name, or an object with \"service\"")
            }
            var socket = ProxyUnixSocket(service: try service.string("\(entryKey).service"))
            try object[path]!.fields(entryKey) { field, value, fieldPath throws(NetProxyConfigurationError) in
                switch field {
                case "service": break
                case "mode":
                    let text = try value.string(fieldPath)
                    guard (3...4).contains(text.count), let mode = Int(text, radix: 8), (0...0o777).contains(mode) else {
                        throw NetProxyConfigurationError("\(fieldPath): \"\(text)\" is not an octal file mode such as \"0660\"")
                    }
                    socket.mode = mode
                case "owner": socket.owner = try value.string(fieldPath)
                case "group": socket.group = try value.string(fieldPath)
                default: return try socket.options.readHeaderPolicy(field, value, fieldPath)
                }
                return true
            }
            result[path] = socket
        }
        return result
    }

    /// `proxy_tls_certificates`: server name -> `{"certificate", "key"}`.
    func certificates(_ key: String) throws(NetProxyConfigurationError) -> [String: TLSCertificateFiles] {
        guard case .object(let object) = self else { throw NetProxyConfigurationError("\(key): expected an object of server name to files") }
        var result: [String: TLSCertificateFiles] = [:]
        for name in object.keys.sorted() {
            let entryKey = "\(key).\(name)"
            var certificate: String?
            var privateKey: String?
            try object[name]!.fields(entryKey) { field, value, path throws(NetProxyConfigurationError) in
                switch field {
                case "certificate": certificate = try value.string(path)
                case "key": privateKey = try value.string(path)
                default: return false
                }
                return true
            }
            guard let certificate, let privateKey else {
                throw NetProxyConfigurationError("\(entryKey): expected both \"certificate\" and \"key\"")
            }
            result[name] = TLSCertificateFiles(certificatePath: certificate, keyPath: privateKey)
        }
        return result
    }
}

extension ProxyPortOptions {
    /// Reads `versions`, `local`, `unspecified`, `header_timeout`, `idle_timeout`,
    /// `max_connections` or `max_connections_per_source`; `false` for another field.
    mutating func readHeaderPolicy(_ field: String, _ value: JSONInput, _ path: String) throws(NetProxyConfigurationError) -> Bool {
        switch field {
        case "versions": acceptedVersions = try value.versions(path)
        case "local": acceptsLocal = try value.acceptOrReject(path)
        case "unspecified": unspecifiedAddresses = try value.acceptOrReject(path) ? .useSocketAddresses : .reject
        case "header_timeout": headerTimeout = try value.seconds(path)
        case "idle_timeout": idleTimeout = try value.seconds(path)
        case "max_connections": maxConnections = try value.count(path)
        case "max_connections_per_source": maxConnectionsPerSource = try value.count(path)
        default: return false
        }
        return true
    }
}

extension ForwardServiceConfiguration {
    /// `host:port` or `[IPv6]:port`; the error names `key`.
    static func parseTarget(_ text: String, _ key: String) throws(NetProxyConfigurationError) -> (String, Int) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw NetProxyConfigurationError("\(key): \"\(text)\" is not [IPv6]:port")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
            guard ProxyIPv6Address(host) != nil else { throw NetProxyConfigurationError("\(key): \"\(host)\" is not an IPv6 address") }
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw NetProxyConfigurationError("\(key): \"\(text)\" is not host:port (IPv6 addresses go in brackets)")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else { throw NetProxyConfigurationError("\(key): \"\(text)\" has no host") }
        if !text.hasPrefix("[") && ProxyIPv4Address(host) == nil {
            // A name: letters, digits and hyphens in dot-separated labels of 1 to 63, and not all
            // digits and dots (a mistyped IPv4 address).
            let labels = host.split(separator: ".", omittingEmptySubsequences: false)
            let validLabels = labels.allSatisfy { label in
                (1...63).contains(label.count) && label.first != "-" && label.last != "-"
                    && label.unicodeScalars.allSatisfy {
                        ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "-"
                    }
            }
            guard validLabels, !host.allSatisfy({ $0.isNumber || $0 == "." }) else {
                throw NetProxyConfigurationError("\(key): \"\(host)\" is neither an IP address nor a host name")
            }
        }
        guard let port = Int(portText), String(port) == portText, (1...65535).contains(port) else {
            throw NetProxyConfigurationError("\(key): \"\(portText)\" is not a port (1-65535)")
        }
        return (String(host), port)
    }
}

/// Settings of one PROXY port (`proxy_port_options`); each `nil` keeps the global setting.
public struct ProxyPortOptions: Hashable, Sendable {
    /// `trusted_proxies`, in place of `proxy_trusted_proxies`.
    public var trustedProxies: [String]?
    /// `versions`, in place of `proxy_versions`.
    public var acceptedVersions: ProxyVersions?
    /// `local`, in place of `proxy_local`.
    public var acceptsLocal: Bool?
    /// `unspecified`, in place of `proxy_unspecified`.
    public var unspecifiedAddresses: ProxyProtocolConfiguration.UnspecifiedAddressPolicy?
    /// `header_timeout` in seconds, in place of `proxy_header_timeout`.
    public var headerTimeout: Double?
    /// `direct_clients`, in place of `proxy_direct_clients`.
    public var directClients: [String]?
    /// `idle_timeout` in seconds, in place of the global `idle_timeout`.
    public var idleTimeout: Double?
    /// `tls_handshake_timeout` in seconds, in place of the global one (TLS ports only).
    public var tlsHandshakeTimeout: Double?
    /// `max_connections`: connections open at once on this listener, besides the process's
    /// limit. At it the listener stops accepting until one closes.
    public var maxConnections: Int?
    /// `max_connections_per_source`, in place of the global one for this listener's
    /// connections (still counted against the source's connections in the whole process).
    public var maxConnectionsPerSource: Int?

    /// Options for one port; each one left `nil` keeps the global setting.
    public init(
        trustedProxies: [String]? = nil, acceptedVersions: ProxyVersions? = nil, acceptsLocal: Bool? = nil,
        unspecifiedAddresses: ProxyProtocolConfiguration.UnspecifiedAddressPolicy? = nil, headerTimeout: Double? = nil,
        directClients: [String]? = nil, idleTimeout: Double? = nil, tlsHandshakeTimeout: Double? = nil, maxConnections: Int? = nil,
        maxConnectionsPerSource: Int? = nil
    ) {
        self.trustedProxies = trustedProxies
        self.acceptedVersions = acceptedVersions
        self.acceptsLocal = acceptsLocal
        self.unspecifiedAddresses = unspecifiedAddresses
        self.headerTimeout = headerTimeout
        self.directClients = directClients
        self.idleTimeout = idleTimeout
        self.tlsHandshakeTimeout = tlsHandshakeTimeout
        self.maxConnections = maxConnections
        self.maxConnectionsPerSource = maxConnectionsPerSource
    }
}

/// A UNIX socket listener of the PROXY protocol (`proxy_unix_sockets`).
public struct ProxyUnixSocket: Hashable, Sendable {
    /// The service that takes its connections.
    public var service: String
    /// The socket file's permissions. Default `0o660`: the owner and the group may connect.
    public var mode: Int
    /// The socket file's owner, a user name or number; `nil` leaves the process's user.
    public var owner: String?
    /// The socket file's group, a group name or number; `nil` leaves the process's group.
    public var group: String?

    /// What the socket file gets: mode, owner and group (not the service).
    var fileAttributes: [String?] { [String(mode, radix: 8), owner, group] }

    /// How headers are read here where not as the global keys say (`versions`, `local`,
    /// `unspecified`, `header_timeout`). Every peer is trusted (the file's permissions decide who
    /// connects), so `trustedProxies` and `directClients` must stay `nil`.
    public var options: ProxyPortOptions

    /// A listener for `service`.
    public init(
        service: String, mode: Int = 0o660, owner: String? = nil, group: String? = nil, options: ProxyPortOptions = ProxyPortOptions()
    ) {
        self.service = service
        self.mode = mode
        self.owner = owner
        self.group = group
        self.options = options
    }
}

/// A certificate chain and its private key, both PEM files.
public struct TLSCertificateFiles: Hashable, Sendable {
    /// The certificate chain, leaf first.
    public var certificatePath: String
    /// The private key.
    public var keyPath: String

    /// The two files.
    public init(certificatePath: String, keyPath: String) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
    }
}

/// A configuration the host cannot run, naming the key or entry at fault.
public struct NetProxyConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String

    /// Creates an error with its message.
    public init(_ description: String) {
        self.description = description
    }
}
