import Foundation
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
    /// `proxy_max_header_size`, in bytes (16...65551).
    public var maximumHeaderSize: Int = 4096
    /// `proxy_tls_ports`: PROXY ports where TLS starts right after the header.
    public var proxyTLSPorts: [Int] = []
    /// `proxy_tls_certificate`: a PEM file with the certificate chain for ``proxyTLSPorts``.
    public var tlsCertificatePath: String?
    /// `proxy_tls_key`: a PEM file with the private key for ``proxyTLSPorts``.
    public var tlsKeyPath: String?
    /// `metrics_port`: where Prometheus text is served at `/metrics`; `nil` for none.
    public var metricsPort: Int?
    /// `metrics_interfaces`; `nil` means ``interfaces``.
    public var metricsInterfaces: [String]?
    /// `shutdown_grace_period`, in seconds: how long connections may drain on SIGINT/SIGTERM.
    public var shutdownGracePeriod: Double = 10
    /// `forward_services`: services that relay connections to another server, by name.
    public var forwardServices: [String: ForwardServiceConfiguration] = [:]
    /// `multiplex_services`: services that pick another service by the protocol a connection
    /// starts with, by name.
    public var multiplexServices: [String: MultiplexServiceConfiguration] = [:]

    /// The defaults: no services, loopback interfaces, loopback trusted.
    public init() {}

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
            case "proxy_max_header_size": maximumHeaderSize = try value.integer(key)
            case "proxy_tls_ports": proxyTLSPorts = try value.ports(key)
            case "proxy_tls_certificate": tlsCertificatePath = try value.string(key)
            case "proxy_tls_key": tlsKeyPath = try value.string(key)
            case "metrics_port": metricsPort = try value.port(key)
            case "metrics_interfaces": metricsInterfaces = try value.strings(key)
            case "shutdown_grace_period": shutdownGracePeriod = try value.seconds(key)
            case "forward_services": forwardServices = try value.forwardServices(key)
            case "multiplex_services": multiplexServices = try value.multiplexServices(key)
            case _ where key.hasSuffix("_ports") && key.count > 6:
                servicePorts[String(key.dropLast(6))] = try value.ports(key)
            case _ where key.hasSuffix("_interfaces") && key.count > 11:
                serviceInterfaces[String(key.dropLast(11))] = try value.strings(key)
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

    func port(_ key: String) throws(NetProxyConfigurationError) -> Int {
        let port = try integer(key)
        guard (0...65535).contains(port) else { throw NetProxyConfigurationError("\(key): \(port) is not a port (0-65535)") }
        return port
    }

    func ports(_ key: String) throws(NetProxyConfigurationError) -> [Int] {
        try list(key, of: "ports") { item, path throws(NetProxyConfigurationError) in try item.port(path) }
    }

    func mappings(_ key: String) throws(NetProxyConfigurationError) -> [Int: String] {
        guard case .object(let object) = self else {
            throw NetProxyConfigurationError("\(key): expected an object of port to service name")
        }
        var result: [Int: String] = [:]
        for portText in object.keys.sorted() {
            guard let port = Int(portText), String(port) == portText, (0...65535).contains(port) else {
                throw NetProxyConfigurationError("\(key): \"\(portText)\" is not a port (0-65535)")
            }
            result[port] = try object[portText]!.string("\(key).\(portText)")
        }
        return result
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
            for field in fields.keys.sorted() where field != required {
                guard try apply(&service, field, fields[field]!, "\(path).\(field)") else {
                    throw NetProxyConfigurationError("\(path): unknown key \"\(field)\"")
                }
            }
            services[name] = service
        }
        return services
    }

    /// `forward_services`: name -> `{"target", "send_proxy", "pass_tlvs", "crc32c", "transparent",
    /// "connect_timeout"}`.
    func forwardServices(_ key: String) throws(NetProxyConfigurationError) -> [String: ForwardServiceConfiguration] {
        try services(key, required: "target") { target, path throws(NetProxyConfigurationError) in
            let (host, port) = try ForwardServiceConfiguration.parseTarget(try target.string(path), path)
            return ForwardServiceConfiguration(targetHost: host, targetPort: port)
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

/// A configuration the host cannot run, naming the key or entry at fault.
public struct NetProxyConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String

    /// Creates an error with its message.
    public init(_ description: String) {
        self.description = description
    }
}
