import NIOCore
import Testing

@testable import NetProxy

/// `ClientHelloReader` without a channel: real clients' ClientHellos and constructed ones, split
/// every way, and broken ones, each error with its offset.
@Suite struct ClientHelloReaderTests {
    typealias Builder = ClientHelloBuilder

    /// What the reader makes of `chunks`, read in turn: the ClientHello (stopping there), `nil`
    /// if they end first, or the error.
    static func read(_ chunks: [[UInt8]], limit: Int = ClientHelloReader.maximumLength) -> Result<ClientHello?, ClientHelloError> {
        var reader = ClientHelloReader(limit: limit)
        for chunk in chunks {
            do {
                if let hello = try reader.read(ByteBuffer(bytes: chunk)) { return .success(hello) }
            } catch {
                return .failure(error)
            }
        }
        return .success(nil)
    }

    static func read(_ bytes: [UInt8]) -> Result<ClientHello?, ClientHelloError> {
        read([bytes])
    }

    static func hello(name: String?, alpn: [String], ech: Bool = false, length: Int) -> Result<ClientHello?, ClientHelloError> {
        .success(ClientHello(serverName: name, applicationProtocols: alpn, offersEncryptedClientHello: ech, length: length))
    }

    static func failure(_ reason: ClientHelloError.Reason, at offset: Int) -> Result<ClientHello?, ClientHelloError> {
        .failure(ClientHelloError(reason: reason, offset: offset))
    }

    // MARK: Real clients

    /// The three captured ClientHellos, with what each client asked for.
    static let captured: [(String, [UInt8], String, [String])] = [
        ("openssl s_client", ClientHellos.openSSL, "chat.example.org", ["xmpp-client"]),
        ("curl --http2", ClientHellos.curlHTTP2, "www.example.org", ["h2", "http/1.1"]),
        ("curl --http1.1", ClientHellos.curlHTTP1, "www.example.org", ["http/1.1"]),
    ]

    @Test(arguments: captured)
    func realClientsNameAndProtocols(client: String, bytes: [UInt8], name: String, alpn: [String]) {
        #expect(Self.read(bytes) == Self.hello(name: name, alpn: alpn, length: bytes.count), "\(client)")
    }

    /// Split in two at every point: nothing after the first part, the same ClientHello after the
    /// second.
    @Test(arguments: captured)
    func everySplitPoint(client: String, bytes: [UInt8], name: String, alpn: [String]) {
        let expected = Self.hello(name: name, alpn: alpn, length: bytes.count)
        for split in 1..<bytes.count {
            var reader = ClientHelloReader()
            #expect(
                Result { () throws(ClientHelloError) in try reader.read(ByteBuffer(bytes: bytes[..<split])) } == .success(nil), "\(client) \(split)")
            #expect(Result { () throws(ClientHelloError) in try reader.read(ByteBuffer(bytes: bytes[split...])) } == expected, "\(client) \(split)")
        }
    }

    /// One byte per read: `nil` up to the last byte, which completes it.
    @Test(arguments: captured)
    func oneByteWrites(client: String, bytes: [UInt8], name: String, alpn: [String]) throws {
        var reader = ClientHelloReader()
        for byte in bytes.dropLast() {
            #expect(try reader.read(ByteBuffer(bytes: [byte])) == nil)
        }
        #expect(try reader.read(ByteBuffer(bytes: [bytes.last!])) == ClientHello(serverName: name, applicationProtocols: alpn, length: bytes.count))
    }

    /// The same handshake message cut into records of 1, 2, 7 and 100 bytes: the same
    /// ClientHello, whose length counts every record header; split at every point too.
    @Test(arguments: [1, 2, 7, 100])
    func acrossSeveralRecords(fragment: Int) {
        let message = Array(ClientHellos.openSSL.dropFirst(5))
        let records = Builder.records(message, fragment: fragment)
        let expected = Self.hello(name: "chat.example.org", alpn: ["xmpp-client"], length: records.count)
        #expect(records.count == message.count + 5 * ((message.count + fragment - 1) / fragment))
        #expect(Self.read(records) == expected)
        for split in 1..<records.count {
            #expect(Self.read([Array(records[..<split]), Array(records[split...])]) == expected, "\(split)")
        }
        #expect(Self.read(records.map { [$0] }) == expected)
    }

    /// Bytes after the ClientHello in the same read (early data, the next record) are not read.
    @Test func bytesAfterTheClientHelloAreNotRead() {
        let after: [UInt8] = [0x17, 0x03, 0x03, 0x00, 0x02, 0xFF, 0xFF, 0x16]
        #expect(
            Self.read(ClientHellos.openSSL + after)
                == Self.hello(name: "chat.example.org", alpn: ["xmpp-client"], length: ClientHellos.openSSL.count))
    }

    // MARK: Constructed

    /// GREASE (RFC 8701) in the cipher suites, as extensions before and after the others, and
    /// inside one: skipped like any unknown extension.
    @Test func greaseIsSkipped() {
        var builder = Builder()
        builder.cipherSuites = [0x2A, 0x2A, 0x13, 0x01]
        builder.extensions = [
            .init(type: 0x0A0A, data: []), Builder.serverName("Chat.Example.org."), .init(type: 43, data: [0x04, 0x3A, 0x3A, 0x03, 0x04]),
            Builder.alpn(["h2", "xmpp-client"]), .init(type: 0x1234, data: Array(repeating: 7, count: 300)), .init(type: 0xFAFA, data: [0x00]),
        ]
        let bytes = builder.records()
        // Case and the trailing dot are kept: matching ignores them, the reader does not.
        #expect(Self.read(bytes) == Self.hello(name: "Chat.Example.org.", alpn: ["h2", "xmpp-client"], length: bytes.count))
    }

    /// Encrypted Client Hello: the outer ClientHello's name (the public name) and protocols.
    @Test func encryptedClientHelloGivesTheOuterName() {
        var builder = Builder(serverName: "public.example.org", alpn: ["h2", "http/1.1"])
        // encrypted_client_hello, outer: type 0, cipher suite, config id, enc, payload.
        builder.extensions!.append(
            .init(type: 0xFE0D, data: [0x00, 0x00, 0x01, 0x00, 0x01, 0x42] + Builder.vector16(Array(repeating: 1, count: 32))))
        let bytes = builder.records()
        #expect(Self.read(bytes) == Self.hello(name: "public.example.org", alpn: ["h2", "http/1.1"], ech: true, length: bytes.count))
    }

    /// Before TLS 1.3 a ClientHello may have no extensions at all, or an empty block: no name, no
    /// protocols.
    @Test func withoutExtensions() {
        var builder = Builder()
        builder.extensions = nil
        #expect(Self.read(builder.records()) == Self.hello(name: nil, alpn: [], length: 84))
        builder.extensions = []
        #expect(Self.read(builder.records()) == Self.hello(name: nil, alpn: [], length: 86))
    }

    /// A server name entry of another type than host_name is skipped by its length.
    @Test func otherServerNameTypesAreSkipped() {
        var builder = Builder()
        builder.extensions = [Builder.serverNames([(7, [1, 2, 3]), (0, Array("a.example".utf8))])]
        #expect(Self.read(builder.records()) == Self.hello(name: "a.example", alpn: [], length: builder.records().count))
    }

    // MARK: Bounds

    /// The largest ClientHello: one full record of 16,384 bytes; one byte more is refused as
    /// soon as the handshake header says so.
    @Test func aWholeRecordIsTheLimit() {
        var builder = Builder()
        // 4 (handshake header) + 75 (fixed fields) + 2 (extensions' length) + 4 + data = 16,384.
        builder.extensions = [.init(type: 0x1234, data: Array(repeating: 0, count: 16_384 - 85))]
        #expect(builder.message.count == 16_384)
        #expect(Self.read(builder.records()) == Self.hello(name: nil, alpn: [], length: 16_389))
        builder.extensions = [.init(type: 0x1234, data: Array(repeating: 0, count: 16_384 - 84))]
        #expect(Self.read(Array(builder.records().prefix(9))) == Self.failure(.tooLong(limit: 16_389), at: 6))
    }

    /// 64 KiB of extensions: refused at the handshake header, without waiting for them.
    @Test func sixtyFourKiBOfExtensions() {
        var builder = Builder(serverName: "a.example")
        builder.extensions! += (0..<16).map { .init(type: 0x2000 + UInt16($0), data: Array(repeating: 0x61, count: 4_090)) }
        let bytes = builder.records()
        #expect(bytes.count > 65_536)
        #expect(Self.read(bytes) == Self.failure(.tooLong(limit: 16_389), at: 6))
        #expect(Self.read(bytes.map { [$0] }) == Self.failure(.tooLong(limit: 16_389), at: 6))
    }

    /// A ClientHello short enough by its own length, but in records so small that their headers
    /// take it past the limit: refused at the limit.
    @Test func recordHeadersCountTowardsTheLimit() {
        var builder = Builder()
        builder.extensions = [.init(type: 0x1234, data: Array(repeating: 0, count: 15_900))]
        let bytes = builder.records(fragment: 100)
        #expect(bytes.count > 16_389)
        #expect(Self.read(bytes) == Self.failure(.tooLong(limit: 16_389), at: 16_389))
        // A lower limit, as a caller may set.
        #expect(Self.read([ClientHellos.openSSL], limit: 300) == Self.failure(.tooLong(limit: 300), at: 6))
    }

    /// Every proper prefix of a ClientHello, read whole: more is needed, never an error.
    @Test func truncatedClientHellosWaitForMore() {
        for bytes in [ClientHellos.curlHTTP2, Builder(serverName: "x.example").records(fragment: 10)] {
            for count in 0..<bytes.count {
                #expect(Self.read(Array(bytes.prefix(count))) == .success(nil), "\(count)")
            }
        }
    }

    // MARK: Broken lengths and values

    /// A builder's one-record ClientHello with byte `offset` replaced by `value`.
    static func patched(_ builder: Builder = Builder(), _ offset: Int, _ value: UInt8) -> [UInt8] {
        var bytes = builder.records()
        bytes[offset] = value
        return bytes
    }

    /// The default builder's layout: record header 0..<5, handshake header 5..<9, version 9,
    /// random 11, session id length 43, session id 44..<76, cipher suites length 76, suites
    /// 78..<82, compression length 82, methods 83, extensions length 84, supported_versions at
    /// 86 (type), 88 (length), 90..<95 (data). 95 bytes.
    @Test func theBuildersLayout() {
        let bytes = Builder().records()
        #expect(bytes.count == 95)
        #expect(Array(bytes[84..<90]) == [0x00, 0x09, 0x00, 43, 0x00, 0x05])
    }

    @Test func brokenRecords() {
        let valid = Builder().records()
        // Not a handshake record; not SSL 3 or TLS; 0 bytes; over 16 KiB.
        #expect(Self.read(Self.patched(Builder(), 0, 0x17)) == Self.failure(.notHandshakeRecord(contentType: 0x17), at: 0))
        #expect(Self.read(Self.patched(Builder(), 2, 5)) == Self.failure(.recordVersion(major: 3, minor: 5), at: 1))
        #expect(Self.read(Self.patched(Builder(), 1, 2)) == Self.failure(.recordVersion(major: 2, minor: 1), at: 1))
        #expect(Self.read([0x16, 0x03, 0x01, 0x00, 0x00]) == Self.failure(.recordLength(0), at: 3))
        #expect(Self.read([0x16, 0x03, 0x01, 0x40, 0x01]) == Self.failure(.recordLength(16_385), at: 3))
        // A change_cipher_spec record in the middle of the ClientHello.
        var split = Builder.records(Array(valid.dropFirst(5)), fragment: 50)
        #expect(split[55] == 0x16)
        split[55] = 0x14
        #expect(Self.read(split) == Self.failure(.notHandshakeRecord(contentType: 0x14), at: 55))
        // Not a ClientHello (a ServerHello).
        #expect(Self.read(Self.patched(Builder(), 5, 2)) == Self.failure(.notClientHello(messageType: 2), at: 5))
    }

    /// Each length and value of the ClientHello, broken: the error says what, and where.
    @Test func brokenFields() {
        var builder = Builder()
        // The client version.
        #expect(Self.read(Self.patched(builder, 9, 2)) == Self.failure(.clientVersion(major: 2, minor: 3), at: 9))
        // A session id of 33 bytes; its length past the end.
        builder.sessionID = Array(repeating: 1, count: 33)
        #expect(Self.read(builder.records()) == Self.failure(.length(.sessionID, 33), at: 43))
        #expect(Self.read(Self.patched(Builder(), 43, 255)) == Self.failure(.pastEnd(.sessionID, length: 255, left: 51), at: 43))
        // Cipher suites: odd, none, past the end.
        builder = Builder()
        builder.cipherSuites = [0x13, 0x01, 0x13]
        #expect(Self.read(builder.records()) == Self.failure(.length(.cipherSuites, 3), at: 76))
        builder.cipherSuites = []
        #expect(Self.read(builder.records()) == Self.failure(.length(.cipherSuites, 0), at: 76))
        #expect(Self.read(Self.patched(Builder(), 76, 1)) == Self.failure(.pastEnd(.cipherSuites, length: 260, left: 17), at: 76))
        // No compression method.
        builder = Builder()
        builder.compressionMethods = []
        #expect(Self.read(builder.records()) == Self.failure(.length(.compressionMethods, 0), at: 82))
        // The extensions' length: one too many, one too few.
        #expect(Self.read(Self.patched(Builder(), 85, 10)) == Self.failure(.pastEnd(.extensions, length: 10, left: 9), at: 84))
        #expect(Self.read(Self.patched(Builder(), 85, 8)) == Self.failure(.trailingBytes(.extensions, count: 1), at: 94))
        // An extension's length past the extensions' end; a header cut short.
        #expect(Self.read(Self.patched(Builder(), 89, 6)) == Self.failure(.pastEnd(.extension(43), length: 6, left: 5), at: 88))
        builder = Builder()
        builder.extensions = [.init(type: 1, data: []), .init(type: 2, data: [])]
        var cut = Array(builder.body.dropLast())
        // The extensions' length, 8, made 7: the second extension's header is cut short.
        cut[76] = 7
        let message = [0x01, 0x00, 0x00, UInt8(cut.count)] + cut
        #expect(Self.read(Builder.records(message)) == Self.failure(.pastEnd(.extensions, length: 4, left: 3), at: 90))
        // A body too short for the random.
        let short: [UInt8] = [0x01, 0x00, 0x00, 20, 0x03, 0x03] + Array(repeating: 0, count: 18)
        #expect(Self.read(Builder.records(short)) == Self.failure(.pastEnd(.random, length: 32, left: 18), at: 11))
        // Bytes after the extensions block, inside the ClientHello.
        let trailing = [0x01, 0x00, 0x00, UInt8(Builder().body.count + 2)] + Builder().body + [0, 0]
        #expect(Self.read(Builder.records(trailing)) == Self.failure(.trailingBytes(.extensions, count: 2), at: 95))
    }

    /// The offset of extension `index` in a builder's one-record ClientHello.
    static func extensionOffset(_ builder: Builder, _ index: Int) -> Int {
        86 + builder.extensions![..<index].reduce(0) { $0 + 4 + $1.data.count }
    }

    @Test func brokenServerNames() {
        func with(_ data: [UInt8]) -> [UInt8] {
            var builder = Builder()
            builder.extensions = [.init(type: 0, data: data)]
            return builder.records()
        }
        // Extension data starts at 90: the list's length, then entries of a type and a length.
        #expect(Self.read(with([])) == Self.failure(.pastEnd(.serverNameList, length: 2, left: 0), at: 90))
        #expect(Self.read(with([0x00, 0x00])) == Self.failure(.length(.serverNameList, 0), at: 90))
        #expect(Self.read(with([0x00, 0x05, 0x00, 0x00, 0x01, 0x61])) == Self.failure(.pastEnd(.serverNameList, length: 5, left: 4), at: 90))
        #expect(Self.read(with([0x00, 0x04, 0x00, 0x00, 0x01, 0x61, 0x00])) == Self.failure(.trailingBytes(.serverNameList, count: 1), at: 96))
        #expect(Self.read(with([0x00, 0x03, 0x00, 0x00, 0x00])) == Self.failure(.length(.serverName, 0), at: 93))
        #expect(Self.read(with([0x00, 0x04, 0x00, 0x00, 0x02, 0x61])) == Self.failure(.pastEnd(.serverName, length: 2, left: 1), at: 93))
        #expect(Self.read(with([0x00, 0x02, 0x00, 0x00])) == Self.failure(.pastEnd(.serverName, length: 2, left: 1), at: 93))
        #expect(Self.read(with([0x00, 0x03, 0x00, 0x00, 0x01])) == Self.failure(.pastEnd(.serverName, length: 1, left: 0), at: 93))
        // A second host_name; a NUL, a space, a non-ASCII byte in one.
        let two = Builder.serverNames([(0, Array("a.example".utf8)), (0, Array("b.example".utf8))]).data
        #expect(Self.read(with(two)) == Self.failure(.duplicateHostName, at: 104))
        #expect(Self.read(with(Builder.serverNames([(0, Array("a\0.example".utf8))]).data)) == Self.failure(.hostNameByte(0), at: 96))
        #expect(Self.read(with(Builder.serverNames([(0, Array("a .example".utf8))]).data)) == Self.failure(.hostNameByte(0x20), at: 96))
        #expect(Self.read(with(Builder.serverNames([(0, [0x61, 0xC3, 0xA9])]).data)) == Self.failure(.hostNameByte(0xC3), at: 96))
    }

    @Test func brokenProtocolLists() {
        func with(_ data: [UInt8]) -> [UInt8] {
            var builder = Builder()
            builder.extensions = [.init(type: 16, data: data)]
            return builder.records()
        }
        #expect(Self.read(with([0x00, 0x01, 0x02])) == Self.failure(.length(.protocolNameList, 1), at: 90))
        #expect(Self.read(with([0x00, 0x00])) == Self.failure(.length(.protocolNameList, 0), at: 90))
        #expect(Self.read(with([0x00, 0x02, 0x00, 0x00])) == Self.failure(.length(.protocolName, 0), at: 92))
        #expect(Self.read(with([0x00, 0x03, 0x05, 0x68, 0x32])) == Self.failure(.pastEnd(.protocolName, length: 5, left: 2), at: 92))
        #expect(Self.read(with([0x00, 0x03, 0x02, 0x68, 0x32, 0x00])) == Self.failure(.trailingBytes(.protocolNameList, count: 1), at: 95))
        #expect(Self.read(with([0x00, 0x09, 0x02, 0x68, 0x32])) == Self.failure(.pastEnd(.protocolNameList, length: 9, left: 3), at: 90))
    }

    /// An extension type twice (two ALPN lists could route one way and be served another):
    /// refused at the second.
    @Test func anExtensionTwiceIsRefused() {
        var builder = Builder(serverName: "a.example", alpn: ["h2"])
        builder.extensions!.append(Builder.alpn(["xmpp-client"]))
        #expect(Self.read(builder.records()) == Self.failure(.duplicateExtension(16), at: Self.extensionOffset(builder, 3)))
        builder = Builder(serverName: "a.example")
        builder.extensions!.append(Builder.serverName("b.example"))
        #expect(Self.read(builder.records()) == Self.failure(.duplicateExtension(0), at: Self.extensionOffset(builder, 2)))
    }

    /// Random bytes after a valid record header, with a ClientHello's type and a handshake length
    /// that fills the record: never a ClientHello, never a crash; with a seeded generator, so each
    /// run reads the same bytes.
    @Test func randomBytesAfterAValidRecordHeader() {
        var generator = SplitMix64(seed: 0x5EED)
        var refused = 0
        for _ in 0..<2_000 {
            let length = Int.random(in: 4...600, using: &generator)
            var bytes = [0x16, 0x03, 0x01] + Builder.bigEndian16(length) + (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            switch Self.read(bytes) {
            case .success(nil), .failure: break
            case .success(let hello?): Issue.record("a ClientHello from random bytes: \(hello)")
            }
            bytes[5] = 0x01
            bytes[6] = 0x00
            bytes[7...8] = Builder.bigEndian16(length - 4)[...]
            if case .failure = Self.read(bytes) { refused += 1 }
            // One byte at a time, the same answer.
            #expect(Self.read(bytes.map { [$0] }) == Self.read(bytes))
        }
        #expect(refused == 2_000)
    }

    @Test func errorsSayWhatAndWhere() {
        #expect(
            ClientHelloError(reason: .pastEnd(.sessionID, length: 255, left: 51), offset: 43).description
                == "at byte 43: the session id needs 255 bytes, 51 left")
        #expect(ClientHelloError(reason: .duplicateExtension(16), offset: 120).description == "at byte 120: extension 16 a second time")
        #expect(
            ClientHelloError(reason: .tooLong(limit: 16_389), offset: 6).description == "at byte 6: the ClientHello does not end within 16389 bytes")
    }
}

/// A seeded generator (SplitMix64), so that random tests read the same bytes on every run.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}
