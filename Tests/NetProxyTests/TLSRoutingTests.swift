import Foundation
import NIOCore
import NIOEmbedded
import NetProxy
import Testing

@testable import NetProxy

/// `tls_routes`: rules matched against ClientHellos, the configuration's checks, and the
/// multiplexer waiting for the whole ClientHello (state machine, then an embedded channel).
@Suite struct TLSRoutingTests {
    typealias TLSRoute = MultiplexServiceConfiguration.TLSRoute

    /// The issue's example: XMPP by ALPN, a chat domain by name, the web's h2 by both.
    static let rules = [
        TLSRoute(applicationProtocol: "xmpp-client", service: "c2s-tls"),
        TLSRoute(serverName: "*.chat.example.org", service: "c2s-tls"),
        TLSRoute(serverName: "www.example.org", applicationProtocol: "h2", service: "web-h2"),
    ]

    static func hello(_ name: String?, _ alpn: [String] = []) -> ClientHello {
        ClientHello(serverName: name, applicationProtocols: alpn)
    }

    // MARK: Matching

    @Test(
        arguments: [
            (hello("chat.example.org", ["xmpp-client"]), 0),
            (hello(nil, ["h2", "xmpp-client"]), 0),
            (hello("a.chat.example.org"), 1),
            (hello("A.CHAT.Example.org."), 1),
            (hello("a.chat.example.org", ["h2"]), 1),
            (hello("www.example.org", ["h2", "http/1.1"]), 2),
            (hello("WWW.example.org.", ["http/1.1", "h2"]), 2),
        ] as [(ClientHello, Int)])
    func theFirstRuleThatMatchesWins(hello: ClientHello, rule: Int) {
        #expect(TLSRouter(Self.rules).match(hello)?.index == rule)
    }

    /// A wildcard stands for one label exactly; a name rule needs a name; a rule with both needs
    /// both; protocols compare byte for byte.
    @Test(arguments: [
        hello("chat.example.org"), hello("a.b.chat.example.org"), hello(".chat.example.org"), hello("achat.example.org"),
        hello(nil, ["h2"]), hello("www.example.org"), hello("www.example.org", ["http/1.1"]), hello("www.example.org", ["H2"]),
        hello("www.example.org.evil", ["h2"]), hello("xmpp-client"), hello(nil, ["xmpp-client2"]), hello(nil),
    ])
    func nothingElseMatches(hello: ClientHello) {
        #expect(TLSRouter(Self.rules).match(hello) == nil)
    }

    @Test func ruleKinds() {
        let router = TLSRouter(Self.rules)
        #expect(router.rules.map(\.by) == [.alpn, .sni, .sni])
        #expect(router.rules.map(\.name) == [nil, .wildcard(domain: "chat.example.org"), .exact("www.example.org")])
        // A pattern's case and trailing dot go.
        #expect(TLSRouter([TLSRoute(serverName: "Example.ORG.", service: "s")]).rules[0].name == .exact("example.org"))
        #expect(TLSRouter([TLSRoute(serverName: "Example.ORG.", service: "s")]).match(Self.hello("example.org"))?.index == 0)
    }

    // MARK: Configuration

    @Test func theJSONKeys() throws {
        let configuration = try NetProxyConfiguration(
            json: Data(
                #"""
                {"multiplex_services": {"edge": {"routes": {"tls": "echo"}, "default": "echo", "tls_routes": [
                  {"alpn": "xmpp-client", "service": "c2s_tls"},
                  {"sni": "*.chat.example.org", "service": "c2s_tls", "_note": "a comment"},
                  {"sni": "example.org", "alpn": "h2", "service": "web_tls"}]}}}
                """#.utf8))
        #expect(
            configuration.multiplexServices["edge"]?.tlsRoutes == [
                TLSRoute(applicationProtocol: "xmpp-client", service: "c2s_tls"), TLSRoute(serverName: "*.chat.example.org", service: "c2s_tls"),
                TLSRoute(serverName: "example.org", applicationProtocol: "h2", service: "web_tls"),
            ])
    }

    /// A configuration whose `mux` entry has these `tls_routes`, routing to the built-in services.
    static func entry(_ rules: String) -> String {
        #"{"proxy_port_mappings": {"0": "mux"}, "multiplex_services": {"mux": {"routes": {"tls": "echo"}, "default": "echo", "tls_routes": \#(rules)}}}"#
    }

    @Test(arguments: [
        (#"[{"alpn": "h2", "service": "nope"}]"#, NetProxyConfigurationError.Kind.unknownService, "multiplex_services.mux.tls_routes[0].service"),
        (#"[{"alpn": "h2", "service": "echo"}, {"service": "echo"}]"#, .invalidValue, "multiplex_services.mux.tls_routes[1]"),
        (#"[{"alpn": "h2"}]"#, .invalidValue, "multiplex_services.mux.tls_routes[0]"),
        (#"[{"alpn": "h2", "service": "echo", "port": 443}]"#, .unknownKey, "multiplex_services.mux.tls_routes[0]"),
        (#"{"alpn": "h2", "service": "echo"}"#, .invalidValue, "multiplex_services.mux.tls_routes"),
        (#"["h2"]"#, .invalidValue, "multiplex_services.mux.tls_routes[0]"),
        (#"[{"sni": 7, "service": "echo"}]"#, .invalidValue, "multiplex_services.mux.tls_routes[0].sni"),
        (#"[{"alpn": ["h2"], "service": "echo"}]"#, .invalidValue, "multiplex_services.mux.tls_routes[0].alpn"),
        (#"[{"alpn": "h2", "service": "mux"}]"#, .conflict, "multiplex_services.mux.tls_routes[0].service"),
    ])
    func badRulesNameTheEntry(rules: String, kind: NetProxyConfigurationError.Kind, key: String) {
        expect(startupError(Self.entry(rules)), kind, key: key)
    }

    /// Names that cannot be a server name or a one-label wildcard.
    @Test(arguments: [
        "", ".", "*", "*.", "**.example.org", "*example.org", "a.*.example.org", "example.*", "exa mple.org", "a..example.org", ".example.org",
        "example.org..", "-a.example.org", "a-.example.org", "ex_ample.org", "exämple.org", "192.0.2.1", "::1", "example.123",
        String(repeating: "a", count: 64) + ".example.org", Array(repeating: "abcdefghi", count: 26).joined(separator: "."),
    ])
    func badNames(name: String) {
        expect(startupError(Self.entry(#"[{"sni": "\#(name)", "service": "echo"}]"#)), .invalidValue, key: "multiplex_services.mux.tls_routes[0].sni")
    }

    @Test(arguments: ["", String(repeating: "a", count: 256), "h 2", "h2\\t", "é"])
    func badProtocols(name: String) {
        expect(
            startupError(Self.entry(#"[{"alpn": "h2", "service": "echo"}, {"alpn": "\#(name)", "service": "echo"}]"#)), .invalidValue,
            key: "multiplex_services.mux.tls_routes[1].alpn")
    }

    @Test(arguments: [
        "example.org", "example.org.", "*.example.org", "*.example.org.", "xn--bcher-kva.example", "a-b.c-d.example",
        Array(repeating: "abcdefghi", count: 25).joined(separator: "."),
    ])
    func goodNames(name: String) {
        #expect(startupError(Self.entry(#"[{"sni": "\#(name)", "service": "echo"}]"#)) == nil)
    }

    @Test func errorMessages() {
        #expect(
            startupError(Self.entry(#"[{"sni": "*", "service": "echo"}]"#))?.description
                == #"multiplex_services.mux.tls_routes[0].sni: "*": a wildcard needs a domain after "*.""#)
        #expect(
            startupError(Self.entry(#"[{"alpn": "h2", "service": "echo"}, {"service": "echo"}]"#))?.description
                == #"multiplex_services.mux.tls_routes[1]: a rule needs "sni", "alpn" or both"#)
        #expect(
            startupError(Self.entry(#"[{"alpn": "h2", "service": "echo", "snii": "a.example"}]"#))?.description
                == #"multiplex_services.mux.tls_routes[0]: unknown key "snii"; did you mean "sni"?"#)
        #expect(
            startupError(Self.entry(#"[{"alpn": "h2", "service": "nope"}]"#))?.description.hasPrefix(
                #"multiplex_services.mux.tls_routes[0].service: "nope" is an unknown service"#) == true)
    }

    // MARK: The state machine

    static let routes: [MultiplexServiceConfiguration.DetectedProtocol: String] = [.tls: "tls-svc", .http: "http-svc", .xmpp: "xmpp-svc"]

    static func machine(
        routes: [MultiplexServiceConfiguration.DetectedProtocol: String] = routes, rules: [TLSRoute] = rules,
        detecting: PendingCount = PendingCount(limit: 8)
    ) -> MultiplexerStateMachine {
        var machine = MultiplexerStateMachine(routes: routes, tlsRouter: TLSRouter(rules), defaultService: "other-svc", detecting: detecting)
        #expect(machine.channelActive() == .startDetecting)
        return machine
    }

    /// What the machine does with `bytes` in one read.
    static func decide(_ bytes: [UInt8], routes: [MultiplexServiceConfiguration.DetectedProtocol: String] = routes) -> MultiplexerStateMachine.Action
    {
        var machine = machine(routes: routes)
        return machine.channelRead(ByteBuffer(bytes: bytes))
    }

    static func handOff(
        _ service: String, _ by: MultiplexDecision.Reason, rule: Int? = nil, _ bytes: [UInt8], name: String?, alpn: [String]
    ) -> MultiplexerStateMachine.Action {
        let hello = ClientHello(serverName: name, applicationProtocols: alpn, length: bytes.count)
        return .handOff(
            MultiplexDecision(service: service, by: by, rule: rule, clientHello: hello), received: ByteBuffer(bytes: bytes), inputClosed: false)
    }

    @Test func realClientHellosAreRouted() {
        #expect(
            Self.decide(ClientHellos.openSSL)
                == Self.handOff("c2s-tls", .alpn, rule: 0, ClientHellos.openSSL, name: "chat.example.org", alpn: ["xmpp-client"]))
        #expect(
            Self.decide(ClientHellos.curlHTTP2)
                == Self.handOff("web-h2", .sni, rule: 2, ClientHellos.curlHTTP2, name: "www.example.org", alpn: ["h2", "http/1.1"]))
        // No rule: routes.tls, else the default.
        #expect(
            Self.decide(ClientHellos.curlHTTP1) == Self.handOff("tls-svc", .tls, ClientHellos.curlHTTP1, name: "www.example.org", alpn: ["http/1.1"]))
        #expect(
            Self.decide(ClientHellos.curlHTTP1, routes: [:])
                == Self.handOff("other-svc", .default, ClientHellos.curlHTTP1, name: "www.example.org", alpn: ["http/1.1"]))
    }

    /// The connection stays under detection, holding every byte, until the ClientHello's last
    /// byte; then its service gets all of them, and what came after in the same read.
    @Test func byteByByteTheLastByteDecides() {
        let detecting = PendingCount(limit: 1)
        var machine = Self.machine(detecting: detecting)
        let bytes = ClientHellos.curlHTTP2
        for byte in bytes.dropLast() {
            #expect(machine.channelRead(ByteBuffer(bytes: [byte])) == .none)
        }
        #expect(machine.state == .detecting)
        #expect(!detecting.enter())
        let after: [UInt8] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01]
        let action = machine.channelRead(ByteBuffer(bytes: [bytes.last!] + after))
        #expect(
            action
                == .handOff(
                    MultiplexDecision(
                        service: "web-h2", by: .sni, rule: 2,
                        clientHello: ClientHello(serverName: "www.example.org", applicationProtocols: ["h2", "http/1.1"], length: bytes.count)),
                    received: ByteBuffer(bytes: bytes + after), inputClosed: false))
        #expect(machine.state == .handedOff)
        #expect(machine.clientHello == nil)
        #expect(detecting.enter())
    }

    /// A ClientHello that cannot be read goes to the default service with every byte so far,
    /// and the error.
    @Test func aMalformedClientHelloGoesToTheDefault() {
        var bytes = ClientHellos.openSSL
        bytes[43] = 33
        #expect(
            Self.decide(bytes)
                == .handOff(
                    MultiplexDecision(
                        service: "other-svc", by: .default, clientHelloError: ClientHelloError(reason: .length(.sessionID, 33), offset: 43)),
                    received: ByteBuffer(bytes: bytes), inputClosed: false))
    }

    /// 64 KiB of extensions: the default service, as soon as the handshake header says so.
    @Test func anOversizedClientHelloGoesToTheDefaultAtOnce() {
        var builder = ClientHelloBuilder(serverName: "www.example.org", alpn: ["h2"])
        builder.extensions! += (0..<16).map { .init(type: 0x2000 + UInt16($0), data: Array(repeating: 0, count: 4_090)) }
        let bytes = builder.records()
        var machine = Self.machine()
        #expect(machine.channelRead(ByteBuffer(bytes: bytes.prefix(8))) == .none)
        #expect(
            machine.channelRead(ByteBuffer(bytes: bytes[8..<100]))
                == .handOff(
                    MultiplexDecision(
                        service: "other-svc", by: .default, clientHelloError: ClientHelloError(reason: .tooLong(limit: 16_389), offset: 6)),
                    received: ByteBuffer(bytes: bytes.prefix(100)), inputClosed: false))
    }

    /// An incomplete ClientHello at `detect_timeout`: the default service; at the end of input:
    /// the default, then the end.
    @Test func anIncompleteClientHelloAtTheTimeoutOrTheEnd() {
        let part = ByteBuffer(bytes: ClientHellos.openSSL.prefix(200))
        var machine = Self.machine()
        #expect(machine.channelRead(part) == .none)
        #expect(machine.detectTimeout() == .handOff(MultiplexDecision(service: "other-svc", by: .timeout), received: part, inputClosed: false))
        machine = Self.machine()
        #expect(machine.channelRead(part) == .none)
        #expect(machine.inputClosed() == .handOff(MultiplexDecision(service: "other-svc", by: .default), received: part, inputClosed: true))
    }

    /// Closed while the ClientHello comes: its place under detection is given back once.
    @Test func closedWhileTheClientHelloComes() {
        let detecting = PendingCount(limit: 1)
        var machine = Self.machine(detecting: detecting)
        #expect(machine.channelRead(ByteBuffer(bytes: ClientHellos.openSSL.prefix(100))) == .none)
        #expect(machine.channelInactive() == .stopDetecting)
        #expect(machine.clientHello == nil && machine.received == nil)
        #expect(detecting.enter())
    }

    /// Without `tls_routes` nothing changes: TLS is decided by its first 6 bytes.
    @Test func withoutRulesTLSIsDecidedAtOnce() {
        var machine = Self.machine(rules: [])
        let bytes = ClientHellos.openSSL
        for byte in bytes.prefix(5) {
            #expect(machine.channelRead(ByteBuffer(bytes: [byte])) == .none)
        }
        #expect(
            machine.channelRead(ByteBuffer(bytes: [bytes[5]]))
                == .handOff(MultiplexDecision(service: "tls-svc", by: .tls), received: ByteBuffer(bytes: bytes.prefix(6)), inputClosed: false))
        // Other protocols are decided as before with rules.
        #expect(
            Self.decide(Array("GET / HTTP/1.1\r\n".utf8))
                == .handOff(MultiplexDecision(service: "http-svc", by: .http), received: ByteBuffer(string: "GET / HTTP/1.1\r\n"), inputClosed: false)
        )
    }

    // MARK: On an embedded channel

    /// The ClientHello in three reads reaches its rule's service intact; the routed counter and
    /// the hand-over's log line say which rule.
    @Test func theServiceGetsTheClientHelloIntactAndItIsCounted() throws {
        let mux = MultiplexHarness(routes: [.tls: "tls-svc", .http: "http-svc"], tlsRoutes: Self.rules)
        let exposition = mux.fixture.metrics.exposition
        for (service, by) in [
            ("c2s-tls", "alpn"), ("c2s-tls", "sni"), ("web-h2", "sni"), ("tls-svc", "tls"), ("http-svc", "http"), ("other-svc", "default"),
            ("other-svc", "timeout"),
        ] {
            #expect(metricValue(exposition, #"netproxy_multiplex_routed_total{service="\#(service)",by="\#(by)"}"#) == 0, "\(service) \(by)")
        }

        let channel = try mux.connect()
        let bytes = ClientHellos.curlHTTP2
        try channel.writeInbound(ByteBuffer(bytes: bytes[..<3]))
        try channel.writeInbound(ByteBuffer(bytes: bytes[3..<300]))
        #expect(mux.events.value == [])
        #expect(mux.isDetecting(channel))
        try channel.writeInbound(ByteBuffer(bytes: bytes[300...]))
        #expect(mux.events.value == ["active web-h2", "read " + String(decoding: bytes, as: UTF8.self)])
        #expect(metricValue(mux.fixture.metrics.exposition, #"netproxy_multiplex_routed_total{service="web-h2",by="sni"}"#) == 1)
        #expect(
            mux.fixture.logged.contains {
                $0.hasPrefix(
                    "debug multiplexed to web-h2 on port 7000 by tls_routes[2] (sni www.example.org, alpn h2) (ClientHello: name www.example.org, ALPN h2,http/1.1): client 203.0.113.9:4321"
                )
            }, "\(mux.fixture.logged)")

        // A silent client is counted as a timeout; a protocol by its route.
        let silent = try mux.connect()
        mux.loop.advanceTime(by: .seconds(5))
        #expect(!mux.isDetecting(silent))
        let http = try mux.connect()
        try http.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n"))
        let counted = mux.fixture.metrics.exposition
        #expect(metricValue(counted, #"netproxy_multiplex_routed_total{service="other-svc",by="timeout"}"#) == 1)
        #expect(metricValue(counted, #"netproxy_multiplex_routed_total{service="http-svc",by="http"}"#) == 1)
    }

    /// A malformed ClientHello's error is in the hand-over's log line.
    @Test func aMalformedClientHelloIsLogged() throws {
        let mux = MultiplexHarness(tlsRoutes: Self.rules)
        let channel = try mux.connect()
        var bytes = ClientHellos.openSSL
        bytes[43] = 33
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        #expect(mux.events.value.first == "active other-svc")
        #expect(
            mux.fixture.logged.contains {
                $0.hasPrefix(
                    "debug multiplexed to other-svc on port 7000 by default (a ClientHello that cannot be read, at byte 43: the session id cannot be 33 bytes long): client"
                )
            }, "\(mux.fixture.logged)")
        #expect(metricValue(mux.fixture.metrics.exposition, #"netproxy_multiplex_routed_total{service="other-svc",by="default"}"#) == 1)
    }
}
