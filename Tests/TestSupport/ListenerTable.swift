import Foundation

/// Whether a TCP socket listens on exactly `address` (dotted IPv4) and `port`, from the kernel's
/// table. A connect would also reach another test's listener on the wildcard address that took
/// the port number since; `nil` where `/proc/net/tcp` cannot be read.
public func listensExactly(on address: String, port: Int) -> Bool? {
    // Read to the end: String(contentsOfFile:) stops after the first page of a /proc file.
    guard let data = FileHandle(forReadingAtPath: "/proc/net/tcp")?.readDataToEndOfFile(), !data.isEmpty else { return nil }
    let bytes = address.split(separator: ".").compactMap { UInt8($0) }
    guard bytes.count == 4 else { return nil }
    // The address as the kernel prints it (little-endian hex), and LISTEN (0A).
    let local = bytes.reversed().map { String(format: "%02X", $0) }.joined() + ":" + String(format: "%04X", port)
    return String(decoding: data, as: UTF8.self).split(separator: "\n").contains { line in
        let fields = line.split(separator: " ")
        return fields.count > 3 && fields[1] == local && fields[3] == "0A"
    }
}
