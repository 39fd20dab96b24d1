import Foundation
import NetProxy
import TestSupport
import Testing

/// `proxy_tls_ports` with certificates by name and ALPN, through the host: curl sends the PROXY
/// header then TLS, `openssl s_client` connects as a direct client.
@Suite(.timeLimit(.minutes(1))) struct TLSPortTests {
    static func configuration(_ certificates: GeneratedCertificates, _ files: [String: TLSCertificateFiles]) -> String {
        let named = files.filter { $0.key != "default.test" }.sorted { $0.key < $1.key }.map { name, file in
            #""\#(name)": {"certificate": "\#(file.certificatePath)", "key": "\#(file.keyPath)"}"#
        }
        return """
            {"interfaces": ["127.0.0.1"], "http_ports": [], "proxy_port_mappings": {"0": "http"}, "proxy_tls_ports": [0],
             "proxy_trusted_proxies": ["127.0.0.2"], "proxy_direct_clients": ["127.0.0.1"],
             "proxy_tls_certificate": "\(files["default.test"]!.certificatePath)", "proxy_tls_key": "\(files["default.test"]!.keyPath)",
             "proxy_tls_certificates": {\(named.joined(separator: ", "))}, "proxy_tls_alpn": ["xmpp-client", "http/1.1"]}
            """
    }

    /// curl from the trusted proxy's address: the PROXY header, then TLS with `name`.
    static func curl(_ port: Int, name: String) async throws -> (subject: String?, alpn: String?, body: String) {
        let run = try await Peer.runCurl([
            "-v", "--haproxy-protocol", "--interface", "127.0.0.2", "-k", "--resolve", "\(name):\(port):127.0.0.1", "https://\(name):\(port)/",
        ])
        #expect(run.status == 0, "\(run.standardError)")
        // What -v says of the handshake.
        let lines = run.standardError.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let subject = lines.first { $0.hasPrefix("*  subject: ") }.map { String($0.dropFirst("*  subject: ".count)) }
        let alpn = lines.first { $0.hasPrefix("* ALPN: server accepted ") }.map { String($0.dropFirst("* ALPN: server accepted ".count)) }
        return (subject, alpn, run.transfers.first?.body ?? "")
    }

    @Test(.enabled(if: Peer.available("curl") && Peer.available("openssl")), .tags(.interop)) func certificateByNameAndALPN() async throws {
        let certificates = try GeneratedCertificates()
        defer { certificates.remove() }
        var files: [String: TLSCertificateFiles] = [:]
        for name in ["default.test", "a.example.test", "*.wild.test"] {
            files[name] = try await certificates.make(name)
        }
        let running = try await RunningHost(Self.configuration(certificates, files))
        let port = running.port(.proxy(service: "http", tls: true))

        for (name, subject) in [("a.example.test", "CN=a.example.test"), ("x.wild.test", "CN=*.wild.test"), ("other.test", "CN=default.test")] {
            let reply = try await Self.curl(port, name: name)
            #expect(reply.subject == subject, "\(name)")
            // curl offers h2 and http/1.1; the server's list has http/1.1.
            #expect(reply.alpn == "http/1.1", "\(name)")
            #expect(reply.body.contains(#""source":{"ip":"127.0.0.2""#), "\(reply.body)")
        }

        // A direct client (no header): TLS at once; openssl asks for xmpp-client.
        let openssl = try Peer.require("openssl")
        let client = try await ChildProcess.run(
            openssl, ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "a.example.test", "-alpn", "xmpp-client"],
            standardError: .mergedIntoOutput, killAfter: 30)
        let output = client.standardOutput
        #expect(client.status == 0, "\(output)")
        let lines = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(lines.filter { $0.hasPrefix("subject=") }.map { $0.replacingOccurrences(of: " ", with: "") } == ["subject=CN=a.example.test"])
        #expect(lines.contains("ALPN protocol: xmpp-client"), "\(output)")

        // Renewed files, same paths: a reload reads them again.
        _ = try await certificates.make("a.example.test", organization: "renewed")
        await #expect(try Self.curl(port, name: "a.example.test").subject == "CN=a.example.test")
        try await running.host.reload(configuration: try NetProxyConfiguration(json: Data(Self.configuration(certificates, files).utf8)))
        await #expect(try Self.curl(port, name: "a.example.test").subject == "CN=a.example.test; O=renewed")

        // A file that no longer loads fails the reload; the certificates in force stay.
        try Data("not a certificate".utf8).write(to: URL(fileURLWithPath: files["*.wild.test"]!.certificatePath))
        let broken = try NetProxyConfiguration(json: Data(Self.configuration(certificates, files).utf8))
        let error = await #expect(throws: NetProxyConfigurationError.self, "a reload with a broken certificate succeeded") {
            try await running.host.reload(configuration: broken)
        }
        expect(error, .file, key: "proxy_tls_certificates.*.wild.test.certificate")
        await #expect(try Self.curl(port, name: "x.wild.test").subject == "CN=*.wild.test")
        #expect(running.host.metricsExposition.contains(#"netproxy_reloads_total{result="failure"} 1"#))
        await running.stop()
    }
}
