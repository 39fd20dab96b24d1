import Hummingbird
import HummingbirdCore
import HummingbirdProxyProtocol
import HummingbirdTLS
import NIOCore
import NIOProxyProtocol
import NIOSSL
import ProxyProtocol
import TestSupport
import Testing

@Suite(.timeLimit(.minutes(1))) struct HummingbirdTests {
    /// Runs an application that answers every GET with the client it sees, on a free port.
    func withApplication(
        server: HTTPServerBuilder, _ body: @Sendable (Int) async throws -> Void
    ) async throws {
        let router = Router(context: ProxiedRequestContext.self)
        router.get("/") { _, context -> String in
            let client = context.remoteAddress.map { "\($0.ipAddress ?? "?") \($0.port ?? 0)" } ?? "none"
            return "\(client) \(context.proxy?.header.version.description ?? "direct")"
        }
        router.get("/log") { _, context -> String in
            let client = context.logger[metadataKey: "client"].map { "\($0)" } ?? "none"
            let proxy = context.logger[metadataKey: "proxy"].map { "\($0)" } ?? "none"
            return "client=\(client) proxy=\(proxy) authority=\(context.proxy?.header.tlvs.authority ?? "none")"
        }
        try await withRunningApplication(router: router, server: server, body)
    }

    func responseBody(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes, as: UTF8.self)
        return text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
    }

    static let request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

    @Test func requestContextSeesTheClient() async throws {
        try await withApplication(server: .proxyProtocol(configuration: .init())) { port in
            let v1 = try await LoopbackClient.exchange(
                port: port, send: Array(("PROXY TCP4 192.0.2.1 198.51.100.7 51234 80\r\n" + Self.request).utf8))
            #expect(responseBody(v1) == "192.0.2.1 51234 v1")
            let v2Header = ProxyHeader(
                version: .v2,
                addresses: .inet6(
                    source: .init(ProxyIPv6Address("2001:db8::9")!, port: 4000), destination: .init(ProxyIPv6Address("2001:db8::1")!, port: 80)))
            let v2 = try await LoopbackClient.exchange(port: port, send: Array(try v2Header.encoded().readableBytesView) + Array(Self.request.utf8))
            #expect(responseBody(v2) == "2001:db8::9 4000 v2")
        }
    }

    /// The request's logger names the client and the proxy; the TLVs are in the context.
    @Test func requestLoggerCarriesTheClient() async throws {
        try await withApplication(server: .proxyProtocol(configuration: .init())) { port in
            let header = try ProxyHeader(
                version: .v2,
                addresses: .inet(
                    source: .init(ProxyIPv4Address(203, 0, 113, 9), port: 51234), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 80)),
                tlvs: [.authority("tenant.example")])
            let (channel, collector) = try await LoopbackClient.connect(to: port)
            try await channel.writeAndFlush(
                ByteBuffer(
                    bytes: Array(try header.encoded().readableBytesView) + Array("GET /log HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)))
            try await collector.closed.get()
            let local = try #require(channel.localAddress?.port)
            #expect(responseBody(collector.bytes) == "client=203.0.113.9:51234 proxy=127.0.0.1:\(local) authority=tenant.example")
        }
    }

    @Test func refusedConnectionsNeverReachTheRouter() async throws {
        let configuration = ProxyProtocolConfiguration(trustedProxies: try TrustedProxies(parsing: ["127.0.0.2"]))
        try await withApplication(server: .proxyProtocol(configuration: configuration)) { port in
            let untrusted = try await LoopbackClient.exchange(port: port, from: "127.0.0.3", send: Array(("PROXY UNKNOWN\r\n" + Self.request).utf8))
            #expect(untrusted == [])
            let noHeader = try await LoopbackClient.exchange(port: port, from: "127.0.0.2", send: Array(Self.request.utf8))
            #expect(noHeader == [])
            let local = try await LoopbackClient.exchange(
                port: port, from: "127.0.0.2", send: Array(try ProxyHeader.local.encoded().readableBytesView) + Array(Self.request.utf8))
            #expect(responseBody(local).hasPrefix("127.0.0.2 "))
        }
    }

    @Test func tlsAfterTheHeader() async throws {
        let certificate = TestCertificate.localhost
        let tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(certificate.certificate)], privateKey: .privateKey(certificate.privateKey))
        let server = HTTPServerBuilder.proxyProtocol(configuration: .init()) { try TLSChannel(HTTP1Channel(responder: $0), tlsConfiguration: tls) }
        try await withApplication(server: server) { port in
            let context = try certificate.clientContext()
            let header = ProxyHeader(
                version: .v2,
                addresses: .inet(
                    source: .init(ProxyIPv4Address(203, 0, 113, 4), port: 999), destination: .init(ProxyIPv4Address(127, 0, 0, 1), port: UInt16(port))
                ))
            let reply = try await LoopbackClient.exchange(port: port, send: Array(Self.request.utf8)) { channel in
                try channel.pipeline.syncOperations.addHandlers([
                    try ProxyProtocolClientHandler(header: header),
                    try NIOSSLClientHandler(context: context, serverHostname: "localhost"),
                ])
            }
            #expect(responseBody(reply) == "203.0.113.4 999 v2")
        }
    }
}
