import NIOCore

/// The configuration's durations are `Duration`s; SwiftNIO schedules `TimeAmount`s. Every
/// duration the configuration accepts is a whole number of nanoseconds from 1 ns to
/// ``maximum``, so the conversion is exact.
extension Duration {
    /// The longest duration any timeout or grace period may be: one day.
    static let maximum = Duration.seconds(86400)

    /// A number of seconds as a configuration file writes them, fractions included, rounded to
    /// the nanosecond; `nil` unless it is above 0 and at most ``maximum``.
    init?(configurationSeconds seconds: Double) {
        guard seconds > 0 && seconds <= 86400 else { return nil }
        let nanoseconds = Int64((seconds * 1e9).rounded())
        guard nanoseconds > 0 else { return nil }
        self = .nanoseconds(nanoseconds)
    }

    /// The same span for SwiftNIO's timers.
    var timeAmount: TimeAmount { TimeAmount(self) }

    /// `2.5 s`: seconds as an operator writes them.
    var secondsText: String {
        let (seconds, attoseconds) = components
        if attoseconds == 0 { return "\(seconds) s" }
        return "\(Double(seconds) + Double(attoseconds) / 1e18) s"
    }
}

extension TimeAmount {
    /// `2.5 s`: seconds as an operator writes them.
    var secondsText: String { Duration(self).secondsText }
}
