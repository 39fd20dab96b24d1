import ArgumentParser
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `netproxy reload`: asks a running `netproxy serve --pid-file FILE` to re-read its
/// configuration file (SIGHUP, as `kill -HUP`) and waits for the outcome.
struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a running `netproxy serve` re-read its configuration, and report the outcome.",
        discussion: """
            Sends SIGHUP to the server that holds the PID file and waits for the server to record \
            the outcome in FILE.reload. Exits 0 when the new configuration is in force, and 1 with \
            the server's error when it is not: an invalid configuration changes nothing, the one \
            in force keeps serving. The server also logs the outcome and counts it in \
            netproxy_reloads_total{result}.
            """
    )

    @Option(help: "The file `netproxy serve --pid-file` wrote.")
    var pidFile: String

    @Option(help: "How long to wait for the outcome, in seconds (a reload gives up after 30).")
    var timeout: Double = 40

    @Flag(help: "Only send the signal; do not wait for the outcome.")
    var noWait = false

    func validate() throws {
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be between 0 and 3600 seconds") }
    }

    func run() throws {
        let (pid, owner) = try PIDFile.runningServer(pidFile)
        // Taken before the signal: an outcome that started later is the answer to it.
        let sent = ReloadOutcome.now()
        guard kill(pid, SIGHUP) == 0 else {
            let reason = errno == ESRCH ? "no such process (a stale PID file?)" : String(cString: strerror(errno))
            throw CommandFailure("cannot signal process \(pid) from \(pidFile): \(reason)")
        }
        if noWait {
            print("sent SIGHUP to process \(pid)")
            return
        }
        let path = ReloadOutcome.path(forPIDFile: pidFile)
        let deadline = sent + UInt64(timeout * 1e9)
        while ReloadOutcome.now() < deadline {
            if let outcome = ReloadOutcome.load(from: path, owner: owner), outcome.started >= sent {
                if let error = outcome.error {
                    throw CommandFailure("process \(pid) did not reload; the configuration in force is unchanged: \(error)")
                }
                print("process \(pid) reloaded its configuration")
                return
            }
            if kill(pid, 0) != 0 && errno == ESRCH {
                throw CommandFailure("process \(pid) exited before it reloaded")
            }
            usleep(20_000)
        }
        throw CommandFailure("sent SIGHUP to process \(pid), but it recorded no outcome within \(Self.seconds(timeout)) s (see its log)")
    }

    private static func seconds(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}
