import Logging
import NIOConcurrencyHelpers
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
}
