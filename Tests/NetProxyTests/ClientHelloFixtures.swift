/// ClientHellos for the reader's and the multiplexer's tests: three captured once from real
/// clients (the bytes each sent to a listener on loopback, kept as hex), and a builder for
/// constructed ones.
enum ClientHellos {
    /// Bytes from hex digits; whitespace is ignored.
    static func hex(_ text: String) -> [UInt8] {
        let digits = text.utf8.filter { !$0.isWhitespace }
        precondition(digits.count.isMultiple(of: 2), "an odd number of hex digits")
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0...$0 + 1], as: UTF8.self), radix: 16)! }
    }

    /// `openssl s_client -servername chat.example.org -alpn xmpp-client` (OpenSSL 3.0.19): 340 bytes,
    /// one record.
    static let openSSL = hex(
        """
        160301014f0100014b0303a7eca646aee734bb7325abf3dd7dc2d459ee221cb0461f458cbe73fcde8a0a6620d4c13642
        adc27d92fc32733cb34257bdbe4ddfc4a7b4ac8f66ee0c3fe1ac5808003e130213031301c02cc030009fcca9cca8ccaa
        c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff010000c4
        000000150013000010636861742e6578616d706c652e6f7267000b000403000102000a00160014001d0017001e001900
        1801000101010201030104002300000010000e000c0b786d70702d636c69656e740016000000170000000d002a002804
        0305030603080708080809080a080b080408050806040105010601030303010302040205020602002b00090803040303
        03020301002d00020101003300260024001d0020084aa6406c38cd8b906df062684491125a51684a63a70f72d4be21af
        a3770931
        """)

    /// `curl --http2 https://www.example.org/` (curl 7.88.1, OpenSSL 3.0.19): ALPN h2 and http/1.1,
    /// 517 bytes with padding.
    static let curlHTTP2 = hex(
        """
        1603010200010001fc030369d4a0791e0961f1b6378cab284d37ed7ad45b496fbcf01307efe76b866961c82025b3dc7c
        101113b4444165572de988a5ab384bdd5abfd2eb3f32d10d389101fb003e130213031301c02cc030009fcca9cca8ccaa
        c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff01000175
        00000014001200000f7777772e6578616d706c652e6f7267000b000403000102000a00160014001d0017001e00190018
        010001010102010301040010000e000c02683208687474702f312e31001600000017000000310000000d002a00280403
        05030603080708080809080a080b080408050806040105010601030303010302040205020602002b0009080304030303
        020301002d00020101003300260024001d00207b90888e62c7e20e35649a532e39bf3529ab752d1bdd3dce0db14aa825
        d0984f001500ae0000000000000000000000000000000000000000000000000000000000000000000000000000000000
        000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        00000000000000000000000000000000000000000000000000000000000000000000000000
        """)

    /// `curl --http1.1 https://www.example.org/`: ALPN http/1.1 only.
    static let curlHTTP1 = hex(
        """
        1603010200010001fc030300fcd1bad91bc106a2ce9a78644cf54866334fcd91f5c158391ac961c99863da20017a4f7c
        14eb6336723b2282fe39a67b3daee51857ace5852a352e53947454ef003e130213031301c02cc030009fcca9cca8ccaa
        c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff01000175
        00000014001200000f7777772e6578616d706c652e6f7267000b000403000102000a00160014001d0017001e00190018
        010001010102010301040010000b000908687474702f312e31001600000017000000310000000d002a00280403050306
        03080708080809080a080b080408050806040105010601030303010302040205020602002b0009080304030303020301
        002d00020101003300260024001d00200a323bf4b181f4fa2e59a3f7448b5019383f169e063addfcd8c189dcd0840d2a
        001500b10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        00000000000000000000000000000000000000000000000000000000000000000000000000
        """)
}

extension UInt8 {
    fileprivate var isWhitespace: Bool { self == 0x20 || self == 0x0A || self == 0x0D || self == 0x09 }
}

/// A ClientHello made field by field, each length computed unless one is given to break it.
struct ClientHelloBuilder {
    var clientVersion: [UInt8] = [0x03, 0x03]
    var random = [UInt8](repeating: 0xAB, count: 32)
    var sessionID = [UInt8](repeating: 0x5E, count: 32)
    /// TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384.
    var cipherSuites: [UInt8] = [0x13, 0x01, 0x13, 0x02]
    var compressionMethods: [UInt8] = [0x00]
    /// `nil`: no extensions block at all (as before TLS 1.3 may be).
    var extensions: [Extension]? = [ClientHelloBuilder.supportedVersions]

    /// An extension: its type and data, as sent.
    struct Extension {
        var type: UInt16
        var data: [UInt8]
    }

    /// `supported_versions` with TLS 1.3 and 1.2.
    static let supportedVersions = Extension(type: 43, data: [0x04, 0x03, 0x04, 0x03, 0x03])

    /// `server_name` with one `host_name`.
    static func serverName(_ name: String) -> Extension {
        serverNames([(0, Array(name.utf8))])
    }

    /// `server_name` with these entries (type, name).
    static func serverNames(_ entries: [(UInt8, [UInt8])]) -> Extension {
        Extension(type: 0, data: vector16(entries.flatMap { [$0.0] + vector16($0.1) }))
    }

    /// `application_layer_protocol_negotiation` with these protocols.
    static func alpn(_ names: [String]) -> Extension {
        Extension(type: 16, data: vector16(names.flatMap { vector8(Array($0.utf8)) }))
    }

    static func vector8(_ bytes: [UInt8]) -> [UInt8] { [UInt8(bytes.count)] + bytes }
    static func vector16(_ bytes: [UInt8]) -> [UInt8] { bigEndian16(bytes.count) + bytes }
    static func bigEndian16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }

    init(serverName: String? = nil, alpn: [String] = []) {
        if let serverName { extensions!.insert(Self.serverName(serverName), at: 0) }
        if !alpn.isEmpty { extensions!.append(Self.alpn(alpn)) }
    }

    /// The ClientHello's body (after the handshake header).
    var body: [UInt8] {
        var bytes = clientVersion + random + Self.vector8(sessionID) + Self.vector16(cipherSuites) + Self.vector8(compressionMethods)
        if let extensions {
            bytes += Self.vector16(extensions.flatMap { Self.bigEndian16(Int($0.type)) + Self.vector16($0.data) })
        }
        return bytes
    }

    /// The handshake message: type 1, a 24-bit length, the body.
    var message: [UInt8] {
        let body = body
        return [0x01, UInt8(body.count >> 16 & 0xFF), UInt8(body.count >> 8 & 0xFF), UInt8(body.count & 0xFF)] + body
    }

    /// The message in handshake records of at most `fragment` bytes each (record version 3.1).
    func records(fragment: Int = 16_384) -> [UInt8] {
        Self.records(message, fragment: fragment)
    }

    /// `message` (handshake bytes) in handshake records of at most `fragment` bytes each.
    static func records(_ message: [UInt8], fragment: Int = 16_384) -> [UInt8] {
        stride(from: 0, to: message.count, by: fragment).flatMap { start in
            let part = message[start..<min(start + fragment, message.count)]
            return [0x16, 0x03, 0x01] + bigEndian16(part.count) + part
        }
    }
}
