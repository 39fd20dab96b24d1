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

    /// Queues the line, at `now` on the event loop's clock. Formatted on the stack in one pass
    /// (through strings it cost more than the rest of a short connection's bookkeeping), and
    /// copied into the log's buffer under its lock.
    func write(now: NIODeadline) {
        let nanoseconds = (now - started).nanoseconds
        // Ended before the header said who the client was: the peer is the proxy.
        let client = self.client ?? (isProxyListener ? nil : peer)
        let proxy = self.client == nil ? (isProxyListener ? peer : nil) : (proxied ? peer : nil)
        let end = end ?? "closed"
        let length =
            Self.fixedLength + Self.maximumValueLength(listener) + Self.maximumValueLength(service) + Self.maximumValueLength(route)
            + Self.maximumValueLength(end) + Self.maximumValueLength(reason) + Self.maximumAddressLength(client)
            + Self.maximumAddressLength(proxy) + Self.maximumAddressLength(target)
        withUnsafeTemporaryAllocation(byteCount: length, alignment: 1) { bytes in
            var line = ASCIIWriter(bytes)
            line.append("time=")
            Self.writeTimestamp(into: &line)
            line.append(" listener=")
            Self.writeValue(listener, into: &line)
            line.append(" service=")
            Self.writeValue(service, into: &line)
            line.append(" route=")
            Self.writeValue(route, into: &line)
            line.append(" client=")
            Self.writeAddress(client, into: &line)
            line.append(" proxy=")
            Self.writeAddress(proxy, into: &line)
            line.append(" target=")
            Self.writeAddress(target, into: &line)
            line.append(" bytes_in=")
            line.appendDecimal(bytesIn)
            line.append(" bytes_out=")
            line.appendDecimal(bytesOut)
            line.append(" duration=")
            Self.writeSeconds(nanoseconds, into: &line)
            line.append(" end=")
            Self.writeValue(end, into: &line)
            line.append(" reason=")
            Self.writeValue(reason, into: &line)
            line.append(UInt8(ascii: "\n"))
            log.record(UnsafeRawBufferPointer(rebasing: bytes[..<line.count]))
        }
    }

    /// The line's keys, separators and numbers at their longest: the keys and spaces (about
    /// 100), the time (24), two byte counts (20 digits each) and the duration (23).
    static let fixedLength = 200

    /// The most bytes a value takes: `-`, or each byte escaped (`\u{1f}`) between quotes.
    static func maximumValueLength(_ text: String?) -> Int {
        guard let text else { return 1 }
        return text.utf8.count * 7 + 2
    }

    static func maximumAddressLength(_ address: SocketAddress?) -> Int {
        guard let address else { return 1 }
        guard address.port != nil, ProxyIPAddress(address) != nil else { return maximumValueLength(address.displayText) }
        // `[` IPv6 `]:` port.
        return ProxyIPv6Address.maximumTextLength + 8
    }

    /// An IP address and port as `192.0.2.1:443` or `[2001:db8::1]:443`; a UNIX peer as a
    /// quoted value when it needs quotes; `-` for none.
    static func writeAddress(_ address: SocketAddress?, into line: inout ASCIIWriter) {
        guard let address else { return line.append("-") }
        guard let port = address.port else { return writeValue(address.displayText, into: &line) }
        switch ProxyIPAddress(address) {
        case .v4(let ip)?:
            ip.writeText(into: &line)
        case .v6(let ip)?:
            line.append("[")
            ip.writeText(into: &line)
            line.append("]")
        case nil:
            return writeValue(address.displayText, into: &line)
        }
        line.append(":")
        line.appendDecimal(port)
    }

    /// Seconds with three decimals: `0.004`, `12.500`.
    static func writeSeconds(_ nanoseconds: Int64, into line: inout ASCIIWriter) {
        let (whole, rest) = max(0, nanoseconds).quotientAndRemainder(dividingBy: 1_000_000)
        let thousandths = Int(whole) + (rest >= 500_000 ? 1 : 0)
        line.appendDecimal(thousandths / 1000)
        line.append(".")
        line.appendDecimal(thousandths % 1000, width: 3)
    }

    /// Now in UTC, to the millisecond: `2026-12-04T20:41:07.123Z`.
    static func writeTimestamp(into line: inout ASCIIWriter) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        line.appendDecimal(Int(parts.tm_year) + 1900, width: 4)
        line.append("-")
        line.appendDecimal(Int(parts.tm_mon) + 1, width: 2)
        line.append("-")
        line.appendDecimal(Int(parts.tm_mday), width: 2)
        line.append("T")
        line.appendDecimal(Int(parts.tm_hour), width: 2)
        line.append(":")
        line.appendDecimal(Int(parts.tm_min), width: 2)
        line.append(":")
        line.appendDecimal(Int(parts.tm_sec), width: 2)
        line.append(".")
        line.appendDecimal(now.tv_nsec / 1_000_000, width: 3)
        line.append("Z")
    }

    /// A logfmt value: `-` for none; as it is, or quoted when it holds a space, a quote, an
    /// equals sign, a backslash or a control character (a UNIX socket's path or a service's
    /// name may).
    static func writeValue(_ text: String?, into line: inout ASCIIWriter) {
        guard var text else { return line.append("-") }
        text.withUTF8 { bytes in
            guard !bytes.isEmpty else { return line.append("\"\"") }
            guard !bytes.allSatisfy(isPlain) else { return line.append(UnsafeRawBufferPointer(bytes)) }
            line.append(UInt8(ascii: "\""))
            for byte in bytes {
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                    line.append(UInt8(ascii: "\\"))
                    line.append(byte)
                case UInt8(ascii: "\n"):
                    line.append("\\n")
                case _ where byte < 0x20 || byte == 0x7F:
                    line.append("\\u{")
                    if byte >= 0x10 { line.append(hexDigit(byte >> 4)) }
                    line.append(hexDigit(byte & 0xF))
                    line.append("}")
                default:
                    // A space, an equals sign, or any byte of a longer UTF-8 scalar.
                    line.append(byte)
                }
            }
            line.append(UInt8(ascii: "\""))
        }
    }

    /// Whether `byte` may appear in an unquoted logfmt value.
    private static func isPlain(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "=") && byte != UInt8(ascii: "\\") && byte != 0x7F
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
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
}

@available(*, unavailable)
extension ConnectionRecord: Sendable {}
