import Foundation
import TestSupport
import Testing

/// `forward_services` with `transparent`: the target sees the client's address from the PROXY
/// header as the socket's peer. Tested for real in a network namespace of its own, where
/// 198.51.100.0/24 (a documentation prefix) is routed as local, so that the target's replies to
/// the client's address come back to netproxy's transparent socket, as the routing rules of a
/// real deployment arrange.
@Suite(.timeLimit(.minutes(1)), .tags(.namespace)) struct TransparentForwardTests {
    /// Whether this process may make a network namespace (root, or CAP_SYS_ADMIN).
    static let canMakeNamespace: Bool = {
        guard let unshare = Peer.find("unshare") else { return false }
        return (try? ChildProcess.runBlocking(unshare, ["-n", "true"], standardError: .inherited).status) == 0
    }()

    /// Runs `script` with `sh` in a new network namespace; its standard output.
    static func inNamespace(_ script: String) async throws -> (status: Int32, output: String) {
        let run = try await ChildProcess.run(try Peer.require("unshare"), ["-n", "sh", "-c", script], standardError: .inherited)
        return (run.status, run.standardOutput)
    }

    /// The forwards' target: a second netproxy with whoami on 127.0.0.1:7001 and [::1]:7001.
    /// (A forward into its own host is refused: the target is always another process.)
    static let whoamiTarget = #"{"interfaces": ["127.0.0.1", "::1"], "whoami_ports": [7001]}"#

    /// A script that brings the namespace up, starts `netproxy serve` with `target` (if any)
    /// and then with `config`, waits for their banners, runs `then`, and stops them. The script's
    /// output is `then`'s.
    static func serving(_ config: String, target: String? = whoamiTarget, then command: String) -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-netns-\(UUID())").path
        return """
            set -e
            mkdir -p \(directory)
            pid=; target=
            trap 'kill $pid $target 2>/dev/null; wait $pid $target 2>/dev/null; rm -rf \(directory)' EXIT
            ip link set lo up
            ip route add local 198.51.100.0/24 dev lo
            ip -6 route add local 2001:db8:7::/64 dev lo
            cat > \(directory)/target.json <<'EOF'
            \(target ?? "")
            EOF
            if [ -s \(directory)/target.json ] && [ "$(cat \(directory)/target.json)" != "" ]; then
                \(CommandRunner.executable.path) serve --config \(directory)/target.json > \(directory)/target.out 2> \(directory)/target.err &
                target=$!
                for i in $(seq 200); do grep -q 'listening' \(directory)/target.out 2>/dev/null && break; sleep 0.05; done
            fi
            cat > \(directory)/config.json <<'EOF'
            \(config)
            EOF
            \(CommandRunner.executable.path) serve --config \(directory)/config.json > \(directory)/out 2> \(directory)/err &
            pid=$!
            for i in $(seq 200); do grep -q 'Try:' \(directory)/out 2>/dev/null && break; sleep 0.05; done
            \(command) || { cat \(directory)/err >&2; exit 1; }
            """
    }

    @Test(.enabled(if: canMakeNamespace || Peer.inCI))
    func targetSeesTheClientFromTheHeader() async throws {
        let config = """
            {"interfaces": ["127.0.0.1"],
             "proxy_port_mappings": {"17001": "imap"},
             "forward_services": {"imap": {"target": "127.0.0.1:7001", "transparent": true, "connect_timeout": 2}}}
            """
        let (status, output) = try await Self.inNamespace(
            // A byte before the end of input: a client that half-closes without one while the
            // target is being connected has left, and its connect is ended.
            Self.serving(config, then: "printf x | \(CommandRunner.executable.path) send --source 198.51.100.7:40123 127.0.0.1 17001"))
        #expect(status == 0, "\(output)")
        // whoami on its regular port reports the socket's peer: the client, not netproxy.
        #expect(output.contains(#""peer":{"ip":"198.51.100.7","port":40123}"#), "\(output)")
        #expect(output.contains(#""proxy":null"#))
    }

    @Test(.enabled(if: canMakeNamespace || Peer.inCI))
    func aClientAddressThatCannotBeUsedIsCountedAndClosed() async throws {
        // No route makes 203.0.113.0/24 local here: the target's answer to the connect never
        // comes back, so the connect times out; the client's connection is closed and the
        // failure counted. The client keeps its side open meanwhile (one that half-closes
        // without a byte during the connect is taken to have left, and ends the connect).
        let config = """
            {"interfaces": ["127.0.0.1"], "metrics_port": 9090,
             "proxy_port_mappings": {"17001": "imap"},
             "forward_services": {"imap": {"target": "127.0.0.1:7001", "transparent": true, "connect_timeout": 1}}}
            """
        let (status, output) = try await Self.inNamespace(
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

    /// One PROXY port for clients of both families: each gets the target of its own family
    /// (a transparent socket takes the client's address, so it cannot reach the other family).
    @Test(.enabled(if: canMakeNamespace || Peer.inCI))
    func dualStackClientsReachTheTargetOfTheirFamily() async throws {
        let config = """
            {"interfaces": ["127.0.0.1", "::1"],
             "proxy_port_mappings": {"17001": "imap"},
             "forward_services": {"imap": {"target": ["127.0.0.1:7001", "[::1]:7001"], "transparent": true, "connect_timeout": 2}}}
            """
        let send = CommandRunner.executable.path
        let (status, output) = try await Self.inNamespace(
            Self.serving(
                config,
                then: """
                    printf x | \(send) send --source [2001:db8:7::9]:40123 127.0.0.1 17001; echo
                    printf x | \(send) send --source 198.51.100.7:40124 ::1 17001; echo
                    """))
        #expect(status == 0, "\(output)")
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines.count == 2, "\(output)")
        #expect(lines.first?.contains(#""peer":{"ip":"2001:db8:7::9","port":40123}"#) == true, "\(output)")
        #expect(lines.first?.contains(#""port":7001,"peer""#) == true, "\(output)")
        #expect(lines.last?.contains(#""peer":{"ip":"198.51.100.7","port":40124}"#) == true, "\(output)")
    }

    /// A header with no client to stand for (LOCAL, or no addresses), and a client whose
    /// address is this machine's own, are connected from netproxy's own address: binding the
    /// balancer's address would fail (it is in use), and there is nobody to disguise.
    @Test(.enabled(if: canMakeNamespace || Peer.inCI))
    func clientsWithoutAnAddressToTakeConnectFromNetproxy() async throws {
        let config = """
            {"interfaces": ["127.0.0.1"],
             "proxy_port_mappings": {"17001": "imap"},
             "forward_services": {"imap": {"target": "127.0.0.1:7001", "transparent": true, "connect_timeout": 2}}}
            """
        let send = CommandRunner.executable.path
        let (status, output) = try await Self.inNamespace(
            Self.serving(
                config,
                then: """
                    printf x | \(send) send --local 127.0.0.1 17001; echo
                    printf x | \(send) send --unknown 127.0.0.1 17001; echo
                    printf x | \(send) send --v1 --unknown 127.0.0.1 17001; echo
                    printf x | \(send) send --source 127.0.0.1:40125 127.0.0.1 17001; echo
                    """))
        #expect(status == 0, "\(output)")
        let peers = output.split(separator: "\n").map { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["peer"] as? [String: Any]
        }
        #expect(peers.count == 4, "\(output)")
        for peer in peers {
            #expect(peer?["ip"] as? String == "127.0.0.1", "\(output)")
        }
        // Not the claimed port: the connection is netproxy's own.
        #expect(peers.last??["port"] as? Int != 40125, "\(output)")
    }

    /// HAProxy on the same host health-checks a transparent forward over its PROXY port
    /// (`check` with `send-proxy-v2` sends a LOCAL header): the check reaches the target and
    /// passes at layer 7, and client traffic through HAProxy reaches the target too.
    @Test(.enabled(if: (canMakeNamespace && Peer.available("haproxy")) || Peer.inCI), .tags(.interop))
    func haproxyHealthChecksOnTheSameHostPass() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let haproxyConfig = directory.appendingPathComponent("haproxy.cfg")
        try """
        global
            stats socket \(directory.path)/stats mode 600 level admin
        defaults
            mode tcp
            timeout connect 2s
            timeout client 5s
            timeout server 5s
        listen app
            bind 127.0.0.1:18000
            option tcp-check
            tcp-check expect string whoami
            server nx 127.0.0.1:17001 send-proxy-v2 check inter 100 rise 1 fall 1

        """.write(to: haproxyConfig, atomically: true, encoding: .utf8)
        let config = """
            {"interfaces": ["127.0.0.1"],
             "proxy_port_mappings": {"17001": "imap"},
             "forward_services": {"imap": {"target": "127.0.0.1:7001", "transparent": true, "connect_timeout": 2}}}
            """
        let query = """
            import socket, sys, time
            deadline = time.time() + 10
            while True:
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect("\(directory.path)/stats")
                except OSError:
                    # HAProxy is not up yet: its stats socket appears when it is.
                    if time.time() > deadline:
                        raise
                    time.sleep(0.1)
                    continue
                s.sendall(b"show stat\\n")
                rows = s.makefile().read().splitlines()
                names = rows[0].lstrip("# ").split(",")
                row = [dict(zip(names, r.split(","))) for r in rows[1:] if r.split(",")[1:2] == ["nx"]][0]
                if row["check_status"] == "L7OK" or time.time() > deadline:
                    print(row["status"], row["check_status"])
                    break
                time.sleep(0.1)
            """
        let (status, output) = try await Self.inNamespace(
            Self.serving(
                config,
                then: """
                    cat > \(directory.path)/query.py <<'EOF'
                    \(query)
                    EOF
                    # Stopped with SIGKILL: a child of the test process may have SIGTERM blocked.
                    \(try Peer.require("haproxy")) -f \(haproxyConfig.path) > \(directory.path)/haproxy.out 2>&1 &
                    haproxy=$!
                    \(try Peer.require("python3")) \(directory.path)/query.py
                    printf x | \(try Peer.require("curl")) -s --max-time 5 telnet://127.0.0.1:18000 | head -c 19; echo
                    kill -KILL $haproxy; wait $haproxy 2>/dev/null || true
                    """))
        #expect(status == 0, "\(output)")
        #expect(output.hasPrefix("UP L7OK\n"), "\(output)")
        #expect(output.hasSuffix(#"{"service":"whoami""# + "\n"), "\(output)")
    }

    /// Prosody, unmodified, behind a dual-stack transparent forward: its own debug log shows
    /// each client from the PROXY header (one IPv4, one IPv6) as the connection's address, as
    /// mod_net_proxy would have given it.
    @Test(.enabled(if: (canMakeNamespace && Peer.available("prosody")) || Peer.inCI), .tags(.interop))
    func prosodySeesTheClientFromTheHeader() async throws {
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
        interfaces = { "127.0.0.1", "::1" }
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
             "forward_services": {"c2s": {"target": ["127.0.0.1:15222", "[::1]:15222"], "transparent": true}}}
            """
        let streamOpen =
            "<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        let (status, output) = try await Self.inNamespace(
            Self.serving(
                config, target: nil,
                then: """
                    \(try Peer.require("prosody")) --config \(prosodyConfig.path) > \(directory.path)/prosody.out 2>&1 &
                    prosody=$!
                    for i in $(seq 100); do grep -q "Activated service 'c2s'" \(log) 2>/dev/null && break; sleep 0.05; done
                    (printf "%s" "\(streamOpen)"; sleep 1) | \(CommandRunner.executable.path) send --source 198.51.100.7:40123 127.0.0.1 15223 | head -c 120
                    echo
                    (printf "%s" "\(streamOpen)"; sleep 1) | \(CommandRunner.executable.path) send --source [2001:db8:7::9]:40124 127.0.0.1 15223 | head -c 120
                    echo
                    kill $prosody; wait $prosody 2>/dev/null || true
                    grep -o 'New connection FD [0-9]* ([^)]*)' \(log)
                    """))
        #expect(status == 0, "\(output)")
        #expect(output.contains("<stream:stream"), "Prosody answered the stream: \(output)")
        #expect(output.contains("(198.51.100.7, 40123, 127.0.0.1, 15222)"), "\(output)")
        // An IPv6 client through the same PROXY port reaches Prosody's IPv6 socket as itself.
        #expect(output.contains("(2001:db8:7::9, 40124, ::1, 15222)"), "\(output)")
    }
}
