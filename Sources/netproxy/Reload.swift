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
        let pid = try PIDFile.read(pidFile)
        guard kill(pid, SIGHUP) == 0 else {
            let reason = errno == ESRCH ? "no such process (a stale PID file?)" : String(cString: strerror(errno))
            throw CommandFailure("cannot signal process \(pid) from \(pidFile): \(reason)")
        }
        print("sent SIGHUP to process \(pid)")
    }
}

/// The file with the server's process ID.
struct PIDFile {
    let path: String

    /// Writes this process's ID to `path`, replacing what was there.
    static func create(_ path: String) throws(CommandFailure) -> PIDFile {
        do {
            try Data("\(getpid())\n".utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw CommandFailure("cannot write the PID file \(path): \(error.localizedDescription)")
        }
        return PIDFile(path: path)
    }

    /// Removes the file, if it still names this process (a newer server may have replaced it).
    func remove() {
        if (try? Self.read(path)) == getpid() { unlink(path) }
    }

    /// The process ID in `path`: one positive decimal number, optionally followed by a newline.
    static func read(_ path: String) throws(CommandFailure) -> pid_t {
        guard let data = FileManager.default.contents(atPath: path) else { throw CommandFailure("cannot read the PID file \(path)") }
        var text = String(decoding: data, as: UTF8.self)
        if text.hasSuffix("\n") { text.removeLast() }
        guard let pid = pid_t(text), pid > 1, String(pid) == text else {
            throw CommandFailure("\(path) does not hold a process ID: \(String(reflecting: String(text.prefix(40))))")
        }
        return pid
    }
}
