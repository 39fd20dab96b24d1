extension MultiplexServiceConfiguration {
    /// A `tls_routes` rule: the service for a TLS connection whose ClientHello asks for a server
    /// name, offers an application protocol, or both. The connection is not decrypted: the
    /// chosen service gets the ClientHello as the client sent it, and terminates TLS itself.
    ///
    /// Rules are tried in order and the first that matches wins; a TLS connection that matches
    /// none goes to `routes.tls`, or else to `default`.
    public struct TLSRoute: Hashable, Sendable {
        /// `sni`: the server name the client asks for, exact (`example.org`) or a wildcard
        /// (`*.example.org`) that stands for exactly one more leftmost label (`a.example.org`,
        /// neither `example.org` nor `a.b.example.org`). Case does not matter, nor a trailing dot
        /// on either name. `nil`: any name, or none.
        public var serverName: String?
        /// `alpn`: an application protocol the client offers among others (`h2`,
        /// `xmpp-client`); compared byte for byte. `nil`: any protocols, or none.
        public var applicationProtocol: String?
        /// `service`: the service that gets the connection.
        public var service: String

        /// A rule that sends connections asking for `serverName` and offering
        /// `applicationProtocol` (either may be `nil`, not both) to `service`.
        public init(serverName: String? = nil, applicationProtocol: String? = nil, service: String) {
            self.serverName = serverName
            self.applicationProtocol = applicationProtocol
            self.service = service
        }
    }

    /// The services the entry names, with the key that names each (`routes.http`,
    /// `tls_routes[0].service`), after checking its `tls_routes`: each rule has a server name, a
    /// protocol or both; a server name is letters, digits and `-` in dot-separated labels (at
    /// most 253 characters, labels of 1 to 63), a `*` only as the whole leftmost label, and not
    /// an IP address; a protocol is 1 to 255 bytes of visible ASCII. Errors name `key` (the
    /// entry, `multiplex_services.edge`) and the rule's field.
    func checkedServices(_ key: String) throws(NetProxyConfigurationError) -> [(key: String, service: String)] {
        for (index, route) in tlsRoutes.enumerated() {
            let ruleKey = "\(key).tls_routes[\(index)]"
            guard route.serverName != nil || route.applicationProtocol != nil else {
                throw NetProxyConfigurationError("\(ruleKey): a rule needs \"sni\", \"alpn\" or both")
            }
            if let name = route.serverName, let problem = TLSRouter.NamePattern.problem(with: name) {
                throw NetProxyConfigurationError("\(ruleKey).sni: \"\(name)\": \(problem)")
            }
            if let name = route.applicationProtocol {
                guard (1...255).contains(name.utf8.count) else {
                    throw NetProxyConfigurationError("\(ruleKey).alpn: a protocol name is 1 to 255 bytes, not \(name.utf8.count)")
                }
                guard name.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                    throw NetProxyConfigurationError("\(ruleKey).alpn: \"\(name)\" is not visible ASCII (no spaces, control or non-ASCII characters)")
                }
            }
        }
        let byProtocol = routes.sorted { $0.key.name < $1.key.name }.map { (key: "routes.\($0.key.name)", service: $0.value) }
        return byProtocol + tlsRoutes.enumerated().map { (key: "tls_routes[\($0.offset)].service", service: $0.element.service) }
    }
}

/// A multiplex service's `tls_routes`, ready to match a ClientHello: names lowercased, without a
/// trailing dot, wildcards split from their domain. Built from rules already checked
/// (``MultiplexServiceConfiguration/checkedServices(_:)``).
struct TLSRouter: Sendable {
    /// A rule's `sni`.
    enum NamePattern: Hashable, Sendable {
        /// A whole name.
        case exact(String)
        /// `*.domain`: one label, then `domain`.
        case wildcard(domain: String)

        /// `pattern` as configured; a trailing dot is dropped.
        init(_ pattern: String) {
            var name = ASCII.lowercased(pattern)
            if name.hasSuffix(".") { name.removeLast() }
            self = name.hasPrefix("*.") ? .wildcard(domain: String(name.dropFirst(2))) : .exact(name)
        }

        /// What is wrong with a configured pattern, or `nil`: as a certificate's name
        /// (``CertificateSelector/problem(with:)``), a trailing dot allowed.
        static func problem(with pattern: String) -> String? {
            let name = pattern.hasSuffix(".") && pattern != "." ? String(pattern.dropLast()) : pattern
            return CertificateSelector<Never>.problem(with: name)
        }

        /// Whether `name` (lowercased, without a trailing dot) matches.
        func matches(_ name: String) -> Bool {
            switch self {
            case .exact(let exact):
                return name == exact
            case .wildcard(let domain):
                guard let dot = name.utf8.firstIndex(of: UInt8(ascii: ".")), dot != name.utf8.startIndex else { return false }
                return name.utf8[name.utf8.index(after: dot)...].elementsEqual(domain.utf8)
            }
        }
    }

    /// A rule, with its place in `tls_routes`.
    struct Rule: Hashable, Sendable {
        var index: Int
        var name: NamePattern?
        var applicationProtocol: String?
        var service: String

        /// What decided: `sni` for a rule with a name (and perhaps a protocol), `alpn` for one
        /// with a protocol only.
        var by: MultiplexDecision.Reason { name == nil ? .alpn : .sni }
    }

    let rules: [Rule]

    init(_ routes: [MultiplexServiceConfiguration.TLSRoute] = []) {
        rules = routes.enumerated().map { index, route in
            Rule(index: index, name: route.serverName.map(NamePattern.init), applicationProtocol: route.applicationProtocol, service: route.service)
        }
    }

    var isEmpty: Bool { rules.isEmpty }

    /// The first rule `hello` matches, if any.
    func match(_ hello: ClientHello) -> Rule? {
        var name = hello.serverName.map(ASCII.lowercased)
        if name?.hasSuffix(".") == true { name!.removeLast() }
        return rules.first { rule in
            if let pattern = rule.name {
                guard let name, pattern.matches(name) else { return false }
            }
            if let wanted = rule.applicationProtocol {
                guard hello.applicationProtocols.contains(wanted) else { return false }
            }
            return true
        }
    }
}

/// Case for names in SNI, which are ASCII: only `A` to `Z` change, so that no other character
/// matches through a Unicode case mapping.
enum ASCII {
    static func lowercased(_ text: String) -> String {
        guard text.utf8.contains(where: { (0x41...0x5A).contains($0) }) else { return text }
        return String(decoding: text.utf8.map { (0x41...0x5A).contains($0) ? $0 + 0x20 : $0 }, as: UTF8.self)
    }
}
