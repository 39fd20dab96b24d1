import NIOCore

extension SocketAddress {
    /// The one way the package prints an endpoint, in logs, errors and the command:
    /// `192.0.2.1:80`, `[2001:db8::1]:80`, or `unix:/run/x.sock`.
    package var displayText: String {
        if let endpoint = proxyEndpoint { return endpoint.description }
        if let pathname { return "unix:\(pathname)" }
        return description
    }
}
