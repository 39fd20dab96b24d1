/// CRC-32C (Castagnoli), the checksum of version 2's CRC32C TLV (RFC 4960, appendix B).
///
/// Table-driven, eight bytes per step ("slicing-by-8"). `CRC32C.checksum("123456789".utf8)` is
/// `0xE3069283`.
public struct CRC32C: Hashable, Sendable {
    /// The running state: the inverted checksum so far.
    private var state: UInt32 = 0xFFFF_FFFF

    /// A checksum of nothing yet.
    public init() {}

    /// The checksum of the bytes fed so far.
    public var value: UInt32 { ~state }

    /// Feeds bytes.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var crc = state
        var index = 0
        let count = bytes.count
        crc32cTables.withUnsafeBufferPointer { table in
            while count - index >= 8 {
                let word =
                    UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8
                    | UInt32(bytes[index + 2]) << 16 | UInt32(bytes[index + 3]) << 24
                let low = crc ^ word
                crc =
                    table[7 * 256 + Int(low & 0xFF)]
                    ^ table[6 * 256 + Int((low >> 8) & 0xFF)]
                    ^ table[5 * 256 + Int((low >> 16) & 0xFF)]
                    ^ table[4 * 256 + Int(low >> 24)]
                    ^ table[3 * 256 + Int(bytes[index + 4])]
                    ^ table[2 * 256 + Int(bytes[index + 5])]
                    ^ table[1 * 256 + Int(bytes[index + 6])]
                    ^ table[Int(bytes[index + 7])]
                index += 8
            }
            while index < count {
                crc = table[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
                index += 1
            }
        }
        state = crc
    }

    /// Feeds bytes.
    public mutating func update(_ bytes: some Sequence<UInt8>) {
        if bytes.withContiguousStorageIfAvailable({ update(UnsafeRawBufferPointer($0)) }) == nil {
            let array = Array(bytes)
            array.withUnsafeBytes { update($0) }
        }
    }

    /// Feeds `count` zero bytes.
    public mutating func updateWithZeros(count: Int) {
        let zeros: (UInt64, UInt64) = (0, 0)
        var remaining = count
        withUnsafeBytes(of: zeros) { zeros in
            while remaining > 0 {
                let step = min(remaining, zeros.count)
                update(UnsafeRawBufferPointer(rebasing: zeros[0..<step]))
                remaining -= step
            }
        }
    }

    /// The checksum of `bytes`.
    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc = CRC32C()
        crc.update(bytes)
        return crc.value
    }
}

/// Eight 256-entry tables: table 0 is the classic byte-at-a-time table for the reflected
/// polynomial 0x82F63B78; table k advances a byte through k further zero bytes.
private let crc32cTables: [UInt32] = {
    var table = [UInt32](repeating: 0, count: 8 * 256)
    for byte in 0..<256 {
        var crc = UInt32(byte)
        for _ in 0..<8 {
            crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1
        }
        table[byte] = crc
    }
    for slice in 1..<8 {
        for byte in 0..<256 {
            let previous = table[(slice - 1) * 256 + byte]
            table[slice * 256 + byte] = table[Int(previous & 0xFF)] ^ (previous >> 8)
        }
    }
    return table
}()
