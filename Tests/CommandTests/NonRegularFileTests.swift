import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `netproxy serve` with a configuration, certificate or key path that is a FIFO or a device:
/// refused at once with what the path is, and a reload to one never holds up a SIGTERM.
@Suite(.timeLimit(.minutes(2))) struct NonRegularFileTests {
    /// The key file replaced by a FIFO: the reload on SIGHUP fails at once, saying so, the
    /// server goes on, and SIGTERM ends it as usual. (The reload used to block in the FIFO's
    /// open, and the shutdown to wait for the reload.)
    @Test func aKeyFileReplacedByAFIFO() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificate = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        try TestCertificate.localhost.certificatePEM.write(toFile: certificate, atomically: true, encoding: .utf8)
        try TestCertificate.localhost.privateKeyPEM.write(toFile: key, atomically: true, encoding: .utf8)
        let serve = try ServeProcess(
            config: """
                {"interfaces": ["\(ReloadTests.address)"], "proxy_port_mappings": {"0": "whoami"}, "proxy_tls_ports": [0],
                 "proxy_tls_certificate": "\(certificate)", "proxy_tls_key": "\(key)", "metrics_port": 0}
                """)
        defer { if serve.process.isRunning { serve.send(SIGKILL) } }
        let metricsPort = try #require(serve.port("metrics"), "\(serve.banner)")

        try FileManager.default.removeItem(atPath: key)
        try #require(mkfifo(key, 0o600) == 0)
        serve.send(SIGHUP)
        let errors = try await serve.wait(upTo: 10, for: { serve.standardError }, until: { $0.contains("reload failed") })
        // The line names the key and the file.
        let failures = errors.split(separator: "\n").filter { $0.contains("reload failed") }
        #expect(failures.count == 1 && failures[0].contains("proxy_tls_key: cannot load \(key): "), "\(errors)")
        let metrics = ReloadTests.whoamiless(try await ReloadTests.exchange(metricsPort, Array("GET /metrics HTTP/1.0\r\n\r\n".utf8)))
        #expect(metrics.contains("netproxy_reloads_total{result=\"failure\"} 1\n"), "\(metrics)")

        let stopping = ContinuousClock.now
        serve.send(SIGTERM)
        let (status, allErrors) = try await serve.waitForExit(seconds: 10)
        #expect(status == 0, "\(allErrors)")
        #expect(ContinuousClock.now - stopping < .seconds(10))
    }

    /// `serve --config` with a FIFO or a device: an error at once, naming what the path is.
    @Test func configurationFileIsNeverAFIFOOrADevice() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fifo = directory.appendingPathComponent("config.json").path
        try #require(mkfifo(fifo, 0o600) == 0)
        for (path, kind) in [(fifo, "a FIFO"), ("/dev/zero", "a character device")] {
            let serve = try await CommandRunner.run(["serve", "--config", path], killAfter: 30)
            #expect(serve.status == 1)
            #expect(serve.standardError == "error: cannot read \(path): it is \(kind), not a regular file\n")
        }
    }
}
