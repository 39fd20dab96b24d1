import NIOCore

// The conventions clouds use in the application range (0xE0-0xEF). The specification registers
// none of them, so they stay out of ProxyTLVValue (as go-proxyproto keeps them in tlvparse):
// another cloud is new API here, not a new case that breaks every exhaustive switch.

extension ProxyTLVType {
    /// Google Cloud Private Service Connect: a 64-bit connection id (application range).
    public static let gcp = Self(0xE0)
    /// AWS PrivateLink: sub-type 0x01 and the VPC endpoint id (application range).
    public static let aws = Self(0xEA)
    /// Azure Private Link: sub-type 0x01 and a 32-bit link id (application range).
    public static let azure = Self(0xEE)
}

extension ProxyTLV {
    /// The VPC endpoint id, such as `vpce-08d2bf15fac5001c9`, if this is an AWS PrivateLink TLV:
    /// type 0xEA, sub-type 0x01, then the id in US-ASCII. `nil` for any other TLV.
    public var awsVPCEndpointID: String? {
        guard type == .aws else { return nil }
        var value = self.value
        guard value.readInteger(as: UInt8.self) == 0x01, value.readableBytes > 0 else { return nil }
        return String(asciiBuffer: value)
    }

    /// The link id if this is an Azure Private Link TLV: type 0xEE, exactly 5 bytes, sub-type
    /// 0x01 then the id little-endian (unlike the rest of the header). `nil` for any other TLV.
    public var azurePrivateLinkID: UInt32? {
        guard type == .azure, value.readableBytes == 5 else { return nil }
        var value = self.value
        guard value.readInteger(as: UInt8.self) == 0x01 else { return nil }
        return value.readInteger(endianness: .little, as: UInt32.self)
    }

    /// The connection id if this is a Google Cloud Private Service Connect TLV: type 0xE0 and
    /// exactly 8 bytes, big-endian. `nil` for any other TLV.
    public var gcpPSCConnectionID: UInt64? {
        guard type == .gcp, value.readableBytes == 8 else { return nil }
        return value.getInteger(at: value.readerIndex, as: UInt64.self)
    }

    /// `AWS`, `AZURE` or `GCP` when the TLV has that convention's shape.
    ///
    /// The type alone is not enough: whoever configured the proxy may use 0xE0-0xEF for
    /// something else, and a value that does not fit is left unnamed rather than guessed at.
    var cloudName: String? {
        if awsVPCEndpointID != nil { return "AWS" }
        if azurePrivateLinkID != nil { return "AZURE" }
        if gcpPSCConnectionID != nil { return "GCP" }
        return nil
    }
}

extension ProxyTLVs {
    /// The AWS VPC endpoint id of the first TLV that carries one.
    public var awsVPCEndpointID: String? { firstValue(\.awsVPCEndpointID) }

    /// The Azure Private Link id of the first TLV that carries one.
    public var azurePrivateLinkID: UInt32? { firstValue(\.azurePrivateLinkID) }

    /// The Google Cloud Private Service Connect id of the first TLV that carries one.
    public var gcpPSCConnectionID: UInt64? { firstValue(\.gcpPSCConnectionID) }

    // The first TLV with the convention's shape, not the first of its type: a cloud may send
    // other sub-types under the same type byte.
    private func firstValue<Value>(_ read: (ProxyTLV) -> Value?) -> Value? {
        for tlv in self {
            if let value = read(tlv) { return value }
        }
        return nil
    }
}
