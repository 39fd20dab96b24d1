import Foundation
import TestSupport
import Testing

/// One PROXY port for XMPP over direct TLS and plain XMPP: `netproxy serve` routes a TLS client
/// that offers ALPN `xmpp-client` to Prosody 0.12's direct TLS port (`c2s_direct_tls_ports`),
/// and a plain stream to its c2s port, both through transparent forwards, in a network
/// namespace as in ``TransparentForwardTests``. Prosody terminates the TLS with its own
/// certificate, and its log names each client from the PROXY header.
@Suite(.timeLimit(.minutes(1)), .tags(.namespace)) struct MultiplexProsodyTests {
    /// A TLS client in Python: connects to the port, sends `header` and a CRLF first, then
    /// shakes hands for example.com offering `xmpp-client`, opens a stream and prints the
    /// protocol version and the start of Prosody's answer.
    static let client = """
        import socket, ssl, sys
        connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
        connection.sendall(sys.argv[2].encode() + b"\\r\\n")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["xmpp-client"])
        tls = context.wrap_socket(connection, server_hostname="example.com")
        tls.sendall(b"<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' "
                    b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
        tls.settimeout(5)
        answer = b""
        while b"<stream:stream" not in answer:
            data = tls.recv(4096)
            if not data:
                break
            answer += data
        print(tls.version(), answer[answer.find(b"<stream:stream"):][:14].decode())
        """

    @Test(
        .enabled(
            if: (TransparentForwardTests.canMakeNamespace && Peer.available("prosody") && Peer.available("python3") && Peer.available("openssl"))
                || Peer.inCI), .tags(.interop))
    func directTLSByALPNAndPlainXMPPOnOnePort() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.path
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("data"), withIntermediateDirectories: true)
        let made = try await ChildProcess.run(
            try Peer.require("openssl"),
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=example.com", "-addext",
                "subjectAltName=DNS:example.com", "-days", "2", "-keyout", "\(path)/key.pem", "-out", "\(path)/cert.pem",
            ], standardError: .mergedIntoOutput, killAfter: 30)
        try #require(made.status == 0, "\(made.standardOutput)")
        try Self.client.write(to: directory.appendingPathComponent("client.py"), atomically: true, encoding: .utf8)
        let log = "\(path)/prosody.log"
        try """
        daemonize = false
        run_as_root = true
        pidfile = "\(path)/prosody.pid"
        data_path = "\(path)/data"
        log = { { levels = { min = "debug" }, to = "file", filename = "\(log)" } }
        interfaces = { "127.0.0.1" }
        c2s_ports = { 15222 }
        c2s_direct_tls_ports = { 15223 }
        s2s_ports = { }
        s2s_direct_tls_ports = { }
        http_ports = { }
        https_ports = { }
        modules_enabled = { "saslauth", "tls" }
        modules_disabled = { "s2s" }
        ssl = { certificate = "\(path)/cert.pem", key = "\(path)/key.pem" }
        VirtualHost "example.com"

        """.write(to: directory.appendingPathComponent("prosody.cfg.lua"), atomically: true, encoding: .utf8)
        let config = """
            {"interfaces": ["127.0.0.1"], "metrics_port": 9090, "proxy_port_mappings": {"15443": "edge"},
             "forward_services": {"c2s": {"target": "127.0.0.1:15222", "transparent": true},
                                  "c2s_tls": {"target": "127.0.0.1:15223", "transparent": true}},
             "multiplex_services": {"edge": {"routes": {"xmpp": "c2s"}, "default": "echo",
                                             "tls_routes": [{"alpn": "xmpp-client", "service": "c2s_tls"}]}}}
            """
        let streamOpen =
            "<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        let netproxy = CommandRunner.executable.path
        let (status, output) = try await TransparentForwardTests.inNamespace(
            TransparentForwardTests.serving(
                config, target: nil,
                then: """
                    \(try Peer.require("prosody")) --config \(path)/prosody.cfg.lua > \(path)/prosody.out 2>&1 &
                    prosody=$!
                    for i in $(seq 100); do grep -q "Activated service 'c2s_direct_tls'" \(log) 2>/dev/null && break; sleep 0.05; done
                    \(try Peer.require("python3")) \(path)/client.py 15443 "PROXY TCP4 198.51.100.7 127.0.0.1 40123 15443"
                    (printf "%s" "\(streamOpen)"; sleep 1) | \(netproxy) send --source 198.51.100.8:40124 127.0.0.1 15443 | head -c 35
                    echo
                    curl -s http://127.0.0.1:9090/metrics | grep '^netproxy_multiplex_routed_total' | grep -v ' 0$'
                    kill $prosody; wait $prosody 2>/dev/null || true
                    grep -o 'New connection FD [0-9]* ([^)]*)' \(log)
                    """))
        #expect(status == 0, "\(output)")
        let lines = output.split(separator: "\n").map(String.init)
        // TLS 1.3 with Prosody itself, and its stream; then the plain stream, from its start.
        #expect(lines.first == "TLSv1.3 <stream:stream", "\(output)")
        #expect(lines.dropFirst().first == "<?xml version='1.0'?><stream:stream", "\(output)")
        #expect(lines.contains(#"netproxy_multiplex_routed_total{service="c2s_tls",by="alpn"} 1"#), "\(output)")
        #expect(lines.contains(#"netproxy_multiplex_routed_total{service="c2s",by="xmpp"} 1"#), "\(output)")
        // Prosody saw each client from its PROXY header, on the port its route chose.
        #expect(lines.contains { $0.hasSuffix("(198.51.100.7, 40123, 127.0.0.1, 15223)") }, "\(output)")
        #expect(lines.contains { $0.hasSuffix("(198.51.100.8, 40124, 127.0.0.1, 15222)") }, "\(output)")
    }
}
