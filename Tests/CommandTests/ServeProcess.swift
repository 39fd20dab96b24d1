import Foundation
import NIOConcurrencyHelpers

/// `netproxy serve` in a child process, so a test can watch what only a whole process shows: its
/// descriptors, memory, CPU time, signals and exit status.
final class ServeProcess: @unchecked Sendable {
    let process = Process()
    private let output = Pipe()
    private let errors = Pipe()
    private let collected = NIOLockedValueBox(Data())
    private let errorsFinished = DispatchSemaphore(value: 0)
    private(set) var banner = ""
    let configFile: URL

    /// Starts `netproxy serve --config` with `json`, optionally under `ulimit -n`, and waits for
    /// its banner.
    init(config json: String, descriptorLimit: Int? = nil, extraArguments: [String] = []) throws {
        configFile = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-serve-\(UUID()).json")
        try Data(json.utf8).write(to: configFile)
        let command = [CommandRunner.executable.path, "serve", "--config", configFile.path] + extraArguments
        if let descriptorLimit {
            // `ulimit -n` sets the soft and hard limits, so the server cannot raise its own.
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "ulimit -n \(descriptorLimit) && exec \"$@\"", "sh"] + command
        } else {
            process.executableURL = CommandRunner.executable
            process.arguments = Array(command.dropFirst())
        }
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Read standard error all along: a full pipe would block the server's logging.
        Thread.detachNewThread { [errors, collected, errorsFinished] in
            while true {
                let data = errors.fileHandleForReading.availableData
                if data.isEmpty { break }
                collected.withLockedValue { $0.append(data) }
            }
            errorsFinished.signal()
        }
        // The banner is one write, shorter than PIPE_BUF, so it arrives whole.
        while !banner.hasSuffix("\n") {
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { break }
            banner += String(decoding: data, as: UTF8.self)
        }
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: configFile)
    }

    var pid: pid_t { process.processIdentifier }

    /// The port printed for the listener whose line starts with `label`.
    func port(_ label: String) -> Int? {
        for line in banner.split(separator: "\n") where line.trimmingCharacters(in: .whitespaces).hasPrefix(label) {
            if let port = line.split(separator: ":").last.flatMap({ Int($0) }) { return port }
        }
        return nil
    }

    /// Standard error so far.
    var standardError: String { String(decoding: collected.withLockedValue { $0 }, as: UTF8.self) }

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
        kill(pid, signal)
    }

    /// Waits for the process to end (killing it after `seconds`); its status, and all of standard
    /// error.
    func waitForExit(seconds: Double = 20) async throws -> (status: Int32, errors: String) {
        _ = try await wait(upTo: seconds, for: { process.isRunning }, until: { !$0 })
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
        errorsFinished.wait()
        return (process.terminationStatus, standardError)
    }

    /// SIGINT, then the exit status and standard error.
    func stop() async throws -> (status: Int32, errors: String) {
        process.interrupt()
        return try await waitForExit()
    }
}
