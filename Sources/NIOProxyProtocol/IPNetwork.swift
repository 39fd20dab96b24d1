import ProxyProtocol

/// An IP network in CIDR notation, such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a
/// network of one.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    /// The network address (host bits zero).
    public let address: ProxyIPAddress
    /// The number of leading bits that must match: 0...32 for IPv4, 0...128 for IPv6.
    public let prefixLength: Int

    /// Parses `address` or `address/prefix`. Host bits must be zero (`10.0.0.1/8` is an error
    /// that suggests `10.0.0.0/8`), so a typo cannot silently widen or move the network.
    public init(_ text: String) throws(IPNetworkParseError) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = ProxyIPAddress(parts[0]) else {
            throw IPNetworkParseError(entry: text, reason: .invalidAddress(String(parts[0])))
        }
        let width = address.bitWidth
        var prefixLength = width
        if parts.count == 2 {
            let digits = parts[1]
            guard let length = Int(digits), digits.allSatisfy(\.isASCII), digits.first != "+",
                !(digits.count > 1 && digits.first == "0"), (0...width).contains(length)
            else {
                throw IPNetworkParseError(entry: text, reason: .invalidPrefixLength(String(digits), maximum: width))
            }
            prefixLength = length
        }
        let network = address.masked(to: prefixLength)
        guard network == address else {
            throw IPNetworkParseError(entry: text, reason: .hostBitsSet(suggestion: "\(network)/\(prefixLength)"))
        }
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Whether `candidate` is in the network. An IPv4 network also matches the IPv4-mapped IPv6
    /// form of its addresses (`::ffff:a.b.c.d`), as dual-stack listeners report IPv4 peers.
    public func contains(_ candidate: ProxyIPAddress) -> Bool {
        // Compare in the network's own family: IPv4 candidates are mapped for IPv6 networks,
        // mapped IPv6 candidates unmapped for IPv4 networks.
        switch (address, candidate.unmapped) {
        case (.v4, .v4(let v4)): return ProxyIPAddress.v4(v4).masked(to: prefixLength) == address
        case (.v6, .v4(let v4)): return ProxyIPAddress.v6(ProxyIPv6Address(ipv4Mapped: v4)).masked(to: prefixLength) == address
        case (.v6, .v6(let v6)): return ProxyIPAddress.v6(v6).masked(to: prefixLength) == address
        case (.v4, .v6): return false
        }
    }

    /// Whether some address is in both networks: one contains the other's first address
    /// (IPv4 and IPv4-mapped IPv6 compared as with ``contains(_:)``).
    public func overlaps(_ other: IPNetwork) -> Bool {
        contains(other.address) || other.contains(address)
    }

    public var description: String {
        prefixLength == address.bitWidth ? address.description : "\(address)/\(prefixLength)"
    }
}

/// Why a trusted-proxy entry is not an address or a CIDR network.
public struct IPNetworkParseError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong with the entry.
    ///
    /// A struct rather than an enum, like `ProxyHeaderError.Kind` (in ProxyProtocol), so that a new reason is not a
    /// breaking change: compare with `==`, which takes the details into account, and read
    /// ``description`` for the words.
    public struct Reason: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case invalidAddress(String)
            case invalidPrefixLength(String, maximum: Int)
            case hostBitsSet(suggestion: String)
        }

        private var base: Base

        private init(_ base: Base) { self.base = base }

        /// The address part, `text`, is neither IPv4 nor IPv6 text.
        public static func invalidAddress(_ text: String) -> Reason { Reason(.invalidAddress(text)) }
        /// The prefix length, `text`, is not a number from 0 to `maximum`, the address width.
        public static func invalidPrefixLength(_ text: String, maximum: Int) -> Reason {
            Reason(.invalidPrefixLength(text, maximum: maximum))
        }
        /// The address has bits set past the prefix; `suggestion` is the network meant, most
        /// likely.
        public static func hostBitsSet(suggestion: String) -> Reason { Reason(.hostBitsSet(suggestion: suggestion)) }

        public var description: String {
            switch base {
            case .invalidAddress(let text):
                return "\"\(text)\" is not an IPv4 or IPv6 address"
            case .invalidPrefixLength(let text, let maximum):
                return "prefix length \"\(text)\" is not a number from 0 to \(maximum)"
            case .hostBitsSet(let suggestion):
                return "address has bits set beyond the prefix; did you mean \(suggestion)?"
            }
        }
    }

    /// The entry as it was written.
    public var entry: String
    /// What is wrong with it.
    public var reason: Reason

    /// Creates an error for `entry`.
    public init(entry: String, reason: Reason) {
        self.entry = entry
        self.reason = reason
    }

    /// The entry and what is wrong with it: `"10.0.0.1/8": address has bits set beyond the
    /// prefix; did you mean 10.0.0.0/8?`.
    public var description: String { "\"\(entry)\": \(reason)" }
}

extension ProxyIPAddress {
    var bitWidth: Int {
        if case .v4 = self { return 32 }
        return 128
    }

    /// The address with all bits after the first `prefixLength` cleared.
    func masked(to prefixLength: Int) -> ProxyIPAddress {
        switch self {
        case .v4(let v4):
            let mask: UInt32 = prefixLength == 0 ? 0 : ~0 << (32 - prefixLength)
            return .v4(ProxyIPv4Address(rawValue: v4.rawValue & mask))
        case .v6(let v6):
            func mask(_ bits: Int) -> UInt64 { bits <= 0 ? 0 : bits >= 64 ? ~0 : ~0 << (64 - bits) }
            return .v6(ProxyIPv6Address(high: v6.high & mask(prefixLength), low: v6.low & mask(prefixLength - 64)))
        }
    }
}
