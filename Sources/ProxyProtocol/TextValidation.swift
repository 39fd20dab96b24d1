import NIOCore

// The one place that says what US-ASCII and UTF-8 text are: the parser checks TLV values with
// these, and the accessors that turn values into strings use the same checks, so a value the
// parser accepted always reads back as text.

/// Whether every byte is US-ASCII (below 0x80).
func isASCII(_ bytes: UnsafeRawBufferPointer) -> Bool {
    bytes.allSatisfy { $0 < 0x80 }
}

/// Whether `bytes` are well-formed UTF-8 (no overlong forms, surrogates or values past U+10FFFF).
func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
    var index = 0
    let count = bytes.count
    while index < count {
        let lead = bytes[index]
        if lead < 0x80 {
            index += 1
            continue
        }
        let length: Int
        var lowest: UInt8 = 0x80
        var highest: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0:
            length = 3
            lowest = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED:
            length = 3
            highest = 0x9F
        case 0xF0:
            length = 4
            lowest = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4:
            length = 4
            highest = 0x8F
        default: return false
        }
        guard count - index >= length else { return false }
        let second = bytes[index + 1]
        guard second >= lowest, second <= highest else { return false }
        for continuation in (index + 2)..<(index + length) where bytes[continuation] & 0xC0 != 0x80 {
            return false
        }
        index += length
    }
    return true
}

extension String {
    /// The buffer's bytes as text if they are well-formed UTF-8.
    package init?(validatingUTF8Buffer buffer: ByteBuffer) {
        guard buffer.withUnsafeReadableBytes(isValidUTF8) else { return nil }
        self.init(buffer: buffer)
    }

    /// The buffer's bytes as text if they are all US-ASCII.
    init?(asciiBuffer buffer: ByteBuffer) {
        guard buffer.withUnsafeReadableBytes(isASCII) else { return nil }
        self.init(buffer: buffer)
    }
}
