import NIOCore
import ProxyProtocol

extension ProxyHeader {
    /// Writes the header as the JSON object that `netproxy decode` and the built-in services
    /// print, straight into `buffer` (this is on every connection of the built-in services).
    ///
    /// Keys: `version`, `command`, `family` (v1: `TCP4`/`TCP6`/`UNKNOWN`), `transport` (null for
    /// v1), `source` and `destination` (`{"ip","port"}`, `{"path"}` or null), `tlvs`, and
    /// `header_length`.
    package func writeJSON(headerLength: Int, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"version\":")
        buffer.writeJSONInteger(version.rawValue)
        buffer.writeStaticString(",\"command\":")
        buffer.writeStaticString(command == .proxy ? "\"PROXY\"" : "\"LOCAL\"")
        buffer.writeStaticString(",\"family\":")
        switch version {
        case .v1:
            buffer.writeJSONString(addresses.family.v1Name)
            buffer.writeStaticString(",\"transport\":null")
        case .v2:
            buffer.writeJSONString(family.description)
            buffer.writeStaticString(",\"transport\":")
            buffer.writeJSONString(transport.description)
        }
        buffer.writeStaticString(",\"source\":")
        switch addresses {
        case .unspecified:
            buffer.writeStaticString("null,\"destination\":null")
        case .inet, .inet6:
            addresses.source!.writeJSON(into: &buffer)
            buffer.writeStaticString(",\"destination\":")
            addresses.destination!.writeJSON(into: &buffer)
        case .unix(let source, let destination):
            JSONValue.object([("path", .string(source.path))]).write(to: &buffer)
            buffer.writeStaticString(",\"destination\":")
            JSONValue.object([("path", .string(destination.path))]).write(to: &buffer)
        }
        buffer.writeStaticString(",\"tlvs\":")
        if tlvs.isEmpty {
            buffer.writeStaticString("[]")
        } else {
            JSONValue.array(tlvs.map(\.jsonValue)).write(to: &buffer)
        }
        buffer.writeStaticString(",\"header_length\":")
        buffer.writeJSONInteger(headerLength)
        buffer.writeJSONByte("}")
    }
}

extension ProxyEndpoint {
    /// Writes `{"ip": ..., "port": ...}`, IPv6 in RFC 5952 form.
    package func writeJSON(into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"ip\":\"")
        switch address {
        case .v4(let v4): v4.writeText(into: &buffer)
        case .v6(let v6): v6.writeText(into: &buffer)
        }
        buffer.writeStaticString("\",\"port\":")
        buffer.writeJSONInteger(Int(port))
        buffer.writeJSONByte("}")
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
        guard let decoded = decodedValue else { return cloudJSONValue }
        if let bytes = decoded.alpn ?? decoded.uniqueID {
            return String(validatingUTF8Buffer: bytes).map(JSONValue.string)
        }
        if let text = decoded.authority ?? decoded.netns {
            return .string(text)
        }
        if let checksum = decoded.crc32c {
            return .int(Int(checksum))
        }
        if let info = decoded.ssl {
            return .object([
                ("client", .int(Int(info.client.rawValue))),
                ("ssl", .bool(info.client.contains(.ssl))),
                ("cert_conn", .bool(info.client.contains(.certificateOnConnection))),
                ("cert_sess", .bool(info.client.contains(.certificateInSession))),
                ("verify", .int(Int(info.verify))),
                ("tlvs", .array(info.subTLVs.map(\.jsonValue))),
            ])
        }
        // NOOP has no value; a type registered later has none here until it is given one.
        return decoded.type == .noop ? .null : nil
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
