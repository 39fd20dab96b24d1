/// A UNIX socket listener of the PROXY protocol (`proxy_unix_sockets`).
public struct ProxyUnixSocket: Hashable, Sendable {
    /// The service that takes its connections.
    public var service: String
    /// The socket file's permissions. Default `0o660`: the owner and the group may connect.
    public var mode: Int
    /// The socket file's owner, a user name or number; `nil` leaves the process's user.
    public var owner: String?
    /// The socket file's group, a group name or number; `nil` leaves the process's group.
    public var group: String?

    /// What the socket file gets: mode, owner and group (not the service).
    var fileAttributes: [String?] { [String(mode, radix: 8), owner, group] }

    /// How headers are read here where not as the global keys say (`versions`, `local`,
    /// `unspecified`, `header_timeout`). Every peer is trusted (the file's permissions decide who
    /// connects), so `trustedProxies` and `directClients` must stay `nil`.
    public var options: ProxyPortOptions

    /// A listener for `service`.
    public init(
        service: String, mode: Int = 0o660, owner: String? = nil, group: String? = nil, options: ProxyPortOptions = ProxyPortOptions()
    ) {
        self.service = service
        self.mode = mode
        self.owner = owner
        self.group = group
        self.options = options
    }
}
