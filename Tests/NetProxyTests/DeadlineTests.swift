import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NetProxy
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The value of one series in a Prometheus exposition, such as
/// `netproxy_timeouts_total{listener="127.0.0.1:1234",kind="idle"}`; `nil` if absent.
func metricValue(_ exposition: String, _ series: String) -> Double? {
    for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

extension RunningHost {
    /// A series of one listener: `name{listener="127.0.0.1:port"[,label="value"]}`.
    func metric(_ name: String, port: Int, _ label: (String, String)? = nil) -> Double? {
        let extra = label.map { #",\#($0.0)="\#($0.1)""# } ?? ""
        return metricValue(host.metricsExposition, #"\#(name){listener="127.0.0.1:\#(port)"\#(extra)}"#)
    }

    /// Waits (up to 5 s) until the listener's `netproxy_connections` gauge reads `count`.
    func waitForOpenConnections(_ count: Double, port: Int) async throws -> Double? {
        for _ in 0..<100 where metric("netproxy_connections", port: port) != count {
            try await Task.sleep(for: .milliseconds(50))
        }
        return metric("netproxy_connections", port: port)
    }
}

/// Silent clients, each sent `prefix` first: seconds from the last connect until the server
/// closed the first of them, and until it closed the last. Each must end with a clean end of
/// stream or a reset, never a timeout of the client's own.
func secondsUntilServerCloses(
    port: Int, count: Int, prefix: [UInt8] = [], from source: String = "127.0.0.1", readsReplies: Bool = true
) async throws -> (first: Double, last: Double) {
    try await BlockingSocket.onThread {
        let sockets = try (0..<count).map { _ in try BlockingSocket(connectingTo: "127.0.0.1", port: port, from: source) }
        for socket in sockets where !prefix.isEmpty { try socket.send(prefix) }
        let start = Date()
        var first: Double?
        var buffer = [UInt8](repeating: 0, count: 65536)
        for socket in sockets {
            while true {
                let read = (try? buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }) ?? 0
                if read == 0 { break }
            }
            if first == nil { first = Date().timeIntervalSince(start) }
        }
        return (first ?? 0, Date().timeIntervalSince(start))
    }
}

/// `idle_timeout` and `tls_handshake_timeout`: nothing silent outlives its deadline (plus the
/// sweep's period and some slack for a loaded machine), and a client that keeps talking is
/// never cut.
@Suite(.timeLimit(.minutes(2))) struct DeadlineTests {
    static let v1Header = Array("PROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\n".utf8)
    /// The idle timeout these tests configure, and the latest a silent connection may close:
    /// late enough for a machine busy with the rest of the suite (a full run has seen 2.1 s past
    /// the deadline), early enough that only the deadline explains the close. The sweep's own
    /// precision (250 ms) is the benchmarks' to show, not a test's.
    static let idle = 1.0
    static let latest = idle + 5.0

    /// 20 silent clients on each kind of listener: closed at the idle timeout, each counted once
    /// as `kind="idle"` on its listener, and the listener's open connections back to 0.
    /// (Before: all 20 still open, on every kind.)
    @Test(.tags(.slow), arguments: ["regular", "proxy", "direct", "multiplexed", "http", "metrics"])
    func silentConnectionsCloseAtTheIdleTimeout(kind: String) async throws {
        let config: String
        var prefix: [UInt8] = []
        var source = "127.0.0.1"
        let listener: ListenerPlan.Kind
        switch kind {
        case "regular":
            // The service's own key, for its regular ports.
            config = #"{"echo_ports": [0], "echo_idle_timeout": 1}"#
            listener = .service("echo")
        case "proxy":
            config = #"{"proxy_port_mappings": {"0": "echo"}, "proxy_port_options": {"0": {"idle_timeout": 1}}}"#
            prefix = Self.v1Header
            listener = .proxy(service: "echo", tls: false)
        case "direct":
            config = #"{"idle_timeout": 1, "proxy_direct_clients": ["127.0.0.77"], "proxy_port_mappings": {"0": "echo"}}"#
            source = "127.0.0.77"
            listener = .proxy(service: "echo", tls: false)
        case "multiplexed":
            // Handed to echo at detect_timeout, and closed by the multiplexer's own idle timeout,
            // which counts from the accept: the client has been silent since.
            config = #"""
                {"proxy_port_mappings": {"0": "edge"},
                 "multiplex_services": {"edge": {"default": "echo", "detect_timeout": 0.5, "idle_timeout": 1}}}
                """#
            prefix = Self.v1Header
            listener = .proxy(service: "edge", tls: false)
        case "http":
            // Keep-alive after a complete request and its answer.
            config = #"{"idle_timeout": 1, "http_ports": [0]}"#
            prefix = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            listener = .service("http")
        default:
            config = #"{"idle_timeout": 1, "metrics_port": 0}"#
            prefix = Array("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            listener = .metrics
        }
        let running = try await RunningHost(#"{"interfaces": ["127.0.0.1"], "# + config.dropFirst())
        let port = running.port(listener)
        let (first, last) = try await secondsUntilServerCloses(port: port, count: 20, prefix: prefix, from: source)
        #expect(first >= Self.idle - 0.1, "closed after \(first) s")
        #expect(last <= Self.latest, "the last closed after \(last) s")
        #expect(running.metric("netproxy_timeouts_total", port: port, ("kind", "idle")) == 20)
        #expect(try await running.waitForOpenConnections(0, port: port) == 0)
        await running.stop()
    }

    /// A client that sends a byte every 300 ms for 4.5 s (an XMPP whitespace keep-alive, sped
    /// up) is never cut by a 2 s idle timeout; once it stops, it is.
    @Test(.tags(.slow)) func aClientThatKeepsTalkingStaysOpen() async throws {
        let running = try await RunningHost(#"{"interfaces": ["127.0.0.1"], "idle_timeout": 2, "echo_ports": [0]}"#)
        let port = running.port(.service("echo"))
        let result = try await BlockingSocket.onThread { () throws -> (echoed: Int, closedAfter: Double) in
            let socket = try BlockingSocket(connectingTo: "127.0.0.1", port: port)
            var echoed = 0
            var buffer = [UInt8](repeating: 0, count: 16)
            for _ in 0..<15 {
                try socket.send([0x20])
                echoed += try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }
                usleep(300_000)
            }
            let stopped = Date()
            let end = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }
            return (echoed, end == 0 ? Date().timeIntervalSince(stopped) : -1)
        }
        #expect(result.echoed == 15)
        #expect(result.closedAfter >= 2 - 0.4 && result.closedAfter <= 2 + 2, "closed \(result.closedAfter) s after the last byte")
        #expect(running.metric("netproxy_timeouts_total", port: port, ("kind", "idle")) == 1)
        await running.stop()
    }

    /// A request header sent one byte every 200 ms never completes in time: bytes trickling in
    /// are not activity for the HTTP services, complete requests are. (Before: held for good.)
    @Test(arguments: ["http", "metrics"])
    func aTrickledRequestHeaderIsClosedAtTheIdleTimeout(kind: String) async throws {
        let running = try await RunningHost(#"{"interfaces": ["127.0.0.1"], "idle_timeout": 1, "http_ports": [0], "metrics_port": 0}"#)
        let port = running.port(kind == "http" ? .service("http") : .metrics)
        // Never complete (no empty line), 47 bytes: 9.4 s at this pace.
        let header = Array("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n".utf8)
        let result = try await BlockingSocket.onThread { () throws -> (sent: Int, seconds: Double) in
            let socket = try BlockingSocket(connectingTo: "127.0.0.1", port: port)
            let start = Date()
            var sent = 0
            for byte in header {
                guard (try? socket.send([byte])) != nil else { break }
                sent += 1
                usleep(200_000)
            }
            var buffer = [UInt8](repeating: 0, count: 16)
            let read = (try? buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }) ?? 0
            return (read == 0 ? sent : -1, Date().timeIntervalSince(start))
        }
        // Closed while the bytes still trickle in (after about 5 of them: the send after the close
        // fails, or the read sees the end), not once they stop.
        #expect(result.sent >= 3 && result.sent < header.count, "\(result.sent) bytes sent before the close")
        #expect(running.metric("netproxy_timeouts_total", port: port, ("kind", "idle")) == 1)
        await running.stop()
    }

    /// A TLS port: 10 clients silent after the header and 5 trickling a ClientHello a byte at a
    /// time are closed at `tls_handshake_timeout`, counted as `kind="tls_handshake"`, although
    /// the idle timeout is long. (Before: all open, no handshake deadline.)
    @Test func tlsHandshakesHaveADeadline() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-tls-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificate = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        try TestCertificate.localhost.certificatePEM.write(toFile: certificate, atomically: true, encoding: .utf8)
        try TestCertificate.localhost.privateKeyPEM.write(toFile: key, atomically: true, encoding: .utf8)
        let running = try await RunningHost(
            #"""
            {"interfaces": ["127.0.0.1"], "idle_timeout": 60, "proxy_port_mappings": {"0": "echo"}, "proxy_tls_ports": [0],
             "proxy_tls_certificate": "\#(certificate)", "proxy_tls_key": "\#(key)",
             "proxy_port_options": {"0": {"tls_handshake_timeout": 1}}}
            """#)
        let port = running.port(.proxy(service: "echo", tls: true))
        async let silent = secondsUntilServerCloses(port: port, count: 10, prefix: Self.v1Header)
        let trickled = try await BlockingSocket.onThread { () throws -> Double in
            let sockets = try (0..<5).map { _ in try BlockingSocket(connectingTo: "127.0.0.1", port: port) }
            for socket in sockets { try socket.send(Self.v1Header + [0x16, 0x03, 0x01, 0x01, 0x00]) }
            let start = Date()
            // A handshake record announcing 256 bytes, trickled: never complete in time.
            var open = sockets.count
            while open > 0 && Date().timeIntervalSince(start) < 10 {
                open = sockets.filter { (try? $0.send([0x01])) != nil }.count
                usleep(200_000)
            }
            return Date().timeIntervalSince(start)
        }
        let (first, last) = try await silent
        #expect(first >= Self.idle - 0.1 && last <= Self.latest, "closed after \(first)-\(last) s")
        #expect(trickled <= Self.latest + 0.5, "trickling clients closed after \(trickled) s")
        #expect(running.metric("netproxy_timeouts_total", port: port, ("kind", "tls_handshake")) == 15)
        #expect(running.metric("netproxy_timeouts_total", port: port, ("kind", "idle")) == 0)
        await running.stop()
    }

    /// The idle clock starts when the connection is handed to its service: before that the
    /// header's deadline applies, however short the idle timeout, and the connection is counted
    /// as a header timeout.
    @Test func theHeaderPhaseHasItsOwnDeadline() async throws {
        let running = try await RunningHost(
            #"{"interfaces": ["127.0.0.1"], "proxy_port_mappings": {"0": "echo"}, "proxy_header_timeout": 2, "idle_timeout": 0.5}"#)
        let port = running.port(.proxy(service: "echo", tls: false))
        let (first, last) = try await secondsUntilServerCloses(port: port, count: 5, prefix: Array("PROXY TCP4".utf8))
        #expect(first >= 1.9 && last <= 4, "closed after \(first)-\(last) s")
        #expect(running.metric("netproxy_timeouts_total", port: port, ("kind", "header")) == 5)
        #expect(running.metric("netproxy_timeouts_total", port: port, ("kind", "idle")) == 0)
        await running.stop()
    }

    /// A multiplexer whose idle timeout is shorter than its detection timeout would close silent
    /// clients before the default service gets them: a warning says so.
    @Test func anIdleTimeoutShorterThanDetectionWarns() throws {
        let host = try NetProxyHost(
            configuration: try NetProxyConfiguration(
                json: Data(#"{"multiplex_services": {"mx": {"default": "echo", "detect_timeout": 3, "idle_timeout": 1.5}}}"#.utf8)))
        #expect(
            host.warnings == [
                "multiplex_services.mx.idle_timeout (1.5 s) is shorter than its detect_timeout (3 s): a silent client is closed before the default service gets it"
            ])
    }

    /// A reload applies a new idle timeout to new connections; the connection already open
    /// keeps the timeout it was accepted with.
    @Test func reloadAppliesToNewConnections() async throws {
        var configuration = try NetProxyConfiguration(json: Data(#"{"interfaces": ["127.0.0.1"], "echo_ports": [0], "idle_timeout": 30}"#.utf8))
        let running = try await RunningHost(configuration: configuration)
        let port = running.port(.service("echo"))
        let old = try BlockingSocket(connectingTo: "127.0.0.1", port: port)
        // Served (so accepted) before the reload.
        #expect(try await Self.echo(old, "before") == Array("before".utf8))
        // Port 0 again: the same listener, kept with its socket.
        configuration.idleTimeout = .seconds(1)
        try await running.host.reload(configuration: configuration)
        let (_, last) = try await secondsUntilServerCloses(port: port, count: 1)
        #expect(last <= Self.latest)
        // The old connection is still served.
        #expect(try await Self.echo(old, "still here") == Array("still here".utf8))
        old.close()
        await running.stop()
    }

    /// Sends `text` and reads its echo.
    static func echo(_ socket: BlockingSocket, _ text: String) async throws -> [UInt8] {
        try await BlockingSocket.onThread { () throws -> [UInt8] in
            try socket.send(Array(text.utf8))
            var buffer = [UInt8](repeating: 0, count: 64)
            let count = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }
            return Array(buffer[..<count])
        }
    }

    /// The keys are checked like the others: range and type, the entry named.
    @Test(arguments: [
        (#"{"idle_timeout": 0}"#, NetProxyConfigurationError.Kind.invalidValue, "idle_timeout"),
        (#"{"idle_timeout": 100000}"#, .invalidValue, "idle_timeout"),
        (#"{"tls_handshake_timeout": "5"}"#, .invalidValue, "tls_handshake_timeout"),
        (#"{"max_connections": 0}"#, .invalidValue, "max_connections"),
        (#"{"max_connections_per_source": 1.5}"#, .invalidValue, "max_connections_per_source"),
        (#"{"nosuch_idle_timeout": 5}"#, .unknownService, "nosuch_idle_timeout"),
        (
            #"{"proxy_port_mappings": {"7": "echo"}, "proxy_port_options": {"7": {"tls_handshake_timeout": 3}}}"#, .invalidValue,
            "proxy_port_options.7.tls_handshake_timeout"
        ),
        (
            #"{"proxy_port_mappings": {"7": "echo"}, "proxy_port_options": {"7": {"max_connections": -1}}}"#, .invalidValue,
            "proxy_port_options.7.max_connections"
        ),
        (
            #"{"forward_services": {"fw": {"target": "127.0.0.1:1", "max_pending_connects": 0}}}"#, .invalidValue,
            "forward_services.fw.max_pending_connects"
        ),
        (#"{"multiplex_services": {"mx": {"default": "echo", "idle_timeout": -2}}}"#, .invalidValue, "multiplex_services.mx.idle_timeout"),
    ])
    func keysAreChecked(json: String, kind: NetProxyConfigurationError.Kind, key: String) {
        expect(startupError(json), kind, key: key)
    }
}
