import Foundation
import NIOConcurrencyHelpers
import Testing

@testable import NetProxy

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A UNIX socket in a directory that other users can write, and a process umask that leaves new
/// files open to all: nobody else reaches the socket before it has its mode, and no change of
/// owner or mode follows a link that another user swaps in.
///
/// Where the timing matters, ``UnixSocketFile/beforeChange`` stops the host at the worst moment
/// (the socket checked, its owner and mode not yet set) and the test acts there as the other user
/// would, in the shared directory only: that user cannot enter a directory of ours with mode 0700.
@Suite(.serialized, .timeLimit(.minutes(1))) struct UnixSocketAttackTests {
    typealias Directory = UnixSocketFileTests.Directory

    /// A directory where every user may create, rename and remove entries (no sticky bit).
    static func sharedDirectory() throws -> Directory {
        let directory = try Directory()
        #expect(chmod(directory.path, 0o777) == 0)
        return directory
    }

    /// A file of root's with mode 0600, outside the shared directory: what the other user wants opened.
    static func victim(in directory: Directory) throws -> String {
        let path = directory.file("victim")
        let descriptor = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw UnixSocketFileTests.Failure(description: "victim: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        #expect(fchmod(descriptor, 0o600) == 0)
        #expect(fchown(descriptor, 0, 0) == 0)
        return path
    }

    /// The permission bits of the file at `path`, not following a link.
    static func mode(_ path: String) -> mode_t? {
        UnixSocketFileTests.status(path).map { $0.st_mode & 0o7777 }
    }

    static func config(_ path: String, mode: String) -> String {
        #"{"echo_ports": [], "proxy_unix_sockets": {"\#(path)": {"service": "echo", "mode": "\#(mode)"}}}"#
    }

    /// Calls `hook` (once) when the host is about to change the owner and mode of the socket file
    /// for `path`, with the path it changes.
    static func intercept(_ path: String, _ hook: @escaping @Sendable (String) -> Void) {
        let called = NIOLockedValueBox(false)
        UnixSocketFile.beforeChange.withLockedValue {
            $0[path] = { changing in
                let first = called.withLockedValue { called in
                    defer { called = true }
                    return !called
                }
                if first { hook(changing) }
            }
        }
    }

    static func stopIntercepting(_ path: String) {
        UnixSocketFile.beforeChange.withLockedValue { $0[path] = nil }
    }

    /// What another user who can write `directory` does to `changing`, a path in it: renames the
    /// entry on the way, and puts a link in its place that leads `changing` to `victim`.
    ///
    /// - Returns: Whether every step worked.
    static func redirect(_ changing: String, in directory: String, to victim: String) -> Bool {
        guard changing.hasPrefix(directory + "/") else { return false }
        let parts = changing.dropFirst(directory.utf8.count + 1).split(separator: "/", maxSplits: 1)
        let entry = "\(directory)/\(parts[0])"
        guard rename(entry, "\(directory)/moved") == 0 else { return false }
        if parts.count == 1 {
            return symlink(victim, entry) == 0
        }
        let decoy = "\(directory)/decoy"
        return mkdir(decoy, 0o755) == 0 && symlink(victim, "\(decoy)/\(parts[1])") == 0 && symlink(decoy, entry) == 0
    }

    /// The bound socket's name (or the directory on the way to it) is swapped for a link to
    /// another file before its mode is set: that file keeps its mode, and the socket gets it.
    @Test func theModeChangeFollowsNoLinkSwappedIn() async throws {
        let shared = try Self.sharedDirectory()
        defer { shared.remove() }
        let elsewhere = try Directory()
        defer { elsewhere.remove() }
        let victim = try Self.victim(in: elsewhere)
        let path = shared.file("c2s.sock")
        let swapped = NIOLockedValueBox<[Bool]>([])
        Self.intercept(path) { changing in
            let done = Self.redirect(changing, in: shared.path, to: victim)
            swapped.withLockedValue { $0.append(done) }
        }
        defer { Self.stopIntercepting(path) }

        let running = try? await RunningHost(Self.config(path, mode: "0666"))
        #expect(swapped.withLockedValue { $0 } == [true])
        #expect(Self.mode(victim) == 0o600)
        let host = try #require(running)
        #expect(UnixSocketFileTests.isSocket(path))
        #expect(Self.mode(path) == 0o666)
        #expect(UnixSocketFileTests.connects(to: path))
        await host.stop()
    }

    /// Under `umask 000` a socket is bound with mode 0777. At that moment, what any user sees in
    /// the socket's directory: no socket with another mode than the configured one, and the
    /// private directory it is in, which only we can enter.
    @Test func underUmaskZeroNoSocketIsOpenBeforeItsMode() async throws {
        let directory = try Self.sharedDirectory()
        defer { directory.remove() }
        let path = directory.file("c2s.sock")
        // A process-wide setting: in force only until the socket is bound.
        let previous = umask(0)
        defer { umask(previous) }
        let seen = NIOLockedValueBox<[String: stat]>([:])
        Self.intercept(path) { _ in
            umask(previous)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] {
                guard let status = UnixSocketFileTests.status(directory.file(name)) else { continue }
                seen.withLockedValue { $0[name] = status }
            }
        }
        defer { Self.stopIntercepting(path) }

        let running = try await RunningHost(Self.config(path, mode: "0600"))
        let entries = seen.withLockedValue { $0 }
        #expect(!entries.isEmpty)
        for (name, status) in entries {
            switch status.st_mode & S_IFMT {
            case S_IFSOCK:
                #expect(status.st_mode & 0o7777 == 0o600, "\(name)")
            case S_IFDIR:
                #expect(status.st_mode & 0o7777 == 0o700, "\(name)")
                #expect(status.st_uid == geteuid(), "\(name)")
            default:
                Issue.record("\(name): mode \(String(status.st_mode, radix: 8))")
            }
        }
        #expect(entries.values.contains { $0.st_mode & S_IFMT == S_IFDIR })
        #expect(Self.mode(path) == 0o600)
        await running.stop()
    }

    /// A reload with a new mode, while another user swaps the socket for a link: the socket gets
    /// the mode, the link's target keeps its own.
    @Test func aReloadChangesTheSocketNotALinkSwappedIn() async throws {
        let shared = try Self.sharedDirectory()
        defer { shared.remove() }
        let elsewhere = try Directory()
        defer { elsewhere.remove() }
        let victim = try Self.victim(in: elsewhere)
        let path = shared.file("c2s.sock")
        let running = try await RunningHost(Self.config(path, mode: "0660"))
        let swapped = NIOLockedValueBox<[Bool]>([])
        Self.intercept(path) { changing in
            let done = Self.redirect(changing, in: shared.path, to: victim)
            swapped.withLockedValue { $0.append(done) }
        }
        defer { Self.stopIntercepting(path) }

        try await running.host.reload(configuration: try NetProxyConfiguration(json: Data(Self.config(path, mode: "0666").utf8)))
        #expect(swapped.withLockedValue { $0 } == [true])
        #expect(Self.mode(victim) == 0o600)
        // The socket, renamed by the other user.
        #expect(UnixSocketFileTests.isSocket(shared.file("moved")))
        #expect(Self.mode(shared.file("moved")) == 0o666)
        await running.stop()
    }

    /// A link in place of a published socket is refused, even one that leads to it.
    @Test func updateRefusesASymbolicLink() throws {
        let directory = try Directory()
        defer { directory.remove() }
        let socket = directory.file("real.sock")
        let listener = try UnixSocketFileTests.bound(at: socket, listening: true)
        defer { close(listener) }
        #expect(chmod(socket, 0o600) == 0)
        let identity = UnixSocketFile.FileIdentity(try #require(UnixSocketFileTests.status(socket)))
        let path = directory.file("c2s.sock")
        #expect(symlink(socket, path) == 0)
        let key = UnixSocketFileTests.key(path)

        let error = #expect(throws: NetProxyConfigurationError.self) {
            try UnixSocketFile.update(path, ifStill: identity, settings: ProxyUnixSocket(service: "c2s", mode: 0o666), key: key)
        }
        expect(error, .file, key: key)
        #expect(Self.mode(socket) == 0o600)
        #expect(UnixSocketFileTests.status(path).map { $0.st_mode & S_IFMT == S_IFLNK } == true)
    }
}
