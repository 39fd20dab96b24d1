import Foundation
import NIOCore
import NetProxy
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Reloads that fail half-way, and shutdowns that meet a start or a reload: nothing is left
/// listening that should not be, and the configuration in force is the old one or the new one.
///
/// The hosts listen on an address of their own, 127.0.0.77: a port these tests let go may be
/// taken by another test's listener on 127.0.0.1, which a probe must not reach. Serialized, as
/// two of them could be handed the same free ports.
@Suite(.serialized, .timeLimit(.minutes(1))) struct ReloadLifecycleTests {
    static let address = "127.0.0.77"

    /// Whether something accepts connections on 127.0.0.77:`port`.
    static func accepts(_ port: Int) -> Bool {
        (try? BlockingSocket(connectingTo: address, port: port)) != nil
    }

    static func configuration(_ json: String) throws -> NetProxyConfiguration {
        try NetProxyConfiguration(json: Data(json.utf8))
    }

    @Test func aFailedBindClosesWhatTheReloadBound() async throws {
        let ports = try freePorts(2)
        let running = try await RunningHost(#"{"interfaces": ["127.0.0.77"], "echo_ports": [0]}"#)
        let echo = running.port(.service("echo"), host: Self.address)
        let taken = try ListeningSocket(host: Self.address)
        defer { taken.close() }
        // http is bound first (services in name order), then whoami fails on the taken port.
        let next = try Self.configuration(
            #"{"interfaces": ["127.0.0.77"], "echo_ports": [0], "http_ports": [\#(ports[0])], "whoami_ports": [\#(taken.port)]}"#)
        do {
            try await running.host.reload(configuration: next)
            Issue.record("the reload succeeded on a taken port")
        } catch {
            #expect("\(error)".hasPrefix("cannot listen for whoami on 127.0.0.77:\(taken.port): "), "\(error)")
        }
        #expect(!Self.accepts(ports[0]))
        #expect(running.host.listeners.map(\.plan.description) == ["echo on 127.0.0.77:\(echo)"])
        #expect(
            try await LoopbackClient.exchange(port: echo, host: Self.address, send: Array("still".utf8), halfClose: true) == Array("still".utf8))
        #expect(running.host.metricsExposition.contains("netproxy_reloads_total{result=\"failure\"} 1\n"))
        await running.stop()
    }

    /// A misspelt service in a reloaded file is refused as at start-up; the port keeps its service.
    @Test func aMisspeltServiceFailsTheReload() async throws {
        let running = try await RunningHost(#"{"interfaces": ["127.0.0.77"], "whoami_ports": [0]}"#)
        let port = running.port(.service("whoami"), host: Self.address)
        do {
            try await running.host.reload(
                configuration: try Self.configuration(
                    #"{"interfaces": ["127.0.0.77"], "whoami_ports": [0], "proxy_port_mappings": {"15222": "whoamii"}}"#))
            Issue.record("the reload succeeded")
        } catch {
            #expect("\(error)" == #"proxy_port_mappings: port 15222 maps to unknown service "whoamii" (known: echo, http, whoami)"#)
        }
        let reply = try await LoopbackClient.exchange(port: port, host: Self.address, send: [])
        #expect(try json(reply)["service"] as? String == "whoami")
        #expect(running.host.metricsExposition.contains("netproxy_reloads_total{result=\"failure\"} 1\n"))
        await running.stop()
    }

    @Test func movingAPortToTheWildcardAddressNamesTheWayOut() async throws {
        let port = try freePorts(1)[0]
        let running = try await RunningHost(#"{"interfaces": ["127.0.0.77"], "echo_ports": [\#(port)]}"#)
        do {
            try await running.host.reload(configuration: try Self.configuration(#"{"interfaces": ["0.0.0.0"], "echo_ports": [\#(port)]}"#))
            Issue.record("both sockets were bound")
        } catch {
            #expect(
                "\(error)".hasSuffix(
                    "; this host's echo on 127.0.0.77:\(port) holds the port until the reload ends: change its address in two reloads (remove, then add)"
                ),
                "\(error)")
        }
        #expect(Self.accepts(port))
        await running.stop()
    }

    /// A shutdown that arrives while the listeners are being bound: when both have returned,
    /// none of them accepts.
    @Test func shutdownDuringStartLeavesNothingListening() async throws {
        let ports = try freePorts(40)
        let host = try NetProxyHost(configuration: try Self.configuration(#"{"interfaces": ["127.0.0.77"], "echo_ports": \#(ports)}"#))
        let start = Task { try await host.start() }
        try await Task.sleep(for: .milliseconds(5))
        await host.shutdown(gracePeriod: .zero)
        _ = try? await start.value
        #expect(ports.filter(Self.accepts) == [])
    }

    /// A shutdown during a reload waits for it: the reload's new listeners and socket files are
    /// gone when the shutdown returns.
    @Test func shutdownDuringReloadLeavesNothingBehind() async throws {
        let ports = try freePorts(40)
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("echo.sock").path
        let running = try await RunningHost(#"{"interfaces": ["127.0.0.77"], "echo_ports": [0]}"#)
        let next = try Self.configuration(
            #"{"interfaces": ["127.0.0.77"], "echo_ports": [0], "whoami_ports": \#(ports), "proxy_unix_sockets": {"\#(path)": "echo"}}"#)
        let reload = Task { try await running.host.reload(configuration: next) }
        try await Task.sleep(for: .milliseconds(5))
        await running.stop()
        // Checked before the reload's task is awaited: the shutdown alone must have waited.
        #expect(ports.filter(Self.accepts) == [])
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == [])
        _ = try? await reload.value
    }
}
