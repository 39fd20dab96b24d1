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
    /// The longest header accepted, 16...``ProxyHeader/maximumV2Length``. A version 2 header
    /// announcing more is rejected as soon as its length field arrives; version 1 lines are
    /// capped at the smaller of this and 107. Read-only: the initializer checks it.
    public private(set) var maximumHeaderLength: Int

    /// Creates a parser.
    ///
    /// - Parameters:
    ///   - acceptedVersions: The versions accepted.
    ///   - maximumHeaderLength: The longest header accepted: at least 16, the fixed part of a version 2
    ///     header (a smaller limit is a programming error, and traps here); a larger one than
    ///     ``ProxyHeader/maximumV2Length`` means that maximum.
    public init(acceptedVersions: ProxyVersions = .all, maximumHeaderLength: Int = ProxyHeader.maximumV2Length) {
        precondition(
            maximumHeaderLength >= ProxyHeader.v2FixedLength,
            "maximumHeaderLength must be at least 16 (a version 2 header's fixed part), not \(maximumHeaderLength)"
        )
        self.acceptedVersions = acceptedVersions
        self.maximumHeaderLength = min(maximumHeaderLength, ProxyHeader.maximumV2Length)
    }

    /// Parses the readable bytes of `buffer` without consuming them.
    public func parse(_ buffer: ByteBuffer) throws(ProxyHeaderError) -> ProxyHeaderParseResult {
        // One pass over the raw bytes; a version 2 header's TLVs and UNIX addresses are then
        // slices of the buffer.
        let scanned = buffer.withUnsafeReadableBytes { bytes in
            Result { () throws(ProxyHeaderError) -> ScannedHeader? in try scan(bytes) }
        }
        guard let scanned = try scanned.get() else { return .needMoreBytes }
        return .complete(scanned.header(in: buffer), length: scanned.length)
    }

    @inline(__always)
    private func scan(_ bytes: UnsafeRawBufferPointer) throws(ProxyHeaderError) -> ScannedHeader? {
        switch try signatureVersion(bytes) {
        case nil:
            return nil
        case .v1:
            return try V1Parser(bytes: bytes, limit: min(maximumHeaderLength, ProxyHeader.maximumV1Length)).parse()
        case .v2:
            return try V2Parser.scan(bytes, limit: maximumHeaderLength)
        }
    }

    /// The accepted version whose signature `bytes` start with; `nil` while the bytes are a valid
    /// start of one. A complete signature is two compares; the byte-by-byte walk is for short
    /// input and for naming the first wrong byte.
    @inline(__always)
    private func signatureVersion(_ bytes: UnsafeRawBufferPointer) throws(ProxyHeaderError) -> ProxyVersion? {
        if bytes.count >= 12 && bytes.bigEndianUInt64(at: 0) == 0x0D0A_0D0A_000D_0A51 && bytes.bigEndianUInt32(at: 8) == 0x5549_540A {
            return try accepted(.v2)
        }
        if bytes.count >= 6 && bytes.bigEndianUInt32(at: 0) == 0x5052_4F58 && bytes.bigEndianUInt16(at: 4) == 0x5920 {
            return try accepted(.v1)
        }
        guard let first = bytes.first else { return nil }
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
        _ = try accepted(version)
        for index in 1..<min(bytes.count, signature.count) where bytes[index] != signature[index] {
            throw ProxyHeaderError(.invalidSignature, at: index)
        }
        return bytes.count >= signature.count ? version : nil
    }

    private func accepted(_ version: ProxyVersion) throws(ProxyHeaderError) -> ProxyVersion {
        guard acceptedVersions.contains(version) else { throw ProxyHeaderError(.versionNotAccepted(version), at: 0) }
        return version
    }
}
