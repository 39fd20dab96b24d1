#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads the files a configuration names (certificates, keys, the configuration file itself),
/// only if they are regular files, and never blocking on one that is not.
///
/// Opening a FIFO for reading waits for a writer, and reading one or a device may never end:
/// either would hold a start-up or a reload, and with it the shutdown, forever. So the file is
/// opened non-blocking (a FIFO's open then returns at once), checked with `fstat`, and refused,
/// with what it is, unless it is a regular file of at most the size its caller allows.
package enum RegularFile {
    /// The most read from a certificate or key file: a PEM chain is a few kilobytes.
    package static let pemSizeLimit = 1 << 20

    /// The most read from a configuration file.
    package static let configurationSizeLimit = 16 << 20

    /// Why a file was not read: what it is, its size, or the system's error.
    package struct Failure: Error, CustomStringConvertible, Sendable {
        /// The reason, such as "it is a FIFO, not a regular file"; callers add the path.
        package let description: String
    }

    /// The whole of the regular file at `path`, at most `sizeLimit` bytes.
    ///
    /// - Throws: ``Failure`` if the path is missing or unreadable, is not a regular file (a
    ///   FIFO, a directory, a device, a socket), or holds more than `sizeLimit` bytes.
    package static func contents(of path: String, sizeLimit: Int) throws(Failure) -> [UInt8] {
        // Looked at before it is opened, too: opening some devices acts on them (a tape rewinds).
        var status = stat()
        if stat(path, &status) == 0, let kind = kind(of: status.st_mode) {
            throw notRegular(kind)
        }
        var descriptor: CInt
        repeat {
            descriptor = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        } while descriptor < 0 && errno == EINTR
        guard descriptor >= 0 else { throw systemError() }
        defer { close(descriptor) }
        // Checked again on what was opened: the path may have been replaced since.
        guard fstat(descriptor, &status) == 0 else { throw systemError() }
        if let kind = kind(of: status.st_mode) { throw notRegular(kind) }
        guard status.st_size <= sizeLimit else { throw tooLarge(Int(status.st_size), sizeLimit) }

        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(status.st_size))
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw systemError() }
            if count == 0 { return bytes }
            bytes += buffer[..<count]
            // The file may grow while it is read.
            guard bytes.count <= sizeLimit else { throw tooLarge(bytes.count, sizeLimit) }
        }
    }

    /// What a file of `mode` is, if not a regular file.
    static func kind(of mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: nil
        case S_IFDIR: "a directory"
        case S_IFIFO: "a FIFO"
        case S_IFSOCK: "a socket"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFLNK: "a symbolic link"
        default: "a special file"
        }
    }

    private static func notRegular(_ kind: String) -> Failure {
        Failure(description: "it is \(kind), not a regular file")
    }

    private static func tooLarge(_ size: Int, _ limit: Int) -> Failure {
        Failure(description: "it is larger than \(sizeText(limit)) (\(size) bytes), the most read from such a file")
    }

    private static func systemError() -> Failure {
        Failure(description: String(cString: strerror(errno)))
    }

    /// `limit` in the largest binary unit that divides it.
    static func sizeText(_ limit: Int) -> String {
        if limit >= 1 << 20 && limit % (1 << 20) == 0 { return "\(limit >> 20) MiB" }
        if limit >= 1 << 10 && limit % (1 << 10) == 0 { return "\(limit >> 10) KiB" }
        return "\(limit) bytes"
    }
}
