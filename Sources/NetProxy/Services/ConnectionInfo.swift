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

    /// Writes the JSON object the built-in services print, straight into `buffer`: `service`,
    /// `port`, `peer`, `source`, `destination` and `proxy` (null, or the header object
    /// `netproxy decode` prints).
    package func writeJSON(into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"service\":")
        buffer.writeJSONString(service)
        buffer.writeStaticString(",\"port\":")
        buffer.writeJSONInteger(port)
        buffer.writeStaticString(",\"peer\":")
        peer.writeJSON(into: &buffer)
        buffer.writeStaticString(",\"source\":")
        source.writeJSON(into: &buffer)
        buffer.writeStaticString(",\"destination\":")
        if let destination {
            destination.writeJSON(into: &buffer)
        } else {
            buffer.writeStaticString("null")
        }
        buffer.writeStaticString(",\"proxy\":")
        if let proxy {
            proxy.header.writeJSON(headerLength: proxy.headerLength, into: &buffer)
        } else {
            buffer.writeStaticString("null")
        }
        buffer.writeJSONByte("}")
    }

    /// Logger metadata naming the connection: `service`, `client` and, on a PROXY port, `proxy`.
    public var loggerMetadata: Logger.Metadata {
        var metadata: Logger.Metadata = ["service": "\(service)", "client": "\(source.displayText)"]
        if proxy != nil { metadata["proxy"] = "\(peer.displayText)" }
        return metadata
    }

    /// The connection as one line of JSON: `service`, `port`, `peer`, `source`, `destination`
    /// and `proxy` (null, or the header object `netproxy decode` prints).
    public var json: String {
        var buffer = ByteBuffer()
        writeJSON(into: &buffer)
        return String(buffer: buffer)
    }
}

extension SocketAddress {
    /// Writes `{"ip", "port"}` (IPv6 in RFC 5952 form) or `{"path"}`.
    package func writeJSON(into buffer: inout ByteBuffer) {
        if let endpoint = proxyEndpoint {
            endpoint.writeJSON(into: &buffer)
        } else {
            JSONValue.object([("path", .string(pathname ?? description))]).write(to: &buffer)
        }
    }
}
