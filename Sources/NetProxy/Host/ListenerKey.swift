import ProxyProtocol

/// Which listener of a new configuration is the same socket as one in force: the same address
/// and port, or the same path. Port 0 takes a new free port each time, so such a listener is
/// kept only for the same use on the same address.
enum ListenerKey: Hashable, Sendable {
    /// An address (parsed, so two spellings of one address are one key) and a fixed port.
    case port(ProxyIPAddress?, Int)
    /// An address and port 0, for one use; `index` tells repeated ones apart.
    case freePort(ProxyIPAddress?, ListenerPlan.Kind, index: Int)
    case unix(path: String)

    /// The keys of `plan`, in order.
    static func keys(_ plan: [ListenerPlan]) -> [ListenerKey] {
        var repeats: [ListenerKey: Int] = [:]
        return plan.map { listener in
            if let path = listener.path { return .unix(path: path) }
            let address = ProxyIPAddress(listener.host)
            guard listener.port == 0 else { return .port(address, listener.port) }
            let first = ListenerKey.freePort(address, listener.kind, index: 0)
            let index = repeats[first, default: 0]
            repeats[first] = index + 1
            return .freePort(address, listener.kind, index: index)
        }
    }
}
