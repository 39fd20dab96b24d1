import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Log lines that anyone on the network can cause (refused connections), at most `limit` a
/// second; the lines dropped are counted and reported with the next line that gets through
/// (or by ``flush()``).
/// Counting every refusal is the metrics' job; this keeps an untrusted flood out of the log.
final class RateLimitedLog: Sendable {
    private struct Window {
        var start = NIODeadline.uptimeNanoseconds(0)
        var written = 0
        var suppressed = 0
    }

    private let logger: Logger
    private let limit: Int
    private let window = NIOLockedValueBox(Window())
    /// The clock windows are measured by; a test sets its own.
    private let now: @Sendable () -> NIODeadline

    init(logger: Logger, limitPerSecond limit: Int = 10, now: @escaping @Sendable () -> NIODeadline = { .now() }) {
        self.logger = logger
        self.limit = limit
        self.now = now
    }

    func warning(_ message: @autoclosure () -> String, metadata: Logger.Metadata? = nil) {
        let now = self.now()
        let suppressed: Int? = window.withLockedValue { window in
            if now - window.start >= .seconds(1) {
                let dropped = window.suppressed
                window = Window(start: now, written: 1, suppressed: 0)
                return dropped
            }
            guard window.written < limit else {
                window.suppressed += 1
                return nil
            }
            window.written += 1
            return 0
        }
        guard let suppressed else { return }
        let note = suppressed > 0 ? " (\(suppressed) similar line(s) suppressed since the last one)" : ""
        logger.warning("\(message())\(note)", metadata: metadata)
    }

    /// Reports the lines suppressed since the last one written, if any (at shutdown: no later
    /// line would carry the count).
    func flush() {
        let suppressed = window.withLockedValue { window in
            defer { window.suppressed = 0 }
            return window.suppressed
        }
        if suppressed > 0 {
            logger.warning("\(suppressed) similar line(s) suppressed since the last one")
        }
    }
}
