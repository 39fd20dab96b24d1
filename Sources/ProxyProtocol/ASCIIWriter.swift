import NIOCore

/// Writes text into memory reserved beforehand: one capacity check for a whole line, instead of
/// one `ByteBuffer` operation per byte or per piece, on text that runs for every connection
/// (addresses in a JSON reply, an access log line).
///
/// The caller reserves enough for everything it writes; writing past the end traps.
@usableFromInline package struct ASCIIWriter: ~Copyable {
    @usableFromInline let bytes: UnsafeMutableRawBufferPointer
    /// How many bytes have been written.
    @usableFromInline package private(set) var count = 0

    @inlinable package init(_ bytes: UnsafeMutableRawBufferPointer) {
        self.bytes = bytes
    }

    @inlinable package mutating func append(_ byte: UInt8) {
        precondition(count < bytes.count, "ASCIIWriter: past the reserved bytes")
        bytes[count] = byte
        count += 1
    }

    @inlinable package mutating func append(_ text: StaticString) {
        append(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    @inlinable package mutating func append(_ raw: UnsafeRawBufferPointer) {
        precondition(raw.count <= bytes.count - count, "ASCIIWriter: past the reserved bytes")
        if let base = raw.baseAddress { (bytes.baseAddress! + count).copyMemory(from: base, byteCount: raw.count) }
        count += raw.count
    }

    /// A non-negative number in decimal, at least `width` digits (zeros first).
    @inlinable package mutating func appendDecimal(_ number: Int, width: Int = 1) {
        precondition(number >= 0, "ASCIIWriter: a negative number")
        var digits = 1
        var rest = number / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        digits = max(digits, width)
        precondition(digits <= bytes.count - count, "ASCIIWriter: past the reserved bytes")
        var value = number
        for index in stride(from: count + digits - 1, through: count, by: -1) {
            bytes[index] = UInt8(ascii: "0") + UInt8(value % 10)
            value /= 10
        }
        count += digits
    }
}

extension ByteBuffer {
    /// Writes at most `maximumLength` bytes of text through an ``ASCIIWriter``.
    @inlinable package mutating func writeASCII(maximumLength: Int, _ write: (inout ASCIIWriter) -> Void) {
        writeWithUnsafeMutableBytes(minimumWritableBytes: maximumLength) { bytes in
            var writer = ASCIIWriter(bytes)
            write(&writer)
            return writer.count
        }
    }
}
