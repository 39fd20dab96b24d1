import Foundation
import NetProxy
import Testing

/// Configuration errors carry a kind and the key at fault, for code that reacts to them without
/// reading their English.
@Suite struct ConfigurationErrorTests {
    static func error(_ json: String) -> NetProxyConfigurationError? {
        do {
            _ = try NetProxyHost(configuration: try NetProxyConfiguration(json: Data(json.utf8)))
            return nil
        } catch {
            return error
        }
    }

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
        let error = try #require(Self.error(json))
        #expect(error.kind == kind, "\(error)")
        #expect(error.key == key, "\(error)")
        if let key { #expect(error.description.contains(key)) }
    }
}
