import NIOCore

/// Parses a version 2 header: 16 fixed bytes, an address block and TLVs, `16 + len` bytes in all.
///
/// The checks run on the raw bytes in one pass; the header then refers to the received buffer
/// (TLVs and UNIX paths are slices of it), so nothing is copied.
struct V2Parser {
    let buffer: ByteBuffer
    let limit: Int

    /// Where the parts of a valid header are, relative to its first byte.
    private struct Layout {
        var command: ProxyCommand
        var family: ProxyAddressFamily = .unspecified
        var transport: ProxyTransport = .unspecified
        var length: Int
        var parsesAddresses = false
        var tlvStart = 0
    }

    func parse() throws(ProxyHeaderError) -> ProxyHeaderParseResult {
        let result = buffer.withUnsafeReadableBytes { bytes in
            Result { () throws(ProxyHeaderError) -> Layout? in try Self.layout(of: bytes, limit: limit) }
        }
        guard let layout = try result.get() else { return .needMoreBytes }
        guard layout.parsesAddresses else {
            let header = ProxyHeader(
                version: .v2, command: layout.command, family: layout.family, transport: layout.transport,
                addresses: .unspecified, tlvs: ProxyTLVs()
            )
            return .complete(header, length: layout.length)
        }
        let base = buffer.readerIndex
        let start = base + ProxyHeader.v2FixedLength
        let addresses: ProxyAddresses
        switch layout.family {
        case .inet:
            addresses = .inet(
                source: .init(ProxyIPv4Address(rawValue: buffer.getInteger(at: start)!), port: buffer.getInteger(at: start + 8)!),
                destination: .init(ProxyIPv4Address(rawValue: buffer.getInteger(at: start + 4)!), port: buffer.getInteger(at: start + 10)!)
            )
        case .inet6:
            addresses = .inet6(
                source: .init(ipv6(at: start), port: buffer.getInteger(at: start + 32)!),
                destination: .init(ipv6(at: start + 16), port: buffer.getInteger(at: start + 34)!)
            )
        case .unix:
            addresses = .unix(source: unixAddress(at: start), destination: unixAddress(at: start + ProxyUnixAddress.fieldLength))
        case .unspecified:
            preconditionFailure("UNSPEC headers carry no addresses")
        }
        let tlvs = buffer.getSlice(at: base + layout.tlvStart, length: layout.length - layout.tlvStart)!
        let header = ProxyHeader(
            version: .v2, command: .proxy, family: layout.family, transport: layout.transport,
            addresses: addresses, tlvs: ProxyTLVs(validatedBytes: tlvs)
        )
        return .complete(header, length: layout.length)
    }

    private func ipv6(at index: Int) -> ProxyIPv6Address {
        ProxyIPv6Address(high: buffer.getInteger(at: index)!, low: buffer.getInteger(at: index + 8)!)
    }

    /// A UNIX address field without its NUL padding: a path ends at its first NUL; an abstract
    /// name (first byte NUL) keeps its inner NULs and loses only the trailing ones.
    private func unixAddress(at index: Int) -> ProxyUnixAddress {
        let field = buffer.getSlice(at: index, length: ProxyUnixAddress.fieldLength)!
        let view = field.readableBytesView
        let length: Int
        if view.first == 0 {
            length = (view.lastIndex { $0 != 0 }).map { $0 - view.startIndex + 1 } ?? 0
        } else {
            length = (view.firstIndex(of: 0)).map { $0 - view.startIndex } ?? view.count
        }
        return ProxyUnixAddress(bytes: field.getSlice(at: field.readerIndex, length: length)!)
    }

    /// Checks everything that can be checked; `nil` when more bytes are needed.
    private static func layout(of bytes: UnsafeRawBufferPointer, limit: Int) throws(ProxyHeaderError) -> Layout? {
        guard bytes.count > 12 else { return nil }
        let versionAndCommand = bytes[12]
        guard versionAndCommand >> 4 == 2 else {
            throw ProxyHeaderError(.v2UnsupportedVersion(versionAndCommand), at: 12)
        }
        guard let command = ProxyCommand(rawValue: versionAndCommand & 0xF) else {
            throw ProxyHeaderError(.v2UnsupportedCommand(versionAndCommand), at: 12)
        }
        guard bytes.count > 13 else { return nil }
        var layout = Layout(command: command, length: 0)
        if command == .proxy {
            // LOCAL ignores the family byte, whatever it says; PROXY needs an assigned one.
            let familyByte = bytes[13]
            guard let family = ProxyAddressFamily(rawValue: familyByte >> 4),
                let transport = ProxyTransport(rawValue: familyByte & 0xF)
            else { throw ProxyHeaderError(.v2UnsupportedFamily(familyByte), at: 13) }
            layout.family = family
            layout.transport = transport
        }
        guard bytes.count >= ProxyHeader.v2FixedLength else { return nil }
        let bodyLength = Int(bytes.bigEndianUInt16(at: 14))
        layout.length = ProxyHeader.v2FixedLength + bodyLength
        guard layout.length <= limit else {
            throw ProxyHeaderError(.headerTooLong(limit: limit), at: 14)
        }
        guard bytes.count >= layout.length else { return nil }
        guard command == .proxy, layout.family != .unspecified, layout.transport != .unspecified else {
            return layout
        }
        let blockLength = layout.family.addressBlockLength
        guard bodyLength >= blockLength else {
            throw ProxyHeaderError(
                .v2AddressBlockTooShort(family: layout.family, required: blockLength, length: bodyLength), at: 14
            )
        }
        layout.parsesAddresses = true
        layout.tlvStart = ProxyHeader.v2FixedLength + blockLength
        let header = UnsafeRawBufferPointer(rebasing: bytes[0..<layout.length])
        var checksumOffset: Int?
        try TLVWalker(header: header).walk(layout.tlvStart..<layout.length, nested: false, checksumOffset: &checksumOffset)
        if let checksumOffset {
            let received = header.bigEndianUInt32(at: checksumOffset)
            var crc = CRC32C()
            crc.update(UnsafeRawBufferPointer(rebasing: header[0..<checksumOffset]))
            crc.updateWithZeros(count: 4)
            crc.update(UnsafeRawBufferPointer(rebasing: header[(checksumOffset + 4)...]))
            guard crc.value == received else {
                throw ProxyHeaderError(.v2ChecksumMismatch(received: received, computed: crc.value), at: checksumOffset - 3)
            }
        }
        return layout
    }
}

/// Checks a run of TLVs: every bound, and the values of the registered types.
private struct TLVWalker {
    let header: UnsafeRawBufferPointer

    func walk(_ range: Range<Int>, nested: Bool, checksumOffset: inout Int?) throws(ProxyHeaderError) {
        var offset = range.lowerBound
        while offset < range.upperBound {
            let remaining = range.upperBound - offset
            guard remaining >= 3 else {
                throw ProxyHeaderError(.v2TruncatedTLVHeader(remaining: remaining), at: offset)
            }
            let type = header[offset]
            let length = Int(header.bigEndianUInt16(at: offset + 1))
            guard length <= remaining - 3 else {
                throw ProxyHeaderError(.v2TLVOverrun(type: type, length: length, remaining: remaining - 3), at: offset)
            }
            let value = (offset + 3)..<(offset + 3 + length)
            if nested {
                try checkSSLSubTLV(type, value, at: offset)
            } else {
                try checkTLV(type, value, at: offset, checksumOffset: &checksumOffset)
            }
            offset = value.upperBound
        }
    }

    private func checkTLV(
        _ type: UInt8, _ value: Range<Int>, at offset: Int, checksumOffset: inout Int?
    ) throws(ProxyHeaderError) {
        func fail(_ problem: ProxyHeaderError.TLVProblem) -> ProxyHeaderError {
            ProxyHeaderError(.v2InvalidTLV(type: type, problem), at: offset)
        }
        switch ProxyTLVType(type) {
        case .authority:
            guard isValidUTF8(bytes(value)) else { throw fail(.invalidUTF8) }
        case .crc32c:
            guard value.count == 4 else { throw fail(.lengthMustBe(4)) }
            guard checksumOffset == nil else { throw ProxyHeaderError(.v2DuplicateCRC32C, at: offset) }
            checksumOffset = value.lowerBound
        case .uniqueID:
            guard value.count <= ProxyTLV.maximumUniqueIDLength else {
                throw fail(.lengthMustBeAtMost(ProxyTLV.maximumUniqueIDLength))
            }
        case .ssl:
            guard value.count >= ProxySSLInfo.fixedLength else {
                throw fail(.lengthMustBeAtLeast(ProxySSLInfo.fixedLength))
            }
            // Sub-TLVs are one level deep: an SSL sub-TLV is never walked again.
            try walk((value.lowerBound + ProxySSLInfo.fixedLength)..<value.upperBound, nested: true, checksumOffset: &checksumOffset)
        case .netns:
            guard isASCII(bytes(value)) else { throw fail(.notASCII) }
        default:
            break
        }
    }

    private func checkSSLSubTLV(_ type: UInt8, _ value: Range<Int>, at offset: Int) throws(ProxyHeaderError) {
        switch ProxyTLVType(type) {
        case .sslCommonName:
            guard isValidUTF8(bytes(value)) else {
                throw ProxyHeaderError(.v2InvalidTLV(type: type, .invalidUTF8), at: offset)
            }
        case .sslVersion, .sslCipher, .sslSignatureAlgorithm, .sslKeyAlgorithm, .sslGroup, .sslSignatureScheme:
            guard isASCII(bytes(value)) else {
                throw ProxyHeaderError(.v2InvalidTLV(type: type, .notASCII), at: offset)
            }
        default:
            break
        }
    }

    private func bytes(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: header[range])
    }
}

extension UnsafeRawBufferPointer {
    func bigEndianUInt16(at offset: Int) -> UInt16 {
        UInt16(self[offset]) << 8 | UInt16(self[offset + 1])
    }

    func bigEndianUInt32(at offset: Int) -> UInt32 {
        UInt32(bigEndianUInt16(at: offset)) << 16 | UInt32(bigEndianUInt16(at: offset + 2))
    }
}
