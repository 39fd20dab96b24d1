import NIOProxyProtocol
import ProxyProtocol

/// Settings of one PROXY port (`proxy_port_options`); each `nil` keeps the global setting.
public struct ProxyPortOptions: Hashable, Sendable {
    /// `trusted_proxies`, in place of `proxy_trusted_proxies`.
    public var trustedProxies: [String]?
    /// `versions`, in place of `proxy_versions`.
    public var acceptedVersions: ProxyVersions?
    /// `local`, in place of `proxy_local`.
    public var acceptsLocal: Bool?
    /// `unspecified`, in place of `proxy_unspecified`.
    public var unspecifiedAddresses: ProxyProtocolConfiguration.UnspecifiedAddressPolicy?
    /// `header_timeout` in seconds, in place of `proxy_header_timeout`.
    public var headerTimeout: Duration?
    /// `direct_clients`, in place of `proxy_direct_clients`.
    public var directClients: [String]?
    /// `idle_timeout` in seconds, in place of the global `idle_timeout`.
    public var idleTimeout: Duration?
    /// `tls_handshake_timeout` in seconds, in place of the global one (TLS ports only).
    public var tlsHandshakeTimeout: Duration?
    /// `max_connections`: connections open at once on this listener, besides the process's
    /// limit. At it the listener stops accepting until one closes.
    public var maxConnections: Int?
    /// `max_connections_per_source`, in place of the global one for this listener's
    /// connections (still counted against the source's connections in the whole process).
    public var maxConnectionsPerSource: Int?

    /// Options for one port; each one left `nil` keeps the global setting.
    public init(
        trustedProxies: [String]? = nil, acceptedVersions: ProxyVersions? = nil, acceptsLocal: Bool? = nil,
        unspecifiedAddresses: ProxyProtocolConfiguration.UnspecifiedAddressPolicy? = nil, headerTimeout: Duration? = nil,
        directClients: [String]? = nil, idleTimeout: Duration? = nil, tlsHandshakeTimeout: Duration? = nil, maxConnections: Int? = nil,
        maxConnectionsPerSource: Int? = nil
    ) {
        self.trustedProxies = trustedProxies
        self.acceptedVersions = acceptedVersions
        self.acceptsLocal = acceptsLocal
        self.unspecifiedAddresses = unspecifiedAddresses
        self.headerTimeout = headerTimeout
        self.directClients = directClients
        self.idleTimeout = idleTimeout
        self.tlsHandshakeTimeout = tlsHandshakeTimeout
        self.maxConnections = maxConnections
        self.maxConnectionsPerSource = maxConnectionsPerSource
    }
}
