import Foundation
import TestSupport

/// Runs the built `netproxy` executable, which sits beside the test bundle.
enum CommandRunner {
    static var executable: URL {
        let bundle = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return bundle.deletingLastPathComponent().appendingPathComponent("netproxy")
    }

    /// Runs the command to its end; with `killAfter`, one still running after that many seconds is
    /// killed, so a command that hangs fails the test instead of stopping it.
    static func run(_ arguments: [String], input: Data = Data(), killAfter seconds: Double? = nil) async throws -> ChildProcess.Output {
        try await ChildProcess.run(executable.path, arguments, input: input, killAfter: seconds)
    }
}
