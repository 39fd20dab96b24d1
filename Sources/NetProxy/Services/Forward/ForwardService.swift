import Logging
import NIOCore
import NIOPosix
import ProxyProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A `forward_services` entry: where to relay connections, and how to tell the target who the
/// client is.
public struct ForwardServiceConfiguration: Hashable, Sendable {
    /// `target`: where to connect, one address or a list; a client gets the first of its own
    /// address family (the first of all when none is, and for a UNIX client).
    public var targets: [ForwardTarget]
    /// `send_proxy`: the version of the PROXY header sent to the target first; `nil` (`"none"`)
    /// for a plain relay.
    public var sendProxy: ProxyVersion?
    /// `pass_tlvs`: the received header's TLVs go into the v2 header (a CRC32C among them is
    /// dropped; `crc32c` computes a new one).
    public var passTLVs = false
    /// `crc32c`: the v2 header carries a CRC32C.
    public var crc32c = false
    /// `transparent`: connect from the client's own address and port (`IP_TRANSPARENT`; Linux,
    /// needs `CAP_NET_ADMIN` and routing that sends the replies back to this host). A client
    /// without an address to take (a `LOCAL` or address-less header, a UNIX client) or whose
    /// address is this machine's own (a balancer's health check on the same host) is connected
    /// from this host's address instead.
    public var transparent = false
    /// `connect_timeout`, in seconds in the file.
    public var connectTimeout: Duration = .seconds(5)
    /// `idle_timeout`, in seconds in the file: replaces the listener's for this service's connections, on
    /// both sides of the relay; `nil` keeps the listener's.
    public var idleTimeout: Duration?
    /// `max_pending_connects`: clients of this service waiting for their target's connect at
    /// once; over it a new client is closed (and counted) instead of connecting.
    public var maxPendingConnects = 256

    /// Targets with the defaults: no header, not transparent, 5 s to connect.
    public init(targets: [ForwardTarget]) {
        self.targets = targets
    }

    /// One target with the defaults: no header, not transparent, 5 s to connect.
    public init(targetHost: String, targetPort: Int) {
        self.init(targets: [ForwardTarget(host: targetHost, port: targetPort)])
    }

    /// The checks a configuration built in code also needs; the error names `key`.
    func check(_ key: String) throws(NetProxyConfigurationError) {
        guard !targets.isEmpty else { throw NetProxyConfigurationError("\(key).target: the list is empty") }
        var families: [String: ForwardTarget] = [:]
        for target in targets {
            try ConfigurationChecks.port(target.port, in: ConfigurationChecks.targetPorts, "\(key).target")
            // Only the first target of a family is ever used; a name may be of either.
            for family in target.families {
                if let first = families[family] {
                    throw NetProxyConfigurationError(
                        "\(key).target: \(target) would never be used: \(first) comes first for \(family) clients (a list holds one IPv4 address, one IPv6 address, or one name)"
                    )
                }
                families[family] = target
            }
        }
        try HostPlan.checkDuration(connectTimeout, "\(key).connect_timeout")
        if let idleTimeout { try HostPlan.checkDuration(idleTimeout, "\(key).idle_timeout") }
        try NetProxyConfiguration.checkCount(maxPendingConnects, "\(key).max_pending_connects")
        if sendProxy != .v2 && (passTLVs || crc32c) {
            throw NetProxyConfigurationError(
                "\(key): pass_tlvs and crc32c need send_proxy \"v2\" (send_proxy is \"\(sendProxy?.description ?? "none")\")")
        }
    }

    /// The target as the configuration writes it: one, or the list separated by commas.
    public var target: String {
        targets.map(\.description).joined(separator: ", ")
    }

    /// The target for a client at `source`, in ``targets``: the first of its family, else the first.
    func targetIndex(for source: SocketAddress) -> Int {
        guard targets.count > 1, let family = ProxyIPAddress(source)?.unmapped.familyName else { return 0 }
        return targets.firstIndex { $0.families.contains(family) } ?? 0
    }
}

/// One address a forward connects to.
public struct ForwardTarget: Hashable, Sendable, CustomStringConvertible {
    /// An IP address, or a name resolved at each connection.
    public var host: String
    /// The port.
    public var port: Int

    /// The target `host` (an IP address or a name) on `port`.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, or `[IPv6]:port`.
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The client families it serves: its address's, or both for a name.
    var families: [String] {
        ProxyIPAddress(host).map { [$0.unmapped.familyName] } ?? ["IPv4", "IPv6"]
    }
}

extension ProxyIPAddress {
    var familyName: String {
        if case .v4 = self { return "IPv4" }
        return "IPv6"
    }
}

extension NetProxyService {
    /// A service that relays each connection to `configuration`'s target.
    static func forward(
        name: String, _ configuration: ForwardServiceConfiguration, own: OwnHost, context: HostContext
    ) -> NetProxyService {
        let pending = PendingCount(limit: configuration.maxPendingConnects)
        // An IP address is used as it is: no resolver (a thread hop and a lookup per connection).
        let targets = configuration.targets.map { target in (target, try? SocketAddress(ipAddress: target.host, port: target.port)) }
        var service = NetProxyService(name: name, allowsHalfClosure: true) { channel, info in
            try channel.pipeline.syncOperations.addHandler(
                ForwardConnector(
                    name: name, configuration: configuration, target: targets[configuration.targetIndex(for: info.source)], info: info, own: own,
                    pending: pending, context: context))
        }
        service.idleTimeout = configuration.idleTimeout.map(\.timeAmount)
        return service
    }
}

/// Connects to the target when the client's connection is handed over, then puts a relay
/// between the two and leaves. Bytes and a half-close that arrive meanwhile are kept and passed
/// on in order, up to ``connectBufferLimit``: past it, reads stop until the relay starts. Reads
/// are held, not `autoRead` turned off, and only past the limit: a socket that stops reading
/// and starts again costs two `epoll_ctl` calls, and most clients send nothing while the
/// target connects.
///
/// A client that leaves during the connect ends it at once: closed, or half-closed without
/// having sent a byte (nothing to deliver, and a client that wants an answer sends first).
/// Connects in progress are capped per service (`max_pending_connects`). The target's side
/// gets a ``ConnectionGuard`` with the client's idle timeout, so a relay that stops moving is
/// closed whichever side stalls.
final class ForwardConnector: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = Any

    private let name: String
    private let configuration: ForwardServiceConfiguration
    /// The target chosen for this client, and its address unless it is a name.
    private let target: ForwardTarget
    private let address: SocketAddress?
    private let info: ConnectionInfo
    private let own: OwnHost
    private let pending: PendingCount
    private let metrics: HostMetrics
    private let log: RateLimitedLog
    private var received: [ByteBuffer] = []
    private var inputClosed = false
    /// The client's guard: its listener's counters, and the idle timeout the target side gets.
    private var clientGuard: ConnectionGuard?
    /// The target's channel while it connects, to end the connect if the client leaves.
    private var connecting: Channel?
    /// Whether this connection counts in ``pending``.
    private var isPending = false
    /// A `read` asked for past ``connectBufferLimit`` while the target was not connected yet.
    private var readHeld = false
    /// The bytes in ``received``.
    private var receivedBytes = 0
    /// How much of the client's bytes may wait for the target's connect.
    static let connectBufferLimit = 64 * 1024

    init(
        name: String, configuration: ForwardServiceConfiguration, target: (ForwardTarget, SocketAddress?), info: ConnectionInfo, own: OwnHost,
        pending: PendingCount, context: HostContext
    ) {
        self.name = name
        self.configuration = configuration
        (self.target, self.address) = target
        self.info = info
        self.own = own
        self.pending = pending
        self.metrics = context.metrics
        self.log = context.refusals
    }

    func channelActive(context: ChannelHandlerContext) {
        clientGuard = ConnectionGuard.find(in: context.pipeline.syncOperations)
        guard pending.enter() else {
            clientGuard?.record?.ended("refused", reason: "pending_connects")
            clientGuard?.listener.limited(
                .pendingConnects,
                "forward \(name): client \(info.source.displayText) closed: \(pending.limit) connects to \(target) in progress, its max_pending_connects"
            )
            context.close(promise: nil)
            return
        }
        isPending = true
        let (clientSide, targetSide) = RelayHandler.pair()
        // Made here, used in the target's initializer on this same loop.
        let targetHandlers = NIOLoopBound((clientGuard?.companion(), targetSide), eventLoop: context.eventLoop)
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        let outgoing = own.outgoing
        var bootstrap = ClientBootstrap(group: context.eventLoop)
            .connectTimeout(configuration.connectTimeout.timeAmount)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    this.value.connecting = channel
                    // Set here rather than with the bootstrap's `channelOption`, which applies
                    // each option through a chain of futures.
                    try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
                    try ReceiveBuffers.apply(to: channel)
                    let (targetGuard, targetSide) = targetHandlers.value
                    if let targetGuard { try channel.pipeline.syncOperations.addHandler(targetGuard) }
                    try channel.pipeline.syncOperations.addHandler(targetSide)
                    try channel.pipeline.syncOperations.addHandler(OutgoingConnectionMark(outgoing))
                }
            }
        if configuration.transparent, own.canImpersonate(info) {
            switch Self.transparentSource(info.source) {
            case .success(let (source, option)):
                bootstrap = bootstrap.channelOption(option, value: 1).bind(to: source)
            case .failure(let reason):
                return fail(context: context, reason: "transparent", detail: reason.description)
            }
        }
        let header: ByteBuffer?
        do {
            header = try headerToSend()
        } catch {
            // Never relay without the header the target expects: it would take the client's own
            // bytes for one.
            return fail(context: context, reason: "header", detail: "cannot send the PROXY header: \(error)")
        }
        let connected =
            if let address {
                bootstrap.connect(to: address)
            } else {
                bootstrap.connect(host: target.host, port: target.port)
            }
        connected.assumeIsolated().whenComplete { [self] result in
            connecting = nil
            leavePending()
            switch result {
            case .success(let target):
                clientGuard?.record?.target = target.remoteAddress
                relay(context: context, to: target, clientSide: clientSide, header: header)
            case .failure where !context.channel.isActive:
                // The client left first, and its leaving ended the connect.
                break
            case .failure(let error):
                fail(context: context, reason: Self.reason(error), detail: ConnectFailure.describe(error))
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        receivedBytes += bytes.readableBytes
        received.append(bytes)
    }

    func read(context: ChannelHandlerContext) {
        if receivedBytes < Self.connectBufferLimit {
            context.read()
        } else {
            readHeld = true
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, event == .inputClosed else { return context.fireUserInboundEventTriggered(event) }
        inputClosed = true
        if received.isEmpty, isPending {
            // Gone without a word: nothing to deliver, so no connect to finish.
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The client is gone: so is the reason to connect (its descriptor is free now, the
        // target's would not be until the connect ended).
        connecting?.close(promise: nil)
        connecting = nil
        leavePending()
        context.fireChannelInactive()
    }

    private func leavePending() {
        guard isPending else { return }
        isPending = false
        pending.leave()
    }

    private func relay(context: ChannelHandlerContext, to target: Channel, clientSide: RelayHandler, header: ByteBuffer?) {
        guard context.channel.isActive else {
            target.close(promise: nil)
            return
        }
        if let header { target.write(header, promise: nil) }
        do {
            try context.pipeline.syncOperations.addHandler(clientSide, position: .after(self))
        } catch {
            target.close(promise: nil)
            return fail(context: context, reason: "other", detail: "\(error)")
        }
        for bytes in received {
            context.fireChannelRead(wrapInboundOut(bytes))
        }
        received = []
        context.fireChannelReadComplete()
        target.flush()
        if inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        if readHeld {
            readHeld = false
            context.read()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func fail(context: ChannelHandlerContext, reason: String, detail: String) {
        metrics.forwardFailed(service: name, reason: reason)
        clientGuard?.record?.ended("connect_failed", reason: reason)
        if reason == "timeout" { clientGuard?.listener.metrics.timedOut(.connect) }
        log.warning(
            "forward \(name) to \(target) failed for client \(info.source.displayText): \(detail)",
            metadata: info.loggerMetadata)
        context.close(promise: nil)
    }

    /// The header that tells the target who the client is, if one is to be sent.
    private func headerToSend() throws(ProxyHeaderEncodingError) -> ByteBuffer? {
        guard let version = configuration.sendProxy else { return nil }
        var header: ProxyHeader
        if let destination = info.destination, let addresses = ProxyAddresses(source: info.source, destination: destination) {
            header = ProxyHeader(version: version, addresses: addresses)
        } else {
            // A UNIX client: v1 says UNKNOWN, v2 PROXY with no addresses.
            header = ProxyHeader(version: version, addresses: .unspecified)
        }
        if version == .v2, configuration.passTLVs, let received = info.proxy?.header.tlvs {
            header.tlvs = ProxyTLVs(received.filter { $0.type != .crc32c })
        }
        var bytes = ByteBuffer()
        // Fails when the received TLVs and a CRC32C no longer fit in 65,535 bytes.
        try header.encode(into: &bytes, appendingCRC32C: version == .v2 && configuration.crc32c)
        return bytes
    }

    /// Why a connect failed, as the `reason` label says it.
    static func reason(_ error: Error) -> String {
        if let error = error as? ChannelError, case .connectTimeout = error { return "timeout" }
        if let error = error as? NIOConnectionError {
            if error.dnsAAAAError != nil || error.dnsAError != nil, error.connectionErrors.isEmpty { return "resolve" }
            if let first = error.connectionErrors.first?.error as? IOError {
                return first.errnoCode == ECONNREFUSED ? "refused" : "unreachable"
            }
            return "unreachable"
        }
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNREFUSED: return "refused"
            // No socket for the target: this host is out of descriptors (or memory).
            case EMFILE, ENFILE, ENOBUFS, ENOMEM: return "resources"
            default: return "unreachable"
            }
        }
        return "other"
    }

    /// The client's address to bind the outgoing socket to, and the socket option that allows
    /// binding an address this host does not own.
    static func transparentSource(
        _ source: SocketAddress
    ) -> Result<(SocketAddress, ChannelOptions.Types.SocketOption), TransparentSourceError> {
        #if os(Linux)
            // A v4-mapped client (an IPv4 client in an IPv6 header) binds as IPv4, the family of
            // the target it gets.
            let source =
                if let endpoint = source.proxyEndpoint, case .v4(let v4) = endpoint.address.unmapped, case .v6 = source {
                    (try? SocketAddress(ipAddress: v4.description, port: Int(endpoint.port))) ?? source
                } else {
                    source
                }
            switch source {
            case .v4:
                return .success((source, .init(level: .init(rawValue: SOL_IP), name: .init(rawValue: IP_TRANSPARENT))))
            case .v6:
                // IPV6_TRANSPARENT (75), which Glibc's module does not export.
                return .success((source, .init(level: .init(rawValue: CInt(IPPROTO_IPV6)), name: .init(rawValue: 75))))
            case .unixDomainSocket: return .failure(TransparentSourceError("the client is a UNIX socket"))
            }
        #else
            return .failure(TransparentSourceError("transparent forwarding needs Linux"))
        #endif
    }
}

/// Why a transparent connection cannot be made.
struct TransparentSourceError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

@available(*, unavailable)
extension ForwardConnector: Sendable {}
