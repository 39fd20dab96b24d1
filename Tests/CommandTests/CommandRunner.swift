import Foundation

/// Runs the built `netproxy` executable, which sits beside the test bundle.
struct CommandRunner {
    struct Output {
        var status: Int32
        var standardOutputBytes: Data
        var standardError: String
        var standardOutput: String { String(decoding: standardOutputBytes, as: UTF8.self) }
    }

    static var executable: URL {
        let bundle = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return bundle.deletingLastPathComponent().appendingPathComponent("netproxy")
    }

    /// Runs the command to its end; with `killAfter`, one still running after that many seconds is
    /// killed, so a command that hangs fails the test instead of stopping it.
    static func run(_ arguments: [String], input: Data = Data(), killAfter seconds: Double? = nil) throws -> Output {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        let watchdog = DispatchWorkItem { [process] in
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        if let seconds { DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: watchdog) }
        defer { watchdog.cancel() }
        // Write and read concurrently, so a large input cannot deadlock against a full output pipe.
        let writer = Thread {
            stdin.fileHandleForWriting.write(input)
            try? stdin.fileHandleForWriting.close()
        }
        writer.start()
        let errBox = ErrorCollector(stderr.fileHandleForReading)
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = errBox.wait()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus,
            standardOutputBytes: out,
            standardError: String(decoding: err, as: UTF8.self)
        )
    }
}

/// Reads a pipe to its end on a thread of its own.
final class ErrorCollector: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var data = Data()

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }

    func wait() -> Data {
        done.wait()
        return data
    }
}
