import ProxyProtocol

/// The checks a value gets wherever it comes from: the JSON reader runs them as it reads (so the
/// error names the entry as written), `HostPlan` runs them again on a configuration built in
/// code. Each is written once, here.
enum ConfigurationChecks {
    /// A port to listen on: 0 lets the system choose.
    static let listeningPorts = 0...65535
    /// A port to connect to.
    static let targetPorts = 1...65535

    /// `port` if it is within `range` (`nil` is text that is not a number); the error quotes
    /// `shown` (the text as written, for an object's key) when given.
    @discardableResult
    static func port(
        _ port: Int?, in range: ClosedRange<Int> = listeningPorts, _ key: String, shown: String? = nil
    ) throws(NetProxyConfigurationError) -> Int {
        guard let port, range.contains(port) else {
            let value = shown.map { "\"\($0)\"" } ?? port.map(String.init) ?? "nil"
            throw NetProxyConfigurationError("\(key): \(value) is not a port (\(range.lowerBound)-\(range.upperBound))")
        }
        return port
    }

    /// The default certificate and key files, which TLS ports need; `nil` without TLS ports.
    static func tlsFiles(_ configuration: NetProxyConfiguration) throws(NetProxyConfigurationError) -> (certificate: String, key: String)? {
        guard !configuration.proxyTLSPorts.isEmpty else { return nil }
        guard let certificate = configuration.tlsCertificatePath, let key = configuration.tlsKeyPath else {
            throw NetProxyConfigurationError("proxy_tls_ports needs proxy_tls_certificate and proxy_tls_key")
        }
        return (certificate, key)
    }

    /// At least one PROXY version accepted.
    static func versions(_ versions: ProxyVersions, _ key: String) throws(NetProxyConfigurationError) {
        guard !versions.isEmpty else { throw NetProxyConfigurationError("\(key): no version would be accepted") }
    }
}
