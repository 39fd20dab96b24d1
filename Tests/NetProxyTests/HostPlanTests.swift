import Foundation
import NIOCore
import NetProxy
import Testing

@Suite struct HostPlanTests {
    static let xmpp: [NetProxyService] = [
        NetProxyService(name: "c2s") { _, _ in },
        NetProxyService(name: "s2s") { _, _ in },
    ]

    func host(_ json: String, services: [NetProxyService] = xmpp) throws(NetProxyConfigurationError) -> NetProxyHost {
        try NetProxyHost(configuration: try NetProxyConfiguration(json: Data(json.utf8)), services: services)
    }

    /// The module's example: c2s and s2s behind PROXY ports 15222 and 15269.
    @Test func moduleExample() throws {
        let host = try host(
            """
            {"c2s_ports": [], "s2s_ports": [], "proxy_port_mappings": {"15222": "c2s", "15269": "s2s"},
             "proxy_trusted_proxies": ["127.0.0.1", "::1", "10.0.0.0/8"]}
            """)
        #expect(host.warnings == [])
        #expect(
            host.plan.map(\.description) == [
                "PROXY on 127.0.0.1:15222 -> c2s", "PROXY on [::1]:15222 -> c2s",
                "PROXY on 127.0.0.1:15269 -> s2s", "PROXY on [::1]:15269 -> s2s",
            ])
    }

    @Test(arguments: [
        (#"{"proxy_port_mappings": {"15222": "c2"}}"#, NetProxyConfigurationError.Kind.unknownService, "proxy_port_mappings" as String?),
        (#"{"c2_ports": [5222]}"#, .unknownService, "c2_ports"),
        (#"{"c2_interfaces": ["::1"]}"#, .unknownService, "c2_interfaces"),
        (#"{"interfaces": ["localhost"]}"#, .invalidValue, "interfaces[0]"),
        (#"{"c2s_ports": [1], "c2s_interfaces": ["::1", "1.2.3"]}"#, .invalidValue, "c2s_interfaces[1]"),
        (#"{"proxy_ports": [1], "proxy_interfaces": ["*"]}"#, .invalidValue, "proxy_interfaces[0]"),
        (#"{"proxy_trusted_proxies": ["10.0.0.1/8"]}"#, .invalidValue, "proxy_trusted_proxies"),
        (#"{"proxy_trusted_proxies": ["127.0.0.1", "lb.example"]}"#, .invalidValue, "proxy_trusted_proxies"),
        // Two listeners at once: no one entry is at fault.
        (#"{"c2s_ports": [5222], "proxy_port_mappings": {"5222": "s2s"}}"#, .conflict, nil),
        (#"{"c2s_ports": [5222, 5222], "interfaces": ["::1"]}"#, .conflict, nil),
        (#"{"proxy_ports": [15222], "proxy_port_mappings": {"15269": "s2s"}}"#, .invalidValue, "proxy_port_mappings"),
        (#"{"proxy_port_mappings": {"15222": "c2s"}, "proxy_tls_ports": [15269]}"#, .invalidValue, "proxy_tls_ports"),
        // The message names proxy_tls_ports, but not as its first word, where the key is taken from.
        (#"{"proxy_port_mappings": {"15222": "c2s"}, "proxy_tls_ports": [15222]}"#, .invalidValue, nil),
        (
            #"{"proxy_port_mappings": {"15222": "c2s"}, "proxy_tls_ports": [15222], "proxy_tls_certificate": "/nonexistent.pem", "proxy_tls_key": "/nonexistent.key"}"#,
            .file, "proxy_tls_certificate"
        ),
        (#"{"proxy_max_header_size": 15}"#, .invalidValue, "proxy_max_header_size"),
        (#"{"proxy_header_timeout": 1e300}"#, .invalidValue, "proxy_header_timeout"),
        (#"{"shutdown_grace_period": 86401}"#, .invalidValue, "shutdown_grace_period"),
    ])
    func startUpChecksNameTheEntry(json: String, kind: NetProxyConfigurationError.Kind, key: String?) {
        expect(startupError(json, services: Self.xmpp), kind, key: key)
    }

    /// With several faults, the one the checks meet first is reported: interfaces, regular
    /// ports, PROXY ports, metrics, ports used twice, trust, limits.
    @Test(arguments: [
        (#"{"interfaces": ["x"], "c2_ports": [1]}"#, NetProxyConfigurationError.Kind.invalidValue, "interfaces[0]" as String?),
        (#"{"c2_ports": [1], "proxy_port_mappings": {"1": "c3"}}"#, .unknownService, "c2_ports"),
        (#"{"proxy_port_mappings": {"1": "c3"}, "metrics_port": 1, "metrics_interfaces": ["x"]}"#, .unknownService, "proxy_port_mappings"),
        (#"{"metrics_port": 1, "metrics_interfaces": ["x"], "c2s_ports": [1]}"#, .invalidValue, "metrics_interfaces[0]"),
        (#"{"c2s_ports": [5222, 5222], "proxy_trusted_proxies": ["x"]}"#, .conflict, nil),
        (#"{"proxy_trusted_proxies": ["x"], "proxy_max_header_size": 15}"#, .invalidValue, "proxy_trusted_proxies"),
    ])
    func firstFaultIsReported(json: String, kind: NetProxyConfigurationError.Kind, key: String?) {
        expect(startupError(json, services: Self.xmpp), kind, key: key)
    }

    /// A configuration built in code gets the same checks as a file.
    @Test func programmaticPortsAreChecked() {
        var configuration = NetProxyConfiguration()
        configuration.servicePorts = ["c2s": [70000]]
        configuration.interfaces = ["::1"]
        let error = #expect(throws: NetProxyConfigurationError.self) {
            try NetProxyHost(configuration: configuration, services: Self.xmpp)
        }
        // No key: the ports were not read from one.
        expect(error, .invalidValue, key: nil)
    }

    @Test func duplicateServiceNames() {
        expect(startupError("{}", services: Self.xmpp + [NetProxyService(name: "c2s") { _, _ in }]), .conflict, key: nil)
    }

    @Test func warnings() throws {
        let unmapped = try host(#"{"proxy_ports": [15222, 15999], "proxy_port_mappings": {"15222": "c2s"}}"#)
        #expect(unmapped.warnings == ["PROXY port 15999 has no entry in proxy_port_mappings: its connections will be closed after the header"])
        let trustAll = try host(#"{"proxy_trusted_proxies": [], "proxy_header_timeout": 1}"#)
        #expect(
            trustAll.warnings == [
                "proxy_trusted_proxies is empty: ANY client may send a PROXY header and claim any address",
                "proxy_header_timeout is 1 s; the PROXY specification asks for at least 3 s",
            ])
    }

    /// An entry that covers all of IPv4 or IPv6 trusts (or serves without a header) every
    /// client of that family, which is rarely meant: each one is named in a warning. (Before:
    /// accepted silently; only an empty list warned.)
    @Test func entriesThatCoverEveryoneWarn() throws {
        let host = try host(
            #"""
            {"proxy_trusted_proxies": ["10.0.0.1", "0.0.0.0/0"],
             "proxy_port_mappings": {"15222": "c2s", "15269": "s2s"},
             "proxy_port_options": {"15222": {"trusted_proxies": ["::ffff:0:0/96", "::/0"]},
                                    "15269": {"trusted_proxies": ["2001:db8::1"], "direct_clients": ["0.0.0.0/0"]}}}
            """#)
        #expect(
            host.warnings == [
                "proxy_trusted_proxies[1]: 0.0.0.0/0 covers every IPv4 address: any such client may send a PROXY header and claim any address",
                "proxy_port_options.15222.trusted_proxies[0]: ::ffff:0:0/96 covers every IPv4 address: any such client may send a PROXY header and claim any address",
                "proxy_port_options.15222.trusted_proxies[1]: ::/0 covers every IPv4 and IPv6 address: any such client may send a PROXY header and claim any address",
                "proxy_port_options.15269.direct_clients[0]: 0.0.0.0/0 covers every IPv4 address: every such client is served without a PROXY header",
            ])
    }

    /// What a listener is for, read without matching on its cases.
    @Test func listenerKindsAnswerWhatTheyAre() {
        let tls = ListenerPlan.Kind.proxy(service: "c2s", tls: true)
        #expect(tls.service == "c2s" && tls.isProxy && tls.isTLS && !tls.isMetrics)
        let unmapped = ListenerPlan.Kind.proxy(service: nil, tls: false)
        #expect(unmapped.service == nil && unmapped.isProxy && !unmapped.isTLS)
        let regular = ListenerPlan.Kind.service("echo")
        #expect(regular.service == "echo" && !regular.isProxy && !regular.isTLS && !regular.isMetrics)
        #expect(ListenerPlan.Kind.metrics.isMetrics && ListenerPlan.Kind.metrics.service == nil)
        #expect(regular != .proxy(service: "echo", tls: false))
    }

    @Test func portInUseIsReportedAtStart() async throws {
        let first = try host(#"{"c2s_ports": [0], "interfaces": ["127.0.0.1"]}"#)
        let port = try await first.start()[0].address.port!
        let second = try host(#"{"c2s_ports": [\#(port)], "interfaces": ["127.0.0.1"]}"#)
        let error = await #expect(throws: NetProxyHostError.self) { try await second.start() }
        #expect(error?.kind == .cannotListen)
        await first.shutdown(gracePeriod: .zero)
    }
}
