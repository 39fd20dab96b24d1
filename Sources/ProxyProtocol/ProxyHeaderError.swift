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
    ///
    /// A struct rather than an enum, like ``Kind``, so that a new field is not a breaking change:
    /// compare with `==`, and read ``description`` for the words.
    public struct Field: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case signature
            case protocolFamily = "protocol family"
            case sourceAddress = "source address"
            case destinationAddress = "destination address"
            case sourcePort = "source port"
            case destinationPort = "destination port"
        }

        private var base: Base

        private init(_ base: Base) { self.base = base }

        /// The signature that starts the header.
        public static let signature = Field(.signature)
        /// Version 1's protocol family: `TCP4`, `TCP6` or `UNKNOWN`.
        public static let protocolFamily = Field(.protocolFamily)
        /// The client's address.
        public static let sourceAddress = Field(.sourceAddress)
        /// The address the client connected to.
        public static let destinationAddress = Field(.destinationAddress)
        /// The client's port.
        public static let sourcePort = Field(.sourcePort)
        /// The port the client connected to.
        public static let destinationPort = Field(.destinationPort)

        /// The field's name in words, such as `source address`.
        public var description: String { base.rawValue }
    }

    /// What is wrong with a TLV's value.
    ///
    /// A struct rather than an enum, so that a new problem is not a breaking change: compare
    /// with `==`, and read ``description`` for the words.
    public struct TLVProblem: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case lengthMustBe(Int)
            case lengthMustBeAtMost(Int)
            case lengthMustBeAtLeast(Int)
            case invalidUTF8
            case notASCII
        }

        private var base: Base

        private init(_ base: Base) { self.base = base }

        /// The value must be exactly `length` bytes long.
        public static func lengthMustBe(_ length: Int) -> TLVProblem { TLVProblem(.lengthMustBe(length)) }
        /// The value must be at most `length` bytes long.
        public static func lengthMustBeAtMost(_ length: Int) -> TLVProblem { TLVProblem(.lengthMustBeAtMost(length)) }
        /// The value must be at least `length` bytes long.
        public static func lengthMustBeAtLeast(_ length: Int) -> TLVProblem { TLVProblem(.lengthMustBeAtLeast(length)) }
        /// The value must be UTF-8 text.
        public static let invalidUTF8 = TLVProblem(.invalidUTF8)
        /// The value must be US-ASCII text.
        public static let notASCII = TLVProblem(.notASCII)

        public var description: String {
            switch base {
            case .lengthMustBe(let n): return "its length must be \(n)"
            case .lengthMustBeAtMost(let n): return "its length must be at most \(n)"
            case .lengthMustBeAtLeast(let n): return "its length must be at least \(n)"
            case .invalidUTF8: return "it is not valid UTF-8"
            case .notASCII: return "it is not US-ASCII text"
            }
        }
    }

    /// The kinds of error.
    ///
    /// A struct rather than an enum, the way SwiftNIO spells its errors, so that a new kind is
    /// not a breaking change: compare kinds (or whole errors) with `==`, which takes the details
    /// into account, and read ``ProxyHeaderError/description`` for the words.
    public struct Kind: Hashable, Sendable {
        fileprivate enum Base: Hashable, Sendable {
            case invalidSignature
            case versionNotAccepted(ProxyVersion)
            case headerTooLong(limit: Int)
            case v1InvalidLineEnding
            case v1EmptyField(Field)
            case v1MissingField(Field)
            case v1UnexpectedText
            case v1UnknownFamily(String)
            case v1InvalidAddress(Field, String)
            case v1InvalidPort(Field, String)
            case v2UnsupportedVersion(UInt8)
            case v2UnsupportedCommand(UInt8)
            case v2UnsupportedFamily(UInt8)
            case v2AddressBlockTooShort(family: ProxyAddressFamily, required: Int, length: Int)
            case v2TruncatedTLVHeader(remaining: Int)
            case v2TLVOverrun(type: UInt8, length: Int, remaining: Int)
            case v2InvalidTLV(type: UInt8, TLVProblem)
            case v2DuplicateCRC32C
            case v2ChecksumMismatch(received: UInt32, computed: UInt32)
        }

        fileprivate var base: Base

        private init(_ base: Base) { self.base = base }

        /// The bytes start neither `PROXY ` nor the version 2 signature.
        public static let invalidSignature = Kind(.invalidSignature)
        /// The header is of a version the receiver does not accept.
        public static func versionNotAccepted(_ version: ProxyVersion) -> Kind { Kind(.versionNotAccepted(version)) }
        /// The header is longer than the receiver's limit (107 for version 1).
        public static func headerTooLong(limit: Int) -> Kind { Kind(.headerTooLong(limit: limit)) }

        /// Version 1: a CR not followed by LF, or an LF without a CR.
        public static let v1InvalidLineEnding = Kind(.v1InvalidLineEnding)
        /// Version 1: a field is empty (two spaces, or a space before the CRLF).
        public static func v1EmptyField(_ field: Field) -> Kind { Kind(.v1EmptyField(field)) }
        /// Version 1: the line ends where this field should start.
        public static func v1MissingField(_ field: Field) -> Kind { Kind(.v1MissingField(field)) }
        /// Version 1: more text after the destination port.
        public static let v1UnexpectedText = Kind(.v1UnexpectedText)
        /// Version 1: the protocol family is not `TCP4`, `TCP6` or `UNKNOWN`.
        public static func v1UnknownFamily(_ text: String) -> Kind { Kind(.v1UnknownFamily(text)) }
        /// Version 1: an address is not valid text for the line's family.
        public static func v1InvalidAddress(_ field: Field, _ text: String) -> Kind { Kind(.v1InvalidAddress(field, text)) }
        /// Version 1: a port is not decimal 0...65535 without leading zeros.
        public static func v1InvalidPort(_ field: Field, _ text: String) -> Kind { Kind(.v1InvalidPort(field, text)) }

        /// Version 2: the version nibble is not 2.
        public static func v2UnsupportedVersion(_ byte: UInt8) -> Kind { Kind(.v2UnsupportedVersion(byte)) }
        /// Version 2: the command nibble is neither LOCAL (0) nor PROXY (1).
        public static func v2UnsupportedCommand(_ byte: UInt8) -> Kind { Kind(.v2UnsupportedCommand(byte)) }
        /// Version 2: the family byte has an unassigned family or transport.
        public static func v2UnsupportedFamily(_ byte: UInt8) -> Kind { Kind(.v2UnsupportedFamily(byte)) }
        /// Version 2: `len` is shorter than the family's address block.
        public static func v2AddressBlockTooShort(family: ProxyAddressFamily, required: Int, length: Int) -> Kind {
            Kind(.v2AddressBlockTooShort(family: family, required: required, length: length))
        }
        /// Version 2: fewer than 3 bytes left for a TLV's type and length.
        public static func v2TruncatedTLVHeader(remaining: Int) -> Kind { Kind(.v2TruncatedTLVHeader(remaining: remaining)) }
        /// Version 2: a TLV's value runs past the end of the header (or of its parent TLV).
        public static func v2TLVOverrun(type: UInt8, length: Int, remaining: Int) -> Kind {
            Kind(.v2TLVOverrun(type: type, length: length, remaining: remaining))
        }
        /// Version 2: a registered TLV has a value its type does not allow.
        public static func v2InvalidTLV(type: UInt8, _ problem: TLVProblem) -> Kind { Kind(.v2InvalidTLV(type: type, problem)) }
        /// Version 2: more than one CRC32C TLV.
        public static let v2DuplicateCRC32C = Kind(.v2DuplicateCRC32C)
        /// Version 2: the CRC32C TLV does not match the header.
        public static func v2ChecksumMismatch(received: UInt32, computed: UInt32) -> Kind {
            Kind(.v2ChecksumMismatch(received: received, computed: computed))
        }
    }

    public var description: String {
        switch kind.base {
        case .invalidSignature:
            return "byte \(offset): not a PROXY protocol header (no \"PROXY \" or version 2 signature)"
        case .versionNotAccepted(let version):
            return "byte \(offset): PROXY protocol \(version) headers are not accepted here"
        case .headerTooLong(let limit):
            return "byte \(offset): header longer than \(limit) bytes"
        case .v1InvalidLineEnding:
            return "v1 header, byte \(offset): line must end with CRLF (lone CR or LF)"
        case .v1EmptyField(let field):
            return "v1 header, byte \(offset): empty \(field) (fields are separated by exactly one space)"
        case .v1MissingField(let field):
            return "v1 header, byte \(offset): line ends before the \(field)"
        case .v1UnexpectedText:
            return "v1 header, byte \(offset): unexpected text after the destination port"
        case .v1UnknownFamily(let text):
            return "v1 header, byte \(offset): protocol family \(quoted(text)) is not TCP4, TCP6 or UNKNOWN"
        case .v1InvalidAddress(let field, let text):
            return "v1 header, byte \(offset): \(field) \(quoted(text)) is not a valid address for the family"
        case .v1InvalidPort(let field, let text):
            return "v1 header, byte \(offset): \(field) \(quoted(text)) is not a port (0-65535, no leading zeros)"
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
    ///
    /// A struct rather than an enum, like ``ProxyHeaderError/Kind``, so that a new kind is not a
    /// breaking change: compare with `==`, and read ``ProxyHeaderEncodingError/description``.
    public struct Kind: Hashable, Sendable {
        fileprivate enum Base: Hashable, Sendable {
            case v1CannotSendLocal
            case v1CannotSend(ProxyAddressFamily, ProxyTransport)
            case v1CannotSendTLVs
            case familyMismatch(family: ProxyAddressFamily, transport: ProxyTransport, addresses: ProxyAddressFamily)
            case tooLong(length: Int)
            case tlvValueTooLong(type: ProxyTLVType, length: Int, maximum: Int)
            case unixAddressTooLong(length: Int)
            case tlvsTooLong(length: Int, maximum: Int)
        }

        fileprivate var base: Base

        private init(_ base: Base) { self.base = base }

        /// Version 1 has no `LOCAL` command.
        public static let v1CannotSendLocal = Kind(.v1CannotSendLocal)
        /// Version 1 carries only TCP over IPv4 or IPv6, or `UNKNOWN`.
        public static func v1CannotSend(_ family: ProxyAddressFamily, _ transport: ProxyTransport) -> Kind {
            Kind(.v1CannotSend(family, transport))
        }
        /// Version 1 has no TLVs.
        public static let v1CannotSendTLVs = Kind(.v1CannotSendTLVs)
        /// The family or transport does not match the addresses.
        public static func familyMismatch(
            family: ProxyAddressFamily, transport: ProxyTransport, addresses: ProxyAddressFamily
        ) -> Kind {
            Kind(.familyMismatch(family: family, transport: transport, addresses: addresses))
        }
        /// Addresses and TLVs exceed the 65535 bytes that `len` can count.
        public static func tooLong(length: Int) -> Kind { Kind(.tooLong(length: length)) }
        /// A TLV's value of `length` bytes is longer than the `maximum` its type allows
        /// (``ProxyTLV/maximumValueLength`` for any type).
        public static func tlvValueTooLong(type: ProxyTLVType, length: Int, maximum: Int) -> Kind {
            Kind(.tlvValueTooLong(type: type, length: length, maximum: maximum))
        }
        /// A UNIX address of `length` bytes is longer than its ``ProxyUnixAddress/fieldLength``.
        public static func unixAddressTooLong(length: Int) -> Kind { Kind(.unixAddressTooLong(length: length)) }
        /// TLVs of `length` bytes, a CRC32C TLV to append included, are longer than the `maximum`
        /// a version 2 header leaves them beside the largest addresses it may carry.
        public static func tlvsTooLong(length: Int, maximum: Int) -> Kind { Kind(.tlvsTooLong(length: length, maximum: maximum)) }
    }

    /// What is wrong.
    public var kind: Kind

    /// Creates an error of `kind`.
    public init(_ kind: Kind) { self.kind = kind }

    public var description: String {
        switch kind.base {
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
        case .tlvValueTooLong(let type, let length, let maximum):
            return "TLV \(type) value of \(length) bytes is \(length - maximum) over its maximum of \(maximum)"
        case .tlvsTooLong(let length, let maximum):
            return "TLVs of \(length) bytes are \(length - maximum) over the maximum of \(maximum) that a v2 header with IPv6 addresses leaves them"
        case .unixAddressTooLong(let length):
            return "UNIX address of \(length) bytes is \(length - ProxyUnixAddress.fieldLength) over its maximum of \(ProxyUnixAddress.fieldLength)"
        }
    }
}

package func hex(_ value: some FixedWidthInteger) -> String {
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
