import NIOCore

/// The type byte of a version 2 TLV.
public struct ProxyTLVType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The type byte.
    public var rawValue: UInt8
    /// Creates a type from its byte.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Creates a type from its byte.
    public init(_ rawValue: UInt8) { self.rawValue = rawValue }

    /// Application-Layer Protocol Negotiation: the protocol the client chose.
    public static let alpn = Self(0x01)
    /// The host name the client asked for (TLS SNI), UTF-8.
    public static let authority = Self(0x02)
    /// The CRC32C checksum of the whole header.
    public static let crc32c = Self(0x03)
    /// Padding, to be ignored.
    public static let noop = Self(0x04)
    /// An opaque connection identifier of at most 128 bytes.
    public static let uniqueID = Self(0x05)
    /// TLS details of the client connection, with sub-TLVs.
    public static let ssl = Self(0x20)
    /// The network namespace name, US-ASCII.
    public static let netns = Self(0x30)

    /// SSL sub-TLV: the TLS version, US-ASCII.
    public static let sslVersion = Self(0x21)
    /// SSL sub-TLV: the client certificate's common name, UTF-8.
    public static let sslCommonName = Self(0x22)
    /// SSL sub-TLV: the cipher, US-ASCII.
    public static let sslCipher = Self(0x23)
    /// SSL sub-TLV: the certificate's signature algorithm, US-ASCII.
    public static let sslSignatureAlgorithm = Self(0x24)
    /// SSL sub-TLV: the certificate's key algorithm, US-ASCII.
    public static let sslKeyAlgorithm = Self(0x25)
    /// SSL sub-TLV: the key exchange group, US-ASCII.
    public static let sslGroup = Self(0x26)
    /// SSL sub-TLV: the signature scheme, US-ASCII.
    public static let sslSignatureScheme = Self(0x27)
    /// SSL sub-TLV: the client certificate, DER.
    public static let sslClientCertificate = Self(0x28)

    /// Whether the type is in 0xE0...0xEF, reserved for applications.
    public var isApplicationSpecific: Bool { (0xE0...0xEF).contains(rawValue) }
    /// Whether the type is in 0xF0...0xF7, reserved for experiments.
    public var isExperimental: Bool { (0xF0...0xF7).contains(rawValue) }
    /// Whether the type is in 0xF8...0xFF, reserved for future use.
    public var isReservedForFuture: Bool { rawValue >= 0xF8 }

    /// The registered name, such as `AUTHORITY` or `SSL_CN`, or `nil` for other types.
    ///
    /// The cloud conventions (0xE0, 0xEA, 0xEE) are not registered; ``ProxyTLV/name`` names them
    /// only when the value has their shape.
    public var registeredName: String? {
        switch rawValue {
        case 0x01: return "ALPN"
        case 0x02: return "AUTHORITY"
        case 0x03: return "CRC32C"
        case 0x04: return "NOOP"
        case 0x05: return "UNIQUE_ID"
        case 0x20: return "SSL"
        case 0x21: return "SSL_VERSION"
        case 0x22: return "SSL_CN"
        case 0x23: return "SSL_CIPHER"
        case 0x24: return "SSL_SIG_ALG"
        case 0x25: return "SSL_KEY_ALG"
        case 0x26: return "SSL_GROUP"
        case 0x27: return "SSL_SIG_SCHEME"
        case 0x28: return "SSL_CLIENT_CERT"
        case 0x30: return "NETNS"
        default: return nil
        }
    }

    public var description: String { registeredName ?? "0x\(hex(rawValue))" }
}

/// One version 2 type-length-value extension.
///
/// The value is read-only: the initializers check its length, so a TLV always fits its 16-bit
/// length field.
public struct ProxyTLV: Hashable, Sendable {
    /// The type byte.
    public var type: ProxyTLVType
    /// The value bytes: at most ``maximumValueLength``, set only by an initializer.
    public private(set) var value: ByteBuffer

    /// The most bytes a value may have: what the 16-bit length field counts.
    public static let maximumValueLength = Int(UInt16.max)
    /// The most bytes a UNIQUE_ID value may have.
    public static let maximumUniqueIDLength = 128

    /// Creates a TLV from a type and a value.
    ///
    /// - Throws: ``ProxyHeaderEncodingError/Kind/tlvValueTooLong(type:length:maximum:)`` when
    ///   `value` has more than ``maximumValueLength`` bytes.
    public init(type: ProxyTLVType, value: ByteBuffer) throws(ProxyHeaderEncodingError) {
        try Self.checkLength(of: value, type: type, maximum: Self.maximumValueLength)
        self.init(type: type, validatedValue: value)
    }

    /// Creates a TLV from a type and value bytes.
    ///
    /// - Throws: ``ProxyHeaderEncodingError/Kind/tlvValueTooLong(type:length:maximum:)`` when
    ///   there are more than ``maximumValueLength`` bytes.
    public init(type: ProxyTLVType, bytes: some Sequence<UInt8>) throws(ProxyHeaderEncodingError) {
        try self.init(type: type, value: ByteBuffer(bytes: bytes))
    }

    /// Wraps a value whose length is known to fit: read from the wire, or checked.
    init(type: ProxyTLVType, validatedValue: ByteBuffer) {
        self.type = type
        self.value = validatedValue
    }

    private static func checkLength(of value: ByteBuffer, type: ProxyTLVType, maximum: Int) throws(ProxyHeaderEncodingError) {
        guard value.readableBytes <= maximum else {
            throw ProxyHeaderEncodingError(.tlvValueTooLong(type: type, length: value.readableBytes, maximum: maximum))
        }
    }

    /// An AUTHORITY TLV.
    ///
    /// - Throws: ``ProxyHeaderEncodingError`` when the name has more than
    ///   ``maximumValueLength`` UTF-8 bytes.
    public static func authority(_ hostName: String) throws(ProxyHeaderEncodingError) -> ProxyTLV {
        try ProxyTLV(type: .authority, value: ByteBuffer(string: hostName))
    }

    /// An ALPN TLV.
    ///
    /// - Throws: ``ProxyHeaderEncodingError`` when the name has more than
    ///   ``maximumValueLength`` UTF-8 bytes.
    public static func alpn(_ protocolName: String) throws(ProxyHeaderEncodingError) -> ProxyTLV {
        try ProxyTLV(type: .alpn, value: ByteBuffer(string: protocolName))
    }

    /// A UNIQUE_ID TLV.
    ///
    /// - Throws: ``ProxyHeaderEncodingError`` when `id` has more than
    ///   ``maximumUniqueIDLength`` bytes, which receivers refuse.
    public static func uniqueID(_ id: some Sequence<UInt8>) throws(ProxyHeaderEncodingError) -> ProxyTLV {
        let value = ByteBuffer(bytes: id)
        try checkLength(of: value, type: .uniqueID, maximum: maximumUniqueIDLength)
        return ProxyTLV(type: .uniqueID, validatedValue: value)
    }

    /// A NETNS TLV.
    ///
    /// - Throws: ``ProxyHeaderEncodingError`` when the name has more than
    ///   ``maximumValueLength`` bytes.
    public static func netns(_ name: String) throws(ProxyHeaderEncodingError) -> ProxyTLV {
        try ProxyTLV(type: .netns, value: ByteBuffer(string: name))
    }

    /// A NOOP TLV of `count` zero bytes, for padding.
    ///
    /// - Throws: ``ProxyHeaderEncodingError`` when `count` is more than ``maximumValueLength``.
    public static func noop(count: Int = 0) throws(ProxyHeaderEncodingError) -> ProxyTLV {
        try ProxyTLV(type: .noop, bytes: repeatElement(0, count: count))
    }

    /// A CRC32C TLV whose value the encoder fills in.
    public static var crc32c: ProxyTLV {
        ProxyTLV(type: .crc32c, validatedValue: ByteBuffer(bytes: [0, 0, 0, 0]))
    }

    /// An SSL TLV built from its parts.
    ///
    /// - Throws: ``ProxyHeaderEncodingError`` when the encoded details (the sub-TLVs above all)
    ///   have more than ``maximumValueLength`` bytes.
    public static func ssl(_ info: ProxySSLInfo) throws(ProxyHeaderEncodingError) -> ProxyTLV {
        try ProxyTLV(type: .ssl, value: info.encoded())
    }

    /// The name to show for this TLV: the registered name, or `AWS`, `AZURE` or `GCP` when the
    /// value has that cloud convention's shape, else `nil`.
    public var name: String? {
        type.registeredName ?? cloudName
    }
}

/// The TLVs of a header: a collection read lazily from their wire form.
///
/// A parsed header keeps the TLV bytes as they came (a slice of the received buffer, no copy)
/// and yields ``ProxyTLV`` values on iteration. Duplicates stay, in order.
public struct ProxyTLVs: Hashable, Sendable, Sequence, ExpressibleByArrayLiteral {
    /// The TLVs as they are on the wire.
    public var bytes: ByteBuffer { storage ?? ByteBuffer() }

    /// `nil` for none: an empty `ByteBuffer` costs a retain of a shared storage, and most
    /// headers have no TLVs.
    private var storage: ByteBuffer?

    /// No TLVs.
    public init() {
        self.storage = nil
    }

    /// TLVs in the given order.
    public init(_ tlvs: some Sequence<ProxyTLV>) {
        var bytes = ByteBuffer()
        for tlv in tlvs {
            Self.write(tlv, to: &bytes)
        }
        self.storage = bytes
    }

    public init(arrayLiteral elements: ProxyTLV...) {
        self.init(elements)
    }

    /// Wraps bytes already checked by the parser.
    init(validatedBytes: ByteBuffer) {
        self.storage = validatedBytes
    }

    /// Whether there are no TLVs.
    public var isEmpty: Bool { (storage?.readableBytes ?? 0) == 0 }

    /// Appends a TLV.
    public mutating func append(_ tlv: ProxyTLV) {
        var bytes = storage.take() ?? ByteBuffer()
        Self.write(tlv, to: &bytes)
        storage = bytes
    }

    public static func == (lhs: ProxyTLVs, rhs: ProxyTLVs) -> Bool {
        lhs.bytes == rhs.bytes
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes)
    }

    /// The first TLV of `type`.
    public func first(_ type: ProxyTLVType) -> ProxyTLV? {
        first { $0.type == type }
    }

    /// The AUTHORITY (host name / SNI), if present.
    public var authority: String? {
        first(.authority).map { String(buffer: $0.value) }
    }

    /// The ALPN protocol bytes, if present.
    public var alpn: ByteBuffer? { first(.alpn)?.value }

    /// The UNIQUE_ID bytes, if present.
    public var uniqueID: ByteBuffer? { first(.uniqueID)?.value }

    /// The NETNS name, if present.
    public var netns: String? {
        first(.netns).map { String(buffer: $0.value) }
    }

    /// The received CRC32C value, if present. The parser has already verified it.
    public var crc32c: UInt32? {
        guard let tlv = first(.crc32c) else { return nil }
        return tlv.value.getInteger(at: tlv.value.readerIndex, as: UInt32.self)
    }

    /// The SSL details, if present.
    public var ssl: ProxySSLInfo? {
        first(.ssl).flatMap { ProxySSLInfo(validatedValue: $0.value) }
    }

    public func makeIterator() -> Iterator {
        Iterator(bytes: bytes)
    }

    /// Walks the wire form one TLV at a time.
    public struct Iterator: IteratorProtocol {
        var bytes: ByteBuffer

        public mutating func next() -> ProxyTLV? {
            guard let type = bytes.readInteger(as: UInt8.self),
                let length = bytes.readInteger(as: UInt16.self),
                let value = bytes.readSlice(length: Int(length))
            else { return nil }
            return ProxyTLV(type: ProxyTLVType(type), validatedValue: value)
        }
    }

    static func write(_ tlv: ProxyTLV, to bytes: inout ByteBuffer) {
        bytes.writeInteger(tlv.type.rawValue)
        bytes.writeInteger(UInt16(tlv.value.readableBytes))
        var value = tlv.value
        bytes.writeBuffer(&value)
    }
}
