import Foundation
import NIOCore
import NetProxy
import ProxyProtocol
import TestSupport
import Testing

/// `proxy_port_options` and the global policy keys: each PROXY port reads headers by its own rules.
@Suite(.timeLimit(.minutes(1))) struct PortPolicyTests {
    static let header = ProxyHeader(
        version: .v2,
        addresses: .inet(
            source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 51234), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)))

    static func bytes(_ header: ProxyHeader) throws -> [UInt8] {
        Array(try header.encoded().readableBytesView)
    }

    static func rejected(_ host: NetProxyHost, _ reason: String) -> Int? {
        let prefix = #"netproxy_connections_rejected_total{reason="\#(reason)"} "#
        return host.metricsExposition.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Int($0.dropFirst(prefix.count)) }
    }

    @Test func eachPortTrustsItsOwnProxies() async throws {
        let ports = try freePorts(2)
        let running = try await RunningHost(
            """
            {"interfaces": ["127.0.0.1"], "whoami_ports": [],
             "proxy_port_mappings": {"\(ports[0])": "whoami", "\(ports[1])": "whoami"},
             "proxy_trusted_proxies": ["127.0.0.2"],
             "proxy_port_options": {"\(ports[1])": {"trusted_proxies": ["127.0.0.3/32"]}}}
            """)
        let header = try Self.bytes(Self.header)
        // The global list on the first port, the port's own on the second; neither trusts the other's proxy.
        let first = try await LoopbackClient.exchange(port: ports[0], from: "127.0.0.2", send: header)
        #expect(endpoint(try json(first)["source"]) == "192.0.2.1 51234")
        #expect(try await LoopbackClient.exchange(port: ports[0], from: "127.0.0.3", send: header) == [])
        let second = try await LoopbackClient.exchange(port: ports[1], from: "127.0.0.3", send: header)
        #expect(endpoint(try json(second)["source"]) == "192.0.2.1 51234")
        #expect(try await LoopbackClient.exchange(port: ports[1], from: "127.0.0.2", send: header) == [])
        #expect(Self.rejected(running.host, "untrusted_source") == 2)
        await running.stop()
    }

    /// HAProxy connecting from 127.0.0.12: trusted by the port whose own list names it, refused by
    /// the port that keeps the global list.
    @Test(.enabled(if: Peer.available("haproxy") && Peer.available("curl")), .tags(.interop)) func haproxyIsTrustedOnlyWhereItsPortSaysSo()
        async throws
    {
        let ports = try freePorts(2)
        let running = try await RunningHost(
            """
            {"interfaces": ["127.0.0.1"], "http_ports": [],
             "proxy_port_mappings": {"\(ports[0])": "http", "\(ports[1])": "http"},
             "proxy_trusted_proxies": ["127.0.0.1"],
             "proxy_port_options": {"\(ports[0])": {"trusted_proxies": ["127.0.0.12"], "versions": [2]}}}
            """)
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for (port, trusted) in [(ports[0], true), (ports[1], false)] {
            let (haproxy, frontendPort, log) = try Peer.startHAProxy(tcpServer: "127.0.0.1:\(port) send-proxy-v2 source 127.0.0.12", in: directory)
            defer { haproxy.stop() }
            let curl = try await Peer.runCurl(["--interface", "127.0.0.13", "http://127.0.0.1:\(frontendPort)/"])
            #expect(haproxy.isRunning, "HAProxy: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
            if trusted {
                #expect(curl.status == 0, "\(curl.standardError)")
                let transfer = try #require(curl.transfers.first)
                let body = try json(Array(transfer.body.utf8))
                #expect(endpoint(body["source"]) == "127.0.0.13 \(transfer.localPort)")
                #expect((body["peer"] as? [String: Any])?["ip"] as? String == "127.0.0.12")
            } else {
                // HAProxy's connection is closed unread: curl gets an empty reply (exit 52).
                #expect(curl.status == 52, "\(curl.standardError)")
            }
        }
        #expect(Self.rejected(running.host, "untrusted_source") == 1)
        await running.stop()
    }

    @Test func versionsLocalAndUnspecifiedPerPort() async throws {
        let ports = try freePorts(2)
        let running = try await RunningHost(
            """
            {"interfaces": ["127.0.0.1"], "whoami_ports": [],
             "proxy_port_mappings": {"\(ports[0])": "whoami", "\(ports[1])": "whoami"},
             "proxy_versions": [1, 2], "proxy_local": "accept", "proxy_unspecified": "accept",
             "proxy_port_options": {"\(ports[1])": {"versions": [2], "local": "reject", "unspecified": "reject"}}}
            """)
        var v1 = Self.header
        v1.version = .v1
        let unspecified = ProxyHeader(version: .v2, addresses: .unspecified)
        for header in [v1, .local, unspecified, .v1Unknown] {
            let reply = try await LoopbackClient.exchange(port: ports[0], send: try Self.bytes(header))
            #expect(try json(reply)["service"] as? String == "whoami", "\(header) on the port with the global policy")
            #expect(try await LoopbackClient.exchange(port: ports[1], send: try Self.bytes(header)) == [], "\(header) on the strict port")
        }
        let v2 = try await LoopbackClient.exchange(port: ports[1], send: try Self.bytes(Self.header))
        #expect(endpoint(try json(v2)["source"]) == "192.0.2.1 51234")
        // v1 UNKNOWN is refused for its version, before its addresses are looked at.
        #expect(Self.rejected(running.host, "invalid_header") == 2)
        #expect(Self.rejected(running.host, "local_not_accepted") == 1)
        #expect(Self.rejected(running.host, "unspecified_not_accepted") == 1)
        await running.stop()
    }

    @Test func globalPolicyKeys() async throws {
        let running = try await RunningHost(
            #"{"whoami_ports": [], "proxy_port_mappings": {"0": "whoami"}, "proxy_versions": [1], "proxy_local": "reject"}"#)
        let port = running.port(.proxy(service: "whoami", tls: false))
        #expect(try await LoopbackClient.exchange(port: port, send: try Self.bytes(Self.header)) == [])
        #expect(try await LoopbackClient.exchange(port: port, send: try Self.bytes(.local)) == [])
        var v1 = Self.header
        v1.version = .v1
        let reply = try await LoopbackClient.exchange(port: port, send: try Self.bytes(v1))
        #expect(endpoint(try json(reply)["source"]) == "192.0.2.1 51234")
        #expect(Self.rejected(running.host, "invalid_header") == 2)
        await running.stop()
    }

    @Test func headerTimeoutPerPort() async throws {
        // Port 0 in both keys: a port chosen beforehand could be taken, by another test's
        // connection, before the host binds it.
        let running = try await RunningHost(
            """
            {"interfaces": ["127.0.0.1"], "whoami_ports": [], "proxy_port_mappings": {"0": "whoami"},
             "proxy_header_timeout": 60, "proxy_port_options": {"0": {"header_timeout": 0.3}}}
            """)
        let port = running.port(.proxy(service: "whoami", tls: false))
        // Half a header, then silence: only the port's 0.3 s ends it before the test's time limit.
        let reply = try await LoopbackClient.exchange(port: port, send: Array(try Self.bytes(Self.header).prefix(10)))
        #expect(reply == [])
        #expect(Self.rejected(running.host, "header_timeout") == 1)
        await running.stop()
    }

    @Test func aPortTimeoutUnderThreeSecondsWarns() throws {
        let host = try NetProxyHost(
            configuration: try NetProxyConfiguration(
                json: Data(
                    #"{"whoami_ports": [], "proxy_port_mappings": {"15222": "whoami"}, "proxy_port_options": {"15222": {"header_timeout": 1}}}"#.utf8)
            ))
        #expect(host.warnings == ["proxy_port_options.15222.header_timeout is 1 s; the PROXY specification asks for at least 3 s"])
    }

    @Test func directClientsAreServedWithoutAHeader() async throws {
        let running = try await RunningHost(
            """
            {"interfaces": ["127.0.0.1"], "whoami_ports": [], "proxy_port_mappings": {"0": "whoami"},
             "proxy_trusted_proxies": ["127.0.0.1"], "proxy_direct_clients": ["127.0.0.16/28"]}
            """)
        let port = running.port(.proxy(service: "whoami", tls: false))
        // A direct client: whoami answers at once, with the socket's addresses.
        let (channel, collector) = try await LoopbackClient.connect(to: port, from: "127.0.0.20")
        try await collector.closed.get()
        let direct = try json(collector.bytes)
        let local = try #require(channel.localAddress?.port)
        #expect(endpoint(direct["source"]) == "127.0.0.20 \(local)")
        #expect(endpoint(direct["peer"]) == "127.0.0.20 \(local)")
        #expect(direct["proxy"] is NSNull)
        // The trusted proxy still must send a header, and its header is believed.
        let proxied = try await LoopbackClient.exchange(port: port, from: "127.0.0.1", send: try Self.bytes(Self.header))
        #expect(endpoint(try json(proxied)["source"]) == "192.0.2.1 51234")
        // Anyone else is refused before a read.
        #expect(try await LoopbackClient.exchange(port: port, from: "127.0.0.40", send: try Self.bytes(Self.header)) == [])
        #expect(Self.rejected(running.host, "untrusted_source") == 1)
        await running.stop()
    }

    /// A direct client's bytes are the protocol's, even when they look like a header: it cannot
    /// claim another address.
    @Test func aDirectClientCannotSendAHeader() async throws {
        let running = try await RunningHost(
            #"{"interfaces": ["127.0.0.1"], "echo_ports": [], "proxy_port_mappings": {"0": "echo"}, "proxy_direct_clients": ["127.0.0.21"]}"#)
        let port = running.port(.proxy(service: "echo", tls: false))
        let header = try Self.bytes(Self.header)
        let reply = try await LoopbackClient.exchange(port: port, from: "127.0.0.21", send: header + Array("after".utf8), halfClose: true)
        #expect(reply == header + Array("after".utf8))
        await running.stop()
    }

    @Test func aSourceCannotBeBothProxyAndDirectClient() {
        expect(
            startupError(#"{"whoami_ports": [], "proxy_port_mappings": {"15222": "whoami"}, "proxy_direct_clients": ["127.0.0.0/8"]}"#),
            .conflict, key: "proxy_direct_clients")
        expect(
            startupError(
                #"{"whoami_ports": [], "proxy_port_mappings": {"15222": "whoami"}, "proxy_port_options": {"15222": {"trusted_proxies": ["::ffff:10.0.0.0/104"], "direct_clients": ["10.1.2.3"]}}}"#
            ), .conflict, key: "proxy_port_options.15222.direct_clients")
        // An empty trust list trusts everyone, so any direct client overlaps it.
        expect(
            startupError(
                #"{"whoami_ports": [], "proxy_port_mappings": {"15222": "whoami"}, "proxy_trusted_proxies": [], "proxy_direct_clients": ["192.168.7.0/24"]}"#
            ), .conflict, key: "proxy_direct_clients")
        // The same lists on different ports are fine.
        #expect(
            startupError(
                #"{"whoami_ports": [], "proxy_port_mappings": {"15222": "whoami", "15223": "whoami"}, "proxy_trusted_proxies": ["10.0.0.0/8"], "proxy_port_options": {"15223": {"trusted_proxies": ["192.168.0.1"], "direct_clients": ["10.0.0.0/8"]}}}"#
            ) == nil)
    }

    @Test(arguments: [
        (#"{"proxy_port_options": {"15222": {}}}"#, NetProxyConfigurationError.Kind.invalidValue, "proxy_port_options"),
        (
            #"{"whoami_ports": [], "proxy_port_mappings": {"15222": "whoami"}, "proxy_port_options": {"15222": {"trusted": []}}}"#, .unknownKey,
            "proxy_port_options.15222"
        ),
        (#"{"proxy_port_options": {"x": {}}}"#, .invalidValue, "proxy_port_options"),
        (#"{"proxy_versions": [3]}"#, .invalidValue, "proxy_versions[0]"),
        (#"{"proxy_versions": []}"#, .invalidValue, "proxy_versions"),
        (#"{"proxy_local": "maybe"}"#, .invalidValue, "proxy_local"),
        (#"{"proxy_unspecified": true}"#, .invalidValue, "proxy_unspecified"),
        (#"{"proxy_direct_clients": ["10.0.0.1/8"]}"#, .invalidValue, "proxy_direct_clients"),
        (
            #"{"whoami_ports": [], "proxy_port_mappings": {"15222": "whoami"}, "proxy_port_options": {"15222": {"header_timeout": 0}}}"#,
            .invalidValue, "proxy_port_options.15222.header_timeout"
        ),
        (
            #"{"whoami_ports": [], "proxy_port_mappings": {"15222": "whoami"}, "proxy_port_options": {"15222": {"header_timeout": 86401}}}"#,
            .invalidValue, "proxy_port_options.15222.header_timeout"
        ),
        (
            #"{"whoami_ports": [], "proxy_port_mappings": {"15222": "whoami"}, "proxy_port_options": {"15222": {"direct_clients": ["nope"]}}}"#,
            .invalidValue, "proxy_port_options.15222.direct_clients"
        ),
    ])
    func configurationErrors(json: String, kind: NetProxyConfigurationError.Kind, key: String) {
        expect(startupError(json), kind, key: key)
    }
}
