import NIOCore

/// What a TLS ClientHello tells before any key is exchanged: the name the client asks for and
/// the application protocols it offers. A value read by ``ClientHelloReader``.
struct ClientHello: Hashable, Sendable {
    /// The `server_name` extension's `host_name` (RFC 6066), as sent: visible ASCII, case and any
    /// trailing dot kept; `nil` without one.
    var serverName: String?
    /// The `application_layer_protocol_negotiation` extension's protocols (RFC 7301), in the
    /// client's order; empty without the extension.
    var applicationProtocols: [String] = []
    /// Whether the ClientHello carries `encrypted_client_hello`. The ClientHello read is then the
    /// outer one: ``serverName`` is the public name, and the name the client wants is encrypted,
    /// so routing uses the outer name as a server without the ECH keys would.
    var offersEncryptedClientHello = false
    /// How many bytes of the connection it took, from the first record header to the
    /// ClientHello's last byte.
    var length = 0
}

/// Why bytes that start as a TLS handshake are not a ClientHello ``ClientHelloReader`` accepts:
/// what is wrong, and the offset in the connection's bytes (0: the first byte of the first
/// record header) where the wrong value starts.
struct ClientHelloError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A part of the ClientHello that has a length.
    enum Field: Hashable, Sendable, CustomStringConvertible {
        /// The ClientHello message itself (its body, after the 4-byte handshake header).
        case clientHello
        case version
        case random
        case sessionID
        case cipherSuites
        case compressionMethods
        case extensions
        /// One extension, by type: its 4-byte header, or its data.
        case `extension`(UInt16)
        case serverNameList
        case serverName
        case protocolNameList
        case protocolName

        var description: String {
            switch self {
            case .clientHello: "the ClientHello"
            case .version: "the client version"
            case .random: "the random"
            case .sessionID: "the session id"
            case .cipherSuites: "the cipher suites"
            case .compressionMethods: "the compression methods"
            case .extensions: "the extensions"
            case .extension(let type): "extension \(type)"
            case .serverNameList: "the server name list"
            case .serverName: "a server name"
            case .protocolNameList: "the ALPN protocol list"
            case .protocolName: "an ALPN protocol name"
            }
        }
    }

    /// What is wrong.
    enum Reason: Hashable, Sendable {
        /// A record of another content type than handshake (22).
        case notHandshakeRecord(contentType: UInt8)
        /// A record version that is not SSL 3 or TLS 1.0 to 1.3 (`major.minor`).
        case recordVersion(major: UInt8, minor: UInt8)
        /// A handshake record of 0 bytes, or of more than TLS's 16,384.
        case recordLength(Int)
        /// A first handshake message that is not a ClientHello (1).
        case notClientHello(messageType: UInt8)
        /// A client version whose major number is not 3.
        case clientVersion(major: UInt8, minor: UInt8)
        /// The ClientHello does not end within `limit` bytes of the connection.
        case tooLong(limit: Int)
        /// `field` needs `length` bytes where only `left` are left in what encloses it.
        case pastEnd(Field, length: Int, left: Int)
        /// `field` has a length its definition does not allow (an empty list, an odd number of
        /// bytes for cipher suites, a session id over 32 bytes).
        case length(Field, Int)
        /// `count` bytes after the end of `field` inside what encloses it.
        case trailingBytes(Field, count: Int)
        /// An extension type that comes twice.
        case duplicateExtension(UInt16)
        /// A second `host_name` in the server name list.
        case duplicateHostName
        /// A byte in the host name that is not visible ASCII (NUL, a space, a control or a
        /// non-ASCII byte).
        case hostNameByte(UInt8)
    }

    let reason: Reason
    /// Where in the connection's bytes the value at fault starts.
    let offset: Int

    var description: String {
        let what: String
        switch reason {
        case .notHandshakeRecord(let type): what = "a record of content type \(type), not a handshake (22)"
        case .recordVersion(let major, let minor): what = "record version \(major).\(minor) is not SSL 3 or TLS"
        case .recordLength(let length): what = "a handshake record of \(length) bytes (1 to 16384)"
        case .notClientHello(let type): what = "a handshake message of type \(type), not a ClientHello (1)"
        case .clientVersion(let major, let minor): what = "client version \(major).\(minor) is not SSL 3 or TLS"
        case .tooLong(let limit): what = "the ClientHello does not end within \(limit) bytes"
        case .pastEnd(let field, let length, let left): what = "\(field) needs \(length) bytes, \(left) left"
        case .length(let field, let length): what = "\(field) cannot be \(length) bytes long"
        case .trailingBytes(let field, let count): what = "\(count) bytes after the end of \(field)"
        case .duplicateExtension(let type): what = "extension \(type) a second time"
        case .duplicateHostName: what = "a second host_name in the server name list"
        case .hostNameByte(let byte): what = "byte \(byte) in the host name, which is visible ASCII"
        }
        return "at byte \(offset): \(what)"
    }
}

/// Reads a TLS ClientHello from a connection's first bytes, as they come: across any number of
/// handshake records (RFC 8446 5.1) and any split of reads, without a channel, and without
/// copying when the ClientHello comes in one record of one read.
///
/// It is strict about every length (record, handshake message, session id, cipher suites,
/// compression methods, extensions, each extension, the server name list and its entries, the
/// ALPN list and its entries): each must fit what encloses it, and lists end exactly where their
/// enclosing length says. An extension type may appear once. Unknown extensions, GREASE values
/// (RFC 8701) and unknown server name types are skipped by their lengths. Encrypted Client Hello
/// is not decrypted: the outer ClientHello is the one read (``ClientHello/offersEncryptedClientHello``).
///
/// It is bounded: a ClientHello that does not end within ``limit`` bytes (by default 16 KiB and
/// a record header, ``maximumLength``) is refused with ``ClientHelloError/Reason/tooLong(limit:)``
/// as soon as that is known, from the handshake header's length or once that many bytes came.
/// Nothing waits for a deadline here: a ClientHello that never completes is its caller's to
/// time out.
///
/// After it has returned a ClientHello or thrown, it is done; feeding it more is a mistake.
struct ClientHelloReader {
    /// A whole TLS record of 16 KiB, with its 5-byte header.
    static let maximumLength = 16_384 + 5

    /// The most bytes a ClientHello may take, record headers included.
    let limit: Int
    /// Bytes of the connection read so far (up to ``limit``).
    private(set) var consumed = 0
    /// The record header being read: its bytes so far, big-endian.
    private var header: UInt64 = 0
    private var headerCount = 0
    /// Payload bytes left in the current record.
    private var recordLeft = 0
    /// The handshake bytes so far, record headers removed; index 0 is the handshake header's.
    private var handshake: ByteBuffer?
    /// The ClientHello's length with its 4-byte handshake header, once known.
    private var messageLength: Int?
    /// Where each record's payload starts, after the first: (handshake offset, connection
    /// offset). The first record's payload starts at connection offset 5.
    private var laterFragments: [(handshake: Int, connection: Int)] = []

    init(limit: Int = Self.maximumLength) {
        self.limit = limit
    }

    /// Reads the connection's next bytes: the ClientHello once they complete it, `nil` while more
    /// are needed. Bytes after the ClientHello are not looked at.
    mutating func read(_ bytes: ByteBuffer) throws(ClientHelloError) -> ClientHello? {
        var index = bytes.readerIndex
        let end = bytes.readerIndex + min(bytes.readableBytes, limit - consumed)
        while index < end {
            if recordLeft == 0 {
                header = header << 8 | UInt64(bytes.getInteger(at: index, as: UInt8.self)!)
                headerCount += 1
                index += 1
                consumed += 1
                if headerCount == 5 { try startRecord() }
                continue
            }
            let count = min(recordLeft, end - index)
            let fragment = bytes.getSlice(at: index, length: count)!
            if handshake == nil {
                handshake = fragment
            } else {
                handshake!.writeImmutableBuffer(fragment)
            }
            index += count
            consumed += count
            recordLeft -= count
            if let hello = try readMessage() { return hello }
        }
        if consumed >= limit { throw ClientHelloError(reason: .tooLong(limit: limit), offset: limit) }
        return nil
    }

    /// The 5-byte record header just read: a handshake record of SSL 3 or TLS, 1 to 16,384 bytes.
    private mutating func startRecord() throws(ClientHelloError) {
        let start = consumed - 5
        let contentType = UInt8(truncatingIfNeeded: header >> 32)
        let major = UInt8(truncatingIfNeeded: header >> 24)
        let minor = UInt8(truncatingIfNeeded: header >> 16)
        let length = Int(header & 0xFFFF)
        header = 0
        headerCount = 0
        guard contentType == 22 else { throw ClientHelloError(reason: .notHandshakeRecord(contentType: contentType), offset: start) }
        guard major == 3, minor <= 4 else { throw ClientHelloError(reason: .recordVersion(major: major, minor: minor), offset: start + 1) }
        guard (1...16_384).contains(length) else { throw ClientHelloError(reason: .recordLength(length), offset: start + 3) }
        recordLeft = length
        if let handshake {
            if laterFragments.isEmpty { laterFragments.reserveCapacity(8) }
            laterFragments.append((handshake.readableBytes, consumed))
        }
    }

    /// The ClientHello, once the handshake bytes hold all of it.
    private mutating func readMessage() throws(ClientHelloError) -> ClientHello? {
        guard let handshake, handshake.readableBytes >= 4 else { return nil }
        if messageLength == nil {
            let start = handshake.readerIndex
            let type = handshake.getInteger(at: start, as: UInt8.self)!
            guard type == 1 else { throw ClientHelloError(reason: .notClientHello(messageType: type), offset: offset(0)) }
            let length = Int(handshake.getInteger(at: start + 1, as: UInt16.self)!) << 8 | Int(handshake.getInteger(at: start + 3, as: UInt8.self)!)
            // At least one record header comes before it.
            guard 4 + length <= limit - 5 else { throw ClientHelloError(reason: .tooLong(limit: limit), offset: offset(1)) }
            messageLength = 4 + length
            // Spread over records: one copy, of the right size.
            if handshake.readableBytes < 4 + length { self.handshake!.reserveCapacity(4 + length) }
        }
        guard handshake.readableBytes >= messageLength! else { return nil }
        let end = messageLength!
        // One access to the bytes for the whole parse.
        let parsed = handshake.withUnsafeReadableBytes { bytes in
            var parser = ClientHelloParser(bytes: bytes, end: end)
            return Result { () throws(ClientHelloError) in try parser.parse() }
        }
        switch parsed {
        case .success(var hello):
            hello.length = offset(end - 1) + 1
            return hello
        case .failure(let error):
            throw ClientHelloError(reason: error.reason, offset: offset(error.offset))
        }
    }

    /// The connection offset of the handshake byte at `handshakeOffset`.
    private func offset(_ handshakeOffset: Int) -> Int {
        guard let fragment = laterFragments.last(where: { $0.handshake <= handshakeOffset }) else { return 5 + handshakeOffset }
        return fragment.connection + handshakeOffset - fragment.handshake
    }
}

/// Parses a whole ClientHello message (RFC 8446 4.1.2, RFC 5246 7.4.1.2). Errors carry offsets
/// in the handshake bytes; ``ClientHelloReader`` turns them into the connection's.
///
/// It reads the bytes in place, for the time of one `withUnsafeReadableBytes`, and never past
/// `end` (at most their count): every read is checked against the length that encloses it, and
/// ``byte(at:)`` checks the bounds again.
private struct ClientHelloParser {
    /// The handshake bytes, the message's type first.
    let bytes: UnsafeRawBufferPointer
    /// The offset just past the message.
    let end: Int
    /// The offset of the next byte to read.
    private var position = 4

    init(bytes: UnsafeRawBufferPointer, end: Int) {
        precondition(end <= bytes.count)
        self.bytes = bytes
        self.end = end
    }

    mutating func parse() throws(ClientHelloError) -> ClientHello {
        try need(2, .version, within: end)
        let major = byte(at: position)
        guard major == 3 else { throw ClientHelloError(reason: .clientVersion(major: major, minor: byte(at: position + 1)), offset: position) }
        position += 2
        try need(32, .random, within: end)
        position += 32
        let sessionID = try vector(.sessionID, prefix: 1, within: end)
        guard sessionID.count <= 32 else { throw ClientHelloError(reason: .length(.sessionID, sessionID.count), offset: sessionID.lowerBound - 1) }
        let cipherSuites = try vector(.cipherSuites, prefix: 2, within: end)
        guard cipherSuites.count >= 2, cipherSuites.count.isMultiple(of: 2) else {
            throw ClientHelloError(reason: .length(.cipherSuites, cipherSuites.count), offset: cipherSuites.lowerBound - 2)
        }
        let compression = try vector(.compressionMethods, prefix: 1, within: end)
        guard !compression.isEmpty else { throw ClientHelloError(reason: .length(.compressionMethods, 0), offset: compression.lowerBound - 1) }
        var hello = ClientHello()
        // Before TLS 1.3, a ClientHello may end here, without extensions.
        guard position < end else { return hello }
        let extensions = try vector(.extensions, prefix: 2, within: end)
        guard position == end else { throw ClientHelloError(reason: .trailingBytes(.extensions, count: end - position), offset: position) }
        try readExtensions(extensions, into: &hello)
        return hello
    }

    /// Each extension: its type and length, its data within the extensions; the server name and
    /// ALPN read, the rest skipped.
    private mutating func readExtensions(_ extensions: Range<Int>, into hello: inout ClientHello) throws(ClientHelloError) {
        position = extensions.lowerBound
        var seen = ExtensionTypes()
        while position < extensions.upperBound {
            let start = position
            try need(4, .extensions, within: extensions.upperBound)
            let type = UInt16(byte(at: position)) << 8 | UInt16(byte(at: position + 1))
            position += 2
            let data = try vector(.extension(type), prefix: 2, within: extensions.upperBound)
            try seen.insert(type, at: start)
            position = data.lowerBound
            switch type {
            case 0: hello.serverName = try serverName(in: data)
            case 16: hello.applicationProtocols = try applicationProtocols(in: data)
            case 0xFE0D: hello.offersEncryptedClientHello = true
            default: break
            }
            position = data.upperBound
        }
        try seen.check()
    }

    /// `server_name` (RFC 6066 3): a list of at least one entry, each a type and a name of 1 or
    /// more bytes; the `host_name` (0) one, at most once, is visible ASCII.
    private mutating func serverName(in data: Range<Int>) throws(ClientHelloError) -> String? {
        let list = try vector(.serverNameList, prefix: 2, within: data.upperBound)
        guard position == data.upperBound else {
            throw ClientHelloError(reason: .trailingBytes(.serverNameList, count: data.upperBound - position), offset: position)
        }
        guard !list.isEmpty else { throw ClientHelloError(reason: .length(.serverNameList, 0), offset: list.lowerBound - 2) }
        position = list.lowerBound
        var hostName: String?
        while position < list.upperBound {
            let start = position
            try need(1, .serverName, within: list.upperBound)
            let type = byte(at: position)
            position += 1
            let name = try vector(.serverName, prefix: 2, within: list.upperBound)
            guard !name.isEmpty else { throw ClientHelloError(reason: .length(.serverName, 0), offset: name.lowerBound - 2) }
            guard type == 0 else { continue }
            guard hostName == nil else { throw ClientHelloError(reason: .duplicateHostName, offset: start) }
            for offset in name {
                let character = byte(at: offset)
                guard (0x21...0x7E).contains(character) else { throw ClientHelloError(reason: .hostNameByte(character), offset: offset) }
            }
            hostName = text(name)
        }
        return hostName
    }

    /// `application_layer_protocol_negotiation` (RFC 7301 3.1): a list of at least 2 bytes of
    /// names of 1 to 255 bytes.
    private mutating func applicationProtocols(in data: Range<Int>) throws(ClientHelloError) -> [String] {
        let list = try vector(.protocolNameList, prefix: 2, within: data.upperBound)
        guard position == data.upperBound else {
            throw ClientHelloError(reason: .trailingBytes(.protocolNameList, count: data.upperBound - position), offset: position)
        }
        guard list.count >= 2 else { throw ClientHelloError(reason: .length(.protocolNameList, list.count), offset: list.lowerBound - 2) }
        position = list.lowerBound
        var names: [String] = []
        // One allocation for the list: usually two names (h2, http/1.1), rarely more.
        names.reserveCapacity(4)
        while position < list.upperBound {
            let name = try vector(.protocolName, prefix: 1, within: list.upperBound)
            guard !name.isEmpty else { throw ClientHelloError(reason: .length(.protocolName, 0), offset: name.lowerBound - 1) }
            names.append(text(name))
        }
        return names
    }

    /// A vector at ``position``: its length prefix of `prefix` bytes, then that many bytes, all
    /// before `limit`. Returns the range of its contents, and moves past them.
    private mutating func vector(_ field: ClientHelloError.Field, prefix: Int, within limit: Int) throws(ClientHelloError) -> Range<Int> {
        try need(prefix, field, within: limit)
        let length = prefix == 1 ? Int(byte(at: position)) : Int(byte(at: position)) << 8 | Int(byte(at: position + 1))
        let start = position
        position += prefix
        guard length <= limit - position else {
            throw ClientHelloError(reason: .pastEnd(field, length: length, left: limit - position), offset: start)
        }
        position += length
        return (position - length)..<position
    }

    /// Throws unless `count` bytes are left before `limit`.
    private func need(_ count: Int, _ field: ClientHelloError.Field, within limit: Int) throws(ClientHelloError) {
        guard count <= limit - position else {
            throw ClientHelloError(reason: .pastEnd(field, length: count, left: limit - position), offset: position)
        }
    }

    private func byte(at offset: Int) -> UInt8 {
        precondition(offset >= 0 && offset < end)
        return bytes[offset]
    }

    /// The bytes in `range` as text (UTF-8, any invalid sequence replaced).
    private func text(_ range: Range<Int>) -> String {
        precondition(range.lowerBound >= 0 && range.upperBound <= end)
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }
}

/// The extension types of a ClientHello so far, to refuse a type that comes twice, at its second
/// place: the first 64 (more than any client sends) on the stack, each compared with those
/// before it, so a usual ClientHello allocates nothing for this; past 64, all of them in an
/// array, sorted once at the end.
private struct ExtensionTypes {
    private var types = InlineArray<64, UInt16>(repeating: 0)
    private var offsets = InlineArray<64, Int>(repeating: 0)
    private var count = 0
    private var more: [(type: UInt16, offset: Int)] = []

    /// Adds the extension of `type` that starts at `offset`.
    mutating func insert(_ type: UInt16, at offset: Int) throws(ClientHelloError) {
        if count < 64 {
            for index in 0..<count where types[index] == type {
                throw ClientHelloError(reason: .duplicateExtension(type), offset: offset)
            }
            types[count] = type
            offsets[count] = offset
            count += 1
            return
        }
        if more.isEmpty {
            more.reserveCapacity(128)
            for index in 0..<count { more.append((types[index], offsets[index])) }
        }
        more.append((type, offset))
    }

    /// Past 64 extensions: throws for the type that comes again first.
    func check() throws(ClientHelloError) {
        guard !more.isEmpty else { return }
        let sorted = more.sorted { ($0.type, $0.offset) < ($1.type, $1.offset) }
        var first: (type: UInt16, offset: Int)?
        for (previous, next) in zip(sorted, sorted.dropFirst()) where previous.type == next.type {
            if first == nil || next.offset < first!.offset { first = next }
        }
        if let first { throw ClientHelloError(reason: .duplicateExtension(first.type), offset: first.offset) }
    }
}
