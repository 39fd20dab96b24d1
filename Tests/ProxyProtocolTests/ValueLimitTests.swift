import NIOCore
import ProxyProtocol
import Testing

/// Values with a limit are refused where they are made, with an error that says what is too
/// long and by how much; nothing can change them afterwards (their properties are read-only).
@Suite struct ValueLimitTests {
    @Test func tlvValueFitsItsLengthField() throws {
        let largest = try ProxyTLV(type: .init(0xE1), value: ByteBuffer(repeating: 0x41, count: 65535))
        #expect(largest.value.readableBytes == ProxyTLV.maximumValueLength)
        let error = ProxyHeaderEncodingError(.tlvValueTooLong(type: .init(0xE1), length: 70000, maximum: 65535))
        #expect(throws: error) { try ProxyTLV(type: .init(0xE1), value: ByteBuffer(repeating: 0x41, count: 70000)) }
        #expect(throws: error) { try ProxyTLV(type: .init(0xE1), bytes: [UInt8](repeating: 0x41, count: 70000)) }
        #expect(error.description == "TLV 0xe1 value of 70000 bytes is 4465 over its maximum of 65535")
    }

    @Test func builtTLVsAreCheckedToo() throws {
        let text = String(repeating: "a", count: 65536)
        #expect(throws: ProxyHeaderEncodingError(.tlvValueTooLong(type: .authority, length: 65536, maximum: 65535))) {
            try ProxyTLV.authority(text)
        }
        #expect(throws: ProxyHeaderEncodingError(.tlvValueTooLong(type: .alpn, length: 65536, maximum: 65535))) {
            try ProxyTLV.alpn(text)
        }
        #expect(throws: ProxyHeaderEncodingError(.tlvValueTooLong(type: .netns, length: 65536, maximum: 65535))) {
            try ProxyTLV.netns(text)
        }
        #expect(throws: ProxyHeaderEncodingError(.tlvValueTooLong(type: .noop, length: 65536, maximum: 65535))) {
            try ProxyTLV.noop(count: 65536)
        }
        let bigSubTLV = try ProxyTLV(type: .sslClientCertificate, value: ByteBuffer(repeating: 0x30, count: 65535))
        #expect(throws: ProxyHeaderEncodingError(.tlvValueTooLong(type: .ssl, length: 5 + 3 + 65535, maximum: 65535))) {
            try ProxyTLV.ssl(ProxySSLInfo(client: [.ssl], verify: 0, subTLVs: [bigSubTLV]))
        }
    }

    /// Receivers refuse a UNIQUE_ID over 128 bytes, so it is not made.
    @Test func uniqueIDHasItsOwnLimit() throws {
        #expect(try ProxyTLV.uniqueID([UInt8](repeating: 7, count: 128)).value.readableBytes == 128)
        let error = ProxyHeaderEncodingError(.tlvValueTooLong(type: .uniqueID, length: 129, maximum: 128))
        #expect(throws: error) { try ProxyTLV.uniqueID([UInt8](repeating: 7, count: 129)) }
        #expect(error.description == "TLV UNIQUE_ID value of 129 bytes is 1 over its maximum of 128")
    }

    @Test func unixAddressFitsItsField() throws {
        let longest = String(repeating: "a", count: 108)
        #expect(try ProxyUnixAddress(path: longest).path == longest)
        let error = ProxyHeaderEncodingError(.unixAddressTooLong(length: 109))
        #expect(throws: error) { try ProxyUnixAddress(path: longest + "a") }
        #expect(throws: error) { try ProxyUnixAddress(bytes: ByteBuffer(repeating: 0, count: 109)) }
        #expect(error.description == "UNIX address of 109 bytes is 1 over its maximum of 108")
    }

    @Test func parserLimitIsKeptWithinTheProtocol() async {
        #expect(ProxyHeaderParser(maximumHeaderLength: 16).maximumHeaderLength == 16)
        #expect(ProxyHeaderParser(maximumHeaderLength: 1_000_000).maximumHeaderLength == ProxyHeader.maximumV2Length)
        // Below a version 2 header's fixed part is a programming error: it traps at the call.
        await #expect(processExitsWith: .failure) { _ = ProxyHeaderParser(maximumHeaderLength: 15) }
    }
}
