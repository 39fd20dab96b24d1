import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A program the tests start: one run to its end (``run(_:_:input:standardError:killAfter:)``),
/// or one that runs beside a test until it is stopped.
///
/// Every test target starts processes (`netproxy` itself, HAProxy, nginx, curl, openssl, python),
/// and each such child needs the same care: it is started with Foundation's `Process` (a
/// `posix_spawn` of our own once passed the test process's descriptors without close-on-exec
/// to the child), its pipes are read while it runs so that a full pipe cannot stall it, and it
/// is stopped with SIGKILL and reaped, since children of the test process inherit a signal mask
/// that blocks SIGTERM. Here is the one place that does it.
public final class ChildProcess: @unchecked Sendable {
    /// What became of a program run to its end.
    public struct Output: Sendable {
        public var status: Int32
        public var standardOutputBytes: Data
        /// Empty when standard error was merged into standard output or inherited.
        public var standardError: String
        public var standardOutput: String { String(decoding: standardOutputBytes, as: UTF8.self) }
    }

    /// Where standard error goes for a program run to its end.
    public enum ErrorDestination: Sendable {
        /// Kept apart, in ``Output/standardError``.
        case captured
        /// Into standard output, in the order written.
        case mergedIntoOutput
        /// This process's standard error.
        case inherited
    }

    /// Runs `executable` to its end, with `input` as its standard input, and returns its exit
    /// status and output. With `killAfter`, a program still running after that many seconds is
    /// killed, so that one that hangs fails the test instead of stopping it.
    ///
    /// It waits on a thread of its own: a test waiting for a child must not hold one of the few
    /// threads that run every test's async code (two on a two-core machine), which would delay
    /// unrelated tests by as long as the child runs.
    public static func run(
        _ executable: String, _ arguments: [String], input: Data = Data(), standardError: ErrorDestination = .captured,
        killAfter seconds: Double? = nil
    ) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    with: Result {
                        try runBlocking(executable, arguments, input: input, standardError: standardError, killAfter: seconds)
                    })
            }
        }
    }

    /// ``run(_:_:input:standardError:killAfter:)`` on the calling thread, for the one place with
    /// no async context: a condition a suite's traits read once.
    public static func runBlocking(
        _ executable: String, _ arguments: [String], input: Data = Data(), standardError: ErrorDestination = .captured,
        killAfter seconds: Double? = nil
    ) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        switch standardError {
        case .captured: process.standardError = stderr
        case .mergedIntoOutput: process.standardError = stdout
        case .inherited: break
        }
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
        let errors = standardError == .captured ? PipeReader(stderr.fileHandleForReading) : nil
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = errors?.wait() ?? Data()
        process.waitUntilExit()
        return Output(status: process.terminationStatus, standardOutputBytes: out, standardError: String(decoding: err, as: UTF8.self))
    }

    /// Where standard input comes from for a program that runs beside the test.
    public enum Input {
        /// This process's standard input.
        case inherited
        /// An open descriptor, such as a ``ListeningSocket`` for HAProxy's `bind fd@0`.
        case descriptor(CInt)
        /// A pipe that stays open, and empty, until the child is stopped.
        case pipe
    }

    /// Where standard output goes for a program that runs beside the test.
    public enum OutputDestination {
        case inherited
        case discarded
        /// A pipe the test reads, with ``readLine(within:)`` or ``readOutput(within:until:)``.
        case pipe
        /// A file, created empty.
        case file(URL)
    }

    /// Where standard error goes for a program that runs beside the test.
    public enum ErrorsDestination {
        case inherited
        /// Where standard output goes.
        case sameAsOutput
        /// Read all along (a full pipe would block the child), kept in ``collectedErrors``.
        case collected
    }

    private let process = Process()
    private let input: Pipe?
    private let output: Pipe?
    private let collected = NIOLockedValueBox(Data())
    private let errorsFinished: DispatchSemaphore?

    /// Starts `executable`, which runs until it ends or ``stop(signal:)``; one still running when
    /// the last reference goes is killed.
    ///
    /// - Parameter environment: Variables added to this process's environment.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], standardInput: Input = .inherited,
        standardOutput: OutputDestination = .inherited, standardError: ErrorsDestination = .inherited
    ) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        switch standardInput {
        case .inherited: input = nil
        case .descriptor(let descriptor):
            input = nil
            process.standardInput = FileHandle(fileDescriptor: descriptor, closeOnDealloc: false)
        case .pipe:
            let pipe = Pipe()
            input = pipe
            process.standardInput = pipe
        }
        var outputTarget: Any?
        switch standardOutput {
        case .inherited: output = nil
        case .discarded:
            output = nil
            outputTarget = FileHandle.nullDevice
        case .pipe:
            let pipe = Pipe()
            output = pipe
            outputTarget = pipe
        case .file(let url):
            output = nil
            _ = FileManager.default.createFile(atPath: url.path, contents: nil)
            outputTarget = try FileHandle(forWritingTo: url)
        }
        if let outputTarget { process.standardOutput = outputTarget }
        var errors: Pipe?
        switch standardError {
        case .inherited: errorsFinished = nil
        case .sameAsOutput:
            errorsFinished = nil
            if let outputTarget { process.standardError = outputTarget }
        case .collected:
            let pipe = Pipe()
            errors = pipe
            errorsFinished = DispatchSemaphore(value: 0)
            process.standardError = pipe
        }
        try process.run()
        if let errors, let errorsFinished {
            Thread.detachNewThread { [collected] in
                while true {
                    let data = errors.fileHandleForReading.availableData
                    if data.isEmpty { break }
                    collected.withLockedValue { $0.append(data) }
                }
                errorsFinished.signal()
            }
        }
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    public var pid: pid_t { process.processIdentifier }

    public var isRunning: Bool { process.isRunning }

    /// The exit status, once the child has ended.
    public var terminationStatus: Int32 { process.terminationStatus }

    /// Standard error so far, for ``ErrorsDestination/collected``.
    public var collectedErrors: String { String(decoding: collected.withLockedValue { $0 }, as: UTF8.self) }

    /// Sends `signal` to the child.
    public func send(_ signal: CInt) {
        kill(pid, signal)
    }

    /// Stops the child with `signal` (SIGKILL unless told otherwise) if it still runs, and waits
    /// for it to end. A daemon with worker processes needs a signal it relays instead (nginx's
    /// master process unblocks SIGTERM and stops its workers), or the workers outlive it.
    public func stop(signal: CInt = SIGKILL) {
        if process.isRunning { kill(pid, signal) }
        process.waitUntilExit()
    }

    /// Waits up to `seconds` for the child to end and kills it if it has not; returns its exit
    /// status once all of its standard error has been collected.
    public func waitForExit(within seconds: Double) async throws -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
        errorsFinished?.wait()
        return process.terminationStatus
    }

    /// The next line of standard output, without its newline: what came before the end of the
    /// output or the deadline if no whole line did. Reads a byte at a time, so what follows the
    /// line stays in the pipe.
    public func readLine(within seconds: Double) -> String {
        let deadline = Date().addingTimeInterval(seconds)
        var line: [UInt8] = []
        while let byte = read(upTo: 1, before: deadline).first, byte != UInt8(ascii: "\n") {
            line.append(byte)
        }
        return String(decoding: line, as: UTF8.self)
    }

    /// Standard output read as it comes until `complete` holds for all of it so far, the output
    /// ends, or `seconds` pass.
    public func readOutput(within seconds: Double, until complete: (String) -> Bool) -> String {
        let deadline = Date().addingTimeInterval(seconds)
        var text = ""
        while !complete(text) {
            let chunk = read(upTo: 65536, before: deadline)
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        return text
    }

    /// Up to `count` bytes of standard output, as soon as there are any; none at its end or
    /// once the deadline has passed.
    private func read(upTo count: Int, before deadline: Date) -> [UInt8] {
        guard let descriptor = output?.fileHandleForReading.fileDescriptor else { return [] }
        while deadline.timeIntervalSinceNow > 0 {
            var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, Int32(deadline.timeIntervalSinceNow * 1000) + 1) > 0 else { continue }
            var bytes = [UInt8](repeating: 0, count: count)
            let received = bytes.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, count) }
            return received > 0 ? Array(bytes[..<received]) : []
        }
        return []
    }
}

/// Reads a pipe to its end on a thread of its own.
final class PipeReader: @unchecked Sendable {
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
