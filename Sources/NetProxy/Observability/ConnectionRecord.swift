import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// What the access log says of one accepted connection, filled in along its life by its
/// ``ConnectionGuard`` (bytes, how it ended), the dispatcher (service, client, proxy) and a
/// forward (target), and written as one line when the connection is gone.
///
/// Made only while the access log is on: with it off, a connection pays nothing for it.
final class ConnectionRecord {
    let log: AccessLog
    /// The listener, as its metrics name it (`127.0.0.1:15222`, `unix:/path`).
    let listener: String
    /// The socket's peer: the proxy on a PROXY port, else the client.
    let peer: SocketAddress?
    let isProxyListener: Bool
    let started: NIODeadline

    var service: String?
    /// The client, once known: the header's source, or the peer of a direct connection.
    var client: SocketAddress?
    /// Whether a header named the client (the peer is then its proxy).
    var proxied = false
    var target: SocketAddress?
    /// Bytes read from the client, and written to it.
    var bytesIn = 0
    var bytesOut = 0
    /// How it ended, and why: the first word said stands.
    private(set) var end: String?
    private(set) var reason: String?
    /// Set when the shutdown asked connections to finish: a close by the host after it is the
    /// shutdown's.
    var quiesced = false

    init(log: AccessLog, listener: String, peer: SocketAddress?, isProxyListener: Bool, started: NIODeadline) {
        self.log = log
        self.listener = listener
        self.peer = peer
        self.isProxyListener = isProxyListener
        self.started = started
    }

    /// Says how the connection ended, unless that was said before.
    func ended(_ end: String, reason: String? = nil) {
        guard self.end == nil else { return }
        self.end = end
        self.reason = reason
    }

    /// Queues the line, at `now` on the event loop's clock.
    func write(now: NIODeadline) {
        let duration = Double((now - started).nanoseconds) / 1e9
        var client = "-"
        var proxy = "-"
        if let known = self.client {
            client = known.displayText
            if proxied, let peer { proxy = peer.displayText }
        } else if let peer {
            // Ended before the header said who the client was: the peer is the proxy.
            if isProxyListener { proxy = peer.displayText } else { client = peer.displayText }
        }
        var line = "time=\(Self.timestamp()) listener=\(Self.value(listener)) service=\(service ?? "-") client=\(Self.value(client))"
        line += " proxy=\(Self.value(proxy)) target=\(Self.value(target?.displayText ?? "-")) bytes_in=\(bytesIn) bytes_out=\(bytesOut)"
        line += " duration=\(Self.milliseconds(duration)) end=\(end ?? "closed") reason=\(reason ?? "-")\n"
        log.record(line)
    }

    /// A short name for what failed a connection: the system's error name, or the error's type.
    static func kind(of error: any Error) -> String {
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNRESET: return "connection_reset"
            case EPIPE: return "broken_pipe"
            case ETIMEDOUT: return "timed_out"
            case EHOSTUNREACH: return "host_unreachable"
            case ENETUNREACH: return "network_unreachable"
            default: return "errno_\(error.errnoCode)"
            }
        }
        return String(describing: type(of: error))
    }

    /// A logfmt value: as it is, or quoted when it holds a space, a quote, an equals sign, a
    /// backslash or a control character (a UNIX socket's path may).
    static func value(_ text: String) -> String {
        guard !text.isEmpty else { return "\"\"" }
        let plain = text.utf8.allSatisfy { $0 > 0x20 && $0 != 0x22 && $0 != 0x3D && $0 != 0x5C && $0 != 0x7F }
        if plain { return text }
        var quoted = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: quoted += "\\u{\(String(scalar.value, radix: 16))}"
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    /// Seconds with three decimals: `0.004`, `12.500`.
    static func milliseconds(_ seconds: Double) -> String {
        let thousandths = Int((seconds * 1000).rounded())
        let fraction = String(thousandths % 1000)
        return "\(thousandths / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)"
    }

    /// Now in UTC, to the millisecond: `2026-12-04T20:41:07.123Z`.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let milliseconds = Int(now.tv_nsec / 1_000_000)
        let fraction = milliseconds < 10 ? "00\(milliseconds)" : milliseconds < 100 ? "0\(milliseconds)" : "\(milliseconds)"
        return
            "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(fraction)Z"
    }
}

@available(*, unavailable)
extension ConnectionRecord: Sendable {}
