import NIOCore

extension ProxyHeader {
    /// Writes the header in its ``version``'s wire form and returns the number of bytes written.
    ///
    /// - Parameters:
    ///   - buffer: Where the header goes.
    ///   - appendingCRC32C: Version 2 only: append a CRC32C TLV if the header has none. Any
    ///     CRC32C TLV the header carries is filled in with the checksum of the bytes written, so
    ///     a parsed header can be sent on unchanged.
    /// - Throws: ``ProxyHeaderEncodingError`` when the version cannot carry the header (version 1
    ///   with `LOCAL`, UDP, UNIX or TLVs), when family and transport disagree with the addresses,
    ///   or when version 2's body would exceed 65535 bytes. Nothing is written then.
    @discardableResult
    public func encode(into buffer: inout ByteBuffer, appendingCRC32C: Bool = false) throws(ProxyHeaderEncodingError) -> Int {
        try checkFamily()
        switch version {
        case .v1: return try encodeV1(into: &buffer)
        case .v2: return try encodeV2(into: &buffer, appendingCRC32C: appendingCRC32C)
        }
    }

    /// The header's wire form in a new buffer.
    public func encoded(appendingCRC32C: Bool = false) throws(ProxyHeaderEncodingError) -> ByteBuffer {
        var buffer = ByteBuffer()
        try encode(into: &buffer, appendingCRC32C: appendingCRC32C)
        return buffer
    }

    private func checkFamily() throws(ProxyHeaderEncodingError) {
        let addressFamily = addresses.family
        let matches =
            addressFamily == .unspecified
            ? family == .unspecified && transport == .unspecified
            : family == addressFamily && transport != .unspecified
        guard matches else {
            throw ProxyHeaderEncodingError(.familyMismatch(family: family, transport: transport, addresses: addresses.family))
        }
    }

    private func encodeV1(into buffer: inout ByteBuffer) throws(ProxyHeaderEncodingError) -> Int {
        guard command == .proxy else { throw ProxyHeaderEncodingError(.v1CannotSendLocal) }
        guard tlvs.isEmpty else { throw ProxyHeaderEncodingError(.v1CannotSendTLVs) }
        let endpoints: String
        switch (addresses, transport) {
        case (.unspecified, _):
            endpoints = ""
        case (.inet(let s, let d), .stream):
            endpoints = " \(s.address) \(d.address) \(s.port) \(d.port)"
        case (.inet6(let s, let d), .stream):
            endpoints = " \(s.address) \(d.address) \(s.port) \(d.port)"
        default:
            throw ProxyHeaderEncodingError(.v1CannotSend(family, transport))
        }
        return buffer.writeString("PROXY \(addresses.family.v1Name)\(endpoints)\r\n")
    }

    private func encodeV2(into buffer: inout ByteBuffer, appendingCRC32C: Bool) throws(ProxyHeaderEncodingError) -> Int {
        let blockLength = addresses.family.addressBlockLength
        var checksumOffset = tlvs.isEmpty ? nil : tlvs.checksumValueOffset.map { blockLength + $0 }
        let appendsChecksum = appendingCRC32C && checksumOffset == nil
        let bodyLength = blockLength + tlvs.bytes.readableBytes + (appendsChecksum ? 7 : 0)
        guard bodyLength <= Int(UInt16.max) else { throw ProxyHeaderEncodingError(.tooLong(length: bodyLength)) }

        let start = buffer.writerIndex
        // The fixed part and IP addresses in one write: one capacity check, no per-field calls.
        let directLength: Int
        switch addresses {
        case .inet: directLength = Self.v2FixedLength + 12
        case .inet6: directLength = Self.v2FixedLength + 36
        case .unspecified, .unix: directLength = Self.v2FixedLength
        }
        let familyByte = addresses.family.rawValue << 4 | (addresses.family == .unspecified ? 0 : transport.rawValue)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: directLength) { bytes in
            bytes.storeBigEndian(UInt64(0x0D0A_0D0A_000D_0A51), at: 0)
            bytes.storeBigEndian(UInt32(0x5549_540A), at: 8)
            bytes[12] = 0x20 | command.rawValue
            bytes[13] = familyByte
            bytes.storeBigEndian(UInt16(bodyLength), at: 14)
            switch addresses {
            case .inet(let source, let destination):
                bytes.storeBigEndian(source.address.rawValue, at: 16)
                bytes.storeBigEndian(destination.address.rawValue, at: 20)
                bytes.storeBigEndian(source.port, at: 24)
                bytes.storeBigEndian(destination.port, at: 26)
            case .inet6(let source, let destination):
                bytes.storeBigEndian(source.address.high, at: 16)
                bytes.storeBigEndian(source.address.low, at: 24)
                bytes.storeBigEndian(destination.address.high, at: 32)
                bytes.storeBigEndian(destination.address.low, at: 40)
                bytes.storeBigEndian(source.port, at: 48)
                bytes.storeBigEndian(destination.port, at: 50)
            case .unspecified, .unix:
                break
            }
            return directLength
        }
        if case .unix(let source, let destination) = addresses {
            for address in [source, destination] {
                var bytes = address.bytes
                let written = buffer.writeBuffer(&bytes)
                buffer.writeRepeatingByte(0, count: ProxyUnixAddress.fieldLength - written)
            }
        }
        guard !tlvs.isEmpty || appendsChecksum else { return buffer.writerIndex - start }
        var tlvBytes = tlvs.bytes
        buffer.writeBuffer(&tlvBytes)
        if appendsChecksum {
            checksumOffset = bodyLength - 4
            buffer.writeMultipleIntegers(ProxyTLVType.crc32c.rawValue, UInt16(4), UInt32(0))
        }
        if let checksumOffset {
            let valueIndex = start + Self.v2FixedLength + checksumOffset
            buffer.setInteger(UInt32(0), at: valueIndex)
            var crc = CRC32C()
            let headerStart = start - buffer.readerIndex
            buffer.withUnsafeReadableBytes { bytes in
                crc.update(UnsafeRawBufferPointer(rebasing: bytes[headerStart..<(headerStart + Self.v2FixedLength + bodyLength)]))
            }
            buffer.setInteger(crc.value, at: valueIndex)
        }
        return buffer.writerIndex - start
    }
}

extension ProxyTLVs {
    /// The offset of the first 4-byte CRC32C value within the TLV bytes.
    var checksumValueOffset: Int? {
        var offset = 0
        for tlv in self {
            if tlv.type == .crc32c && tlv.value.readableBytes == 4 { return offset + 3 }
            offset += 3 + tlv.value.readableBytes
        }
        return nil
    }
}

extension UnsafeMutableRawBufferPointer {
    // The callers have reserved the bytes.
    @inline(__always)
    func storeBigEndian<Integer: FixedWidthInteger>(_ value: Integer, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: Integer.self)
    }
}
