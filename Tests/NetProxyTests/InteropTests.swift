import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NetProxy
import TestSupport
import Testing

/// NetProxy's http service behind HAProxy, nginx and curl, asserting the client each reports.
@Suite(.serialized, .timeLimit(.minutes(2)), .tags(.interop)) struct InteropTests {
    static let configuration = """
        {"interfaces": ["127.0.0.1"], "http_ports": [], "proxy_port_mappings": {"0": "http"},
         "proxy_trusted_proxies": ["127.0.0.0/8"]}
        """

    func source(_ body: [String: Any]) -> String? {
        guard let source = body["source"] as? [String: Any], let ip = source["ip"] as? String, let port = source["port"] as? Int else { return nil }
        return "\(ip) \(port)"
    }

    func proxy(_ body: [String: Any]) -> [String: Any] {
        body["proxy"] as? [String: Any] ?? [:]
    }

    func tlvs(_ body: [String: Any]) -> [Int: [String: Any]] {
        var byType: [Int: [String: Any]] = [:]
        for tlv in proxy(body)["tlvs"] as? [[String: Any]] ?? [] {
            byType[tlv["type"] as! Int] = tlv
        }
        return byType
    }

    @Test(.enabled(if: Peer.available("curl"))) func curlHAProxyProtocol() async throws {
        let running = try await RunningHost(Self.configuration)
        let port = running.port(.proxy(service: "http", tls: false))
        let (body, client) = try await Peer.curl(["--haproxy-protocol", "--interface", "127.0.0.5", "http://127.0.0.1:\(port)/"])
        #expect(client.hasPrefix("127.0.0.5 "))
        #expect(source(body) == client)
        #expect(proxy(body)["version"] as? Int == 1)
        await running.stop()
    }

    /// Runs HAProxy in front of a fresh host's http PROXY port, then curl through it.
    ///
    /// - Parameters:
    ///   - frontend: The frontend's lines, with `bind fd@0`.
    ///   - backend: The backend's lines for the host's port.
    ///   - curl: curl's arguments for HAProxy's port.
    func throughHAProxy(
        frontend: String, backend: (Int) -> String, curl: (Int) -> [String], in directory: URL
    ) async throws -> (body: [String: Any], client: String) {
        let running = try await RunningHost(Self.configuration)
        let port = running.port(.proxy(service: "http", tls: false))
        let (haproxy, frontendPort, log) = try Peer.startHAProxy(
            """
            global
                maxconn 100
            defaults
                timeout connect 5s
                timeout client 10s
                timeout server 10s
            frontend in
            \(frontend)
                default_backend netproxy
            backend netproxy
            \(backend(port))

            """, in: directory)
        defer { haproxy.stop() }
        let result = try await Peer.curl(curl(frontendPort))
        #expect(haproxy.isRunning, "HAProxy: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        await running.stop()
        return result
    }

    @Test(.enabled(if: Peer.available("haproxy") && Peer.available("curl"))) func haproxyTCPSendProxyV1() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (body, client) = try await throughHAProxy(
            frontend: "    mode tcp\n    bind fd@0",
            backend: { "    mode tcp\n    server s 127.0.0.1:\($0) send-proxy" },
            curl: { ["--interface", "127.0.0.6", "http://127.0.0.1:\($0)/"] }, in: directory)
        #expect(source(body) == client)
        #expect(proxy(body)["version"] as? Int == 1)
        #expect(proxy(body)["family"] as? String == "TCP4")
    }

    @Test(.enabled(if: Peer.available("haproxy") && Peer.available("curl"))) func haproxyTCPSendProxyV2() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (body, client) = try await throughHAProxy(
            frontend: "    mode tcp\n    bind fd@0",
            backend: { "    mode tcp\n    server s 127.0.0.1:\($0) send-proxy-v2 proxy-v2-options crc32c" },
            curl: { ["--interface", "127.0.0.7", "http://127.0.0.1:\($0)/"] }, in: directory)
        #expect(source(body) == client)
        #expect(proxy(body)["version"] as? Int == 2)
        #expect(proxy(body)["family"] as? String == "INET")
        #expect(tlvs(body)[3]?["name"] as? String == "CRC32C")
    }

    /// HAProxy's health checks on a send-proxy-v2 server send LOCAL headers; they must be
    /// accepted and counted, not refused.
    @Test(.enabled(if: Peer.available("haproxy"))) func haproxyHealthChecksAreLocal() async throws {
        // The service learns of the first LOCAL connection; the host has counted it by then
        // (it counts the header before handing the connection on). HAProxy checks every 100 ms.
        struct NoCheck: Error {}
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        let firstCheck = loop.makePromise(of: Void.self)
        let deadline = loop.scheduleTask(in: .seconds(10)) { firstCheck.fail(NoCheck()) }
        defer { deadline.cancel() }
        let checked = NIOLockedValueBox(false)
        let checks = NetProxyService(name: "checks") { _, info in
            guard info.proxy?.header.command == .local else { return }
            if checked.withLockedValue({ seen in
                defer { seen = true }
                return !seen
            }) {
                firstCheck.succeed()
            }
        }
        let running = try await RunningHost(
            #"{"interfaces": ["127.0.0.1"], "proxy_port_mappings": {"0": "checks"}, "proxy_trusted_proxies": ["127.0.0.0/8"]}"#,
            services: [checks])
        let port = running.port(.proxy(service: "checks", tls: false))
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        // HAProxy needs a frontend to run at all; nothing connects to it.
        let (haproxy, _, log) = try Peer.startHAProxy(
            """
            defaults
                timeout connect 5s
                timeout client 10s
                timeout server 10s
                timeout check 2s
            frontend in
                mode tcp
                bind fd@0
                default_backend netproxy
            backend netproxy
                mode tcp
                server s 127.0.0.1:\(port) send-proxy-v2 check check-send-proxy inter 100ms

            """, in: directory)
        defer { haproxy.stop() }
        do {
            try await firstCheck.futureResult.get()
        } catch {
            Issue.record("no LOCAL health check within 10 s; HAProxy: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        }
        let metrics = running.host.metricsExposition
        #expect(metrics.contains(#"netproxy_proxy_local_total{version="v2"}"#))
        #expect(metrics.contains(#"netproxy_connections_rejected_total{reason="invalid_header"} 0"#))
        await running.stop()
    }

    /// HTTP mode with TLS at HAProxy: authority (SNI), unique id, SSL details and CRC32C.
    @Test(.enabled(if: Peer.available("haproxy") && Peer.available("curl"))) func haproxyHTTPSendProxyV2WithTLVs() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let pem = directory.appendingPathComponent("site.pem")
        let certificate = TestCertificate.localhost
        try (certificate.certificatePEM + "\n" + certificate.privateKeyPEM + "\n").write(to: pem, atomically: true, encoding: .utf8)
        let (body, client) = try await throughHAProxy(
            frontend: "    mode http\n    bind fd@0 ssl crt \(pem.path)\n    unique-id-format %ci:%cp",
            backend: {
                "    mode http\n    http-reuse never\n    server s 127.0.0.1:\($0) send-proxy-v2 proxy-v2-options authority,unique-id,crc32c,ssl"
            },
            curl: { ["-k", "--interface", "127.0.0.8", "--resolve", "localhost:\($0):127.0.0.1", "https://localhost:\($0)/"] },
            in: directory)
        #expect(source(body) == client)
        let byType = tlvs(body)
        #expect(byType[2]?["value"] as? String == "localhost")
        #expect(byType[5]?["value"] as? String == client.replacingOccurrences(of: " ", with: ":"))
        #expect(byType[3]?["name"] as? String == "CRC32C")
        let ssl = byType[0x20]?["value"] as? [String: Any]
        #expect(ssl?["ssl"] as? Bool == true)
        let sslVersion = (ssl?["tlvs"] as? [[String: Any]])?.first { $0["type"] as? Int == 0x21 }?["value"] as? String
        #expect(sslVersion?.hasPrefix("TLSv1") == true)
    }

    @Test(.enabled(if: Peer.available("nginx") && Peer.available("curl"))) func nginxStreamProxyProtocol() async throws {
        let running = try await RunningHost(Self.configuration)
        let port = running.port(.proxy(service: "http", tls: false))
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let listener = try ListeningSocket()
        defer { listener.close() }
        let nginx = try Peer.startNginxStream(
            server: "        proxy_pass 127.0.0.1:\(port);\n        proxy_protocol on;", listener: listener, in: directory)
        listener.close()
        defer { nginx.stop(signal: SIGTERM) }
        let (body, client) = try await Peer.curl(["--interface", "127.0.0.9", "http://127.0.0.1:\(listener.port)/"])
        #expect(source(body) == client)
        #expect(proxy(body)["version"] as? Int == 1)
        #expect(nginx.isRunning, "nginx: \(Peer.nginxErrors(in: directory))")
        await running.stop()
    }
}
