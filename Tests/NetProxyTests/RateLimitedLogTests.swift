import Logging
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import NetProxy

@Suite struct RateLimitedLogTests {
    /// A flood is cut to the limit within a second; the count of what was dropped is reported,
    /// with the next line or by `flush()`, and never twice.
    @Test func floodIsCutAndCounted() {
        let lines = NIOLockedValueBox<[String]>([])
        let log = RateLimitedLog(logger: Logger(label: "test") { _ in RecordingLogHandler(lines: lines) }, limitPerSecond: 10)
        for index in 0..<25 {
            log.warning("refused \(index)")
        }
        log.flush()
        log.flush()
        let expected = (0..<10).map { "warning refused \($0)" } + ["warning 15 similar line(s) suppressed since the last one"]
        #expect(lines.withLockedValue { $0 } == expected)
    }

    /// The count of lines dropped in a window is reported with the first line of the next
    /// window, which opens a second after the last one did, not before.
    @Test func theSuppressedCountComesWithTheFirstLineOfTheNextWindow() {
        let lines = NIOLockedValueBox<[String]>([])
        let clock = NIOLockedValueBox(NIODeadline.uptimeNanoseconds(5_000_000_000))
        let log = RateLimitedLog(
            logger: Logger(label: "test") { _ in RecordingLogHandler(lines: lines) }, limitPerSecond: 2, now: { clock.withLockedValue { $0 } })
        func at(_ milliseconds: Int64, _ message: String) {
            clock.withLockedValue { $0 = .uptimeNanoseconds(5_000_000_000 + UInt64(milliseconds) * 1_000_000) }
            log.warning(message)
        }
        at(0, "a")
        at(10, "b")
        at(20, "c")
        at(999, "d")
        at(1000, "e")
        at(1001, "f")
        at(1002, "g")
        at(3000, "h")
        log.flush()
        #expect(
            lines.withLockedValue { $0 } == [
                "warning a", "warning b", "warning e (2 similar line(s) suppressed since the last one)", "warning f",
                "warning h (1 similar line(s) suppressed since the last one)",
            ])
    }
}
