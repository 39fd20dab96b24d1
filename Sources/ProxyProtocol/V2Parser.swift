import NIOCore

/// Parses a version 2 header: 16 fixed bytes, an address block and TLVs, `16 + len` bytes in all.
///
/// Every check and the IP addresses take one pass over the raw bytes; TLVs and UNIX paths are
/// then slices of the received buffer (``ScannedHeader/header(in:)``), so nothing is copied.
enum V2Parser {
    /// Checks everything that can be checked; `nil` when more bytes are needed.
    @inline(__always)
    static func scan(_ bytes: UnsafeRawBufferPointer, limit: Int) throws(ProxyHeaderError) -> ScannedHeader? {
        guard bytes.count > 12 else { return nil }
        let versionAndCommand = bytes[12]
        guard versionAndCommand >> 4 == 2 else {
            throw ProxyHeaderError(.v2UnsupportedVersion(versionAndCommand), at: 12)
        }
        guard let command = ProxyCommand(rawValue: versionAndCommand & 0xF) else {
            throw ProxyHeaderError(.v2UnsupportedCommand(versionAndCommand), at: 12)
        }
        guard bytes.count > 13 else { return nil }
        var layout = ScannedHeader(version: .v2, length: 0)
        layout.command = command
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
        let block = ProxyHeader.v2FixedLength
        switch layout.family {
        case .inet:
            layout.addresses = .inet
            layout.source.low = UInt64(bytes.bigEndianUInt32(at: block))
            layout.destination.low = UInt64(bytes.bigEndianUInt32(at: block + 4))
            layout.sourcePort = bytes.bigEndianUInt16(at: block + 8)
            layout.destinationPort = bytes.bigEndianUInt16(at: block + 10)
        case .inet6:
            layout.addresses = .inet6
            layout.source = bytes.ipv6Address(at: block)
            layout.destination = bytes.ipv6Address(at: block + 16)
            layout.sourcePort = bytes.bigEndianUInt16(at: block + 32)
            layout.destinationPort = bytes.bigEndianUInt16(at: block + 34)
        case .unix:
            layout.addresses = .unix
        case .unspecified:
            preconditionFailure("UNSPEC headers carry no addresses")
        }
        let tlvStart = block + blockLength
        guard tlvStart < layout.length else { return layout }
        layout.tlvStart = tlvStart
        let header = UnsafeRawBufferPointer(rebasing: bytes[0..<layout.length])
        var checksumOffset: Int?
        try TLVWalker(header: header).walk(tlvStart..<layout.length, nested: false, checksumOffset: &checksumOffset)
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
    // The callers have checked the bounds.
    func bigEndianUInt16(at offset: Int) -> UInt16 {
        UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    func bigEndianUInt32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    func bigEndianUInt64(at offset: Int) -> UInt64 {
        UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    func ipv6Address(at offset: Int) -> ProxyIPv6Address {
        ProxyIPv6Address(high: bigEndianUInt64(at: offset), low: bigEndianUInt64(at: offset + 8))
    }
}
