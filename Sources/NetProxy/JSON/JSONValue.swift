import NIOCore
import ProxyProtocol

/// A small JSON document model, for the parts printed rarely (TLVs, `netproxy decode`). The
/// per-connection JSON is written straight into a buffer with the `ByteBuffer` methods below,
/// which this model uses too, so both print the same way.
package enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case string(String)
    case array([JSONValue])
    /// An object; keys keep their order.
    case object([(String, JSONValue)])

    /// Compact JSON text.
    package var serialized: String {
        var buffer = ByteBuffer()
        write(to: &buffer)
        return String(buffer: buffer)
    }

    /// Writes compact JSON text.
    package func write(to buffer: inout ByteBuffer) {
        switch self {
        case .null: buffer.writeStaticString("null")
        case .bool(let value): buffer.writeStaticString(value ? "true" : "false")
        case .int(let value): buffer.writeJSONInteger(value)
        case .string(let value): buffer.writeJSONString(value)
        case .array(let values):
            buffer.writeJSONByte("[")
            for (index, value) in values.enumerated() {
                if index > 0 { buffer.writeJSONByte(",") }
                value.write(to: &buffer)
            }
            buffer.writeJSONByte("]")
        case .object(let members):
            buffer.writeJSONByte("{")
            for (index, (key, value)) in members.enumerated() {
                if index > 0 { buffer.writeJSONByte(",") }
                buffer.writeJSONString(key)
                buffer.writeJSONByte(":")
                value.write(to: &buffer)
            }
            buffer.writeJSONByte("}")
        }
    }
}

extension ByteBuffer {
    /// One ASCII character of JSON syntax.
    @inline(__always)
    package mutating func writeJSONByte(_ character: Unicode.Scalar) {
        writeInteger(UInt8(ascii: character))
    }

    /// A decimal integer, without going through `String`.
    package mutating func writeJSONInteger(_ value: Int) {
        if value < 0 { writeJSONByte("-") }
        var magnitude = value.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for 20 digits
        let count = withUnsafeMutableBytes(of: &digits) { scratch -> Int in
            var index = scratch.count
            repeat {
                index -= 1
                scratch[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            return scratch.count - index
        }
        withUnsafeBytes(of: &digits) { scratch in
            _ = writeBytes(UnsafeRawBufferPointer(rebasing: scratch[(scratch.count - count)...]))
        }
    }

    /// A JSON string: quotes, backslashes and control characters (and DEL) escaped.
    package mutating func writeJSONString(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in writeJSONString(utf8: UnsafeRawBufferPointer(utf8)) }
    }

    /// A JSON string from UTF-8 bytes; runs that need no escaping are copied in one go.
    package mutating func writeJSONString(utf8: UnsafeRawBufferPointer) {
        writeJSONByte("\"")
        var runStart = 0
        for (index, byte) in utf8.enumerated() where byte < 0x20 || byte == 0x22 || byte == 0x5C || byte == 0x7F {
            writeBytes(UnsafeRawBufferPointer(rebasing: utf8[runStart..<index]))
            switch byte {
            case 0x22: writeStaticString("\\\"")
            case 0x5C: writeStaticString("\\\\")
            case 0x0A: writeStaticString("\\n")
            case 0x0D: writeStaticString("\\r")
            case 0x09: writeStaticString("\\t")
            default:
                writeStaticString("\\u00")
                writeString(hex(byte))
            }
            runStart = index + 1
        }
        writeBytes(UnsafeRawBufferPointer(rebasing: utf8[runStart...]))
        writeJSONByte("\"")
    }
}
