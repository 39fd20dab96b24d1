import NIOCore

/// A valid header as the scan of the raw bytes found it.
///
/// Plain values only, so that it leaves the buffer's closure without reference counting or
/// copies of enums with payloads; ``header(in:)`` builds the ``ProxyHeader`` once, at the end.
struct ScannedHeader {
    /// Which addresses the header carries and how they are stored here.
    enum Addresses {
        /// None (`LOCAL`, `UNKNOWN`, `UNSPEC`), or skipped unread.
        case none
        /// IPv4: in the low 32 bits of ``source`` and ``destination``.
        case inet
        case inet6
        /// UNIX: still in the buffer, in version 2's address block.
        case unix
    }

    var version: ProxyVersion
    var command = ProxyCommand.proxy
    var family = ProxyAddressFamily.unspecified
    var transport = ProxyTransport.unspecified
    /// The header's length on the wire.
    var length: Int
    var addresses = Addresses.none
    var source = ProxyIPv6Address(high: 0, low: 0)
    var destination = ProxyIPv6Address(high: 0, low: 0)
    var sourcePort: UInt16 = 0
    var destinationPort: UInt16 = 0
    /// Where version 2's TLVs start, from the first byte; `nil` when there are none.
    var tlvStart: Int?

    init(version: ProxyVersion, length: Int) {
        self.version = version
        self.length = length
    }

    /// The header; `buffer` is the one that was scanned, from its reader index.
    @inline(__always)
    func header(in buffer: ByteBuffer) -> ProxyHeader {
        let addresses: ProxyAddresses
        switch self.addresses {
        case .none:
            addresses = .unspecified
        case .inet:
            addresses = .inet(
                source: .init(ProxyIPv4Address(rawValue: UInt32(truncatingIfNeeded: source.low)), port: sourcePort),
                destination: .init(ProxyIPv4Address(rawValue: UInt32(truncatingIfNeeded: destination.low)), port: destinationPort)
            )
        case .inet6:
            addresses = .inet6(source: .init(source, port: sourcePort), destination: .init(destination, port: destinationPort))
        case .unix:
            let start = buffer.readerIndex + ProxyHeader.v2FixedLength
            addresses = .unix(
                source: Self.unixAddress(in: buffer, at: start),
                destination: Self.unixAddress(in: buffer, at: start + ProxyUnixAddress.fieldLength)
            )
        }
        var tlvs = ProxyTLVs()
        if let tlvStart {
            tlvs = ProxyTLVs(validatedBytes: buffer.getSlice(at: buffer.readerIndex + tlvStart, length: length - tlvStart)!)
        }
        return ProxyHeader(version: version, command: command, family: family, transport: transport, addresses: addresses, tlvs: tlvs)
    }

    /// A UNIX address field without its NUL padding: a path ends at its first NUL; an abstract
    /// name (first byte NUL) keeps its inner NULs and loses only the trailing ones.
    private static func unixAddress(in buffer: ByteBuffer, at index: Int) -> ProxyUnixAddress {
        let field = buffer.getSlice(at: index, length: ProxyUnixAddress.fieldLength)!
        let view = field.readableBytesView
        let length: Int
        if view.first == 0 {
            length = (view.lastIndex { $0 != 0 }).map { $0 - view.startIndex + 1 } ?? 0
        } else {
            length = (view.firstIndex(of: 0)).map { $0 - view.startIndex } ?? view.count
        }
        return ProxyUnixAddress(validatedBytes: field.getSlice(at: field.readerIndex, length: length)!)
    }
}
