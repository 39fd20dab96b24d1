import Foundation
import NetProxy
import Testing

/// Configuration errors carry a kind and the key at fault, for code that reacts to them without
/// reading their English.
@Suite struct ConfigurationErrorTests {
    @Test(arguments: [
        (#"{"echo_ports": [7000],}"#, NetProxyConfigurationError.Kind.syntax, nil as String?),
        (#"{"echo_ports": [1], "echo_ports": [2]}"#, .syntax, nil),
        (#"{"colour": 1}"#, .unknownKey, "colour"),
        (#"{"forward_services": {"fw": {"target": "a:1", "colour": 1}}}"#, .unknownKey, "forward_services.fw"),
        (#"{"echo_ports": ["x"]}"#, .invalidValue, "echo_ports[0]"),
        (#"{"forward_services": {"fw": {"target": "127.0.0.1"}}}"#, .invalidValue, "forward_services.fw.target"),
        (#"{"proxy_port_mappings": {"0": "nope"}}"#, .unknownService, "proxy_port_mappings"),
        (#"{"interfaces": ["127.0.0.1"], "echo_ports": [21400], "whoami_ports": [21400]}"#, .conflict, nil),
        (
            #"{"interfaces": ["127.0.0.1"], "echo_ports": [21401], "fw_ports": [21402], "forward_services": {"fw": {"target": "127.0.0.1:21401"}}}"#,
            .conflict, "forward_services.fw.target"
        ),
        (
            #"{"proxy_tls_ports": [0], "proxy_port_mappings": {"0": "echo"}, "proxy_tls_certificate": "/nonexistent.pem", "proxy_tls_key": "/nonexistent.key"}"#,
            .file, "proxy_tls_certificate"
        ),
    ])
    func eachErrorHasAKindAndItsKey(json: String, kind: NetProxyConfigurationError.Kind, key: String?) throws {
        let error = try #require(startupError(json))
        #expect(error.kind == kind, "\(error)")
        #expect(error.key == key, "\(error)")
        if let key { #expect(error.description.contains(key)) }
    }

    /// The words are for the operator: some say more than which entry is at fault (the names
    /// that would do, the value that was meant, both listeners that want a port, the rule that is
    /// broken), and those words are the product, so they are checked here, once, with the kind
    /// and key that code reads. Other tests check kinds and keys only.
    @Test(arguments: [
        (
            #"{"proxy_port_mappings": {"15222": "whoamii"}}"#, NetProxyConfigurationError.Kind.unknownService, "proxy_port_mappings" as String?,
            #"proxy_port_mappings: port 15222 maps to unknown service "whoamii" (known: echo, http, whoami)"#
        ),
        (
            #"{"proxy_trusted_proxies": ["10.0.0.1/8"]}"#, .invalidValue, "proxy_trusted_proxies",
            #"proxy_trusted_proxies: "10.0.0.1/8": address has bits set beyond the prefix; did you mean 10.0.0.0/8?"#
        ),
        (
            #"{"interfaces": ["127.0.0.1"], "echo_ports": [5222], "proxy_port_mappings": {"5222": "whoami"}}"#, .conflict, nil,
            "port 5222 on 127.0.0.1 is used twice: echo on 127.0.0.1:5222 and PROXY on 127.0.0.1:5222 -> whoami"
        ),
        (
            #"{"whoami_ports": [], "proxy_port_mappings": {"15222": "whoami"}, "proxy_direct_clients": ["127.0.0.0/8"]}"#, .conflict,
            "proxy_direct_clients",
            "proxy_direct_clients: 127.0.0.0/8 overlaps proxy_trusted_proxies 127.0.0.1 on PROXY port 15222: a source is either a trusted proxy or a direct client"
        ),
    ])
    func wordsThatHelpTheOperator(json: String, kind: NetProxyConfigurationError.Kind, key: String?, message: String) throws {
        let error = try #require(startupError(json))
        #expect(error.kind == kind && error.key == key, "\(error)")
        #expect(error.description == message)
    }
}
