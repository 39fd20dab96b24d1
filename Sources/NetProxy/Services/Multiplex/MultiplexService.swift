import CoreMetrics
import Logging
import NIOCore

/// A `multiplex_services` entry: which service gets a connection, by the protocol its first
/// bytes show (Prosody's net_multiplex).
public struct MultiplexServiceConfiguration: Hashable, Sendable {
    /// A protocol the multiplexer recognises. A struct rather than an enum, so that a new
    /// detector is not a breaking change.
    public struct DetectedProtocol: Hashable, Sendable, CustomStringConvertible {
        /// The name the configuration uses.
        public let name: String

        private init(_ name: String) { self.name = name }

        /// A TLS record carrying the start of a ClientHello.
        public static let tls = DetectedProtocol("tls")
        /// The start of an HTTP/1 request line, a method and one space, or the whole HTTP/2
        /// connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`). The method is one of RFC 9110
        /// (`GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `CONNECT`, `OPTIONS`, `TRACE`), `PATCH`
        /// (RFC 5789), or another of the IANA HTTP Method Registry: `ACL`, `BASELINE-CONTROL`,
        /// `BIND`, `CHECKIN`, `CHECKOUT`, `COPY`, `LABEL`, `LINK`, `LOCK`, `MERGE`, `MKACTIVITY`,
        /// `MKCALENDAR`, `MKCOL`, `MKREDIRECTREF`, `MKWORKSPACE`, `MOVE`, `ORDERPATCH`, `PROPFIND`,
        /// `PROPPATCH`, `QUERY`, `REBIND`, `REPORT`, `SEARCH`, `UNBIND`, `UNCHECKOUT`, `UNLINK`,
        /// `UNLOCK`, `UPDATE`, `UPDATEREDIRECTREF`, `VERSION-CONTROL`. Methods are case-sensitive:
        /// `get ` is not one, nor is any other word (`EHLO `, `USER `), nor a method and a tab.
        public static let http = DetectedProtocol("http")
        /// An XML declaration or a `<stream:stream` opening.
        public static let xmpp = DetectedProtocol("xmpp")
        /// An SSH version line (`SSH-`).
        public static let ssh = DetectedProtocol("ssh")

        /// Every protocol, in the order they are tried.
        static let all: [DetectedProtocol] = [.tls, .http, .xmpp, .ssh]

        /// The protocol the configuration names `name`; `nil` for an unknown name.
        public init?(name: String) {
            guard let known = Self.all.first(where: { $0.name == name }) else { return nil }
            self = known
        }

        public var description: String { name }
    }

    /// `routes`: the service for each protocol.
    public var routes: [DetectedProtocol: String]
    /// `tls_routes`: rules that choose the service for a TLS connection by its ClientHello's
    /// server name and application protocols, in order, before `routes.tls`. With rules, a TLS
    /// connection stays under detection until its whole ClientHello has come; one that cannot be
    /// read, or is longer than 16 KiB and a record header, or is not whole at
    /// ``detectTimeout``, goes to ``defaultService``. Empty: TLS is told by its first bytes.
    public var tlsRoutes: [TLSRoute] = []
    /// `default`: the service for anything else, and for clients silent for ``detectTimeout``.
    public var defaultService: String
    /// `detect_timeout`, in seconds in the file: how long a silent client waits before the default service
    /// gets it (protocols where the server speaks first).
    public var detectTimeout: Duration = .seconds(5)
    /// `idle_timeout`, in seconds in the file: replaces the listener's while the multiplexer holds a
    /// connection and after, unless the chosen service has its own; `nil` keeps the listener's.
    public var idleTimeout: Duration?
    /// `max_pending_detections`: connections of this service whose protocol is not known yet,
    /// at once; over it a new connection is closed (and counted).
    public var maxPendingDetections = 256

    /// Routes with a default service and a 5 s detection timeout.
    public init(routes: [DetectedProtocol: String], defaultService: String) {
        self.routes = routes
        self.defaultService = defaultService
    }
}

extension MultiplexServiceConfiguration.DetectedProtocol {
    /// Whether `bytes` (the first of a connection) start this protocol: `nil` while too few have
    /// arrived to tell.
    func matches(_ bytes: ByteBufferView) -> Bool? {
        switch self {
        case .tls:
            // A handshake record (0x16) of SSL 3 or TLS 1.x (0x03, minor version up to 4), whose
            // first message is a ClientHello (0x01).
            guard Self.prefix(bytes, [0x16, 0x03, nil, nil, nil, 0x01]) else { return false }
            if bytes.count >= 3 && bytes[bytes.startIndex + 2] > 0x04 { return false }
            return bytes.count >= 6 ? true : nil
        case .http:
            return Self.httpRequestLine(bytes)
        case .xmpp:
            return Self.startsWithAny(bytes, ["<?xml", "<stream:stream"])
        case .ssh:
            return Self.startsWithAny(bytes, ["SSH-"])
        default:
            return false
        }
    }

    /// Whether the bytes so far agree with `expected` (`nil` matches any byte).
    private static func prefix(_ bytes: ByteBufferView, _ expected: [UInt8?]) -> Bool {
        zip(bytes, expected).allSatisfy { byte, wanted in wanted.map { $0 == byte } ?? true }
    }

    private static func startsWithAny(_ bytes: ByteBufferView, _ texts: [String]) -> Bool? {
        var undecided = false
        for text in texts {
            let utf8 = Array(text.utf8)
            guard prefix(bytes, utf8) else { continue }
            if bytes.count >= utf8.count { return true }
            undecided = true
        }
        return undecided ? nil : false
    }

    /// The starts of an HTTP request that ``http`` recognises: each method of the IANA HTTP Method
    /// Registry and a space (`PRI` aside, and `*`, which is reserved), and the whole HTTP/2 preface.
    /// Tables, so that a read of a connection under detection allocates nothing.
    private static let httpStarts: [[UInt8]] =
        [
            // RFC 9110, then PATCH (RFC 5789).
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
            // The rest of the registry: WebDAV and its extensions, link relations, QUERY.
            "ACL", "BASELINE-CONTROL", "BIND", "CHECKIN", "CHECKOUT", "COPY", "LABEL", "LINK", "LOCK", "MERGE", "MKACTIVITY",
            "MKCALENDAR", "MKCOL", "MKREDIRECTREF", "MKWORKSPACE", "MOVE", "ORDERPATCH", "PROPFIND", "PROPPATCH", "QUERY", "REBIND",
            "REPORT", "SEARCH", "UNBIND", "UNCHECKOUT", "UNLINK", "UNLOCK", "UPDATE", "UPDATEREDIRECTREF", "VERSION-CONTROL",
        ].map { Array("\($0) ".utf8) } + [Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)]

    /// Whether `bytes` start with one of ``httpStarts``: `nil` while they are a proper prefix of one.
    private static func httpRequestLine(_ bytes: ByteBufferView) -> Bool? {
        var undecided = false
        for start in httpStarts {
            switch startsWith(bytes, start) {
            case true?: return true
            case nil: undecided = true
            case false?: break
            }
        }
        return undecided ? nil : false
    }

    /// Whether `bytes` start with `expected`: `nil` while they are a proper prefix of it.
    private static func startsWith(_ bytes: ByteBufferView, _ expected: [UInt8]) -> Bool? {
        var index = bytes.startIndex
        for byte in expected {
            guard index < bytes.endIndex else { return nil }
            guard bytes[index] == byte else { return false }
            index = bytes.index(after: index)
        }
        return true
    }
}

extension NetProxyService {
    /// A service that looks at the first bytes and hands the connection, bytes intact, to the
    /// service for that protocol; `services` are the host's, by name.
    static func multiplex(
        name: String, _ configuration: MultiplexServiceConfiguration, services: [String: NetProxyService],
        context: HostContext
    ) -> NetProxyService {
        let detecting = PendingCount(limit: configuration.maxPendingDetections)
        let router = TLSRouter(configuration.tlsRoutes)
        let counters = MultiplexCounters(configuration, metrics: context.metrics)
        var service = NetProxyService(name: name, allowsHalfClosure: true) { channel, info in
            try channel.pipeline.syncOperations.addHandler(
                Multiplexer(
                    configuration: configuration, router: router, info: info, services: services, detecting: detecting, counters: counters,
                    asyncConnections: context.asyncConnections, accessLog: context.accessLog, logger: context.logger))
        }
        service.idleTimeout = configuration.idleTimeout.map(\.timeAmount)
        return service
    }
}

/// Holds a connection's first bytes until its protocol is known, then hands the connection on
/// and replays them. Connections under detection are capped per service
/// (`max_pending_detections`). A silent client handed to the default service at
/// `detect_timeout` is still a silent client: its idle time counts from its last byte, so the
/// default service's idle timeout closes it on time.
///
/// The rules are ``MultiplexerStateMachine``'s: this handler tells it what happens and does what
/// it returns.
final class Multiplexer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let configuration: MultiplexServiceConfiguration
    private let info: ConnectionInfo
    private let services: [String: NetProxyService]
    private let detecting: PendingCount
    private let counters: MultiplexCounters
    private let asyncConnections: AsyncStream<AsyncServiceConnection>.Continuation
    /// Read before looking the connection's record up: with the log off, no lookup.
    private let accessLog: AccessLog?
    private let logger: Logger
    private var machine: MultiplexerStateMachine
    private var timeout: NIOScheduledCallback?

    init(
        configuration: MultiplexServiceConfiguration, router: TLSRouter, info: ConnectionInfo, services: [String: NetProxyService],
        detecting: PendingCount, counters: MultiplexCounters, asyncConnections: AsyncStream<AsyncServiceConnection>.Continuation,
        accessLog: AccessLog? = nil, logger: Logger
    ) {
        self.accessLog = accessLog
        self.configuration = configuration
        self.info = info
        self.services = services
        self.detecting = detecting
        self.counters = counters
        self.asyncConnections = asyncConnections
        self.logger = logger
        machine = MultiplexerStateMachine(
            routes: configuration.routes, tlsRouter: router, defaultService: configuration.defaultService, detecting: detecting)
    }

    func channelActive(context: ChannelHandlerContext) {
        // Held back: the chosen service gets it.
        perform(machine.channelActive(), context: context)
    }

    private func perform(_ action: MultiplexerStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .reject:
            ConnectionGuard.find(in: context.pipeline.syncOperations)?.listener.limited(
                .pendingDetections,
                "multiplex \(info.service): client \(info.source.displayText) closed: \(detecting.limit) connections under detection, its max_pending_detections"
            )
            context.close(promise: nil)
        case .startDetecting:
            startDetectTimeout(context: context)
        case .stopDetecting:
            timeout?.cancel()
        case .handOff(let decision, let received, let inputClosed):
            timeout?.cancel()
            counters.count(decision)
            hand(to: decision, received: received, inputClosed: inputClosed, context: context)
        case .none:
            break
        }
    }

    private func startDetectTimeout(context: ChannelHandlerContext) {
        timeout = try? context.eventLoop.assumeIsolated().scheduleCallback(
            in: configuration.detectTimeout.timeAmount, handler: DetectTimeout(multiplexer: self, context: context))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        perform(machine.channelRead(unwrapInboundIn(data)), context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // Held back: a service handed the connection gets it after the bytes.
            perform(machine.inputClosed(), context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        perform(machine.channelInactive(), context: context)
        context.fireChannelInactive()
    }

    fileprivate func detectTimeout(context: ChannelHandlerContext) {
        perform(machine.detectTimeout(), context: context)
    }

    /// Gives the connection to the service decided as if it had been accepted for it: activated,
    /// then the bytes held, then the end of input if it came.
    private func hand(to decision: MultiplexDecision, received: ByteBuffer?, inputClosed: Bool, context: ChannelHandlerContext) {
        // The host checked every route at start-up.
        let name = decision.service
        let service = services[name]!
        var info = self.info
        info.service = name
        if accessLog?.isEnabled == true, let record = ConnectionGuard.find(in: context.pipeline.syncOperations)?.record {
            record.route = "\(record.service ?? self.info.service):\(decision.rule.map { "tls_routes[\($0)]" } ?? decision.by.rawValue)"
            record.service = name
        }
        guard service.take(context.channel, info, asyncConnections: asyncConnections, logger: logger) else {
            return context.close(promise: nil)
        }
        logger.debug(
            "multiplexed to \(name) on port \(info.port) by \(decision.logText(configuration.tlsRoutes)): client \(info.source.displayText)",
            metadata: info.loggerMetadata)
        if !service.allowsHalfClosure && !inputClosed {
            try? context.channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: false)
        }
        context.fireChannelActive()
        if let received {
            context.fireChannelRead(wrapInboundOut(received))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        if inputClosed {
            // As on a direct connection: the service gets the bytes, then the end, which closes
            // the connection of a service that does not take half-closure.
            if service.allowsHalfClosure {
                context.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            } else {
                context.channel.close(promise: nil)
            }
        }
    }

    /// Hands a silent client to the default service.
    private struct DetectTimeout: NIOScheduledCallbackHandler {
        let multiplexer: Multiplexer
        let context: ChannelHandlerContext

        func handleScheduledCallback(eventLoop: some EventLoop) {
            multiplexer.detectTimeout(context: context)
        }
    }
}

@available(*, unavailable)
extension Multiplexer: Sendable {}

/// A multiplex service's `netproxy_multiplex_routed_total{service,by}` counters, one for each
/// service its configuration can choose and each reason it can be chosen for, made with the
/// service so that they are exported from zero and counting takes no lock.
struct MultiplexCounters: Sendable {
    private struct Key: Hashable {
        var service: String
        var by: MultiplexDecision.Reason
    }

    private let metrics: HostMetrics
    private let counters: [Key: CoreMetrics.Counter]

    init(_ configuration: MultiplexServiceConfiguration, metrics: HostMetrics) {
        var keys: Set<Key> = [Key(service: configuration.defaultService, by: .default), Key(service: configuration.defaultService, by: .timeout)]
        for (proto, service) in configuration.routes {
            keys.insert(Key(service: service, by: MultiplexDecision.Reason(rawValue: proto.name)!))
        }
        for rule in TLSRouter(configuration.tlsRoutes).rules {
            keys.insert(Key(service: rule.service, by: rule.by))
        }
        var counters: [Key: CoreMetrics.Counter] = [:]
        for key in keys {
            counters[key] = metrics.multiplexRouted(service: key.service, by: key.by.rawValue)
        }
        self.metrics = metrics
        self.counters = counters
    }

    func count(_ decision: MultiplexDecision) {
        let key = Key(service: decision.service, by: decision.by)
        (counters[key] ?? metrics.multiplexRouted(service: key.service, by: key.by.rawValue)).increment()
    }
}

extension MultiplexDecision {
    /// Why, for the hand-over's log line: `http`, `timeout`, `tls_routes[0] (alpn xmpp-client)`
    /// with the ClientHello's name and protocols, `default (a ClientHello that cannot be read,
    /// at byte 43: ...)`.
    func logText(_ rules: [MultiplexServiceConfiguration.TLSRoute]) -> String {
        var text: String
        if let rule {
            let route = rules[rule]
            let parts = [route.serverName.map { "sni \($0)" }, route.applicationProtocol.map { "alpn \($0)" }].compactMap { $0 }
            text = "tls_routes[\(rule)] (\(parts.joined(separator: ", ")))"
        } else {
            text = by.rawValue
        }
        if let clientHelloError {
            text += " (a ClientHello that cannot be read, \(clientHelloError))"
        } else if let clientHello {
            let name = clientHello.serverName.map { "name \($0)" } ?? "no name"
            let protocols = clientHello.applicationProtocols.isEmpty ? "no ALPN" : "ALPN \(clientHello.applicationProtocols.joined(separator: ","))"
            text += " (ClientHello: \(name), \(protocols)\(clientHello.offersEncryptedClientHello ? ", ECH" : ""))"
        }
        return text
    }
}
