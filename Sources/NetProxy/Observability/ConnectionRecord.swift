import NIOCore
import NIOProxyProtocol
import ProxyProtocol

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
    /// How a multiplexer chose ``service``: `edge:http`, `edge:tls_routes[0]`, `edge:default`.
    var route: String?
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

    /// Queues the line, at `now` on the event loop's clock. Written byte by byte into the log's
    /// buffer: formatting through strings cost more than the rest of a short connection's
    /// bookkeeping.
    func write(now: NIODeadline) {
        let nanoseconds = (now - started).nanoseconds
        log.record { line in
            line.writeStaticString("time=")
            Self.writeTimestamp(into: &line)
            line.writeStaticString(" listener=")
            Self.writeValue(listener, into: &line)
            line.writeStaticString(" service=")
            if let service { line.writeString(service) } else { line.writeStaticString("-") }
            // Ended before the header said who the client was: the peer is the proxy.
            let client = self.client ?? (isProxyListener ? nil : peer)
            let proxy = self.client == nil ? (isProxyListener ? peer : nil) : (proxied ? peer : nil)
            line.writeStaticString(" route=")
            if let route { line.writeString(route) } else { line.writeStaticString("-") }
            line.writeStaticString(" client=")
            Self.writeAddress(client, into: &line)
            line.writeStaticString(" proxy=")
            Self.writeAddress(proxy, into: &line)
            line.writeStaticString(" target=")
            Self.writeAddress(target, into: &line)
            line.writeStaticString(" bytes_in=")
            Self.writeNumber(bytesIn, into: &line)
            line.writeStaticString(" bytes_out=")
            Self.writeNumber(bytesOut, into: &line)
            line.writeStaticString(" duration=")
            Self.writeSeconds(nanoseconds, into: &line)
            line.writeStaticString(" end=")
            line.writeString(end ?? "closed")
            line.writeStaticString(" reason=")
            line.writeString(reason ?? "-")
            line.writeStaticString("\n")
        }
    }

    /// An IP address and port as `192.0.2.1:443` or `[2001:db8::1]:443`; a UNIX peer as a
    /// quoted value when it needs quotes; `-` for none.
    static func writeAddress(_ address: SocketAddress?, into line: inout ByteBuffer) {
        guard let address else {
            line.writeStaticString("-")
            return
        }
        guard let port = address.port else { return writeValue(address.displayText, into: &line) }
        switch ProxyIPAddress(address) {
        case .v4(let ip)?:
            ip.writeText(into: &line)
        case .v6(let ip)?:
            line.writeStaticString("[")
            ip.writeText(into: &line)
            line.writeStaticString("]")
        case nil:
            return writeValue(address.displayText, into: &line)
        }
        line.writeStaticString(":")
        writeNumber(port, into: &line)
    }

    static func writeNumber(_ number: Int, into line: inout ByteBuffer) {
        var digits = 1
        var rest = number / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        line.writeWithUnsafeMutableBytes(minimumWritableBytes: digits) { bytes in
            put(max(0, number), at: 0, width: digits, into: bytes)
            return digits
        }
    }

    /// Writes `number`'s last `width` digits at `offset`, zeros first.
    private static func put(_ number: Int, at offset: Int, width: Int, into bytes: UnsafeMutableRawBufferPointer) {
        var value = number
        for index in stride(from: offset + width - 1, through: offset, by: -1) {
            bytes[index] = UInt8(ascii: "0") + UInt8(value % 10)
            value /= 10
        }
    }

    /// Seconds with three decimals: `0.004`, `12.500`.
    static func writeSeconds(_ nanoseconds: Int64, into line: inout ByteBuffer) {
        let thousandths = Int((nanoseconds + 500_000) / 1_000_000)
        writeNumber(thousandths / 1000, into: &line)
        line.writeWithUnsafeMutableBytes(minimumWritableBytes: 4) { bytes in
            bytes[0] = UInt8(ascii: ".")
            put(thousandths % 1000, at: 1, width: 3, into: bytes)
            return 4
        }
    }

    /// Now in UTC, to the millisecond: `2026-12-04T20:41:07.123Z`, in one write.
    static func writeTimestamp(into line: inout ByteBuffer) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        line.writeWithUnsafeMutableBytes(minimumWritableBytes: 24) { bytes in
            put(Int(parts.tm_year) + 1900, at: 0, width: 4, into: bytes)
            put(Int(parts.tm_mon) + 1, at: 5, width: 2, into: bytes)
            put(Int(parts.tm_mday), at: 8, width: 2, into: bytes)
            put(Int(parts.tm_hour), at: 11, width: 2, into: bytes)
            put(Int(parts.tm_min), at: 14, width: 2, into: bytes)
            put(Int(parts.tm_sec), at: 17, width: 2, into: bytes)
            put(now.tv_nsec / 1_000_000, at: 20, width: 3, into: bytes)
            (bytes[4], bytes[7], bytes[10]) = (UInt8(ascii: "-"), UInt8(ascii: "-"), UInt8(ascii: "T"))
            (bytes[13], bytes[16], bytes[19], bytes[23]) = (UInt8(ascii: ":"), UInt8(ascii: ":"), UInt8(ascii: "."), UInt8(ascii: "Z"))
            return 24
        }
    }

    /// A logfmt value: as it is, or quoted when it holds a space, a quote, an equals sign, a
    /// backslash or a control character (a UNIX socket's path may).
    static func writeValue(_ text: String, into line: inout ByteBuffer) {
        line.writeString(value(text))
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
}

@available(*, unavailable)
extension ConnectionRecord: Sendable {}
