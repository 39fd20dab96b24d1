import NIOCore
import PropertyBased
import ProxyProtocol
import Testing

@Suite struct EncoderTests {
    @Test func v1Lines() throws {
        #expect(
            String(buffer: try ProxyHeader(version: .v1, addresses: inetAddresses).encoded())
                == "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n")
        let inet6 = ProxyAddresses.inet6(
            source: .init(ProxyIPv6Address("2001:db8:0:0::1")!, port: 0), destination: .init(ProxyIPv6Address("::ffff:10.0.0.1")!, port: 65535))
        #expect(
            String(buffer: try ProxyHeader(version: .v1, addresses: inet6).encoded())
                == "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 0 65535\r\n")
        #expect(String(buffer: try ProxyHeader.v1Unknown.encoded()) == "PROXY UNKNOWN\r\n")
    }

    @Test func v2Bytes() throws {
        #expect(
            Array(try ProxyHeader(version: .v2, addresses: inetAddresses).encoded().readableBytesView)
                == v2Header(family: 0x11, body: inetBlock))
        #expect(Array(try ProxyHeader.local.encoded().readableBytesView) == v2Header(command: 0x20, family: 0x00, body: []))
        #expect(
            Array(try ProxyHeader(version: .v2, addresses: .unspecified).encoded().readableBytesView)
                == v2Header(command: 0x21, family: 0x00, body: []))
        let unix = ProxyHeader(
            version: .v2, addresses: .unix(source: try .init(path: "/a"), destination: try .init(path: "/b")), transport: .datagram)
        let unixBytes = Array(try unix.encoded().readableBytesView)
        #expect(unixBytes.count == 16 + 216)
        #expect(Array(unixBytes[12..<16]) == [0x21, 0x32, 0x00, 0xD8])
        #expect(Array(unixBytes[16..<19]) == [0x2F, 0x61, 0x00])
        #expect(Array(unixBytes[124..<127]) == [0x2F, 0x62, 0x00])
    }

    @Test func writesAfterExistingBytes() throws {
        var buffer = ByteBuffer(string: "xx")
        _ = buffer.readInteger(as: UInt8.self)
        let written = try ProxyHeader(version: .v2, addresses: inetAddresses, tlvs: [try .alpn("h2")]).encode(into: &buffer, appendingCRC32C: true)
        #expect(written == 28 + 5 + 7)
        #expect(buffer.readInteger(as: UInt8.self) == UInt8(ascii: "x"))
        guard case .complete(let header, let length) = try ProxyHeaderParser().parse(buffer) else {
            Issue.record("expected a complete header")
            return
        }
        #expect(length == written)
        #expect(header.tlvs.alpn == ByteBuffer(string: "h2"))
    }

    @Test func refusesWhatTheVersionCannotCarry() throws {
        func error(_ header: ProxyHeader) -> ProxyHeaderEncodingError? {
            do {
                _ = try header.encoded()
                return nil
            } catch {
                return error
            }
        }
        #expect(error(ProxyHeader(version: .v1, command: .local, addresses: .unspecified)) == .init(.v1CannotSendLocal))
        #expect(error(ProxyHeader(version: .v1, addresses: inetAddresses, tlvs: [try .noop()])) == .init(.v1CannotSendTLVs))
        #expect(
            error(ProxyHeader(version: .v1, addresses: inetAddresses, transport: .datagram))
                == .init(.v1CannotSend(.inet, .datagram)))
        #expect(
            error(ProxyHeader(version: .v1, addresses: .unix(source: try .init(path: "a"), destination: try .init(path: "b"))))
                == .init(.v1CannotSend(.unix, .stream)))
        #expect(
            error(ProxyHeader(version: .v2, command: .proxy, family: .inet, transport: .unspecified, addresses: .unspecified, tlvs: []))
                == .init(.familyMismatch(family: .inet, transport: .unspecified, addresses: .unspecified)))
        #expect(
            error(ProxyHeader(version: .v2, command: .proxy, family: .inet6, transport: .stream, addresses: inetAddresses, tlvs: []))
                == .init(.familyMismatch(family: .inet6, transport: .stream, addresses: .inet)))
        let big = try ProxyTLV(type: .init(0xE1), bytes: [UInt8](repeating: 0, count: 65535 - 12 - 3))
        #expect(error(ProxyHeader(version: .v2, addresses: inetAddresses, tlvs: [big])) == nil)
        #expect(error(ProxyHeader(version: .v2, addresses: inetAddresses, tlvs: [big, try .noop()])) == .init(.tooLong(length: 65538)))
    }
}

/// Encoding then parsing gives back the same header, for generated headers of every kind.
@Suite struct RoundTripTests {
    static let tlvTypes: [UInt8] = [0x01, 0x04, 0x05, 0xE1, 0xEA, 0xF0, 0xFF]

    // Values of at most 40 bytes always fit: `try?` never gives nil here.
    static let tlvGenerator = zip(Gen.element(of: tlvTypes), Gen.uint8().array(of: 0...40))
        .compactMap { type, value in try? ProxyTLV(type: ProxyTLVType(type!), bytes: value) }

    static let headerGenerator = zip(
        Gen.int(in: 0...8), Gen.uint64().array(of: 4), Gen.uint16().array(of: 2), Gen.bool,
        tlvGenerator.array(of: 0...5), Gen.bool
    ).compactMap { kind, words, ports, datagram, tlvs, authority -> ProxyHeader? in
        let v4 = ProxyAddresses.inet(
            source: .init(ProxyIPv4Address(rawValue: UInt32(truncatingIfNeeded: words[0])), port: ports[0]),
            destination: .init(ProxyIPv4Address(rawValue: UInt32(truncatingIfNeeded: words[1])), port: ports[1]))
        let v6 = ProxyAddresses.inet6(
            source: .init(ProxyIPv6Address(high: words[0], low: words[1]), port: ports[0]),
            destination: .init(ProxyIPv6Address(high: words[2], low: words[3]), port: ports[1]))
        // Paths and a host name far below their limits: `try?` never gives nil here.
        guard
            let unix = try? ProxyAddresses.unix(
                source: .init(path: "/tmp/\(words[0])"), destination: .init(path: "/run/\(words[1]).sock")),
            let authorityTLV = try? ProxyTLV.authority("host-\(words[2]).example")
        else { return nil }
        var allTLVs = ProxyTLVs(tlvs)
        if authority { allTLVs.append(authorityTLV) }
        let transport: ProxyTransport = datagram ? .datagram : .stream
        switch kind {
        case 0: return ProxyHeader(version: .v1, addresses: v4)
        case 1: return ProxyHeader(version: .v1, addresses: v6)
        case 2: return .v1Unknown
        case 3: return ProxyHeader(version: .v2, addresses: v4, transport: transport, tlvs: allTLVs)
        case 4: return ProxyHeader(version: .v2, addresses: v6, transport: transport, tlvs: allTLVs)
        case 5: return ProxyHeader(version: .v2, addresses: unix, transport: transport, tlvs: allTLVs)
        case 6: return .local
        case 7: return ProxyHeader(version: .v2, addresses: .unspecified)
        default: return ProxyHeader(version: .v2, addresses: v4, transport: transport, tlvs: allTLVs)
        }
    }

    @Test func encodeThenParse() async {
        await propertyCheck(count: 1000, input: Self.headerGenerator, Gen.bool) { header, checksum in
            let withChecksum = checksum && header.version == .v2 && header.addresses != .unspecified
            var encoded = try header.encoded(appendingCRC32C: withChecksum)
            let length = encoded.readableBytes
            encoded.writeString("payload")
            var expected = header
            if withChecksum {
                expected.tlvs.append(try ProxyTLV(type: .crc32c, value: encoded.getSlice(at: length - 4, length: 4)!))
            }
            #expect(try ProxyHeaderParser().parse(encoded) == .complete(expected, length: length))
        }
    }

    /// Every strict prefix of an encoded header is the start of a valid header: the parser
    /// answers exactly "need more bytes" for each, never an error or a shorter header, and the
    /// whole encoding parses back to the header it came from.
    @Test func everyStrictPrefixNeedsMoreBytes() async {
        await propertyCheck(count: 1000, input: Self.headerGenerator, Gen.bool) { header, checksum in
            let withChecksum = checksum && header.version == .v2 && header.addresses != .unspecified
            let encoded = try header.encoded(appendingCRC32C: withChecksum)
            let bytes = Array(encoded.readableBytesView)
            var answers: [Int: ProxyHeaderParseResult] = [:]
            var errors: [Int: ProxyHeaderError] = [:]
            for end in 0..<bytes.count {
                do throws(ProxyHeaderError) {
                    let answer = try ProxyHeaderParser().parse(ByteBuffer(bytes: bytes[..<end]))
                    if answer != .needMoreBytes { answers[end] = answer }
                } catch {
                    errors[end] = error
                }
            }
            #expect(answers.isEmpty, "prefixes that were not 'need more bytes': \(answers)")
            #expect(errors.isEmpty, "prefixes that were rejected: \(errors)")
            var expected = header
            if withChecksum {
                expected.tlvs.append(try ProxyTLV(type: .crc32c, value: encoded.getSlice(at: bytes.count - 4, length: 4)!))
            }
            #expect(try ProxyHeaderParser().parse(encoded) == .complete(expected, length: bytes.count))
        }
    }

    /// Random bytes after a valid signature never crash the parser or make it wait past the limit.
    @Test func arbitraryBytesAfterSignature() async {
        await propertyCheck(count: 2000, input: Gen.uint8().array(of: 0...120), Gen.bool) { tail, v1 in
            let bytes = (v1 ? Array("PROXY ".utf8) : hexBytes(v2SignatureHex)) + tail
            do throws(ProxyHeaderError) {
                let result = try ProxyHeaderParser().parse(ByteBuffer(bytes: bytes))
                if case .complete(_, let length) = result {
                    #expect(length <= bytes.count)
                } else if v1 {
                    #expect(bytes.count < 107)
                } else {
                    // Version 2 waits for its 16 fixed bytes, then for exactly the `len` they announce.
                    let announced = bytes.count >= 16 ? 16 + (Int(bytes[14]) << 8 | Int(bytes[15])) : 16
                    #expect(bytes.count < announced)
                }
            } catch {
                #expect(error.offset >= 0 && error.offset <= max(bytes.count, 107))
            }
        }
    }
}
