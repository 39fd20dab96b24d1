import NIOCore

/// What the parser made of the bytes received so far.
public enum ProxyHeaderParseResult: Hashable, Sendable {
    /// The bytes so far are a valid start of a header; wait for more.
    ///
    /// Never returned once the version's (or the configured) maximum length has been reached.
    case needMoreBytes
    /// A complete, valid header that took exactly `length` bytes. The bytes after it belong to
    /// the application.
    case complete(ProxyHeader, length: Int)
}

/// Parses PROXY protocol headers of both versions, strictly and incrementally.
///
/// Give ``parse(_:)`` everything received so far, from the first byte of the connection: it
/// answers a complete header with its exact length, asks for more bytes, or throws a
/// ``ProxyHeaderError`` naming what is wrong and where. It never reads past the header, and
/// parsing a header without TLVs does not allocate.
///
/// Choices the specification leaves open:
/// - Version 2 `LOCAL`: the family byte, the addresses and any TLVs are skipped unread, as the
///   specification asks; the header has ``ProxyAddresses/unspecified`` and no TLVs.
/// - Version 2 `PROXY` with an `UNSPEC` family or transport: accepted, with the address block and
///   any TLVs skipped unread; the header has ``ProxyAddresses/unspecified``. Whether to serve such
///   a connection is the receiver's choice.
/// - A second CRC32C TLV is an error: the checksum would be ambiguous.
public struct ProxyHeaderParser: Hashable, Sendable {
    /// The versions accepted; another version's signature is an error at its first byte.
    public var acceptedVersions: ProxyVersions
    /// The longest header accepted, at most ``ProxyHeader/maximumV2Length``. A version 2 header
    /// announcing more is rejected as soon as its length field arrives; version 1 lines are
    /// capped at the smaller of this and 107.
    public var maximumLength: Int

    /// Creates a parser.
    public init(acceptedVersions: ProxyVersions = .all, maximumLength: Int = ProxyHeader.maximumV2Length) {
        precondition(maximumLength >= ProxyHeader.v2FixedLength, "a header has at least 16 bytes")
        self.acceptedVersions = acceptedVersions
        self.maximumLength = min(maximumLength, ProxyHeader.maximumV2Length)
    }

    /// Parses the readable bytes of `buffer` without consuming them.
    public func parse(_ buffer: ByteBuffer) throws(ProxyHeaderError) -> ProxyHeaderParseResult {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else {
            return .needMoreBytes
        }
        let version: ProxyVersion
        let signature: [UInt8]
        switch first {
        case ProxyHeader.v1Signature[0]:
            version = .v1
            signature = ProxyHeader.v1Signature
        case ProxyHeader.v2Signature[0]:
            version = .v2
            signature = ProxyHeader.v2Signature
        default:
            throw ProxyHeaderError(.invalidSignature, at: 0)
        }
        guard acceptedVersions.contains(version) else {
            throw ProxyHeaderError(.versionNotAccepted(version), at: 0)
        }
        let available = buffer.readableBytes
        for index in 1..<min(available, signature.count) {
            if buffer.getInteger(at: buffer.readerIndex + index, as: UInt8.self) != signature[index] {
                throw ProxyHeaderError(.invalidSignature, at: index)
            }
        }
        guard available >= signature.count else { return .needMoreBytes }
        switch version {
        case .v1:
            let limit = min(maximumLength, ProxyHeader.maximumV1Length)
            let result = buffer.withUnsafeReadableBytes { bytes in
                Result { () throws(ProxyHeaderError) in try V1Parser(bytes: bytes, limit: limit).parse() }
            }
            return try result.get()
        case .v2:
            return try V2Parser(buffer: buffer, limit: maximumLength).parse()
        }
    }
}
