#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The outcome of the server's last reload, which `serve --pid-file FILE` keeps in `FILE.reload`
/// for `netproxy reload` to wait on.
///
/// A file beside the PID file needs no new port or socket, and the directory that holds the PID
/// file (systemd's `RuntimeDirectory`) is already the server's. The first line is the reload's
/// start (nanoseconds of `CLOCK_BOOTTIME`, one clock for every process and never set back) and
/// `ok` or `failed`; a failure's message follows. `reload` takes the time before it signals and
/// waits for an outcome that started later: one that was in progress when the signal came read
/// the file too early to count.
struct ReloadOutcome: Equatable {
    /// When the reload started, on ``now()``'s clock.
    var started: UInt64
    /// The error that failed the reload; `nil` when the new configuration is in force.
    var error: String?

    /// The most the file holds: an error message long enough for any entry's path.
    static let sizeLimit = 64 * 1024

    /// The file beside `pidFile`.
    static func path(forPIDFile pidFile: String) -> String { pidFile + ".reload" }

    /// Now, on the clock outcomes are stamped with.
    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_BOOTTIME, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    /// The file's text.
    var text: String {
        guard let error else { return "\(started) ok\n" }
        return "\(started) failed\n\(error)\n"
    }

    /// The outcome `text` holds, or `nil` if it is not one.
    init?(text: String) {
        let lines = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        let head = lines[0].split(separator: " ")
        guard head.count == 2, let started = UInt64(head[0]) else { return nil }
        switch head[1] {
        case "ok" where lines.count == 1 || lines[1].isEmpty:
            self.init(started: started, error: nil)
        case "failed" where lines.count == 2 && !lines[1].isEmpty:
            var message = String(lines[1])
            if message.hasSuffix("\n") { message.removeLast() }
            self.init(started: started, error: message)
        default:
            return nil
        }
    }

    init(started: UInt64, error: String?) {
        self.started = started
        // Kept well within what a reader takes.
        self.error = error.map { String(decoding: Array($0.utf8.prefix(Self.sizeLimit / 2)), as: UTF8.self) }
    }

    /// Replaces the file at `path` with this outcome, whole: the text goes to a new file made
    /// beside it (never through a link someone left there), which is then renamed over it, so a
    /// reader sees the old outcome or the new one. Returns the reason it could not, if it could not.
    func save(to path: String) -> String? {
        let temporary = "\(path).\(getpid()).new"
        unlink(temporary)
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return "\(temporary): \(String(cString: strerror(errno)))" }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        let writeError = errno
        close(descriptor)
        guard written == bytes.count else {
            unlink(temporary)
            return "\(temporary): \(written < 0 ? String(cString: strerror(writeError)) : "short write")"
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            return "\(path): \(reason)"
        }
        return nil
    }

    /// The outcome in the file at `path` if it is a regular file owned by `owner` (the server's
    /// user, who owns the PID file): nobody else's word counts. `nil` if there is none yet.
    static func load(from path: String, owner: uid_t) -> ReloadOutcome? {
        let descriptor = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG, status.st_uid == owner,
            status.st_size <= sizeLimit
        else { return nil }
        var bytes = [UInt8](repeating: 0, count: sizeLimit + 1)
        let count = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        guard count > 0, count <= sizeLimit else { return nil }
        return ReloadOutcome(text: String(decoding: bytes.prefix(count), as: UTF8.self))
    }
}
