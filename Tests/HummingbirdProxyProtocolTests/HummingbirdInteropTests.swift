import Foundation
import Hummingbird
import HummingbirdProxyProtocol
import NIOCore
import NIOProxyProtocol
import ProxyProtocol
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A Hummingbird application with `ProxiedRequestContext` behind real peers (HAProxy in HTTP mode,
/// `curl --haproxy-protocol`) and behind plain sockets that keep connections alive or never
/// finish their header.
@Suite(.serialized, .timeLimit(.minutes(2))) struct HummingbirdInteropTests {
    /// What the route saw for one request. Endpoints are `ip:port`, IPv6 in brackets.
    struct Seen: ResponseEncodable, Decodable, Equatable {
        var uri: String
        /// `context.remoteAddress`.
        var client: String?
        /// The socket's peer: the proxy's end of the connection.
        var proxy: String?
        var destination: String?
        var version: Int?
        var headerLength: Int?
        /// The header as the library re-encodes it from what it parsed, in hex.
        var header: String?
        var tlvTypes: [Int]
        var authority: String?
        var uniqueID: String?
        /// The `X-Unique-ID` request header, where HAProxy adds one.
        var uniqueIDHeader: String?
        var crc32c: UInt32?

        init(request: Request, context: ProxiedRequestContext) {
            let info = context.proxy
            let tlvs = info?.header.tlvs ?? ProxyTLVs()
            uri = request.uri.description
            client = Self.endpoint(context.remoteAddress)
            proxy = Self.endpoint(info?.peer)
            destination = Self.endpoint(info?.destination)
            version = info?.header.version.rawValue
            headerLength = info?.headerLength
            header = (try? info?.header.encoded()).map { $0.readableBytesView.map { String(format: "%02x", $0) }.joined() }
            tlvTypes = tlvs.map { Int($0.type.rawValue) }
            authority = tlvs.authority
            uniqueID = tlvs.uniqueID.map { String(buffer: $0) }
            uniqueIDHeader = request.headers.first { $0.name.canonicalName == "x-unique-id" }?.value
            crc32c = tlvs.crc32c
        }

        static func endpoint(_ address: SocketAddress?) -> String? {
            guard let address, let ip = address.ipAddress, let port = address.port else { return nil }
            if case .v6 = address { return "[\(ip)]:\(port)" }
            return "\(ip):\(port)"
        }
    }

    /// Counts the requests that reach the router.
    final class RequestCounter: Sendable {
        private let count = Mutex(0)
        func increment() { count.withLock { $0 += 1 } }
        var value: Int { count.withLock { $0 } }
    }

    /// Loopback clients come from 127.0.0.x (curl `--interface`), so all of 127/8 is trusted.
    static let loopback = try! TrustedProxies(parsing: ["127.0.0.0/8"])

    /// Runs an application whose only route answers `Seen` as JSON, on a port the OS chooses.
    func withApplication(
        configuration: ProxyProtocolConfiguration = .init(trustedProxies: loopback),
        _ body: (_ port: Int, _ requests: RequestCounter) async throws -> Void
    ) async throws {
        let requests = RequestCounter()
        let router = Router(context: ProxiedRequestContext.self)
        router.get("/") { request, context -> Seen in
            requests.increment()
            return Seen(request: request, context: context)
        }
        try await withRunningApplication(router: router, server: .proxyProtocol(configuration: configuration)) { port in
            try await body(port, requests)
        }
    }

    // MARK: - Peers

    /// One response of a curl run and the endpoint curl used for it.
    struct Transfer: Sendable {
        var seen: Seen
        var client: String
    }

    /// Runs curl with one or more URLs (curl keeps one connection for all of them) and returns
    /// each response with curl's own `local_ip:local_port`.
    func curl(_ arguments: [String]) async throws -> [Transfer] {
        let run = try await Peer.runCurl(arguments)
        try #require(run.status == 0, "curl \(arguments): \(run.standardError)")
        return try run.transfers.map { transfer in
            Transfer(seen: try JSONDecoder().decode(Seen.self, from: Data(transfer.body.utf8)), client: "\(transfer.localIP):\(transfer.localPort)")
        }
    }

    /// Runs HAProxy in HTTP mode in front of the application on `appPort` and passes `body` the
    /// port it listens on.
    func withHAProxy(
        bind: String, uniqueIDFormat: String, appPort: Int, in directory: URL, _ body: (_ port: Int) async throws -> Void
    ) async throws {
        // `http-reuse always`: a request may travel on a server connection an earlier request
        // opened, the case where a header could describe the wrong client. How many connections
        // HAProxy keeps idle, and which it reuses, is its own affair: nothing below depends on it.
        let config = """
            global
                maxconn 100
            defaults
                mode http
                timeout connect 5s
                timeout client 10s
                timeout server 10s
            frontend in
                bind fd@0\(bind)
                unique-id-format \(uniqueIDFormat)
                unique-id-header X-Unique-ID
                default_backend app
            backend app
                http-reuse always
                server s1 127.0.0.1:\(appPort) send-proxy-v2 proxy-v2-options authority,unique-id,crc32c

            """
        let (haproxy, port, log) = try Peer.startHAProxy(config, in: directory)
        defer { haproxy.stop() }
        try await body(port)
        #expect(haproxy.isRunning, "HAProxy: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
    }

    /// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: a reference that shares
    /// nothing with the library's table-driven implementation.
    static func crc32c(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }

    /// Checks the header's CRC32C TLV against the reference: the bytes re-encoded from the parsed
    /// header are as long as what arrived, and their checksum, computed with the value field
    /// zeroed, is the value the sender put in the field.
    func expectChecksum(_ seen: Seen, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let hex = try #require(seen.header, sourceLocation: sourceLocation)
        let header = stride(from: 0, to: hex.count, by: 2).map { offset -> UInt8 in
            let start = hex.index(hex.startIndex, offsetBy: offset)
            return UInt8(hex[start..<hex.index(start, offsetBy: 2)], radix: 16)!
        }
        #expect(header.count == seen.headerLength, sourceLocation: sourceLocation)
        let received = try #require(seen.crc32c, sourceLocation: sourceLocation)
        let addressBlock = [0: 0, 1: 12, 2: 36, 3: 216][Int(header[13] >> 4)] ?? 0
        var offset = 16 + addressBlock
        var valueOffset: Int?
        while offset + 3 <= header.count {
            if header[offset] == ProxyTLVType.crc32c.rawValue {
                valueOffset = offset + 3
                break
            }
            offset += 3 + (Int(header[offset + 1]) << 8 | Int(header[offset + 2]))
        }
        let at = try #require(valueOffset, sourceLocation: sourceLocation)
        var zeroed = header
        zeroed.replaceSubrange(at..<(at + 4), with: [0, 0, 0, 0])
        #expect(Self.crc32c(zeroed) == received, sourceLocation: sourceLocation)
        #expect(header[at..<(at + 4)].reduce(0) { $0 << 8 | UInt32($1) } == received, sourceLocation: sourceLocation)
    }

    // MARK: - HAProxy, HTTP mode, connection reuse on

    /// What the PROXY protocol and the library guarantee for requests that come through HAProxy,
    /// however many server connections it opens and whichever it reuses: each request is
    /// attributed to the client curl connected from (`uniqueID` makes the unique ID HAProxy
    /// gives that client's requests), through HAProxy's frontend, with the header's TLVs (a set:
    /// their order is the sender's) and a checksum that holds; and the requests that share a
    /// server connection share its one header.
    func expectAttributed(
        _ transfers: [Transfer], port: Int, tlvTypes: Set<Int>, uniqueID: (_ client: String, _ id: String) -> Bool,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        for transfer in transfers {
            let seen = transfer.seen
            #expect(seen.client == transfer.client, sourceLocation: sourceLocation)
            #expect(seen.destination == "127.0.0.1:\(port)", sourceLocation: sourceLocation)
            #expect(seen.proxy?.hasPrefix("127.0.0.1:") == true, sourceLocation: sourceLocation)
            #expect(seen.version == 2, sourceLocation: sourceLocation)
            #expect(Set(seen.tlvTypes) == tlvTypes && seen.tlvTypes.count == tlvTypes.count, "\(seen.tlvTypes)", sourceLocation: sourceLocation)
            let id = try #require(seen.uniqueID, sourceLocation: sourceLocation)
            #expect(uniqueID(transfer.client, id), "\(id)", sourceLocation: sourceLocation)
            let requestID = try #require(seen.uniqueIDHeader, sourceLocation: sourceLocation)
            #expect(uniqueID(transfer.client, requestID), "\(requestID)", sourceLocation: sourceLocation)
            try expectChecksum(seen, sourceLocation: sourceLocation)
        }
        let byConnection = Dictionary(grouping: transfers.map(\.seen)) { $0.proxy ?? "" }
        for (connection, requests) in byConnection {
            #expect(Set(requests.map(\.header)).count == 1, "server connection \(connection)", sourceLocation: sourceLocation)
        }
    }

    /// With `http-reuse always`, three client connections, one after the other, from two
    /// addresses, each with three requests: every request is attributed to its own client. A
    /// server connection HAProxy reused for another client's requests would show here as the
    /// earlier client's address; HAProxy reuses one only for a request whose PROXY header would
    /// be the same bytes (the `http-reuse` section of its manual), which this test does not
    /// assume: it only sees what the application was told.
    ///
    /// `proxy-v2-options authority` sends the TLS SNI and nothing else ("only SNI from a TLS
    /// connection is supported"): curl sends SNI `localhost` and `Host: other.example`, and the
    /// AUTHORITY TLV says `localhost`. No ALPN TLV: the bind line offers none.
    @Test(.enabled(if: Peer.available("haproxy") && Peer.available("curl")), .tags(.interop))
    func haproxyReusingConnectionsAttributesEveryRequestToItsClient() async throws {
        #expect(Self.crc32c(Array("123456789".utf8)) == 0xE306_9283)
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let pem = directory.appendingPathComponent("site.pem")
        let certificate = TestCertificate.localhost
        try (certificate.certificatePEM + "\n" + certificate.privateKeyPEM + "\n").write(to: pem, atomically: true, encoding: .utf8)
        try await withApplication { appPort, requests in
            try await withHAProxy(bind: " ssl crt \(pem.path)", uniqueIDFormat: "%ci:%cp", appPort: appPort, in: directory) { port in
                var all: [Transfer] = []
                for source in ["127.0.0.2", "127.0.0.3", "127.0.0.2"] {
                    // One client connection carrying three requests.
                    let urls = (1...3).map { "https://localhost:\(port)/?request=\($0)" }
                    let transfers = try await curl(
                        ["-k", "--interface", source, "--resolve", "localhost:\(port):127.0.0.1", "-H", "Host: other.example"] + urls)
                    try #require(transfers.count == 3)
                    #expect(transfers.map(\.seen.uri) == (1...3).map { "/?request=\($0)" })
                    #expect(Set(transfers.map(\.client)).count == 1)
                    #expect(transfers.allSatisfy { $0.client.hasPrefix("\(source):") })
                    #expect(transfers.allSatisfy { $0.seen.authority == "localhost" })
                    all += transfers
                }
                // The unique ID is the client's address and port, the same for all its requests.
                try expectAttributed(all, port: port, tlvTypes: [0x02, 0x03, 0x05]) { client, id in id == client }
                #expect(requests.value == 9)
            }
        }
    }

    /// With a unique ID per request (`%rt` is HAProxy's request counter), the UNIQUE_ID TLV is
    /// the one HAProxy made for the request that opened the server connection, and each request's
    /// `X-Unique-ID` its own. Whether HAProxy opens a server connection per request (2.6 does:
    /// the header is part of what it reuses a connection for) or sends several of a client's
    /// requests on one is its affair; either way both IDs name the request's client, and the
    /// requests of a connection share its header.
    /// The manual warns that `unique-id` "can lead to unexpected results in mode http". Without
    /// TLS there is no AUTHORITY TLV, whatever the Host header says.
    @Test(.enabled(if: Peer.available("haproxy") && Peer.available("curl")), .tags(.interop))
    func haproxyPerRequestUniqueIDsNameTheRequestsClient() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withApplication { appPort, requests in
            try await withHAProxy(bind: "", uniqueIDFormat: "%ci:%cp_%rt", appPort: appPort, in: directory) { port in
                let urls = (1...3).map { "http://127.0.0.1:\(port)/?request=\($0)" }
                let transfers = try await curl(["--interface", "127.0.0.4", "-H", "Host: other.example"] + urls)
                try #require(transfers.count == 3)
                #expect(transfers.map(\.seen.uri) == (1...3).map { "/?request=\($0)" })
                #expect(transfers.allSatisfy { $0.client.hasPrefix("127.0.0.4:") })
                #expect(transfers.allSatisfy { $0.seen.authority == nil })
                try expectAttributed(transfers, port: port, tlvTypes: [0x03, 0x05]) { client, id in
                    id.hasPrefix("\(client)_") && Int(id.dropFirst(client.count + 1)) != nil
                }
                // Each request has an ID of its own.
                #expect(Set(transfers.compactMap(\.seen.uniqueIDHeader)).count == 3)
                #expect(requests.value == 3)
            }
        }
    }

    // MARK: - curl --haproxy-protocol

    /// curl sends a version 1 header with its own socket's endpoints: the client is curl itself,
    /// exactly, on both requests of its one connection.
    @Test(.enabled(if: Peer.available("curl")), .tags(.interop)) func curlHAProxyProtocol() async throws {
        try await withApplication { appPort, requests in
            let urls = (1...2).map { "http://127.0.0.1:\(appPort)/?request=\($0)" }
            let transfers = try await curl(["--haproxy-protocol", "--interface", "127.0.0.5"] + urls)
            try #require(transfers.count == 2)
            let client = transfers[0].client
            #expect(client.hasPrefix("127.0.0.5:"))
            for transfer in transfers {
                #expect(transfer.client == client)
                #expect(transfer.seen.client == client)
                #expect(transfer.seen.proxy == client)
                #expect(transfer.seen.destination == "127.0.0.1:\(appPort)")
                #expect(transfer.seen.version == 1)
                #expect(transfer.seen.tlvTypes == [])
            }
            #expect(transfers.map(\.seen.uri) == ["/?request=1", "/?request=2"])
            #expect(requests.value == 2)
        }
    }

    // MARK: - Keep-alive

    static func request(_ number: Int) -> [UInt8] {
        Array("GET /?request=\(number) HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
    }

    /// The socket's own endpoint, `ip:port`.
    static func localEndpoint(_ socket: BlockingSocket) -> String {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket.descriptor, $0, &length) }
        }
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        inet_ntop(AF_INET, &address.sin_addr, &text, socklen_t(text.count))
        let ip = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(ip):\(UInt16(bigEndian: address.sin_port))"
    }

    /// Reads the application's `Seen` answers one at a time.
    struct ResponseReader {
        let responses: HTTPResponseReader

        init(_ socket: BlockingSocket) {
            responses = HTTPResponseReader(socket)
        }

        func next() throws -> Seen {
            let response = try responses.next()
            try #require(response.statusLine.hasPrefix("HTTP/1.1 200 "), "\(response.head)")
            return try JSONDecoder().decode(Seen.self, from: Data(response.body))
        }
    }

    /// One connection: the header and the first request in one write, the second request alone,
    /// the third and fourth pipelined in one write. Every request reports the header's client,
    /// TLVs and checksum.
    @Test func keepAliveReportsTheHeadersClientOnEveryRequest() async throws {
        try await withApplication { appPort, requests in
            let header = try ProxyHeader(
                version: .v2,
                addresses: .inet(
                    source: .init(ProxyIPv4Address(192, 0, 2, 10), port: 40000), destination: .init(ProxyIPv4Address(198, 51, 100, 1), port: 443)),
                tlvs: [.authority("a.example"), .uniqueID(Array("connection-a".utf8))]
            )
            let headerBytes = Array(try header.encoded(appendingCRC32C: true).readableBytesView)
            let (local, seen) = try await BlockingSocket.onThread { () throws -> (String, [Seen]) in
                let socket = try BlockingSocket(connectingTo: "127.0.0.1", port: appPort)
                defer { socket.close() }
                let reader = ResponseReader(socket)
                var seen: [Seen] = []
                try socket.send(headerBytes + Self.request(1))
                seen.append(try reader.next())
                try socket.send(Self.request(2))
                seen.append(try reader.next())
                try socket.send(Self.request(3) + Self.request(4))
                seen.append(try reader.next())
                seen.append(try reader.next())
                return (Self.localEndpoint(socket), seen)
            }
            #expect(seen.map(\.uri) == (1...4).map { "/?request=\($0)" })
            for request in seen {
                #expect(request.client == "192.0.2.10:40000")
                #expect(request.destination == "198.51.100.1:443")
                #expect(request.proxy == local)
                #expect(request.version == 2)
                #expect(request.tlvTypes == [0x02, 0x05, 0x03])
                #expect(request.authority == "a.example")
                #expect(request.uniqueID == "connection-a")
                #expect(request.headerLength == headerBytes.count)
                try expectChecksum(request)
            }
            #expect(requests.value == 4)
        }
    }

    /// Two connections open at once, one with a version 1 header, one with version 2 over IPv6;
    /// each round sends a request on both before reading either answer. Every answer names its
    /// own connection's client.
    @Test func concurrentKeepAliveConnectionsEachReportTheirOwnClient() async throws {
        try await withApplication { appPort, requests in
            let v1 = Array("PROXY TCP4 192.0.2.21 198.51.100.7 51234 80\r\n".utf8)
            let v2 = Array(
                try ProxyHeader(
                    version: .v2,
                    addresses: .inet6(
                        source: .init(ProxyIPv6Address("2001:db8::22")!, port: 4022), destination: .init(ProxyIPv6Address("2001:db8::1")!, port: 443)),
                    tlvs: [.uniqueID(Array("connection-b".utf8))]
                ).encoded().readableBytesView)
            let rounds = 3
            let (localA, localB, seenA, seenB) = try await BlockingSocket.onThread { () throws -> (String, String, [Seen], [Seen]) in
                let a = try BlockingSocket(connectingTo: "127.0.0.1", port: appPort, from: "127.0.0.1")
                let b = try BlockingSocket(connectingTo: "127.0.0.1", port: appPort, from: "127.0.0.6")
                defer {
                    a.close()
                    b.close()
                }
                let readerA = ResponseReader(a)
                let readerB = ResponseReader(b)
                try a.send(v1)
                try b.send(v2)
                var seenA: [Seen] = []
                var seenB: [Seen] = []
                for round in 1...rounds {
                    try a.send(Self.request(round))
                    try b.send(Self.request(100 + round))
                    seenA.append(try readerA.next())
                    seenB.append(try readerB.next())
                }
                return (Self.localEndpoint(a), Self.localEndpoint(b), seenA, seenB)
            }
            #expect(seenA.map(\.uri) == (1...rounds).map { "/?request=\($0)" })
            #expect(seenB.map(\.uri) == (1...rounds).map { "/?request=\(100 + $0)" })
            for request in seenA {
                #expect(request.client == "192.0.2.21:51234")
                #expect(request.destination == "198.51.100.7:80")
                #expect(request.proxy == localA)
                #expect(request.version == 1)
                #expect(request.uniqueID == nil)
            }
            for request in seenB {
                #expect(request.client == "[2001:db8::22]:4022")
                #expect(request.destination == "[2001:db8::1]:443")
                #expect(request.proxy == localB)
                #expect(request.version == 2)
                #expect(request.uniqueID == "connection-b")
            }
            #expect(localB.hasPrefix("127.0.0.6:"))
            #expect(requests.value == 2 * rounds)
        }
    }

    // MARK: - Header timeout

    /// Connects, sends `bytes`, and waits for the server to close: returns what came back and how
    /// long after the start of the connect the end came.
    static func closedAfter(port: Int, sending bytes: [UInt8]) async throws -> (received: [UInt8], after: Duration) {
        try await BlockingSocket.onThread {
            // The clock starts before the connect: the server's timer starts when it accepts,
            // which can be before this thread returns from connect.
            let start = ContinuousClock.now
            let socket = try BlockingSocket(connectingTo: "127.0.0.1", port: port)
            defer { socket.close() }
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(socket.descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            try socket.send(bytes)
            let received = try socket.receiveAll()
            return (received, ContinuousClock.now - start)
        }
    }

    /// With a 200 ms header timeout, a client that sends nothing and clients that send part of a
    /// header (either version) are closed without a byte once it passes, and the router never
    /// sees them. A header sent in two writes is served, and so is a request sent after a
    /// complete header. (That the timeout covers the header only, however it is split and
    /// whenever the request comes, is shown with a clock the test moves: ProxyProtocolChannelTests.)
    @Test func headerTimeoutClosesClientsThatDoNotFinishTheirHeader() async throws {
        let timeout = Duration.milliseconds(200)
        let configuration = ProxyProtocolConfiguration(trustedProxies: Self.loopback, headerTimeout: .milliseconds(200))
        try await withApplication(configuration: configuration) { appPort, requests in
            let v2 = Array(
                try ProxyHeader(
                    version: .v2,
                    addresses: .inet(
                        source: .init(ProxyIPv4Address(192, 0, 2, 31), port: 3100), destination: .init(ProxyIPv4Address(198, 51, 100, 1), port: 80))
                ).encoded().readableBytesView)
            let partial: [(String, [UInt8])] = [
                ("nothing", []),
                ("half a version 1 header", Array("PROXY TCP4 192.0.2.30 198.51.".utf8)),
                ("half a version 2 header", Array(v2.prefix(v2.count / 2))),
            ]
            for (name, bytes) in partial {
                let (received, after) = try await Self.closedAfter(port: appPort, sending: bytes)
                #expect(received == [], "\(name)")
                #expect(after >= timeout, "\(name): closed after \(after)")
                #expect(after < .seconds(5), "\(name): closed after \(after)")
            }
            #expect(requests.value == 0)

            let served = try await BlockingSocket.onThread { () throws -> [Seen] in
                // The header in two writes.
                let pieces = try BlockingSocket(connectingTo: "127.0.0.1", port: appPort)
                defer { pieces.close() }
                try pieces.send(Array(v2.prefix(10)))
                try pieces.send(Array(v2.dropFirst(10)) + Self.request(1))
                let first = try ResponseReader(pieces).next()
                // A complete header, then the request in a write of its own.
                let late = try BlockingSocket(connectingTo: "127.0.0.1", port: appPort)
                defer { late.close() }
                try late.send(Array("PROXY TCP4 192.0.2.32 198.51.100.1 3200 80\r\n".utf8))
                try late.send(Self.request(2))
                return [first, try ResponseReader(late).next()]
            }
            #expect(served.map(\.client) == ["192.0.2.31:3100", "192.0.2.32:3200"])
            #expect(requests.value == 2)
        }
    }
}
