import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import TestSupport
import Testing

@testable import NetProxy

@Suite struct ServerTLSTests {
    func error(_ body: () throws(NetProxyConfigurationError) -> Void) -> NetProxyConfigurationError? {
        do {
            try body()
            return nil
        } catch {
            return error
        }
    }

    // MARK: - Matching names

    static let names = [
        "xmpp.example.com": "xmpp", "*.example.com": "wildcard", "Chat.Example.com": "chat", "*.chat.example.com": "chat wildcard",
    ]

    func select(_ serverName: String?) throws -> String? {
        try CertificateSelector(Self.names).select(serverName: serverName)
    }

    @Test func exactName() throws {
        #expect(try select("xmpp.example.com") == "xmpp")
    }

    @Test func wildcardMatchesOneLabel() throws {
        #expect(try select("a.example.com") == "wildcard")
        #expect(try select("b-2.example.com") == "wildcard")
        #expect(try select("x.chat.example.com") == "chat wildcard")
    }

    @Test func wildcardDoesNotMatchTwoLabels() throws {
        #expect(try select("a.b.example.com") == nil)
        #expect(try select("a.xmpp.example.com") == nil)
    }

    @Test func wildcardDoesNotMatchTheBareDomain() throws {
        #expect(try select("example.com") == nil)
        #expect(try select(".example.com") == nil)
    }

    @Test func caseAndTrailingDotAreIgnored() throws {
        #expect(try select("XMPP.Example.COM") == "xmpp")
        #expect(try select("xmpp.example.com.") == "xmpp")
        #expect(try select("A.EXAMPLE.COM.") == "wildcard")
        // A configured name in mixed case matches too.
        #expect(try select("chat.example.com") == "chat")
        // Only one trailing dot.
        #expect(try select("xmpp.example.com..") == nil)
    }

    @Test func exactBeatsWildcard() throws {
        // chat.example.com also matches *.example.com.
        #expect(try select("chat.example.com") == "chat")
        #expect(try select("chat.example.com.") == "chat")
        #expect(try select("chats.example.com") == "wildcard")
    }

    @Test func noServerNameGetsTheDefault() throws {
        #expect(try select(nil) == nil)
    }

    @Test func unknownNameGetsTheDefault() throws {
        for name in ["example.org", "xmpp.example.com.evil", "com", "", ".", "xmpp.example.cöm"] {
            #expect(try select(name) == nil, "\(name)")
        }
    }

    // MARK: - Checking the configuration

    @Test func validNames() throws {
        let names = ["xmpp.example.com", "*.example.com", "localhost", "*.test", "xn--bcher-kva.example", "a-b.c0", "EXAMPLE.NET"]
        let selector = try CertificateSelector(Dictionary(uniqueKeysWithValues: names.map { ($0, $0) }))
        #expect(selector.select(serverName: "example.net") == "EXAMPLE.NET")
    }

    @Test(arguments: [
        "",
        "xmpp_1.example.com",
        "xmpp example.com",
        "bücher.example",
        "a..example.com",
        "example.com.",
        ".example.com",
        "x*.example.com",
        "a.*.example.com",
        "**.example.com",
        "example.*",
        "*",
        "192.0.2.1",
        "::1",
        "2001:db8::1",
        "192.0.2",
        "*.10.0.0",
        "-xmpp.example.com",
        "xmpp-.example.com",
        String(repeating: "a", count: 64) + ".example.com",
        Array(repeating: String(repeating: "a", count: 63), count: 4).joined(separator: "."),
    ])
    func invalidName(name: String) {
        // A name with a space in it is not taken for the key: the key is read from the message.
        let key = name.contains(" ") ? nil : "proxy_tls_certificates.\(name)"
        expect(error { () throws(NetProxyConfigurationError) in _ = try CertificateSelector([name: 1]) }, .invalidValue, key: key)
    }

    @Test func nameGivenTwiceInDifferentCase() {
        expect(
            error { () throws(NetProxyConfigurationError) in _ = try CertificateSelector(["XMPP.example.com": 1, "xmpp.example.com": 2]) },
            .invalidValue, key: "proxy_tls_certificates.xmpp.example.com")
        expect(
            error { () throws(NetProxyConfigurationError) in _ = try CertificateSelector(["*.Example.com": 1, "*.example.com": 2]) },
            .invalidValue, key: "proxy_tls_certificates.*.example.com")
    }

    @Test func validALPN() throws {
        try ServerTLS.checkALPN([])
        try ServerTLS.checkALPN(["xmpp-client", "xmpp-server", "h2", "H2", "http/1.1", String(repeating: "a", count: 255)])
    }

    @Test(arguments: [
        ([""], "proxy_tls_alpn[0]"),
        (["xmpp-client", String(repeating: "a", count: 256)], "proxy_tls_alpn[1]"),
        (["xmpp-client", "xmpp-server", "xmpp-client"], "proxy_tls_alpn[2]"),
        (["h2", "é"], "proxy_tls_alpn[1]"),
        (["xmpp client"], "proxy_tls_alpn[0]"),
        (["h2\n"], "proxy_tls_alpn[0]"),
    ])
    func invalidALPN(protocols: [String], key: String) {
        expect(error { () throws(NetProxyConfigurationError) in try ServerTLS.checkALPN(protocols) }, .invalidValue, key: key)
    }

    /// From the file: names and ALPN are checked before any certificate is read.
    @Test func errorsFromTheConfigurationFile() throws {
        func makeContext(_ json: String) -> NetProxyConfigurationError? {
            error { () throws(NetProxyConfigurationError) in
                _ = try ServerTLS.makeContext(try NetProxyConfiguration(json: Data(json.utf8)))
            }
        }
        let tls = #""proxy_tls_ports": [15222], "proxy_tls_certificate": "/nonexistent.pem", "proxy_tls_key": "/nonexistent.key""#
        expect(
            makeContext(#"{\#(tls), "proxy_tls_certificates": {"a.*.example": {"certificate": "/a.pem", "key": "/a.key"}}}"#), .invalidValue,
            key: "proxy_tls_certificates.a.*.example")
        expect(makeContext(#"{\#(tls), "proxy_tls_alpn": ["xmpp-client", ""]}"#), .invalidValue, key: "proxy_tls_alpn[1]")
        expect(makeContext(#"{\#(tls)}"#), .file, key: "proxy_tls_certificate")
        // The message starts with proxy_tls_ports, but as a word of a sentence, not as a key.
        expect(
            makeContext(#"{"proxy_tls_ports": [15222], "proxy_tls_certificates": {"a.example": {"certificate": "/a.pem", "key": "/a.key"}}}"#),
            .invalidValue, key: nil)
    }

    /// Without proxy_tls_ports there is no context, and the other TLS keys are not looked at.
    @Test func noTLSPortsNoContext() throws {
        var configuration = NetProxyConfiguration()
        configuration.tlsCertificatePath = "/nonexistent.pem"
        configuration.tlsKeyPath = "/nonexistent.key"
        configuration.tlsCertificates = ["a.*.example": TLSCertificateFiles(certificatePath: "/a.pem", keyPath: "/a.key")]
        configuration.tlsALPN = ["", ""]
        #expect(try ServerTLS.makeContext(configuration) == nil)
    }

    // MARK: - Certificate files

    @Test(.tags(.interop)) func unreadableFilesNameTheirKey() async throws {
        let certificates = try GeneratedCertificates()
        defer { certificates.remove() }
        let good = try await certificates.make("default.test")
        var configuration = NetProxyConfiguration()
        configuration.proxyTLSPorts = [0]
        configuration.tlsCertificatePath = good.certificatePath
        configuration.tlsKeyPath = good.keyPath
        configuration.tlsCertificates = ["a.example.test": TLSCertificateFiles(certificatePath: "/nonexistent/a.pem", keyPath: good.keyPath)]
        expect(
            error { () throws(NetProxyConfigurationError) in _ = try ServerTLS.makeContext(configuration) }, .file,
            key: "proxy_tls_certificates.a.example.test.certificate")
        configuration.tlsCertificates = ["a.example.test": TLSCertificateFiles(certificatePath: good.certificatePath, keyPath: "/nonexistent/a.key")]
        expect(
            error { () throws(NetProxyConfigurationError) in _ = try ServerTLS.makeContext(configuration) }, .file,
            key: "proxy_tls_certificates.a.example.test.key")
        // A key is not a certificate.
        configuration.tlsCertificates = ["a.example.test": TLSCertificateFiles(certificatePath: good.keyPath, keyPath: good.keyPath)]
        expect(
            error { () throws(NetProxyConfigurationError) in _ = try ServerTLS.makeContext(configuration) }, .file,
            key: "proxy_tls_certificates.a.example.test.certificate")
    }

    @Test(.tags(.interop)) func keyThatDoesNotMatchItsCertificate() async throws {
        let certificates = try GeneratedCertificates()
        defer { certificates.remove() }
        let defaultFiles = try await certificates.make("default.test")
        let named = try await certificates.make("a.example.test")
        var configuration = NetProxyConfiguration()
        configuration.proxyTLSPorts = [0]
        configuration.tlsCertificatePath = defaultFiles.certificatePath
        configuration.tlsKeyPath = defaultFiles.keyPath
        configuration.tlsCertificates = ["a.example.test": named]
        #expect(try ServerTLS.makeContext(configuration) != nil)

        configuration.tlsCertificates = ["a.example.test": TLSCertificateFiles(certificatePath: named.certificatePath, keyPath: defaultFiles.keyPath)]
        expect(
            error { () throws(NetProxyConfigurationError) in _ = try ServerTLS.makeContext(configuration) }, .file,
            key: "proxy_tls_certificates.a.example.test.key")

        configuration.tlsCertificates = [:]
        configuration.tlsKeyPath = named.keyPath
        expect(error { () throws(NetProxyConfigurationError) in _ = try ServerTLS.makeContext(configuration) }, .file, key: "proxy_tls_key")
    }

    // MARK: - Handshakes

    /// openssl s_client asks for a name (or none) and reports the certificate it got and the
    /// protocol ALPN agreed on.
    @Test(
        .tags(.interop),
        arguments: [
            ("a.example.test", "a.example.test"),
            ("A.Example.Test.", "a.example.test"),
            ("x.wild.test", "*.wild.test"),
            (nil, "default.test"),
            ("other.test", "default.test"),
            ("y.x.wild.test", "default.test"),
        ] as [(String?, String)])
    func handshake(serverName: String?, expectedSubject: String) async throws {
        let openssl = try Peer.require("openssl")
        let certificates = try GeneratedCertificates()
        defer { certificates.remove() }
        var configuration = NetProxyConfiguration()
        configuration.proxyTLSPorts = [0]
        let defaultFiles = try await certificates.make("default.test")
        configuration.tlsCertificatePath = defaultFiles.certificatePath
        configuration.tlsKeyPath = defaultFiles.keyPath
        configuration.tlsCertificates = [
            "a.example.test": try await certificates.make("a.example.test"),
            "*.wild.test": try await certificates.make("*.wild.test"),
        ]
        configuration.tlsALPN = ["xmpp-client"]
        let context = try #require(try ServerTLS.makeContext(configuration))
        // Everything was read when the context was made: handshakes read no files.
        certificates.remove()

        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([NIOSSLServerHandler(context: context), SayOKAndClose()])
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { server.close(promise: nil) }
        let port = try #require(server.localAddress?.port)

        let name = serverName.map { ["-servername", $0] } ?? ["-noservername"]
        let client = try await ChildProcess.run(
            openssl, ["s_client", "-connect", "127.0.0.1:\(port)", "-alpn", "xmpp-client"] + name, standardError: .mergedIntoOutput, killAfter: 30)
        let output = client.standardOutput
        #expect(client.status == 0, "\(output)")
        let lines = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        // OpenSSL 3.0 writes "subject=CN = name", later versions "subject=CN=name".
        let subjects = lines.filter { $0.hasPrefix("subject=") }.map { $0.replacingOccurrences(of: " ", with: "") }
        #expect(subjects == ["subject=CN=\(expectedSubject)"], "\(output)")
        #expect(lines.contains("ALPN protocol: xmpp-client"), "\(output)")
    }

}

/// Self-signed certificates made by the openssl command line, in a temporary directory.
struct GeneratedCertificates {
    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-server-tls-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// A P-256 certificate with `name` as its subject's common name and its DNS name, and
    /// `organization` in the subject when given (to tell a renewed certificate from the first).
    func make(_ name: String, organization: String? = nil) async throws -> TLSCertificateFiles {
        let openssl = try Peer.require("openssl")
        let file = name.replacingOccurrences(of: "*", with: "wildcard")
        let files = TLSCertificateFiles(
            certificatePath: directory.appendingPathComponent("\(file).pem").path, keyPath: directory.appendingPathComponent("\(file).key.pem").path)
        let made = try await ChildProcess.run(
            openssl,
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj",
                "/CN=\(name)" + (organization.map { "/O=\($0)" } ?? ""),
                "-addext", "subjectAltName=DNS:\(name)", "-days", "2", "-keyout", files.keyPath, "-out", files.certificatePath,
            ], standardError: .mergedIntoOutput, killAfter: 30)
        try #require(made.status == 0, "openssl req for \(name): \(made.standardOutput)")
        return files
    }

    func remove() {
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Writes "ok" and closes once it is written: NIOSSL holds the write until the handshake is done.
private final class SayOKAndClose: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "ok"))).whenComplete { _ in channel.close(promise: nil) }
        context.fireChannelActive()
    }
}
