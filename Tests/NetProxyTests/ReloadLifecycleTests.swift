import Foundation
import Logging
import NIOConcurrencyHelpers
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
        listensExactly(on: address, port: port) ?? ((try? BlockingSocket(connectingTo: address, port: port)) != nil)
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
        let error = await #expect(throws: NetProxyHostError.self) { try await running.host.reload(configuration: next) }
        #expect(error?.kind == .cannotListen)
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
        let next = try Self.configuration(#"{"interfaces": ["127.0.0.77"], "whoami_ports": [0], "proxy_port_mappings": {"15222": "whoamii"}}"#)
        let error = await #expect(throws: NetProxyConfigurationError.self) { try await running.host.reload(configuration: next) }
        expect(error, .unknownService, key: "proxy_port_mappings")
        let reply = try await LoopbackClient.exchange(port: port, host: Self.address, send: [])
        #expect(try json(reply)["service"] as? String == "whoami")
        #expect(running.host.metricsExposition.contains("netproxy_reloads_total{result=\"failure\"} 1\n"))
        await running.stop()
    }

    @Test func movingAPortToTheWildcardAddressNamesTheWayOut() async throws {
        let port = try freePorts(1)[0]
        let running = try await RunningHost(#"{"interfaces": ["127.0.0.77"], "echo_ports": [\#(port)]}"#)
        let next = try Self.configuration(#"{"interfaces": ["0.0.0.0"], "echo_ports": [\#(port)]}"#)
        let error = await #expect(throws: NetProxyHostError.self, "both sockets were bound") { try await running.host.reload(configuration: next) }
        #expect(error?.kind == .cannotListen)
        // The way out is the point of this message, so its words are checked.
        #expect(
            error?.description.hasSuffix(
                "; this host's echo on 127.0.0.77:\(port) holds the port until the reload ends: change its address in two reloads (remove, then add)"
            ) == true, "\(error?.description ?? "")")
        #expect(Self.accepts(port))
        await running.stop()
    }

    /// Shuts a host down from inside its own binding: when a `listening:` line that `trigger`
    /// accepts is logged (the host has just bound that listener and goes on binding), the
    /// shutdown starts at once, on the binding's thread, so that it arrives mid-bind however fast
    /// the machine is.
    final class ShutdownWhileBinding: Sendable {
        private struct State {
            var host: NetProxyHost?
            var triggered = false
            var listening: [String] = []
        }

        private let state = NIOLockedValueBox(State())
        private let trigger: @Sendable (String) -> Bool
        private let shutdowns = AsyncStream.makeStream(of: Task<Void, Never>.self)

        init(when trigger: @escaping @Sendable (String) -> Bool) {
            self.trigger = trigger
        }

        /// A logger that watches for the line.
        var logger: Logger {
            Logger(label: "test") { _ in Watcher(owner: self) }
        }

        /// From now on, a matching line shuts `host` down.
        func arm(_ host: NetProxyHost) {
            state.withLockedValue { $0.host = host }
        }

        /// No binding is to come: ``shutdownReturned()`` stops waiting for a shutdown.
        func bindingEnded() {
            shutdowns.continuation.finish()
        }

        /// The `listening:` lines logged since armed.
        var listening: [String] { state.withLockedValue { $0.listening } }

        /// Waits for the shutdown to start and return; `false` if binding ended without one.
        func shutdownReturned() async -> Bool {
            for await shutdown in shutdowns.stream {
                await shutdown.value
                return true
            }
            return false
        }

        fileprivate func logged(_ message: String) {
            guard message.hasPrefix("listening: ") else { return }
            let host = state.withLockedValue { state -> NetProxyHost? in
                guard let host = state.host else { return nil }
                state.listening.append(message)
                guard !state.triggered, trigger(message) else { return nil }
                state.triggered = true
                return host
            }
            guard let host else { return }
            // Runs the shutdown's first steps (the host is marked as stopping) before returning to
            // the binding; no lock is held, as the shutdown logs too.
            shutdowns.continuation.yield(Task.immediate { await host.shutdown(gracePeriod: .zero) })
        }

        private struct Watcher: LogHandler {
            let owner: ShutdownWhileBinding
            var metadata: Logger.Metadata = [:]
            var logLevel: Logger.Level = .info

            subscript(metadataKey key: String) -> Logger.Metadata.Value? {
                get { metadata[key] }
                set { metadata[key] = newValue }
            }

            func log(event: LogEvent) {
                owner.logged("\(event.message)")
            }
        }
    }

    /// A shutdown that arrives while the listeners are being bound, after the first of 40: the
    /// start fails, no other listener is bound, and the one that was accepts nothing.
    @Test func shutdownDuringStartLeavesNothingListening() async throws {
        let ports = try freePorts(40)
        let watcher = ShutdownWhileBinding { _ in true }
        let host = try NetProxyHost(
            configuration: try Self.configuration(#"{"interfaces": ["127.0.0.77"], "echo_ports": \#(ports)}"#), logger: watcher.logger)
        watcher.arm(host)
        let error = await #expect(throws: NetProxyHostError.self, "the start finished although the host was shut down during it") {
            try await host.start()
        }
        #expect(error?.kind == .shuttingDown)
        watcher.bindingEnded()
        #expect(await watcher.shutdownReturned())
        #expect(watcher.listening.count == 1)
        #expect(ports.filter(Self.accepts) == [])
    }

    /// A shutdown during a reload waits for it: the reload's new listeners and socket files are
    /// gone when the shutdown returns. The shutdown arrives once the reload has bound its UNIX
    /// socket, the last of its listeners, before the new configuration is put in force.
    @Test func shutdownDuringReloadLeavesNothingBehind() async throws {
        let ports = try freePorts(40)
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("echo.sock").path
        let watcher = ShutdownWhileBinding { $0.contains("unix:") }
        let host = try NetProxyHost(
            configuration: try Self.configuration(#"{"interfaces": ["127.0.0.77"], "echo_ports": [0]}"#), logger: watcher.logger)
        try await host.start()
        let next = try Self.configuration(
            #"{"interfaces": ["127.0.0.77"], "echo_ports": [0], "whoami_ports": \#(ports), "proxy_unix_sockets": {"\#(path)": "echo"}}"#)
        watcher.arm(host)
        let reload = Task {
            defer { watcher.bindingEnded() }
            try await host.reload(configuration: next)
        }
        // Checked before the reload's task is awaited: the shutdown alone must have waited.
        #expect(await watcher.shutdownReturned())
        // Everything the reload asked for was bound before the shutdown arrived.
        #expect(watcher.listening.count == ports.count + 1)
        #expect(watcher.listening.last?.contains("unix:\(path)") == true)
        #expect(ports.filter(Self.accepts) == [])
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == [])
        let error = await #expect(throws: NetProxyHostError.self) { try await reload.value }
        #expect(error?.kind == .shuttingDown)
    }
}
