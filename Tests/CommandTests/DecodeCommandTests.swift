import Foundation
import NIOCore
import ProxyProtocol
import Testing

@Suite struct DecodeCommandTests {
    /// What `decode --hex` prints for `hex`, once it has succeeded with nothing on standard error.
    func decodeHex(_ hex: String) async throws -> String {
        let output = try await CommandRunner.run(["decode", "--hex"], input: Data(hex.utf8))
        #expect(output.standardError == "")
        #expect(output.status == 0)
        return output.standardOutput
    }

    @Test func decodesV1FromStandardInput() async throws {
        let output = try await CommandRunner.run(["decode"], input: Data("PROXY TCP6 2001:DB8::1 ::1 51234 443\r\nHELLO".utf8))
        #expect(output.status == 0)
        #expect(output.standardError == "")
        #expect(
            output.standardOutput == """
                {"version":1,"command":"PROXY","family":"TCP6","transport":null,\
                "source":{"ip":"2001:db8::1","port":51234},"destination":{"ip":"::1","port":443},\
                "tlvs":[],"header_length":38,"trailing_bytes":5}

                """)
    }

    @Test func decodesV2HexWithTLVs() async throws {
        let hex = """
            0D0A0D0A 000D0A51 5549540A 21 11 0033
            C0000201 C6336407 C822 01BB
            02 000B 6578616D706C652E636F6D
            20 000F 01 00000000 21 0007 544C5376312E33
            EA 0004 01 767063
            """
        #expect(
            try await decodeHex(hex) == """
                {"version":2,"command":"PROXY","family":"INET","transport":"STREAM",\
                "source":{"ip":"192.0.2.1","port":51234},"destination":{"ip":"198.51.100.7","port":443},\
                "tlvs":[{"type":2,"name":"AUTHORITY","hex":"6578616d706c652e636f6d","value":"example.com"},\
                {"type":32,"name":"SSL","hex":"0100000000210007544c5376312e33","value":{"client":1,"ssl":true,\
                "cert_conn":false,"cert_sess":false,"verify":0,"tlvs":[{"type":33,"name":"SSL_VERSION",\
                "hex":"544c5376312e33","value":"TLSv1.3"}]}},\
                {"type":234,"name":"AWS","hex":"01767063","value":{"vpc_endpoint_id":"vpc"}}],\
                "header_length":67,"trailing_bytes":0}

                """)
    }

    /// Each registered type prints its value: text for ALPN and UNIQUE_ID when it is UTF-8 (none
    /// otherwise), text for NETNS, a number for CRC32C, null for NOOP.
    @Test func decodesRegisteredTLVValues() async throws {
        let header = try ProxyHeader(
            version: .v2,
            addresses: .inet(
                source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 51234), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)),
            tlvs: [.alpn("h2"), ProxyTLV(type: .alpn, bytes: [0xFF]), .noop(count: 2), .uniqueID(Array("id-1".utf8)), .netns("blue")])
        let bytes = Array(try header.encoded(appendingCRC32C: true).readableBytesView)
        let checksum = bytes.suffix(4).reduce(0) { $0 << 8 | Int($1) }
        let checksumHex = bytes.suffix(4).map { String(format: "%02x", $0) }.joined()
        #expect(
            try await decodeHex(bytes.map { String(format: "%02X", $0) }.joined()) == """
                {"version":2,"command":"PROXY","family":"INET","transport":"STREAM",\
                "source":{"ip":"192.0.2.1","port":51234},"destination":{"ip":"198.51.100.7","port":443},\
                "tlvs":[{"type":1,"name":"ALPN","hex":"6832","value":"h2"},{"type":1,"name":"ALPN","hex":"ff"},\
                {"type":4,"name":"NOOP","hex":"0000","value":null},\
                {"type":5,"name":"UNIQUE_ID","hex":"69642d31","value":"id-1"},\
                {"type":48,"name":"NETNS","hex":"626c7565","value":"blue"},\
                {"type":3,"name":"CRC32C","hex":"\(checksumHex)","value":\(checksum)}],\
                "header_length":\(bytes.count),"trailing_bytes":0}

                """)
    }

    /// AWS, Azure and Google Cloud TLVs are named and decoded only when the value has that
    /// cloud's shape; 0xE0-0xEF values that do not are printed raw and unnamed.
    @Test func decodesCloudTLVs() async throws {
        let hex = """
            0D0A0D0A 000D0A51 5549540A 21 11 004B
            C0000201 C6336407 C822 01BB
            EA 0004 01 767063
            EE 0005 01 78563412
            E0 0008 0000000012345678
            EA 0002 02 78
            EE 0003 01 0000
            E0 0003 010203
            EA 0002 01 FF
            E0 0008 FFFFFFFFFFFFFFFF
            EA 0001 01
            """
        #expect(
            try await decodeHex(hex) == """
                {"version":2,"command":"PROXY","family":"INET","transport":"STREAM",\
                "source":{"ip":"192.0.2.1","port":51234},"destination":{"ip":"198.51.100.7","port":443},\
                "tlvs":[{"type":234,"name":"AWS","hex":"01767063","value":{"vpc_endpoint_id":"vpc"}},\
                {"type":238,"name":"AZURE","hex":"0178563412","value":{"private_link_id":305419896}},\
                {"type":224,"name":"GCP","hex":"0000000012345678","value":{"psc_connection_id":"305419896"}},\
                {"type":234,"name":null,"hex":"0278"},{"type":238,"name":null,"hex":"010000"},\
                {"type":224,"name":null,"hex":"010203"},{"type":234,"name":null,"hex":"01ff"},\
                {"type":224,"name":"GCP","hex":"ffffffffffffffff","value":{"psc_connection_id":"18446744073709551615"}},\
                {"type":234,"name":null,"hex":"01"}],"header_length":91,"trailing_bytes":0}

                """)
    }

    @Test func decodesUnixAndLocalFromAFile() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-decode-\(UUID()).bin")
        defer { try? FileManager.default.removeItem(at: file) }
        var bytes: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x31, 0x00, 0xD8]
        bytes += Array("/src".utf8) + [UInt8](repeating: 0, count: 104) + Array("/dst".utf8) + [UInt8](repeating: 0, count: 104)
        try Data(bytes).write(to: file)
        let unix = try await CommandRunner.run(["decode", file.path])
        #expect(unix.status == 0)
        #expect(
            unix.standardOutput == """
                {"version":2,"command":"PROXY","family":"UNIX","transport":"STREAM","source":{"path":"/src"},\
                "destination":{"path":"/dst"},"tlvs":[],"header_length":232,"trailing_bytes":0}

                """)
        let local = try await CommandRunner.run(["decode", "--hex"], input: Data("0D0A0D0A000D0A515549540A 20 11 0000 ff".utf8))
        #expect(local.status == 0)
        #expect(
            local.standardOutput == """
                {"version":2,"command":"LOCAL","family":"UNSPEC","transport":"UNSPEC","source":null,\
                "destination":null,"tlvs":[],"header_length":16,"trailing_bytes":1}

                """)
    }

    @Test(arguments: [
        (
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            "error: v1 header, byte 29: destination port \"99999\" is not a port (0-65535, no leading zeros)\n"
        ),
        ("SSH-2.0-OpenSSH\r\n", "error: byte 0: not a PROXY protocol header (no \"PROXY \" or version 2 signature)\n"),
        ("PROXY TCP4 1.2.3.4", "error: incomplete header: 18 byte(s) are the start of a valid header but it does not end\n"),
        ("", "error: incomplete header: 0 byte(s) are the start of a valid header but it does not end\n"),
    ])
    func rejectsInvalidInput(input: String, message: String) async throws {
        let output = try await CommandRunner.run(["decode"], input: Data(input.utf8))
        #expect(output.status == 1)
        #expect(output.standardOutput == "")
        #expect(output.standardError == message)
    }

    @Test func rejectsBadHex() async throws {
        let odd = try await CommandRunner.run(["decode", "--hex"], input: Data("0D0A0".utf8))
        #expect(odd.status == 1)
        #expect(odd.standardError == "error: odd number of hex digits\n")
        let bad = try await CommandRunner.run(["decode", "--hex"], input: Data("0D 0G".utf8))
        #expect(bad.status == 1)
        #expect(bad.standardError == "error: invalid hex character \"G\" at character 4\n")
        let v2 = try await CommandRunner.run(["decode", "--hex"], input: Data("0D0A0D0A000D0A515549540A 21 11 000B".utf8))
        #expect(v2.status == 1)
        #expect(v2.standardError == "error: incomplete header: 16 byte(s) are the start of a valid header but it does not end\n")
    }

    @Test func missingFile() async throws {
        let output = try await CommandRunner.run(["decode", "/nonexistent/header.bin"])
        #expect(output.status == 1)
        #expect(output.standardError == "error: cannot read /nonexistent/header.bin\n")
    }
}
