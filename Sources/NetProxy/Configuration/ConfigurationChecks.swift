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

    /// The one name among `known` within two edits of `name` (a letter missing, extra, changed
    /// or two swapped), for "did you mean"; `nil` when none is, or when two are equally near.
    static func closest(to name: String, among known: [String]) -> String? {
        let scored = known.map { ($0, editDistance(Array(name), Array($0))) }.filter { $0.1 <= 2 }
        guard let best = scored.map(\.1).min() else { return nil }
        let nearest = scored.filter { $0.1 == best }
        return nearest.count == 1 ? nearest[0].0 : nil
    }

    /// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
    /// neighbours each count one.
    private static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
        var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { table[i][0] = i }
        for j in 0...b.count { table[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    table[i][j] = min(table[i][j], table[i - 2][j - 2] + 1)
                }
            }
        }
        return table[a.count][b.count]
    }

    /// At least one PROXY version accepted.
    static func versions(_ versions: ProxyVersions, _ key: String) throws(NetProxyConfigurationError) {
        guard !versions.isEmpty else { throw NetProxyConfigurationError("\(key): no version would be accepted") }
    }
}
