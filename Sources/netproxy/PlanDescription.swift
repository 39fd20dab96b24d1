import NetProxy
import ProxyProtocol

/// What `netproxy check` prints of a valid configuration: each listener (the addresses of one
/// port together), and under it what a connection there meets: the trust list and header
/// policy of a PROXY port, TLS, and what its service does.
struct PlanDescription {
    let configuration: NetProxyConfiguration
    let plan: [ListenerPlan]

    var text: String {
        var lines: [String] = []
        for group in groups {
            let first = group[0]
            lines.append("  " + first.description(at: group.map(\.addressText).joined(separator: ", ")))
            lines += details(first).map { "      " + $0 }
        }
        return lines.map { $0 + "\n" }.joined()
    }

    /// The plan's listeners, those of one kind on one port (or socket path) together, in order.
    private var groups: [[ListenerPlan]] {
        var groups: [[ListenerPlan]] = []
        for listener in plan {
            if let index = groups.firstIndex(where: { $0[0].kind == listener.kind && $0[0].port == listener.port && $0[0].path == listener.path }) {
                groups[index].append(listener)
            } else {
                groups.append([listener])
            }
        }
        return groups
    }

    private func details(_ listener: ListenerPlan) -> [String] {
        var lines: [String] = []
        if listener.kind.isProxy {
            lines += proxyPolicy(listener)
        }
        if listener.kind.isTLS {
            let names = configuration.tlsCertificates.keys.sorted()
            var tls = "TLS after the header: certificate \(configuration.tlsCertificatePath ?? "(none)")"
            if !names.isEmpty { tls += ", and by name for \(names.joined(separator: ", "))" }
            if !configuration.tlsALPN.isEmpty { tls += "; ALPN \(configuration.tlsALPN.joined(separator: ", "))" }
            lines.append(tls)
        }
        if let service = listener.kind.service {
            lines.append(serviceSummary(service))
        }
        return lines
    }

    /// The trust list and header policy in force on a PROXY listener: its port's (or socket's)
    /// options over the file's defaults.
    private func proxyPolicy(_ listener: ListenerPlan) -> [String] {
        let options =
            listener.path.flatMap { configuration.proxyUnixSockets[$0]?.options } ?? configuration.proxyPortOptions[listener.port]
            ?? ProxyPortOptions()
        var lines: [String] = []
        if let path = listener.path, let socket = configuration.proxyUnixSockets[path] {
            let mode = String(socket.mode, radix: 8)
            var access = "socket file mode \(String(repeating: "0", count: max(0, 4 - mode.count)))\(mode)"
            if let owner = socket.owner { access += ", owner \(owner)" }
            if let group = socket.group { access += ", group \(group)" }
            lines.append(access + " (who may connect)")
        } else {
            let trusted = options.trustedProxies ?? configuration.trustedProxies
            lines.append(trusted.isEmpty ? "trusts ANY client to send a header" : "trusts \(trusted.joined(separator: ", "))")
            let direct = options.directClients ?? configuration.directClients
            if !direct.isEmpty { lines.append("serves without a header: \(direct.joined(separator: ", "))") }
        }
        let versions = options.acceptedVersions ?? configuration.acceptedVersions
        let names = [(ProxyVersions.v1, "v1"), (.v2, "v2")].filter { versions.contains($0.0) }.map(\.1)
        let timeout = options.headerTimeout ?? configuration.headerTimeout
        var header = "header \(names.joined(separator: " or ")) within \(Self.seconds(timeout))"
        if !(options.acceptsLocal ?? configuration.acceptsLocal) { header += "; LOCAL refused" }
        lines.append(header)
        return lines
    }

    /// What the service `name` does with a connection.
    private func serviceSummary(_ name: String) -> String {
        if let forward = configuration.forwardServices[name] {
            var text = "\(name): forward to \(forward.target)"
            if let version = forward.sendProxy {
                text += ", sending a PROXY \(version) header"
                if forward.passTLVs { text += " with the client's TLVs" }
                if forward.crc32c { text += " and a CRC32C" }
            }
            if forward.transparent { text += ", transparent (from the client's address)" }
            return text + ", connect within \(Self.seconds(forward.connectTimeout))"
        }
        if let multiplex = configuration.multiplexServices[name] {
            let rules = multiplex.tlsRoutes.enumerated().map { index, rule in
                let match = [rule.serverName.map { "sni \($0)" }, rule.applicationProtocol.map { "alpn \($0)" }].compactMap { $0 }
                return "tls_routes[\(index)] (\(match.joined(separator: ", "))) -> \(rule.service)"
            }
            let routes = rules + multiplex.routes.sorted { $0.key.name < $1.key.name }.map { "\($0.key) -> \($0.value)" }
            let known = routes.isEmpty ? "" : routes.joined(separator: ", ") + "; "
            return
                "\(name): multiplex: \(known)anything else, or silence for \(Self.seconds(multiplex.detectTimeout)), -> \(multiplex.defaultService)"
        }
        return "\(name): built-in"
    }

    /// `10 s`, `0.25 s`.
    static func seconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        guard attoseconds != 0 else { return "\(seconds) s" }
        let value = Double(seconds) + Double(attoseconds) / 1e18
        return "\(value) s"
    }
}
