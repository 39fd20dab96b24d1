import Foundation
import TestSupport
import Testing

/// `netproxy check` and `--version`.
@Suite(.timeLimit(.minutes(1))) struct CheckCommandTests {
    func file(_ json: String) throws -> URL {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-check-\(UUID()).json")
        try Data(json.utf8).write(to: file)
        return file
    }

    /// A valid file: its listeners listed, its warnings on standard error, and no socket bound
    /// (the port is held by this test while the check runs).
    @Test func aValidConfigurationListsItsListenersWithoutBinding() async throws {
        let held = try ListeningSocket()
        defer { held.close() }
        let file = try file(
            #"{"interfaces": ["127.0.0.1"], "proxy_ports": [\#(held.port)], "echo_ports": [], "proxy_port_mappings": {"\#(held.port)": "echo"}, "proxy_trusted_proxies": []}"#
        )
        defer { try? FileManager.default.removeItem(at: file) }
        let output = try await CommandRunner.run(["check", "--config", file.path])
        #expect(output.status == 0, "\(output.standardError)")
        #expect(
            output.standardOutput == """
                \(file.path) is valid: 1 listener(s)
                  PROXY on 127.0.0.1:\(held.port) -> echo
                      trusts ANY client to send a header
                      header v1 or v2 within 10 s
                      echo: built-in

                """)
        #expect(
            output.standardError
                == "warning: proxy_trusted_proxies is empty: ANY client may send a PROXY header and claim any address\n")
    }

    /// Each listener, its addresses together, with what a connection there meets: trust, direct
    /// clients, header policy, and what its service does.
    @Test func thePlanShowsPolicyAndServices() async throws {
        let socketPath = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-check-\(UUID()).sock").path
        let file = try file(
            #"""
            {"interfaces": ["127.0.0.1", "::1"], "proxy_ports": [15222], "proxy_port_mappings": {"15222": "fw"},
             "proxy_port_options": {"15222": {"trusted_proxies": ["10.0.0.1"], "direct_clients": ["192.0.2.0/24"], "versions": [2],
                                              "local": "reject", "header_timeout": 3.5}},
             "proxy_unix_sockets": {"\#(socketPath)": {"service": "mx", "mode": "0660"}},
             "forward_services": {"fw": {"target": ["127.0.0.1:5222", "[::1]:5222"], "send_proxy": "v2", "pass_tlvs": true,
                                         "crc32c": true, "transparent": true}},
             "multiplex_services": {"mx": {"default": "echo", "routes": {"xmpp": "fw", "http": "whoami"}, "detect_timeout": 2,
                                            "tls_routes": [{"sni": "*.chat.example.org", "alpn": "xmpp-client", "service": "fw"}]}},
             "echo_ports": [], "whoami_ports": [], "metrics_port": 9100}
            """#)
        defer { try? FileManager.default.removeItem(at: file) }
        let output = try await CommandRunner.run(["check", "--config", file.path])
        #expect(output.status == 0, "\(output.standardError)")
        #expect(
            output.standardOutput == """
                \(file.path) is valid: 5 listener(s)
                  PROXY on 127.0.0.1:15222, [::1]:15222 -> fw
                      trusts 10.0.0.1
                      serves without a header: 192.0.2.0/24
                      header v2 within 3.5 s; LOCAL refused
                      fw: forward to 127.0.0.1:5222, [::1]:5222, sending a PROXY v2 header with the client's TLVs and a CRC32C, transparent (from the client's address), connect within 5 s
                  PROXY on unix:\(socketPath) -> mx
                      socket file mode 0660 (who may connect)
                      header v1 or v2 within 10 s
                      mx: multiplex: tls_routes[0] (sni *.chat.example.org, alpn xmpp-client) -> fw, http -> whoami, xmpp -> fw; anything else, or silence for 2 s, -> echo
                  metrics on 127.0.0.1:9100, [::1]:9100

                """)
        #expect(!FileManager.default.fileExists(atPath: socketPath))
    }

    /// An invalid file: exit status 1 and the file and the entry at fault, as `serve` says it.
    @Test func anInvalidConfigurationNamesTheEntry() async throws {
        let file = try file(#"{"proxy_port_mappings": {"15222": "c2s"}}"#)
        defer { try? FileManager.default.removeItem(at: file) }
        let output = try await CommandRunner.run(["check", "--config", file.path])
        #expect(output.status == 1)
        #expect(output.standardOutput == "")
        let lines = output.standardError.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: \(file.path): proxy_port_mappings: "), "\(output.standardError)")
    }

    /// `serve --help` names every kind of service a configuration can use.
    @Test func serveHelpListsEveryServiceKind() async throws {
        let output = try await CommandRunner.run(["serve", "--help"])
        #expect(output.status == 0)
        let kinds = output.standardOutput.split(separator: "\n").filter { $0.hasPrefix("  ") && !$0.hasPrefix("   ") }
            .compactMap { $0.split(separator: " ").first.map(String.init) }
        #expect(kinds.prefix(5) == ["echo", "whoami", "http", "forward", "multiplex"], "\(output.standardOutput)")
    }

    @Test func versionIsPrinted() async throws {
        let output = try await CommandRunner.run(["--version"])
        #expect(output.status == 0)
        #expect(output.standardOutput == "0.9.0\n")
    }
}

/// What `serve` says when it cannot start.
@Suite(.timeLimit(.minutes(1))) struct ServeStartFailureTests {
    /// A port another socket holds: one error line naming the listener, and no word of a
    /// shutdown or of draining (nothing was served).
    @Test func aPortInUseIsTheOnlyNews() async throws {
        let held = try ListeningSocket()
        defer { held.close() }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-in-use-\(UUID()).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(#"{"interfaces": ["127.0.0.1"], "echo_ports": [\#(held.port)]}"#.utf8).write(to: file)
        let output = try await CommandRunner.run(["serve", "--config", file.path, "--log-level", "info"], killAfter: 30)
        #expect(output.status == 1)
        #expect(!output.standardError.contains("shutting down"), "\(output.standardError)")
        #expect(!output.standardError.contains("draining"), "\(output.standardError)")
        let errors = output.standardError.split(separator: "\n").filter { $0.hasPrefix("error: ") }
        #expect(errors.count == 1 && errors[0].contains("127.0.0.1:\(held.port)"), "\(output.standardError)")
    }
}

/// A port below 1024 without the right to bind it: the error says what grants it.
@Suite(.timeLimit(.minutes(1))) struct PrivilegedPortTests {
    /// Root can run the command as another user; below the kernel's unprivileged port start
    /// (1024 unless lowered) such a user may not bind.
    static let canDropPrivileges: Bool = {
        let start = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_unprivileged_port_start", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        return getuid() == 0 && Peer.find("setpriv") != nil && (start ?? 1024) > 443
    }()

    @Test(.enabled(if: canDropPrivileges || Peer.inCI, "needs root, setpriv, and port 443 privileged"))
    func port443AsAServiceUserNamesTheCapability() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-443-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
        let file = directory.appendingPathComponent("netproxy.json")
        try Data(#"{"interfaces": ["127.0.0.1"], "echo_ports": [443]}"#.utf8).write(to: file)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file.path)
        let output = try await ChildProcess.run(
            try Peer.require("setpriv"),
            ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", CommandRunner.executable.path, "serve", "--config", file.path],
            killAfter: 30)
        #expect(output.status == 1)
        #expect(
            output.standardError.contains(
                "error: cannot listen for echo on 127.0.0.1:443: bind: Permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE)\n"
            ), "\(output.standardError)")
    }
}
