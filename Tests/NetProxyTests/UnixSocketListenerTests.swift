import Foundation
import NIOCore
import NetProxy
import ProxyProtocol
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `proxy_unix_sockets`: PROXY listeners on UNIX sockets, the way HAProxy on the same machine
/// talks to a backend (`server ... unix@PATH send-proxy-v2`).
@Suite(.timeLimit(.minutes(1))) struct UnixSocketListenerTests {
    static func mode(_ path: String) -> mode_t? {
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK else { return nil }
        return status.st_mode & 0o777
    }

    @Test(.enabled(if: Peer.available("haproxy") && Peer.available("curl")), .tags(.interop)) func haproxySendsProxyV2OverAUnixSocket() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("http.sock").path
        let running = try await RunningHost(
            #"{"interfaces": ["127.0.0.1"], "http_ports": [], "proxy_unix_sockets": {"\#(path)": {"service": "http", "mode": "0640"}}}"#)
        #expect(Self.mode(path) == 0o640)
        #expect(running.host.listeners.map(\.plan.description) == ["PROXY on unix:\(path) -> http"])
        let (haproxy, frontendPort, log) = try Peer.startHAProxy(tcpServer: "unix@\(path) send-proxy-v2", in: directory)
        defer { haproxy.stop() }
        let (body, client) = try await Peer.curl(["--interface", "127.0.0.9", "http://127.0.0.1:\(frontendPort)/"])
        #expect(haproxy.isRunning, "HAProxy: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        #expect(endpoint(body["source"]) == client)
        #expect(endpoint(body["destination"]) == "127.0.0.1 \(frontendPort)")
        let proxy = try #require(body["proxy"] as? [String: Any])
        #expect(proxy["version"] as? Int == 2)
        #expect(proxy["family"] as? String == "INET")
        await running.stop()
        // The file goes with the listener.
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    /// A socket file left by a process that died is replaced; anything else at the path stops
    /// the start, and is left alone.
    @Test func staleSocketsAreReplacedAndOtherFilesKept() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("c2s.sock").path
        // A stale socket: bound, then closed without removing the file.
        let stale = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        let address = try SocketAddress(unixDomainSocketPath: path)
        _ = address.withSockAddr { bind(stale, $0, socklen_t($1)) }
        close(stale)
        #expect(Self.mode(path) != nil)
        let running = try await RunningHost(#"{"whoami_ports": [], "proxy_unix_sockets": {"\#(path)": "whoami"}}"#)
        #expect(Self.mode(path) == 0o660)
        // The new socket answers: a header, then whoami's JSON.
        let header = ProxyHeader(
            version: .v1,
            addresses: .inet(
                source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 51234), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)))
        let reply = try await LoopbackClient.exchange(unixSocket: path, send: Array(try header.encoded().readableBytesView), halfClose: true)
        #expect(endpoint(try json(reply)["source"]) == "192.0.2.1 51234")
        // A second host cannot take over a socket that is in use.
        do {
            _ = try await RunningHost(#"{"whoami_ports": [], "proxy_unix_sockets": {"\#(path)": "whoami"}}"#)
            Issue.record("a second host started on a socket in use")
        } catch {
            expect(error as? NetProxyConfigurationError, .file, key: "proxy_unix_sockets.\(path)")
        }
        #expect(Self.mode(path) == 0o660)
        await running.stop()

        let file = directory.appendingPathComponent("notes.txt").path
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: file))
        do {
            _ = try await RunningHost(#"{"whoami_ports": [], "proxy_unix_sockets": {"\#(file)": "whoami"}}"#)
            Issue.record("started on a regular file")
        } catch {
            expect(error as? NetProxyConfigurationError, .file, key: "proxy_unix_sockets.\(file)")
        }
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "keep me")
    }

    @Test func configurationErrors() {
        let key = "proxy_unix_sockets./tmp/x.sock"
        expect(startupError(#"{"proxy_unix_sockets": {"/tmp/x.sock": "nope"}}"#), .unknownService, key: key)
        expect(startupError(#"{"proxy_unix_sockets": {"/tmp/x.sock": {"service": "echo", "mode": "0999"}}}"#), .invalidValue, key: key + ".mode")
        expect(startupError(#"{"proxy_unix_sockets": {"/tmp/x.sock": {"service": "echo", "user": "x"}}}"#), .unknownKey, key: key)
        expect(startupError(#"{"proxy_unix_sockets": {"/tmp/x.sock": {"mode": "0600"}}}"#), .invalidValue, key: key)
    }

    /// A socket's own header policy; every peer is trusted there, so a trust list is an error.
    @Test func policyPerSocket() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let strict = directory.appendingPathComponent("strict.sock").path
        let open = directory.appendingPathComponent("open.sock").path
        let running = try await RunningHost(
            #"{"echo_ports": [], "proxy_unix_sockets": {"\#(strict)": {"service": "echo", "versions": [1], "unspecified": "accept"}, "\#(open)": "echo"}}"#
        )
        let local = Array(try ProxyHeader.local.encoded().readableBytesView) + Array("hi".utf8)
        let unknown = Array(try ProxyHeader.v1Unknown.encoded().readableBytesView) + Array("hi".utf8)
        #expect(try await LoopbackClient.exchange(unixSocket: strict, send: local, halfClose: true) == [])
        #expect(try await LoopbackClient.exchange(unixSocket: strict, send: unknown, halfClose: true) == Array("hi".utf8))
        #expect(try await LoopbackClient.exchange(unixSocket: open, send: local, halfClose: true) == Array("hi".utf8))
        await running.stop()
        expect(
            startupError(#"{"echo_ports": [], "proxy_unix_sockets": {"/tmp/x.sock": {"service": "echo", "trusted_proxies": []}}}"#), .unknownKey,
            key: "proxy_unix_sockets./tmp/x.sock")
        var configuration = NetProxyConfiguration()
        configuration.servicePorts = ["echo": []]
        configuration.proxyUnixSockets = ["/tmp/x.sock": ProxyUnixSocket(service: "echo", options: ProxyPortOptions(trustedProxies: ["10.0.0.1"]))]
        let error = #expect(throws: NetProxyConfigurationError.self) {
            try NetProxyHost(configuration: configuration)
        }
        expect(error, .invalidValue, key: "proxy_unix_sockets./tmp/x.sock")
    }

    /// `local` and `header_timeout` of a socket's own; a timeout under 3 s warns, as for a port.
    @Test func localAndHeaderTimeoutPerSocket() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("c2s.sock").path
        let running = try await RunningHost(
            #"{"echo_ports": [], "proxy_header_timeout": 60, "proxy_unix_sockets": {"\#(path)": {"service": "echo", "local": "reject", "header_timeout": 0.3}}}"#
        )
        #expect(running.host.warnings == ["proxy_unix_sockets.\(path).header_timeout is 0.3 s; the PROXY specification asks for at least 3 s"])
        #expect(
            try await LoopbackClient.exchange(
                unixSocket: path, send: Array(try ProxyHeader.local.encoded().readableBytesView) + Array("hi".utf8), halfClose: true) == [])
        #expect(try await LoopbackClient.exchange(unixSocket: path, send: Array("PROXY UNKNOWN\r\nhi".utf8), halfClose: true) == Array("hi".utf8))
        // Ten bytes of a header, then silence (no half-close): only the socket's 0.3 s ends it.
        #expect(try await LoopbackClient.exchange(unixSocket: path, send: Array(try ProxyHeader.local.encoded().readableBytesView.prefix(10))) == [])
        let metrics = running.host.metricsExposition
        #expect(metrics.contains("netproxy_connections_rejected_total{reason=\"local_not_accepted\"} 1\n"))
        #expect(metrics.contains("netproxy_connections_rejected_total{reason=\"header_timeout\"} 1\n"))
        await running.stop()
    }

    @Test func reloadAddsAndRemovesSockets() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("echo.sock").path
        let running = try await RunningHost(#"{"echo_ports": [0]}"#)
        try await running.host.reload(
            configuration: try NetProxyConfiguration(json: Data(#"{"echo_ports": [0], "proxy_unix_sockets": {"\#(path)": "echo"}}"#.utf8)))
        #expect(Self.mode(path) == 0o660)
        let reply = try await LoopbackClient.exchange(
            unixSocket: path, send: Array(try ProxyHeader.local.encoded().readableBytesView) + Array("hi".utf8), halfClose: true)
        #expect(reply == Array("hi".utf8))
        // The same path with another mode: the same socket, with the new mode.
        var before = stat()
        lstat(path, &before)
        try await running.host.reload(
            configuration: try NetProxyConfiguration(
                json: Data(#"{"echo_ports": [0], "proxy_unix_sockets": {"\#(path)": {"service": "echo", "mode": "0600"}}}"#.utf8)))
        var after = stat()
        lstat(path, &after)
        #expect(after.st_ino == before.st_ino)
        #expect(Self.mode(path) == 0o600)
        // Someone removes the file: the next reload binds the socket anew.
        unlink(path)
        try await running.host.reload(
            configuration: try NetProxyConfiguration(
                json: Data(#"{"echo_ports": [0], "proxy_unix_sockets": {"\#(path)": {"service": "echo", "mode": "0600"}}}"#.utf8)))
        #expect(Self.mode(path) == 0o600)
        let again = try await LoopbackClient.exchange(
            unixSocket: path, send: Array(try ProxyHeader.local.encoded().readableBytesView) + Array("back".utf8), halfClose: true)
        #expect(again == Array("back".utf8))
        try await running.host.reload(configuration: try NetProxyConfiguration(json: Data(#"{"echo_ports": [0]}"#.utf8)))
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(running.host.metricsExposition.contains(#"netproxy_reloads_total{result="success"} 4"#))
        await running.stop()
    }
}
