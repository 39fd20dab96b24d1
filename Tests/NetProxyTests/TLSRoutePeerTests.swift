import Foundation
import NetProxy
import TestSupport
import Testing

/// `tls_routes` with real peers: TLS clients reach, through a multiplexer and its forwards,
/// servers that each hold their own certificate, so the certificate a client receives proves
/// which one the route chose. netproxy never terminates the TLS.
@Suite(.timeLimit(.minutes(1))) struct TLSRoutePeerTests {
    /// `openssl s_server` with the certificate for `name`, offering `alpn`, on `port`; returns
    /// once it accepts.
    static func startServer(_ files: TLSCertificateFiles, port: Int, alpn: String) throws -> ChildProcess {
        let server = try ChildProcess(
            try Peer.require("openssl"),
            ["s_server", "-accept", "127.0.0.1:\(port)", "-cert", files.certificatePath, "-key", files.keyPath, "-alpn", alpn],
            standardInput: .pipe, standardOutput: .pipe, standardError: .collected)
        // It says "ACCEPT" once it listens, after other lines ("Using default temp DH parameters").
        let output = server.readOutput(within: 10) { $0.hasSuffix("ACCEPT\n") }
        try #require(output.hasSuffix("ACCEPT\n"), "openssl s_server: \(output) \(server.collectedErrors)")
        return server
    }

    /// `openssl s_client` through `port`: the subject of the certificate it received and the
    /// protocol ALPN agreed on.
    static func connect(port: Int, serverName: String?, alpn: String?) async throws -> (subject: String?, alpn: String?) {
        var arguments = ["s_client", "-connect", "127.0.0.1:\(port)"]
        arguments += serverName.map { ["-servername", $0] } ?? ["-noservername"]
        arguments += alpn.map { ["-alpn", $0] } ?? []
        let client = try await ChildProcess.run(try Peer.require("openssl"), arguments, standardError: .mergedIntoOutput, killAfter: 30)
        let lines = client.standardOutput.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(client.status == 0, "\(client.standardOutput)")
        // OpenSSL 3.0 writes "subject=CN = name", later versions "subject=CN=name".
        let subject = lines.first { $0.hasPrefix("subject=") }.map { $0.dropFirst("subject=".count).replacingOccurrences(of: " ", with: "") }
        let agreed = lines.first { $0.hasPrefix("ALPN protocol: ") }.map { String($0.dropFirst("ALPN protocol: ".count)) }
        return (subject, agreed)
    }

    /// Three `openssl s_server`s (chat, web, other) behind forwards; the multiplexer sends
    /// `xmpp-client` to chat, names under `web.test` to web, and other TLS to other
    /// (`routes.tls`).
    @Test(.enabled(if: Peer.available("openssl")), .tags(.interop)) func opensslClientsReachTheServerTheirRuleNames() async throws {
        let certificates = try GeneratedCertificates()
        defer { certificates.remove() }
        let ports = try freePorts(3)
        var servers: [ChildProcess] = []
        defer { for server in servers { server.stop() } }
        for (name, port) in zip(["chat.test", "web.test", "other.test"], ports) {
            servers.append(try Self.startServer(try await certificates.make(name), port: port, alpn: "xmpp-client,h2,http/1.1"))
        }
        let running = try await RunningHost(
            """
            {"interfaces": ["127.0.0.1"], "edge_ports": [0],
             "forward_services": {"to_chat": {"target": "127.0.0.1:\(ports[0])"}, "to_web": {"target": "127.0.0.1:\(ports[1])"},
                                  "to_other": {"target": "127.0.0.1:\(ports[2])"}},
             "multiplex_services": {"edge": {"routes": {"tls": "to_other", "http": "http"}, "default": "echo",
               "tls_routes": [{"alpn": "xmpp-client", "service": "to_chat"}, {"sni": "*.web.test", "service": "to_web"}]}}}
            """)
        let port = running.port(.service("edge"))

        let cases: [(String?, String?, String, String?)] = [
            ("chat.example.org", "xmpp-client", "CN=chat.test", "xmpp-client"),
            // s_server picks by its own order: xmpp-client first.
            (nil, "h2,xmpp-client", "CN=chat.test", "xmpp-client"),
            ("WWW.Web.Test.", "h2", "CN=web.test", "h2"),
            ("www.web.test", nil, "CN=web.test", nil),
            // The first rule that matches wins.
            ("www.web.test", "xmpp-client", "CN=chat.test", "xmpp-client"),
            // No rule: routes.tls.
            ("web.test", "h2", "CN=other.test", "h2"),
            ("a.b.web.test", "http/1.1", "CN=other.test", "http/1.1"),
            (nil, nil, "CN=other.test", nil),
        ]
        for (name, alpn, subject, agreed) in cases {
            let reply = try await Self.connect(port: port, serverName: name, alpn: alpn)
            #expect(reply.subject == subject, "\(name ?? "no name") \(alpn ?? "no ALPN")")
            #expect(reply.alpn == agreed, "\(name ?? "no name") \(alpn ?? "no ALPN")")
        }
        let exposition = running.host.metricsExposition
        for (service, by, count) in [("to_chat", "alpn", 3.0), ("to_web", "sni", 2), ("to_other", "tls", 3), ("echo", "default", 0)] {
            #expect(metricValue(exposition, #"netproxy_multiplex_routed_total{service="\#(service)",by="\#(by)"}"#) == count, "\(service) \(by)")
        }
        await running.stop()
    }

    /// nginx serving HTTP/2 (certificate `h2.test`) and HTTP/1.1 (`h1.test`) over TLS; the
    /// multiplexer, on a PROXY port, sends clients offering `h2` to the first, other TLS to the
    /// second, and plain HTTP to the built-in http service.
    @Test(.enabled(if: Peer.available("curl") && Peer.available("nginx")), .tags(.interop)) func curlOverHTTP2AndHTTP1() async throws {
        let certificates = try GeneratedCertificates()
        defer { certificates.remove() }
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let h2 = try await certificates.make("h2.test")
        let h1 = try await certificates.make("h1.test")
        let ports = try freePorts(2)
        let temporary = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map { "\($0)_temp_path \(directory.path)/\($0);" }
        let config = """
            daemon off;
            worker_processes 1;
            pid \(directory.path)/nginx.pid;
            error_log \(directory.path)/error.log;
            events { worker_connections 64; }
            http {
                access_log off;
                \(temporary.joined(separator: " "))
                server {
                    listen 127.0.0.1:\(ports[0]) ssl http2;
                    ssl_certificate \(h2.certificatePath);
                    ssl_certificate_key \(h2.keyPath);
                    location / { return 200 "h2 site over $server_protocol\\n"; }
                }
                server {
                    listen 127.0.0.1:\(ports[1]) ssl;
                    ssl_certificate \(h1.certificatePath);
                    ssl_certificate_key \(h1.keyPath);
                    location / { return 200 "h1 site over $server_protocol\\n"; }
                }
            }

            """
        let file = directory.appendingPathComponent("nginx.conf")
        try config.write(to: file, atomically: true, encoding: .utf8)
        let nginx = try Peer.start(
            try Peer.require("nginx"), ["-c", file.path, "-p", directory.path], output: directory.appendingPathComponent("nginx.out"))
        // The master relays SIGTERM to its worker.
        defer { nginx.stop(signal: SIGTERM) }
        try await Self.waitForListeners(ports, what: "nginx: \(Peer.nginxErrors(in: directory))")

        let running = try await RunningHost(
            """
            {"interfaces": ["127.0.0.1"], "proxy_port_mappings": {"0": "edge"}, "proxy_trusted_proxies": ["127.0.0.0/8"],
             "forward_services": {"to_h2": {"target": "127.0.0.1:\(ports[0])"}, "to_h1": {"target": "127.0.0.1:\(ports[1])"}},
             "multiplex_services": {"edge": {"routes": {"tls": "to_h1", "http": "http"}, "default": "echo",
               "tls_routes": [{"alpn": "h2", "service": "to_h2"}]}}}
            """)
        let port = running.port(.proxy(service: "edge", tls: false))

        for (version, subject, body) in [
            ("--http2", "CN=h2.test", "h2 site over HTTP/2.0\n"), ("--http1.1", "CN=h1.test", "h1 site over HTTP/1.1\n"),
        ] {
            let run = try await Peer.runCurl([
                "-v", "-k", version, "--haproxy-protocol", "--resolve", "www.example.org:\(port):127.0.0.1", "https://www.example.org:\(port)/",
            ])
            #expect(run.status == 0, "\(run.standardError)")
            let lines = run.standardError.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(lines.contains("*  subject: \(subject)"), "\(version): \(run.standardError)")
            #expect(run.transfers.first?.body == body, "\(version)")
        }
        // Plain HTTP on the same port reaches the http service, which sees curl as the client.
        let (json, client) = try await Peer.curl(["--haproxy-protocol", "--interface", "127.0.0.12", "http://127.0.0.1:\(port)/"])
        #expect(json["service"] as? String == "http")
        #expect(endpoint(json["source"]) == client)
        let exposition = running.host.metricsExposition
        for (service, by) in [("to_h2", "alpn"), ("to_h1", "tls"), ("http", "http")] {
            #expect(metricValue(exposition, #"netproxy_multiplex_routed_total{service="\#(service)",by="\#(by)"}"#) == 1, "\(service) \(by)")
        }
        await running.stop()
    }

    /// Waits until each of `ports` on 127.0.0.1 accepts a connection.
    static func waitForListeners(_ ports: [Int], what: @autoclosure () -> String) async throws {
        let deadline = Date().addingTimeInterval(10)
        for port in ports {
            while true {
                if let socket = try? BlockingSocket(connectingTo: "127.0.0.1", port: port) {
                    socket.close()
                    break
                }
                try #require(Date() < deadline, "nothing listens on \(port): \(what())")
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }
}
