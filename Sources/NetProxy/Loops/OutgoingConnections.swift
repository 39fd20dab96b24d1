import Atomics
import NIOConcurrencyHelpers
import NIOCore
import NIOProxyProtocol
import ProxyProtocol

/// The local addresses of this host's outgoing forward connections, so that one that arrives at
/// a listener of the same host is recognised and refused.
///
/// Such a connection is a loop, or trust laundered: a forward that relays without a header into
/// this host's own PROXY port lets any client write a header that arrives from a trusted
/// address (this host's). Start-up refuses a forward whose target is one of the host's
/// listeners; what only shows at run time (a name, a NAT rule, a route) is caught here.
///
/// An outgoing connection is registered between its bind and its connect, so it is known before
/// the peer can accept it. A plain forward binds to the unspecified address with port 0 (the
/// kernel picks the port, which is then this socket's on every address of the family); a
/// transparent one binds to the client's own address and port. Looking a peer up costs one
/// atomic load per accepted connection, unless a bit says that port is in use by an outgoing
/// connection; then one lock of a shard.
final class OutgoingConnections: Sendable {
    /// One bit per port: set while some outgoing connection uses it.
    private let inUse: [ManagedAtomic<UInt64>]
    private let shards: [NIOLockedValueBox<Shard>]
    private let local = NIOLockedValueBox(LocalAddresses([]))
    private static let shardCount = 16

    private struct Shard {
        /// Plain forwards' sockets by port (of either family: a socket of the other family on
        /// this machine with the same port is not told apart), and how many (normally 1).
        var ports: [UInt16: Int] = [:]
        /// Transparent forwards' sockets: the client's address and port.
        var addresses: [ProxyEndpoint: Int] = [:]
        /// Sockets of either kind by port: what the bit says.
        var uses: [UInt16: Int] = [:]
    }

    init() {
        inUse = (0..<(65536 / 64)).map { _ in ManagedAtomic(0) }
        shards = (0..<Self.shardCount).map { _ in NIOLockedValueBox(Shard()) }
    }

    /// This machine's addresses, as the configuration in force saw them.
    var localAddresses: LocalAddresses {
        get { local.withLockedValue { $0 } }
        set { local.withLockedValue { $0 = newValue } }
    }

    /// Whether an accepted connection from `peer` to `localAddress` is one of ours.
    func isOurs(peer: SocketAddress, localAddress: @autoclosure () -> SocketAddress?) -> Bool {
        guard let endpoint = peer.proxyEndpoint else { return false }
        let address = endpoint.address.unmapped
        let port = Int(endpoint.port)
        guard inUse[port / 64].load(ordering: .acquiring) & (1 << UInt64(port % 64)) != 0 else { return false }
        let (plain, transparent) = shard(endpoint.port).withLockedValue { shard in
            (shard.ports[endpoint.port] != nil, shard.addresses[ProxyEndpoint(address, port: endpoint.port)] != nil)
        }
        if transparent { return true }
        guard plain else { return false }
        // Bound to every address of the family: ours if it came from this machine.
        if let own = localAddress().flatMap(ProxyIPAddress.init), own.unmapped == address { return true }
        return localAddresses.contains(address)
    }

    /// Registers the socket bound at `address`; the returned value unregisters it.
    func register(_ address: SocketAddress) -> Registration? {
        guard let endpoint = address.proxyEndpoint else { return nil }
        let ip = endpoint.address.unmapped
        let registration: Registration =
            ip.isWildcard ? .plain(port: endpoint.port) : .transparent(ProxyEndpoint(ip, port: endpoint.port))
        update(registration, by: 1)
        return registration
    }

    func unregister(_ registration: Registration) {
        update(registration, by: -1)
    }

    enum Registration: Sendable {
        case plain(port: UInt16)
        case transparent(ProxyEndpoint)

        var port: UInt16 {
            switch self {
            case .plain(let port): return port
            case .transparent(let endpoint): return endpoint.port
            }
        }
    }

    private func update(_ registration: Registration, by change: Int) {
        let port = registration.port
        let word = inUse[Int(port) / 64]
        let mask: UInt64 = 1 << UInt64(port % 64)
        // The bit changes under the port's shard lock, so it always agrees with the shard.
        shard(port).withLockedValue { shard in
            switch registration {
            case .plain:
                Self.add(change, to: &shard.ports, at: port)
            case .transparent(let endpoint):
                Self.add(change, to: &shard.addresses, at: endpoint)
            }
            if Self.add(change, to: &shard.uses, at: port) {
                _ = word.bitwiseOrThenLoad(with: mask, ordering: .releasing)
            } else {
                _ = word.bitwiseAndThenLoad(with: ~mask, ordering: .releasing)
            }
        }
    }

    /// Adds `change` to a count, removing it at 0; whether it is still there.
    @discardableResult
    private static func add<Counted: Hashable>(_ change: Int, to counts: inout [Counted: Int], at key: Counted) -> Bool {
        let count = counts[key, default: 0] + change
        counts[key] = count > 0 ? count : nil
        return count > 0
    }

    private func shard(_ port: UInt16) -> NIOLockedValueBox<Shard> {
        shards[Int(port) % Self.shardCount]
    }
}

/// Registers a forward's connection to its target between the bind and the connect, and
/// unregisters it when the connection closes. Binds first where nothing did (a plain forward):
/// the port is then known before the connect.
final class OutgoingConnectionMark: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = Any

    private let outgoing: OutgoingConnections

    init(_ outgoing: OutgoingConnections) {
        self.outgoing = outgoing
    }

    func connect(context: ChannelHandlerContext, to address: SocketAddress, promise: EventLoopPromise<Void>?) {
        if let bound = context.channel.localAddress, bound.port != 0 {
            // A transparent forward's socket, bound to the client's address by the bootstrap.
            return connect(context: context, registering: bound, to: address, promise: promise)
        }
        let any = (try? SocketAddress(ipAddress: address.protocol == .inet6 ? "::" : "0.0.0.0", port: 0))!
        let bound = context.eventLoop.makePromise(of: Void.self)
        context.bind(to: any, promise: bound)
        bound.futureResult.assumeIsolated().whenComplete { result in
            switch result {
            case .success:
                guard let local = context.channel.localAddress else {
                    promise?.fail(ChannelError.ioOnClosedChannel)
                    return
                }
                self.connect(context: context, registering: local, to: address, promise: promise)
            case .failure(let error):
                promise?.fail(error)
            }
        }
    }

    private func connect(context: ChannelHandlerContext, registering local: SocketAddress, to target: SocketAddress, promise: EventLoopPromise<Void>?)
    {
        if let registration = outgoing.register(local) {
            context.channel.closeFuture.whenComplete { [outgoing] _ in outgoing.unregister(registration) }
        }
        context.connect(to: target, promise: promise)
        // Nothing more to do on this connection's path.
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

@available(*, unavailable)
extension OutgoingConnectionMark: Sendable {}
