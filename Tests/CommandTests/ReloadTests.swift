import Foundation
import NIOConcurrencyHelpers
import ProxyProtocol
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `netproxy serve` re-reading its configuration on SIGHUP and `netproxy reload`, with clients
/// streaming all along.
///
/// The server listens on an address of its own, 127.0.0.62: a port it lets go may be taken by
/// another test's listener on 127.0.0.1, which the probes for a closed port must not reach.
@Suite(.timeLimit(.minutes(3))) struct ReloadTests {
    static let address = "127.0.0.62"

    /// The ports of one run: echo's regular and PROXY ports (where the streams run), a spare
    /// regular port, a PROXY port whose role changes, and metrics.
    struct Ports {
        var echo, echoProxy, spare, changing, metrics: Int

        init() throws {
            let free = try freePorts(5)
            (echo, echoProxy, spare, changing, metrics) = (free[0], free[1], free[2], free[3], free[4])
        }

    }

    /// A configuration: the fixed part, with `changing` mapped to `service` and the given extra keys.
    static func config(
        _ ports: Ports, service: String = "whoami", echoProxyTrust: String = "127.0.0.1", whoamiPorts: [Int] = [], extra: String = ""
    ) -> String {
        """
        {"interfaces": ["\(address)"], "max_connections_per_source": 1000, "echo_ports": [\(ports.echo)], "whoami_ports": \(whoamiPorts), "metrics_port": \(ports.metrics),
         "proxy_port_mappings": {"\(ports.echoProxy)": "echo", "\(ports.changing)": "\(service)"},
         "proxy_port_options": {"\(ports.echoProxy)": {"trusted_proxies": ["\(echoProxyTrust)"]}}\(extra)}
        """
    }

    static let header = ProxyHeader(
        version: .v2,
        addresses: .inet(
            source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 51234), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)))

    static func bytes(_ header: ProxyHeader) -> [UInt8] { Array(try! header.encoded().readableBytesView) }

    /// Sends `bytes` from `source`, half-closes, and reads to the end; `nil` if the connection
    /// was refused by the kernel (no listener).
    static func exchange(_ port: Int, from source: String = "127.0.0.1", _ bytes: [UInt8]) async throws -> [UInt8]? {
        do {
            return try await LoopbackClient.exchange(port: port, host: address, from: source, send: bytes, halfClose: true)
        } catch  where LoopbackClient.isRefused(error) {
            return nil
        }
    }

    static func whoami(_ reply: [UInt8]?) -> [String: Any]? {
        reply.flatMap { try? JSONSerialization.jsonObject(with: Data($0)) as? [String: Any] }
    }

    /// A client that sends a block, reads the same block back, and pauses, until told to stop;
    /// then half-closes and reads to the end. Its result says whether every byte came back once.
    final class PingPongClient: @unchecked Sendable {
        let socket: BlockingSocket
        private let stop = NIOLockedValueBox(false)
        private let done = DispatchSemaphore(value: 0)
        private let outcome = NIOLockedValueBox<String?>(nil)
        let rounds = NIOLockedValueBox(0)

        init(port: Int, header: [UInt8]?, seed: UInt64) throws {
            socket = try BlockingSocket(connectingTo: ReloadTests.address, port: port, from: "127.0.0.1")
            Thread.detachNewThread { [self] in
                let result: String
                do {
                    result = try run(header: header, seed: seed)
                } catch {
                    result = "\(error)"
                }
                outcome.withLockedValue { $0 = result }
                done.signal()
            }
        }

        private func run(header: [UInt8]?, seed: UInt64) throws -> String {
            if let header { try socket.send(header) }
            var stream = ByteStream(seed: seed)
            var block = [UInt8](repeating: 0, count: 4096)
            var echoed = [UInt8](repeating: 0, count: 4096)
            while !stop.withLockedValue({ $0 }) {
                block.withUnsafeMutableBytes { stream.fill($0) }
                try socket.send(block)
                var filled = 0
                while filled < block.count {
                    let count = try echoed.withUnsafeMutableBytes { try socket.receive(into: UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) }
                    if count == 0 { return "closed by the server after \(rounds.withLockedValue { $0 }) rounds" }
                    filled += count
                }
                guard echoed == block else { return "round \(rounds.withLockedValue { $0 }) came back different" }
                rounds.withLockedValue { $0 += 1 }
                usleep(20_000)
            }
            socket.shutdownWrite()
            let rest = try socket.receiveAll()
            return rest.isEmpty ? "ok" : "\(rest.count) unexpected byte(s) after the half-close"
        }

        /// Stops the client and waits for its result.
        func finish() -> String {
            stop.withLockedValue { $0 = true }
            guard done.wait(timeout: .now() + 30) == .success else { return "no result after 30 s" }
            return outcome.withLockedValue { $0 } ?? "no result"
        }
    }

    /// One reload: the configuration written, the signal (or `netproxy reload`), and the wait for
    /// the server to log the outcome.
    static func reload(_ serve: ServeProcess, _ json: String, pidFile: String, useCommand: Bool, expectSuccess: Bool = true) async throws {
        let marker = expectSuccess ? "configuration reloaded" : "reload failed"
        let before = serve.standardError.components(separatedBy: marker).count
        try Data(json.utf8).write(to: serve.configFile)
        if useCommand {
            // The command waits for the outcome and reports it.
            let output = try await CommandRunner.run(["reload", "--pid-file", pidFile])
            if expectSuccess {
                #expect(output.status == 0, "\(output.standardError)")
                #expect(output.standardOutput == "process \(serve.pid) reloaded its configuration\n")
            } else {
                #expect(output.status == 1)
                #expect(
                    output.standardError.hasPrefix(
                        "error: process \(serve.pid) did not reload; the configuration in force is unchanged: \(serve.configFile.path): "),
                    "\(output.standardError)")
            }
        } else {
            serve.send(SIGHUP)
        }
        let after = try await serve.wait(upTo: 10, for: { serve.standardError.components(separatedBy: marker).count }, until: { $0 > before })
        #expect(after == before + 1, "no \"\(marker)\" in: \(serve.standardError.suffix(2000))")
    }

    @Test func tenReloadsWhileTwoHundredClientsStream() async throws {
        let ports = try Ports()
        let pidFile = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-\(UUID()).pid").path
        let serve = try ServeProcess(config: Self.config(ports), extraArguments: ["--pid-file", pidFile])
        defer { serve.send(SIGKILL) }
        #expect(try pidFileContents(pidFile) == serve.pid)
        var clients: [PingPongClient] = []
        for index in 0..<200 {
            let proxied = index % 2 == 1
            clients.append(
                try PingPongClient(
                    port: proxied ? ports.echoProxy : ports.echo, header: proxied ? Self.bytes(Self.header) : nil, seed: UInt64(index)))
        }
        let v2 = Self.bytes(Self.header)
        var v1Header = Self.header
        v1Header.version = .v1
        let v1 = Self.bytes(v1Header)

        // 1. A regular port added.
        #expect(try await Self.exchange(ports.spare, []) == nil)
        try await Self.reload(serve, Self.config(ports, whoamiPorts: [ports.spare]), pidFile: pidFile, useCommand: true)
        #expect(Self.whoami(try await Self.exchange(ports.spare, []))?["service"] as? String == "whoami")

        // 2. ... and removed again.
        try await Self.reload(serve, Self.config(ports), pidFile: pidFile, useCommand: false)
        #expect(try await Self.exchange(ports.spare, []) == nil)

        // 3. A PROXY port mapped to another service, on the same socket.
        #expect(Self.whoami(try await Self.exchange(ports.changing, v2))?["service"] as? String == "whoami")
        try await Self.reload(serve, Self.config(ports, service: "echo"), pidFile: pidFile, useCommand: true)
        #expect(try await Self.exchange(ports.changing, v2 + Array("ping".utf8)) == Array("ping".utf8))

        // 4. Its versions restricted.
        let onlyV1 = #", "proxy_versions": [1]"#
        try await Self.reload(serve, Self.config(ports, service: "echo", extra: onlyV1), pidFile: pidFile, useCommand: false)
        #expect(try await Self.exchange(ports.changing, v2 + Array("ping".utf8)) == [])
        #expect(try await Self.exchange(ports.changing, v1 + Array("ping".utf8)) == Array("ping".utf8))

        // 5. Its trust list replaced.
        let trust2 = #", "proxy_trusted_proxies": ["127.0.0.2"]"#
        try await Self.reload(serve, Self.config(ports, service: "echo", extra: trust2), pidFile: pidFile, useCommand: true)
        #expect(try await Self.exchange(ports.changing, v2 + Array("ping".utf8)) == [])
        #expect(try await Self.exchange(ports.changing, from: "127.0.0.2", v2 + Array("ping".utf8)) == Array("ping".utf8))

        // 6. Direct clients added: served without a header.
        let direct = trust2 + #", "proxy_direct_clients": ["127.0.0.3"]"#
        try await Self.reload(serve, Self.config(ports, service: "whoami", extra: direct), pidFile: pidFile, useCommand: false)
        let served = Self.whoami(try await Self.exchange(ports.changing, from: "127.0.0.3", []))
        #expect((served?["source"] as? [String: Any])?["ip"] as? String == "127.0.0.3")
        #expect(served?["proxy"] is NSNull)

        // 7. An invalid configuration changes nothing.
        try await Self.reload(
            serve, #"{"echo_ports": [\#(ports.echo)], "proxy_trusted_proxy": []}"#, pidFile: pidFile, useCommand: true, expectSuccess: false)
        #expect(serve.standardError.contains(#"unknown key "proxy_trusted_proxy""#))
        #expect(
            (Self.whoami(try await Self.exchange(ports.changing, from: "127.0.0.3", []))?["source"] as? [String: Any])?["ip"] as? String
                == "127.0.0.3")

        // 8. The streams' own PROXY port stops trusting their proxy: new connections are refused,
        //    the streams go on.
        try await Self.reload(serve, Self.config(ports, echoProxyTrust: "127.0.0.5"), pidFile: pidFile, useCommand: false)
        #expect(try await Self.exchange(ports.echoProxy, v2 + Array("ping".utf8)) == [])
        #expect(try await Self.exchange(ports.echoProxy, from: "127.0.0.5", v2 + Array("ping".utf8)) == Array("ping".utf8))

        // 9. LOCAL headers refused.
        try await Self.reload(serve, Self.config(ports, extra: #", "proxy_local": "reject""#), pidFile: pidFile, useCommand: true)
        #expect(try await Self.exchange(ports.changing, Self.bytes(.local)) == [])

        // 10. Back to the start.
        try await Self.reload(serve, Self.config(ports), pidFile: pidFile, useCommand: false)
        #expect(Self.whoami(try await Self.exchange(ports.changing, Self.bytes(.local)))?["service"] as? String == "whoami")
        #expect(try await Self.exchange(ports.echoProxy, v2 + Array("ping".utf8)) == Array("ping".utf8))

        // Waiting for the clients blocks: on a thread of its own, not one of the few that run
        // every test's async code.
        let failures = try await BlockingSocket.onThread { [clients] in
            var failures: [String] = []
            for (index, client) in clients.enumerated() {
                let rounds = client.rounds.withLockedValue { $0 }
                let result = client.finish()
                if result != "ok" || rounds == 0 { failures.append("client \(index): \(result) (\(rounds) rounds)") }
            }
            return failures
        }
        #expect(failures == [])
        let metrics = Self.whoamiless(try await Self.exchange(ports.metrics, Array("GET /metrics HTTP/1.0\r\n\r\n".utf8)))
        #expect(metrics.contains("netproxy_reloads_total{result=\"success\"} 9\n"), "\(metrics)")
        #expect(metrics.contains("netproxy_reloads_total{result=\"failure\"} 1\n"))
        let (status, _) = try await serve.stop()
        #expect(status == 0)
        #expect(!FileManager.default.fileExists(atPath: pidFile))
    }

    static func whoamiless(_ reply: [UInt8]?) -> String { String(decoding: reply ?? [], as: UTF8.self) }

    func pidFileContents(_ path: String) throws -> Int32? {
        Int32(try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .newlines))
    }

    /// `serve --pid-file` never writes through a symbolic link.
    @Test func pidFileIsNotALink() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-pid-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let precious = directory.appendingPathComponent("precious")
        try Data("keep".utf8).write(to: precious)
        let link = directory.appendingPathComponent("netproxy.pid").path
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: precious.path)
        let config = directory.appendingPathComponent("config.json")
        try Data("{}".utf8).write(to: config)
        let output = try await CommandRunner.run(["serve", "--config", config.path, "--pid-file", link])
        #expect(output.status == 1)
        #expect(
            output.standardError.hasSuffix("error: cannot open the PID file \(link): it is a symbolic link, not a regular file\n"),
            "\(output.standardError)")
        #expect(try String(contentsOf: precious, encoding: .utf8) == "keep")
    }

    /// `reload` waits for the server's outcome: the error of a failed reload, with exit 1. Only a
    /// file of the server's own user counts, and none outlives the server.
    @Test func reloadReportsTheOutcome() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-outcome-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let pidFile = directory.appendingPathComponent("netproxy.pid").path
        let outcomeFile = pidFile + ".reload"
        let config = #"{"interfaces": ["\#(Self.address)"], "echo_ports": [0]}"#
        let serve = try ServeProcess(config: config, extraArguments: ["--pid-file", pidFile])
        defer { if serve.process.isRunning { serve.send(SIGKILL) } }
        #expect(!FileManager.default.fileExists(atPath: outcomeFile))

        try Data(#"{"banana": 1}"#.utf8).write(to: serve.configFile)
        let failed = try await CommandRunner.run(["reload", "--pid-file", pidFile], killAfter: 60)
        #expect(failed.status == 1)
        #expect(
            failed.standardError
                == "error: process \(serve.pid) did not reload; the configuration in force is unchanged: \(serve.configFile.path): unknown key \"banana\"\n"
        )
        #expect(failed.standardOutput == "")

        try Data(config.utf8).write(to: serve.configFile)
        let succeeded = try await CommandRunner.run(["reload", "--pid-file", pidFile], killAfter: 60)
        #expect(succeeded.status == 0)
        #expect(succeeded.standardOutput == "process \(serve.pid) reloaded its configuration\n")

        let signalled = try await CommandRunner.run(["reload", "--pid-file", pidFile, "--no-wait"], killAfter: 60)
        #expect(signalled.standardOutput == "sent SIGHUP to process \(serve.pid)\n")

        // Another user's file at the outcome's path, claiming success from the far future, is not
        // the server's word. (Making it another user's takes root.)
        if getuid() == 0 {
            _ = try await serve.wait(
                upTo: 10, for: { serve.standardError.components(separatedBy: "configuration reloaded").count }, until: { $0 == 3 })
            try Data("18446744073709551615 ok\n".utf8).write(to: URL(fileURLWithPath: outcomeFile))
            #expect(chown(outcomeFile, 65534, 65534) == 0)
            try Data(#"{"banana": 1}"#.utf8).write(to: serve.configFile)
            let forged = try await CommandRunner.run(["reload", "--pid-file", pidFile], killAfter: 60)
            #expect(forged.status == 1, "\(forged.standardOutput)")
            #expect(forged.standardError.hasSuffix(": unknown key \"banana\"\n"), "\(forged.standardError)")
        }

        let (status, errors) = try await serve.stop()
        #expect(status == 0, "\(errors)")
        #expect(!FileManager.default.fileExists(atPath: outcomeFile))
        #expect(!FileManager.default.fileExists(atPath: pidFile))
    }

    @Test func reloadCommandErrors() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-reload-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let missing = try await CommandRunner.run(["reload", "--pid-file", directory.appendingPathComponent("none.pid").path])
        #expect(missing.status == 1)
        #expect(missing.standardError == "error: cannot read the PID file \(directory.path)/none.pid: No such file or directory\n")
        let garbage = directory.appendingPathComponent("garbage.pid")
        try Data("12ab\n".utf8).write(to: garbage)
        let notAPID = try await CommandRunner.run(["reload", "--pid-file", garbage.path])
        #expect(notAPID.standardError == "error: \(garbage.path) does not hold a process ID: \"12ab\"\n")
        let long = directory.appendingPathComponent("long.pid")
        try Data("\(getpid())\n\n\n\n\n\n\n\n\n\n\n".utf8).write(to: long)
        let tooLong = try await CommandRunner.run(["reload", "--pid-file", long.path])
        #expect(tooLong.standardError == "error: \(long.path) does not hold a process ID: it is longer than 11 bytes\n")
        let aDirectory = try await CommandRunner.run(["reload", "--pid-file", directory.path])
        #expect(aDirectory.standardError == "error: cannot read the PID file \(directory.path): it is a directory, not a regular file\n")
        // A file no server holds names a process that may be anyone by now (here: this test): it
        // is not signalled.
        let stale = directory.appendingPathComponent("stale.pid")
        try Data("\(getpid())\n".utf8).write(to: stale)
        let gone = try await CommandRunner.run(["reload", "--pid-file", stale.path])
        #expect(gone.status == 1)
        #expect(gone.standardError == "error: no server holds \(stale.path) (it is stale): process \(getpid()) was not signalled\n")
    }

    /// A FIFO or a device as the PID file: `reload` does not wait for a writer, and `serve` does
    /// not start; both say what the path is, and leave it as it was.
    @Test func pidFileIsNeverAFIFOOrADevice() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-fifo-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let fifo = directory.appendingPathComponent("netproxy.pid").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let config = directory.appendingPathComponent("config.json")
        try Data("{}".utf8).write(to: config)
        for (path, kind) in [(fifo, "a FIFO"), ("/dev/null", "a character device")] {
            let reload = try await CommandRunner.run(["reload", "--pid-file", path], killAfter: 30)
            #expect(reload.status == 1)
            #expect(reload.standardError == "error: cannot read the PID file \(path): it is \(kind), not a regular file\n")
            let serve = try await CommandRunner.run(["serve", "--config", config.path, "--pid-file", path], killAfter: 30)
            #expect(serve.status == 1)
            #expect(
                serve.standardError.hasSuffix("error: cannot open the PID file \(path): it is \(kind), not a regular file\n"),
                "\(serve.standardError)")
        }
        var status = stat()
        #expect(lstat(fifo, &status) == 0 && status.st_mode & S_IFMT == S_IFIFO)
        #expect(lstat("/dev/null", &status) == 0 && status.st_mode & S_IFMT == S_IFCHR)
    }

    /// Someone removes a running server's PID file and a second server makes its own at the same
    /// path: the first one's exit leaves the second one's file, which goes with the second server.
    @Test func aServerRemovesOnlyItsOwnPIDFile() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-two-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let pidFile = directory.appendingPathComponent("netproxy.pid").path
        let config = #"{"interfaces": ["\#(Self.address)"], "echo_ports": [0]}"#
        let first = try ServeProcess(config: config, extraArguments: ["--pid-file", pidFile])
        defer { if first.process.isRunning { first.send(SIGKILL) } }
        #expect(try pidFileContents(pidFile) == first.pid)
        try FileManager.default.removeItem(atPath: pidFile)
        let second = try ServeProcess(config: config, extraArguments: ["--pid-file", pidFile])
        defer { if second.process.isRunning { second.send(SIGKILL) } }
        #expect(try pidFileContents(pidFile) == second.pid)

        first.send(SIGTERM)
        let (firstStatus, firstErrors) = try await first.waitForExit()
        #expect(firstStatus == 0, "\(firstErrors)")
        #expect(try String(contentsOfFile: pidFile, encoding: .utf8) == "\(second.pid)\n")
        let reload = try await CommandRunner.run(["reload", "--pid-file", pidFile], killAfter: 60)
        #expect(reload.standardOutput == "process \(second.pid) reloaded its configuration\n", "\(reload.standardError)")

        let (secondStatus, secondErrors) = try await second.stop()
        #expect(secondStatus == 0, "\(secondErrors)")
        #expect(!FileManager.default.fileExists(atPath: pidFile))
    }

    /// A PID file locked by some other process (any kind of lock), naming a process that is not a
    /// server: `reload` says why it refuses, and signals nothing.
    @Test(arguments: [LockingChild.Lock.flock, .posixShared, .posixExclusive], [false, true])
    func reloadSignalsOnlyTheServerHoldingTheLock(lock: LockingChild.Lock, holderIsNamed: Bool) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-lock-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let pidFile = directory.appendingPathComponent("netproxy.pid").path
        try Data().write(to: URL(fileURLWithPath: pidFile))
        // The named process: the lock holder itself, or one of its own.
        let other = holderIsNamed ? nil : try LockingChild(lock: .none, on: pidFile)
        defer { other?.stop() }
        if let other { try Data("\(other.pid)\n".utf8).write(to: URL(fileURLWithPath: pidFile)) }
        let holder = try LockingChild(lock: lock, on: pidFile, namesItself: holderIsNamed)
        defer { holder.stop() }
        let named = other ?? holder
        #expect(try pidFileContents(pidFile) == named.pid)

        let program = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(named.pid)/exe")
        let output = try await CommandRunner.run(["reload", "--pid-file", pidFile], killAfter: 60)
        let reason =
            switch (lock, holderIsNamed) {
            case (.posixExclusive, true): "process \(named.pid), which \(pidFile) names, is not netproxy (it runs \(program)): it was not signalled"
            case (.posixExclusive, false):
                "the lock on \(pidFile) is held by process \(holder.pid), not by process \(named.pid), which the file names: process \(named.pid) was not signalled"
            case (.posixShared, _):
                "no server holds \(pidFile): process \(holder.pid) holds a shared lock on it; process \(named.pid) was not signalled"
            default: "no server holds \(pidFile) (it is stale): process \(named.pid) was not signalled"
            }
        #expect(output.status == 1)
        #expect(output.standardError == "error: \(reason)\n")
        #expect(named.isAlive(), "process \(named.pid) was killed: \(output.standardOutput)")
        #expect(holder.isAlive())
    }
}
