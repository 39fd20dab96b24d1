import Foundation
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Listening sockets of other processes on the host's addresses.
///
/// The host listens with `SO_REUSEPORT` (a socket per event loop), which Linux lets any process
/// of the same user share. A bind without it before the host's own binds catches an address
/// that is already taken, but not a second host started at the same moment: both would pass
/// that check and split the connections. So once bound, the host looks in `/proc/net/tcp{,6}`
/// for listening sockets on its ports, on the same address or a wildcard, that are not among its
/// own descriptors.
///
/// Later arrivals are not caught: sharing a port with a process of the same user is what
/// `SO_REUSEPORT` allows, as it does for HAProxy, Envoy and nginx's `reuseport`.
enum ForeignListeners {
    /// Fails if anyone listens on `host:port`, with `SO_REUSEPORT` or not: a plain bind, never a
    /// listen, so that no connection can arrive on the probe and be left there unanswered.
    static func probe(_ host: String, port: Int) throws(NetProxyConfigurationError) {
        func failure(_ call: String) -> NetProxyConfigurationError {
            switch errno {
            case EADDRINUSE:
                return NetProxyConfigurationError("the port is in use")
            case EACCES where port < 1024:
                // What an operator running as a service user meets first on port 443.
                return NetProxyConfigurationError(
                    "\(call): \(String(cString: strerror(errno))): ports below 1024 need root or CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE)"
                )
            default:
                return NetProxyConfigurationError("\(call): \(String(cString: strerror(errno)))")
            }
        }
        let address: SocketAddress
        do {
            address = try SocketAddress(ipAddress: host, port: port)
        } catch {
            throw NetProxyConfigurationError("\(error)")
        }
        let family = CInt(address.protocol.rawValue)
        // Glibc imports the socket types as enums, Musl as integers; Darwin has no SOCK_CLOEXEC.
        #if canImport(Glibc)
            let descriptor = socket(family, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        #elseif canImport(Musl)
            let descriptor = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0)
        #else
            let descriptor = socket(family, SOCK_STREAM, 0)
            if descriptor >= 0 { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        #endif
        guard descriptor >= 0 else { throw failure("socket") }
        defer { _ = close(descriptor) }
        var on: CInt = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<CInt>.size))
        let bound = address.withSockAddr { bind(descriptor, $0, socklen_t($1)) }
        guard bound == 0 else { throw failure("bind") }
    }

    /// The addresses among `addresses` where another process listens too; empty where `/proc`
    /// cannot tell.
    static func shared(among addresses: [SocketAddress]) -> [SocketAddress] {
        guard !addresses.isEmpty, let own = ownSocketInodes() else { return [] }
        var foreign: [(address: Substring, port: Int)] = []
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = readWhole(table) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                // sl local_address rem_address st ... inode; the local address is ADDRESS:PORT
                // in hex, the address as the kernel's 32-bit words; 0A is LISTEN.
                let fields = line.split(separator: " ")
                guard fields.count > 9, fields[3] == "0A", let colon = fields[1].lastIndex(of: ":"),
                    let port = Int(fields[1][fields[1].index(after: colon)...], radix: 16),
                    let inode = UInt64(fields[9]), !own.contains(inode)
                else { continue }
                foreign.append((fields[1][..<colon], port))
            }
        }
        return addresses.filter { address in
            guard let port = address.port, let words = procWords(address) else { return false }
            return foreign.contains { other in
                other.port == port && (other.address == words || isWildcard(other.address) || isWildcard(Substring(words)))
            }
        }
    }

    /// The address as `/proc/net/tcp{,6}` prints it: each 32-bit word of the address, as stored,
    /// in eight hex digits.
    private static func procWords(_ address: SocketAddress) -> String? {
        func words(_ bytes: UnsafeRawBufferPointer) -> String {
            stride(from: 0, to: bytes.count, by: 4).map { offset in
                let word = String(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self), radix: 16, uppercase: true)
                return String(repeating: "0", count: 8 - word.count) + word
            }.joined()
        }
        switch address {
        case .v4(let v4):
            var raw = v4.address.sin_addr
            return withUnsafeBytes(of: &raw, words)
        case .v6(let v6):
            var raw = v6.address.sin6_addr
            return withUnsafeBytes(of: &raw, words)
        case .unixDomainSocket:
            return nil
        }
    }

    private static func isWildcard(_ words: Substring) -> Bool {
        words.allSatisfy { $0 == "0" }
    }

    /// The paths that other processes' listening UNIX sockets were bound to (`/proc/net/unix`
    /// keeps the name given to `bind`, even after the file is renamed or removed); `nil` where
    /// `/proc` cannot tell.
    static func unixListenerPaths() -> [String]? {
        guard let own = ownSocketInodes(), let text = readWhole("/proc/net/unix") else { return nil }
        var paths: [String] = []
        for line in text.split(separator: "\n").dropFirst() {
            // Num RefCount Protocol Flags Type St Inode Path; flag 00010000 is a listening socket.
            let fields = line.split(separator: " ", maxSplits: 7)
            guard fields.count == 8, fields[3] == "00010000", let inode = UInt64(fields[6]), !own.contains(inode) else { continue }
            paths.append(String(fields[7]))
        }
        return paths
    }

    /// A `/proc` file to its end: its size says 0, and each read returns what fits of whole
    /// lines, so the buffer is large (a busy host has tens of thousands of lines).
    private static func readWhole(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 18)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += buffer[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The inodes of this process's sockets (`socket:[N]` in `/proc/self/fd`).
    private static func ownSocketInodes() -> Set<UInt64>? {
        let directory = "/proc/self/fd"
        guard let descriptors = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return nil }
        var inodes: Set<UInt64> = []
        for descriptor in descriptors {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\(descriptor)"),
                target.hasPrefix("socket:["), target.hasSuffix("]"),
                let inode = UInt64(target.dropFirst("socket:[".count).dropLast())
            else { continue }
            inodes.insert(inode)
        }
        return inodes
    }
}
