import NIOCore
import ProxyProtocol
import Testing

@Suite struct TLVTests {
    static let sslValue: [UInt8] =
        [0x07, 0x00, 0x00, 0x00, 0x00]
        + tlvBytes(0x21, Array("TLSv1.3".utf8))
        + tlvBytes(0x22, Array("clïent.example".utf8))
        + tlvBytes(0x23, Array("TLS_AES_256_GCM_SHA384".utf8))
        + tlvBytes(0x24, Array("RSA-SHA256".utf8))
        + tlvBytes(0x25, Array("RSA2048".utf8))
        + tlvBytes(0x26, Array("X25519".utf8))
        + tlvBytes(0x27, Array("rsa_pss_rsae_sha256".utf8))
        + tlvBytes(0x28, [0x30, 0x82, 0x01, 0x0A])

    static let allTLVs: [UInt8] =
        tlvBytes(0x01, Array("h2".utf8))
        + tlvBytes(0x02, Array("exämple.com".utf8))
        + tlvBytes(0x04, [0, 0, 0])
        + tlvBytes(0x05, Array("unique-id-1".utf8))
        + tlvBytes(0x20, sslValue)
        + tlvBytes(0x30, Array("blue".utf8))
        + tlvBytes(0xEA, [0x01] + Array("vpce-08d2bf15fac5001c9".utf8))
        + tlvBytes(0xEE, [0x01, 0x78, 0x56, 0x34, 0x12])
        + tlvBytes(0xE0, [0x00, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78])
        + tlvBytes(0xF0, [0xDE, 0xAD])
        + tlvBytes(0x01, Array("http/1.1".utf8))

    /// The parser asked for more bytes where the test gave it a whole header.
    struct IncompleteHeader: Error {}

    func parsedTLVs(_ tlvs: [UInt8]) throws -> ProxyTLVs {
        guard case .complete(let header, _) = try parse(v2Header(family: 0x11, body: inetBlock + tlvs)) else {
            throw IncompleteHeader()
        }
        return header.tlvs
    }

    @Test func everyTypeDecodes() throws {
        let tlvs = try parsedTLVs(Self.allTLVs)
        #expect(Array(tlvs).map(\.type.rawValue) == [0x01, 0x02, 0x04, 0x05, 0x20, 0x30, 0xEA, 0xEE, 0xE0, 0xF0, 0x01])
        #expect(Array(tlvs).map(\.name) == ["ALPN", "AUTHORITY", "NOOP", "UNIQUE_ID", "SSL", "NETNS", "AWS", "AZURE", "GCP", nil, "ALPN"])
        #expect(tlvs.authority == "exämple.com")
        #expect(tlvs.alpn.map { String(buffer: $0) } == "h2")
        #expect(tlvs.uniqueID.map { String(buffer: $0) } == "unique-id-1")
        #expect(tlvs.netns == "blue")
        #expect(tlvs.crc32c == nil)
        let values = Array(tlvs).map(\.decodedValue)
        #expect(values[2] == .noop)
        // The cloud conventions are not registered types: no typed value, only their accessors.
        #expect(values[6...9] == [nil, nil, nil, nil])
        #expect(values[10] == .alpn(ByteBuffer(string: "http/1.1")))
        #expect(Array(tlvs).map(\.awsVPCEndpointID) == [nil, nil, nil, nil, nil, nil, "vpce-08d2bf15fac5001c9", nil, nil, nil, nil])
        #expect(Array(tlvs).map(\.azurePrivateLinkID) == [nil, nil, nil, nil, nil, nil, nil, 0x1234_5678, nil, nil, nil])
        #expect(Array(tlvs).map(\.gcpPSCConnectionID) == [nil, nil, nil, nil, nil, nil, nil, nil, 0x1234_5678, nil, nil])
        #expect(tlvs.awsVPCEndpointID == "vpce-08d2bf15fac5001c9")
        #expect(tlvs.azurePrivateLinkID == 0x1234_5678)
        #expect(tlvs.gcpPSCConnectionID == 0x1234_5678)
    }

    /// Each registered type's value answers its own accessor and no other, and names its type.
    @Test func decodedValuesAnswerTheirAccessor() throws {
        let tlvs = Array(try parsedTLVs(Self.allTLVs).prefix(6))
        let values = tlvs.map(\.decodedValue)
        #expect(values.map { $0?.type } == [.alpn, .authority, .noop, .uniqueID, .ssl, .netns])
        #expect(values[0]?.alpn == ByteBuffer(string: "h2"))
        #expect(values[1]?.authority == "exämple.com")
        #expect(values[3]?.uniqueID == ByteBuffer(string: "unique-id-1"))
        #expect(values[4]?.ssl?.version == "TLSv1.3")
        #expect(values[5]?.netns == "blue")
        #expect(values.filter { $0?.alpn != nil }.count == 1)
        #expect(values.filter { $0?.authority != nil }.count == 1)
        #expect(values.filter { $0?.crc32c != nil }.count == 0)
        #expect(values.filter { $0?.ssl != nil }.count == 1)
        let checksum = try ProxyTLV(type: .crc32c, bytes: [0xDE, 0xAD, 0xBE, 0xEF]).decodedValue
        #expect(checksum == .crc32c(0xDEAD_BEEF))
        #expect(checksum?.crc32c == 0xDEAD_BEEF)
        #expect(checksum?.type == .crc32c)
        #expect(ProxyTLVValue.authority("a") != .netns("a"))
        #expect(ProxyTLVValue.alpn(ByteBuffer(string: "x")) != .uniqueID(ByteBuffer(string: "x")))
    }

    @Test func sslDetails() throws {
        let ssl = try #require(try parsedTLVs(Self.allTLVs).ssl)
        #expect(ssl.client == [.ssl, .certificateOnConnection, .certificateInSession])
        #expect(ssl.verify == 0)
        #expect(ssl.isVerified)
        #expect(ssl.version == "TLSv1.3")
        #expect(ssl.commonName == "clïent.example")
        #expect(ssl.cipher == "TLS_AES_256_GCM_SHA384")
        #expect(ssl.signatureAlgorithm == "RSA-SHA256")
        #expect(ssl.keyAlgorithm == "RSA2048")
        #expect(ssl.group == "X25519")
        #expect(ssl.signatureScheme == "rsa_pss_rsae_sha256")
        #expect(ssl.clientCertificate == ByteBuffer(bytes: [0x30, 0x82, 0x01, 0x0A]))
        #expect(Array(ssl.encoded().readableBytesView) == Self.sslValue)
    }

    /// Each client flag on its own, and a client whose certificate did not verify (verify != 0).
    @Test func sslFlagsAndVerify() throws {
        let session = try #require(try parsedTLVs([0x20, 0x00, 0x05, 0x04, 0x00, 0x00, 0x00, 0x00]).ssl)
        #expect(session.client == [.certificateInSession])
        #expect(session.isVerified)
        let unverified = try #require(try parsedTLVs([0x20, 0x00, 0x05, 0x02, 0x00, 0x00, 0x00, 0x01]).ssl)
        #expect(unverified.client == [.certificateOnConnection])
        #expect(unverified.verify == 1)
        #expect(!unverified.isVerified)
    }

    /// Application-range types that do not have a cloud convention's shape stay raw and unnamed.
    @Test func cloudConventionsNeedTheirShape() throws {
        let tlvs = try parsedTLVs(
            tlvBytes(0xEA, [0x02] + Array("x".utf8)) + tlvBytes(0xEA, [0x01]) + tlvBytes(0xEE, [0x01, 0, 0])
                + tlvBytes(0xE0, [1, 2, 3]) + tlvBytes(0xEA, [0x01, 0xFF])
        )
        #expect(Array(tlvs).map(\.decodedValue) == [nil, nil, nil, nil, nil])
        #expect(Array(tlvs).map(\.name) == [nil, nil, nil, nil, nil])
        #expect(Array(tlvs).map(\.awsVPCEndpointID) == [nil, nil, nil, nil, nil])
        #expect(Array(tlvs).map(\.azurePrivateLinkID) == [nil, nil, nil, nil, nil])
        #expect(Array(tlvs).map(\.gcpPSCConnectionID) == [nil, nil, nil, nil, nil])
        #expect(tlvs.awsVPCEndpointID == nil && tlvs.azurePrivateLinkID == nil && tlvs.gcpPSCConnectionID == nil)
    }

    /// A cloud accessor reads only its own type: the same bytes under another type byte are not
    /// that cloud's, and the collection answers with the first TLV of the right shape.
    @Test func cloudAccessorsCheckTheType() throws {
        let gcpBytes: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 7]
        #expect(try ProxyTLV(type: .init(0xE1), bytes: gcpBytes).gcpPSCConnectionID == nil)
        #expect(try ProxyTLV(type: .gcp, bytes: gcpBytes).gcpPSCConnectionID == 7)
        #expect(try ProxyTLV(type: .azure, bytes: [0x01] + Array("vpce".utf8)).awsVPCEndpointID == nil)
        #expect(try ProxyTLV(type: .aws, bytes: [0x01, 1, 0, 0, 0]).azurePrivateLinkID == nil)
        #expect(try ProxyTLV(type: .gcp, bytes: gcpBytes).name == "GCP")
        #expect(try ProxyTLV(type: .init(0xE1), bytes: gcpBytes).name == nil)
        let tlvs = try parsedTLVs(
            tlvBytes(0xEA, [0x02] + Array("other".utf8)) + tlvBytes(0xEA, [0x01] + Array("vpce-2".utf8))
                + tlvBytes(0xEA, [0x01] + Array("vpce-3".utf8)) + tlvBytes(0xE0, [1]) + tlvBytes(0xE0, [UInt8](repeating: 0xFF, count: 8))
        )
        #expect(tlvs.awsVPCEndpointID == "vpce-2")
        #expect(tlvs.gcpPSCConnectionID == .max)
        #expect(tlvs.azurePrivateLinkID == nil)
    }

    /// The accessors that turn values into text accept exactly what the standard library calls
    /// UTF-8: every sequence of one or two bytes, and every three- and four-byte lead with every
    /// second byte (the byte that rules out overlong forms, surrogates and values past U+10FFFF).
    @Test func textCheckAgreesWithTheStandardLibrary() throws {
        var inputs: [[UInt8]] = (0...255).map { [UInt8($0)] }
        for first in 0...255 {
            for second in 0...255 { inputs.append([UInt8(first), UInt8(second)]) }
        }
        for lead in 0xE0...0xFF {
            for second in 0...255 {
                for tail: [UInt8] in [[], [0x80], [0xBF], [0x80, 0x80], [0xBF, 0xBF], [0x80, 0x41], [0xC0, 0x80]] {
                    inputs.append([UInt8(lead), UInt8(second)] + tail)
                }
            }
        }
        let disagreements = try inputs.filter { bytes in
            try ProxyTLV(type: .authority, bytes: bytes).decodedValue
                != String(validating: bytes, as: UTF8.self).map(ProxyTLVValue.authority)
        }
        #expect(disagreements == [])
    }

    @Test func uniqueIDAtItsLimit() throws {
        let tlvs = try parsedTLVs(tlvBytes(0x05, [UInt8](repeating: 9, count: 128)))
        #expect(tlvs.uniqueID?.readableBytes == 128)
    }

    @Test func builtTLVsMatchTheWire() throws {
        let tlvs: ProxyTLVs = try [.alpn("h2"), .authority("a.example"), .noop(count: 2), .uniqueID([1, 2]), .netns("ns")]
        #expect(
            Array(tlvs.bytes.readableBytesView)
                == tlvBytes(1, Array("h2".utf8)) + tlvBytes(2, Array("a.example".utf8)) + tlvBytes(4, [0, 0])
                + tlvBytes(5, [1, 2]) + tlvBytes(0x30, Array("ns".utf8)))
        var appended = ProxyTLVs()
        #expect(appended.isEmpty)
        appended.append(try .authority("x"))
        #expect(appended == [try .authority("x")])
        #expect(!appended.isEmpty)
    }

    @Test func typeRanges() {
        #expect(ProxyTLVType(0xE0).isApplicationSpecific && ProxyTLVType(0xEF).isApplicationSpecific)
        #expect(!ProxyTLVType(0xF0).isApplicationSpecific && ProxyTLVType(0xF0).isExperimental)
        #expect(ProxyTLVType(0xF7).isExperimental && !ProxyTLVType(0xF8).isExperimental)
        #expect(ProxyTLVType(0xF8).isReservedForFuture && ProxyTLVType(0xFF).isReservedForFuture)
        #expect(ProxyTLVType(0x22).description == "SSL_CN")
        #expect(ProxyTLVType(0x99).description == "0x99")
    }
}

@Suite struct ChecksumTests {
    @Test func encodedChecksumIsVerified() throws {
        let header = try ProxyHeader(version: .v2, addresses: inetAddresses, tlvs: [.authority("example.com")])
        let bytes = Array(try header.encoded(appendingCRC32C: true).readableBytesView)
        #expect(bytes.count == 28 + 14 + 7)
        // The checksum of the header with its value zeroed, computed independently of the encoder.
        var zeroed = bytes
        zeroed.replaceSubrange(45..<49, with: [0, 0, 0, 0])
        let expected = CRC32C.checksum(zeroed)
        #expect(Array(bytes[42..<45]) == [0x03, 0x00, 0x04])
        #expect(bytes[45..<49].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } == expected)
        guard case .complete(let parsed, 49) = try parse(bytes) else {
            Issue.record("expected a complete header")
            return
        }
        #expect(parsed.tlvs.crc32c == expected)
        #expect(parsed.tlvs.authority == "example.com")
    }

    /// Changing any byte after the fixed part is detected, except the CRC32C TLV's own type
    /// byte: a header without that TLV is unprotected, as the protocol defines it.
    @Test func everyCorruptedByteIsRejected() throws {
        let header = try ProxyHeader(version: .v2, addresses: inetAddresses, tlvs: [.uniqueID([1, 2, 3])])
        let bytes = Array(try header.encoded(appendingCRC32C: true).readableBytesView)
        #expect(bytes.count == 41)
        for index in 16..<bytes.count where index != 34 {
            var corrupted = bytes
            corrupted[index] ^= 0x40
            let error = try #require(parseError(corrupted), "byte \(index)")
            if (16..<28).contains(index) || (31..<34).contains(index) || (37..<41).contains(index) {
                var zeroed = corrupted
                zeroed.replaceSubrange(37..<41, with: [0, 0, 0, 0])
                let received = corrupted[37..<41].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                let mismatch = ProxyHeaderError.Kind.v2ChecksumMismatch(received: received, computed: CRC32C.checksum(zeroed))
                #expect(error == ProxyHeaderError(mismatch, at: 34), "byte \(index)")
            }
        }
    }

    @Test func mismatchNamesBothValues() {
        let bytes = v2Header(family: 0x11, body: inetBlock + tlvBytes(0x03, [0xDE, 0xAD, 0xBE, 0xEF]))
        var zeroed = bytes
        zeroed.replaceSubrange(31..<35, with: [0, 0, 0, 0])
        let computed = CRC32C.checksum(zeroed)
        #expect(parseError(bytes) == ProxyHeaderError(.v2ChecksumMismatch(received: 0xDEAD_BEEF, computed: computed), at: 28))
    }

    /// A header that already carries a CRC32C TLV gets it filled in, wherever it is.
    @Test func existingChecksumTLVIsFilledIn() throws {
        let header = try ProxyHeader(version: .v2, addresses: inetAddresses, tlvs: [.crc32c, .authority("a")])
        let once = try header.encoded()
        let twice = try header.encoded(appendingCRC32C: true)
        #expect(once == twice)
        guard case .complete(let parsed, _) = try ProxyHeaderParser().parse(once) else {
            Issue.record("expected a complete header")
            return
        }
        // Re-encoding the parsed header reproduces the same bytes.
        #expect(try parsed.encoded() == once)
    }
}
