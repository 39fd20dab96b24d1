import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `netproxy reload`: asks a running `netproxy serve --pid-file FILE` to re-read its
/// configuration file (the same as `kill -HUP`).
struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a running `netproxy serve` re-read its configuration (SIGHUP).",
        discussion: """
            The server logs the outcome and counts it in netproxy_reloads_total{result}. An invalid \
            configuration changes nothing: the one in force keeps serving.
            """
    )

    @Option(help: "The file `netproxy serve --pid-file` wrote.")
    var pidFile: String

    func run() throws {
        let pid = try PIDFile.runningServer(pidFile)
        guard kill(pid, SIGHUP) == 0 else {
            let reason = errno == ESRCH ? "no such process (a stale PID file?)" : String(cString: strerror(errno))
            throw CommandFailure("cannot signal process \(pid) from \(pidFile): \(reason)")
        }
        print("sent SIGHUP to process \(pid)")
    }
}
