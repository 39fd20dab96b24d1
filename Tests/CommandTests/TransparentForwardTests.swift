import Foundation
import TestSupport
import Testing

/// `forward_services` with `transparent`: the target sees the client's address from the PROXY
/// header as the socket's peer. Tested for real in a network namespace of its own, where
/// 198.51.100.0/24 (a documentation prefix) is routed as local, so that the target's replies to
/// the client's address come back to netproxy's transparent socket, as the routing rules of a
/// real deployment arrange.
@Suite(.timeLimit(.minutes(1))) struct TransparentForwardTests {
    /// Whether this process may make a network namespace (root, or CAP_SYS_ADMIN).
    static let canMakeNamespace: Bool = {
        guard let unshare = Peer.find("unshare") else { return false }
        return (try? Peer.run(unshare, ["-n", "true"]).status) == 0
    }()

    /// Runs `script` with `sh` in a new network namespace; its standard output.
    static func inNamespace(_ script: String) throws -> (status: Int32, output: String) {
        try Peer.run(try Peer.require("unshare"), ["-n", "sh", "-c", script])
    }

    /// A script that brings the namespace up, starts `netproxy serve` with `config` and waits
    /// for its banner, runs `then`, and stops netproxy. The script's output is `then`'s.
    static func serving(_ config: String, then command: String) -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-netns-\(UUID())").path
        return """
            set -e
            mkdir -p \(directory)
            trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf \(directory)' EXIT
            ip link set lo up
            ip route add local 198.51.100.0/24 dev lo
            cat > \(directory)/config.json <<'EOF'
            \(config)
            EOF
            \(CommandRunner.executable.path) serve --config \(directory)/config.json > \(directory)/out 2> \(directory)/err &
            pid=$!
            for i in $(seq 100); do grep -q 'Try:' \(directory)/out 2>/dev/null && break; sleep 0.05; done
            \(command) || { cat \(directory)/err >&2; exit 1; }
            """
    }

    @Test(.enabled(if: canMakeNamespace || Peer.inCI))
    func targetSeesTheClientFromTheHeader() throws {
        let config = """
            {"interfaces": ["127.0.0.1"], "whoami_ports": [7001],
             "proxy_port_mappings": {"17001": "imap"},
             "forward_services": {"imap": {"target": "127.0.0.1:7001", "transparent": true, "connect_timeout": 2}}}
            """
        let (status, output) = try Self.inNamespace(
            // A byte before the end of input: a client that half-closes without one while the
            // target is being connected has left, and its connect is ended.
            Self.serving(config, then: "printf x | \(CommandRunner.executable.path) send --source 198.51.100.7:40123 127.0.0.1 17001"))
        #expect(status == 0, "\(output)")
        // whoami on its regular port reports the socket's peer: the client, not netproxy.
        #expect(output.contains(#""peer":{"ip":"198.51.100.7","port":40123}"#), "\(output)")
        #expect(output.contains(#""proxy":null"#))
    }

    @Test(.enabled(if: canMakeNamespace || Peer.inCI))
    func aClientAddressThatCannotBeUsedIsCountedAndClosed() throws {
        // No route makes 203.0.113.0/24 local here: the target's answer to the connect never
        // comes back, so the connect times out; the client's connection is closed and the
        // failure counted. The client keeps its side open meanwhile (one that half-closes
        // without a byte during the connect is taken to have left, and ends the connect).
        let config = """
            {"interfaces": ["127.0.0.1"], "whoami_ports": [7001], "metrics_port": 9090,
             "proxy_port_mappings": {"17001": "imap"},
             "forward_services": {"imap": {"target": "127.0.0.1:7001", "transparent": true, "connect_timeout": 1}}}
            """
        let (status, output) = try Self.inNamespace(
            Self.serving(
                config,
                then: """
                    sleep 2 | \(CommandRunner.executable.path) send --source 203.0.113.9:4000 127.0.0.1 17001
                    echo "--"
                    curl -s http://127.0.0.1:9090/metrics | grep '^netproxy_forward_failures_total' | grep -v ' 0$'
                    """))
        #expect(status == 0, "\(output)")
        let parts = output.components(separatedBy: "--\n")
        #expect(parts.first == "", "the client got no reply")
        #expect(parts.last == #"netproxy_forward_failures_total{service="imap",reason="timeout"} 1"# + "\n", "\(output)")
    }

    /// Prosody, unmodified, behind a transparent forward: its own debug log shows the client
    /// from the PROXY header as the connection's address, as mod_net_proxy would have given it.
    @Test(.enabled(if: (canMakeNamespace && Peer.available("prosody")) || Peer.inCI))
    func prosodySeesTheClientFromTheHeader() throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = directory.appendingPathComponent("prosody.log").path
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("data"), withIntermediateDirectories: true)
        let prosodyConfig = directory.appendingPathComponent("prosody.cfg.lua")
        try """
        daemonize = false
        run_as_root = true
        pidfile = "\(directory.path)/prosody.pid"
        data_path = "\(directory.path)/data"
        log = { { levels = { min = "debug" }, to = "file", filename = "\(log)" } }
        interfaces = { "127.0.0.1" }
        c2s_ports = { 15222 }
        s2s_ports = { }
        c2s_direct_tls_ports = { }
        s2s_direct_tls_ports = { }
        http_ports = { }
        https_ports = { }
        modules_enabled = { "saslauth" }
        modules_disabled = { "s2s" }
        VirtualHost "example.com"

        """.write(to: prosodyConfig, atomically: true, encoding: .utf8)
        let config = """
            {"interfaces": ["127.0.0.1"], "proxy_port_mappings": {"15223": "c2s"},
             "forward_services": {"c2s": {"target": "127.0.0.1:15222", "transparent": true}}}
            """
        let streamOpen =
            "<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        let (status, output) = try Self.inNamespace(
            Self.serving(
                config,
                then: """
                    \(try Peer.require("prosody")) --config \(prosodyConfig.path) > \(directory.path)/prosody.out 2>&1 &
                    prosody=$!
                    for i in $(seq 100); do grep -q "Activated service 'c2s'" \(log) 2>/dev/null && break; sleep 0.05; done
                    (printf "%s" "\(streamOpen)"; sleep 1) | \(CommandRunner.executable.path) send --source 198.51.100.7:40123 127.0.0.1 15223 | head -c 120
                    echo
                    kill $prosody; wait $prosody 2>/dev/null || true
                    grep -o 'New connection FD [0-9]* ([^)]*)' \(log)
                    """))
        #expect(status == 0, "\(output)")
        #expect(output.contains("<stream:stream"), "Prosody answered the stream: \(output)")
        #expect(output.contains("(198.51.100.7, 40123, 127.0.0.1, 15222)"), "\(output)")
    }
}
