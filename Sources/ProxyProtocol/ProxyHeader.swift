import NIOCore

/// A PROXY protocol header: what a proxy says about the connection it forwards.
///
/// One value describes both versions. Version 1 carries `PROXY` commands for TCP over IPv4 or
/// IPv6, or `UNKNOWN`; version 2 adds `LOCAL`, UDP, UNIX sockets and TLVs.
///
/// ```swift
/// let header = try ProxyHeader(
///     version: .v2,
///     addresses: .inet(source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 51234),
///                      destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)),
///     tlvs: [.authority("example.com")]
/// )
/// var bytes = ByteBuffer()
/// try header.encode(into: &bytes, appendingCRC32C: true)
/// ```
public struct ProxyHeader: Hashable, Sendable {
    /// The version of the header on the wire.
    public var version: ProxyVersion
    /// `PROXY` for a relayed connection, `LOCAL` for one the proxy made itself (health checks).
    public var command: ProxyCommand
    /// The address family the header announces.
    public var family: ProxyAddressFamily
    /// The transport the header announces.
    public var transport: ProxyTransport
    /// The original endpoints, or ``ProxyAddresses/unspecified`` when the receiver must use the
    /// socket's own (`LOCAL`, `UNKNOWN`, `UNSPEC`).
    public var addresses: ProxyAddresses
    /// The version 2 type-length-value extensions, in the order they came.
    public var tlvs: ProxyTLVs

    /// Creates a header whose family and transport follow from `addresses`.
    ///
    /// IP and UNIX addresses get ``ProxyTransport/stream`` unless `transport` says otherwise;
    /// ``ProxyAddresses/unspecified`` gets ``ProxyAddressFamily/unspecified`` and
    /// ``ProxyTransport/unspecified``.
    public init(
        version: ProxyVersion,
        command: ProxyCommand = .proxy,
        addresses: ProxyAddresses,
        transport: ProxyTransport = .stream,
        tlvs: ProxyTLVs = ProxyTLVs()
    ) {
        self.version = version
        self.command = command
        self.addresses = addresses
        self.family = addresses.family
        self.transport = addresses.family == .unspecified ? .unspecified : transport
        self.tlvs = tlvs
    }

    /// Creates a header from all of its parts, as the parser does.
    ///
    /// The parts may disagree (a family with unspecified addresses); ``encode(into:appendingCRC32C:)``
    /// rejects such a header rather than send it.
    public init(
        version: ProxyVersion,
        command: ProxyCommand,
        family: ProxyAddressFamily,
        transport: ProxyTransport,
        addresses: ProxyAddresses,
        tlvs: ProxyTLVs
    ) {
        self.version = version
        self.command = command
        self.family = family
        self.transport = transport
        self.addresses = addresses
        self.tlvs = tlvs
    }

    /// A version 2 `LOCAL` header: the proxy's own connection, such as a health check.
    public static let local = ProxyHeader(version: .v2, command: .local, addresses: .unspecified)

    /// The version 1 `PROXY UNKNOWN` header.
    public static let v1Unknown = ProxyHeader(version: .v1, addresses: .unspecified)

    /// The longest version 1 header, CRLF included.
    public static let maximumV1Length = 107
    /// The longest version 2 header: 16 fixed bytes and a 65535-byte body.
    public static let maximumV2Length = 16 + 65535
    /// The length of the fixed part of a version 2 header.
    public static let v2FixedLength = 16

    /// The 12-byte signature that starts every version 2 header.
    public static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// The 6 bytes that start every version 1 header: `PROXY` and a space.
    public static let v1Signature: [UInt8] = Array("PROXY ".utf8)

    /// The client: the original source endpoint, when the header carries IP addresses.
    public var source: ProxyEndpoint? { addresses.source }
    /// The address the client connected to, when the header carries IP addresses.
    public var destination: ProxyEndpoint? { addresses.destination }
}

/// The PROXY protocol version.
public enum ProxyVersion: Int, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// The human-readable text header.
    case v1 = 1
    /// The binary header.
    case v2 = 2

    public var description: String { "v\(rawValue)" }
}

/// A set of PROXY protocol versions, for a receiver that accepts only some.
public struct ProxyVersions: OptionSet, Hashable, Sendable {
    /// Bit 0: version 1; bit 1: version 2.
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Version 1 (text).
    public static let v1 = ProxyVersions(rawValue: 1)
    /// Version 2 (binary).
    public static let v2 = ProxyVersions(rawValue: 2)
    /// Both versions.
    public static let all: ProxyVersions = [.v1, .v2]

    /// Whether `version` is in the set.
    public func contains(_ version: ProxyVersion) -> Bool {
        contains(ProxyVersions(rawValue: UInt8(version.rawValue)))
    }
}

/// The command of a header.
public enum ProxyCommand: UInt8, Hashable, Sendable, CustomStringConvertible {
    /// The proxy made the connection itself; the receiver uses the socket's endpoints.
    case local = 0x0
    /// The proxy relays a client's connection; the header carries the client's endpoints.
    case proxy = 0x1

    public var description: String { self == .proxy ? "PROXY" : "LOCAL" }
}

/// The address family of a header (the high nibble of version 2's family byte).
public enum ProxyAddressFamily: UInt8, Hashable, Sendable, CustomStringConvertible {
    case unspecified = 0x0
    /// IPv4.
    case inet = 0x1
    /// IPv6.
    case inet6 = 0x2
    /// UNIX sockets.
    case unix = 0x3

    public var description: String {
        switch self {
        case .unspecified: return "UNSPEC"
        case .inet: return "INET"
        case .inet6: return "INET6"
        case .unix: return "UNIX"
        }
    }

    /// The size of this family's address block in a version 2 header.
    public var addressBlockLength: Int {
        switch self {
        case .unspecified: return 0
        case .inet: return 12
        case .inet6: return 36
        case .unix: return 216
        }
    }
}

extension ProxyAddressFamily {
    /// The family a version 1 line names with `bytes`; `nil` for anything else. Compared as
    /// integers: this is on every version 1 parse.
    init?(v1Name bytes: UnsafeRawBufferPointer) {
        switch bytes.count {
        case 4 where bytes.bigEndianUInt32(at: 0) == 0x5443_5034:  // TCP4
            self = .inet
        case 4 where bytes.bigEndianUInt32(at: 0) == 0x5443_5036:  // TCP6
            self = .inet6
        case 7 where bytes.bigEndianUInt32(at: 0) == 0x554E_4B4E && bytes.bigEndianUInt32(at: 3) == 0x4E4F_574E:  // UNKNOWN
            self = .unspecified
        default:
            return nil
        }
    }

    /// How a version 1 line names the family: `TCP4`, `TCP6`, or `UNKNOWN` for the others.
    package var v1Name: String {
        switch self {
        case .inet: return "TCP4"
        case .inet6: return "TCP6"
        case .unspecified, .unix: return "UNKNOWN"
        }
    }
}

/// The transport of a header (the low nibble of version 2's family byte).
public enum ProxyTransport: UInt8, Hashable, Sendable, CustomStringConvertible {
    case unspecified = 0x0
    /// TCP or a UNIX stream socket.
    case stream = 0x1
    /// UDP or a UNIX datagram socket.
    case datagram = 0x2

    public var description: String {
        switch self {
        case .unspecified: return "UNSPEC"
        case .stream: return "STREAM"
        case .datagram: return "DGRAM"
        }
    }
}

/// An IP address and a port.
public struct ProxyEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// The IP address.
    public var address: ProxyIPAddress
    /// The port.
    public var port: UInt16

    /// Creates an endpoint.
    public init(_ address: ProxyIPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// `192.0.2.1:80` or `[2001:db8::1]:80`.
    public var description: String {
        switch address {
        case .v4(let v4): return "\(v4):\(port)"
        case .v6(let v6): return "[\(v6)]:\(port)"
        }
    }
}

/// An IPv4 address and a port.
public struct ProxyIPv4Endpoint: Hashable, Sendable {
    /// The IPv4 address.
    public var address: ProxyIPv4Address
    /// The port.
    public var port: UInt16
    /// Creates an endpoint.
    public init(_ address: ProxyIPv4Address, port: UInt16) {
        self.address = address
        self.port = port
    }
}

/// An IPv6 address and a port.
public struct ProxyIPv6Endpoint: Hashable, Sendable {
    /// The IPv6 address.
    public var address: ProxyIPv6Address
    /// The port.
    public var port: UInt16
    /// Creates an endpoint.
    public init(_ address: ProxyIPv6Address, port: UInt16) {
        self.address = address
        self.port = port
    }
}

/// A UNIX socket address from a version 2 header: up to 108 bytes, without the NUL padding.
///
/// A path that starts with a NUL byte is a Linux abstract socket name; its bytes are kept as they
/// came, so nothing is lost in a round trip. The bytes are read-only: the initializers check
/// their length, so an address always fits its field.
public struct ProxyUnixAddress: Hashable, Sendable, CustomStringConvertible {
    /// The address bytes, without trailing NUL padding: at most ``fieldLength``, set only by an
    /// initializer.
    public private(set) var bytes: ByteBuffer

    /// The size of the address field on the wire.
    public static let fieldLength = 108

    /// Creates an address from its bytes.
    ///
    /// - Throws: ``ProxyHeaderEncodingError/Kind/unixAddressTooLong(length:)`` when there are
    ///   more than ``fieldLength`` bytes.
    public init(bytes: ByteBuffer) throws(ProxyHeaderEncodingError) {
        guard bytes.readableBytes <= Self.fieldLength else {
            throw ProxyHeaderEncodingError(.unixAddressTooLong(length: bytes.readableBytes))
        }
        self.init(validatedBytes: bytes)
    }

    /// Creates an address from a path.
    ///
    /// - Throws: ``ProxyHeaderEncodingError/Kind/unixAddressTooLong(length:)`` when the path has
    ///   more than ``fieldLength`` UTF-8 bytes.
    public init(path: String) throws(ProxyHeaderEncodingError) {
        try self.init(bytes: ByteBuffer(string: path))
    }

    /// Wraps bytes read from an address field, which cannot be longer than the field.
    init(validatedBytes: ByteBuffer) {
        self.bytes = validatedBytes
    }

    /// The path as text (invalid UTF-8 shown with replacement characters).
    public var path: String { String(decoding: bytes.readableBytesView, as: UTF8.self) }

    public var description: String { path }
}

/// The endpoints a header carries.
public enum ProxyAddresses: Hashable, Sendable {
    /// No usable addresses: the receiver uses the socket's endpoints.
    case unspecified
    /// IPv4 endpoints.
    case inet(source: ProxyIPv4Endpoint, destination: ProxyIPv4Endpoint)
    /// IPv6 endpoints.
    case inet6(source: ProxyIPv6Endpoint, destination: ProxyIPv6Endpoint)
    /// UNIX socket addresses (version 2 only).
    case unix(source: ProxyUnixAddress, destination: ProxyUnixAddress)

    /// Both endpoints from IP addresses of the same family; `nil` if the families differ.
    public init?(source: ProxyEndpoint, destination: ProxyEndpoint) {
        switch (source.address, destination.address) {
        case (.v4(let s), .v4(let d)):
            self = .inet(source: .init(s, port: source.port), destination: .init(d, port: destination.port))
        case (.v6(let s), .v6(let d)):
            self = .inet6(source: .init(s, port: source.port), destination: .init(d, port: destination.port))
        default:
            return nil
        }
    }

    /// The family these addresses belong to.
    public var family: ProxyAddressFamily {
        switch self {
        case .unspecified: return .unspecified
        case .inet: return .inet
        case .inet6: return .inet6
        case .unix: return .unix
        }
    }

    /// The source as an IP endpoint, if the addresses are IP.
    public var source: ProxyEndpoint? {
        switch self {
        case .inet(let source, _): return ProxyEndpoint(.v4(source.address), port: source.port)
        case .inet6(let source, _): return ProxyEndpoint(.v6(source.address), port: source.port)
        case .unspecified, .unix: return nil
        }
    }

    /// The destination as an IP endpoint, if the addresses are IP.
    public var destination: ProxyEndpoint? {
        switch self {
        case .inet(_, let destination): return ProxyEndpoint(.v4(destination.address), port: destination.port)
        case .inet6(_, let destination): return ProxyEndpoint(.v6(destination.address), port: destination.port)
        case .unspecified, .unix: return nil
        }
    }
}
