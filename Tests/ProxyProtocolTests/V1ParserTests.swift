import NIOCore
import ProxyProtocol
import Testing

@Suite struct V1ParserTests {
    static let maximalUnknown = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"

    static let valid: [(String, ProxyHeader)] = [
        ("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n", ProxyHeader(version: .v1, addresses: inetAddresses)),
        (
            "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
            ProxyHeader(
                version: .v1,
                addresses: .inet(
                    source: .init(ProxyIPv4Address(0, 0, 0, 0), port: 0),
                    destination: .init(ProxyIPv4Address(255, 255, 255, 255), port: 65535)))
        ),
        (
            "PROXY TCP6 2001:db8::1 2001:DB8:0:0:0:0:0:2 1 65535\r\n",
            ProxyHeader(
                version: .v1,
                addresses: .inet6(
                    source: .init(ProxyIPv6Address("2001:db8::1")!, port: 1),
                    destination: .init(ProxyIPv6Address("2001:db8::2")!, port: 65535)))
        ),
        (
            "PROXY TCP6 ::ffff:192.0.2.1 :: 80 8080\r\n",
            ProxyHeader(
                version: .v1,
                addresses: .inet6(
                    source: .init(ProxyIPv6Address(ipv4Mapped: ProxyIPv4Address(192, 0, 2, 1)), port: 80),
                    destination: .init(ProxyIPv6Address(high: 0, low: 0), port: 8080)))
        ),
        ("PROXY UNKNOWN\r\n", .v1Unknown),
        ("PROXY UNKNOWN 192.0.2.1 198.51.100.7 51234 443\r\n", .v1Unknown),
        ("PROXY UNKNOWN anything at all, even  two spaces\r\n", .v1Unknown),
        (maximalUnknown, .v1Unknown),
    ]

    @Test func validHeaders() throws {
        for (text, header) in Self.valid {
            #expect(try parse(text) == .complete(header, length: text.utf8.count), "\(text)")
        }
        #expect(Self.maximalUnknown.utf8.count == 107)
    }

    /// Every prefix asks for more; the whole header completes; payload after it is not taken.
    @Test func everySplitPoint() throws {
        for (text, header) in Self.valid {
            let bytes = Array(text.utf8)
            for end in 0..<bytes.count {
                #expect(try parse(Array(bytes[..<end])) == .needMoreBytes, "\(text.debugDescription) cut at \(end)")
            }
            let payload = Array("GET / HTTP/1.1\r\n\r\n".utf8)
            #expect(try parse(bytes + payload) == .complete(header, length: bytes.count))
        }
    }

    static let invalid: [(String, ProxyHeaderError.Kind, Int)] = [
        ("GET / HTTP/1.1\r\n", .invalidSignature, 0),
        ("PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n", .invalidSignature, 4),
        ("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", .invalidSignature, 5),
        ("PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", .invalidSignature, 5),
        ("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", .invalidSignature, 0),
        ("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", .v1UnknownFamily("TCP5"), 6),
        ("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", .v1UnknownFamily("tcp4"), 6),
        ("PROXY UNKNOWNX\r\n", .v1UnknownFamily("UNKNOWNX"), 6),
        ("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", .v1UnknownFamily("UDP4"), 6),
        ("PROXY \r\n", .v1MissingField(.protocolFamily), 6),
        ("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", .v1EmptyField(.protocolFamily), 6),
        ("PROXY TCP4\r\n", .v1MissingField(.sourceAddress), 10),
        ("PROXY TCP4 \r\n", .v1MissingField(.sourceAddress), 11),
        ("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", .v1EmptyField(.sourceAddress), 11),
        ("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", .v1EmptyField(.destinationAddress), 19),
        ("PROXY TCP4 1.2.3.4 5.6.7.8\r\n", .v1MissingField(.sourcePort), 26),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", .v1MissingField(.destinationPort), 28),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", .v1MissingField(.destinationPort), 29),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", .v1UnexpectedText, 30),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", .v1UnexpectedText, 30),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", .v1InvalidLineEnding, 30),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", .v1InvalidLineEnding, 30),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", .v1InvalidLineEnding, 30),
        ("PROXY UNKNOWN\n", .v1InvalidLineEnding, 13),
        ("PROXY UNKNOWN x\ny\r\n", .v1InvalidLineEnding, 15),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", .v1InvalidPort(.sourcePort, "01"), 27),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", .v1InvalidPort(.destinationPort, "00"), 29),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", .v1InvalidPort(.sourcePort, "65536"), 27),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n", .v1InvalidPort(.destinationPort, "123456"), 29),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", .v1InvalidPort(.destinationPort, "-2"), 29),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", .v1InvalidPort(.sourcePort, "+1"), 27),
        ("PROXY TCP4 1.2.3.4 5.6.7.8 0x10 2\r\n", .v1InvalidPort(.sourcePort, "0x10"), 27),
        ("PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", .v1InvalidAddress(.sourceAddress, "1.2.3.04"), 11),
        ("PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n", .v1InvalidAddress(.destinationAddress, "5.6.7.256"), 19),
        ("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", .v1InvalidAddress(.sourceAddress, "::1"), 11),
        ("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", .v1InvalidAddress(.sourceAddress, "1.2.3.4"), 11),
        ("PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n", .v1InvalidAddress(.destinationAddress, "fe80::1%eth0"), 15),
        ("PROXY TCP6 ::1 [::2] 1 2\r\n", .v1InvalidAddress(.destinationAddress, "[::2]"), 15),
        ("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", .v1InvalidAddress(.sourceAddress, "1.2.3.4\t5.6.7.8"), 11),
        ("PROXY " + String(repeating: "A", count: 101), .headerTooLong(limit: 107), 107),
        ("PROXY UNKNOWN " + String(repeating: "x", count: 93), .headerTooLong(limit: 107), 107),
        // CRLF would end at byte 108: one byte too long.
        ("PROXY UNKNOWN " + String(repeating: "x", count: 92) + "\r\n", .headerTooLong(limit: 107), 107),
        // A valid TCP6 line that the 107-byte limit does not allow.
        (
            "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 1 2\r\n",
            .headerTooLong(limit: 107), 107
        ),
    ]

    @Test func invalidHeaders() {
        for (text, kind, offset) in Self.invalid {
            #expect(parseError(text) == ProxyHeaderError(kind, at: offset), "\(text.debugDescription)")
        }
    }

    /// A field is judged as soon as it is complete, without waiting for the CRLF.
    @Test func rejectsEarly() {
        #expect(parseError("PROXY TCP5 ") == ProxyHeaderError(.v1UnknownFamily("TCP5"), at: 6))
        #expect(parseError("PROXY TCP4 1.2.3.400 ") == ProxyHeaderError(.v1InvalidAddress(.sourceAddress, "1.2.3.400"), at: 11))
        #expect(parseError("G") == ProxyHeaderError(.invalidSignature, at: 0))
        #expect(parseError("PROXI") == ProxyHeaderError(.invalidSignature, at: 4))
        #expect(parseError("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r") == nil)
    }

    @Test func respectsConfiguredLimits() throws {
        let v2Only = ProxyHeaderParser(acceptedVersions: .v2)
        #expect(parseError("P", parser: v2Only) == ProxyHeaderError(.versionNotAccepted(.v1), at: 0))
        let short = ProxyHeaderParser(maximumHeaderLength: 40)
        #expect(
            parseError("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n", parser: short)
                == ProxyHeaderError(.headerTooLong(limit: 40), at: 40))
        #expect(throws: Never.self) { try parse("PROXY UNKNOWN\r\n", parser: short) }
    }

    /// The words of an error are what a log shows an operator: they name the field and the
    /// byte, so they are checked, each with the error they belong to.
    @Test func errorDescriptionsNameFieldAndOffset() {
        #expect(parseError("PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n") == ProxyHeaderError(.v1InvalidAddress(.sourceAddress, "1.2.3.04"), at: 11))
        #expect(parseError("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n") == ProxyHeaderError(.v1InvalidLineEnding, at: 30))
        #expect(parseError("PROXY T\u{1}P4 1.2.3.4 5.6.7.8 1 2\r\n") == ProxyHeaderError(.v1UnknownFamily("T\u{1}P4"), at: 6))
        #expect(
            parseError("PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n")?.description
                == "v1 header, byte 11: source address \"1.2.3.04\" is not a valid address for the family")
        #expect(
            parseError("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n")?.description
                == "v1 header, byte 30: line must end with CRLF (lone CR or LF)")
        #expect(
            parseError("PROXY T\u{1}P4 1.2.3.4 5.6.7.8 1 2\r\n")?.description
                == "v1 header, byte 6: protocol family \"T\\u{1}P4\" is not TCP4, TCP6 or UNKNOWN")
    }

    @Test func fieldsCompareAndNameThemselves() {
        let fields: [ProxyHeaderError.Field] = [.signature, .protocolFamily, .sourceAddress, .destinationAddress, .sourcePort, .destinationPort]
        #expect(
            fields.map(\.description) == ["signature", "protocol family", "source address", "destination address", "source port", "destination port"])
        #expect(Set(fields).count == fields.count)
        #expect(ProxyHeaderError.Kind.v1MissingField(.sourcePort) != .v1MissingField(.destinationPort))
        #expect(
            ProxyHeaderError(.v1EmptyField(.destinationPort), at: 30).description
                == "v1 header, byte 30: empty destination port (fields are separated by exactly one space)")
    }
}
