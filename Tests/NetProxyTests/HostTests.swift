import CoreMetrics
import Foundation
import Logging
import MetricsTestKit
import NIOCore
import NIOPosix
import NIOProxyProtocol
import NIOSSL
import NetProxy
import ProxyProtocol
import TestSupport
import Testing

/// A host running its public life cycle, ``NetProxyHost/run()``, in a task of its own, with
/// every listener on a free port.
struct RunningHost {
    let host: NetProxyHost
    /// The task of ``NetProxyHost/run()``.
    let running: Task<Void, any Error>

    init(_ json: String, services: [NetProxyService] = NetProxyService.builtins) async throws {
        try await self.init(configuration: try NetProxyConfiguration(json: Data(json.utf8)), services: services)
    }

    init(
        configuration: NetProxyConfiguration, services: [NetProxyService] = NetProxyService.builtins,
        metricsFactory: any MetricsFactory = NOOPMetricsHandler.instance, logger: Logger = Logger(label: "netproxy")
    ) async throws {
        try await self.init { onServerRunning in
            try NetProxyHost(
                configuration: configuration, services: services, logger: logger, metricsFactory: metricsFactory,
                onServerRunning: onServerRunning)
        }
    }

    /// Runs the host `make` returns, given the hook to pass as `onServerRunning`; returns once
    /// it is listening, or throws what ended ``NetProxyHost/run()`` first.
    init(
        _ make: (_ onServerRunning: @escaping @Sendable ([NetProxyHost.BoundListener]) async -> Void) throws -> NetProxyHost
    ) async throws {
        let (started, continuation) = AsyncStream.makeStream(of: Result<Void, any Error>.self)
        let host = try make { _ in continuation.yield(.success(())) }
        self.host = host
        running = Task {
            do {
                try await host.run()
            } catch {
                continuation.yield(.failure(error))
                throw error
            }
        }
        var outcomes = started.makeAsyncIterator()
        try await outcomes.next()?.get()
    }

    /// The bound port of the first listener matching `kind`.
    func port(_ kind: ListenerPlan.Kind, host address: String = "127.0.0.1") -> Int {
        host.listeners.first { $0.plan.kind == kind && $0.plan.host == address }!.address.port!
    }

    /// Shuts the host down with `gracePeriod`, ends ``NetProxyHost/run()`` and waits for it:
    /// every connection and async service has ended on return.
    func stop(gracePeriod: TimeAmount = .zero) async {
        await host.shutdown(gracePeriod: gracePeriod)
        running.cancel()
        _ = try? await running.value
    }
}

/// The error a configuration stops a host with at creation (its parsing included), or `nil`.
func startupError(_ json: String, services: [NetProxyService] = NetProxyService.builtins) -> NetProxyConfigurationError? {
    do {
        _ = try NetProxyHost(configuration: try NetProxyConfiguration(json: Data(json.utf8)), services: services)
        return nil
    } catch {
        return error
    }
}

/// Expects `error` to be of `kind` about `key`: what code reacting to it reads, rather than its
/// words (which the failure message shows).
func expect(
    _ error: NetProxyConfigurationError?, _ kind: NetProxyConfigurationError.Kind, key: String?, sourceLocation: SourceLocation = #_sourceLocation
) {
    guard let error else {
        Issue.record("no error; expected \(kind) at \(key ?? "no key")", sourceLocation: sourceLocation)
        return
    }
    #expect(error.kind == kind && error.key == key, "\(error)", sourceLocation: sourceLocation)
}

func json(_ bytes: [UInt8]) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
}

func endpoint(_ value: Any?) -> String? {
    guard let object = value as? [String: Any], let ip = object["ip"] as? String, let port = object["port"] as? Int else { return nil }
    return "\(ip) \(port)"
}

@Suite(.timeLimit(.minutes(1))) struct HostTests {
    static var header: ProxyHeader {
        get throws {
            try ProxyHeader(
                version: .v2,
                addresses: .inet(
                    source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 51234), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)),
                tlvs: [.authority("example.com")])
        }
    }

    @Test func whoamiOnAProxyPort() async throws {
        let running = try await RunningHost(#"{"whoami_ports": [], "proxy_ports": [0], "proxy_port_mappings": {"0": "whoami"}}"#)
        let port = running.port(.proxy(service: "whoami", tls: false))
        let headerBytes = Array(try Self.header.encoded().readableBytesView)
        let reply = try await LoopbackClient.exchange(port: port, send: headerBytes)
        let object = try json(reply)
        #expect(reply.last == UInt8(ascii: "\n"))
        #expect(object["service"] as? String == "whoami")
        #expect(object["port"] as? Int == port)
        #expect(endpoint(object["source"]) == "192.0.2.1 51234")
        #expect(endpoint(object["destination"]) == "198.51.100.7 443")
        #expect((object["peer"] as? [String: Any])?["ip"] as? String == "127.0.0.1")
        let proxy = try #require(object["proxy"] as? [String: Any])
        #expect(proxy["version"] as? Int == 2)
        #expect(proxy["family"] as? String == "INET")
        #expect(proxy["header_length"] as? Int == headerBytes.count)
        let tlvs = try #require(proxy["tlvs"] as? [[String: Any]])
        #expect(tlvs.first?["value"] as? String == "example.com")
        await running.stop()
    }

    @Test func whoamiOnARegularPortOverIPv6() async throws {
        let running = try await RunningHost(#"{"whoami_ports": [0]}"#)
        let port = running.port(.service("whoami"), host: "::1")
        let (channel, collector) = try await LoopbackClient.connect(to: port, host: "::1", from: "::1")
        try await collector.closed.get()
        let object = try json(collector.bytes)
        let local = try #require(channel.localAddress?.port)
        #expect(endpoint(object["source"]) == "::1 \(local)")
        #expect(endpoint(object["peer"]) == "::1 \(local)")
        #expect(endpoint(object["destination"]) == "::1 \(port)")
        #expect(object["proxy"] is NSNull)
        await running.stop()
    }

    @Test func echoUntilHalfClose() async throws {
        let running = try await RunningHost(#"{"echo_ports": [], "proxy_port_mappings": {"0": "echo"}}"#)
        let port = running.port(.proxy(service: "echo", tls: false))
        let payload = Array("PROXY TCP4 looks like a header but is data\r\n".utf8) + (0..<50_000).map { UInt8(truncatingIfNeeded: $0) }
        let reply = try await LoopbackClient.exchange(
            port: port, send: Array("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n".utf8) + payload, halfClose: true)
        #expect(reply == payload)
        await running.stop()
    }

    @Test func httpKeepAlive() async throws {
        let running = try await RunningHost(#"{"http_ports": [], "proxy_port_mappings": {"0": "http"}}"#)
        let port = running.port(.proxy(service: "http", tls: false))
        let request = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        let reply = String(
            decoding: try await LoopbackClient.exchange(
                port: port, send: Array("PROXY TCP6 2001:db8::1 ::1 4000 80\r\n\(request)".utf8)), as: UTF8.self)
        let responses = reply.components(separatedBy: "HTTP/1.1 200 OK\r\n").dropFirst()
        #expect(responses.count == 2)
        #expect(
            responses.first?.contains("content-type: application/json\r\n") == true
                || responses.first?.contains("Content-Type: application/json\r\n") == true)
        #expect(reply.contains("\"source\":{\"ip\":\"2001:db8::1\",\"port\":4000}"))
        let post = String(
            decoding: try await LoopbackClient.exchange(
                port: port, send: Array("PROXY UNKNOWN\r\nPOST / HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)), as: UTF8.self)
        #expect(post.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
        await running.stop()
    }

    @Test func unmappedPortClosesAfterTheHeader() async throws {
        let running = try await RunningHost(#"{"proxy_ports": [0], "echo_ports": [], "metrics_port": 0}"#)
        #expect(running.host.warnings == ["PROXY port 0 has no entry in proxy_port_mappings: its connections will be closed after the header"])
        let port = running.port(.proxy(service: nil, tls: false))
        let reply = try await LoopbackClient.exchange(port: port, send: Array("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nhello".utf8))
        #expect(reply == [])
        #expect(running.host.metricsExposition.contains(#"netproxy_connections_rejected_total{reason="unmapped_port"} 1"#))
        await running.stop()
    }

    /// The same metrics reach a swift-metrics factory the application chose, beside the host's
    /// own registry.
    @Test func metricsReachTheGivenFactory() async throws {
        let metrics = TestMetrics()
        let running = try await RunningHost(
            configuration: try NetProxyConfiguration(json: Data(#"{"proxy_ports": [0], "echo_ports": []}"#.utf8)), metricsFactory: metrics)
        let port = running.port(.proxy(service: nil, tls: false))
        #expect(try await LoopbackClient.exchange(port: port, send: Array("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n".utf8)) == [])
        await running.stop()
        #expect(try metrics.expectCounter("netproxy_connections_accepted_total", [("listener", "proxy")]).totalValue == 1)
        #expect(try metrics.expectCounter("netproxy_proxy_headers_total", [("version", "v1")]).totalValue == 1)
        #expect(try metrics.expectCounter("netproxy_connections_rejected_total", [("reason", "unmapped_port")]).totalValue == 1)
        #expect(running.host.metricsExposition.contains(#"netproxy_connections_rejected_total{reason="unmapped_port"} 1"#))
    }

    @Test func untrustedProxyAndMetrics() async throws {
        let running = try await RunningHost(
            """
            {"echo_ports": [], "proxy_port_mappings": {"0": "echo"}, "proxy_trusted_proxies": ["127.0.0.2"], "metrics_port": 0}
            """)
        let port = running.port(.proxy(service: "echo", tls: false))
        let refused = try await LoopbackClient.exchange(port: port, from: "127.0.0.3", send: Array("PROXY UNKNOWN\r\nhi".utf8))
        #expect(refused == [])
        let echoed = try await LoopbackClient.exchange(port: port, from: "127.0.0.2", send: Array("PROXY UNKNOWN\r\nhi".utf8), halfClose: true)
        #expect(echoed == Array("hi".utf8))
        let invalid = try await LoopbackClient.exchange(port: port, from: "127.0.0.2", send: Array("GET / HTTP/1.0\r\n\r\n".utf8))
        #expect(invalid == [])
        let metricsPort = running.port(.metrics)
        let metrics = String(
            decoding: try await LoopbackClient.exchange(
                port: metricsPort, send: Array("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n".utf8)), as: UTF8.self)
        #expect(metrics.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(metrics.contains(#"netproxy_connections_accepted_total{listener="proxy"} 3"#))
        #expect(metrics.contains(#"netproxy_connections_rejected_total{reason="untrusted_source"} 1"#))
        #expect(metrics.contains(#"netproxy_connections_rejected_total{reason="invalid_header"} 1"#))
        #expect(metrics.contains(#"netproxy_proxy_headers_total{version="v1"} 1"#))
        #expect(metrics.contains("netproxy_build_info{version=\"\(NetProxyHost.version)\"} 1.0\n"))
        await running.stop()
    }

    /// The metrics endpoint answers HEAD like GET, without the body.
    @Test func metricsAnswersHead() async throws {
        let running = try await RunningHost(#"{"interfaces": ["127.0.0.1"], "metrics_port": 0}"#)
        let reply = String(
            decoding: try await LoopbackClient.exchange(
                port: running.port(.metrics), send: Array("HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n".utf8)),
            as: UTF8.self)
        #expect(reply.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(reply.hasSuffix("\r\n\r\n"))
        await running.stop()
    }

    @Test func localHealthCheck() async throws {
        let running = try await RunningHost(#"{"whoami_ports": [], "proxy_port_mappings": {"0": "whoami"}, "metrics_port": 0}"#)
        let port = running.port(.proxy(service: "whoami", tls: false))
        let reply = try await LoopbackClient.exchange(port: port, send: Array(try ProxyHeader.local.encoded().readableBytesView))
        let object = try json(reply)
        #expect(endpoint(object["source"]) == endpoint(object["peer"]))
        #expect((object["proxy"] as? [String: Any])?["command"] as? String == "LOCAL")
        #expect(running.host.metricsExposition.contains(#"netproxy_proxy_local_total{version="v2"} 1"#))
        await running.stop()
    }

    @Test func tlsRightAfterTheHeader() async throws {
        let certificate = TestCertificate.localhost
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-tls-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let certPath = directory.appendingPathComponent("cert.pem").path
        let keyPath = directory.appendingPathComponent("key.pem").path
        try certificate.certificatePEM.write(toFile: certPath, atomically: true, encoding: .utf8)
        try certificate.privateKeyPEM.write(toFile: keyPath, atomically: true, encoding: .utf8)
        let running = try await RunningHost(
            """
            {"whoami_ports": [], "proxy_port_mappings": {"0": "whoami"}, "proxy_tls_ports": [0],
             "proxy_tls_certificate": "\(certPath)", "proxy_tls_key": "\(keyPath)"}
            """)
        let port = running.port(.proxy(service: "whoami", tls: true))
        let context = try certificate.clientContext()
        let reply = try await LoopbackClient.exchange(port: port, send: []) { channel in
            try channel.pipeline.syncOperations.addHandlers([
                try ProxyProtocolClientHandler(header: Self.header),
                try NIOSSLClientHandler(context: context, serverHostname: "localhost"),
            ])
        }
        #expect(endpoint(try json(reply)["source"]) == "192.0.2.1 51234")
        await running.stop()
    }

    @Test func asyncService() async throws {
        let upper = NetProxyService.async(name: "upper", allowsHalfClosure: true) { inbound, outbound, info in
            try await outbound.write(ByteBuffer(string: "hello \(info.source.ipAddress!)\n"))
            for try await buffer in inbound {
                try await outbound.write(ByteBuffer(string: String(buffer: buffer).uppercased()))
            }
        }
        let running = try await RunningHost(#"{"proxy_port_mappings": {"0": "upper"}}"#, services: [upper])
        let port = running.port(.proxy(service: "upper", tls: false))
        let reply = try await LoopbackClient.exchange(
            port: port, send: Array("PROXY TCP4 203.0.113.5 192.0.2.2 1 2\r\nabc".utf8), halfClose: true)
        #expect(String(decoding: reply, as: UTF8.self) == "hello 203.0.113.5\nABC")
        await running.stop()
    }

    /// Shutdown closes connections waiting for a header at once and lets the others drain.
    @Test func gracefulShutdown() async throws {
        let running = try await RunningHost(#"{"echo_ports": [], "proxy_port_mappings": {"0": "echo"}}"#)
        let port = running.port(.proxy(service: "echo", tls: false))
        let (waiting, waitingCollector) = try await LoopbackClient.connect(to: port)
        try await waiting.writeAndFlush(ByteBuffer(string: "PROXY TCP4"))
        // The echo proves the header was accepted before shutdown begins.
        let echoed = ByteCollector(eventLoop: MultiThreadedEventLoopGroup.singleton.any(), expecting: 3)
        let (established, establishedCollector) = try await LoopbackClient.connect(to: port) { channel in
            try channel.pipeline.syncOperations.addHandler(echoed)
        }
        try await established.writeAndFlush(ByteBuffer(string: "PROXY UNKNOWN\r\none"))
        try await echoed.received.get()
        #expect(echoed.string == "one")
        let shutdown = Task { await running.host.shutdown(gracePeriod: .seconds(30)) }
        try await waitingCollector.closed.get()
        try await established.writeAndFlush(ByteBuffer(string: "two"))
        try await established.close(mode: .output)
        try await establishedCollector.closed.get()
        #expect(establishedCollector.string == "onetwo")
        await shutdown.value
        await #expect(throws: (any Error).self) { try await LoopbackClient.connect(to: port) }
    }
}
