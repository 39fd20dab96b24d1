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

    func error(_ json: String, services: [NetProxyService] = xmpp) -> String? {
        do {
            _ = try host(json, services: services)
            return nil
        } catch {
            return error.description
        }
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
        (#"{"proxy_port_mappings": {"15222": "c2"}}"#, #"proxy_port_mappings: port 15222 maps to unknown service "c2" (known: c2s, s2s)"#),
        (#"{"c2_ports": [5222]}"#, #"c2_ports: unknown service "c2" (known: c2s, s2s)"#),
        (#"{"c2_interfaces": ["::1"]}"#, #"c2_interfaces: unknown service "c2" (known: c2s, s2s)"#),
        (#"{"interfaces": ["localhost"]}"#, #"interfaces[0]: "localhost" is not an IPv4 or IPv6 address"#),
        (#"{"c2s_ports": [1], "c2s_interfaces": ["::1", "1.2.3"]}"#, #"c2s_interfaces[1]: "1.2.3" is not an IPv4 or IPv6 address"#),
        (#"{"proxy_ports": [1], "proxy_interfaces": ["*"]}"#, #"proxy_interfaces[0]: "*" is not an IPv4 or IPv6 address"#),
        (
            #"{"proxy_trusted_proxies": ["10.0.0.1/8"]}"#,
            #"proxy_trusted_proxies: "10.0.0.1/8": address has bits set beyond the prefix; did you mean 10.0.0.0/8?"#
        ),
        (
            #"{"proxy_trusted_proxies": ["127.0.0.1", "lb.example"]}"#,
            #"proxy_trusted_proxies: "lb.example": "lb.example" is not an IPv4 or IPv6 address"#
        ),
        (
            #"{"c2s_ports": [5222], "proxy_port_mappings": {"5222": "s2s"}}"#,
            "port 5222 on 127.0.0.1 is used twice: c2s on 127.0.0.1:5222 and PROXY on 127.0.0.1:5222 -> s2s"
        ),
        (#"{"c2s_ports": [5222, 5222], "interfaces": ["::1"]}"#, "port 5222 on ::1 is used twice: c2s on [::1]:5222 and c2s on [::1]:5222"),
        (#"{"proxy_ports": [15222], "proxy_port_mappings": {"15269": "s2s"}}"#, "proxy_port_mappings: port 15269 is not in proxy_ports"),
        (#"{"proxy_port_mappings": {"15222": "c2s"}, "proxy_tls_ports": [15269]}"#, "proxy_tls_ports: port 15269 is not a PROXY port"),
        (#"{"proxy_port_mappings": {"15222": "c2s"}, "proxy_tls_ports": [15222]}"#, "proxy_tls_ports needs proxy_tls_certificate and proxy_tls_key"),
        (
            #"{"proxy_port_mappings": {"15222": "c2s"}, "proxy_tls_ports": [15222], "proxy_tls_certificate": "/nonexistent.pem", "proxy_tls_key": "/nonexistent.key"}"#,
            "proxy_tls_certificate: cannot load /nonexistent.pem: No such file or directory"
        ),
        (#"{"proxy_max_header_size": 15}"#, "proxy_max_header_size: 15 is not in 16...65551"),
        (#"{"proxy_header_timeout": 1e300}"#, "proxy_header_timeout: 1e+300 is not a number of seconds from above 0 to 86400"),
        (#"{"shutdown_grace_period": 86401}"#, "shutdown_grace_period: 86401.0 is not a number of seconds from above 0 to 86400"),
    ])
    func startUpChecksNameTheEntry(json: String, message: String) {
        #expect(error(json) == message)
    }

    /// With several faults, the one the checks meet first is reported: interfaces, regular
    /// ports, PROXY ports, metrics, ports used twice, trust, limits.
    @Test(arguments: [
        (#"{"interfaces": ["x"], "c2_ports": [1]}"#, #"interfaces[0]: "x" is not an IPv4 or IPv6 address"#),
        (#"{"c2_ports": [1], "proxy_port_mappings": {"1": "c3"}}"#, #"c2_ports: unknown service "c2" (known: c2s, s2s)"#),
        (
            #"{"proxy_port_mappings": {"1": "c3"}, "metrics_port": 1, "metrics_interfaces": ["x"]}"#,
            #"proxy_port_mappings: port 1 maps to unknown service "c3" (known: c2s, s2s)"#
        ),
        (#"{"metrics_port": 1, "metrics_interfaces": ["x"], "c2s_ports": [1]}"#, #"metrics_interfaces[0]: "x" is not an IPv4 or IPv6 address"#),
        (
            #"{"c2s_ports": [5222, 5222], "proxy_trusted_proxies": ["x"]}"#,
            "port 5222 on 127.0.0.1 is used twice: c2s on 127.0.0.1:5222 and c2s on 127.0.0.1:5222"
        ),
        (#"{"proxy_trusted_proxies": ["x"], "proxy_max_header_size": 15}"#, #"proxy_trusted_proxies: "x": "x" is not an IPv4 or IPv6 address"#),
    ])
    func firstFaultIsReported(json: String, message: String) {
        #expect(error(json) == message)
    }

    /// A configuration built in code gets the same checks as a file.
    @Test func programmaticPortsAreChecked() {
        var configuration = NetProxyConfiguration()
        configuration.servicePorts = ["c2s": [70000]]
        configuration.interfaces = ["::1"]
        #expect(throws: NetProxyConfigurationError("c2s on ::1 port 70000: 70000 is not a port (0-65535)")) {
            try NetProxyHost(configuration: configuration, services: Self.xmpp)
        }
    }

    @Test func duplicateServiceNames() {
        #expect(error("{}", services: Self.xmpp + [NetProxyService(name: "c2s") { _, _ in }]) == #"service "c2s" is registered twice"#)
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

    @Test func portInUseIsReportedAtStart() async throws {
        let first = try host(#"{"c2s_ports": [0], "interfaces": ["127.0.0.1"]}"#)
        let port = try await first.start()[0].address.port!
        let second = try host(#"{"c2s_ports": [\#(port)], "interfaces": ["127.0.0.1"]}"#)
        let error = await #expect(throws: NetProxyHostError.self) { try await second.start() }
        #expect(error?.kind == .cannotListen)
        await first.shutdown(gracePeriod: .zero)
    }
}
