/// Parses a version 1 line: `PROXY <family> <src> <dst> <srcport> <dstport>\r\n`.
///
/// The whole line is re-read on every call; it is at most 107 bytes, and re-reading keeps the
/// parser free of state. Fields that are complete are checked at once, so a bad family is
/// reported without waiting for the end of the line.
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

    func parse() throws(ProxyHeaderError) -> ProxyHeaderParseResult {
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

        func incomplete() throws(ProxyHeaderError) -> ProxyHeaderParseResult {
            if scanEnd >= limit { throw ProxyHeaderError(.headerTooLong(limit: limit), at: limit) }
            return .needMoreBytes
        }
        func complete(_ header: ProxyHeader) -> ProxyHeaderParseResult {
            .complete(header, length: textEnd + 2)
        }

        guard let family = try line.field(.protocolFamily, at: ProxyHeader.v1Signature.count) else {
            return try incomplete()
        }
        let familyBytes = bytes[family.range]
        switch ProxyAddressFamily(v1Name: familyBytes) {
        case .unspecified:
            // Everything after UNKNOWN up to the CRLF is ignored, as the specification says.
            switch terminator {
            case .crlf: return complete(.v1Unknown)
            case .invalid: throw ProxyHeaderError(.v1InvalidLineEnding, at: textEnd)
            case .pending: return try incomplete()
            }
        case .inet:
            return try parseAddresses(line, after: family, ProxyIPv4Address.parse, complete, incomplete) {
                .inet(source: .init($0, port: $2), destination: .init($1, port: $3))
            }
        case .inet6:
            return try parseAddresses(line, after: family, ProxyIPv6Address.parse, complete, incomplete) {
                .inet6(source: .init($0, port: $2), destination: .init($1, port: $3))
            }
        case .unix, nil:
            throw ProxyHeaderError(.v1UnknownFamily(line.text(family.range)), at: family.range.lowerBound)
        }
    }

    /// Reads and checks the four fields after the family, each as soon as it is complete.
    private func parseAddresses<Address>(
        _ line: Line,
        after family: Line.Token,
        _ parseAddress: (UnsafeRawBufferPointer) -> Address?,
        _ complete: (ProxyHeader) -> ProxyHeaderParseResult,
        _ incomplete: () throws(ProxyHeaderError) -> ProxyHeaderParseResult,
        _ makeAddresses: (Address, Address, UInt16, UInt16) -> ProxyAddresses
    ) throws(ProxyHeaderError) -> ProxyHeaderParseResult {
        var cursor = try line.next(after: family, expecting: .sourceAddress)
        guard let source = try line.field(.sourceAddress, at: cursor) else { return try incomplete() }
        let sourceAddress = try line.address(source.range, .sourceAddress, parseAddress)

        cursor = try line.next(after: source, expecting: .destinationAddress)
        guard let destination = try line.field(.destinationAddress, at: cursor) else { return try incomplete() }
        let destinationAddress = try line.address(destination.range, .destinationAddress, parseAddress)

        cursor = try line.next(after: destination, expecting: .sourcePort)
        guard let sourcePort = try line.field(.sourcePort, at: cursor) else { return try incomplete() }
        let sourcePortValue = try line.port(sourcePort.range, .sourcePort)

        cursor = try line.next(after: sourcePort, expecting: .destinationPort)
        guard let destinationPort = try line.field(.destinationPort, at: cursor) else { return try incomplete() }
        let destinationPortValue = try line.port(destinationPort.range, .destinationPort)
        guard destinationPort.atLineEnd else {
            throw ProxyHeaderError(.v1UnexpectedText, at: destinationPort.range.upperBound)
        }
        let addresses = makeAddresses(sourceAddress, destinationAddress, sourcePortValue, destinationPortValue)
        return complete(ProxyHeader(version: .v1, addresses: addresses))
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

        func address<Address>(
            _ range: Range<Int>, _ field: Field, _ parse: (UnsafeRawBufferPointer) -> Address?
        ) throws(ProxyHeaderError) -> Address {
            guard let address = parse(UnsafeRawBufferPointer(rebasing: bytes[range])) else {
                throw ProxyHeaderError(.v1InvalidAddress(field, text(range)), at: range.lowerBound)
            }
            return address
        }
    }
}
