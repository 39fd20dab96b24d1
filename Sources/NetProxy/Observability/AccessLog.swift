import Atomics
import CoreMetrics
import Foundation
import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The access log: one line per ended connection (``ConnectionRecord``), written by a thread of
/// its own, so that a slow disk or a full pipe never holds up an event loop.
///
/// Lines wait in one buffer of at most ``bufferLimit`` bytes; past it a line is dropped and
/// counted in `netproxy_access_log_dropped_total`, rather than memory growing without bound
/// while the destination does not keep up. The destination is replaced at each reload (a
/// rotated file is followed by a new one); lines recorded before go to the one they were
/// recorded for.
final class AccessLog: @unchecked Sendable {
    /// The most bytes that may wait to be written.
    static let bufferLimit = 1 << 20
    /// Lines are written in batches: when this much waits, or ``flushInterval`` after the last
    /// write. Waking the writer for each line would cost a thread switch and a system call per
    /// connection.
    static let batchSize = 64 * 1024
    static let flushInterval = 0.1

    private let condition = NSCondition()
    // Guarded by `condition`.
    private var pending = ByteBuffer()
    private var destination: AccessLogFile?
    /// Lines still waiting for a destination a reload replaced.
    private var retired: [(AccessLogFile, ByteBuffer)] = []
    private var writerRunning = false
    private var finished: CheckedContinuation<Void, Never>?
    /// Set when the shutdown stops waiting: the writer ends once its write returns, if ever.
    private var stopping = false
    private var failing = false

    private let dropped: CoreMetrics.Counter
    private let logger: Logger

    init(dropped: CoreMetrics.Counter, logger: Logger) {
        self.dropped = dropped
        self.logger = logger
    }

    /// Whether lines are written: a connection accepted while it is off keeps no record.
    var isEnabled: Bool { enabled.load(ordering: .relaxed) }
    /// Whether ``destination`` is set, read without the lock at each accept.
    private let enabled = ManagedAtomic(false)

    /// Writes to `file` from now on; `nil` turns the log off.
    func use(_ file: AccessLogFile?) {
        condition.lock()
        defer { condition.unlock() }
        if let old = destination, pending.readableBytes > 0 {
            retired.append((old, pending))
            pending = ByteBuffer()
        }
        destination = file
        enabled.store(file != nil, ordering: .relaxed)
        if file != nil && !writerRunning {
            writerRunning = true
            Thread.detachNewThread { [self] in writeUntilFinished() }
        }
        condition.signal()
    }

    /// Queues `line`, which ends with a newline.
    func record(_ line: UnsafeRawBufferPointer) {
        condition.lock()
        guard destination != nil else { return condition.unlock() }
        guard pending.readableBytes < Self.bufferLimit else {
            condition.unlock()
            dropped.increment()
            return
        }
        pending.writeBytes(line)
        if pending.readableBytes >= Self.batchSize { condition.signal() }
        condition.unlock()
    }

    /// Writes what waits, turns the log off and ends the writer: at the end of a shutdown,
    /// once every connection has recorded its line. Waits `timeout` at most: a destination that
    /// takes nothing (a pipe nobody reads, a stuck disk) loses its last lines rather than
    /// holding the process up.
    func finish(timeout: Double = 2) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            guard writerRunning else {
                condition.unlock()
                return continuation.resume()
            }
            finished = continuation
            condition.signal()
            condition.unlock()
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [self] in
                condition.lock()
                let waiting = finished
                finished = nil
                var lost = 0
                if waiting != nil {
                    stopping = true
                    destination = nil
                    enabled.store(false, ordering: .relaxed)
                    // What still waits will not be written: counted as dropped.
                    for chunk in [pending] + retired.map(\.1) {
                        lost += chunk.readableBytesView.count(where: { $0 == 0x0A })
                    }
                    pending = ByteBuffer()
                    retired = []
                }
                condition.unlock()
                if lost > 0 { dropped.increment(by: Int64(lost)) }
                waiting?.resume()
            }
        }
    }

    private func writeUntilFinished() {
        // The buffer written last, emptied: the next one lines go to, so that a batch does not
        // grow a new buffer from nothing.
        var spare = ByteBuffer()
        while true {
            condition.lock()
            // A batch, or whatever waits once the interval has passed (an idle log wakes ten
            // times a second to find nothing).
            let due = Date(timeIntervalSinceNow: Self.flushInterval)
            while pending.readableBytes < Self.batchSize && finished == nil && !stopping && condition.wait(until: due) {}
            if stopping {
                writerRunning = false
                stopping = false
                pending = ByteBuffer()
                retired = []
                condition.unlock()
                return
            }
            let earlier = retired
            retired = []
            var chunk = pending
            pending = spare
            // The only reference now: a second one would make the first line copy the storage.
            spare = ByteBuffer()
            // Held until written, even if a reload replaces it meanwhile.
            let file = destination
            if chunk.readableBytes == 0, earlier.isEmpty, let finished {
                destination = nil
                enabled.store(false, ordering: .relaxed)
                writerRunning = false
                self.finished = nil
                condition.unlock()
                return finished.resume()
            }
            condition.unlock()
            for (file, lines) in earlier { write(lines, to: file) }
            if let file, chunk.readableBytes > 0 { write(chunk, to: file) }
            // One grown by a burst is let go rather than held for good.
            chunk.clear()
            spare = chunk.capacity <= 2 * Self.batchSize ? chunk : ByteBuffer()
        }
    }

    private func write(_ chunk: ByteBuffer, to file: AccessLogFile) {
        let error = file.append(chunk)
        condition.lock()
        let wasFailing = failing
        failing = error != nil
        condition.unlock()
        if let error {
            // Said once per run of failures, not once per lost chunk.
            if !wasFailing {
                logger.error("access log \(file.name): cannot write (\(String(cString: strerror(error)))); lines are lost until it can")
            }
            dropped.increment(by: Int64(chunk.readableBytesView.count(where: { $0 == 0x0A })))
        }
    }
}

/// Where the access log goes: a file opened for appending, or standard output.
final class AccessLogFile: Sendable {
    /// The path, or `stdout`.
    let name: String
    private let descriptor: CInt
    private let ownsDescriptor: Bool

    init(name: String, descriptor: CInt, ownsDescriptor: Bool) {
        self.name = name
        self.descriptor = descriptor
        self.ownsDescriptor = ownsDescriptor
    }

    deinit {
        if ownsDescriptor { close(descriptor) }
    }

    /// Opens `setting` (a path, or `stdout`) for appending. A file is created (mode 0640) if
    /// missing; it must be a regular file, opened never through a symbolic link and never
    /// waiting (a FIFO would block the writer for good). The error names `key`.
    static func opening(_ setting: String, key: String = "access_log") throws(NetProxyConfigurationError) -> AccessLogFile {
        if setting == "stdout" { return AccessLogFile(name: setting, descriptor: STDOUT_FILENO, ownsDescriptor: false) }
        let descriptor = open(setting, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0o640)
        guard descriptor >= 0 else {
            let reason =
                switch errno {
                case ELOOP: "it is a symbolic link"
                case ENXIO: "it is a FIFO"
                case EISDIR: "it is a directory"
                case let other: String(cString: strerror(other))
                }
            throw NetProxyConfigurationError(.file, key: key, "\(key): cannot open \(setting) for appending: \(reason)")
        }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            close(descriptor)
            throw NetProxyConfigurationError(.file, key: key, "\(key): \(setting) is not a regular file")
        }
        return AccessLogFile(name: setting, descriptor: descriptor, ownsDescriptor: true)
    }

    /// Writes all of `bytes`; the errno that stopped it, if one did.
    func append(_ bytes: ByteBuffer) -> CInt? {
        var offset = 0
        while offset < bytes.readableBytes {
            let count = bytes.withUnsafeReadableBytes { write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
            if count < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN {
                    // Standard output set non-blocking by someone else: wait for room.
                    var poller = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&poller, 1, 1000)
                    continue
                }
                return errno
            }
            offset += count
        }
        return nil
    }
}
