/// Why bytes are not a valid PROXY header, and where.
///
/// ``offset`` counts from the first byte of the header. ``description`` is one line fit for a log:
/// `v1 header, byte 11: source address "1.2.3.04" is not a valid IPv4 address`.
public struct ProxyHeaderError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public var kind: Kind
    /// The offset of the offending byte or field, from the start of the header.
    public var offset: Int

    /// Creates an error of `kind` at byte `offset`.
    public init(_ kind: Kind, at offset: Int) {
        self.kind = kind
        self.offset = offset
    }

    /// A field of a header, for errors that name one.
    public enum Field: String, Hashable, Sendable {
        case signature
        case protocolFamily = "protocol family"
        case sourceAddress = "source address"
        case destinationAddress = "destination address"
        case sourcePort = "source port"
        case destinationPort = "destination port"
    }

    /// What is wrong with a TLV's value.
    public enum TLVProblem: Hashable, Sendable, CustomStringConvertible {
        /// The value must be exactly this long.
        case lengthMustBe(Int)
        /// The value must be at most this long.
        case lengthMustBeAtMost(Int)
        /// The value must be at least this long.
        case lengthMustBeAtLeast(Int)
        /// The value must be UTF-8 text.
        case invalidUTF8
        /// The value must be US-ASCII text.
        case notASCII

        public var description: String {
            switch self {
            case .lengthMustBe(let n): return "its length must be \(n)"
            case .lengthMustBeAtMost(let n): return "its length must be at most \(n)"
            case .lengthMustBeAtLeast(let n): return "its length must be at least \(n)"
            case .invalidUTF8: return "it is not valid UTF-8"
            case .notASCII: return "it is not US-ASCII text"
            }
        }
    }

    /// The kinds of error.
    public enum Kind: Hashable, Sendable {
        /// The bytes start neither `PROXY ` nor the version 2 signature.
        case invalidSignature
        /// The header is of a version the receiver does not accept.
        case versionNotAccepted(ProxyVersion)
        /// The header is longer than the receiver's limit (107 for version 1).
        case headerTooLong(limit: Int)

        /// Version 1: a CR not followed by LF, or an LF without a CR.
        case v1InvalidLineEnding
        /// Version 1: a field is empty (two spaces, or a space before the CRLF).
        case v1EmptyField(Field)
        /// Version 1: the line ends where this field should start.
        case v1MissingField(Field)
        /// Version 1: more text after the destination port.
        case v1UnexpectedText
        /// Version 1: the protocol family is not `TCP4`, `TCP6` or `UNKNOWN`.
        case v1UnknownFamily(String)
        /// Version 1: an address is not valid text for the line's family.
        case v1InvalidAddress(Field, String)
        /// Version 1: a port is not decimal 0...65535 without leading zeros.
        case v1InvalidPort(Field, String)

        /// Version 2: the version nibble is not 2.
        case v2UnsupportedVersion(UInt8)
        /// Version 2: the command nibble is neither LOCAL (0) nor PROXY (1).
        case v2UnsupportedCommand(UInt8)
        /// Version 2: the family byte has an unassigned family or transport.
        case v2UnsupportedFamily(UInt8)
        /// Version 2: `len` is shorter than the family's address block.
        case v2AddressBlockTooShort(family: ProxyAddressFamily, required: Int, length: Int)
        /// Version 2: fewer than 3 bytes left for a TLV's type and length.
        case v2TruncatedTLVHeader(remaining: Int)
        /// Version 2: a TLV's value runs past the end of the header (or of its parent TLV).
        case v2TLVOverrun(type: UInt8, length: Int, remaining: Int)
        /// Version 2: a registered TLV has a value its type does not allow.
        case v2InvalidTLV(type: UInt8, TLVProblem)
        /// Version 2: more than one CRC32C TLV.
        case v2DuplicateCRC32C
        /// Version 2: the CRC32C TLV does not match the header.
        case v2ChecksumMismatch(received: UInt32, computed: UInt32)
    }

    public var description: String {
        switch kind {
        case .invalidSignature:
            return "byte \(offset): not a PROXY protocol header (no \"PROXY \" or version 2 signature)"
        case .versionNotAccepted(let version):
            return "byte \(offset): PROXY protocol \(version) headers are not accepted here"
        case .headerTooLong(let limit):
            return "byte \(offset): header longer than \(limit) bytes"
        case .v1InvalidLineEnding:
            return "v1 header, byte \(offset): line must end with CRLF (lone CR or LF)"
        case .v1EmptyField(let field):
            return "v1 header, byte \(offset): empty \(field.rawValue) (fields are separated by exactly one space)"
        case .v1MissingField(let field):
            return "v1 header, byte \(offset): line ends before the \(field.rawValue)"
        case .v1UnexpectedText:
            return "v1 header, byte \(offset): unexpected text after the destination port"
        case .v1UnknownFamily(let text):
            return "v1 header, byte \(offset): protocol family \(quoted(text)) is not TCP4, TCP6 or UNKNOWN"
        case .v1InvalidAddress(let field, let text):
            return "v1 header, byte \(offset): \(field.rawValue) \(quoted(text)) is not a valid address for the family"
        case .v1InvalidPort(let field, let text):
            return "v1 header, byte \(offset): \(field.rawValue) \(quoted(text)) is not a port (0-65535, no leading zeros)"
        case .v2UnsupportedVersion(let byte):
            return "v2 header, byte \(offset): version/command byte 0x\(hex(byte)) has version \(byte >> 4), expected 2"
        case .v2UnsupportedCommand(let byte):
            return "v2 header, byte \(offset): version/command byte 0x\(hex(byte)) has command \(byte & 0xF), expected 0 (LOCAL) or 1 (PROXY)"
        case .v2UnsupportedFamily(let byte):
            return "v2 header, byte \(offset): family byte 0x\(hex(byte)) is not an assigned family and transport"
        case .v2AddressBlockTooShort(let family, let required, let length):
            return "v2 header, byte \(offset): length \(length) is shorter than the \(required)-byte \(family) address block"
        case .v2TruncatedTLVHeader(let remaining):
            return "v2 header, byte \(offset): \(remaining) byte(s) left, too few for a TLV's type and length"
        case .v2TLVOverrun(let type, let length, let remaining):
            return "v2 header, byte \(offset): TLV 0x\(hex(type)) declares \(length) value bytes but only \(remaining) remain"
        case .v2InvalidTLV(let type, let problem):
            return "v2 header, byte \(offset): TLV 0x\(hex(type)) (\(ProxyTLVType(type))) is invalid: \(problem)"
        case .v2DuplicateCRC32C:
            return "v2 header, byte \(offset): second CRC32C TLV"
        case .v2ChecksumMismatch(let received, let computed):
            return "v2 header, byte \(offset): CRC32C mismatch: header says 0x\(hex(received)), computed 0x\(hex(computed))"
        }
    }
}

/// Why a header cannot be encoded.
public struct ProxyHeaderEncodingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kinds of encoding error.
    public enum Kind: Hashable, Sendable {
        /// Version 1 has no `LOCAL` command.
        case v1CannotSendLocal
        /// Version 1 carries only TCP over IPv4 or IPv6, or `UNKNOWN`.
        case v1CannotSend(ProxyAddressFamily, ProxyTransport)
        /// Version 1 has no TLVs.
        case v1CannotSendTLVs
        /// The family or transport does not match the addresses.
        case familyMismatch(family: ProxyAddressFamily, transport: ProxyTransport, addresses: ProxyAddressFamily)
        /// Addresses and TLVs exceed the 65535 bytes that `len` can count.
        case tooLong(length: Int)
    }

    /// What is wrong.
    public var kind: Kind

    /// Creates an error of `kind`.
    public init(_ kind: Kind) { self.kind = kind }

    public var description: String {
        switch kind {
        case .v1CannotSendLocal:
            return "a v1 header cannot carry the LOCAL command"
        case .v1CannotSend(let family, let transport):
            return "a v1 header cannot carry family \(family) with transport \(transport)"
        case .v1CannotSendTLVs:
            return "a v1 header cannot carry TLVs"
        case .familyMismatch(let family, let transport, let addresses):
            return "family \(family) and transport \(transport) do not match \(addresses) addresses"
        case .tooLong(let length):
            return "v2 header body of \(length) bytes exceeds 65535"
        }
    }
}

func hex(_ value: some FixedWidthInteger) -> String {
    let digits = String(value, radix: 16)
    let width = value.bitWidth / 4
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}

/// Quotes untrusted text for a log line, escaping anything that is not printable ASCII.
func quoted(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case " "..."~": result.unicodeScalars.append(scalar)
        default: result += "\\u{\(String(scalar.value, radix: 16))}"
        }
    }
    return result + "\""
}
