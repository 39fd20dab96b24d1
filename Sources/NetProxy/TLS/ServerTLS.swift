import NIOCore
import NIOSSL
import ProxyProtocol

/// The TLS that `proxy_tls_ports` serve right after the PROXY header: the default certificate
/// (`proxy_tls_certificate`, `proxy_tls_key`), more certificates chosen by the name the client
/// asks for (`proxy_tls_certificates`), and the protocols offered by ALPN (`proxy_tls_alpn`).
enum ServerTLS {
    /// The server context for `proxy_tls_ports`, or `nil` when the configuration has none.
    ///
    /// Every certificate chain and key is read here, once: handshakes only pick among them, so
    /// they do no file I/O, and a new context (on reload) reads the files again. Errors name the
    /// key at fault, and the file for those that cannot be loaded.
    static func makeContext(_ configuration: NetProxyConfiguration) throws(NetProxyConfigurationError) -> NIOSSLContext? {
        // Without TLS ports nothing is served: proxy_tls_certificates and proxy_tls_alpn are then
        // ignored, unchecked, like proxy_tls_certificate and proxy_tls_key.
        guard let (certificatePath, keyPath) = try ConfigurationChecks.tlsFiles(configuration) else { return nil }
        // The cheap checks first, so a mistyped name is reported before any file is read.
        let named = try CertificateSelector(configuration.tlsCertificates)
        try checkALPN(configuration.tlsALPN)

        let defaultIdentity = try Identity(
            TLSCertificateFiles(certificatePath: certificatePath, keyPath: keyPath),
            certificateKey: "proxy_tls_certificate", keyKey: "proxy_tls_key")
        let identities = try named.mapValues { name, files throws(NetProxyConfigurationError) in
            try Identity(files, certificateKey: "proxy_tls_certificates.\(name).certificate", keyKey: "proxy_tls_certificates.\(name).key")
        }

        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: defaultIdentity.override.certificateChain!, privateKey: defaultIdentity.override.privateKey!)
        tls.applicationProtocols = configuration.tlsALPN
        if !configuration.tlsCertificates.isEmpty {
            let overrides = identities.mapValues { _, identity in identity.override }
            tls.sslContextCallback = { extensions, promise in
                promise.succeed(overrides.select(serverName: extensions.serverHostname) ?? .noChanges)
            }
        }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw NetProxyConfigurationError(.file, "proxy_tls_certificate/proxy_tls_key: \(error)")
        }
    }

    /// `proxy_tls_alpn`: protocol names of 1 to 255 bytes (ALPN's limits), each once. Only visible
    /// ASCII, too: NIOSSL encodes the names as ASCII and stops the process on any other character.
    static func checkALPN(_ protocols: [String]) throws(NetProxyConfigurationError) {
        var seen: Set<String> = []
        for (index, name) in protocols.enumerated() {
            let key = "proxy_tls_alpn[\(index)]"
            guard (1...255).contains(name.utf8.count) else {
                throw NetProxyConfigurationError("\(key): a protocol name is 1 to 255 bytes, not \(name.utf8.count)")
            }
            guard name.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                throw NetProxyConfigurationError("\(key): \"\(name)\" is not visible ASCII (no spaces, control or non-ASCII characters)")
            }
            guard seen.insert(name).inserted else {
                throw NetProxyConfigurationError("\(key): \"\(name)\" is listed twice")
            }
        }
    }

    /// A certificate chain and its private key, read from their files and checked to belong
    /// together, as the change a handshake applies to serve them.
    struct Identity: Sendable {
        let override: NIOSSLContextConfigurationOverride

        /// Reads `files` (regular files only, see ``RegularFile``); errors name `certificateKey` or
        /// `keyKey`, and the path.
        init(_ files: TLSCertificateFiles, certificateKey: String, keyKey: String) throws(NetProxyConfigurationError) {
            let chain: [NIOSSLCertificate]
            do {
                chain = try NIOSSLCertificate.fromPEMBytes(RegularFile.contents(of: files.certificatePath, sizeLimit: RegularFile.pemSizeLimit))
            } catch {
                throw NetProxyConfigurationError(.file, "\(certificateKey): cannot load \(files.certificatePath): \(error)")
            }
            let key: NIOSSLPrivateKey
            do {
                key = try NIOSSLPrivateKey(bytes: RegularFile.contents(of: files.keyPath, sizeLimit: RegularFile.pemSizeLimit), format: .pem)
            } catch {
                throw NetProxyConfigurationError(.file, "\(keyKey): cannot load \(files.keyPath): \(error)")
            }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = chain.map { .certificate($0) }
            override.privateKey = .privateKey(key)
            // Loading the files does not compare the key with the certificate, and a handshake
            // that switches to a pair that does not match fails. BoringSSL refuses such a key
            // when it is set on a context, so a throwaway context with the pair checks it now.
            do {
                _ = try NIOSSLContext(
                    configuration: .makeServerConfiguration(certificateChain: override.certificateChain!, privateKey: override.privateKey!))
            } catch NIOSSLError.failedToLoadPrivateKey {
                throw NetProxyConfigurationError(.file, "\(keyKey): \(files.keyPath) does not match the certificate in \(files.certificatePath)")
            } catch {
                throw NetProxyConfigurationError(.file, "\(certificateKey)/\(keyKey): \(files.certificatePath) and \(files.keyPath): \(error)")
            }
            self.override = override
        }
    }
}

/// Picks a value, such as a certificate, by the server name a client asks for (SNI).
///
/// Names are exact (`xmpp.example.com`) or wildcards (`*.example.com`) that stand for exactly one
/// more leftmost label: `a.example.com`, but neither `example.com` nor `a.b.example.com`, as in
/// certificates. Matching ignores case and a trailing dot on the client's name; an exact name
/// beats a wildcard. `nil` (no name, or no match) means the default.
struct CertificateSelector<Value: Sendable>: Sendable {
    private struct Entry: Sendable {
        /// The name as configured, for messages.
        var name: String
        var value: Value
    }

    /// By lowercased name.
    private var exact: [String: Entry] = [:]
    /// By the lowercased domain after `*.`.
    private var wildcards: [String: Entry] = [:]

    /// A selector of `values` by name; errors name the entry of `proxy_tls_certificates` at
    /// fault: an empty name, a character other than letters, digits and `-` in dot-separated
    /// labels, a `*` other than as the whole leftmost label, an IP address (SNI carries names
    /// only), or a name given twice in different case.
    init(_ values: [String: Value]) throws(NetProxyConfigurationError) {
        for name in values.keys.sorted() {
            let entryKey = "proxy_tls_certificates.\(name)"
            if let problem = Self.problem(with: name) {
                throw NetProxyConfigurationError("\(entryKey): \(problem)")
            }
            let entry = Entry(name: name, value: values[name]!)
            let lowercased = name.lowercased()
            let previous: Entry?
            if lowercased.hasPrefix("*.") {
                previous = wildcards.updateValue(entry, forKey: String(lowercased.dropFirst(2)))
            } else {
                previous = exact.updateValue(entry, forKey: lowercased)
            }
            if let previous {
                throw NetProxyConfigurationError("\(entryKey): the same name as \"\(previous.name)\"")
            }
        }
    }

    private init(exact: [String: Entry], wildcards: [String: Entry]) {
        self.exact = exact
        self.wildcards = wildcards
    }

    /// What is wrong with a configured name, or `nil` if it is fine.
    static func problem(with name: String) -> String? {
        guard !name.isEmpty else { return "a server name cannot be empty" }
        if ProxyIPAddress(name) != nil {
            return "an IP address is never a server name in SNI (clients that connect by address get the default certificate)"
        }
        guard name.utf8.count <= 253 else { return "a server name is at most 253 characters" }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        for (index, label) in labels.enumerated() {
            guard !label.isEmpty else { return "a server name has no empty labels (nor a leading or trailing dot)" }
            if label.contains("*") {
                guard index == 0, label == "*" else { return "\"*\" can only be the whole leftmost label, as in \"*.example.com\"" }
                guard labels.count > 1 else { return "a wildcard needs a domain after \"*.\"" }
                continue
            }
            let allowed = label.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "-"
            }
            guard allowed else { return "a server name is letters, digits and \"-\" in labels separated by \".\"" }
            guard label.utf8.count <= 63 else { return "a label is at most 63 characters" }
            guard label.first != "-", label.last != "-" else { return "a label cannot start or end with \"-\"" }
        }
        if labels.last!.allSatisfy(\.isNumber) {
            return "a server name does not end in a label of digits only (is it an IP address?)"
        }
        return nil
    }

    /// The value for the name a client asks for; `nil` for the default.
    func select(serverName: String?) -> Value? {
        guard var name = serverName.map(Self.lowercasedASCII) else { return nil }
        if name.hasSuffix(".") { name.removeLast() }
        if let entry = exact[name] { return entry.value }
        guard let dot = name.firstIndex(of: "."), dot != name.startIndex else { return nil }
        return wildcards[String(name[name.index(after: dot)...])]?.value
    }

    /// The same names with each value transformed, in the order of the configured names (so
    /// the first error is always the same one).
    func mapValues<Other, Failure: Error>(
        _ transform: (_ name: String, Value) throws(Failure) -> Other
    ) throws(Failure) -> CertificateSelector<Other> {
        var result = CertificateSelector<Other>(exact: [:], wildcards: [:])
        let entries = exact.map { (isExact: true, key: $0.key, entry: $0.value) } + wildcards.map { (isExact: false, key: $0.key, entry: $0.value) }
        for (isExact, key, entry) in entries.sorted(by: { $0.entry.name < $1.entry.name }) {
            let mapped = CertificateSelector<Other>.Entry(name: entry.name, value: try transform(entry.name, entry.value))
            if isExact {
                result.exact[key] = mapped
            } else {
                result.wildcards[key] = mapped
            }
        }
        return result
    }

    /// Only ASCII letters change: server names in SNI are ASCII (A-labels), and anything else
    /// should match nothing rather than match through a Unicode case mapping.
    private static func lowercasedASCII(_ text: String) -> String {
        String(decoding: text.utf8.map { (0x41...0x5A).contains($0) ? $0 + 0x20 : $0 }, as: UTF8.self)
    }
}
