import Logging
import NIOCore
import NIOProxyProtocol
import ProxyProtocol

/// What a service knows about a connection it is handed.
public struct ConnectionInfo: Hashable, Sendable {
    /// The service's name.
    public var service: String
    /// The local port the connection came in on.
    public var port: Int
    /// The socket's peer: the proxy on a PROXY port, the client on a regular port.
    public var peer: SocketAddress
    /// The client: the PROXY header's source, or the socket's peer on a regular port and for
    /// `LOCAL` and address-less headers.
    public var source: SocketAddress
    /// The address the client connected to: the header's destination, or the socket's local
    /// address.
    public var destination: SocketAddress?
    /// The PROXY header and its details; `nil` on a regular port.
    public var proxy: ProxiedConnectionInfo?

    /// Creates the description of a connection.
    public init(service: String, port: Int, peer: SocketAddress, source: SocketAddress, destination: SocketAddress?, proxy: ProxiedConnectionInfo?) {
        self.service = service
        self.port = port
        self.peer = peer
        self.source = source
        self.destination = destination
        self.proxy = proxy
    }

    /// The JSON object the built-in services print: `service`, `port`, `peer`, `source`,
    /// `destination` and `proxy` (null, or the header object `netproxy decode` prints).
    package var jsonValue: JSONValue {
        .object([
            ("service", .string(service)),
            ("port", .int(port)),
            ("peer", peer.jsonValue),
            ("source", source.jsonValue),
            ("destination", destination?.jsonValue ?? .null),
            ("proxy", proxy.map { $0.header.jsonValue(headerLength: $0.headerLength) } ?? .null),
        ])
    }

    /// Logger metadata naming the connection: `service`, `client` and, on a PROXY port, `proxy`.
    public var loggerMetadata: Logger.Metadata {
        var metadata: Logger.Metadata = ["service": "\(service)", "client": "\(source.displayText)"]
        if proxy != nil { metadata["proxy"] = "\(peer.displayText)" }
        return metadata
    }

    /// The connection as one line of JSON: `service`, `port`, `peer`, `source`, `destination`
    /// and `proxy` (null, or the header object `netproxy decode` prints).
    public var json: String { jsonValue.serialized }
}

extension SocketAddress {
    /// `{"ip", "port"}` (IPv6 in RFC 5952 form) or `{"path"}`.
    package var jsonValue: JSONValue {
        if let endpoint = proxyEndpoint { return endpoint.jsonValue }
        return .object([("path", .string(pathname ?? description))])
    }
}
