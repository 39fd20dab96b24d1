import NIOCore
import ProxyProtocol

/// Bytes from hex text; spaces are ignored.
func hexBytes(_ text: String) -> [UInt8] {
    let digits = text.filter { !$0.isWhitespace }.map { UInt8($0.hexDigitValue!) }
    return stride(from: 0, to: digits.count, by: 2).map { digits[$0] << 4 | digits[$0 + 1] }
}

/// The v2 signature as hex.
let v2SignatureHex = "0D0A0D0A000D0A515549540A"

/// A version 2 header from its parts; `length` defaults to the body's length.
func v2Header(command: UInt8 = 0x21, family: UInt8, body: [UInt8], length: Int? = nil) -> [UInt8] {
    let length = length ?? body.count
    return hexBytes(v2SignatureHex) + [command, family, UInt8(length >> 8), UInt8(length & 0xFF)] + body
}

/// A TLV on the wire.
func tlvBytes(_ type: UInt8, _ value: [UInt8]) -> [UInt8] {
    [type, UInt8(value.count >> 8), UInt8(value.count & 0xFF)] + value
}

/// The INET address block for 192.0.2.1:51234 -> 198.51.100.7:443.
let inetBlock = hexBytes("C0000201 C6336407 C822 01BB")

let inetAddresses = ProxyAddresses.inet(
    source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 51234),
    destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)
)

func parse(_ bytes: [UInt8], parser: ProxyHeaderParser = ProxyHeaderParser()) throws(ProxyHeaderError) -> ProxyHeaderParseResult {
    try parser.parse(ByteBuffer(bytes: bytes))
}

func parse(_ text: String, parser: ProxyHeaderParser = ProxyHeaderParser()) throws(ProxyHeaderError) -> ProxyHeaderParseResult {
    try parse(Array(text.utf8), parser: parser)
}

/// The error `parse` throws, or `nil` if it throws none.
func parseError(_ bytes: [UInt8], parser: ProxyHeaderParser = ProxyHeaderParser()) -> ProxyHeaderError? {
    do {
        _ = try parse(bytes, parser: parser)
        return nil
    } catch {
        return error
    }
}

func parseError(_ text: String, parser: ProxyHeaderParser = ProxyHeaderParser()) -> ProxyHeaderError? {
    parseError(Array(text.utf8), parser: parser)
}
