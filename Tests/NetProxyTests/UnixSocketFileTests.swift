import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import NetProxy

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Checking, publishing and removing the socket files of `proxy_unix_sockets`.
@Suite struct UnixSocketFileTests {
    /// A fresh directory for one test; the test removes it, with everything in it, when it ends.
    struct Directory {
        let path: String

        init() throws {
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("usf-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: false)
            path = url.path
        }

        func remove() {
            try? FileManager.default.removeItem(atPath: path)
        }

        func file(_ name: String) -> String {
            "\(path)/\(name)"
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func key(_ path: String) -> String {
        "proxy_unix_sockets.\(path)"
    }

    /// A stream socket bound at `path`, listening if asked to.
    static func bound(at path: String, listening: Bool) throws -> CInt {
        let descriptor = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        let result = withAddress(path) { bind(descriptor, $0, $1) }
        guard result == 0 else {
            let failure = errno
            close(descriptor)
            throw Failure(description: "bind \(path): \(String(cString: strerror(failure)))")
        }
        if listening {
            guard listen(descriptor, 8) == 0 else {
                close(descriptor)
                throw Failure(description: "listen: \(String(cString: strerror(errno)))")
            }
        }
        return descriptor
    }

    /// Leaves a socket file that nobody listens on, as a process that died without unlinking does.
    static func staleSocket(at path: String) throws {
        close(try bound(at: path, listening: false))
    }

    /// Whether a client can connect to the socket at `path`.
    static func connects(to path: String) -> Bool {
        let descriptor = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        return withAddress(path) { connect(descriptor, $0, $1) } == 0
    }

    static func withAddress<Result>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Result) -> Result {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        precondition(bytes.count < MemoryLayout.size(ofValue: address.sun_path))
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    static func status(_ path: String) -> stat? {
        var status = stat()
        return lstat(path, &status) == 0 ? status : nil
    }

    static func isSocket(_ path: String) -> Bool {
        guard let status = status(path) else { return false }
        return status.st_mode & S_IFMT == S_IFSOCK
    }

    static func prepareError(_ path: String) -> NetProxyConfigurationError? {
        do {
            _ = try UnixSocketFile.prepare(path, key: key(path))
            return nil
        } catch {
            return error
        }
    }

    @Test func publishesAtAnAbsentPath() async throws {
        let directory = try Directory()
        defer { directory.remove() }
        let path = directory.file("c2s.sock")
        let temporary = try UnixSocketFile.prepare(path, key: Self.key(path))
        #expect(temporary.path == temporary.directory + "/s")
        #expect(temporary.directory.hasPrefix(directory.path + "/."))
        #expect(!temporary.directory.dropFirst(directory.path.utf8.count + 1).contains("/"))
        // A new, empty directory of ours that nobody else can enter.
        let made = try #require(Self.status(temporary.directory))
        #expect(made.st_mode & S_IFMT == S_IFDIR)
        #expect(made.st_mode & 0o7777 == 0o700)
        #expect(made.st_uid == geteuid())
        #expect(try FileManager.default.contentsOfDirectory(atPath: temporary.directory) == [])

        // Bound as the host binds: with SwiftNIO, to the temporary path.
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(unixDomainSocketPath: temporary.path).get()
        let identity = try UnixSocketFile.publish(
            temporary: temporary, as: path, settings: ProxyUnixSocket(service: "c2s", mode: 0o640), key: Self.key(path))

        let status = try #require(Self.status(path))
        #expect(status.st_mode & S_IFMT == S_IFSOCK)
        #expect(status.st_mode & 0o777 == 0o640)
        #expect(identity == UnixSocketFile.FileIdentity(status))
        #expect(Self.status(temporary.directory) == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["c2s.sock"])
        #expect(Self.connects(to: path))
        try await channel.close()
    }

    @Test func replacesAStaleSocket() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let path = directory.file("c2s.sock")
        try Self.staleSocket(at: path)
        let stale = UnixSocketFile.FileIdentity(try #require(Self.status(path)))
        #expect(!Self.connects(to: path))

        let temporary = try UnixSocketFile.prepare(path, key: Self.key(path))
        #expect(Self.isSocket(path))  // still there: the rename replaces it
        let listener = try Self.bound(at: temporary.path, listening: true)
        defer { close(listener) }
        let identity = try UnixSocketFile.publish(temporary: temporary, as: path, settings: ProxyUnixSocket(service: "c2s"), key: Self.key(path))

        #expect(identity != stale)
        #expect(UnixSocketFile.FileIdentity(try #require(Self.status(path))) == identity)
        #expect(Self.connects(to: path))
        #expect(Self.status(temporary.directory) == nil)
    }

    @Test func refusesASocketSomeoneListensOn() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let path = directory.file("c2s.sock")
        let listener = try Self.bound(at: path, listening: true)
        defer { close(listener) }

        expect(Self.prepareError(path), .file, key: Self.key(path))
        #expect(Self.connects(to: path))
    }

    @Test func leavesARegularFileAlone() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let path = directory.file("c2s.sock")
        try "keep me".write(toFile: path, atomically: false, encoding: .utf8)

        expect(Self.prepareError(path), .file, key: Self.key(path))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "keep me")
    }

    @Test func leavesASymbolicLinkAlone() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let target = directory.file("target.sock")
        try Self.staleSocket(at: target)
        let path = directory.file("c2s.sock")
        #expect(symlink(target, path) == 0)

        expect(Self.prepareError(path), .file, key: Self.key(path))
        #expect(Self.status(path).map { $0.st_mode & S_IFMT == S_IFLNK } == true)
        #expect(Self.isSocket(target))
    }

    /// A file that appears at the path between the check and the rename is not replaced.
    @Test func publishChecksThePathAgain() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let path = directory.file("c2s.sock")
        let temporary = try UnixSocketFile.prepare(path, key: Self.key(path))
        let listener = try Self.bound(at: temporary.path, listening: true)
        defer { close(listener) }
        try "keep me".write(toFile: path, atomically: false, encoding: .utf8)

        let error = #expect(throws: NetProxyConfigurationError.self) {
            try UnixSocketFile.publish(temporary: temporary, as: path, settings: ProxyUnixSocket(service: "c2s"), key: Self.key(path))
        }
        expect(error, .file, key: Self.key(path))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "keep me")
        #expect(Self.status(temporary.directory) == nil)
    }

    @Test func rejectsBadPaths() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let file = directory.file("file")
        try "".write(toFile: file, atomically: false, encoding: .utf8)
        // What is at the path, or is missing, is the file system's; a path that cannot name a
        // socket is the value's.
        let cases: [(path: String, kind: NetProxyConfigurationError.Kind)] = [
            (directory.path, .file),
            (directory.file("missing/c2s.sock"), .file),
            (file + "/c2s.sock", .file),
            ("run/c2s.sock", .invalidValue),
            (directory.path + "/", .invalidValue),
            (directory.file(String(repeating: "a", count: 120)), .invalidValue),
        ]
        for (path, kind) in cases {
            expect(Self.prepareError(path), kind, key: Self.key(path))
        }
        #expect(Self.status(directory.path).map { $0.st_mode & S_IFMT == S_IFDIR } == true)
    }

    /// A path of exactly SwiftNIO's limit is accepted, and its temporary name is shortened for the
    /// socket in the private directory to fit.
    @Test func temporaryNamesFitAndDiffer() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let name = String(repeating: "n", count: 103 - directory.path.utf8.count - 1)
        let path = directory.file(name)
        #expect(path.utf8.count == 103)
        let first = try UnixSocketFile.prepare(path, key: Self.key(path))
        let second = try UnixSocketFile.prepare(path, key: Self.key(path))
        #expect(first.directory != second.directory)
        for temporary in [first, second] {
            #expect(temporary.path.utf8.count == 103)
            #expect(temporary.directory.hasPrefix(directory.path + "/.nnn"))
            let parts = temporary.directory.split(separator: ".")
            #expect(parts[parts.count - 2] == "\(getpid())")
            #expect(Int(parts[parts.count - 1]) != nil)
        }
    }

    /// A bind that failed: its socket, if any, and the private directory go.
    @Test func discardRemovesTheSocketAndItsDirectory() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let path = directory.file("c2s.sock")
        let bound = try UnixSocketFile.prepare(path, key: Self.key(path))
        try Self.staleSocket(at: bound.path)
        let unbound = try UnixSocketFile.prepare(path, key: Self.key(path))
        UnixSocketFile.discard(bound)
        UnixSocketFile.discard(unbound)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == [])
    }

    /// What an earlier run with our pid left at the temporary names: our kind of leftover (a
    /// directory of ours, empty or holding a socket nobody listens on, or such a socket where
    /// earlier versions bound) is removed and the name taken; anything else is left as it is.
    @Test func leftoversOfAnEarlierRunWithOurPid() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let path = directory.file("c2s.sock")
        // The number the next call takes, unless other tests take some first.
        let probe = try UnixSocketFile.prepare(path, key: Self.key(path))
        let next = Int(probe.directory.split(separator: ".").last!)! + 1
        UnixSocketFile.discard(probe)
        func name(_ offset: Int) -> String {
            directory.file(".c2s.sock.\(getpid()).\(next + offset)")
        }

        // Not ours to remove: a socket someone listens on, a link, another user's directory, a
        // directory holding something else.
        #expect(mkdir(name(0), 0o700) == 0)
        let live = try Self.bound(at: name(0) + "/s", listening: true)
        defer { close(live) }
        #expect(symlink(directory.file("elsewhere"), name(1)) == 0)
        #expect(mkdir(name(2), 0o700) == 0)
        try Self.staleSocket(at: name(2) + "/s")
        #expect(chown(name(2), 1, 1) == 0)
        #expect(mkdir(name(3), 0o700) == 0)
        try "keep me".write(toFile: name(3) + "/notes", atomically: false, encoding: .utf8)
        // Ours, at every later number the call could reach.
        let leftovers = 4..<200
        for offset in leftovers {
            switch offset % 3 {
            case 0:
                #expect(mkdir(name(offset), 0o700) == 0)
                try Self.staleSocket(at: name(offset) + "/s")
            case 1:
                #expect(mkdir(name(offset), 0o700) == 0)
            default:
                try Self.staleSocket(at: name(offset))
            }
        }

        let temporary = try UnixSocketFile.prepare(path, key: Self.key(path))
        let taken = Int(temporary.directory.split(separator: ".").last!)! - next
        // Every number from `next` on was taken by a file: only a cleaned leftover could be used.
        #expect(leftovers.contains(taken), "\(taken)")
        let made = try #require(Self.status(temporary.directory))
        #expect(made.st_mode & S_IFMT == S_IFDIR)
        #expect(made.st_mode & 0o7777 == 0o700)
        #expect(try FileManager.default.contentsOfDirectory(atPath: temporary.directory) == [])
        #expect(Self.connects(to: name(0) + "/s"))
        #expect(Self.status(name(1)).map { $0.st_mode & S_IFMT == S_IFLNK } == true)
        #expect(Self.status(name(2)).map { $0.st_uid } == 1)
        #expect(Self.isSocket(name(2) + "/s"))
        #expect(try String(contentsOfFile: name(3) + "/notes", encoding: .utf8) == "keep me")
    }

    @Test func setsOwnerAndGroupByNameOrNumber() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let path = directory.file("c2s.sock")
        let temporary = try UnixSocketFile.prepare(path, key: Self.key(path))
        let listener = try Self.bound(at: temporary.path, listening: true)
        defer { close(listener) }
        // Another owner first, so that the change is seen.
        #expect(lchown(temporary.path, 1, 1) == 0)

        let settings = ProxyUnixSocket(service: "c2s", mode: 0o660, owner: "root", group: "0")
        _ = try UnixSocketFile.publish(temporary: temporary, as: path, settings: settings, key: Self.key(path))
        let status = try #require(Self.status(path))
        #expect(status.st_uid == 0)
        #expect(status.st_gid == 0)
        #expect(status.st_mode & 0o777 == 0o660)
    }

    @Test(arguments: [
        (ProxyUnixSocket(service: "c2s", owner: "no-such-user-5a1"), "owner"),
        (ProxyUnixSocket(service: "c2s", group: "no-such-group-5a1"), "group"),
    ])
    func unknownOwnerOrGroupIsAnError(settings: ProxyUnixSocket, entry: String) throws {
        let directory = try Directory()
        defer { directory.remove() }
        let path = directory.file("c2s.sock")
        let temporary = try UnixSocketFile.prepare(path, key: Self.key(path))
        let listener = try Self.bound(at: temporary.path, listening: true)
        defer { close(listener) }

        let error = #expect(throws: NetProxyConfigurationError.self) {
            try UnixSocketFile.publish(temporary: temporary, as: path, settings: settings, key: Self.key(path))
        }
        expect(error, .invalidValue, key: "\(Self.key(path)).\(entry)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == [])
    }

    @Test func removesOnlyItsOwnSocket() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let path = directory.file("c2s.sock")
        func publish() throws -> (CInt, UnixSocketFile.FileIdentity) {
            let temporary = try UnixSocketFile.prepare(path, key: Self.key(path))
            let listener = try Self.bound(at: temporary.path, listening: false)
            return (
                listener, try UnixSocketFile.publish(temporary: temporary, as: path, settings: ProxyUnixSocket(service: "c2s"), key: Self.key(path))
            )
        }

        let (first, ours) = try publish()
        close(first)
        #expect(UnixSocketFile.remove(path, ifStill: ours))
        #expect(Self.status(path) == nil)

        // A newer instance replaced the socket: the older one's identity no longer matches it.
        let (older, old) = try publish()
        close(older)
        let (newer, new) = try publish()
        defer { close(newer) }
        #expect(old != new)
        #expect(!UnixSocketFile.remove(path, ifStill: old))
        #expect(UnixSocketFile.FileIdentity(try #require(Self.status(path))) == new)
        #expect(UnixSocketFile.remove(path, ifStill: new))
        #expect(Self.status(path) == nil)
    }
}
