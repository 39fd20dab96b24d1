import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import TestSupport
import Testing

@testable import NetProxy

/// A reload stuck while it builds its runtime (a file system or a name server that does not
/// answer, made here by a test hook): it fails at its deadline, a shutdown does not wait for it,
/// and when it finally ends it changes nothing.
///
/// The hosts listen on an address of their own, 127.0.0.79, so that probing a port these tests
/// expect closed never reaches another test's listener; serialized, as two of them could be
/// handed the same free ports.
@Suite(.serialized, .timeLimit(.minutes(1))) struct ReloadDeadlineTests {
    static let address = "127.0.0.79"

    /// Blocks the threads that call ``block()`` until released.
    final class Hang: Sendable {
        private let released = ConditionLock(value: false)
        private let entered = NIOLockedValueBox(0)

        /// How many threads have called ``block()``.
        var blocked: Int { entered.withLockedValue { $0 } }

        func block() {
            entered.withLockedValue { $0 += 1 }
            released.lock(whenValue: true)
            released.unlock()
        }

        func release() {
            released.lock()
            released.unlock(withValue: true)
        }
    }

    /// Whether something listens on this test's own address and `port` (in the kernel's table,
    /// where it can be read: another test's wildcard listener may have taken the number).
    static func accepts(_ port: Int) -> Bool {
        listensExactly(on: address, port: port) ?? ((try? BlockingSocket(connectingTo: address, port: port)) != nil)
    }

    static func configuration(_ json: String) throws -> NetProxyConfiguration {
        try NetProxyConfiguration(json: Data(json.utf8))
    }

    /// Polls `condition` every 10 ms for up to `seconds`; whether it became true.
    static func eventually(within seconds: Int = 10, _ condition: () -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !condition() {
            guard ContinuousClock.now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    static let abandonedReloadEnded = "notice a reload abandoned earlier has ended; it changed nothing"

    /// The hung reload fails after its 0.5 s, counted and logged; a later reload works while it
    /// is still stuck, and when it ends it undoes nothing of that one and binds nothing.
    @Test func aHungReloadFailsAtItsDeadline() async throws {
        let ports = try freePorts(2)
        let lines = NIOLockedValueBox<[String]>([])
        let host = try NetProxyHost(
            configuration: try Self.configuration(#"{"interfaces": ["127.0.0.79"], "echo_ports": [0]}"#),
            logger: Logger(label: "test") { _ in RecordingLogHandler(lines: lines) })
        try await host.start()
        let echo = try #require(host.listeners.first?.address.port)
        let hang = Hang()
        defer { hang.release() }
        host.reloadSettings.withLockedValue {
            $0.timeout = .milliseconds(500)
            $0.beforeBuildingRuntime = { hang.block() }
        }

        let started = ContinuousClock.now
        let hung = try Self.configuration(#"{"interfaces": ["127.0.0.79"], "echo_ports": [0], "whoami_ports": [\#(ports[0])]}"#)
        let error = await #expect(throws: NetProxyHostError.self, "the hung reload succeeded") { try await host.reload(configuration: hung) }
        #expect(error?.kind == .reloadTimedOut)
        let elapsed = ContinuousClock.now - started
        // Not before the deadline; after it, within what a machine busy with the whole suite
        // takes to resume the caller (the hang itself lasts until the test releases it).
        #expect(elapsed >= .milliseconds(500) && elapsed < .seconds(30), "\(elapsed)")
        #expect(hang.blocked == 1)
        #expect(host.metricsExposition.contains("netproxy_reloads_total{result=\"failure\"} 1\n"))
        // Logged as an error, with the error's own words.
        let logged = lines.withLockedValue { $0 }.filter { $0.hasPrefix("error ") && $0.hasSuffix(": \(error?.description ?? "-")") }
        #expect(logged.count == 1, "\(lines.withLockedValue { $0 })")
        #expect(host.configuration.servicePorts["whoami"] == nil)
        #expect(
            try await LoopbackClient.exchange(port: echo, host: Self.address, send: Array("still".utf8), halfClose: true) == Array("still".utf8))

        // Another reload, while the first is still stuck.
        host.reloadSettings.withLockedValue { $0 = NetProxyHost.ReloadSettings() }
        try await host.reload(
            configuration: try Self.configuration(#"{"interfaces": ["127.0.0.79"], "echo_ports": [0], "http_ports": [\#(ports[1])]}"#))
        #expect(Self.accepts(ports[1]))

        hang.release()
        #expect(try await Self.eventually { lines.withLockedValue { $0 }.contains(Self.abandonedReloadEnded) })
        #expect(host.configuration.servicePorts["http"] == [ports[1]])
        #expect(host.configuration.servicePorts["whoami"] == nil)
        #expect(host.listeners.map(\.address.port) == [echo, ports[1]])
        #expect(!Self.accepts(ports[0]))
        #expect(Self.accepts(ports[1]))
        #expect(host.metricsExposition.contains("netproxy_reloads_total{result=\"success\"} 1\n"))
        #expect(host.metricsExposition.contains("netproxy_reloads_total{result=\"failure\"} 1\n"))
        await host.shutdown(gracePeriod: .zero)
    }

    /// A shutdown while a reload is stuck returns at once, long before the reload's deadline
    /// (the default 30 s); the reload fails, and when it ends it binds nothing.
    @Test func shutdownDoesNotWaitForAHungReload() async throws {
        let port = try freePorts(1)[0]
        let lines = NIOLockedValueBox<[String]>([])
        let host = try NetProxyHost(
            configuration: try Self.configuration(#"{"interfaces": ["127.0.0.79"], "echo_ports": [0]}"#),
            logger: Logger(label: "test") { _ in RecordingLogHandler(lines: lines) })
        try await host.start()
        let echo = try #require(host.listeners.first?.address.port)
        let hang = Hang()
        defer { hang.release() }
        host.reloadSettings.withLockedValue { $0.beforeBuildingRuntime = { hang.block() } }
        #expect(host.reloadSettings.withLockedValue { $0.timeout } == .seconds(30))

        let next = try Self.configuration(#"{"interfaces": ["127.0.0.79"], "echo_ports": [0], "whoami_ports": [\#(port)]}"#)
        let reload = Task { try await host.reload(configuration: next) }
        #expect(try await Self.eventually { hang.blocked == 1 })
        let started = ContinuousClock.now
        await host.shutdown(gracePeriod: .zero)
        let elapsed = ContinuousClock.now - started
        // Well before the reload's own 30 s deadline, even on a machine busy with the whole suite.
        #expect(elapsed < .seconds(20), "\(elapsed)")
        let error = await #expect(throws: NetProxyHostError.self) { try await reload.value }
        #expect(error?.kind == .shuttingDown)
        // Still stuck: the shutdown did not wait for it.
        #expect(!lines.withLockedValue { $0 }.contains(Self.abandonedReloadEnded))
        #expect(host.metricsExposition.contains("netproxy_reloads_total{result=\"failure\"} 1\n"))
        #expect(!Self.accepts(echo))

        hang.release()
        #expect(try await Self.eventually { lines.withLockedValue { $0 }.contains(Self.abandonedReloadEnded) })
        #expect(!Self.accepts(port))
        #expect(!Self.accepts(echo))
    }
}
