import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NetProxy
import TestSupport
import Testing

/// Keeps what is logged, with its metadata, for assertions.
struct RecordingLogHandler: LogHandler {
    let lines: NIOLockedValueBox<[String]>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let fields = all.keys.sorted().map { "\($0)=\(all[$0]!)" }.joined(separator: " ")
        lines.withLockedValue { $0.append("\(event.level) \(event.message)" + (fields.isEmpty ? "" : " [\(fields)]")) }
    }
}

@Suite(.timeLimit(.minutes(1))) struct HostLifecycleTests {
    struct ServiceFailure: Error, CustomStringConvertible {
        var description: String { "the service gave up" }
    }

    /// An async service's error is logged with the connection it concerns.
    @Test func asyncServiceErrorsAreLoggedWithTheConnection() async throws {
        let lines = NIOLockedValueBox<[String]>([])
        let failing = NetProxyService.async(name: "failing") { inbound, _, _ in
            for try await _ in inbound { throw ServiceFailure() }
        }
        let running = try await RunningHost(
            configuration: try NetProxyConfiguration(json: Data(#"{"interfaces": ["127.0.0.1"], "proxy_port_mappings": {"0": "failing"}}"#.utf8)),
            services: [failing], logger: Logger(label: "test") { _ in RecordingLogHandler(lines: lines) }
        )
        let port = running.host.listeners[0].address.port!
        _ = try await LoopbackClient.exchange(port: port, send: Array("PROXY TCP4 203.0.113.9 192.0.2.2 4321 2\r\nx".utf8))
        await running.stop(gracePeriod: .seconds(5))
        let failures = lines.withLockedValue { $0 }.filter { $0.contains("failed") }
        #expect(failures.count == 1)
        let line = try #require(failures.first)
        #expect(line.hasPrefix("warning service failing failed: the service gave up [client=203.0.113.9:4321 proxy=127.0.0.1:"))
        #expect(line.hasSuffix(" service=failing]"))
    }

    /// Shutdown waits for async services to finish within the grace period, and cancels those
    /// still running after it; either way it returns only once they have ended.
    @Test func shutdownWaitsForAsyncServices() async throws {
        let events = NIOLockedValueBox<[String]>([])
        // Each connection's service says when it has seen the client's half-close.
        let (inputEnded, inputEndedContinuation) = AsyncStream.makeStream(of: Void.self)
        var waitingForInputEnd = inputEnded.makeAsyncIterator()
        // Answers `duration` after the client's half-close.
        func lingering(_ duration: Duration) -> NetProxyService {
            NetProxyService.async(name: "lingering", allowsHalfClosure: true) { inbound, outbound, _ in
                for try await _ in inbound {}
                inputEndedContinuation.yield()
                do {
                    try await Task.sleep(for: duration)
                    try await outbound.write(ByteBuffer(string: "done"))
                    events.withLockedValue { $0.append("finished") }
                } catch is CancellationError {
                    events.withLockedValue { $0.append("cancelled") }
                }
            }
        }
        let host = try await RunningHost(#"{"interfaces": ["127.0.0.1"], "lingering_ports": [0]}"#, services: [lingering(.milliseconds(300))])
        let port = host.host.listeners[0].address.port!
        // Within the grace period: the service finishes and its answer arrives.
        let (first, firstBytes) = try await LoopbackClient.connect(to: port)
        try await first.close(mode: .output)
        // The shutdown comes while the service is answering.
        await waitingForInputEnd.next()
        await host.stop(gracePeriod: .seconds(10))
        #expect(events.withLockedValue { $0 } == ["finished"])
        try await firstBytes.closed.get()
        #expect(firstBytes.string == "done")

        // After the grace period: cancelled, and shutdown still waits for it to end. (A minute
        // to answer: however slow the machine, the 100 ms grace period ends first.)
        let other = try await RunningHost(#"{"interfaces": ["127.0.0.1"], "lingering_ports": [0]}"#, services: [lingering(.seconds(60))])
        let otherPort = other.host.listeners[0].address.port!
        let (second, _) = try await LoopbackClient.connect(to: otherPort)
        try await second.close(mode: .output)
        await waitingForInputEnd.next()
        await other.stop(gracePeriod: .milliseconds(100))
        #expect(events.withLockedValue { $0 } == ["finished", "cancelled"])
    }

    @Test func runsOnce() async throws {
        let running = try await RunningHost(#"{"interfaces": ["127.0.0.1"], "echo_ports": [0]}"#)
        let again = await #expect(throws: NetProxyHostError.self) { try await running.host.run() }
        #expect(again?.kind == .alreadyStarted)
        await running.stop()
        let afterShutdown = await #expect(throws: NetProxyHostError.self) { try await running.host.run() }
        #expect(afterShutdown?.kind == .alreadyStarted)
    }

    /// A listener that cannot be bound ends ``NetProxyHost/run()`` with the error, before
    /// `onServerRunning`, and leaves nothing open.
    @Test func runThrowsWhenAListenerCannotBeBound() async throws {
        let first = try await RunningHost(#"{"interfaces": ["127.0.0.1"], "echo_ports": [0]}"#)
        let port = first.host.listeners[0].address.port!
        let called = NIOLockedValueBox(false)
        let second = try NetProxyHost(
            configuration: try NetProxyConfiguration(json: Data(#"{"interfaces": ["127.0.0.1"], "echo_ports": [\#(port)]}"#.utf8))
        ) { _ in called.withLockedValue { $0 = true } }
        let error = await #expect(throws: NetProxyHostError.self) { try await second.run() }
        #expect(error?.kind == .cannotListen)
        #expect(called.withLockedValue { $0 } == false)
        #expect(second.listeners.isEmpty)
        await first.stop()
    }
}
