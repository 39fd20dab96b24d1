import NIOCore

/// An IPv4 address, stored as its 32 bits in host order.
///
/// Parsing is strict: four decimal parts from 0 to 255, no leading zeros, nothing else.
public struct ProxyIPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The address as a 32-bit number: `192.0.2.1` is `0xC000_0201`.
    public var rawValue: UInt32

    /// Creates an address from its 32-bit value.
    public init(rawValue: UInt32) {
        self.rawValue = rawValue
    }

    /// Creates an address from its four parts, most significant first.
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        self.rawValue = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses dotted-decimal text such as `192.0.2.1`; `nil` if the text is anything else.
    public init?(_ text: some StringProtocol) {
        var text = String(text)
        guard let value = text.withUTF8({ Self.parse(UnsafeRawBufferPointer($0)) }) else { return nil }
        self = value
    }

    /// The four bytes in network order.
    public var bytes: (UInt8, UInt8, UInt8, UInt8) {
        (
            UInt8(truncatingIfNeeded: rawValue >> 24), UInt8(truncatingIfNeeded: rawValue >> 16),
            UInt8(truncatingIfNeeded: rawValue >> 8), UInt8(truncatingIfNeeded: rawValue)
        )
    }

    public var description: String {
        var text = ByteBuffer()
        writeText(into: &text)
        return String(buffer: text)
    }

    /// The most bytes ``writeText(into:)`` writes: `255.255.255.255`.
    package static let maximumTextLength = 15

    /// Writes the dotted-decimal text, without going through `String` (this is on every
    /// connection's JSON).
    package func writeText(into buffer: inout ByteBuffer) {
        buffer.writeASCII(maximumLength: Self.maximumTextLength) { writeText(into: &$0) }
    }

    package func writeText(into writer: inout ASCIIWriter) {
        for shift in stride(from: 24, through: 0, by: -8) {
            writer.appendDecimal(Int(UInt8(truncatingIfNeeded: rawValue >> UInt32(shift))))
            if shift > 0 { writer.append(UInt8(ascii: ".")) }
        }
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    /// Parses dotted-decimal ASCII without allocating.
    static func parse(_ text: UnsafeRawBufferPointer) -> ProxyIPv4Address? {
        var value: UInt32 = 0
        var part: UInt32 = 0
        var digits = 0
        var parts = 0
        for byte in text {
            if byte == UInt8(ascii: ".") {
                guard digits > 0, parts < 3 else { return nil }
                value = value << 8 | part
                parts += 1
                part = 0
                digits = 0
            } else if let digit = decimalDigit(byte) {
                // A part is "0" or starts with a non-zero digit.
                if digits == 1 && part == 0 { return nil }
                part = part * 10 + UInt32(digit)
                digits += 1
                guard part <= 255 else { return nil }
            } else {
                return nil
            }
        }
        guard digits > 0, parts == 3 else { return nil }
        return ProxyIPv4Address(rawValue: value << 8 | part)
    }
}

/// An IPv6 address, stored as its 128 bits.
///
/// Parsing accepts RFC 4291 text (hexadecimal groups, one `::`, an optional dotted IPv4 tail) and
/// rejects zone identifiers. ``description`` is the RFC 5952 canonical form.
public struct ProxyIPv6Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The first 64 bits.
    public var high: UInt64
    /// The last 64 bits.
    public var low: UInt64

    /// Creates an address from its two 64-bit halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Parses RFC 4291 text such as `2001:db8::1`; `nil` if the text is anything else.
    public init?(_ text: some StringProtocol) {
        var text = String(text)
        guard let value = text.withUTF8({ Self.parse(UnsafeRawBufferPointer($0)) }) else { return nil }
        self = value
    }

    /// The IPv4-mapped address `::ffff:a.b.c.d` of an IPv4 address.
    public init(ipv4Mapped address: ProxyIPv4Address) {
        self.init(high: 0, low: 0x0000_FFFF_0000_0000 | UInt64(address.rawValue))
    }

    /// The IPv4 address this address maps, if it is in `::ffff:0:0/96`.
    public var ipv4Mapped: ProxyIPv4Address? {
        guard high == 0, low >> 32 == 0x0000_FFFF else { return nil }
        return ProxyIPv4Address(rawValue: UInt32(truncatingIfNeeded: low))
    }

    /// The sixteen-bit group at `index` (0 to 7), most significant first.
    public func group(_ index: Int) -> UInt16 {
        precondition((0..<8).contains(index), "an IPv6 address has 8 groups")
        let half = index < 4 ? high : low
        return UInt16(truncatingIfNeeded: half >> (UInt64(3 - index % 4) * 16))
    }

    public var description: String {
        var text = ByteBuffer()
        writeText(into: &text)
        return String(buffer: text)
    }

    /// The most bytes ``writeText(into:)`` writes: eight groups of four digits and seven colons.
    package static let maximumTextLength = 39

    /// Writes the RFC 5952 text, without going through `String` (this is on every connection's
    /// JSON).
    package func writeText(into buffer: inout ByteBuffer) {
        buffer.writeASCII(maximumLength: Self.maximumTextLength) { writeText(into: &$0) }
    }

    package func writeText(into writer: inout ASCIIWriter) {
        if let v4 = ipv4Mapped {
            writer.append("::ffff:")
            v4.writeText(into: &writer)
            return
        }
        // RFC 5952: compress the longest run of two or more zero groups, the first one on a tie.
        var bestStart = -1
        var bestLength = 1
        var runStart = -1
        for index in 0...8 {
            if index < 8 && group(index) == 0 {
                if runStart < 0 { runStart = index }
            } else if runStart >= 0 {
                if index - runStart > bestLength {
                    bestStart = runStart
                    bestLength = index - runStart
                }
                runStart = -1
            }
        }
        var index = 0
        var afterSeparator = true
        while index < 8 {
            if index == bestStart {
                writer.append("::")
                afterSeparator = true
                index += bestLength
                continue
            }
            if !afterSeparator { writer.append(UInt8(ascii: ":")) }
            let group = group(index)
            var started = false
            for shift in stride(from: 12, through: 0, by: -4) {
                let digit = UInt8(truncatingIfNeeded: group >> UInt16(shift)) & 0xF
                if digit == 0 && !started && shift > 0 { continue }
                started = true
                writer.append(digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10)
            }
            afterSeparator = false
            index += 1
        }
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    /// Parses RFC 4291 text without allocating.
    static func parse(_ text: UnsafeRawBufferPointer) -> ProxyIPv6Address? {
        // Index arithmetic wraps (&+): the bounds make overflow impossible, and the checks cost.
        // Groups are shifted in from the right; at a "::" the groups so far are set aside, and
        // at the end they are shifted to the top (every version 1 TCP6 header takes this path).
        var high: UInt64 = 0
        var low: UInt64 = 0
        var head = (high: UInt64(0), low: UInt64(0))
        var count = 0
        var compressionAt = -1
        var index = 0
        let end = text.count
        func append(_ group: UInt16) {
            high = high << 16 | low >> 48
            low = low << 16 | UInt64(group)
            count &+= 1
        }
        if end >= 2 && text[0] == UInt8(ascii: ":") && text[1] == UInt8(ascii: ":") {
            compressionAt = 0
            index = 2
        } else if end == 0 || text[0] == UInt8(ascii: ":") {
            return nil
        }
        while index < end {
            let start = index
            var group: UInt16 = 0
            while index < end, index &- start < 5, let digit = hexDigit(text[index]) {
                group = group &<< 4 | UInt16(digit)
                index &+= 1
            }
            if index < end && text[index] == UInt8(ascii: ".") {
                // A dotted IPv4 tail fills the last two groups.
                guard count <= 6, let v4 = ProxyIPv4Address.parse(UnsafeRawBufferPointer(rebasing: text[start..<end])) else {
                    return nil
                }
                append(UInt16(truncatingIfNeeded: v4.rawValue >> 16))
                append(UInt16(truncatingIfNeeded: v4.rawValue))
                break
            }
            let digits = index &- start
            guard digits >= 1, digits <= 4, count < 8 else { return nil }
            append(group)
            if index == end { break }
            guard text[index] == UInt8(ascii: ":") else { return nil }
            index &+= 1
            guard index < end else { return nil }
            if text[index] == UInt8(ascii: ":") {
                guard compressionAt < 0 else { return nil }
                compressionAt = count
                head = (high, low)
                (high, low) = (0, 0)
                index &+= 1
            }
        }
        guard compressionAt >= 0 else {
            return count == 8 ? ProxyIPv6Address(high: high, low: low) : nil
        }
        // "::" stands for at least one group of zeros.
        guard count <= 7 else { return nil }
        // The groups before "::" move to the top: shifted left by 16 bits per group after them.
        let shift = (8 - compressionAt) * 16
        if shift >= 128 {
            return ProxyIPv6Address(high: high, low: low)
        } else if shift >= 64 {
            return ProxyIPv6Address(high: high | head.low << (shift - 64), low: low)
        } else {
            return ProxyIPv6Address(high: high | head.high << shift | head.low >> (64 - shift), low: low | head.low << shift)
        }
    }
}

/// An IPv4 or an IPv6 address.
public enum ProxyIPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(ProxyIPv4Address)
    case v6(ProxyIPv6Address)

    /// Parses IPv4 dotted-decimal or IPv6 RFC 4291 text; `nil` if the text is neither.
    public init?(_ text: some StringProtocol) {
        if let v4 = ProxyIPv4Address(text) {
            self = .v4(v4)
        } else if let v6 = ProxyIPv6Address(text) {
            self = .v6(v6)
        } else {
            return nil
        }
    }

    /// IPv4 text, or the RFC 5952 canonical form for IPv6.
    public var description: String {
        switch self {
        case .v4(let address): return address.description
        case .v6(let address): return address.description
        }
    }

    /// The address with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into plain IPv4.
    public var unmapped: ProxyIPAddress {
        if case .v6(let address) = self, let v4 = address.ipv4Mapped { return .v4(v4) }
        return self
    }
}

@inline(__always)
func decimalDigit(_ byte: UInt8) -> UInt8? {
    byte &- UInt8(ascii: "0") < 10 ? byte &- UInt8(ascii: "0") : nil
}

@inline(__always)
func hexDigit(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}
