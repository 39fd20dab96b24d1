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

/// The file with the server's process ID, locked (`flock`) by the server for as long as it runs:
/// a file nobody holds is stale, and its number may by now belong to an unrelated process, which
/// SIGHUP would kill.
final class PIDFile {
    let path: String
    private let descriptor: CInt

    private init(path: String, descriptor: CInt) {
        self.path = path
        self.descriptor = descriptor
    }

    /// Takes the file (created if needed) for this process and writes its ID; fails if another
    /// running server holds it.
    static func create(_ path: String) throws(CommandFailure) -> PIDFile {
        // Not through a symbolic link: whoever can write the directory could aim it at any file.
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard descriptor >= 0 else { throw CommandFailure("cannot open the PID file \(path): \(String(cString: strerror(errno)))") }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let reason = errno == EWOULDBLOCK ? "another running server holds it" : String(cString: strerror(errno))
            close(descriptor)
            throw CommandFailure("cannot take the PID file \(path): \(reason)")
        }
        let text = Array("\(getpid())\n".utf8)
        guard ftruncate(descriptor, 0) == 0, text.withUnsafeBytes({ pwrite(descriptor, $0.baseAddress, $0.count, 0) }) == text.count else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw CommandFailure("cannot write the PID file \(path): \(reason)")
        }
        return PIDFile(path: path, descriptor: descriptor)
    }

    /// Removes the file, then lets it go (removing it first: a server starting meanwhile makes a
    /// new file rather than finding this one unlocked).
    func remove() {
        unlink(path)
        close(descriptor)
    }

    /// The process ID of the running server that holds `path`.
    static func runningServer(_ path: String) throws(CommandFailure) -> pid_t {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw CommandFailure("cannot read the PID file \(path): \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: 32)
        let count = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        var text = String(decoding: bytes.prefix(max(count, 0)), as: UTF8.self)
        if text.hasSuffix("\n") { text.removeLast() }
        guard let pid = pid_t(text), pid > 1, String(pid) == text else {
            throw CommandFailure("\(path) does not hold a process ID: \(String(reflecting: String(text.prefix(40))))")
        }
        // A server holds the lock for as long as it runs.
        if flock(descriptor, LOCK_SH | LOCK_NB) == 0 {
            throw CommandFailure("no server holds \(path) (it is stale): process \(pid) was not signalled")
        }
        return pid
    }
}
