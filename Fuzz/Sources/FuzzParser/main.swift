import NIOCore
import ProxyProtocol

/// Feeds arbitrary bytes to the parser, whole and split in two, and checks what it promises:
/// no crash, a complete header never longer than the input, the same answer however the bytes
/// arrive, and a complete header that re-encodes to something that parses back to itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let parser = ProxyHeaderParser()
    let whole = Result { () throws(ProxyHeaderError) in try parser.parse(ByteBuffer(bytes: bytes)) }
    if case .success(.complete(let header, let length)) = whole {
        precondition(length <= size, "header longer than its input")
        for split in stride(from: 0, to: length, by: max(1, length / 8)) {
            let prefix = Result { () throws(ProxyHeaderError) in try parser.parse(ByteBuffer(bytes: bytes[..<split])) }
            precondition(prefix == .success(.needMoreBytes), "a prefix of a valid header was not 'need more bytes'")
        }
        if let encoded = try? header.encoded() {
            let again = Result { () throws(ProxyHeaderError) in try parser.parse(encoded) }
            if case .success(.complete(let reparsed, _)) = again {
                precondition(reparsed.addresses == header.addresses && reparsed.command == header.command, "round trip changed the header")
            } else {
                preconditionFailure("a re-encoded header did not parse: \(again)")
            }
        }
    }
    return 0
}
