import NIOCore
import Testing

@testable import ProxyProtocol

/// The one-pass reading of complete version 1 lines must accept exactly what the field-by-field
/// reading accepts, with the same result: it is only a shortcut.
struct V1FastPathTests {
    /// A small seeded generator, so a failure can be replayed.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E4B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let valid = [
        "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n",
        "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
        "PROXY TCP4 10.0.0.1 10.0.0.2 1 9\r\n",
        "PROXY TCP6 2001:db8::1 2001:db8:ffff::22 51234 443\r\n",
        "PROXY TCP6 :: ::1 80 8080\r\n",
        "PROXY TCP6 ::ffff:192.0.2.1 1:2:3:4:5:6:7:8 1000 2000\r\n",
        "PROXY TCP6 1:2:3:4:5:6:1.2.3.4 fe80:: 65535 0\r\n",
        "PROXY UNKNOWN\r\n",
        "PROXY UNKNOWN 192.0.2.1 198.51.100.7 1 2\r\n",
    ]

    /// What the field-by-field reading makes of `bytes`: the header and its length, or `nil`
    /// for an error or an incomplete line.
    static func slowResult(_ bytes: [UInt8], limit: Int) -> (ProxyHeader, Int)? {
        let buffer = ByteBuffer(bytes: bytes)
        return bytes.withUnsafeBytes { raw in
            guard let scanned = try? V1Parser(bytes: raw, limit: limit).parseFields() else { return nil }
            return (scanned.header(in: buffer), scanned.length)
        }
    }

    static func fastResult(_ bytes: [UInt8], limit: Int) -> (ProxyHeader, Int)? {
        let buffer = ByteBuffer(bytes: bytes)
        return bytes.withUnsafeBytes { raw in
            V1Parser(bytes: raw, limit: limit).scanValidLine().map { ($0.header(in: buffer), $0.length) }
        }
    }

    @Test(arguments: valid)
    func validLinesReadTheSameBothWays(_ line: String) throws {
        let bytes = Array(line.utf8) + Array("GET / HTTP/1.1\r\n".utf8)
        let slow = try #require(Self.slowResult(bytes, limit: 107))
        #expect(slow.1 == line.utf8.count)
        if line.hasPrefix("PROXY UNKNOWN ") {
            // Valid but unusual: left to the field-by-field reading.
            #expect(Self.fastResult(bytes, limit: 107) == nil)
        } else {
            let fast = try #require(Self.fastResult(bytes, limit: 107))
            #expect(fast.0 == slow.0)
            #expect(fast.1 == slow.1)
        }
    }

    /// Mutated lines (a byte changed, inserted or removed; the line cut short; a lower limit):
    /// whenever the shortcut answers, the careful reading gives the same answer.
    @Test func mutatedLinesNeverReadDifferently() {
        var random = SplitMix64(state: 20_261_126)
        let alphabet = Array("0123456789abcdefABCDEF.: \r\nPROXYTCP46UNKOW\u{0}x-".utf8)
        let digits = Array("0123456789".utf8)
        var shortcutAnswers = 0
        var disagreements: [String] = []
        for round in 0..<100_000 {
            var bytes = Array(Self.valid[round % Self.valid.count].utf8)
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let position = Int.random(in: 6..<bytes.count, using: &random)
                switch Int.random(in: 0..<4, using: &random) {
                case 0: bytes[position] = (Bool.random(using: &random) ? digits : alphabet).randomElement(using: &random)!
                case 1: bytes.insert(alphabet.randomElement(using: &random)!, at: position)
                case 2: bytes.remove(at: position)
                default: bytes.removeSubrange(position...)
                }
                if bytes.count <= 6 { break }
            }
            let limit = Bool.random(using: &random) ? 107 : Int.random(in: 16...60, using: &random)
            guard let fast = Self.fastResult(bytes, limit: limit) else { continue }
            shortcutAnswers += 1
            let slow = Self.slowResult(bytes, limit: limit)
            if slow?.0 != fast.0 || slow?.1 != fast.1 {
                disagreements.append(String(decoding: bytes, as: UTF8.self).debugDescription + " limit \(limit)")
            }
        }
        #expect(disagreements == [])
        // The mutations keep many lines valid (a digit for a digit, a cut after the CRLF), so the
        // shortcut is exercised, not only skipped.
        #expect(shortcutAnswers > 4_000)
    }
}
