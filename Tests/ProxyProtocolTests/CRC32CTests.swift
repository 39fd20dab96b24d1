import PropertyBased
import ProxyProtocol
import Testing

@Suite struct CRC32CTests {
    @Test func checkValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }

    /// The iSCSI vectors of RFC 3720, appendix B.4.
    @Test func rfc3720Vectors() {
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).reversed().map { UInt8($0) }) == 0x113F_DB5C)
    }

    @Test func emptyInput() {
        #expect(CRC32C.checksum([UInt8]()) == 0)
        #expect(CRC32C().value == 0)
    }

    /// The sliced path and the byte-at-a-time path agree on every length and split.
    @Test func incrementalUpdatesMatchOneShot() {
        let data = (0..<100).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        let whole = CRC32C.checksum(data)
        for split in 0...data.count {
            var crc = CRC32C()
            crc.update(data[..<split])
            crc.update(data[split...])
            #expect(crc.value == whole, "split at \(split)")
        }
        for length in 0...20 {
            var zeros = CRC32C()
            zeros.updateWithZeros(count: length)
            #expect(zeros.value == CRC32C.checksum([UInt8](repeating: 0, count: length)))
        }
    }

    /// A bit-by-bit reference, independent of the tables.
    @Test func matchesBitwiseReference() {
        func reference(_ bytes: [UInt8]) -> UInt32 {
            var crc: UInt32 = 0xFFFF_FFFF
            for byte in bytes {
                crc ^= UInt32(byte)
                for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            }
            return ~crc
        }
        // Seeded, so that a failure comes back with the same bytes on every run.
        var generator = Xoshiro(seed: (0x0C0F_FEE5, 1, 2, 3))
        for length in [1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000] {
            let data = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(CRC32C.checksum(data) == reference(data), "length \(length)")
        }
    }
}
