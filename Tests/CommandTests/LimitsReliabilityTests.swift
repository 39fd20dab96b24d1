import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Deadlines and budgets as a whole process shows them: clients that hold connections open
/// without a word, more clients than `max_connections`, clients that leave a forward with its
/// target stalled or unreachable. Each test runs `netproxy serve` in a process of its own and
/// checks the end state exactly: the server's descriptors, its sockets' TCP states (from
/// `/proc/PID/net/tcp`), its metrics and its log.
@Suite(.serialized, .timeLimit(.minutes(3)), .tags(.slow)) struct LimitsReliabilityTests {
    static let proxyV1 = Array("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n".utf8)

    // MARK: - One source

    /// One address opens 200 silent connections: the server keeps exactly
    /// `max_connections_per_source` of them and closes the others at once, while a client from
    /// another address is served; at the idle timeout the kept ones are closed too and the
    /// server's descriptors are back where they were.
    ///
    /// All defaults but the idle timeout, under a descriptor limit of 256: `max_connections` is
    /// (256 - 64 - 32 - the listening sockets) / 2, 78 with two event loops, and
    /// `max_connections_per_source` a quarter of it, 19 (its 100 would let one address take
    /// every place).
    @Test func oneSourceCannotTakeTheDescriptorsOthersNeed() async throws {
        // Long enough for the checks below on a loaded machine (they take about a second).
        let idle = 12.0
        let serve = try ServeProcess(
            config: #"{"interfaces": ["127.0.0.1"], "echo_ports": [0], "metrics_port": 0, "idle_timeout": \#(Int(idle))}"#,
            descriptorLimit: 256)
        let echo = try #require(serve.port("echo"))
        let metrics = try #require(serve.port("metrics"))
        let baseline = try await Self.baseline(serve, echo: echo, metrics: metrics)
        // Two TCP listeners (echo and metrics), each with a socket per event loop.
        let kept = (256 - 64 - 32 - 2 * System.coreCount) / 2 / 4

        let started = Date()
        let attacker = try await BlockingSocket.onThread {
            try (0..<200).map { _ in try BlockingSocket(connectingTo: "127.0.0.1", port: echo, from: "127.0.0.66") }
        }
        let held = try await Self.waitForMetrics(metrics, upTo: 10) { exposition in
            Self.value(exposition, Self.series("netproxy_connections", echo)) == Double(kept)
                && Self.value(exposition, Self.series("netproxy_connections_limited_total", echo, ("limit", "max_connections_per_source")))
                    == Double(200 - kept)
        }
        #expect(Self.value(held, Self.series("netproxy_connections", echo)) == Double(kept))
        #expect(
            Self.value(held, Self.series("netproxy_connections_limited_total", echo, ("limit", "max_connections_per_source"))) == Double(200 - kept))
        let holding = try await serve.wait(upTo: 5, for: { serve.descriptorCount }, until: { $0 == baseline + kept })
        #expect(holding == baseline + kept, "open: \(serve.descriptorTargets)")
        let closedEarly = try await serve.wait(
            upTo: 5, for: { attacker.filter { Self.isEnded($0.descriptor) }.count }, until: { $0 == 200 - kept })
        #expect(closedEarly == 200 - kept)

        // Meanwhile a client from another address is served, on new connections each time.
        let echoed = try await BlockingSocket.onThread { () throws -> Int in
            var echoed = 0
            for round in 0..<5 {
                let socket = try BlockingSocket(connectingTo: "127.0.0.1", port: echo)
                let text = Array("hello \(round)".utf8)
                try socket.send(text)
                if Self.read(socket.descriptor, count: text.count, within: 5) == text { echoed += 1 }
                socket.close()
            }
            return echoed
        }
        #expect(echoed == 5)
        #expect(Date().timeIntervalSince(started) < idle, "the checks above ran past the idle timeout")

        // At the idle timeout (and the sweep's period, and slack) the server ends every one.
        let ended = try await serve.wait(
            upTo: idle + 3 - Date().timeIntervalSince(started), for: { attacker.filter { Self.isEnded($0.descriptor) }.count },
            until: { $0 == 200 })
        #expect(ended == 200, "\(200 - ended) of the attacker's connections still open \(Date().timeIntervalSince(started)) s after the first")
        let after = try await serve.wait(upTo: 5, for: { serve.descriptorCount }, until: { $0 == baseline })
        #expect(after == baseline, "open: \(serve.descriptorTargets)")
        let final = try await Self.waitForMetrics(metrics, upTo: 5) { Self.value($0, Self.series("netproxy_connections", echo)) == 0 }
        #expect(Self.value(final, Self.series("netproxy_connections", echo)) == 0)
        #expect(Self.value(final, Self.series("netproxy_timeouts_total", echo, ("kind", "idle"))) == Double(kept))
        for socket in attacker { socket.close() }
        let (status, errors) = try await serve.stop()
        #expect(status == 0)
        #expect(errors.contains("closed: it holds \(kept) connection(s), its max_connections_per_source"))
    }

    // MARK: - max_connections

    /// `max_connections` 5, for the process or for one PROXY port: 5 clients are served, 3 more
    /// wait in the backlog without an answer; the listener says once that it stops accepting.
    /// When 3 of the first 5 close, the 3 waiting are served, and the listener says it accepts
    /// again. The descriptors never run out, and the gauge follows the clients.
    @Test(arguments: ["process", "listener"])
    func maxConnectionsPausesAndResumes(scope: String) async throws {
        let proxied = scope == "listener"
        let config =
            proxied
            ? #"""
            {"interfaces": ["127.0.0.1"], "proxy_port_mappings": {"0": "echo"}, "proxy_port_options": {"0": {"max_connections": 5}},
             "metrics_port": 0}
            """#
            : #"{"interfaces": ["127.0.0.1"], "echo_ports": [0], "metrics_port": 0, "max_connections": 5}"#
        let serve = try ServeProcess(config: config)
        let echo = try #require(serve.port("echo"))
        let metrics = try #require(serve.port("metrics"))
        let listener = "127.0.0.1:\(echo)"

        // One at a time, each served before the next connects: the first 5 are the ones
        // accepted (the listener's sockets, one per event loop, each have a backlog of their own).
        let (first, served) = try await BlockingSocket.onThread { () throws -> ([BlockingSocket], Int) in
            var clients: [BlockingSocket] = []
            var served = 0
            for index in 0..<5 {
                let client = try Self.echoClient(echo, index: index, proxied: proxied)
                clients.append(client)
                let text = Array("client \(index)".utf8)
                try client.send(text)
                if Self.read(client.descriptor, count: text.count, within: 10) == text { served += 1 }
            }
            return (clients, served)
        }
        #expect(served == 5)
        let (waiting, answered) = try await BlockingSocket.onThread { () throws -> ([BlockingSocket], Int) in
            let clients = try (5..<8).map { index in
                let client = try Self.echoClient(echo, index: index, proxied: proxied)
                try client.send(Array("client \(index)".utf8))
                return client
            }
            return (clients, clients.filter { !Self.read($0.descriptor, count: 1, within: 1).isEmpty }.count)
        }
        #expect(answered == 0, "\(answered) client(s) over the limit were served")
        let clients = first + waiting
        let paused = try await serve.wait(upTo: 5, for: { serve.standardError }, until: { $0.contains("\(listener) stops accepting") })
        #expect(Self.lines(paused, containing: "\(listener) stops accepting").count == 1, "\(paused)")
        #expect(Self.lines(paused, containing: "\(listener) accepts again").isEmpty)

        for index in 0..<3 { clients[index].close() }
        let resumed = try await BlockingSocket.onThread { () -> Int in
            (5..<8).filter { index in
                let text = Array("client \(index)".utf8)
                return Self.read(clients[index].descriptor, count: text.count, within: 10) == text
            }.count
        }
        #expect(resumed == 3)
        // Close one more, so that a scrape has room under a process-wide limit.
        clients[3].close()
        let exposition = try await Self.waitForMetrics(metrics, upTo: 5) { Self.value($0, Self.series("netproxy_connections", echo)) == 4 }
        #expect(Self.value(exposition, Self.series("netproxy_connections", echo)) == 4)
        for client in clients { client.close() }
        let final = try await Self.waitForMetrics(metrics, upTo: 5) { Self.value($0, Self.series("netproxy_connections", echo)) == 0 }
        #expect(Self.value(final, Self.series("netproxy_connections", echo)) == 0)

        let (status, errors) = try await serve.stop()
        #expect(status == 0)
        #expect(!errors.contains("EMFILE"))
        #expect(!errors.contains("cannot accept"))
        // Pauses and resumptions alternate, one line each, starting with a pause; at least one
        // of each happened.
        let episodes = errors.split(separator: "\n").compactMap { line -> Bool? in
            if line.contains("\(listener) stops accepting: ") { return true }
            if line.contains("\(listener) accepts again after ") && line.hasSuffix(" ms at its limit") { return false }
            return nil
        }
        #expect(episodes.count >= 2, "\(errors)")
        #expect(episodes.enumerated().allSatisfy { $0.element == ($0.offset % 2 == 0) }, "\(errors)")
    }

    /// A client of the echo port (after a PROXY header with a source of its own, if `proxied`).
    static func echoClient(_ port: Int, index: Int, proxied: Bool) throws -> BlockingSocket {
        let socket = try BlockingSocket(connectingTo: "127.0.0.1", port: port)
        if proxied { try socket.send(Array("PROXY TCP4 192.0.2.\(index + 1) 198.51.100.7 5000 443\r\n".utf8)) }
        return socket
    }

    // MARK: - Forward: a stalled target

    /// A forward whose target accepts and never reads nor answers: 40 clients send 1 MB (or
    /// one byte) and close. At the forward's idle timeout the server lets both sides go: its
    /// descriptors are back at the baseline, none of its sockets is left in CLOSE-WAIT, the
    /// target sees every connection end, and the timeouts are counted.
    @Test(arguments: [1 << 20, 1])
    func forwardGivesBackWhatADeadClientHolds(bytesPerClient: Int) async throws {
        let idle = 2.0
        let target = try SilentTarget()
        defer { target.close() }
        let serve = try ServeProcess(
            config: #"""
                {"interfaces": ["127.0.0.1"], "fw_ports": [0], "metrics_port": 0,
                 "forward_services": {"fw": {"target": "127.0.0.1:\#(target.port)", "idle_timeout": \#(Int(idle))}}}
                """#)
        let forward = try #require(serve.port("fw"))
        let metrics = try #require(serve.port("metrics"))
        let baseline = try await Self.baseline(serve, metrics: metrics)

        let sent = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<40 {
                group.addTask {
                    try await BlockingSocket.onThread {
                        let socket = try BlockingSocket(connectingTo: "127.0.0.1", port: forward)
                        socket.setSendTimeout(seconds: 2)
                        let chunk = [UInt8](repeating: 0x61, count: min(bytesPerClient, 65536))
                        let sent = try socket.sendUntilBlocked(limit: bytesPerClient) { chunk }
                        socket.close()
                        return sent
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let closed = Date()
        #expect(sent.count == 40 && sent.allSatisfy { $0 > 0 })
        let reached = try await serve.wait(upTo: 5, for: { target.connections.count }, until: { $0 == 40 })
        #expect(reached == 40, "connections the target accepted")

        // Until the idle timeout (and slack): the server lets go of everything. A client that
        // sent one byte and closed leaves the server's socket in CLOSE-WAIT until then.
        var closeWaitPeak = 0
        var descriptors = serve.descriptorCount
        while Date().timeIntervalSince(closed) < idle + 3 {
            closeWaitPeak = max(closeWaitPeak, Self.serverSockets(serve, state: TCPState.closeWait).count)
            descriptors = serve.descriptorCount
            if descriptors == baseline { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(descriptors == baseline, "\(Date().timeIntervalSince(closed)) s after the clients closed: \(serve.descriptorTargets)")
        if bytesPerClient == 1 { #expect(closeWaitPeak == 40, "CLOSE-WAIT before the idle timeout") }
        #expect(Self.serverSockets(serve, state: TCPState.closeWait).isEmpty)
        #expect(Self.serverSockets(serve, remotePort: target.port).isEmpty)

        // The target saw each connection: every byte that got through, the end of the stream, and
        // then a reset for what it sends, since nobody holds the other side any more.
        let accepted = target.connections
        #expect(accepted.count == 40)
        let (ends, received) = try await BlockingSocket.onThread { Self.drain(accepted, within: 10) }
        #expect(ends == accepted.count, "\(accepted.count - ends) target connection(s) never ended")
        // What the server still had queued in its own memory at the close is dropped; what the
        // kernel had taken is delivered.
        #expect(received > 0 && received <= 40 * bytesPerClient)
        if bytesPerClient == 1 { #expect(received == 40) }
        let reset = try await BlockingSocket.onThread { Self.probeReset(accepted, within: 5) }
        #expect(reset == accepted.count, "\(accepted.count - reset) target connection(s) still held by the server")

        let exposition = try await Self.scrape(metrics)
        // Both sides of a relay have a deadline; whichever expires first, the relay is one
        // connection and counts once. (Before: 80 for 40 when both expired in the same sweep.)
        let timeouts = Self.value(exposition, Self.series("netproxy_timeouts_total", forward, ("kind", "idle"))) ?? 0
        #expect(timeouts == 40, "\(timeouts) idle timeouts for 40 relays")
        #expect(Self.value(exposition, Self.series("netproxy_connections", forward)) == 0)
        let (status, _) = try await serve.stop()
        #expect(status == 0)
    }

    // MARK: - Forward: an unreachable target

    /// A forward to a target whose SYNs are dropped (its backlog is full), with a 30 s connect
    /// timeout: 50 clients connect (on a regular port, or with a PROXY header) and, once the
    /// server's 50 connects hang in SYN-SENT, leave. Within a second the server has ended every
    /// connect: no SYN-SENT, no CLOSE-WAIT, its descriptors back at the baseline.
    @Test(arguments: ["regular", "proxy"])
    func abandonedConnectsEndAtOnce(kind: String) async throws {
        let blackhole = try await Blackhole.make()
        defer { blackhole.close() }
        let serve = try ServeProcess(
            config: #"""
                {"interfaces": ["127.0.0.1"], "fw_ports": [0], "proxy_port_mappings": {"0": "fw"}, "metrics_port": 0,
                 "forward_services": {"fw": {"target": "127.0.0.1:\#(blackhole.port)", "connect_timeout": 30}}}
                """#)
        let port = try #require(serve.port(kind == "proxy" ? "fw (PROXY)" : "fw "))
        let metrics = try #require(serve.port("metrics"))
        let baseline = try await Self.baseline(serve, metrics: metrics)

        let clients = try await BlockingSocket.onThread {
            try (0..<50).map { _ in
                let socket = try BlockingSocket(connectingTo: "127.0.0.1", port: port)
                if kind == "proxy" { try socket.send(Self.proxyV1) }
                return socket
            }
        }
        let connecting = try await serve.wait(
            upTo: 10, for: { Self.serverSockets(serve, state: TCPState.synSent, remotePort: blackhole.port).count }, until: { $0 == 50 })
        try #require(connecting == 50, "the server's connects to the target in SYN-SENT")

        for client in clients { client.close() }
        let left = Date()
        let state = try await Self.waitUntilReleased(serve, target: blackhole.port, baseline: baseline, upTo: 1)
        let elapsed = Date().timeIntervalSince(left)
        #expect(state.synSent == 0, "SYN-SENT \(elapsed) s after the clients left")
        #expect(state.closeWait == 0, "CLOSE-WAIT \(elapsed) s after the clients left")
        #expect(state.descriptors == baseline, "\(elapsed) s after the clients left: \(serve.descriptorTargets)")

        let exposition = try await Self.scrape(metrics)
        #expect(Self.value(exposition, Self.series("netproxy_connections", port)) == 0)
        #expect(Self.value(exposition, Self.series("netproxy_timeouts_total", port, ("kind", "connect"))) == 0)
        let (status, _) = try await serve.stop()
        #expect(status == 0)
    }

    /// Waits until the server holds no connect to `target` in SYN-SENT, no socket in CLOSE-WAIT,
    /// and no descriptor beyond `baseline`; returns what it holds at the end.
    static func waitUntilReleased(
        _ serve: ServeProcess, target: Int, baseline: Int, upTo seconds: Double
    ) async throws -> (synSent: Int, closeWait: Int, descriptors: Int) {
        try await serve.wait(
            upTo: seconds,
            for: {
                (
                    synSent: Self.serverSockets(serve, state: TCPState.synSent, remotePort: target).count,
                    closeWait: Self.serverSockets(serve, state: TCPState.closeWait).count, descriptors: serve.descriptorCount
                )
            }, until: { $0.synSent == 0 && $0.closeWait == 0 && $0.descriptors == baseline })
    }

    /// 30 clients that stay, towards a forward whose target drops SYNs: exactly
    /// `max_pending_connects` (20) connects in SYN-SENT and 10 clients closed and counted; their
    /// resets end the connects at once. Then about 2,000 clients over 2-3 s, connecting and
    /// resetting (`SO_LINGER` 0) a little later, about 40 open at a time: never more than 20
    /// connects in SYN-SENT, and the end with no SYN-SENT, no CLOSE-WAIT and the descriptors at
    /// the baseline.
    @Test func aResetFloodHoldsAtMostMaxPendingConnects() async throws {
        let blackhole = try await Blackhole.make()
        defer { blackhole.close() }
        let serve = try ServeProcess(
            config: #"""
                {"interfaces": ["127.0.0.1"], "fw_ports": [0], "metrics_port": 0,
                 "forward_services": {"fw": {"target": "127.0.0.1:\#(blackhole.port)", "connect_timeout": 30, "max_pending_connects": 20}}}
                """#)
        let port = try #require(serve.port("fw"))
        let metrics = try #require(serve.port("metrics"))
        let baseline = try await Self.baseline(serve, metrics: metrics)

        // First, exactly: 30 clients that stay leave 20 connects in SYN-SENT and 10 clients
        // closed and counted; their resets end the 20 connects at once.
        let staying = try await BlockingSocket.onThread {
            try (0..<30).map { _ in try BlockingSocket(connectingTo: "127.0.0.1", port: port) }
        }
        let capped = try await serve.wait(
            upTo: 10, for: { Self.serverSockets(serve, state: TCPState.synSent, remotePort: blackhole.port).count }, until: { $0 == 20 })
        #expect(capped == 20)
        let refused = try await Self.waitForMetrics(metrics, upTo: 10) {
            Self.value($0, Self.series("netproxy_connections_limited_total", port, ("limit", "pending_connects"))) == 10
        }
        #expect(Self.value(refused, Self.series("netproxy_connections_limited_total", port, ("limit", "pending_connects"))) == 10)
        for socket in staying { Self.reset(socket) }
        let released = try await Self.waitUntilReleased(serve, target: blackhole.port, baseline: baseline, upTo: 5)
        #expect(released.synSent == 0 && released.descriptors == baseline)

        // Then a flood: however fast clients come and go, never more than the cap.
        let flooding = NIOLockedValueBox(true)
        async let peak = BlockingSocket.onThread { () -> Int in
            var peak = 0
            while flooding.withLockedValue({ $0 }) {
                peak = max(peak, Self.serverSockets(serve, state: TCPState.synSent, remotePort: blackhole.port).count)
                usleep(2000)
            }
            return peak
        }
        let threads = 4
        let perThread = 500
        let started = Date()
        let connected = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<threads {
                group.addTask {
                    try await BlockingSocket.onThread { () throws -> Int in
                        var open: [BlockingSocket] = []
                        for index in 0..<perThread {
                            // Paced to spread the flood over about 2.5 s.
                            let due = Double(index) * 2.5 / Double(perThread)
                            let ahead = due - Date().timeIntervalSince(started)
                            if ahead > 0 { usleep(useconds_t(ahead * 1_000_000)) }
                            open.append(try BlockingSocket(connectingTo: "127.0.0.1", port: port))
                            if open.count > 10 { Self.reset(open.removeFirst()) }
                        }
                        for socket in open { Self.reset(socket) }
                        return perThread
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        let duration = Date().timeIntervalSince(started)
        // Some more samples after the last reset.
        try await Task.sleep(for: .milliseconds(300))
        flooding.withLockedValue { $0 = false }
        let highest = try await peak
        #expect(connected == threads * perThread)
        #expect(duration < 10, "the flood took \(duration) s")
        #expect(highest <= 20 + 2, "\(highest) connects in SYN-SENT at once")

        let state = try await Self.waitUntilReleased(serve, target: blackhole.port, baseline: baseline, upTo: 10)
        #expect(state.synSent == 0)
        #expect(state.closeWait == 0)
        #expect(state.descriptors == baseline, "open: \(serve.descriptorTargets)")
        let exposition = try await Self.waitForMetrics(metrics, upTo: 5) { Self.value($0, Self.series("netproxy_connections", port)) == 0 }
        #expect(Self.value(exposition, Self.series("netproxy_connections", port)) == 0)
        let (status, errors) = try await serve.stop()
        #expect(status == 0)
        #expect(!errors.contains("EMFILE"))
    }
}

// MARK: - Helpers

extension LimitsReliabilityTests {
    /// A target that could not be set up.
    struct SetupFailure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// The inodes of the sockets `pid` holds a descriptor of.
    static func socketInodes(of pid: pid_t) -> Set<UInt64> {
        let directory = "/proc/\(pid)/fd"
        var inodes = Set<UInt64>()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\(name)"), target.hasPrefix("socket:[")
            else { continue }
            if let inode = UInt64(target.dropFirst("socket:[".count).dropLast()) { inodes.insert(inode) }
        }
        return inodes
    }

    /// The server's own TCP sockets (those it holds a descriptor of), in `state` and to
    /// `remotePort` if given.
    ///
    /// The table is read in several pieces while it changes, so one read may list a socket
    /// closed before another opened; the descriptors, listed after it, keep only the sockets
    /// still held then.
    static func serverSockets(_ serve: ServeProcess, state: Int? = nil, remotePort: Int? = nil) -> [TCPSocket] {
        // In one state, a snapshot: what a test bounding sockets at once must count.
        let table = state.map { tcpSockets(inState: $0) } ?? tcpSockets(of: serve.pid)
        let inodes = socketInodes(of: serve.pid)
        return table.filter { socket in
            inodes.contains(socket.inode) && (state == nil || socket.state == state) && (remotePort == nil || socket.remotePort == remotePort)
        }
    }

    /// The series `name{listener="127.0.0.1:port"[,label="value"]}`.
    static func series(_ name: String, _ port: Int, _ label: (String, String)? = nil) -> String {
        let extra = label.map { #",\#($0.0)="\#($0.1)""# } ?? ""
        return #"\#(name){listener="127.0.0.1:\#(port)"\#(extra)}"#
    }

    /// The value of `series` in a Prometheus exposition; `nil` if absent.
    static func value(_ exposition: String, _ series: String) -> Double? {
        for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    /// The metrics endpoint's exposition (empty if it does not answer within 10 s).
    static func scrape(_ port: Int) async throws -> String {
        try await BlockingSocket.onThread {
            let socket = try BlockingSocket(connectingTo: "127.0.0.1", port: port)
            defer { socket.close() }
            try socket.send(Array("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
            return String(decoding: Self.read(socket.descriptor, count: .max, within: 10), as: UTF8.self)
        }
    }

    /// Scrapes until `condition` holds or `seconds` have passed; the last exposition either way.
    static func waitForMetrics(_ port: Int, upTo seconds: Double, until condition: (String) -> Bool) async throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        var exposition = try await scrape(port)
        while !condition(exposition) && Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
            exposition = try await scrape(port)
        }
        return exposition
    }

    /// The server's descriptors once it has served a connection (an echo, if there is an echo
    /// port) and a scrape: anything opened once, not per connection, is counted in.
    static func baseline(_ serve: ServeProcess, echo: Int? = nil, metrics: Int) async throws -> Int {
        if let echo {
            _ = try await LoopbackClient.exchange(port: echo, send: [1], halfClose: true)
        }
        _ = try await scrape(metrics)
        // The server closes each connection before the client sees its end: nothing is pending.
        let count = try await serve.wait(upTo: 5, for: { serve.descriptorCount }, until: { $0 > 0 })
        try #require(count > 0)
        return count
    }

    /// Lines of `text` that contain `fragment`.
    static func lines(_ text: String, containing fragment: String) -> [Substring] {
        text.split(separator: "\n").filter { $0.contains(fragment) }
    }

    /// Whether the peer has ended the connection: an end of stream or a reset is waiting (or
    /// was already read). Looks without reading data, and without waiting.
    static func isEnded(_ descriptor: CInt) -> Bool {
        var byte: UInt8 = 0
        let result = recv(descriptor, &byte, 1, CInt(MSG_PEEK) | CInt(MSG_DONTWAIT))
        return result == 0 || (result < 0 && errno == ECONNRESET)
    }

    /// Reads until `count` bytes have come, the stream ends, or `seconds` have passed; what came.
    static func read(_ descriptor: CInt, count: Int, within seconds: Double) -> [UInt8] {
        let deadline = Date().addingTimeInterval(seconds)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while received.count < count {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { break }
            var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, CInt(left * 1000) + 1)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { break }
            let result = recv(descriptor, &buffer, min(buffer.count, count - received.count), CInt(MSG_DONTWAIT))
            if result < 0 && (errno == EAGAIN || errno == EINTR) { continue }
            guard result > 0 else { break }
            received += buffer[..<result]
        }
        return received
    }

    /// Reads every connection to its end (end of stream or reset); how many ended within
    /// `seconds`, and the bytes read.
    static func drain(_ descriptors: [CInt], within seconds: Double) -> (ended: Int, bytes: Int) {
        let deadline = Date().addingTimeInterval(seconds)
        var open = Set(descriptors)
        var bytes = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !open.isEmpty && Date() < deadline {
            var entries = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            guard poll(&entries, nfds_t(entries.count), 100) > 0 else { continue }
            for entry in entries where entry.revents != 0 {
                while true {
                    let result = recv(entry.fd, &buffer, buffer.count, CInt(MSG_DONTWAIT))
                    if result > 0 {
                        bytes += result
                        continue
                    }
                    if result == 0 || errno == ECONNRESET { open.remove(entry.fd) }
                    break
                }
            }
        }
        return (descriptors.count - open.count, bytes)
    }

    /// Sends a byte on each connection (already ended from the other side) and waits for the
    /// reset that says nobody holds that side any more; how many were reset within `seconds`.
    static func probeReset(_ descriptors: [CInt], within seconds: Double) -> Int {
        var byte: UInt8 = 0x21
        for descriptor in descriptors { _ = send(descriptor, &byte, 1, CInt(MSG_NOSIGNAL)) }
        let deadline = Date().addingTimeInterval(seconds)
        var open = Set(descriptors)
        while !open.isEmpty && Date() < deadline {
            var entries = open.map { pollfd(fd: $0, events: 0, revents: 0) }
            guard poll(&entries, nfds_t(entries.count), 100) > 0 else { continue }
            for entry in entries where entry.revents & Int16(POLLHUP | POLLERR) != 0 { open.remove(entry.fd) }
        }
        return descriptors.count - open.count
    }

    /// Closes `socket` with a reset (`SO_LINGER` 0) rather than a FIN.
    static func reset(_ socket: BlockingSocket) {
        var option = linger(l_onoff: 1, l_linger: 0)
        setsockopt(socket.descriptor, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
        socket.close()
    }

    /// A socket's local port.
    static func localPort(_ descriptor: CInt) -> Int {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A loopback address and port as a `sockaddr_in`.
    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
        return address
    }

    /// A target that accepts every connection and then neither reads nor writes.
    final class SilentTarget: @unchecked Sendable {
        private let listener: ListeningSocket
        private let accepted = NIOLockedValueBox<[CInt]>([])
        private let stopped = NIOLockedValueBox(false)
        private let finished = DispatchSemaphore(value: 0)
        let port: Int

        init() throws {
            listener = try ListeningSocket()
            port = listener.port
            Thread.detachNewThread { [listener, accepted, stopped, finished] in
                while !stopped.withLockedValue({ $0 }) {
                    var entry = pollfd(fd: listener.descriptor, events: Int16(POLLIN), revents: 0)
                    guard poll(&entry, 1, 50) > 0 else { continue }
                    let descriptor = accept(listener.descriptor, nil, nil)
                    if descriptor >= 0 { accepted.withLockedValue { $0.append(descriptor) } }
                }
                finished.signal()
            }
        }

        /// The connections accepted so far.
        var connections: [CInt] { accepted.withLockedValue { $0 } }

        /// Stops accepting and closes everything.
        func close() {
            stopped.withLockedValue { $0 = true }
            finished.wait()
            for descriptor in connections { Glibc.close(descriptor) }
            listener.close()
        }
    }

    /// A target whose SYNs are dropped: it listens with a backlog of 1, its accept queue is
    /// filled by connections it never accepts, and a further connect is checked to stay in
    /// SYN-SENT.
    final class Blackhole: @unchecked Sendable {
        let port: Int
        private let descriptors: [CInt]

        private init(port: Int, descriptors: [CInt]) {
            self.port = port
            self.descriptors = descriptors
        }

        static func make() async throws -> Blackhole {
            let listener = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
            try #require(listener >= 0)
            var address = LimitsReliabilityTests.loopback(port: 0)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0, listen(listener, 1) == 0 else {
                Glibc.close(listener)
                throw SetupFailure("bind/listen: errno \(errno)")
            }
            let port = LimitsReliabilityTests.localPort(listener)
            var descriptors = [listener]
            var probeStayed = false
            for _ in 0..<5 {
                let client = try connectWithoutWaiting(port: port)
                let local = LimitsReliabilityTests.localPort(client)
                func state() -> Int? {
                    tcpSockets().first { $0.localPort == local && $0.remotePort == port }?.state
                }
                var current = state()
                for _ in 0..<20 where current != TCPState.established {
                    try await Task.sleep(for: .milliseconds(25))
                    current = state()
                }
                if current == TCPState.established {
                    descriptors.append(client)
                    continue
                }
                // Past the first retransmission of its SYN, still not answered.
                try await Task.sleep(for: .milliseconds(1200))
                probeStayed = state() == TCPState.synSent
                Glibc.close(client)
                break
            }
            guard probeStayed else {
                for descriptor in descriptors { Glibc.close(descriptor) }
                throw SetupFailure("a connect to a full backlog did not stay in SYN-SENT")
            }
            return Blackhole(port: port, descriptors: descriptors)
        }

        /// A non-blocking connect to 127.0.0.1:`port`, under way.
        private static func connectWithoutWaiting(port: Int) throws -> CInt {
            let descriptor = socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0)
            try #require(descriptor >= 0)
            var address = LimitsReliabilityTests.loopback(port: port)
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard result == 0 || errno == EINPROGRESS else {
                Glibc.close(descriptor)
                throw SetupFailure("connect: errno \(errno)")
            }
            return descriptor
        }

        func close() {
            for descriptor in descriptors { Glibc.close(descriptor) }
        }
    }
}
