import Crypto
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A plain blocking TCP socket, for clients that behave as badly as real ones: half-close,
/// never read, stream 100 MB. Use it from threads of its own (``BlockingSocket/onThread(_:)``),
/// never from Swift concurrency's shared pool.
public final class BlockingSocket: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public let descriptor: CInt

    /// Connects to `host:port` (IPv4 or IPv6 literal) from `source` (any port); a small
    /// `receiveBuffer` makes a slow reader whose backlog stays on the server.
    public init(connectingTo host: String, port: Int, from source: String? = nil, receiveBuffer: Int? = nil, sendBuffer: Int? = nil) throws {
        let family = host.contains(":") ? AF_INET6 : AF_INET
        descriptor = socket(family, CInt(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        do {
            // No test may hang on a server that stops answering.
            setTimeout(SO_RCVTIMEO, seconds: 60)
            setTimeout(SO_SNDTIMEO, seconds: 60)
            if var size = receiveBuffer.map(CInt.init) {
                setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<CInt>.size))
            }
            if var size = sendBuffer.map(CInt.init) {
                setsockopt(descriptor, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<CInt>.size))
            }
            if let source {
                var local = try Self.address(source, port: 0)
                guard
                    withUnsafePointer(
                        to: &local, { bind(descriptor, UnsafeRawPointer($0).assumingMemoryBound(to: sockaddr.self), Self.length(family)) }) == 0
                else {
                    throw Failure(description: "bind \(source): errno \(errno)")
                }
            }
            var remote = try Self.address(host, port: port)
            guard
                withUnsafePointer(
                    to: &remote, { Glibc.connect(descriptor, UnsafeRawPointer($0).assumingMemoryBound(to: sockaddr.self), Self.length(family)) }) == 0
            else {
                throw Failure(description: "connect \(host) \(port): errno \(errno)")
            }
        } catch {
            Glibc.close(descriptor)
            throw error
        }
    }

    private var isClosed = false

    deinit {
        close()
    }

    /// The local port (IPv4 or IPv6), once connected.
    public var localPort: Int? {
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard result == 0 else { return nil }
        return withUnsafeBytes(of: &address) { bytes in
            // sin_port and sin6_port are both at offset 2, in network order.
            Int(UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
        }
    }

    /// Closes the socket now (once).
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(descriptor)
    }

    /// Sends all of `bytes`; returns how many were sent before a send timeout, if one is set.
    @discardableResult
    public func send(_ bytes: UnsafeRawBufferPointer) throws -> Int {
        var sent = 0
        while sent < bytes.count {
            let result = Glibc.send(descriptor, bytes.baseAddress! + sent, bytes.count - sent, CInt(MSG_NOSIGNAL))
            if result < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return sent }
                throw Failure(description: "send: errno \(errno)")
            }
            sent += result
        }
        return sent
    }

    /// Sends the chunks `next` makes until `limit` bytes are sent or a send gives up (after the
    /// send timeout): a client that sends without reading. Returns how many bytes were sent.
    public func sendUntilBlocked(limit: Int, _ next: () -> [UInt8]) throws -> Int {
        var sent = 0
        while sent < limit {
            let chunk = next()
            let count = try chunk.withUnsafeBytes { try send($0) }
            sent += count
            if count < chunk.count { break }
        }
        return sent
    }

    public func send(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { _ = try send($0) }
    }

    /// Reads up to `buffer.count` bytes; 0 at the end of the stream.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let result = recv(descriptor, buffer.baseAddress, buffer.count, 0)
            if result >= 0 { return result }
            if errno == EINTR { continue }
            throw Failure(description: "recv: errno \(errno) (\(String(cString: strerror(errno))))")
        }
    }

    /// Everything until the peer closes.
    public func receiveAll() throws -> [UInt8] {
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = try buffer.withUnsafeMutableBytes { try receive(into: $0) }
            if count == 0 { return result }
            result += buffer[..<count]
        }
    }

    /// Closes the sending side: the peer reads the end of the stream.
    public func shutdownWrite() {
        shutdown(descriptor, CInt(SHUT_WR))
    }

    /// A send blocks at most `seconds`, then returns what it sent.
    public func setSendTimeout(seconds: Int) {
        setTimeout(SO_SNDTIMEO, seconds: seconds)
    }

    private func setTimeout(_ option: CInt, seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, option, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Runs `body` on a new thread and returns its result without blocking the caller's thread.
    public static func onThread<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result<Value, any Error> { try body() })
            }
        }
    }

    private static func address(_ text: String, port: Int) throws -> sockaddr_storage {
        var storage = sockaddr_storage()
        let ok = withUnsafeMutablePointer(to: &storage) { pointer -> Bool in
            if text.contains(":") {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { address in
                    address.pointee.sin6_family = sa_family_t(AF_INET6)
                    address.pointee.sin6_port = in_port_t(UInt16(port).bigEndian)
                    return inet_pton(AF_INET6, text, &address.pointee.sin6_addr) == 1
                }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address in
                address.pointee.sin_family = sa_family_t(AF_INET)
                address.pointee.sin_port = in_port_t(UInt16(port).bigEndian)
                return inet_pton(AF_INET, text, &address.pointee.sin_addr) == 1
            }
        }
        guard ok else { throw Failure(description: "not an IP address: \(text)") }
        return storage
    }

    private static func length(_ family: CInt) -> socklen_t {
        socklen_t(family == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
    }
}

/// A reproducible stream of pseudo-random bytes (SplitMix64), so a test can send far more than it
/// keeps in memory and still check every byte.
public struct ByteStream: Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    /// Fills `buffer` with the next bytes of the stream.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        var offset = 0
        while offset < buffer.count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var value = state
            value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
            value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
            value ^= value >> 31
            let count = min(8, buffer.count - offset)
            withUnsafeBytes(of: value.littleEndian) { word in
                buffer.baseAddress!.advanced(by: offset).copyMemory(from: word.baseAddress!, byteCount: count)
            }
            offset += count
        }
    }
}

/// What a streaming client saw: how much it sent and received, and the digests of both.
public struct StreamResult: Sendable, Equatable {
    public var sentBytes: Int
    public var sentDigest: String
    public var receivedBytes: Int
    public var receivedDigest: String
    /// How the server's side ended: `"eof"` for a clean close, else the error.
    public var end: String
}

extension BlockingSocket {
    /// Sends `prefix`, then `count` bytes of a seeded stream while reading back concurrently,
    /// half-closes, and reads to the end. A `slowReader` (a 16 KiB receive buffer and a 1 ms
    /// pause after each read) keeps the server's writes queued when the half-close arrives: the
    /// pattern that loses bytes when a server closes as soon as its client half-closes.
    public static func stream(
        to port: Int, host: String = "127.0.0.1", prefix: [UInt8] = [], count: Int, seed: UInt64, slowReader: Bool = false
    ) async throws -> StreamResult {
        let socket = try BlockingSocket(connectingTo: host, port: port, receiveBuffer: slowReader ? 16384 : nil)
        try socket.send(prefix)
        async let received: (Int, String, String) = onThread {
            var hash = SHA256()
            var total = 0
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count: Int
                do {
                    count = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }
                } catch {
                    return (total, hash.finalize().hex, "\(error)")
                }
                if count == 0 { return (total, hash.finalize().hex, "eof") }
                hash.update(data: buffer[..<count])
                total += count
                if slowReader { usleep(1000) }
            }
        }
        let sent: String = try await onThread {
            var hash = SHA256()
            var stream = ByteStream(seed: seed)
            var buffer = [UInt8](repeating: 0, count: 65536)
            var remaining = count
            while remaining > 0 {
                let chunk = min(remaining, buffer.count)
                buffer.withUnsafeMutableBytes { stream.fill(UnsafeMutableRawBufferPointer(rebasing: $0[..<chunk])) }
                hash.update(data: buffer[..<chunk])
                try buffer.withUnsafeBytes { _ = try socket.send(UnsafeRawBufferPointer(rebasing: $0[..<chunk])) }
                remaining -= chunk
            }
            socket.shutdownWrite()
            return hash.finalize().hex
        }
        let (receivedBytes, receivedDigest, end) = try await received
        return StreamResult(sentBytes: count, sentDigest: sent, receivedBytes: receivedBytes, receivedDigest: receivedDigest, end: end)
    }
}

extension SHA256.Digest {
    public var hex: String { map { String(format: "%02x", $0) }.joined() }
}
