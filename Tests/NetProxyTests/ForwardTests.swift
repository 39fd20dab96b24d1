import Foundation
import NIOCore
import NetProxy
import ProxyProtocol
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `forward_services`: relays to a target, plain or with a fresh PROXY header, against real
/// peers where the target has to read that header.
@Suite(.timeLimit(.minutes(2))) struct ForwardTests {
    /// A version 2 header announcing `source` to whatever port it is sent to.
    static func header(from source: String, port: UInt16) -> [UInt8] {
        let header = ProxyHeader(
            version: .v2,
            addresses: .inet(
                source: .init(ProxyIPv4Address(source)!, port: port), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)))
        return Array(try! header.encoded().readableBytesView)
    }

    /// A host with one forward service `fw` on a PROXY port, relaying to `target`.
    static func forwarder(_ fields: String) async throws -> (RunningHost, port: Int) {
        let running = try await RunningHost(
            #"{"interfaces": ["127.0.0.1"], "metrics_port": 0, "proxy_port_mappings": {"0": "fw"}, "forward_services": {"fw": {\#(fields)}}}"#)
        return (running, running.port(.proxy(service: "fw", tls: false)))
    }

    /// 100 MB through forward to an echo server, both ways, with the client half-closing while
    /// the echo is still coming back (and once with a slow reader): every byte arrives once, in
    /// order, and the connection ends cleanly.
    @Test(arguments: [false, true])
    func streamsAreByteExactBothWays(slowReader: Bool) async throws {
        let echo = try await RunningHost(#"{"interfaces": ["127.0.0.1"], "echo_ports": [0]}"#)
        let (forwarder, port) = try await Self.forwarder(#""target": "127.0.0.1:\#(echo.port(.service("echo")))""#)
        let count = slowReader ? 20_000_000 : 100_000_000
        let result = try await BlockingSocket.stream(
            to: port, prefix: Self.header(from: "192.0.2.1", port: 1000), count: count, seed: 9, slowReader: slowReader)
        #expect(result.receivedBytes == count)
        #expect(result.receivedDigest == result.sentDigest)
        #expect(result.end == "eof")
        await forwarder.stop()
        await echo.stop()
    }

    /// send_proxy v1 and v2 to nginx, which reads the header (`listen ... proxy_protocol`) and
    /// answers with the address it got: the client's from the header netproxy received.
    @Test(.enabled(if: Peer.available("nginx")), .tags(.interop), arguments: ["v1", "v2"])
    func nginxBehindSeesTheClient(version: String) async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let listener = try ListeningSocket()
        defer { listener.close() }
        let nginx = try Peer.startNginxStream(
            server: #"        return "$proxy_protocol_addr $proxy_protocol_port $remote_addr\n";"#, readsProxyProtocol: true,
            listener: listener, in: directory)
        defer { nginx.stop(signal: SIGTERM) }
        let (forwarder, port) = try await Self.forwarder(#""target": "127.0.0.1:\#(listener.port)", "send_proxy": "\#(version)""#)
        let reply = try await LoopbackClient.exchange(port: port, send: Self.header(from: "192.0.2.44", port: 4444))
        #expect(String(decoding: reply, as: UTF8.self) == "192.0.2.44 4444 127.0.0.1\n", "nginx: \(Peer.nginxErrors(in: directory))")
        await forwarder.stop()
    }

    /// HAProxy (send-proxy-v2) in front, netproxy forwarding with a new v2 header, nginx behind:
    /// nginx sees the address of the client that connected to HAProxy.
    @Test(.enabled(if: Peer.available("nginx") && Peer.available("haproxy")), .tags(.interop))
    func haproxyInFrontNginxBehind() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let nginxListener = try ListeningSocket()
        defer { nginxListener.close() }
        let nginx = try Peer.startNginxStream(
            server: #"        return "$proxy_protocol_addr $proxy_protocol_port\n";"#, readsProxyProtocol: true,
            listener: nginxListener, in: directory)
        defer { nginx.stop(signal: SIGTERM) }
        let (forwarder, port) = try await Self.forwarder(#""target": "127.0.0.1:\#(nginxListener.port)", "send_proxy": "v2""#)
        let (haproxy, haproxyPort, log) = try Peer.startHAProxy(tcpServer: "127.0.0.1:\(port) send-proxy-v2", in: directory)
        defer { haproxy.stop() }
        let client = try BlockingSocket(connectingTo: "127.0.0.1", port: haproxyPort, from: "127.0.0.23")
        defer { client.close() }
        let reply = String(decoding: try await BlockingSocket.onThread { try client.receiveAll() }, as: UTF8.self)
        let clientPort = try #require(client.localPort)
        #expect(reply == "127.0.0.23 \(clientPort)\n", "HAProxy: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        await forwarder.stop()
    }

    /// A target that refuses: the client's connection is closed, the failure counted, and the
    /// host goes on serving.
    @Test func refusedTargetClosesTheClientAndIsCounted() async throws {
        // Bound without listening for the whole test: connects are refused, and no other test's
        // listener can take the port meanwhile (one closed at once sometimes was, and answered).
        let closed = try ListeningSocket(listens: false)
        defer { closed.close() }
        let (forwarder, port) = try await Self.forwarder(#""target": "127.0.0.1:\#(closed.port)""#)
        for _ in 0..<3 {
            let reply = try await LoopbackClient.exchange(port: port, send: Self.header(from: "192.0.2.5", port: 5))
            #expect(reply == [])
        }
        let metrics = forwarder.host.metricsExposition
        #expect(metrics.contains(#"netproxy_forward_failures_total{service="fw",reason="refused"} 3"#), "\(metrics)")
        #expect(metrics.contains(#"netproxy_forward_failures_total{service="fw",reason="timeout"} 0"#))
        await forwarder.stop()
    }

    @Test(arguments: [
        (#"{"fw": {"target": "127.0.0.1"}}"#, NetProxyConfigurationError.Kind.invalidValue, "forward_services.fw.target" as String?),
        (#"{"fw": {"target": "::1:80"}}"#, .invalidValue, "forward_services.fw.target"),
        (#"{"fw": {"target": "[::1]:0"}}"#, .invalidValue, "forward_services.fw.target"),
        (#"{"fw": {"target": "[nope]:80"}}"#, .invalidValue, "forward_services.fw.target"),
        (#"{"fw": {"target": ":80"}}"#, .invalidValue, "forward_services.fw.target"),
        (#"{"fw": {"target": "a:1", "send_proxy": "v3"}}"#, .invalidValue, "forward_services.fw.send_proxy"),
        (#"{"fw": {"target": "a:1", "send_proxy": "v1", "pass_tlvs": true}}"#, .invalidValue, "forward_services.fw"),
        (#"{"fw": {"target": "a:1", "colour": 1}}"#, .unknownKey, "forward_services.fw"),
        (#"{"fw": {"target": "a:1", "transparent": "yes"}}"#, .invalidValue, "forward_services.fw.transparent"),
        (#"{"fw": {}}"#, .invalidValue, "forward_services.fw"),
        (#"{"echo": {"target": "a:1"}}"#, .conflict, "forward_services.echo"),
        (#"{"fw": {"target": "a:1", "connect_timeout": 1e10}}"#, .invalidValue, "forward_services.fw.connect_timeout"),
        (#"{"fw": {"target": " 127.0.0.1:80"}}"#, .invalidValue, "forward_services.fw.target"),
        (#"{"fw": {"target": "exa mple.com:80"}}"#, .invalidValue, "forward_services.fw.target"),
        (#"{"fw": {"target": "1.2.3.4.5:80"}}"#, .invalidValue, "forward_services.fw.target"),
        (#"{"proxy": {"target": "a:1"}}"#, .invalidValue, "forward_services.proxy"),
        // A name with a space in it is not taken for the key: the key is read from the message.
        (#"{"a b": {"target": "a:1"}}"#, .invalidValue, nil),
    ])
    func badConfigurationsNameTheEntry(entry: String, kind: NetProxyConfigurationError.Kind, key: String?) throws {
        let json = #"{"proxy_port_mappings": {"0": "fw"}, "forward_services": \#(entry)}"#
        expect(startupError(json), kind, key: key)
    }

    /// A forward whose target is one of the host's own listeners, however it is written, is
    /// refused at start-up naming both: it would loop until no descriptor is left, or (into a
    /// PROXY port, without a header) let any client pass for a trusted proxy.
    @Test(arguments: [
        // Its own regular port, through the wildcard.
        (
            #""interfaces": ["0.0.0.0"], "fw_ports": [21320], "forward_services": {"fw": {"target": "127.0.0.1:21320"}}"#,
            "forward_services.fw.target: 127.0.0.1:21320 is this host's own listener, fw on 0.0.0.0:21320"
        ),
        // Another service's PROXY port, relayed into without a header: trust laundered.
        (
            #""interfaces": ["127.0.0.1"], "fw_ports": [21321], "proxy_port_mappings": {"21322": "echo"}, "forward_services": {"fw": {"target": "127.0.0.1:21322", "send_proxy": "none"}}"#,
            "forward_services.fw.target: 127.0.0.1:21322 is this host's own listener, PROXY on 127.0.0.1:21322 -> echo"
        ),
        // A name that resolves to it.
        (
            #""interfaces": ["127.0.0.1"], "echo_ports": [21323], "fw_ports": [21324], "forward_services": {"fw": {"target": "localhost:21323"}}"#,
            "forward_services.fw.target: localhost:21323 is this host's own listener, echo on 127.0.0.1:21323"
        ),
        // Any loopback address reaches a wildcard listener; IPv6's wildcard takes IPv4 too.
        (
            #""interfaces": ["::"], "echo_ports": [21325], "fw_ports": [21326], "forward_services": {"fw": {"target": ["127.0.0.2:21325"]}}"#,
            "forward_services.fw.target: 127.0.0.2:21325 is this host's own listener, echo on [::]:21325"
        ),
        // The second target of a list, and the metrics port.
        (
            #""interfaces": ["127.0.0.1", "::1"], "metrics_port": 21327, "fw_ports": [21328], "forward_services": {"fw": {"target": ["127.0.0.1:1", "[::1]:21327"]}}"#,
            "forward_services.fw.target: [::1]:21327 is this host's own listener, metrics on [::1]:21327"
        ),
    ])
    func aForwardIntoItsOwnHostIsRefused(config: String, message: String) throws {
        let error = startupError("{\(config)}")
        expect(error, .conflict, key: "forward_services.fw.target")
        // The words are checked too: they name both ends of the loop and say why it is refused.
        #expect(
            error?.description == message + ": a forward into its own host would loop, or let any client pass for a trusted proxy",
            "\(error?.description ?? "")")
    }

    /// What is not this host is accepted: a listener of the other family's wildcard, another
    /// port, another loopback address than a specific listener's.
    @Test func targetsBesideTheHostsOwnListenersAreAccepted() throws {
        let json = #"""
            {"interfaces": ["0.0.0.0", "127.0.0.5"], "echo_ports": [21330], "fw_ports": [21331],
             "forward_services": {"fw": {"target": ["[::1]:21330", "127.0.0.1:21332"]}}}
            """#
        let host = try NetProxyHost(configuration: try NetProxyConfiguration(json: Data(json.utf8)))
        #expect(
            host.configuration.forwardServices["fw"]?.targets == [
                ForwardTarget(host: "::1", port: 21330), ForwardTarget(host: "127.0.0.1", port: 21332),
            ])
    }

    /// A list of targets holds one per address family; errors name the entry.
    @Test(arguments: [
        (#"["127.0.0.1:1", "127.0.0.2:2"]"#, "forward_services.fw.target"),
        (#"["[::1]:1", "example.org:2"]"#, "forward_services.fw.target"),
        (#"[]"#, "forward_services.fw.target"),
        (#"["127.0.0.1:1", 2]"#, "forward_services.fw.target[1]"),
        (#"["127.0.0.1:1", "[::1]"]"#, "forward_services.fw.target[1]"),
    ])
    func targetListsAreChecked(target: String, key: String) throws {
        let json = #"{"proxy_port_mappings": {"0": "fw"}, "forward_services": {"fw": {"target": \#(target)}}}"#
        expect(startupError(json), .invalidValue, key: key)
    }

    /// Received TLVs that, with a new CRC32C, no longer fit a header: the connection is closed
    /// and counted, never relayed without the header (the target would take the client's bytes
    /// for one).
    @Test func aHeaderThatCannotBeSentClosesTheConnection() async throws {
        let target = try ListeningSocket()
        defer { target.close() }
        let running = try await RunningHost(
            #"""
            {"interfaces": ["127.0.0.1"], "proxy_max_header_size": 65551, "proxy_port_mappings": {"0": "fw"},
             "forward_services": {"fw": {"target": "127.0.0.1:\#(target.port)", "send_proxy": "v2", "pass_tlvs": true, "crc32c": true}}}
            """#)
        let port = running.port(.proxy(service: "fw", tls: false))
        var header = ProxyHeader(
            version: .v2,
            addresses: .inet(source: .init(ProxyIPv4Address(192, 0, 2, 50), port: 1234), destination: .init(ProxyIPv4Address(192, 0, 2, 1), port: 80))
        )
        header.tlvs = [try ProxyTLV(type: ProxyTLVType(0xF1), value: ByteBuffer(repeating: 0x41, count: 65520))]
        let reply = try await LoopbackClient.exchange(
            port: port, send: Array(try header.encoded().readableBytesView) + Array("PROXY TCP4 6.6.6.6 7.7.7.7 666 777\r\n".utf8))
        #expect(reply == [])
        #expect(running.host.metricsExposition.contains(#"netproxy_forward_failures_total{service="fw",reason="header"} 1"#))
        await running.stop()
    }
}
