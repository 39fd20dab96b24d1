import Foundation
import TestSupport

/// `netproxy serve` in a child process, so a test can watch what only a whole process shows: its
/// descriptors, memory, CPU time, signals and exit status.
final class ServeProcess: @unchecked Sendable {
    let process: ChildProcess
    let banner: String
    let configFile: URL

    /// Starts `netproxy serve --config` with `json`, optionally under `ulimit -n`, and waits for
    /// its banner.
    init(config json: String, descriptorLimit: Int? = nil, extraArguments: [String] = []) throws {
        configFile = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-serve-\(UUID()).json")
        try Data(json.utf8).write(to: configFile)
        var command = [CommandRunner.executable.path, "serve", "--config", configFile.path] + extraArguments
        if let descriptorLimit {
            // `ulimit -n` sets the soft and hard limits, so the server cannot raise its own.
            command = ["/bin/sh", "-c", "ulimit -n \(descriptorLimit) && exec \"$@\"", "sh"] + command
        }
        // Standard error is read all along: a full pipe would block the server's logging.
        process = try ChildProcess(command[0], Array(command.dropFirst()), standardOutput: .pipe, standardError: .collected)
        // The banner is one write, shorter than PIPE_BUF, so it arrives whole.
        banner = process.readOutput(within: 60) { $0.hasSuffix("\n") }
    }

    /// The server, if still running, is killed with the last reference to its `ChildProcess`.
    deinit {
        try? FileManager.default.removeItem(at: configFile)
    }

    var pid: pid_t { process.pid }

    /// The port printed for the listener whose line starts with `label`.
    func port(_ label: String) -> Int? {
        for line in banner.split(separator: "\n") where line.trimmingCharacters(in: .whitespaces).hasPrefix(label) {
            if let port = line.split(separator: ":").last.flatMap({ Int($0) }) { return port }
        }
        return nil
    }

    /// Standard error so far.
    var standardError: String { process.collectedErrors }

    /// Open descriptors of the server.
    var descriptorCount: Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }

    /// What the server's descriptors point to, for failure messages.
    var descriptorTargets: [String] {
        let directory = "/proc/\(pid)/fd"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.sorted { Int($0) ?? 0 < Int($1) ?? 0 }.map { name in
            "\(name) -> \((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\(name)")) ?? "?")"
        }
    }

    /// The server's resident memory, in bytes.
    var residentBytes: Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1) * 1024
    }

    /// Waits up to `seconds` for `condition`; the last value it saw is returned either way.
    func wait<Value>(upTo seconds: Double, for value: () -> Value, until condition: (Value) -> Bool) async throws -> Value {
        let deadline = Date().addingTimeInterval(seconds)
        var current = value()
        while !condition(current) && Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
            current = value()
        }
        return current
    }

    func send(_ signal: Int32) {
        process.send(signal)
    }

    /// Waits for the process to end (killing it after `seconds`); its status, and all of standard
    /// error.
    func waitForExit(seconds: Double = 20) async throws -> (status: Int32, errors: String) {
        (try await process.waitForExit(within: seconds), standardError)
    }

    /// SIGINT, then the exit status and standard error.
    func stop() async throws -> (status: Int32, errors: String) {
        process.send(SIGINT)
        return try await waitForExit()
    }
}
