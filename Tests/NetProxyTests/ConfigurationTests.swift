import Foundation
import NetProxy
import Testing

@Suite struct ConfigurationTests {
    func parse(_ json: String) throws(NetProxyConfigurationError) -> NetProxyConfiguration {
        try NetProxyConfiguration(json: Data(json.utf8))
    }

    func error(_ json: String) -> String? {
        do {
            _ = try parse(json)
            return nil
        } catch {
            return error.description
        }
    }

    @Test func readsEveryKey() throws {
        let configuration = try parse("""
            {
              "interfaces": ["0.0.0.0"],
              "c2s_ports": [5222], "c2s_interfaces": ["127.0.0.1"], "s2s_ports": [],
              "proxy_ports": [15222, 15269, 15999], "proxy_interfaces": ["10.0.0.5"],
              "proxy_port_mappings": {"15222": "c2s", "15269": "s2s"},
              "proxy_trusted_proxies": ["10.0.0.0/8", "::1"],
              "proxy_header_timeout": 4.5, "proxy_max_header_size": 1024,
              "proxy_tls_ports": [15269], "proxy_tls_certificate": "/etc/cert.pem", "proxy_tls_key": "/etc/key.pem",
              "metrics_port": 9100, "metrics_interfaces": ["127.0.0.1"], "shutdown_grace_period": 2
            }
            """)
        #expect(configuration.interfaces == ["0.0.0.0"])
        #expect(configuration.servicePorts == ["c2s": [5222], "s2s": []])
        #expect(configuration.serviceInterfaces == ["c2s": ["127.0.0.1"]])
        #expect(configuration.proxyPorts == [15222, 15269, 15999])
        #expect(configuration.proxyInterfaces == ["10.0.0.5"])
        #expect(configuration.proxyPortMappings == [15222: "c2s", 15269: "s2s"])
        #expect(configuration.trustedProxies == ["10.0.0.0/8", "::1"])
        #expect(configuration.headerTimeout == 4.5)
        #expect(configuration.maximumHeaderSize == 1024)
        #expect(configuration.proxyTLSPorts == [15269])
        #expect(configuration.tlsCertificatePath == "/etc/cert.pem")
        #expect(configuration.tlsKeyPath == "/etc/key.pem")
        #expect(configuration.metricsPort == 9100)
        #expect(configuration.metricsInterfaces == ["127.0.0.1"])
        #expect(configuration.shutdownGracePeriod == 2)
    }

    @Test func defaults() throws {
        let configuration = try parse("{}")
        #expect(configuration == NetProxyConfiguration())
        #expect(configuration.interfaces == ["127.0.0.1", "::1"])
        #expect(configuration.trustedProxies == ["127.0.0.1", "::1"])
        #expect(configuration.proxyPorts == nil)
        #expect(configuration.headerTimeout == 10)
        #expect(configuration.maximumHeaderSize == 4096)
    }

    @Test(arguments: [
        ("[]", "the configuration must be a JSON object"),
        (#"{"a": [1,}"#, "not valid JSON: Invalid value around character 9."),
        (#"{"proxy_trusted_proxys": []}"#, #"unknown key "proxy_trusted_proxys""#),
        (#"{"interfaces": "127.0.0.1"}"#, "interfaces: expected a list of strings"),
        (#"{"interfaces": [1]}"#, "interfaces[0]: expected a string"),
        (#"{"proxy_ports": [15222, 70000]}"#, "proxy_ports[1]: 70000 is not a port (0-65535)"),
        (#"{"proxy_ports": [true]}"#, "proxy_ports[0]: expected a whole number"),
        (#"{"proxy_ports": [1.5]}"#, "proxy_ports[0]: expected a whole number"),
        (#"{"echo_ports": [-1]}"#, "echo_ports[0]: -1 is not a port (0-65535)"),
        (#"{"proxy_port_mappings": {"x15222": "c2s"}}"#, #"proxy_port_mappings: "x15222" is not a port (0-65535)"#),
        (#"{"proxy_port_mappings": {"015222": "c2s"}}"#, #"proxy_port_mappings: "015222" is not a port (0-65535)"#),
        (#"{"proxy_port_mappings": {"15222": 5}}"#, "proxy_port_mappings.15222: expected a string"),
        (#"{"proxy_port_mappings": ["c2s"]}"#, "proxy_port_mappings: expected an object of port to service name"),
        (#"{"proxy_header_timeout": 0}"#, "proxy_header_timeout: expected a number of seconds above 0"),
        (#"{"proxy_header_timeout": "10"}"#, "proxy_header_timeout: expected a number of seconds"),
        (#"{"metrics_port": null}"#, "metrics_port: expected a whole number"),
    ])
    func rejectsBadSettings(json: String, message: String) {
        #expect(error(json) == message)
    }
}
