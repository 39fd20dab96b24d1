/// Parses a version 1 line: `PROXY <family> <src> <dst> <srcport> <dstport>\r\n`.
///
/// The whole line is re-read on every call; it is at most 107 bytes, and re-reading keeps the
/// parser free of state. A complete, valid line is read in one pass (``scanValidLine()``);
/// anything else is read field by field (``parseFields()``), where fields that are complete are
/// checked at once, so a bad family is reported without waiting for the end of the line.
struct V1Parser {
    typealias Field = ProxyHeaderError.Field

    let bytes: UnsafeRawBufferPointer
    let limit: Int

    private static let space = UInt8(ascii: " ")
    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")

    /// How the bytes received so far end.
    private enum Terminator {
        /// A CRLF at this offset: the line is complete.
        case crlf
        /// A lone CR or LF at this offset.
        case invalid
        /// No line end yet (possibly a CR that is the last byte received).
        case pending
    }

    /// The header, or `nil` while the line is a valid start.
    func parse() throws(ProxyHeaderError) -> ScannedHeader? {
        if let header = scanValidLine() { return header }
        return try parseFields()
    }

    /// A complete and valid `TCP4`, `TCP6` or bare `UNKNOWN` line, in one pass; `nil` for
    /// anything else, including lines that are valid but unusual (`UNKNOWN` with fields). It
    /// accepts exactly what ``parseFields()`` accepts, which the tests check.
    func scanValidLine() -> ScannedHeader? {
        let end = min(bytes.count, limit)
        guard end >= 15 else { return nil }
        var header = ScannedHeader(version: .v1, length: 0)
        var index = 11
        switch bytes.bigEndianUInt32(at: 6) {
        case 0x5443_5034 where bytes[10] == Self.space:  // "TCP4 "
            guard let source = scanIPv4(&index, end: end, then: Self.space),
                let destination = scanIPv4(&index, end: end, then: Self.space)
            else { return nil }
            header.addresses = .inet
            header.family = .inet
            header.source.low = UInt64(source)
            header.destination.low = UInt64(destination)
        case 0x5443_5036 where bytes[10] == Self.space:  // "TCP6 "
            guard let source = scanIPv6(&index, end: end), let destination = scanIPv6(&index, end: end) else { return nil }
            header.addresses = .inet6
            header.family = .inet6
            header.source = source
            header.destination = destination
        case 0x554E_4B4E:  // "UNKN"
            guard bytes.bigEndianUInt32(at: 10) == 0x4F57_4E0D, bytes[14] == Self.lf else { return nil }  // "OWN\r\n"
            header.length = 15
            return header
        default:
            return nil
        }
        guard let sourcePort = scanPort(&index, end: end, then: Self.space),
            let destinationPort = scanPort(&index, end: end, then: Self.cr),
            index < end, bytes[index] == Self.lf
        else { return nil }
        header.transport = .stream
        header.sourcePort = sourcePort
        header.destinationPort = destinationPort
        header.length = index + 1
        return header
    }

    /// Dotted-quad digits up to `terminator`, which is consumed.
    private func scanIPv4(_ index: inout Int, end: Int, then terminator: UInt8) -> UInt32? {
        var value: UInt32 = 0
        for part in 0..<4 {
            guard let number = scanDecimal(&index, end: end, maximumDigits: 3), number <= 255 else { return nil }
            value = value << 8 | UInt32(number)
            guard index < end, bytes[index] == (part == 3 ? terminator : UInt8(ascii: ".")) else { return nil }
            index &+= 1
        }
        return value
    }

    /// A port up to `terminator`, which is consumed.
    private func scanPort(_ index: inout Int, end: Int, then terminator: UInt8) -> UInt16? {
        guard let number = scanDecimal(&index, end: end, maximumDigits: 5), number <= Int(UInt16.max),
            index < end, bytes[index] == terminator
        else { return nil }
        index &+= 1
        return UInt16(number)
    }

    /// One to `maximumDigits` decimal digits, without a leading zero unless the number is 0.
    @inline(__always)
    private func scanDecimal(_ index: inout Int, end: Int, maximumDigits: Int) -> Int? {
        let start = index
        var value = 0
        while index < end, index &- start < maximumDigits, let digit = decimalDigit(bytes[index]) {
            value = value &* 10 &+ Int(digit)
            index &+= 1
        }
        let digits = index &- start
        guard digits > 0, !(digits > 1 && bytes[start] == UInt8(ascii: "0")) else { return nil }
        return value
    }

    /// An IPv6 address up to a space, which is consumed.
    private func scanIPv6(_ index: inout Int, end: Int) -> ProxyIPv6Address? {
        let start = index
        index = firstSpace(from: index, end: end)
        guard index < end, let address = ProxyIPv6Address.parse(UnsafeRawBufferPointer(rebasing: bytes[start..<index])) else {
            return nil
        }
        index &+= 1
        return address
    }

    /// The offset of the first space at or after `start`, or `end`. Eight bytes at a time: the
    /// lowest byte of a word that is a space sets the lowest flag bit (higher flags may be false).
    private func firstSpace(from start: Int, end: Int) -> Int {
        var index = start
        while index &+ 8 <= end {
            let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)) ^ 0x2020_2020_2020_2020
            let flags = (word &- 0x0101_0101_0101_0101) & ~word & 0x8080_8080_8080_8080
            if flags != 0 { return index &+ flags.trailingZeroBitCount / 8 }
            index &+= 8
        }
        while index < end && bytes[index] != Self.space {
            index &+= 1
        }
        return index
    }

    /// Reads the line field by field: what ``parse()`` falls back to, for exact errors and for
    /// lines that are not complete yet.
    func parseFields() throws(ProxyHeaderError) -> ScannedHeader? {
        let scanEnd = min(bytes.count, limit)
        var textEnd = scanEnd
        var terminator = Terminator.pending
        var index = ProxyHeader.v1Signature.count
        while index < scanEnd {
            let byte = bytes[index]
            if byte == Self.lf {
                textEnd = index
                terminator = .invalid
                break
            }
            if byte == Self.cr {
                textEnd = index
                if index + 1 < scanEnd {
                    terminator = bytes[index + 1] == Self.lf ? .crlf : .invalid
                }
                break
            }
            index += 1
        }
        let line = Line(bytes: bytes, textEnd: textEnd, terminator: terminator)

        func incomplete() throws(ProxyHeaderError) -> ScannedHeader? {
            if scanEnd >= limit { throw ProxyHeaderError(.headerTooLong(limit: limit), at: limit) }
            return nil
        }
        func complete(_ addresses: ScannedHeader.Addresses, _ family: ProxyAddressFamily) -> ScannedHeader {
            var header = ScannedHeader(version: .v1, length: textEnd + 2)
            header.addresses = addresses
            header.family = family
            header.transport = family == .unspecified ? .unspecified : .stream
            return header
        }

        guard let family = try line.field(.protocolFamily, at: ProxyHeader.v1Signature.count) else {
            return try incomplete()
        }
        switch ProxyAddressFamily(v1Name: UnsafeRawBufferPointer(rebasing: bytes[family.range])) {
        case .unspecified:
            // Everything after UNKNOWN up to the CRLF is ignored, as the specification says.
            switch terminator {
            case .crlf: return complete(.none, .unspecified)
            case .invalid: throw ProxyHeaderError(.v1InvalidLineEnding, at: textEnd)
            case .pending: return try incomplete()
            }
        case .inet:
            return try parseAddresses(line, after: family, complete(.inet, .inet), incomplete) { text in
                ProxyIPv4Address.parse(text).map { ProxyIPv6Address(high: 0, low: UInt64($0.rawValue)) }
            }
        case .inet6:
            return try parseAddresses(line, after: family, complete(.inet6, .inet6), incomplete, ProxyIPv6Address.parse)
        case .unix, nil:
            throw ProxyHeaderError(.v1UnknownFamily(line.text(family.range)), at: family.range.lowerBound)
        }
    }

    /// Reads and checks the four fields after the family, each as soon as it is complete, into
    /// `header`. IPv4 addresses are kept in the low 32 bits.
    private func parseAddresses(
        _ line: Line,
        after family: Line.Token,
        _ header: ScannedHeader,
        _ incomplete: () throws(ProxyHeaderError) -> ScannedHeader?,
        _ parseAddress: (UnsafeRawBufferPointer) -> ProxyIPv6Address?
    ) throws(ProxyHeaderError) -> ScannedHeader? {
        var header = header
        var cursor = try line.next(after: family, expecting: .sourceAddress)
        guard let source = try line.field(.sourceAddress, at: cursor) else { return try incomplete() }
        header.source = try line.address(source.range, .sourceAddress, parseAddress)

        cursor = try line.next(after: source, expecting: .destinationAddress)
        guard let destination = try line.field(.destinationAddress, at: cursor) else { return try incomplete() }
        header.destination = try line.address(destination.range, .destinationAddress, parseAddress)

        cursor = try line.next(after: destination, expecting: .sourcePort)
        guard let sourcePort = try line.field(.sourcePort, at: cursor) else { return try incomplete() }
        header.sourcePort = try line.port(sourcePort.range, .sourcePort)

        cursor = try line.next(after: sourcePort, expecting: .destinationPort)
        guard let destinationPort = try line.field(.destinationPort, at: cursor) else { return try incomplete() }
        header.destinationPort = try line.port(destinationPort.range, .destinationPort)
        guard destinationPort.atLineEnd else {
            throw ProxyHeaderError(.v1UnexpectedText, at: destinationPort.range.upperBound)
        }
        return header
    }

    /// The text of the line received so far, up to its terminator.
    private struct Line {
        let bytes: UnsafeRawBufferPointer
        let textEnd: Int
        let terminator: Terminator

        struct Token {
            var range: Range<Int>
            var atLineEnd: Bool
        }

        /// The field starting at `start`, or `nil` if the bytes received end inside it.
        func field(_ field: Field, at start: Int) throws(ProxyHeaderError) -> Token? {
            var index = start
            while index < textEnd && bytes[index] != V1Parser.space {
                index += 1
            }
            let atLineEnd = index == textEnd
            if atLineEnd {
                switch terminator {
                case .crlf: break
                case .invalid: throw ProxyHeaderError(.v1InvalidLineEnding, at: textEnd)
                case .pending: return nil
                }
            }
            if index == start {
                throw ProxyHeaderError(atLineEnd ? .v1MissingField(field) : .v1EmptyField(field), at: start)
            }
            return Token(range: start..<index, atLineEnd: atLineEnd)
        }

        /// Where the field after `token` starts; an error if the line ends there instead.
        func next(after token: Token, expecting field: Field) throws(ProxyHeaderError) -> Int {
            if token.atLineEnd { throw ProxyHeaderError(.v1MissingField(field), at: token.range.upperBound) }
            return token.range.upperBound + 1
        }

        func text(_ range: Range<Int>) -> String {
            String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        }

        func port(_ range: Range<Int>, _ field: Field) throws(ProxyHeaderError) -> UInt16 {
            var value = 0
            let valid = range.count <= 5 && !(range.count > 1 && bytes[range.lowerBound] == UInt8(ascii: "0"))
            if valid {
                for index in range {
                    guard let digit = decimalDigit(bytes[index]) else {
                        throw ProxyHeaderError(.v1InvalidPort(field, text(range)), at: range.lowerBound)
                    }
                    value = value * 10 + Int(digit)
                }
            }
            guard valid, value <= Int(UInt16.max) else {
                throw ProxyHeaderError(.v1InvalidPort(field, text(range)), at: range.lowerBound)
            }
            return UInt16(value)
        }

        func address(
            _ range: Range<Int>, _ field: Field, _ parse: (UnsafeRawBufferPointer) -> ProxyIPv6Address?
        ) throws(ProxyHeaderError) -> ProxyIPv6Address {
            guard let address = parse(UnsafeRawBufferPointer(rebasing: bytes[range])) else {
                throw ProxyHeaderError(.v1InvalidAddress(field, text(range)), at: range.lowerBound)
            }
            return address
        }
    }
}
