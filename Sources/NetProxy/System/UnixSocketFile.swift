import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The file of a `proxy_unix_sockets` listener: checked before the bind, published after it.
///
/// ``prepare(_:key:)`` makes a private directory (mode 0700, ours) next to the configured path;
/// the host binds the socket in it; ``publish(temporary:as:settings:key:)`` gives the socket its
/// owner and mode there, where no other user can reach or replace it, renames it into place and
/// removes the directory. Clients therefore never see the socket with the wrong permissions,
/// whatever the umask; no change of owner or mode follows a link that another user put in the
/// way; and a stale socket left by an earlier run is replaced in one atomic step.
/// ``update(_:ifStill:settings:key:)`` changes a published socket through a descriptor that
/// refers to it, never through a link.
enum UnixSocketFile {
    /// The longest path SwiftNIO accepts for a UNIX domain socket, in bytes.
    static let maximumPathLength = 103

    /// The name of the socket in its private directory: short, to leave room for the directory's.
    static let socketName = "s"

    /// The device and inode of a socket file: what tells our socket from a newer one at the same path.
    struct FileIdentity: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64

        init(device: UInt64, inode: UInt64) {
            self.device = device
            self.inode = inode
        }

        init(_ status: stat) {
            self.init(device: UInt64(truncatingIfNeeded: status.st_dev), inode: UInt64(truncatingIfNeeded: status.st_ino))
        }
    }

    /// Where the host binds a socket before publishing it: a directory of this process's user, mode
    /// 0700, in the socket's directory (so the rename into place is atomic), held open.
    ///
    /// Every change goes through the open descriptor, so it reaches this directory even if another
    /// user who can write the socket's directory renames it and puts something else at its name.
    final class Temporary: Sendable {
        /// `<directory>/.<name>.<pid>.<number>`, the socket's name shortened as needed.
        let directory: String
        /// The directory, opened without following a link.
        fileprivate let descriptor: CInt

        /// The path to bind to: ``UnixSocketFile/socketName`` in ``directory``.
        var path: String { "\(directory)/\(UnixSocketFile.socketName)" }

        fileprivate init(directory: String, descriptor: CInt) {
            self.directory = directory
            self.descriptor = descriptor
        }

        deinit {
            close(descriptor)
        }
    }

    /// Numbers the temporary names of this process, so that no two calls share one.
    private static let counter = NIOLockedValueBox(0)

    /// For tests, by configured path: called with the path about to be changed, after the check
    /// that it is our socket and before its owner and mode change. There a test plays another user
    /// who swaps files in the socket's directory.
    static let beforeChange = NIOLockedValueBox<[String: @Sendable (String) -> Void]>([:])

    /// Checks `path` before the host binds, and makes the private directory to bind in.
    ///
    /// The path must be absolute, its directory must exist, and both it and the temporary path must
    /// fit SwiftNIO's limit. A socket already at `path` is accepted only if nobody listens on it (it
    /// is stale, and ``publish(temporary:as:settings:key:)`` replaces it); anything else there is an
    /// error and is left untouched.
    ///
    /// - Parameters:
    ///   - path: The configured socket path.
    ///   - key: The configuration key that starts every error message, such as `proxy_unix_sockets./run/x.sock`.
    /// - Returns: A new, empty directory unique to this process and call; the host binds at its
    ///   ``Temporary/path``, then calls ``publish(temporary:as:settings:key:)``, or
    ///   ``discard(_:)`` if the bind fails.
    static func prepare(_ path: String, key: String) throws(NetProxyConfigurationError) -> Temporary {
        try checkForm(path, key: key)
        let (directory, name) = split(path)
        try checkDirectory(directory, key: key)
        try checkExisting(path, key: key)

        // A file at the temporary name was left by a process that had our pid (an earlier run, or one
        // in another PID namespace sharing the directory): our kind of leftover, if nobody listens on
        // it, is removed, while anything else makes us take the next number.
        for _ in 0..<100 {
            let number = counter.withLockedValue { value in
                defer { value += 1 }
                return value
            }
            let temporary = try temporaryDirectory(directory: directory, name: name, pid: Int(getpid()), number: number, key: key)
            if let made = try makePrivateDirectory(temporary, key: key) { return made }
            if removeLeftover(temporary), let made = try makePrivateDirectory(temporary, key: key) { return made }
        }
        throw NetProxyConfigurationError(.file, "\(key): cannot find a free temporary name next to \(path)")
    }

    /// Gives the socket bound in `temporary` its owner, group and mode, renames it to `path`, and
    /// removes the private directory.
    ///
    /// The rename replaces a stale socket at `path` atomically. Before it, `path` is checked again,
    /// so a listener or another file that appeared there since ``prepare(_:key:)`` is not replaced.
    /// On failure the temporary socket and its directory are removed.
    ///
    /// - Parameters:
    ///   - temporary: What ``prepare(_:key:)`` returned, where the host has bound.
    ///   - path: The configured socket path.
    ///   - settings: The mode, and the owner and group as names or decimal numbers; `nil` keeps the current one.
    ///   - key: The configuration key that starts every error message.
    /// - Returns: The identity of the published socket, for ``remove(_:ifStill:)``.
    static func publish(
        temporary: Temporary, as path: String, settings: ProxyUnixSocket, key: String
    ) throws(NetProxyConfigurationError)
        -> FileIdentity
    {
        let identity: FileIdentity
        do {
            identity = try install(temporary: temporary, as: path, settings: settings, key: key)
        } catch {
            discard(temporary)
            throw error
        }
        removeDirectory(temporary)
        return identity
    }

    /// Removes the socket bound in `temporary`, if there is one, and the private directory: what a
    /// failed bind leaves.
    static func discard(_ temporary: Temporary) {
        unlinkat(temporary.descriptor, socketName, 0)
        removeDirectory(temporary)
    }

    /// Whether `path` is still the socket published with `identity`.
    static func isPublished(_ path: String, as identity: FileIdentity) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0 && isSocket(status) && FileIdentity(status) == identity
    }

    /// Unlinks `path` if it is still the socket published with `identity`.
    ///
    /// A host that stops must not delete the socket of a newer instance that has since replaced its
    /// own, so the file is compared first.
    ///
    /// - Returns: Whether the file was removed.
    @discardableResult
    static func remove(_ path: String, ifStill identity: FileIdentity) -> Bool {
        var status = stat()
        guard lstat(path, &status) == 0, isSocket(status), FileIdentity(status) == identity else { return false }
        return unlink(path) == 0
    }

    /// Gives a published socket new owner, group and mode (a reload that keeps its path), if
    /// `path` is still the socket published with `identity`.
    ///
    /// The socket's directory may be writable by others, who could put a link at `path` at any
    /// moment: the path is opened without following a link, the descriptor checked to be our
    /// socket, and the changes made through it. A symbolic link at `path` is an error.
    static func update(_ path: String, ifStill identity: FileIdentity, settings: ProxyUnixSocket, key: String) throws(NetProxyConfigurationError) {
        // No owner or group means the process's own, as for a socket bound anew.
        let user = try userID(settings.owner ?? String(getuid()), key: "\(key).owner")
        let group = try groupID(settings.group ?? String(getgid()), key: "\(key).group")
        #if os(Linux)
            let descriptor = open(path, openPathOnly | O_NOFOLLOW | O_CLOEXEC)
            guard descriptor >= 0 else {
                if errno == ENOENT { throw NetProxyConfigurationError(.file, "\(key): \(path) is no longer the socket this host made") }
                throw NetProxyConfigurationError(.file, "\(key): cannot open \(path): \(errorText(errno))")
            }
            defer { close(descriptor) }
            var status = stat()
            guard fstat(descriptor, &status) == 0 else {
                throw NetProxyConfigurationError(.file, "\(key): cannot examine \(path): \(errorText(errno))")
            }
            try checkPublished(path, status, identity: identity, key: key)
            beforeChange.withLockedValue { $0[path] }?(path)
            guard fchownat(descriptor, "", user, group, emptyPath) == 0 else {
                throw NetProxyConfigurationError(.file, "\(key): cannot change the owner of \(path): \(errorText(errno))")
            }
            try changeMode(descriptor, of: path, to: mode_t(settings.mode), key: key)
        #else
            // Elsewhere `AT_SYMLINK_NOFOLLOW` is honoured by the system call itself (`lchmod`).
            var status = stat()
            guard lstat(path, &status) == 0 else {
                if errno == ENOENT { throw NetProxyConfigurationError(.file, "\(key): \(path) is no longer the socket this host made") }
                throw NetProxyConfigurationError(.file, "\(key): cannot examine \(path): \(errorText(errno))")
            }
            try checkPublished(path, status, identity: identity, key: key)
            beforeChange.withLockedValue { $0[path] }?(path)
            guard lchown(path, user, group) == 0 else {
                throw NetProxyConfigurationError(.file, "\(key): cannot change the owner of \(path): \(errorText(errno))")
            }
            guard fchmodat(AT_FDCWD, path, mode_t(settings.mode), CInt(AT_SYMLINK_NOFOLLOW)) == 0 else {
                throw NetProxyConfigurationError(.file, "\(key): cannot change the mode of \(path): \(errorText(errno))")
            }
        #endif
    }

    // MARK: - Publishing

    /// Makes the private directory `path` (mode 0700) and opens it; `nil` if something is already there.
    private static func makePrivateDirectory(_ path: String, key: String) throws(NetProxyConfigurationError) -> Temporary? {
        // `mkdir` fails on anything at the name, a link included, so what it makes is new and ours.
        guard mkdir(path, 0o700) == 0 else {
            if errno == EEXIST { return nil }
            throw NetProxyConfigurationError(.file, "\(key): cannot create the directory \(path) to bind in: \(errorText(errno))")
        }
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else {
            let failure = errno
            rmdir(path)
            throw NetProxyConfigurationError(.file, "\(key): cannot open the directory \(path) it has just made: \(errorText(failure))")
        }
        let temporary = Temporary(directory: path, descriptor: descriptor)
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFDIR, status.st_uid == geteuid() else {
            // Another user renamed ours away and put a directory of theirs in its place.
            throw NetProxyConfigurationError(.file, "\(key): the directory \(path) was replaced as soon as it was made")
        }
        // The umask may have taken our own bits. A set-group-ID bit inherited from the socket's
        // directory stays, so the socket gets that directory's group, as if bound there.
        if status.st_mode & 0o777 != 0o700, fchmod(descriptor, status.st_mode & mode_t(S_ISGID) | 0o700) != 0 {
            let failure = errno
            removeDirectory(temporary)
            throw NetProxyConfigurationError(.file, "\(key): cannot change the mode of the directory \(path): \(errorText(failure))")
        }
        return temporary
    }

    /// Removes the private directory if its name still leads to it: in a directory others may
    /// write, they can rename it and put another at its name. `rmdir` never follows a link, and
    /// removes only an empty directory.
    private static func removeDirectory(_ temporary: Temporary) {
        var named = stat()
        var opened = stat()
        guard lstat(temporary.directory, &named) == 0, fstat(temporary.descriptor, &opened) == 0, FileIdentity(named) == FileIdentity(opened)
        else { return }
        rmdir(temporary.directory)
    }

    /// Removes what an earlier process with our pid left at a temporary name: a socket nobody
    /// listens on, or a directory of our user's holding at most such a socket. Never follows a link;
    /// anything else is left where it is.
    ///
    /// - Returns: Whether the name is free now.
    private static func removeLeftover(_ path: String) -> Bool {
        var status = stat()
        guard lstat(path, &status) == 0 else { return errno == ENOENT }
        // Where earlier versions bound, without a directory.
        if isSocket(status) {
            guard case .stale = listenerState(path) else { return false }
            return unlink(path) == 0 || errno == ENOENT
        }
        guard status.st_mode & S_IFMT == S_IFDIR, status.st_uid == geteuid() else { return false }
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var opened = stat()
        guard fstat(descriptor, &opened) == 0, FileIdentity(opened) == FileIdentity(status) else { return false }
        var socketStatus = stat()
        if fstatat(descriptor, socketName, &socketStatus, CInt(AT_SYMLINK_NOFOLLOW)) == 0 {
            guard isSocket(socketStatus), case .stale = listenerState("\(path)/\(socketName)"),
                unlinkat(descriptor, socketName, 0) == 0 || errno == ENOENT
            else { return false }
        } else if errno != ENOENT {
            return false
        }
        return rmdir(path) == 0 || errno == ENOENT
    }

    private static func install(
        temporary: Temporary, as path: String, settings: ProxyUnixSocket, key: String
    ) throws(NetProxyConfigurationError)
        -> FileIdentity
    {
        let user = try settings.owner.map { owner throws(NetProxyConfigurationError) in try userID(owner, key: "\(key).owner") }
        let group = try settings.group.map { group throws(NetProxyConfigurationError) in try groupID(group, key: "\(key).group") }
        var status = stat()
        guard fstatat(temporary.descriptor, socketName, &status, CInt(AT_SYMLINK_NOFOLLOW)) == 0 else {
            throw NetProxyConfigurationError(.file, "\(key): cannot examine the bound socket \(temporary.path): \(errorText(errno))")
        }
        guard isSocket(status) else { throw NetProxyConfigurationError(.file, "\(key): \(temporary.path) is not a socket") }
        let identity = FileIdentity(status)
        beforeChange.withLockedValue { $0[path] }?(temporary.path)
        // Only our user can put anything in the directory, so the name is still the socket just
        // examined, and following a link is not a concern.
        if user != nil || group != nil {
            guard fchownat(temporary.descriptor, socketName, user ?? uid_t.max, group ?? gid_t.max, CInt(AT_SYMLINK_NOFOLLOW)) == 0 else {
                throw NetProxyConfigurationError(.file, "\(key): cannot change the owner of \(temporary.path): \(errorText(errno))")
            }
        }
        guard fchmodat(temporary.descriptor, socketName, mode_t(settings.mode), 0) == 0 else {
            throw NetProxyConfigurationError(.file, "\(key): cannot change the mode of \(temporary.path): \(errorText(errno))")
        }

        try checkExisting(path, key: key)
        guard renameat(temporary.descriptor, socketName, AT_FDCWD, path) == 0 else {
            throw NetProxyConfigurationError(.file, "\(key): cannot rename \(temporary.path) to \(path): \(errorText(errno))")
        }
        return identity
    }

    /// Accepts `status` (of `path`) if it is the socket published with `identity`.
    private static func checkPublished(_ path: String, _ status: stat, identity: FileIdentity, key: String) throws(NetProxyConfigurationError) {
        if status.st_mode & S_IFMT == S_IFLNK {
            throw NetProxyConfigurationError(.file, "\(key): \(path) is a symbolic link, not the socket this host made; it is left as it is")
        }
        guard isSocket(status), FileIdentity(status) == identity else {
            throw NetProxyConfigurationError("\(key): \(path) is no longer the socket this host made")
        }
    }

    #if os(Linux)
        /// `O_PATH` and `AT_EMPTY_PATH`, which Glibc declares for Swift only with `_GNU_SOURCE`;
        /// these values hold on every architecture Swift runs on.
        private static let openPathOnly: CInt = 0o10_000_000
        private static let emptyPath: CInt = 0x1000

        /// Sets the mode of the file `descriptor` (opened with `O_PATH`) refers to; `fchmod` refuses
        /// such a descriptor. `fchmodat` with `AT_EMPTY_PATH` takes it where the kernel and C library
        /// can (Linux 6.6, glibc 2.39); elsewhere `/proc/self/fd/N` names that very file.
        private static func changeMode(_ descriptor: CInt, of path: String, to mode: mode_t, key: String) throws(NetProxyConfigurationError) {
            if fchmodat(descriptor, "", mode, emptyPath) == 0 { return }
            let direct = errno
            if chmod("/proc/self/fd/\(descriptor)", mode) == 0 { return }
            throw NetProxyConfigurationError(
                "\(key): cannot change the mode of \(path) without following a link: fchmodat with AT_EMPTY_PATH says \(errorText(direct)), and /proc/self/fd says \(errorText(errno))"
            )
        }
    #endif

    /// A user name, or else a decimal user id, as `chown` reads it.
    private static func userID(_ text: String, key: String) throws(NetProxyConfigurationError) -> uid_t {
        try accountID(text, kind: "user", key: key, lookUp(text, { getpwnam_r($0, $1, $2, $3, $4) }, id: { (entry: passwd) in entry.pw_uid }))
    }

    /// A group name, or else a decimal group id, as `chown` reads it.
    private static func groupID(_ text: String, key: String) throws(NetProxyConfigurationError) -> gid_t {
        try accountID(text, kind: "group", key: key, lookUp(text, { getgrnam_r($0, $1, $2, $3, $4) }, id: { (entry: group) in entry.gr_gid }))
    }

    /// The id a look-up found, or `text` as a decimal id when there is no such name.
    private static func accountID(_ text: String, kind: String, key: String, _ found: LookUp) throws(NetProxyConfigurationError) -> UInt32 {
        switch found {
        case .found(let id): return id
        case .failed(let code): throw NetProxyConfigurationError("\(key): cannot look up the \(kind) \"\(text)\": \(errorText(code))")
        case .missing:
            guard let id = decimalID(text) else { throw NetProxyConfigurationError("\(key): unknown \(kind) \"\(text)\"") }
            return id
        }
    }

    private enum LookUp {
        case found(UInt32)
        case missing
        case failed(CInt)
    }

    /// Calls a `get*nam_r` function, growing its buffer while it reports `ERANGE`.
    private static func lookUp<Entry>(
        _ name: String,
        _ call: (
            UnsafePointer<CChar>, UnsafeMutablePointer<Entry>, UnsafeMutablePointer<CChar>, Int, UnsafeMutablePointer<UnsafeMutablePointer<Entry>?>
        ) ->
            CInt,
        id: (Entry) -> UInt32
    ) -> LookUp {
        guard !name.isEmpty, !name.utf8.contains(0) else { return .missing }
        var size = 1024
        while true {
            let outcome: LookUp? = name.withCString { cName in
                let entry = UnsafeMutablePointer<Entry>.allocate(capacity: 1)
                let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
                defer {
                    entry.deallocate()
                    buffer.deallocate()
                }
                var result: UnsafeMutablePointer<Entry>?
                let code = call(cName, entry, buffer, size, &result)
                if code == ERANGE { return nil }
                if let result { return .found(id(result.pointee)) }
                // No entry: POSIX says 0, but some sources of names report ENOENT or ESRCH instead.
                return code == 0 || code == ENOENT || code == ESRCH ? .missing : .failed(code)
            }
            if let outcome { return outcome }
            guard size < 1 << 20 else { return .failed(ERANGE) }
            size *= 2
        }
    }

    /// A decimal id; `UInt32.max` is excluded, as `chown` reads it as "leave unchanged".
    private static func decimalID(_ text: String) -> UInt32? {
        guard !text.isEmpty, text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }), let id = UInt32(text), id != .max
        else { return nil }
        return id
    }

    /// Another process's listening socket bound at `path` or at one of its temporary paths: a host
    /// publishing the same path at the same moment (both found it free, and the last rename
    /// wins). Run after ``publish(temporary:as:settings:key:)``: of two hosts that overlap, at
    /// least one sees the other. (The kernel reports a socket by the path it was bound at, so a
    /// socket renamed into place still shows its temporary path.)
    static func competitor(for path: String) -> String? {
        let (directory, name) = split(path)
        return ForeignListeners.unixListenerPaths()?.first { other in
            guard other != path else { return true }
            // Abstract sockets (`@…`) have no directory.
            guard other.hasPrefix("/") else { return false }
            // "<directory>/.<name, maybe shortened>.<pid>.<number>/<socketName>", or without the
            // last component, where earlier versions bound.
            var (otherDirectory, otherName) = split(other)
            if otherName == socketName, otherDirectory.hasPrefix("/") {
                (otherDirectory, otherName) = split(otherDirectory)
            }
            let parts = otherName.split(separator: ".", omittingEmptySubsequences: false)
            guard otherDirectory == directory, otherName.hasPrefix("."), parts.count >= 4,
                parts.suffix(2).allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) })
            else { return false }
            let stem = parts.dropFirst().dropLast(2).joined(separator: ".")
            return name.hasPrefix(stem)
        }
    }

    // MARK: - Checking

    /// What can be checked of a listener's settings without touching the file system beyond the
    /// user and group databases: the path's form, and the owner and group. Run when a
    /// configuration is built, so a reload fails before it changes anything.
    static func check(_ path: String, settings: ProxyUnixSocket, key: String) throws(NetProxyConfigurationError) {
        try checkForm(path, key: key)
        _ = try settings.owner.map { owner throws(NetProxyConfigurationError) in try userID(owner, key: "\(key).owner") }
        _ = try settings.group.map { group throws(NetProxyConfigurationError) in try groupID(group, key: "\(key).group") }
    }

    /// An absolute path naming a file, short enough for SwiftNIO.
    private static func checkForm(_ path: String, key: String) throws(NetProxyConfigurationError) {
        guard !path.utf8.contains(0) else { throw NetProxyConfigurationError("\(key): the path contains a NUL byte") }
        guard path.hasPrefix("/") else { throw NetProxyConfigurationError("\(key): \"\(path)\" is not an absolute path; it must start with \"/\"") }
        let name = split(path).name
        guard !name.isEmpty, name != ".", name != ".." else {
            throw NetProxyConfigurationError("\(key): \"\(path)\" does not name a file in a directory")
        }
        let length = path.utf8.count
        guard length <= maximumPathLength else {
            throw NetProxyConfigurationError(
                "\(key): the path is \(length) bytes long; SwiftNIO allows at most \(maximumPathLength) bytes for a UNIX socket path")
        }
    }

    /// The directory (without a trailing slash, so empty for `/`) and the last component of an absolute path.
    private static func split(_ path: String) -> (directory: String, name: String) {
        let slash = path.lastIndex(of: "/")!
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }

    private static func checkDirectory(_ directory: String, key: String) throws(NetProxyConfigurationError) {
        let shown = directory.isEmpty ? "/" : directory
        var status = stat()
        guard stat(shown, &status) == 0 else {
            let failure = errno
            if failure == ENOENT { throw NetProxyConfigurationError(.file, "\(key): the directory \(shown) does not exist") }
            if failure == ENOTDIR { throw NetProxyConfigurationError(.file, "\(key): \(shown) is not a directory") }
            throw NetProxyConfigurationError(.file, "\(key): cannot examine the directory \(shown): \(errorText(failure))")
        }
        guard status.st_mode & S_IFMT == S_IFDIR else { throw NetProxyConfigurationError(.file, "\(key): \(shown) is not a directory") }
    }

    /// Accepts nothing at `path`, or a socket nobody listens on; anything else is an error.
    private static func checkExisting(_ path: String, key: String) throws(NetProxyConfigurationError) {
        var status = stat()
        guard lstat(path, &status) == 0 else {
            if errno == ENOENT { return }
            throw NetProxyConfigurationError(.file, "\(key): cannot examine \(path): \(errorText(errno))")
        }
        // Only sockets are ever replaced: another kind of file there is most likely a mistake in the
        // configuration, and removing it could destroy data.
        guard isSocket(status) else {
            throw NetProxyConfigurationError(.file, "\(key): \(path) exists and is \(kind(status)), not a socket; it is left as it is")
        }
        switch listenerState(path) {
        case .stale: return
        case .listening: throw NetProxyConfigurationError(.file, "\(key): \(path) is in use: another process listens on it")
        case .otherType:
            throw NetProxyConfigurationError(.file, "\(key): \(path) is a socket of another type than stream; it is left as it is")
        case .unknown(let failure):
            throw NetProxyConfigurationError(.file, "\(key): cannot tell whether another process listens on \(path): \(errorText(failure))")
        }
    }

    private static func kind(_ status: stat) -> String {
        switch status.st_mode & S_IFMT {
        case S_IFREG: "a regular file"
        case S_IFDIR: "a directory"
        case S_IFLNK: "a symbolic link"
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        default: "a file of unknown type"
        }
    }

    private enum ListenerState {
        case listening
        case stale
        case otherType
        case unknown(CInt)
    }

    /// Connects to the socket at `path` to learn whether a process listens there. The socket does not
    /// block, so a listener with a full backlog answers `EAGAIN` at once rather than stalling startup.
    private static func listenerState(_ path: String) -> ListenerState {
        #if canImport(Glibc)
            let descriptor = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        #elseif canImport(Musl)
            let descriptor = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
        #else
            let descriptor = socket(AF_UNIX, SOCK_STREAM, 0)
            if descriptor >= 0 {
                _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
                _ = fcntl(descriptor, F_SETFL, O_NONBLOCK)
            }
        #endif
        guard descriptor >= 0 else { return .unknown(errno) }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return .unknown(ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if result == 0 { return .listening }
        switch errno {
        case ECONNREFUSED: return .stale
        case EAGAIN, EINPROGRESS: return .listening
        case EPROTOTYPE: return .otherType
        case let failure: return .unknown(failure)
        }
    }

    /// `<directory>/.<name>.<pid>.<number>`, the private directory to bind in, the name shortened as
    /// needed for the socket in it to fit SwiftNIO's limit.
    private static func temporaryDirectory(
        directory: String, name: String, pid: Int, number: Int, key: String
    ) throws(NetProxyConfigurationError)
        -> String
    {
        let suffix = ".\(pid).\(number)"
        let room = maximumPathLength - directory.utf8.count - "/.".utf8.count - suffix.utf8.count - "/\(socketName)".utf8.count
        guard room >= 0 else {
            throw NetProxyConfigurationError(
                "\(key): the directory \(directory) leaves no room for a temporary socket name within SwiftNIO's limit of \(maximumPathLength) bytes")
        }
        var shortened = ""
        var used = 0
        for character in name {
            let size = character.utf8.count
            guard used + size <= room else { break }
            shortened.append(character)
            used += size
        }
        return "\(directory)/.\(shortened)\(suffix)"
    }

    private static func isSocket(_ status: stat) -> Bool {
        status.st_mode & S_IFMT == S_IFSOCK
    }

    private static func errorText(_ code: CInt) -> String {
        String(cString: strerror(code))
    }
}
