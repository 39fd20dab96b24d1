import NIOCore

/// The meaning of a TLV of a registered type.
///
/// Only the types the specification registers have values here. The conventions that clouds use
/// in the application range (AWS, Azure, Google Cloud) are read by accessors kept apart, such as
/// ``ProxyTLV/awsVPCEndpointID``, so that supporting another one adds API instead of changing it.
///
/// A struct rather than an enum, so that a type registered later is not a breaking change: make
/// values with the static functions, compare with `==`, and read them with the accessor of their
/// ``type`` (switch over it with a `default` branch):
///
/// ```swift
/// if let hostName = tlv.decodedValue?.authority { ... }
/// ```
public struct ProxyTLVValue: Hashable, Sendable {
    private enum Base: Hashable, Sendable {
        case alpn(ByteBuffer)
        case authority(String)
        case crc32c(UInt32)
        case noop
        case uniqueID(ByteBuffer)
        case ssl(ProxySSLInfo)
        case netns(String)
    }

    private var base: Base

    private init(_ base: Base) { self.base = base }

    /// ALPN: the protocol identifier bytes.
    public static func alpn(_ protocolID: ByteBuffer) -> ProxyTLVValue { ProxyTLVValue(.alpn(protocolID)) }
    /// AUTHORITY: the host name.
    public static func authority(_ hostName: String) -> ProxyTLVValue { ProxyTLVValue(.authority(hostName)) }
    /// CRC32C: the checksum as received.
    public static func crc32c(_ checksum: UInt32) -> ProxyTLVValue { ProxyTLVValue(.crc32c(checksum)) }
    /// NOOP: padding.
    public static let noop = ProxyTLVValue(.noop)
    /// UNIQUE_ID: an opaque identifier.
    public static func uniqueID(_ id: ByteBuffer) -> ProxyTLVValue { ProxyTLVValue(.uniqueID(id)) }
    /// SSL: the client's TLS details.
    public static func ssl(_ info: ProxySSLInfo) -> ProxyTLVValue { ProxyTLVValue(.ssl(info)) }
    /// NETNS: a network namespace name.
    public static func netns(_ name: String) -> ProxyTLVValue { ProxyTLVValue(.netns(name)) }

    /// The registered type this is the value of; it says which accessor answers.
    public var type: ProxyTLVType {
        switch base {
        case .alpn: return .alpn
        case .authority: return .authority
        case .crc32c: return .crc32c
        case .noop: return .noop
        case .uniqueID: return .uniqueID
        case .ssl: return .ssl
        case .netns: return .netns
        }
    }

    /// The ALPN protocol identifier bytes; `nil` for another type.
    public var alpn: ByteBuffer? {
        if case .alpn(let protocolID) = base { return protocolID }
        return nil
    }

    /// The AUTHORITY host name; `nil` for another type.
    public var authority: String? {
        if case .authority(let hostName) = base { return hostName }
        return nil
    }

    /// The CRC32C checksum as received; `nil` for another type.
    public var crc32c: UInt32? {
        if case .crc32c(let checksum) = base { return checksum }
        return nil
    }

    /// The UNIQUE_ID bytes; `nil` for another type.
    public var uniqueID: ByteBuffer? {
        if case .uniqueID(let id) = base { return id }
        return nil
    }

    /// The SSL details; `nil` for another type.
    public var ssl: ProxySSLInfo? {
        if case .ssl(let info) = base { return info }
        return nil
    }

    /// The NETNS name; `nil` for another type.
    public var netns: String? {
        if case .netns(let name) = base { return name }
        return nil
    }
}

extension ProxyTLV {
    /// The typed value of a registered type; `nil` for other types, and for a value its type
    /// does not allow.
    ///
    /// Registered types are validated when a header is parsed, so a parsed header's registered
    /// TLVs always decode. Other types keep their raw ``value``; for the application range
    /// (0xE0-0xEF), see the cloud accessors such as ``awsVPCEndpointID``.
    public var decodedValue: ProxyTLVValue? {
        var value = self.value
        switch type {
        case .alpn:
            return .alpn(value)
        case .authority:
            return String(validatingUTF8Buffer: value).map { .authority($0) }
        case .crc32c:
            guard value.readableBytes == 4 else { return nil }
            return value.readInteger(as: UInt32.self).map { .crc32c($0) }
        case .noop:
            return .noop
        case .uniqueID:
            return value.readableBytes <= ProxyTLV.maximumUniqueIDLength ? .uniqueID(value) : nil
        case .ssl:
            return ProxySSLInfo(validatedValue: value).map { .ssl($0) }
        case .netns:
            return String(asciiBuffer: value).map { .netns($0) }
        default:
            return nil
        }
    }
}

/// The value of an SSL TLV: how the client talked TLS to the proxy.
public struct ProxySSLInfo: Hashable, Sendable {
    /// What the client did, as the `client` bit field says.
    public struct ClientFlags: OptionSet, Hashable, Sendable {
        /// The bit field.
        public var rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// The client connected over TLS.
        public static let ssl = ClientFlags(rawValue: 0x01)
        /// The client sent a certificate on this connection.
        public static let certificateOnConnection = ClientFlags(rawValue: 0x02)
        /// The client sent a certificate at least once in this TLS session.
        public static let certificateInSession = ClientFlags(rawValue: 0x04)
    }

    /// The `client` field.
    public var client: ClientFlags
    /// The `verify` field: 0 when the client's certificate was presented and verified.
    public var verify: UInt32
    /// The sub-TLVs (0x21-0x28 and any others), in order.
    public var subTLVs: ProxyTLVs

    /// The fixed part of the value: `client` and `verify`.
    static let fixedLength = 5

    /// Creates SSL details from their parts.
    public init(client: ClientFlags, verify: UInt32, subTLVs: ProxyTLVs = ProxyTLVs()) {
        self.client = client
        self.verify = verify
        self.subTLVs = subTLVs
    }

    /// Reads a value the parser has already checked; `nil` if it is too short.
    init?(validatedValue: ByteBuffer) {
        var value = validatedValue
        guard let client = value.readInteger(as: UInt8.self),
            let verify = value.readInteger(as: UInt32.self)
        else { return nil }
        self.init(client: ClientFlags(rawValue: client), verify: verify, subTLVs: ProxyTLVs(validatedBytes: value))
    }

    /// Whether the client presented a certificate that the proxy verified.
    public var isVerified: Bool { verify == 0 }
    /// SSL_VERSION, such as `TLSv1.3`.
    public var version: String? { text(.sslVersion) }
    /// SSL_CN: the client certificate's common name.
    public var commonName: String? { text(.sslCommonName) }
    /// SSL_CIPHER, such as `TLS_AES_256_GCM_SHA384`.
    public var cipher: String? { text(.sslCipher) }
    /// SSL_SIG_ALG: the certificate's signature algorithm.
    public var signatureAlgorithm: String? { text(.sslSignatureAlgorithm) }
    /// SSL_KEY_ALG: the certificate's key algorithm.
    public var keyAlgorithm: String? { text(.sslKeyAlgorithm) }
    /// SSL_GROUP: the key exchange group.
    public var group: String? { text(.sslGroup) }
    /// SSL_SIG_SCHEME: the signature scheme.
    public var signatureScheme: String? { text(.sslSignatureScheme) }
    /// SSL_CLIENT_CERT: the client certificate, DER.
    public var clientCertificate: ByteBuffer? { subTLVs.first(.sslClientCertificate)?.value }

    private func text(_ type: ProxyTLVType) -> String? {
        subTLVs.first(type).map { String(buffer: $0.value) }
    }

    /// The value on the wire.
    public func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(client.rawValue)
        buffer.writeInteger(verify)
        var sub = subTLVs.bytes
        buffer.writeBuffer(&sub)
        return buffer
    }
}
