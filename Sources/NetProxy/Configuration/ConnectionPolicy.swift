import NIOCore

/// The deadlines and budgets of one listener's connections.
struct ConnectionPolicy: Sendable {
    /// `idle_timeout`: no byte read or written for this long closes the connection.
    var idleTimeout: TimeAmount
    /// `tls_handshake_timeout`, on TLS listeners only.
    var tlsHandshakeTimeout: TimeAmount?
    /// `max_connections` of this listener alone; `nil` for none.
    var maxConnections: Int?
    /// `max_connections_per_source` for this listener's connections.
    var maxConnectionsPerSource: Int

    init(idleTimeout: TimeAmount, tlsHandshakeTimeout: TimeAmount?, maxConnections: Int?, maxConnectionsPerSource: Int) {
        self.idleTimeout = idleTimeout
        self.tlsHandshakeTimeout = tlsHandshakeTimeout
        self.maxConnections = maxConnections
        self.maxConnectionsPerSource = maxConnectionsPerSource
    }

    /// A PROXY listener's: `options` where given (checked here, errors naming `keyPrefix`), else
    /// the global keys.
    init(
        _ configuration: NetProxyConfiguration, _ options: ProxyPortOptions, keyPrefix: String, tls: Bool, perSource: Int
    ) throws(NetProxyConfigurationError) {
        if let idle = options.idleTimeout { try HostPlan.checkDuration(idle, keyPrefix + "idle_timeout") }
        if let handshake = options.tlsHandshakeTimeout { try HostPlan.checkDuration(handshake, keyPrefix + "tls_handshake_timeout") }
        if let limit = options.maxConnections { try NetProxyConfiguration.checkCount(limit, keyPrefix + "max_connections") }
        if let limit = options.maxConnectionsPerSource { try NetProxyConfiguration.checkCount(limit, keyPrefix + "max_connections_per_source") }
        self.init(
            idleTimeout: (options.idleTimeout ?? configuration.idleTimeout).timeAmount,
            tlsHandshakeTimeout: tls ? (options.tlsHandshakeTimeout ?? configuration.tlsHandshakeTimeout).timeAmount : nil,
            maxConnections: options.maxConnections,
            maxConnectionsPerSource: options.maxConnectionsPerSource ?? perSource)
    }
}
