import Foundation
import Logging
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The write end of the pipe the signal handler writes to; set once, before any handler exists.
nonisolated(unsafe) private var signalPipeWriteEnd: CInt = -1

/// Turns the signals `serve` handles into an async sequence, with a handler of its own that
/// writes the signal's number to a pipe (the self-pipe pattern).
///
/// libdispatch's signal sources, which swift-service-lifecycle uses, read signals through
/// signalfd; the main thread parks in `sigsuspend` with no signal blocked, so a signal is often
/// delivered to it and then to one other thread, and under load SIGINT and SIGTERM were lost
/// (the process kept serving). A plain handler works whichever thread the kernel picks.
enum SignalPipe {
    /// Installs the handler for `signals` and returns the sequence of those received.
    static func install(_ signals: [CInt]) throws(CommandFailure) -> AsyncStream<CInt> {
        var ends: [CInt] = [-1, -1]
        guard pipe(&ends) == 0 else { throw CommandFailure("cannot create the signal pipe: \(String(cString: strerror(errno)))") }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        // A full pipe must not block the handler; a signal or two may then be dropped.
        _ = fcntl(ends[1], F_SETFL, fcntl(ends[1], F_GETFL) | O_NONBLOCK)
        signalPipeWriteEnd = ends[1]
        let (stream, continuation) = AsyncStream.makeStream(of: CInt.self)
        let readEnd = ends[0]
        Thread.detachNewThread {
            var byte: UInt8 = 0
            while true {
                let count = read(readEnd, &byte, 1)
                if count == 1 {
                    continuation.yield(CInt(byte))
                } else if count < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            continuation.finish()
        }
        for signal in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { number in
                // The interrupted code may be about to read errno: leave it as it was.
                let savedErrno = errno
                var byte = UInt8(truncatingIfNeeded: number)
                _ = write(signalPipeWriteEnd, &byte, 1)
                errno = savedErrno
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(signal, &action, nil)
        }
        return stream
    }
}

/// Ends (and so, in the service group, starts the graceful shutdown) on SIGINT, SIGTERM or
/// SIGQUIT; reloads the configuration on SIGHUP.
///
/// Reloads run one at a time, and SIGHUPs that arrive during one collapse into a single reload
/// after it (each reads the file anew, so one is enough). A stop signal is acted on at once,
/// never queued behind reloads.
struct SignalService: Service {
    let signals: AsyncStream<CInt>
    let logger: Logger
    let reload: @Sendable () async -> Void

    func run() async {
        let (requests, pending) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        // Not a child task: a stop signal must not wait for a reload in progress. The host's
        // shutdown does; the reload then finds the host stopping and undoes itself.
        let reloads = Task {
            for await _ in requests { await reload() }
        }
        for await signal in signals.cancelOnGracefulShutdown() {
            if signal == SIGHUP {
                pending.yield()
                continue
            }
            logger.info("\(Self.name(signal)) received: shutting down")
            break
        }
        // A reload still pending is dropped.
        pending.finish()
        reloads.cancel()
    }

    static func name(_ signal: CInt) -> String {
        switch signal {
        case SIGINT: return "SIGINT"
        case SIGTERM: return "SIGTERM"
        case SIGQUIT: return "SIGQUIT"
        case SIGHUP: return "SIGHUP"
        default: return "signal \(signal)"
        }
    }
}
