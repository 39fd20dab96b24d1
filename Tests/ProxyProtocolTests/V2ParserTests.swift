import NIOCore
import ProxyProtocol
import Testing

@Suite struct V2ParserTests {
    static let inet6Block = hexBytes("20010DB8000000000000000000000001 20010DB8000000000000000000000002 0050 1F90")
    static let inet6Addresses = ProxyAddresses.inet6(
        source: .init(ProxyIPv6Address("2001:db8::1")!, port: 80),
        destination: .init(ProxyIPv6Address("2001:db8::2")!, port: 8080)
    )

    static func unixField(_ bytes: [UInt8]) -> [UInt8] {
        bytes + [UInt8](repeating: 0, count: 108 - bytes.count)
    }

    static var valid: [([UInt8], ProxyHeader)] {
        get throws {
            [
                (v2Header(family: 0x11, body: inetBlock), ProxyHeader(version: .v2, addresses: inetAddresses)),
                (v2Header(family: 0x12, body: inetBlock), ProxyHeader(version: .v2, addresses: inetAddresses, transport: .datagram)),
                (v2Header(family: 0x21, body: inet6Block), ProxyHeader(version: .v2, addresses: inet6Addresses)),
                (v2Header(family: 0x22, body: inet6Block), ProxyHeader(version: .v2, addresses: inet6Addresses, transport: .datagram)),
                (
                    v2Header(family: 0x31, body: unixField(Array("/run/src.sock".utf8)) + unixField(Array("/run/dst.sock".utf8))),
                    ProxyHeader(
                        version: .v2, addresses: .unix(source: try .init(path: "/run/src.sock"), destination: try .init(path: "/run/dst.sock")))
                ),
                // An abstract name keeps its leading NUL; a path ends at its first NUL.
                (
                    v2Header(family: 0x32, body: unixField([0] + Array("abstract".utf8)) + unixField(Array("/a\0junk".utf8))),
                    ProxyHeader(
                        version: .v2,
                        addresses: .unix(
                            source: try .init(bytes: ByteBuffer(bytes: [0] + Array("abstract".utf8))), destination: try .init(path: "/a")),
                        transport: .datagram)
                ),
                // A 108-byte path without NUL.
                (
                    v2Header(family: 0x31, body: [UInt8](repeating: 0x61, count: 108) + unixField([0x62])),
                    ProxyHeader(
                        version: .v2,
                        addresses: .unix(
                            source: try .init(path: String(repeating: "a", count: 108)), destination: try .init(path: "b")))
                ),
                // LOCAL: everything after the fixed part is skipped, whatever the family byte says.
                (v2Header(command: 0x20, family: 0x00, body: []), .local),
                (v2Header(command: 0x20, family: 0x11, body: inetBlock), .local),
                (v2Header(command: 0x20, family: 0xFF, body: [1, 2, 3, 4, 5]), .local),
                (v2Header(command: 0x20, family: 0x11, body: inetBlock + [0xFF, 0xFF]), .local),
                // PROXY with UNSPEC family or transport: addresses are ignored.
                (v2Header(family: 0x00, body: []), ProxyHeader(version: .v2, addresses: .unspecified)),
                (v2Header(family: 0x00, body: [9, 9, 9]), ProxyHeader(version: .v2, addresses: .unspecified)),
                (
                    v2Header(family: 0x10, body: inetBlock),
                    ProxyHeader(version: .v2, command: .proxy, family: .inet, transport: .unspecified, addresses: .unspecified, tlvs: [])
                ),
                (
                    v2Header(family: 0x01, body: []),
                    ProxyHeader(version: .v2, command: .proxy, family: .unspecified, transport: .stream, addresses: .unspecified, tlvs: [])
                ),
                // TLVs after the address block.
                (
                    v2Header(family: 0x11, body: inetBlock + tlvBytes(0x02, Array("example.com".utf8)) + tlvBytes(0x04, [])),
                    ProxyHeader(version: .v2, addresses: inetAddresses, tlvs: [try .authority("example.com"), try .noop()])
                ),
                // Bytes between the INET block and len: an empty-valued TLV walk must cover them exactly.
                (
                    v2Header(family: 0x21, body: inet6Block + tlvBytes(0xF0, [1, 2, 3])),
                    ProxyHeader(version: .v2, addresses: inet6Addresses, tlvs: [try ProxyTLV(type: .init(0xF0), bytes: [1, 2, 3])])
                ),
            ]
        }
    }

    @Test func validHeaders() throws {
        for (bytes, header) in try Self.valid {
            #expect(try parse(bytes) == .complete(header, length: bytes.count), "\(bytes)")
        }
    }

    @Test func everySplitPoint() throws {
        let payload: [UInt8] = Array("\u{16}\u{3}\u{1} client hello".utf8)
        for (bytes, header) in try Self.valid {
            for end in 0..<bytes.count {
                #expect(try parse(Array(bytes[..<end])) == .needMoreBytes, "\(bytes) cut at \(end)")
            }
            #expect(try parse(bytes + payload) == .complete(header, length: bytes.count))
        }
    }

    /// The header ends where `len` says, even if the bytes after it look like more header.
    @Test func neverReadsPastLen() throws {
        let bytes = v2Header(family: 0x11, body: inetBlock) + tlvBytes(0x02, Array("not-part".utf8))
        #expect(try parse(bytes) == .complete(ProxyHeader(version: .v2, addresses: inetAddresses), length: 28))
    }

    static var invalid: [([UInt8], ProxyHeaderError.Kind, Int)] {
        let sig = hexBytes(v2SignatureHex)
        return [
            (Array(sig[0..<6]) + [0x00], .invalidSignature, 6),
            (Array(sig[0..<11]) + [0x0D], .invalidSignature, 11),
            ([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0D], .invalidSignature, 11),
            (v2Header(command: 0x11, family: 0x11, body: inetBlock), .v2UnsupportedVersion(0x11), 12),
            (v2Header(command: 0x31, family: 0x11, body: inetBlock), .v2UnsupportedVersion(0x31), 12),
            (v2Header(command: 0x01, family: 0x11, body: inetBlock), .v2UnsupportedVersion(0x01), 12),
            (v2Header(command: 0x22, family: 0x11, body: inetBlock), .v2UnsupportedCommand(0x22), 12),
            (v2Header(command: 0x2F, family: 0x11, body: inetBlock), .v2UnsupportedCommand(0x2F), 12),
            (v2Header(family: 0x41, body: inetBlock), .v2UnsupportedFamily(0x41), 13),
            (v2Header(family: 0x13, body: inetBlock), .v2UnsupportedFamily(0x13), 13),
            (v2Header(family: 0xF1, body: inetBlock), .v2UnsupportedFamily(0xF1), 13),
            (v2Header(family: 0x11, body: Array(inetBlock[0..<11])), .v2AddressBlockTooShort(family: .inet, required: 12, length: 11), 14),
            (v2Header(family: 0x11, body: []), .v2AddressBlockTooShort(family: .inet, required: 12, length: 0), 14),
            (v2Header(family: 0x21, body: inetBlock), .v2AddressBlockTooShort(family: .inet6, required: 36, length: 12), 14),
            (v2Header(family: 0x31, body: [UInt8](repeating: 0, count: 215)), .v2AddressBlockTooShort(family: .unix, required: 216, length: 215), 14),
            (v2Header(family: 0x11, body: inetBlock + [0x01, 0x00]), .v2TruncatedTLVHeader(remaining: 2), 28),
            (v2Header(family: 0x11, body: inetBlock + [0x01]), .v2TruncatedTLVHeader(remaining: 1), 28),
            (v2Header(family: 0x11, body: inetBlock + [0x02, 0x00, 0x05, 0x61, 0x62]), .v2TLVOverrun(type: 0x02, length: 5, remaining: 2), 28),
            (
                v2Header(family: 0x11, body: inetBlock + tlvBytes(0x04, []) + [0xE0, 0xFF, 0xFF]),
                .v2TLVOverrun(type: 0xE0, length: 65535, remaining: 0), 31
            ),
            (v2Header(family: 0x11, body: inetBlock + tlvBytes(0x02, [0xC3, 0x28])), .v2InvalidTLV(type: 0x02, .invalidUTF8), 28),
            (v2Header(family: 0x11, body: inetBlock + tlvBytes(0x02, [0xED, 0xA0, 0x80])), .v2InvalidTLV(type: 0x02, .invalidUTF8), 28),
            (v2Header(family: 0x11, body: inetBlock + tlvBytes(0x02, [0xC0, 0xAF])), .v2InvalidTLV(type: 0x02, .invalidUTF8), 28),
            (v2Header(family: 0x11, body: inetBlock + tlvBytes(0x02, [0xE2, 0x82])), .v2InvalidTLV(type: 0x02, .invalidUTF8), 28),
            (v2Header(family: 0x11, body: inetBlock + tlvBytes(0x03, [0, 0, 0])), .v2InvalidTLV(type: 0x03, .lengthMustBe(4)), 28),
            (v2Header(family: 0x11, body: inetBlock + tlvBytes(0x03, [0, 0, 0, 0, 0])), .v2InvalidTLV(type: 0x03, .lengthMustBe(4)), 28),
            (
                v2Header(family: 0x11, body: inetBlock + tlvBytes(0x05, [UInt8](repeating: 7, count: 129))),
                .v2InvalidTLV(type: 0x05, .lengthMustBeAtMost(128)), 28
            ),
            (v2Header(family: 0x11, body: inetBlock + tlvBytes(0x30, [0x62, 0xC3, 0xA9])), .v2InvalidTLV(type: 0x30, .notASCII), 28),
            (v2Header(family: 0x11, body: inetBlock + tlvBytes(0x20, [1, 0, 0, 0])), .v2InvalidTLV(type: 0x20, .lengthMustBeAtLeast(5)), 28),
            (v2Header(family: 0x11, body: inetBlock + tlvBytes(0x20, [1, 0, 0, 0, 0, 0x21, 0x00])), .v2TruncatedTLVHeader(remaining: 2), 36),
            (
                v2Header(family: 0x11, body: inetBlock + tlvBytes(0x20, [1, 0, 0, 0, 0, 0x21, 0x00, 0x09, 0x54])),
                .v2TLVOverrun(type: 0x21, length: 9, remaining: 1), 36
            ),
            (
                v2Header(family: 0x11, body: inetBlock + tlvBytes(0x20, [1, 0, 0, 0, 0] + tlvBytes(0x21, [0x54, 0xFF]))),
                .v2InvalidTLV(type: 0x21, .notASCII), 36
            ),
            (
                v2Header(family: 0x11, body: inetBlock + tlvBytes(0x20, [1, 0, 0, 0, 0] + tlvBytes(0x23, [0x80]))),
                .v2InvalidTLV(type: 0x23, .notASCII), 36
            ),
            (
                v2Header(family: 0x11, body: inetBlock + tlvBytes(0x20, [1, 0, 0, 0, 0] + tlvBytes(0x22, [0xFF]))),
                .v2InvalidTLV(type: 0x22, .invalidUTF8), 36
            ),
            (v2Header(family: 0x11, body: inetBlock + tlvBytes(0x03, [0, 0, 0, 0]) + tlvBytes(0x03, [0, 0, 0, 0])), .v2DuplicateCRC32C, 35),
        ]
    }

    @Test func invalidHeaders() {
        for (bytes, kind, offset) in Self.invalid {
            #expect(parseError(bytes) == ProxyHeaderError(kind, at: offset), "\(bytes)")
        }
    }

    /// The fixed part is judged as soon as each byte arrives.
    @Test func rejectsEarly() throws {
        let sig = hexBytes(v2SignatureHex)
        #expect(parseError(sig + [0x31]) == ProxyHeaderError(.v2UnsupportedVersion(0x31), at: 12))
        #expect(parseError(sig + [0x21, 0x51]) == ProxyHeaderError(.v2UnsupportedFamily(0x51), at: 13))
        #expect(try parse(sig + [0x21, 0x11, 0x00]) == .needMoreBytes)
        let limited = ProxyHeaderParser(maximumHeaderLength: 100)
        #expect(parseError(sig + [0x21, 0x11, 0x00, 0x55], parser: limited) == ProxyHeaderError(.headerTooLong(limit: 100), at: 14))
        #expect(try parse(sig + [0x21, 0x11, 0x00, 0x54], parser: limited) == .needMoreBytes)
        let v1Only = ProxyHeaderParser(acceptedVersions: .v1)
        #expect(parseError([0x0D], parser: v1Only) == ProxyHeaderError(.versionNotAccepted(.v2), at: 0))
    }

    @Test func largestHeader() throws {
        let value = [UInt8](repeating: 0x41, count: 65535 - 12 - 3)
        let bytes = v2Header(family: 0x11, body: inetBlock + tlvBytes(0xE5, value))
        #expect(bytes.count == ProxyHeader.maximumV2Length)
        guard case .complete(let header, let length) = try parse(bytes) else {
            Issue.record("expected a complete header")
            return
        }
        #expect(length == 65551)
        #expect(Array(header.tlvs).map(\.type) == [ProxyTLVType(0xE5)])
        #expect(header.tlvs.first(.init(0xE5))?.value.readableBytes == 65520)
    }

    /// The words are what a log shows an operator, so they are checked, each with its error.
    @Test func errorDescriptions() {
        #expect(
            parseError(v2Header(family: 0x11, body: Array(inetBlock[0..<11])))
                == ProxyHeaderError(.v2AddressBlockTooShort(family: .inet, required: 12, length: 11), at: 14))
        #expect(
            parseError(v2Header(family: 0x11, body: inetBlock + tlvBytes(0x05, [UInt8](repeating: 7, count: 129))))
                == ProxyHeaderError(.v2InvalidTLV(type: 0x05, .lengthMustBeAtMost(128)), at: 28))
        #expect(
            parseError(v2Header(family: 0x11, body: Array(inetBlock[0..<11])))?.description
                == "v2 header, byte 14: length 11 is shorter than the 12-byte INET address block")
        #expect(
            parseError(v2Header(family: 0x11, body: inetBlock + tlvBytes(0x05, [UInt8](repeating: 7, count: 129))))?.description
                == "v2 header, byte 28: TLV 0x05 (UNIQUE_ID) is invalid: its length must be at most 128")
    }
}
