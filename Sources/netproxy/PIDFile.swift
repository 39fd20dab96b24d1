#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The file with the server's process ID, which `netproxy reload` signals.
///
/// The server holds a POSIX record lock (`fcntl`, `F_WRLCK`, the whole file) on it for as long as
/// it runs. The kernel names the owner of such a lock, so `reload` signals only the process that
/// holds it, that the file names, and that runs this program: a stale file's number may by now
/// belong to any process, and so may a number written into a file someone else locked, and SIGHUP
/// kills most processes.
///
/// A record lock ends when its process closes any descriptor of the file: the server opens the
/// file once and never again.
final class PIDFile {
    let path: String
    private let descriptor: CInt

    /// The most a PID file holds: the largest `pid_t` and a newline.
    static let longestContent = 11

    private init(path: String, descriptor: CInt) {
        self.path = path
        self.descriptor = descriptor
    }

    /// Takes the file (created if needed) for this process and writes its ID; fails if another
    /// running server holds it or if it is not a regular file.
    static func create(_ path: String) throws(CommandFailure) -> PIDFile {
        // An exiting server unlinks its file while holding the lock: a server that locked that file
        // just before holds a file no longer at `path`, and starts again with the new one.
        for _ in 0..<10 {
            let (descriptor, _) = try openRegularFile(path, flags: O_RDWR | O_CREAT, action: "open")
            var lock = wholeFile(F_WRLCK)
            guard fcntl(descriptor, F_SETLK, &lock) == 0 else {
                let reason = errno == EAGAIN || errno == EACCES ? "another running server holds it" : String(cString: strerror(errno))
                close(descriptor)
                throw CommandFailure("cannot take the PID file \(path): \(reason)")
            }
            guard names(path, descriptor) else {
                close(descriptor)
                continue
            }
            let text = Array("\(getpid())\n".utf8)
            guard ftruncate(descriptor, 0) == 0, text.withUnsafeBytes({ pwrite(descriptor, $0.baseAddress, $0.count, 0) }) == text.count else {
                let reason = String(cString: strerror(errno))
                close(descriptor)
                throw CommandFailure("cannot write the PID file \(path): \(reason)")
            }
            return PIDFile(path: path, descriptor: descriptor)
        }
        throw CommandFailure("cannot take the PID file \(path): it was replaced every time it was locked")
    }

    /// Removes the file, and `companion` first, if the file is still this server's, then lets it go.
    ///
    /// Someone may have removed the file while the server ran, and another server made a new one
    /// at the same path: that one, and its companion, are left alone. The lock is held until the
    /// file is gone, so a server starting meanwhile either finds it held or finds its file
    /// unlinked and makes a new one.
    func remove(companion: String? = nil) {
        defer { close(descriptor) }
        guard Self.names(path, descriptor), Self.content(descriptor) == Array("\(getpid())\n".utf8) else { return }
        if let companion { unlink(companion) }
        unlink(path)
    }

    /// The process ID of the running server that holds `path`: the process that holds the lock,
    /// that the file names, and that runs this program, with the file's owner, read from the
    /// file opened (not through its name again, which may have changed since). Anything else is
    /// refused, saying why.
    static func runningServer(_ path: String) throws(CommandFailure) -> (pid: pid_t, owner: uid_t) {
        let (descriptor, status) = try openRegularFile(path, flags: O_RDONLY, action: "read")
        defer { close(descriptor) }
        guard let bytes = content(descriptor) else { throw CommandFailure("cannot read the PID file \(path): \(String(cString: strerror(errno)))") }
        guard status.st_size <= longestContent, bytes.count <= longestContent else {
            throw CommandFailure("\(path) does not hold a process ID: it is longer than \(longestContent) bytes")
        }
        var text = String(decoding: bytes, as: UTF8.self)
        if text.hasSuffix("\n") { text.removeLast() }
        guard let pid = pid_t(text), pid > 1, String(pid) == text else {
            throw CommandFailure("\(path) does not hold a process ID: \(String(reflecting: text))")
        }
        // A server holds an exclusive lock, so the lock this query conflicts with is the server's.
        var lock = wholeFile(F_WRLCK)
        guard fcntl(descriptor, F_GETLK, &lock) == 0 else {
            throw CommandFailure("cannot see who holds the lock on \(path): \(String(cString: strerror(errno))); process \(pid) was not signalled")
        }
        let holder = lock.l_pid > 0 ? "process \(lock.l_pid)" : "a process without an ID here"
        switch CInt(lock.l_type) {
        case F_UNLCK:
            throw CommandFailure("no server holds \(path) (it is stale): process \(pid) was not signalled")
        case F_WRLCK where lock.l_pid == pid:
            break
        case F_WRLCK:
            throw CommandFailure(
                "the lock on \(path) is held by \(holder), not by process \(pid), which the file names: process \(pid) was not signalled")
        default:
            throw CommandFailure("no server holds \(path): \(holder) holds a shared lock on it; process \(pid) was not signalled")
        }
        let program: String
        let ours: String
        do throws(CommandFailure) {
            program = try programPath(of: "\(pid)")
            ours = try programPath(of: "self")
        } catch {
            throw CommandFailure("cannot tell which program process \(pid) runs (\(error)): it was not signalled")
        }
        guard baseName(program) == baseName(ours) else {
            throw CommandFailure("process \(pid), which \(path) names, is not \(baseName(ours)) (it runs \(program)): it was not signalled")
        }
        return (pid, status.st_uid)
    }

    /// Opens `path` if it is a regular file (or, with `O_CREAT`, is not there yet): never through
    /// a symbolic link, and never waiting (a FIFO blocks `open` until someone writes to it).
    /// Returns the descriptor and what `fstat` says of it.
    private static func openRegularFile(_ path: String, flags: CInt, action: String) throws(CommandFailure) -> (CInt, stat) {
        func failure(_ reason: String) -> CommandFailure { CommandFailure("cannot \(action) the PID file \(path): \(reason)") }
        func notRegular(_ mode: mode_t) -> CommandFailure? { kind(mode).map { failure("it is \($0), not a regular file") } }
        // Looked at before opening: a device is not even opened.
        var named = stat()
        if lstat(path, &named) == 0, let refusal = notRegular(named.st_mode) { throw refusal }
        let descriptor = open(path, flags | O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            // Replaced since it was looked at: say by what.
            if lstat(path, &named) == 0, let refusal = notRegular(named.st_mode) { throw refusal }
            throw failure(reason)
        }
        var opened = stat()
        guard fstat(descriptor, &opened) == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw failure(reason)
        }
        if let refusal = notRegular(opened.st_mode) {
            close(descriptor)
            throw refusal
        }
        return (descriptor, opened)
    }

    /// What a file of `mode` is, if not a regular file: "a FIFO", "a directory", ...
    private static func kind(_ mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: nil
        case S_IFDIR: "a directory"
        case S_IFLNK: "a symbolic link"
        case S_IFIFO: "a FIFO"
        case S_IFSOCK: "a socket"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        default: "of an unknown type"
        }
    }

    /// A lock request or query of `type` over the whole file, however long it grows.
    private static func wholeFile(_ type: CInt) -> flock {
        var lock = flock()
        lock.l_type = Int16(type)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = 0
        lock.l_len = 0
        return lock
    }

    /// Whether `path` still names the file open as `descriptor` (not a file made since at that path).
    private static func names(_ path: String, _ descriptor: CInt) -> Bool {
        var named = stat()
        var opened = stat()
        return lstat(path, &named) == 0 && fstat(descriptor, &opened) == 0 && named.st_dev == opened.st_dev && named.st_ino == opened.st_ino
    }

    /// Up to one byte more than a PID file holds, from its start; `nil` if it cannot be read.
    private static func content(_ descriptor: CInt) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: longestContent + 1)
        var count: Int
        repeat {
            count = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
        } while count < 0 && errno == EINTR
        return count < 0 ? nil : Array(bytes.prefix(count))
    }

    /// The program `/proc/<process>/exe` names, without the " (deleted)" the kernel adds once the
    /// file is replaced: a server still running after an upgrade is still this program.
    private static func programPath(of process: String) throws(CommandFailure) -> String {
        let link = "/proc/\(process)/exe"
        var bytes = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = bytes.withUnsafeMutableBufferPointer { readlink(link, $0.baseAddress!, $0.count - 1) }
        guard count >= 0 else { throw CommandFailure("\(link): \(String(cString: strerror(errno)))") }
        var path = String(decoding: bytes.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }
        return path
    }

    private static func baseName(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }
}
