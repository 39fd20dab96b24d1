import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOProxyProtocol
import NIOSSL
import ProxyProtocol
import TestSupport
import Testing

@testable import NetProxy

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Certificate and key paths that name a FIFO, a directory or a device: the host refuses them
/// at once, at start-up and on reload, saying which key and what the file is, and never waits
/// on them.
@Suite(.timeLimit(.minutes(1))) struct CertificateFileTests {
    /// A certificate and key for `localhost` in a temporary directory, with a FIFO beside them.
    struct Files {
        let directory: URL
        let certificate: String
        let key: String
        let fifo: String

        init() throws {
            directory = try Peer.temporaryDirectory()
            certificate = directory.appendingPathComponent("cert.pem").path
            key = directory.appendingPathComponent("key.pem").path
            fifo = directory.appendingPathComponent("fifo.pem").path
            try TestCertificate.localhost.certificatePEM.write(toFile: certificate, atomically: true, encoding: .utf8)
            try TestCertificate.localhost.privateKeyPEM.write(toFile: key, atomically: true, encoding: .utf8)
            try #require(mkfifo(fifo, 0o600) == 0)
        }

        func remove() {
            try? FileManager.default.removeItem(at: directory)
        }

        /// A path of `kind`: "FIFO", "directory" or "device".
        func path(_ kind: String) -> String {
            switch kind {
            case "FIFO": fifo
            case "directory": directory.path
            default: "/dev/zero"
            }
        }

        /// whoami on a PROXY port with TLS, and a named certificate for `a.test`; `path` replaces
        /// the file of configuration key `key`.
        func configuration(replacing key: String? = nil, with path: String = "") -> String {
            func file(_ name: String, _ regular: String) -> String { name == key ? path : regular }
            return """
                {"interfaces": ["127.0.0.1"], "whoami_ports": [], "proxy_port_mappings": {"0": "whoami"}, "proxy_tls_ports": [0],
                 "proxy_tls_certificate": "\(file("proxy_tls_certificate", certificate))", "proxy_tls_key": "\(file("proxy_tls_key", self.key))",
                 "proxy_tls_certificates": {"a.test": {"certificate": "\(file("proxy_tls_certificates.a.test.certificate", certificate))",
                                                       "key": "\(file("proxy_tls_certificates.a.test.key", self.key))"}}}
                """
        }
    }

    static let keys = [
        "proxy_tls_certificate", "proxy_tls_key", "proxy_tls_certificates.a.test.certificate", "proxy_tls_certificates.a.test.key",
    ]
    static let kinds = ["FIFO", "directory", "device"]

    /// Opens a FIFO for writing, and closes it, every 10 s until stopped: a reader blocked in its
    /// open (the old behaviour) then reads an empty file and fails, so that a regression fails the
    /// test rather than hanging the run.
    final class FIFOUnblocker: Sendable {
        private let stopped = ConditionLock(value: false)

        init(_ path: String) {
            Thread.detachNewThread { [stopped] in
                while !stopped.lock(whenValue: true, timeoutSeconds: 10) {
                    let descriptor = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
                    if descriptor >= 0 { close(descriptor) }
                }
                stopped.unlock()
            }
        }

        func stop() {
            stopped.lock()
            stopped.unlock(withValue: true)
        }
    }

    /// whoami's reply through the PROXY header and a TLS handshake.
    static func whoamiOverTLS(_ port: Int) async throws -> String? {
        let context = try TestCertificate.localhost.clientContext()
        let header = ProxyHeader(
            version: .v2,
            addresses: .inet(
                source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 51234), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)))
        let reply = try await LoopbackClient.exchange(port: port, send: []) { channel in
            try channel.pipeline.syncOperations.addHandlers([
                try ProxyProtocolClientHandler(header: header),
                try NIOSSLClientHandler(context: context, serverHostname: "localhost"),
            ])
        }
        return endpoint(try json(reply)["source"])
    }

    @Test(arguments: keys, kinds) func startUpRefusesAtOnce(key: String, kind: String) throws {
        let files = try Files()
        defer { files.remove() }
        let unblocker = FIFOUnblocker(files.fifo)
        defer { unblocker.stop() }
        let started = ContinuousClock.now
        expect(startupError(files.configuration(replacing: key, with: files.path(kind))), .file, key: key)
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test(arguments: keys, kinds) func reloadFailsAtOnceAndTheHostKeepsServing(key: String, kind: String) async throws {
        let files = try Files()
        defer { files.remove() }
        let unblocker = FIFOUnblocker(files.fifo)
        defer { unblocker.stop() }
        let running = try await RunningHost(files.configuration())
        let port = running.port(.proxy(service: "whoami", tls: true))
        #expect(try await Self.whoamiOverTLS(port) == "192.0.2.1 51234")

        let started = ContinuousClock.now
        do {
            try await running.host.reload(
                configuration: try NetProxyConfiguration(json: Data(files.configuration(replacing: key, with: files.path(kind)).utf8)))
            Issue.record("the reload succeeded")
        } catch {
            expect(error as? NetProxyConfigurationError, .file, key: key)
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(running.host.metricsExposition.contains("netproxy_reloads_total{result=\"failure\"} 1\n"))
        #expect(try await Self.whoamiOverTLS(port) == "192.0.2.1 51234")
        await running.stop()
    }

    /// The reader itself: links are followed (certificates are often links, as certbot's), a
    /// socket is named, the size is limited.
    @Test func regularFilesOnly() throws {
        let files = try Files()
        defer { files.remove() }
        func failure(_ path: String, limit: Int = RegularFile.pemSizeLimit) -> String? {
            do {
                _ = try RegularFile.contents(of: path, sizeLimit: limit)
                return nil
            } catch {
                return error.description
            }
        }
        let link = files.directory.appendingPathComponent("link.pem").path
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: files.certificate)
        #expect(try RegularFile.contents(of: link, sizeLimit: RegularFile.pemSizeLimit) == Array(TestCertificate.localhost.certificatePEM.utf8))
        let fifoLink = files.directory.appendingPathComponent("fifo-link.pem").path
        try FileManager.default.createSymbolicLink(atPath: fifoLink, withDestinationPath: files.fifo)
        #expect(failure(fifoLink) == "it is a FIFO, not a regular file")
        #expect(failure(files.directory.appendingPathComponent("none.pem").path) == "No such file or directory")

        let socketPath = files.directory.appendingPathComponent("s.sock").path
        let descriptor = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in socketPath.utf8.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0)
        #expect(failure(socketPath) == "it is a socket, not a regular file")

        let large = files.directory.appendingPathComponent("large.pem").path
        try Data(repeating: 0x41, count: RegularFile.pemSizeLimit).write(to: URL(fileURLWithPath: large))
        #expect(try RegularFile.contents(of: large, sizeLimit: RegularFile.pemSizeLimit).count == RegularFile.pemSizeLimit)
        try Data(repeating: 0x41, count: RegularFile.pemSizeLimit + 1).write(to: URL(fileURLWithPath: large))
        #expect(failure(large) == "it is larger than 1 MiB (1048577 bytes), the most read from such a file")
        #expect(failure(large, limit: 1000) == "it is larger than 1000 bytes (1048577 bytes), the most read from such a file")

        // A file too large for a PEM file is refused as such, the reader's words in the host's error.
        let tooLarge = try #require(failure(large))
        let error = startupError(files.configuration(replacing: "proxy_tls_key", with: large))
        expect(error, .file, key: "proxy_tls_key")
        #expect(error?.description.hasSuffix(": \(tooLarge)") == true, "\(error?.description ?? "")")
    }
}
