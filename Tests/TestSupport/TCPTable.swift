import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// TCP states as `/proc/net/tcp` numbers them.
public enum TCPState {
    public static let established = 0x01
    public static let synSent = 0x02
    public static let closeWait = 0x08
    public static let listen = 0x0A
}

/// One row of `/proc/net/tcp` or `tcp6`. Addresses are as the kernel prints them: hex, each
/// 32-bit word in the machine's order (127.0.0.1 is `0100007F`).
public struct TCPSocket: Sendable {
    public var localAddress: String
    public var localPort: Int
    public var remoteAddress: String
    public var remotePort: Int
    public var state: Int
    public var inode: UInt64
}

/// The TCP sockets of `pid`'s network namespace (this process's by default), IPv4 and IPv6,
/// from the kernel's tables; none where they cannot be read.
///
/// Tests that must know what the kernel holds (a listener on exactly their address, a server's
/// sockets in CLOSE-WAIT, connects in progress) read the tables here, the one reader that reads
/// them whole: procfs files report no size, and a single read of `/proc/net/tcp` returns only
/// its first page.
public func tcpSockets(of pid: pid_t? = nil) -> [TCPSocket] {
    var rows: [TCPSocket] = []
    for table in ["tcp", "tcp6"] {
        let bytes = contentsOfProcFile(pid.map { "/proc/\($0)/net/\(table)" } ?? "/proc/net/\(table)")
        bytes.withUnsafeBufferPointer { text in
            var lineStart = 0
            var first = true
            while lineStart < text.count {
                var lineEnd = lineStart
                while lineEnd < text.count && text[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
                defer { lineStart = lineEnd + 1 }
                if first {
                    // The header line.
                    first = false
                    continue
                }
                if let row = tcpSocket(UnsafeBufferPointer(rebasing: text[lineStart..<lineEnd])) { rows.append(row) }
            }
        }
    }
    return rows
}

/// Whether a TCP socket listens on exactly `address` (dotted IPv4) and `port`, from the kernel's
/// table. A connect would also reach another test's listener on the wildcard address that took
/// the port number since; `nil` where `/proc/net/tcp` cannot be read.
public func listensExactly(on address: String, port: Int) -> Bool? {
    guard FileManager.default.isReadableFile(atPath: "/proc/net/tcp") else { return nil }
    let bytes = address.split(separator: ".").compactMap { UInt8($0) }
    guard bytes.count == 4 else { return nil }
    let local = bytes.reversed().map { String(format: "%02X", $0) }.joined()
    return tcpSockets().contains { $0.localAddress == local && $0.localPort == port && $0.state == TCPState.listen }
}

/// One line of `/proc/net/tcp`: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`.
private func tcpSocket(_ line: UnsafeBufferPointer<UInt8>) -> TCPSocket? {
    var fields: [Range<Int>] = []
    var index = 0
    while index < line.count && fields.count < 10 {
        while index < line.count && line[index] == UInt8(ascii: " ") { index += 1 }
        let start = index
        while index < line.count && line[index] != UInt8(ascii: " ") { index += 1 }
        if start < index { fields.append(start..<index) }
    }
    guard fields.count == 10 else { return nil }
    func number(_ range: Range<Int>, radix: Int) -> UInt64? {
        var value: UInt64 = 0
        for byte in line[range] {
            let digit: UInt64
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt64(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt64(byte - UInt8(ascii: "A") + 10)
            default: return nil
            }
            guard digit < radix else { return nil }
            value = value * UInt64(radix) + digit
        }
        return value
    }
    // The port follows the address's colon: the last 4 hex digits.
    func port(_ range: Range<Int>) -> Int? {
        guard range.count > 5 else { return nil }
        return number(range.upperBound - 4..<range.upperBound, radix: 16).map { Int($0) }
    }
    func address(_ range: Range<Int>) -> String {
        String(decoding: line[range.lowerBound..<(range.upperBound - 5)], as: UTF8.self)
    }
    guard let localPort = port(fields[1]), let remotePort = port(fields[2]), let state = number(fields[3], radix: 16),
        let inode = number(fields[9], radix: 10)
    else { return nil }
    return TCPSocket(
        localAddress: address(fields[1]), localPort: localPort, remoteAddress: address(fields[2]), remotePort: remotePort, state: Int(state),
        inode: inode)
}

/// A whole procfs file, read to its end.
private func contentsOfProcFile(_ path: String) -> [UInt8] {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return [] }
    defer { close(descriptor) }
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { return result }
        result += buffer[..<count]
    }
}

/// The TCP sockets of this process's network namespace in `state` (a ``TCPState`` number),
/// IPv4 and IPv6, as one snapshot: the kernel picks them out in a single `sock_diag` dump.
///
/// Reading `/proc/net/tcp` takes a read per page, and on a busy machine the sockets of its
/// first page and of its last are seen milliseconds apart: a socket closed and another opened
/// in between are both counted. A test that bounds how many sockets exist at once counts them
/// here. Empty where netlink cannot be used.
public func tcpSockets(inState state: Int) -> [TCPSocket] {
    [AF_INET, AF_INET6].flatMap { family in diagnosedTCPSockets(family: UInt8(family), state: state) }
}

/// One `SOCK_DIAG_BY_FAMILY` dump request (linux/inet_diag.h, linux/sock_diag.h), answered
/// with an `inet_diag_msg` per socket.
private func diagnosedTCPSockets(family: UInt8, state: Int) -> [TCPSocket] {
    let netlinkSockDiag: CInt = 4
    let descriptor = socket(AF_NETLINK, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), netlinkSockDiag)
    guard descriptor >= 0 else { return [] }
    defer { close(descriptor) }
    // nlmsghdr (16 bytes), then inet_diag_req_v2 (56 bytes): family, protocol, extensions,
    // padding, the states as a bit mask, and an inet_diag_sockid left empty (every socket).
    var request = [UInt8](repeating: 0, count: 72)
    func put32(_ value: UInt32, at offset: Int) { withUnsafeBytes(of: value) { request.replaceSubrange(offset..<offset + 4, with: $0) } }
    func put16(_ value: UInt16, at offset: Int) { withUnsafeBytes(of: value) { request.replaceSubrange(offset..<offset + 2, with: $0) } }
    put32(72, at: 0)
    put16(20, at: 4)  // SOCK_DIAG_BY_FAMILY
    put16(0x301, at: 6)  // NLM_F_REQUEST | NLM_F_DUMP
    put32(1, at: 8)
    request[16] = family
    request[17] = UInt8(IPPROTO_TCP)
    put32(1 << UInt32(state), at: 20)
    // Unconnected, a netlink socket sends to the kernel.
    guard request.withUnsafeBytes({ send(descriptor, $0.baseAddress, $0.count, 0) }) == request.count else { return [] }
    var sockets: [TCPSocket] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { return sockets }
        var offset = 0
        while offset + 16 <= count {
            let (length, type) = buffer.withUnsafeBytes {
                (Int($0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)), $0.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self))
            }
            // NLMSG_DONE, NLMSG_ERROR, or a message too short to be one.
            guard type != 3, type != 2, length >= 16 + 72, offset + length <= count else { return sockets }
            sockets.append(
                buffer.withUnsafeBytes { bytes in
                    // inet_diag_msg: family, state, timer, retransmits, then the sockid (ports in
                    // network order, addresses of 16 bytes), ..., the inode at 68.
                    let message = offset + 16
                    func port(_ at: Int) -> Int { Int(UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: message + at, as: UInt16.self))) }
                    // As /proc/net/tcp prints it: each 32-bit word in the machine's order.
                    func address(_ at: Int) -> String {
                        (0..<(family == UInt8(AF_INET) ? 1 : 4)).map {
                            String(format: "%08X", bytes.loadUnaligned(fromByteOffset: message + at + $0 * 4, as: UInt32.self))
                        }.joined()
                    }
                    return TCPSocket(
                        localAddress: address(8), localPort: port(4), remoteAddress: address(24), remotePort: port(6),
                        state: Int(bytes[message + 1]), inode: UInt64(bytes.loadUnaligned(fromByteOffset: message + 68, as: UInt32.self)))
                })
            offset += (length + 3) & ~3
        }
    }
}
