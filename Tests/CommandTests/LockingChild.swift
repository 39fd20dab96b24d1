import Foundation
import TestSupport

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A `python3` child that holds a lock on a file (or none), to stand for whoever else may lock a
/// PID file or be named by one.
///
/// It answers SIGUSR1 with a line, which proves it alive without a sleep: standard signals are
/// taken lowest first, and a SIGHUP sent before (SIGHUP kills it) ends it before that answer.
final class LockingChild {
    /// The lock the child takes on the file.
    enum Lock: String, CustomStringConvertible {
        case none
        /// `flock(LOCK_EX)`.
        case flock
        /// A POSIX record lock, `F_RDLCK` (`lockf(LOCK_SH)`).
        case posixShared = "posix-shared"
        /// A POSIX record lock, `F_WRLCK` (`lockf(LOCK_EX)`).
        case posixExclusive = "posix-exclusive"

        var description: String { rawValue }
    }

    static let script = """
        import fcntl, os, signal, sys
        lock, path, names_itself = sys.argv[1], sys.argv[2], sys.argv[3] == "yes"
        # What the test process blocks or ignores, its children inherit: a victim takes SIGHUP as a
        # daemon would.
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, lambda *_: print("alive", flush=True))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGHUP, signal.SIGUSR1])
        if lock != "none":
            fd = os.open(path, os.O_RDWR)
            if lock == "flock":
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                fcntl.lockf(fd, (fcntl.LOCK_SH if lock == "posix-shared" else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            if names_itself:
                os.ftruncate(fd, 0)
                os.pwrite(fd, b"%d\\n" % os.getpid(), 0)
        print("ready %d" % os.getpid(), flush=True)
        while True:
            signal.pause()
        """

    struct StartFailure: Error, CustomStringConvertible {
        var description: String
    }

    private let child: ChildProcess

    /// Starts the child with `lock` on `path` (which must exist), writing its own process ID
    /// into the file if `namesItself`, and waits until it holds the lock.
    init(lock: Lock, on path: String, namesItself: Bool = false) throws {
        child = try ChildProcess(
            try Peer.require("python3"), ["-c", Self.script, lock.rawValue, path, namesItself ? "yes" : "no"], standardOutput: .pipe)
        let ready = child.readLine(within: 30)
        guard ready == "ready \(pid)" else {
            stop()
            throw StartFailure(description: "python3 \(lock) on \(path) did not start: \(String(reflecting: ready))")
        }
    }

    var pid: pid_t { child.pid }

    /// Whether the child still runs and answers: it has not been killed, not even by a signal
    /// still on its way.
    func isAlive() -> Bool {
        guard kill(pid, 0) == 0, child.isRunning else { return false }
        child.send(SIGUSR1)
        return child.readLine(within: 10) == "alive"
    }

    /// Kills the child (by its process ID) and reaps it.
    func stop() {
        child.stop()
    }
}
