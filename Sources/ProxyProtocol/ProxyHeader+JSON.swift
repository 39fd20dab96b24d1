import NIOCore

extension ProxyHeader {
    /// The header as the JSON object that `netproxy decode` and the built-in services print.
    ///
    /// Keys: `version`, `command`, `family` (v1: `TCP4`/`TCP6`/`UNKNOWN`), `transport` (null for
    /// v1), `source` and `destination` (`{"ip","port"}`, `{"path"}` or null), `tlvs`, and
    /// `header_length`.
    package func jsonValue(headerLength: Int) -> JSONValue {
        let familyName: String
        let transportName: JSONValue
        switch version {
        case .v1:
            familyName = addresses.family.v1Name
            transportName = .null
        case .v2:
            familyName = family.description
            transportName = .string(transport.description)
        }
        let (source, destination): (JSONValue, JSONValue)
        switch addresses {
        case .unspecified:
            (source, destination) = (.null, .null)
        case .inet, .inet6:
            (source, destination) = (addresses.source!.jsonValue, addresses.destination!.jsonValue)
        case .unix(let s, let d):
            (source, destination) = (.object([("path", .string(s.path))]), .object([("path", .string(d.path))]))
        }
        return .object([
            ("version", .int(version.rawValue)),
            ("command", .string(command.description)),
            ("family", .string(familyName)),
            ("transport", transportName),
            ("source", source),
            ("destination", destination),
            ("tlvs", .array(tlvs.map(\.jsonValue))),
            ("header_length", .int(headerLength)),
        ])
    }
}

extension ProxyEndpoint {
    /// `{"ip": ..., "port": ...}`, IPv6 in RFC 5952 form.
    package var jsonValue: JSONValue {
        .object([("ip", .string(address.description)), ("port", .int(Int(port)))])
    }
}

extension ProxyTLV {
    /// `{"type", "name", "hex"}` and `value` where the type's meaning is known.
    package var jsonValue: JSONValue {
        var members: [(String, JSONValue)] = [
            ("type", .int(Int(type.rawValue))),
            ("name", name.map(JSONValue.string) ?? .null),
            ("hex", .string(value.readableBytesView.map { hex($0) }.joined())),
        ]
        if let decoded = decodedJSONValue {
            members.append(("value", decoded))
        }
        return .object(members)
    }

    private var decodedJSONValue: JSONValue? {
        switch type {
        case .sslVersion, .sslCommonName, .sslCipher, .sslSignatureAlgorithm, .sslKeyAlgorithm, .sslGroup,
            .sslSignatureScheme:
            return String(validatingUTF8Buffer: value).map(JSONValue.string)
        default:
            break
        }
        switch decodedValue {
        case nil: return cloudJSONValue
        case .alpn(let bytes), .uniqueID(let bytes):
            return String(validatingUTF8Buffer: bytes).map(JSONValue.string)
        case .authority(let text), .netns(let text):
            return .string(text)
        case .crc32c(let value):
            return .int(Int(value))
        case .noop:
            return .null
        case .ssl(let info):
            return .object([
                ("client", .int(Int(info.client.rawValue))),
                ("ssl", .bool(info.client.contains(.ssl))),
                ("cert_conn", .bool(info.client.contains(.certificateOnConnection))),
                ("cert_sess", .bool(info.client.contains(.certificateInSession))),
                ("verify", .int(Int(info.verify))),
                ("tlvs", .array(info.subTLVs.map(\.jsonValue))),
            ])
        }
    }

    /// The value of a cloud convention's TLV (`AWS`, `AZURE`, `GCP`), from its accessor.
    private var cloudJSONValue: JSONValue? {
        if let id = awsVPCEndpointID { return .object([("vpc_endpoint_id", .string(id))]) }
        if let id = azurePrivateLinkID { return .object([("private_link_id", .int(Int(id)))]) }
        // A JSON number loses precision past 2^53: the id is a decimal string.
        if let id = gcpPSCConnectionID { return .object([("psc_connection_id", .string(String(id)))]) }
        return nil
    }
}
