import Foundation
import NetProxy
import Testing

@Suite struct ConfigurationTests {
    func parse(_ json: String) throws(NetProxyConfigurationError) -> NetProxyConfiguration {
        try NetProxyConfiguration(json: Data(json.utf8))
    }

    @Test func readsEveryKey() throws {
        let configuration = try parse(
            """
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
        #expect(configuration.headerTimeout == .milliseconds(4500))
        #expect(configuration.maximumHeaderLength == 1024)
        #expect(configuration.proxyTLSPorts == [15269])
        #expect(configuration.tlsCertificatePath == "/etc/cert.pem")
        #expect(configuration.tlsKeyPath == "/etc/key.pem")
        #expect(configuration.metricsPort == 9100)
        #expect(configuration.metricsInterfaces == ["127.0.0.1"])
        #expect(configuration.shutdownGracePeriod == .seconds(2))
    }

    /// Seconds in a file become whole nanoseconds, exactly: 0.3 is not 299,999,999 ns.
    @Test func secondsBecomeExactDurations() throws {
        let configuration = try parse(#"{"proxy_header_timeout": 0.3, "idle_timeout": 86400, "tls_handshake_timeout": 1e-9}"#)
        #expect(configuration.headerTimeout == .milliseconds(300))
        #expect(configuration.idleTimeout == .seconds(86400))
        #expect(configuration.tlsHandshakeTimeout == .nanoseconds(1))
        #expect(throws: NetProxyConfigurationError.self) { try parse(#"{"idle_timeout": 1e-10}"#) }
    }

    /// Keys that start with `_` are comments, at the top and in each settings object.
    @Test func underscoreKeysAreComments() throws {
        let commented = try parse(
            #"""
            {"_comment": "the XMPP edge", "proxy_ports": [15222], "proxy_port_mappings": {"15222": "fw"},
             "forward_services": {"fw": {"target": "127.0.0.1:5222", "_why": ["Prosody", 1]}},
             "proxy_port_options": {"15222": {"_note": {"any": "thing"}, "header_timeout": 5}}}
            """#)
        let plain = try parse(
            #"""
            {"proxy_ports": [15222], "proxy_port_mappings": {"15222": "fw"},
             "forward_services": {"fw": {"target": "127.0.0.1:5222"}},
             "proxy_port_options": {"15222": {"header_timeout": 5}}}
            """#)
        #expect(commented == plain)
    }

    /// `//` and `/* */` comments stand wherever whitespace may, and change nothing; inside a
    /// string they are text.
    @Test func jsoncCommentsAreIgnored() throws {
        let commented = try parse(
            "// the XMPP edge\r\n/* HAProxy in front\n   sends v2 */ {\"proxy_ports\" /* one */ : [15222 // c2s\n],\r\n"
                + " \"proxy_port_mappings\": {\"15222\": \"fw\"}, // forwarded\n"
                + " \"forward_services\": {\"fw\": {\"target\": \"127.0.0.1:5222\"}},\n"
                + " \"proxy_unix_sockets\": {\"/run/a//b/* c */\": \"fw\"}}/**/// end")
        let plain = try parse(
            #"""
            {"proxy_ports": [15222], "proxy_port_mappings": {"15222": "fw"},
             "forward_services": {"fw": {"target": "127.0.0.1:5222"}},
             "proxy_unix_sockets": {"/run/a//b/* c */": "fw"}}
            """#)
        #expect(commented == plain)
        #expect(Array(commented.proxyUnixSockets.keys) == ["/run/a//b/* c */"])
    }

    /// A misspelt key is refused with the nearest known one; a key near none is refused alone.
    @Test func unknownKeysSuggestTheNearest() {
        #expect(throws: NetProxyConfigurationError(.unknownKey, key: "proxy_port", #"unknown key "proxy_port"; did you mean "proxy_ports"?"#)) {
            try parse(#"{"proxy_port": [15222]}"#)
        }
        #expect(
            throws: NetProxyConfigurationError(
                .unknownKey, key: "proxy_trusted_proxie", #"unknown key "proxy_trusted_proxie"; did you mean "proxy_trusted_proxies"?"#)
        ) {
            try parse(#"{"proxy_trusted_proxie": []}"#)
        }
        #expect(throws: NetProxyConfigurationError(.unknownKey, key: "banana", #"unknown key "banana""#)) {
            try parse(#"{"banana": 1}"#)
        }
    }

    /// The settings objects suggest too: each entry kind with a misspelt key of its own.
    @Test(arguments: [
        (
            #"{"forward_services": {"f": {"target": "127.0.0.1:1", "conect_timeout": 1}}}"#,
            #"forward_services.f: unknown key "conect_timeout"; did you mean "connect_timeout"?"#
        ),
        (
            #"{"multiplex_services": {"m": {"default": "echo", "route": {}}}}"#,
            #"multiplex_services.m: unknown key "route"; did you mean "routes"?"#
        ),
        (
            #"{"proxy_port_options": {"1": {"trusted_proxie": []}}}"#,
            #"proxy_port_options.1: unknown key "trusted_proxie"; did you mean "trusted_proxies"?"#
        ),
        (
            #"{"proxy_unix_sockets": {"/run/s": {"service": "echo", "mdoe": "0660"}}}"#,
            #"proxy_unix_sockets./run/s: unknown key "mdoe"; did you mean "mode"?"#
        ),
        (
            #"{"proxy_tls_certificates": {"a.example": {"certificate": "c", "keys": "k"}}}"#,
            #"proxy_tls_certificates.a.example: unknown key "keys"; did you mean "key"?"#
        ),
        (#"{"forward_services": {"f": {"target": "127.0.0.1:1", "colour": 1}}}"#, #"forward_services.f: unknown key "colour""#),
    ])
    func nestedUnknownKeysSuggestTheNearest(json: String, message: String) {
        #expect(throws: NetProxyConfigurationError(.unknownKey, message)) { try parse(json) }
    }

    /// Every key a suggestion may name is one the reader knows: given a value of the wrong type,
    /// each is refused for its value, never as unknown.
    @Test func everySuggestedKeyIsKnown() {
        let contexts: [(keys: [String], json: (String) -> String)] = [
            (ForwardServiceConfiguration.keys, { #"{"forward_services": {"f": {"target": "127.0.0.1:1", "\#($0)": {"x": 1}}}}"# }),
            (MultiplexServiceConfiguration.keys, { #"{"multiplex_services": {"m": {"default": "echo", "\#($0)": {"x": 1}}}}"# }),
            (ProxyPortOptions.keys, { #"{"proxy_port_options": {"1": {"\#($0)": {"x": 1}}}}"# }),
            (ProxyUnixSocket.keys, { #"{"proxy_unix_sockets": {"/run/s": {"service": "echo", "\#($0)": {"x": 1}}}}"# }),
        ]
        for (keys, json) in contexts {
            for key in keys where !["target", "default", "service"].contains(key) {
                let error = #expect(throws: NetProxyConfigurationError.self, "\(key)") { try parse(json(key)) }
                #expect(error?.kind == .invalidValue, "\(key): \(String(describing: error))")
            }
        }
    }

    @Test func defaults() throws {
        let configuration = try parse("{}")
        #expect(configuration == NetProxyConfiguration())
        #expect(configuration.interfaces == ["127.0.0.1", "::1"])
        #expect(configuration.trustedProxies == ["127.0.0.1", "::1"])
        #expect(configuration.proxyPorts == nil)
        #expect(configuration.headerTimeout == .seconds(10))
        #expect(configuration.maximumHeaderLength == 4096)
    }

    @Test(arguments: [
        ("[]", NetProxyConfigurationError.Kind.syntax, nil as String?),
        (#"{"proxy_trusted_proxys": []}"#, .unknownKey, "proxy_trusted_proxys"),
        (#"{"interfaces": "127.0.0.1"}"#, .invalidValue, "interfaces"),
        (#"{"interfaces": [1]}"#, .invalidValue, "interfaces[0]"),
        (#"{"proxy_ports": [15222, 70000]}"#, .invalidValue, "proxy_ports[1]"),
        (#"{"proxy_ports": [true]}"#, .invalidValue, "proxy_ports[0]"),
        (#"{"proxy_ports": [1.5]}"#, .invalidValue, "proxy_ports[0]"),
        (#"{"echo_ports": [-1]}"#, .invalidValue, "echo_ports[0]"),
        (#"{"proxy_port_mappings": {"x15222": "c2s"}}"#, .invalidValue, "proxy_port_mappings"),
        (#"{"proxy_port_mappings": {"015222": "c2s"}}"#, .invalidValue, "proxy_port_mappings"),
        (#"{"proxy_port_mappings": {"15222": 5}}"#, .invalidValue, "proxy_port_mappings.15222"),
        (#"{"proxy_port_mappings": ["c2s"]}"#, .invalidValue, "proxy_port_mappings"),
        (#"{"proxy_header_timeout": 0}"#, .invalidValue, "proxy_header_timeout"),
        (#"{"proxy_header_timeout": "10"}"#, .invalidValue, "proxy_header_timeout"),
        (#"{"metrics_port": null}"#, .invalidValue, "metrics_port"),
    ])
    func rejectsBadSettings(json: String, kind: NetProxyConfigurationError.Kind, key: String?) {
        expect(startupError(json), kind, key: key)
    }

    /// A file that decides who may claim any client address must mean exactly one thing: what
    /// lenient readers resolve by guessing is an error naming the place. The line and column are
    /// what the operator goes by, so the words are checked here.
    @Test(arguments: [
        (#"{"echo_ports": [0],}"#, #"line 1, column 20: trailing comma before "}""#),
        (#"{"echo_ports": [0,]}"#, #"line 1, column 19: trailing comma before "]""#),
        (
            "{\"echo_ports\": [0],\n \"proxy_trusted_proxies\": [\"0.0.0.0/0\"],\n \"proxy_trusted_proxies\": [\"127.0.0.1\"]}",
            #"line 3: "proxy_trusted_proxies" is given twice (first on line 2)"#
        ),
        (
            "{\"proxy_port_mappings\": {\n  \"15222\": \"c2s\",\n  \"15222\": \"s2s\"}}",
            #"line 3: "proxy_port_mappings.15222" is given twice (first on line 2)"#
        ),
        (#"{"a": {"b": {"c": 1, "c": 2}}}"#, #"line 1: "a.b.c" is given twice (first on line 1)"#),
        ("", "line 1, column 1: expected a value, found the end of the file"),
        ("{} {}", #"line 1, column 4: unexpected "{" after the end of the JSON value"#),
        ("{\n  /* trust\n}", #"line 2, column 3: comment is not closed ("/*" without "*/")"#),
        (#"{"proxy_ports": [1 / 2]}"#, #"line 1, column 20: expected "//" or "/*" to start a comment, found "/" alone"#),
        (#"{"proxy_ports": [1, /* two */ ]}"#, #"line 1, column 31: trailing comma before "]""#),
        (#"{"proxy_ports": [1] */}"#, #"line 1, column 21: expected "," or "}" in the top-level object, found "*""#),
        (#"{"echo_ports": [0] "whoami_ports": [0]}"#, #"line 1, column 20: expected "," or "}" in the top-level object, found """"#),
        (#"{"interfaces": ["127.0.0.1"]"#, #"line 1, column 29: expected "," or "}" in the top-level object, found the end of the file"#),
        (#"{"interfaces": ["127.0.0.1}"#, #"line 1, column 17: string is not closed"#),
        (#"{"interfaces": ["a\qb"]}"#, #"line 1, column 19: unknown escape "\q""#),
        (#"{"interfaces": ["\ud800"]}"#, #"line 1, column 24: a high surrogate escape must be followed by a low surrogate escape"#),
        (#"{"interfaces": ["\udc00"]}"#, #"line 1, column 24: escape of a lone surrogate"#),
        ("{\"interfaces\": [\"a\tb\"]}", "line 1, column 19: control character 0x9 in a string (write it as an escape)"),
        (#"{"proxy_ports": [01]}"#, #"line 1, column 19: expected "," or "]" in "proxy_ports", found "1""#),
        (#"{"proxy_ports": [-]}"#, "line 1, column 18: expected a digit in a number"),
        (#"{"proxy_ports": [1.]}"#, "line 1, column 20: expected a digit after the decimal point"),
        (#"{"proxy_ports": [99999999999999999999]}"#, "line 1, column 18: 99999999999999999999 is out of range"),
        (
            "{\"proxy_ports\": [\(String(repeating: "9", count: 100_000))]}",
            "line 1, column 18: 99999999999999999999... (100000 characters) is out of range"
        ),
        (#"{"proxy_tls_key": "/etc/key.pem\u0000.bak"}"#, #"line 1, column 19: string contains a NUL character (\u0000)"#),
        (#"{"proxy_header_timeout": 1e400}"#, "line 1, column 26: 1e400 is out of range"),
        (#"{"proxy_header_timeout": -1e400}"#, "line 1, column 26: -1e400 is out of range"),
        (#"{"proxy_ports": [TRUE]}"#, #"line 1, column 18: expected a value, found "T""#),
        (#"{'proxy_ports': [1]}"#, #"line 1, column 2: expected a key in quotes, found "'""#),
        (String(repeating: "[", count: 40), "line 1, column 33: nested deeper than 32 levels"),
    ])
    func strictJSON(json: String, message: String) {
        let error = startupError(json)
        #expect(error?.kind == .syntax)
        #expect(error?.description == message)
    }

    @Test func jsonDetails() throws {
        // Escapes, a byte order mark, and numbers in every form JSON allows.
        let bom = "\u{FEFF}"
        let configuration = try parse(
            #"\#(bom){"proxy_tls_key": "\u00e9\ud83d\ude00\/\n", "proxy_header_timeout": 2.5e0, "shutdown_grace_period": 1E+1}"#)
        #expect(configuration.tlsKeyPath == "é😀/\n")
        #expect(configuration.headerTimeout == .milliseconds(2500))
        #expect(configuration.shutdownGracePeriod == .seconds(10))
        var invalid = Data(#"{"proxy_tls_key": "x"#.utf8)
        invalid.append(contentsOf: [0xC3, 0x28, 0x22, 0x7D])
        #expect(throws: NetProxyConfigurationError(.syntax, key: nil, "line 1, column 19: string is not valid UTF-8")) {
            try NetProxyConfiguration(json: invalid)
        }
    }
}
