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
/// The host binds to a temporary name in the socket's directory, and only then gives the socket
/// its owner and mode and renames it into place. Clients therefore never see the socket with the
/// wrong permissions, and a stale socket left by an earlier run is replaced in one atomic step.
enum UnixSocketFile {
    /// The longest path SwiftNIO accepts for a UNIX domain socket, in bytes.
    static let maximumPathLength = 103

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

    /// Numbers the temporary names of this process, so that no two calls share one.
    private static let counter = NIOLockedValueBox(0)

    /// Checks `path` before the host binds, and returns the temporary path to bind to instead.
    ///
    /// The path must be absolute, its directory must exist, and both it and the temporary path must
    /// fit SwiftNIO's limit. A socket already at `path` is accepted only if nobody listens on it (it
    /// is stale, and ``publish(temporary:as:settings:key:)`` replaces it); anything else there is an
    /// error and is left untouched.
    ///
    /// - Parameters:
    ///   - path: The configured socket path.
    ///   - key: The configuration key that starts every error message, such as `proxy_unix_sockets./run/x.sock`.
    /// - Returns: A path in the same directory, unique to this process and call, where nothing is.
    static func prepare(_ path: String, key: String) throws(NetProxyConfigurationError) -> String {
        try checkForm(path, key: key)
        let (directory, name) = split(path)
        try checkDirectory(directory, key: key)
        try checkExisting(path, key: key)

        // A file at the temporary name was left by a process that had our pid (an earlier run, or one
        // in another PID namespace sharing the directory): a stale socket there is removed, while a
        // live one or any other file makes us take the next number.
        for _ in 0..<100 {
            let number = counter.withLockedValue { value in
                defer { value += 1 }
                return value
            }
            let temporary = try temporaryPath(directory: directory, name: name, pid: Int(getpid()), number: number, key: key)
            var status = stat()
            if lstat(temporary, &status) != 0 {
                if errno == ENOENT { return temporary }
                throw NetProxyConfigurationError("\(key): cannot examine \(temporary): \(errorText(errno))")
            }
            guard isSocket(status), case .stale = listenerState(temporary) else { continue }
            if unlink(temporary) == 0 || errno == ENOENT { return temporary }
            throw NetProxyConfigurationError("\(key): cannot remove the leftover socket \(temporary): \(errorText(errno))")
        }
        throw NetProxyConfigurationError("\(key): cannot find a free temporary name next to \(path)")
    }

    /// Gives the socket bound at `temporary` its owner, group and mode, then renames it to `path`.
    ///
    /// The rename replaces a stale socket at `path` atomically. Before it, `path` is checked again,
    /// so a listener or another file that appeared there since ``prepare(_:key:)`` is not replaced.
    /// On failure the temporary socket is unlinked.
    ///
    /// - Parameters:
    ///   - temporary: The path returned by ``prepare(_:key:)``, where the host has bound.
    ///   - path: The configured socket path.
    ///   - settings: The mode, and the owner and group as names or decimal numbers; `nil` keeps the current one.
    ///   - key: The configuration key that starts every error message.
    /// - Returns: The identity of the published socket, for ``remove(_:ifStill:)``.
    static func publish(
        temporary: String, as path: String, settings: ProxyUnixSocket, key: String
    ) throws(NetProxyConfigurationError)
        -> FileIdentity
    {
        do {
            return try install(temporary: temporary, as: path, settings: settings, key: key)
        } catch {
            unlink(temporary)
            throw error
        }
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
    static func update(_ path: String, ifStill identity: FileIdentity, settings: ProxyUnixSocket, key: String) throws(NetProxyConfigurationError) {
        var status = stat()
        guard lstat(path, &status) == 0, isSocket(status), FileIdentity(status) == identity else {
            throw NetProxyConfigurationError("\(key): \(path) is no longer the socket this host made")
        }
        // No owner or group means the process's own, as for a socket bound anew.
        var settings = settings
        settings.owner = settings.owner ?? String(getuid())
        settings.group = settings.group ?? String(getgid())
        try setOwnerAndMode(path, settings: settings, key: key)
    }

    // MARK: - Publishing

    /// Sets the owner and group (where given) and the mode of the socket at `path`.
    private static func setOwnerAndMode(_ path: String, settings: ProxyUnixSocket, key: String) throws(NetProxyConfigurationError) {
        let user = try settings.owner.map { owner throws(NetProxyConfigurationError) in try userID(owner, key: "\(key).owner") }
        let group = try settings.group.map { group throws(NetProxyConfigurationError) in try groupID(group, key: "\(key).group") }
        var status = stat()
        guard lstat(path, &status) == 0 else {
            throw NetProxyConfigurationError("\(key): cannot examine the bound socket \(path): \(errorText(errno))")
        }
        guard isSocket(status) else { throw NetProxyConfigurationError("\(key): \(path) is no longer a socket") }
        if user != nil || group != nil {
            guard lchown(path, user ?? uid_t.max, group ?? gid_t.max) == 0 else {
                throw NetProxyConfigurationError("\(key): cannot change the owner of \(path): \(errorText(errno))")
            }
        }
        try changeMode(path, to: mode_t(settings.mode), key: key)
    }

    private static func install(
        temporary: String, as path: String, settings: ProxyUnixSocket, key: String
    ) throws(NetProxyConfigurationError)
        -> FileIdentity
    {
        // Until the rename, the temporary name is ours alone; checking that it is still a socket keeps
        // the changes below from following a link to some other file.
        try setOwnerAndMode(temporary, settings: settings, key: key)
        var status = stat()
        guard lstat(temporary, &status) == 0, isSocket(status) else {
            throw NetProxyConfigurationError("\(key): the bound socket \(temporary) disappeared before it was published")
        }
        let identity = FileIdentity(status)

        try checkExisting(path, key: key)
        guard rename(temporary, path) == 0 else {
            throw NetProxyConfigurationError("\(key): cannot rename \(temporary) to \(path): \(errorText(errno))")
        }
        return identity
    }

    /// `chmod` without following a symbolic link, where the C library can; it falls back to `chmod`
    /// where it cannot (without `/proc`), the socket having just been checked.
    private static func changeMode(_ path: String, to mode: mode_t, key: String) throws(NetProxyConfigurationError) {
        if fchmodat(AT_FDCWD, path, mode, CInt(AT_SYMLINK_NOFOLLOW)) == 0 { return }
        let failure = errno
        if failure == EOPNOTSUPP || failure == ENOTSUP || failure == ENOSYS, chmod(path, mode) == 0 { return }
        throw NetProxyConfigurationError("\(key): cannot change the mode of \(path): \(errorText(failure))")
    }

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

    /// Another process's listening socket bound at `path` or at one of its temporary names: a host
    /// publishing the same path at the same moment (both found it free, and the last rename
    /// wins). Run after ``publish(temporary:as:settings:key:)``: of two hosts that overlap, at
    /// least one sees the other.
    static func competitor(for path: String) -> String? {
        let (directory, name) = split(path)
        return ForeignListeners.unixListenerPaths()?.first { other in
            guard other != path else { return true }
            let (otherDirectory, otherName) = split(other)
            // ".<name, maybe shortened>.<pid>.<number>"
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
            if failure == ENOENT { throw NetProxyConfigurationError("\(key): the directory \(shown) does not exist") }
            if failure == ENOTDIR { throw NetProxyConfigurationError("\(key): \(shown) is not a directory") }
            throw NetProxyConfigurationError("\(key): cannot examine the directory \(shown): \(errorText(failure))")
        }
        guard status.st_mode & S_IFMT == S_IFDIR else { throw NetProxyConfigurationError("\(key): \(shown) is not a directory") }
    }

    /// Accepts nothing at `path`, or a socket nobody listens on; anything else is an error.
    private static func checkExisting(_ path: String, key: String) throws(NetProxyConfigurationError) {
        var status = stat()
        guard lstat(path, &status) == 0 else {
            if errno == ENOENT { return }
            throw NetProxyConfigurationError("\(key): cannot examine \(path): \(errorText(errno))")
        }
        // Only sockets are ever replaced: another kind of file there is most likely a mistake in the
        // configuration, and removing it could destroy data.
        guard isSocket(status) else {
            throw NetProxyConfigurationError("\(key): \(path) exists and is \(kind(status)), not a socket; it is left as it is")
        }
        switch listenerState(path) {
        case .stale: return
        case .listening: throw NetProxyConfigurationError("\(key): \(path) is in use: another process listens on it")
        case .otherType:
            throw NetProxyConfigurationError("\(key): \(path) is a socket of another type than stream; it is left as it is")
        case .unknown(let failure):
            throw NetProxyConfigurationError("\(key): cannot tell whether another process listens on \(path): \(errorText(failure))")
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

    /// `<directory>/.<name>.<pid>.<number>`, the name shortened as needed to fit SwiftNIO's limit.
    private static func temporaryPath(
        directory: String, name: String, pid: Int, number: Int, key: String
    ) throws(NetProxyConfigurationError)
        -> String
    {
        let suffix = ".\(pid).\(number)"
        let room = maximumPathLength - directory.utf8.count - "/.".utf8.count - suffix.utf8.count
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
