import ProxyProtocol

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

    /// A timeout or grace period, written as a number of seconds.
    func seconds(_ key: String) throws(NetProxyConfigurationError) -> Duration {
        let value: Double
        switch self {
        case .integer(let integer): value = Double(integer)
        case .number(let number): value = number
        default: throw NetProxyConfigurationError("\(key): expected a number of seconds")
        }
        guard value > 0 else { throw NetProxyConfigurationError("\(key): expected a number of seconds above 0") }
        guard let duration = Duration(configurationSeconds: value) else {
            throw NetProxyConfigurationError("\(key): \(value) is not a number of seconds from above 0 to 86400")
        }
        return duration
    }

    /// A limit on a number of connections: a whole number from 1 to ``NetProxyConfiguration/maximumCount``.
    func count(_ key: String) throws(NetProxyConfigurationError) -> Int {
        let value = try integer(key)
        try NetProxyConfiguration.checkCount(value, key)
        return value
    }

    func port(_ key: String) throws(NetProxyConfigurationError) -> Int {
        let port = try integer(key)
        try ConfigurationChecks.port(port, key)
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
    /// each other field and answers whether it knows it, `known` lists them all for "did you mean".
    /// Errors name `key.name.field`.
    private func services<Service>(
        _ key: String, required: String, known: [String],
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
            try entries[name]!.fields(path, known: known) { field, value, fieldPath throws(NetProxyConfigurationError) in
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
        try services(key, required: "target", known: ForwardServiceConfiguration.keys) { target, path throws(NetProxyConfigurationError) in
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

    /// `multiplex_services`: name -> `{"routes": {protocol: service}, "tls_routes": [{"sni",
    /// "alpn", "service"}], "default", "detect_timeout"}`.
    func multiplexServices(_ key: String) throws(NetProxyConfigurationError) -> [String: MultiplexServiceConfiguration] {
        try services(key, required: "default", known: MultiplexServiceConfiguration.keys) { defaultService, path throws(NetProxyConfigurationError) in
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
            case "tls_routes":
                service.tlsRoutes = try value.list(path, of: "rules") { rule, rulePath throws(NetProxyConfigurationError) in
                    var route = MultiplexServiceConfiguration.TLSRoute(service: "")
                    var hasService = false
                    try rule.fields(rulePath, known: ["sni", "alpn", "service"]) { field, value, fieldPath throws(NetProxyConfigurationError) in
                        switch field {
                        case "sni": route.serverName = try value.string(fieldPath)
                        case "alpn": route.applicationProtocol = try value.string(fieldPath)
                        case "service":
                            route.service = try value.string(fieldPath)
                            hasService = true
                        default: return false
                        }
                        return true
                    }
                    guard hasService else { throw NetProxyConfigurationError("\(rulePath): \"service\" is missing") }
                    return route
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
        try ConfigurationChecks.versions(versions, key)
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
            let port = try ConfigurationChecks.port(Int(portText).flatMap { String($0) == portText ? $0 : nil }, key, shown: portText)
            result[port] = try read(object[portText]!, "\(key).\(portText)")
        }
        return result
    }

    /// Reads each field of an object with `apply`, which answers whether it knows the field;
    /// an unknown one is refused with the nearest of `known`.
    fileprivate func fields(
        _ key: String, known: [String], _ apply: (_ field: String, JSONInput, _ path: String) throws(NetProxyConfigurationError) -> Bool
    ) throws(NetProxyConfigurationError) {
        guard case .object(let fields) = self else { throw NetProxyConfigurationError("\(key): expected an object") }
        // A field that starts with `_` is a comment.
        for field in fields.keys.sorted() where !field.hasPrefix("_") {
            guard try apply(field, fields[field]!, "\(key).\(field)") else {
                let suggestion = ConfigurationChecks.closest(to: field, among: known).map { "; did you mean \"\($0)\"?" } ?? ""
                throw NetProxyConfigurationError(.unknownKey, "\(key): unknown key \"\(field)\"\(suggestion)")
            }
        }
    }

    /// `proxy_port_options`: port -> `{"trusted_proxies", "versions", "local", "unspecified",
    /// "header_timeout", "direct_clients", "idle_timeout", "tls_handshake_timeout",
    /// "max_connections", "max_connections_per_source"}`.
    func portOptions(_ key: String) throws(NetProxyConfigurationError) -> [Int: ProxyPortOptions] {
        try byPort(key, of: "options") { value, path throws(NetProxyConfigurationError) in
            var options = ProxyPortOptions()
            try value.fields(path, known: ProxyPortOptions.keys) { field, value, path throws(NetProxyConfigurationError) in
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
            try object[path]!.fields(entryKey, known: ProxyUnixSocket.keys) { field, value, fieldPath throws(NetProxyConfigurationError) in
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
            try object[name]!.fields(entryKey, known: ["certificate", "key"]) { field, value, path throws(NetProxyConfigurationError) in
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

extension ForwardServiceConfiguration {
    /// The keys of a `forward_services` entry.
    package static let keys = [
        "target", "send_proxy", "pass_tlvs", "crc32c", "transparent", "connect_timeout", "idle_timeout", "max_pending_connects",
    ]
}

extension MultiplexServiceConfiguration {
    /// The keys of a `multiplex_services` entry.
    package static let keys = ["default", "routes", "tls_routes", "detect_timeout", "idle_timeout", "max_pending_detections"]
}

extension ProxyUnixSocket {
    /// The keys of a `proxy_unix_sockets` entry given as an object.
    package static let keys = ["service", "mode", "owner", "group"] + ProxyPortOptions.headerPolicyKeys
}

extension ProxyPortOptions {
    /// The keys of a `proxy_port_options` entry.
    package static let keys = ["trusted_proxies", "direct_clients", "tls_handshake_timeout"] + headerPolicyKeys

    /// The keys `readHeaderPolicy` reads.
    package static let headerPolicyKeys = [
        "versions", "local", "unspecified", "header_timeout", "idle_timeout", "max_connections", "max_connections_per_source",
    ]

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
        let port = try ConfigurationChecks.port(
            Int(portText).flatMap { String($0) == portText ? $0 : nil }, in: ConfigurationChecks.targetPorts, key, shown: String(portText))
        return (String(host), port)
    }
}
