import CoreMetrics
import Foundation
import Logging
import MetricsTestKit
import NIOCore
import NIOPosix
import ProxyProtocol
import TestSupport
import Testing

@testable import NetProxy

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The access log: one line per ended connection, saying who, through which proxy, to which
/// service and target, how many bytes each way, and how it ended.
@Suite(.timeLimit(.minutes(1))) struct AccessLogTests {
    static let header = Array("PROXY TCP4 203.0.113.9 198.51.100.7 51234 443\r\n".utf8)

    /// A logfmt line as key -> value (the values here have no spaces).
    static func fields(_ line: Substring) -> [String: String] {
        Dictionary(
            uniqueKeysWithValues: line.split(separator: " ").map { pair in
                let parts = pair.split(separator: "=", maxSplits: 1)
                return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
            })
    }

    @Test func oneLinePerConnectionSaysHowItEnded() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-access-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let logPath = directory.appendingPathComponent("access.log").path
        // The forward's target: says one line and closes first.
        let target = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(SayAndClose()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { target.close(promise: nil) }
        let targetPort = target.localAddress!.port!
        let ports = try freePorts(7)
        let (echoProxy, unmapped, forward, deadForward, idle, whoami, closed) = (ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6])
        let running = try await RunningHost(
            #"""
            {"interfaces": ["127.0.0.1"], "access_log": "\#(logPath)", "whoami_ports": [\#(whoami)], "echo_ports": [],
             "proxy_ports": [\#(echoProxy), \#(unmapped), \#(forward), \#(deadForward), \#(idle)], "proxy_trusted_proxies": ["127.0.0.1"],
             "proxy_port_mappings": {"\#(echoProxy)": "echo", "\#(forward)": "fw", "\#(deadForward)": "dead", "\#(idle)": "echo"},
             "proxy_port_options": {"\#(idle)": {"idle_timeout": 0.3}},
             "forward_services": {"fw": {"target": "127.0.0.1:\#(targetPort)"}, "dead": {"target": "127.0.0.1:\#(closed)"}}}
            """#)

        #expect(try await LoopbackClient.exchange(port: echoProxy, send: Self.header + Array("hello".utf8), halfClose: true) == Array("hello".utf8))
        #expect(try await LoopbackClient.exchange(port: echoProxy, from: "127.0.0.3", send: Self.header) == [])
        #expect(try await LoopbackClient.exchange(port: unmapped, send: Self.header) == [])
        #expect(try await LoopbackClient.exchange(port: forward, send: Self.header) == Array(SayAndClose.line.utf8))
        #expect(try await LoopbackClient.exchange(port: deadForward, send: Self.header) == [])
        #expect(try await LoopbackClient.exchange(port: idle, send: Self.header) == [])
        let direct = try await LoopbackClient.exchange(port: whoami, send: [])
        // Still open at the shutdown, which closes it.
        let held = try BlockingSocket(connectingTo: "127.0.0.1", port: echoProxy)
        defer { held.close() }
        try held.send(Self.header + Array("ping".utf8))
        var echoed = [UInt8](repeating: 0, count: 4)
        var received = 0
        while received < 4 {
            let count = try echoed.withUnsafeMutableBytes { try held.receive(into: UnsafeMutableRawBufferPointer(rebasing: $0[received...])) }
            guard count > 0 else { break }
            received += count
        }
        #expect(echoed == Array("ping".utf8))
        await running.stop()

        let lines = try String(contentsOfFile: logPath, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 8, "\(lines)")
        var byPort: [Int: [[String: String]]] = [:]
        for line in lines {
            let fields = Self.fields(line)
            #expect(
                fields.keys.sorted() == [
                    "bytes_in", "bytes_out", "client", "duration", "end", "listener", "proxy", "reason", "route", "service", "target", "time",
                ],
                "\(line)")
            #expect(fields["time"]?.hasSuffix("Z") == true && fields["time"]?.count == 24, "\(line)")
            #expect(fields["duration"].flatMap(Double.init) != nil, "\(line)")
            byPort[Int(fields["listener"]!.split(separator: ":").last!)!, default: []].append(fields)
        }
        func expect(_ port: Int, where condition: ([String: String]) -> Bool = { _ in true }, _ expected: [String: String]) {
            guard let fields = byPort[port]?.first(where: condition) else {
                Issue.record("no line for port \(port) in \(lines)")
                return
            }
            for (key, value) in expected {
                #expect(fields[key] == value, "\(key) in \(fields)")
            }
        }
        let client = "203.0.113.9:51234"
        expect(
            echoProxy, where: { $0["end"] == "client_closed" },
            ["service": "echo", "client": client, "target": "-", "bytes_in": "\(Self.header.count + 5)", "bytes_out": "5", "reason": "-"])
        #expect(byPort[echoProxy]?.first { $0["end"] == "client_closed" }?["proxy"]?.hasPrefix("127.0.0.1:") == true)
        expect(
            echoProxy, where: { $0["end"] == "refused" },
            ["service": "-", "client": "-", "reason": "untrusted_source", "bytes_in": "0", "bytes_out": "0"])
        #expect(byPort[echoProxy]?.first { $0["end"] == "refused" }?["proxy"]?.hasPrefix("127.0.0.3:") == true)
        expect(echoProxy, where: { $0["end"] == "shutdown" }, ["service": "echo", "client": client, "bytes_out": "4"])
        expect(unmapped, ["service": "-", "client": client, "end": "refused", "reason": "unmapped_port"])
        expect(
            forward,
            [
                "service": "fw", "client": client, "target": "127.0.0.1:\(targetPort)", "bytes_in": "\(Self.header.count)",
                "bytes_out": "\(SayAndClose.line.utf8.count)", "end": "target_closed",
            ])
        expect(deadForward, ["service": "dead", "client": client, "target": "-", "end": "connect_failed", "reason": "refused"])
        expect(idle, ["service": "echo", "client": client, "end": "idle_timeout", "bytes_out": "0"])
        expect(whoami, ["service": "whoami", "proxy": "-", "end": "closed", "bytes_in": "0", "bytes_out": "\(direct.count)"])
        #expect(byPort[whoami]?.first?["client"]?.hasPrefix("127.0.0.1:") == true)
    }

    /// A reload opens the file anew (a rotated log is followed by a new file), and can turn the
    /// log off.
    @Test func aReloadReopensTheFile() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-access-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = directory.appendingPathComponent("access.log").path
        let json = #"{"interfaces": ["127.0.0.1"], "access_log": "\#(log)", "echo_ports": [0]}"#
        let running = try await RunningHost(json)
        let port = running.port(.service("echo"))
        #expect(try await LoopbackClient.exchange(port: port, send: Array("one".utf8), halfClose: true) == Array("one".utf8))
        // Rotated: moved away, then the reload makes a new file.
        try FileManager.default.moveItem(atPath: log, toPath: log + ".1")
        try await running.host.reload(configuration: try NetProxyConfiguration(json: Data(json.utf8)))
        #expect(try await LoopbackClient.exchange(port: port, send: Array("two!".utf8), halfClose: true) == Array("two!".utf8))
        try await running.host.reload(
            configuration: try NetProxyConfiguration(json: Data(json.replacingOccurrences(of: #""access_log": "\#(log)", "#, with: "").utf8)))
        #expect(try await LoopbackClient.exchange(port: port, send: Array("three".utf8), halfClose: true) == Array("three".utf8))
        await running.stop()
        let rotated = try String(contentsOfFile: log + ".1", encoding: .utf8).split(separator: "\n")
        let current = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(rotated.map { Self.fields($0)["bytes_in"] } == ["3"])
        #expect(current.map { Self.fields($0)["bytes_in"] } == ["4"])
    }

    /// A multiplexed connection names the service it was handed to, and how it was chosen.
    @Test func aMultiplexedConnectionNamesItsRoute() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-access-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = directory.appendingPathComponent("access.log").path
        let running = try await RunningHost(
            #"""
            {"interfaces": ["127.0.0.1"], "access_log": "\#(log)", "echo_ports": [], "whoami_ports": [],
             "mx_ports": [0], "multiplex_services": {"mx": {"default": "echo", "routes": {"http": "whoami"}}}}
            """#)
        let port = running.port(.service("mx"))
        let reply = try await LoopbackClient.exchange(port: port, send: Array("GET / HTTP/1.0\r\n\r\n".utf8))
        #expect(reply.first == UInt8(ascii: "{"))
        await running.stop()
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 1)
        let fields = lines.first.map(Self.fields) ?? [:]
        #expect(fields["service"] == "whoami")
        #expect(fields["route"] == "mx:http")
        #expect(fields["bytes_out"] == "\(reply.count)")
    }

    /// A destination that takes nothing (a pipe nobody reads) costs lines, counted, and never
    /// holds up the end: the shutdown's wait for the writer gives up.
    @Test func aStuckDestinationNeverHoldsUpTheEnd() async throws {
        var ends: [CInt] = [-1, -1]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]) }
        let metrics = TestMetrics()
        let log = AccessLog(dropped: CoreMetrics.Counter(label: "dropped", factory: metrics), logger: Logger(label: "test"))
        log.use(AccessLogFile(name: "pipe", descriptor: ends[1], ownsDescriptor: true))
        let line = String(repeating: "x", count: 999) + "\n"
        // 4 MiB offered: the pipe takes 64 KiB, the writer's stuck write 1 MiB at most; the rest is
        // dropped, at once or when the shutdown gives up.
        for _ in 0..<4096 {
            Array(line.utf8).withUnsafeBytes { log.record($0) }
        }
        await log.finish(timeout: 0.3)
        let dropped = try metrics.expectCounter("dropped").totalValue
        // All but what the writer holds in its stuck write (1 MiB at most) and what the pipe took.
        #expect(dropped >= 4096 - (AccessLog.bufferLimit + 65536) / 1000 && dropped < 4096, "\(dropped)")
        // Read what the pipe holds, so that the writer's last write returns and it ends.
        _ = fcntl(ends[0], F_SETFL, O_NONBLOCK)
        var buffer = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<50 {
            while read(ends[0], &buffer, buffer.count) > 0 {}
            usleep(10_000)
        }
    }

    /// Values with spaces, quotes or control characters are quoted, as logfmt readers expect.
    @Test func valuesAreQuotedWhenNeeded() {
        func text(_ write: (inout ASCIIWriter) -> Void) -> String {
            var buffer = ByteBuffer()
            buffer.writeASCII(maximumLength: 256, write)
            return String(buffer: buffer)
        }
        #expect(text { ConnectionRecord.writeValue("127.0.0.1:15222", into: &$0) } == "127.0.0.1:15222")
        #expect(text { ConnectionRecord.writeValue("unix:/run/my socket", into: &$0) } == #""unix:/run/my socket""#)
        #expect(text { ConnectionRecord.writeValue("a\"b\\c\nd=e", into: &$0) } == #""a\"b\\c\nd=e""#)
        #expect(text { ConnectionRecord.writeValue("tab\there\u{7F}\u{1}é", into: &$0) } == #""tab\u{9}here\u{7f}\u{1}é""#)
        #expect(text { ConnectionRecord.writeValue("", into: &$0) } == #""""#)
        #expect(text { ConnectionRecord.writeValue(nil, into: &$0) } == "-")
        #expect(text { ConnectionRecord.writeSeconds(400_000, into: &$0) } == "0.000")
        #expect(text { ConnectionRecord.writeSeconds(12_345_600_000, into: &$0) } == "12.346")
        #expect(text { ConnectionRecord.writeSeconds(1_000_000_000, into: &$0) } == "1.000")
        #expect(text { $0.appendDecimal(0) } == "0")
        #expect(text { $0.appendDecimal(65535) } == "65535")
        #expect(text { $0.appendDecimal(7, width: 3) } == "007")
        #expect(text { ConnectionRecord.writeAddress(try! SocketAddress(ipAddress: "2001:db8::1", port: 443), into: &$0) } == "[2001:db8::1]:443")
        #expect(text { ConnectionRecord.writeAddress(try! SocketAddress(ipAddress: "192.0.2.1", port: 9), into: &$0) } == "192.0.2.1:9")
        #expect(text { ConnectionRecord.writeAddress(nil, into: &$0) } == "-")
        let timestamp = text { ConnectionRecord.writeTimestamp(into: &$0) }
        #expect(timestamp.count == 24 && timestamp.hasSuffix("Z") && timestamp.dropFirst(10).first == "T", "\(timestamp)")
    }

    /// The longest line a record can make fits the room it reserves on the stack: every value
    /// escaped byte by byte, addresses at their longest, the largest numbers.
    @Test func theLongestLineFitsItsReservation() async throws {
        var ends: [CInt] = [-1, -1]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]) }
        let log = AccessLog(dropped: CoreMetrics.Counter(label: "dropped", factory: TestMetrics()), logger: Logger(label: "test"))
        log.use(AccessLogFile(name: "pipe", descriptor: ends[1], ownsDescriptor: true))
        let worst = String(repeating: "\u{1F}", count: 40)
        let escaped = "\"" + String(repeating: #"\u{1f}"#, count: 40) + "\""
        let longest = try SocketAddress(ipAddress: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", port: 65535)
        let socketPath = "/tmp/" + String(repeating: "\"", count: 90)
        let started = NIODeadline.uptimeNanoseconds(0)
        let record = ConnectionRecord(log: log, listener: worst, peer: longest, isProxyListener: true, started: started)
        (record.service, record.route, record.client, record.proxied) = (worst, worst, longest, true)
        record.target = try SocketAddress(unixDomainSocketPath: socketPath)
        (record.bytesIn, record.bytesOut) = (.max, .max)
        record.ended(worst, reason: worst)
        record.write(now: .uptimeNanoseconds(.max))
        await log.finish()
        var bytes = [UInt8](repeating: 0, count: 65536)
        let count = read(ends[0], &bytes, bytes.count)
        let line = String(decoding: bytes[..<max(0, count)], as: UTF8.self)
        let address = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535"
        let target = "\"unix:/tmp/" + String(repeating: #"\""#, count: 90) + "\""
        let expected =
            "listener=\(escaped) service=\(escaped) route=\(escaped) client=\(address) proxy=\(address) target=\(target)"
            + " bytes_in=\(Int.max) bytes_out=\(Int.max) duration=9223372036.855"
            + " end=\(escaped) reason=\(escaped)\n"
        #expect(line.dropFirst("time=2026-12-04T20:41:07.123Z ".count) == expected[...], "\(line)")
    }

    /// The log file is never a link or a FIFO: the start fails, naming the key.
    @Test func theFileMustBeARegularFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-access-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let fifo = directory.appendingPathComponent("fifo").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let link = directory.appendingPathComponent("link").path
        #expect(symlink("/etc/passwd", link) == 0)
        #expect(throws: NetProxyConfigurationError(.file, key: "access_log", "access_log: cannot open \(fifo) for appending: it is a FIFO")) {
            try AccessLogFile.opening(fifo)
        }
        #expect(throws: NetProxyConfigurationError(.file, key: "access_log", "access_log: cannot open \(link) for appending: it is a symbolic link"))
        {
            try AccessLogFile.opening(link)
        }
        #expect(
            throws: NetProxyConfigurationError(.file, key: "access_log", "access_log: cannot open \(directory.path) for appending: it is a directory")
        ) {
            try AccessLogFile.opening(directory.path)
        }
    }
}

/// A server that says one line to each client and closes.
private final class SayAndClose: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    static let line = "hello from the target\n"

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        context.writeAndFlush(NIOAny(ByteBuffer(string: Self.line))).whenComplete { _ in channel.close(promise: nil) }
    }
}
