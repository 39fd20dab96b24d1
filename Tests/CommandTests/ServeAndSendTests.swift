import Foundation
import NIOCore
import NetProxy
import TestSupport
import Testing

@Suite(.timeLimit(.minutes(1))) struct ServeCommandTests {
    @Test func servesAConfigFileAndStopsOnSIGINT() async throws {
        // Connections are logged at debug.
        let serve = try ServeProcess(
            config: #"{"interfaces": ["127.0.0.1"], "whoami_ports": [0], "proxy_port_mappings": {"0": "http"}}"#,
            extraArguments: ["--log-level", "debug"])
        #expect(serve.banner.hasPrefix("netproxy is listening:\n  whoami                 127.0.0.1:"))
        let httpPort = try #require(serve.port("http (PROXY)"))
        #expect(serve.banner.hasSuffix("Try:\n  curl --haproxy-protocol http://127.0.0.1:\(httpPort)/\n"))
        let whoamiPort = try #require(serve.port("whoami"))
        let reply = try await LoopbackClient.exchange(port: whoamiPort, send: [])
        #expect(String(decoding: reply, as: UTF8.self).hasPrefix(#"{"service":"whoami","port":\#(whoamiPort),"#))
        let http = String(
            decoding: try await LoopbackClient.exchange(
                port: httpPort, send: Array("PROXY TCP4 192.0.2.9 192.0.2.10 9 10\r\nGET / HTTP/1.0\r\n\r\n".utf8)), as: UTF8.self)
        #expect(http.contains(#""source":{"ip":"192.0.2.9","port":9}"#))
        let (status, errors) = try await serve.stop()
        #expect(status == 0)
        #expect(errors.contains("connection handed to http on port \(httpPort): proxy 127.0.0.1:"))
        #expect(errors.contains("client 192.0.2.9:9"))
    }

    @Test func badConfigurationExitsWithTheEntry() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-bad-\(UUID()).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(#"{"proxy_port_mappings": {"15222": "c2s"}}"#.utf8).write(to: file)
        let output = try await CommandRunner.run(["serve", "--config", file.path])
        #expect(output.status == 1)
        // The file and the entry at fault; the words are the library's (ConfigurationErrorTests).
        let lines = output.standardError.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: \(file.path): proxy_port_mappings: "), "\(output.standardError)")
    }
}

@Suite(.timeLimit(.minutes(1))) struct SendCommandTests {
    func host(_ json: String) async throws -> (NetProxyHost, Int) {
        let host = try NetProxyHost(configuration: try NetProxyConfiguration(json: Data(json.utf8)))
        let listeners = try await host.start()
        return (host, listeners[0].address.port!)
    }

    @Test func sendsAV2HeaderWithTLVs() async throws {
        let (host, port) = try await host(#"{"interfaces": ["127.0.0.1"], "proxy_port_mappings": {"0": "whoami"}}"#)
        let output = try await CommandRunner.run([
            "send", "--source", "[2001:db8::7]:4242", "--destination", "[2001:db8::8]:443", "--authority", "chat.example",
            "--unique-id", "abc", "--tlv", "0xE1:CAFE", "--crc32c", "127.0.0.1", "\(port)",
        ])
        #expect(output.status == 0)
        #expect(output.standardError == "")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(output.standardOutput.utf8)) as? [String: Any])
        #expect((object["source"] as? [String: Any])?["ip"] as? String == "2001:db8::7")
        #expect((object["source"] as? [String: Any])?["port"] as? Int == 4242)
        let tlvs = try #require((object["proxy"] as? [String: Any])?["tlvs"] as? [[String: Any]])
        #expect(tlvs.map { $0["type"] as? Int } == [0xE1, 2, 5, 3])
        #expect(tlvs.map { $0["hex"] as? String }.prefix(3) == ["cafe", "636861742e6578616d706c65", "616263"])
        await host.shutdown(gracePeriod: .zero)
    }

    @Test func relaysLikeNetcat() async throws {
        let (host, port) = try await host(#"{"interfaces": ["127.0.0.1"], "proxy_port_mappings": {"0": "echo"}}"#)
        let payload = Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        let output = try await CommandRunner.run(["send", "--v1", "127.0.0.1", "\(port)"], input: payload)
        #expect(output.status == 0)
        #expect(output.standardOutputBytes == payload)
        await host.shutdown(gracePeriod: .zero)
    }

    @Test(arguments: [
        (["send", "--v1", "--crc32c", "127.0.0.1", "1"], "error: --v1 headers carry no TLVs, CRC32C, LOCAL or DGRAM\n"),
        (["send", "--tlv", "300:00", "127.0.0.1", "1"], "error: --tlv 300:00: expected TYPE:HEX with TYPE from 0 to 255\n"),
        (["send", "--tlv", "1:0", "127.0.0.1", "1"], "error: odd number of hex digits\n"),
        (["send", "--source", "192.0.2.1", "127.0.0.1", "1"], "error: --source 192.0.2.1: expected IP:PORT\n"),
        (["send", "--datagram", "127.0.0.1", "1"], "error: --datagram needs --source: the connection's own addresses are TCP's\n"),
        (
            ["send", "--datagram", "--local", "127.0.0.1", "1"],
            "error: --datagram claims addresses of a UDP flow: --local and --unknown send no addresses\n"
        ),
        (
            ["send", "--datagram", "--unknown", "--source", "192.0.2.1:1", "127.0.0.1", "1"],
            "error: --datagram claims addresses of a UDP flow: --local and --unknown send no addresses\n"
        ),
        (["send", "localhost", "1"], "error: localhost port 1 is not an IP address and port\n"),
        (["send", "127.0.0.1", "70000"], "error: 70000 is not a port (0-65535)\n"),
        (
            ["send", "--unique-id", String(repeating: "u", count: 129), "127.0.0.1", "1"],
            "error: --unique-id: TLV UNIQUE_ID value of 129 bytes is 1 over its maximum of 128\n"
        ),
        (
            ["send", "--authority", String(repeating: "a", count: 65536), "127.0.0.1", "1"],
            "error: --authority: TLV AUTHORITY value of 65536 bytes is 1 over its maximum of 65535\n"
        ),
        // Two TLVs of 35,000 bytes: each fits, together they do not, whatever the addresses.
        (
            ["send"] + Array(repeating: ["--tlv", "0xE1:" + String(repeating: "41", count: 34_997)], count: 2).flatMap { $0 } + ["127.0.0.1", "1"],
            "error: cannot build the header: TLVs of 70000 bytes are 4501 over the maximum of 65499 that a v2 header with IPv6 addresses leaves them\n"
        ),
    ])
    func rejectsBadOptions(arguments: [String], message: String) async throws {
        let output = try await CommandRunner.run(arguments)
        #expect(output.status == 1)
        #expect(output.standardError == message)
    }

    @Test func reportsARefusedConnection() async throws {
        // Bound but not listening: connections are refused, and no other test can take the port.
        let refusing = try ListeningSocket(listens: false)
        defer { refusing.close() }
        let port = refusing.port
        let output = try await CommandRunner.run(["send", "127.0.0.1", "\(port)"])
        #expect(output.status == 1)
        #expect(output.standardError == "error: cannot connect to 127.0.0.1:\(port): connection refused\n")
    }

    /// A peer that resets the connection after the header: said in words, not in SwiftNIO's
    /// description of the failed read.
    @Test func reportsAResetConnection() async throws {
        let listening = try ListeningSocket()
        defer { listening.close() }
        let port = listening.port
        let resetter = Thread {
            let accepted = accept(listening.descriptor, nil, nil)
            guard accepted >= 0 else { return }
            var buffer = [UInt8](repeating: 0, count: 64)
            _ = read(accepted, &buffer, buffer.count)
            var option = linger(l_onoff: 1, l_linger: 0)
            setsockopt(accepted, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
            close(accepted)
        }
        resetter.start()
        let output = try await CommandRunner.run(["send", "127.0.0.1", "\(port)"])
        #expect(output.status == 1)
        #expect(output.standardError == "error: connection failed: connection reset by peer\n")
    }
}
