import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Handles a listening socket's accept errors: after one that waiting can cure (out of
/// descriptors or memory) it stops accepting for ``pause``, instead of retrying `accept` at full
/// speed; it counts every failure, logs the first of an episode with the descriptor limit, and
/// logs again when a connection is accepted after it.
///
/// SwiftNIO's `AcceptBackoffHandler` does not do here: it delays the next `read`, but when the
/// first accept of a read fails the channel asks for no new `read` (one is still pending) and
/// stays registered for readability, so the event loop spins. Turning `autoRead` off takes the
/// socket out of the poll set; turning it back on registers it again.
final class AcceptErrorHandler: ChannelInboundHandler {
    typealias InboundIn = Channel

    /// How long a listener stops accepting after running out of resources.
    static let pause = TimeAmount.milliseconds(500)

    private let plan: ListenerPlan
    private let logger: Logger
    private let metrics: HostMetrics
    private var failuresInEpisode = 0
    private var episodeStart = NIODeadline.now()
    private var resume: Scheduled<Void>?

    init(listener: ListenerPlan, logger: Logger, metrics: HostMetrics) {
        self.plan = listener
        self.logger = logger
        self.metrics = metrics
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        resume?.cancel()
    }

    func channelInactive(context: ChannelHandlerContext) {
        resume?.cancel()
        context.fireChannelInactive()
    }

    /// The listener, with the port it is bound to.
    private func listener(_ context: ChannelHandlerContext) -> String {
        var bound = plan
        bound.port = context.channel.localAddress?.port ?? plan.port
        return bound.description
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if failuresInEpisode > 0 {
            let milliseconds = (NIODeadline.now() - episodeStart).nanoseconds / 1_000_000
            logger.notice("accepting again on \(listener(context)) after \(failuresInEpisode) failed accept(s) over \(milliseconds) ms")
            failuresInEpisode = 0
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let error = error as? IOError else { return context.fireErrorCaught(error) }
        let name = Self.errnoName(error.errnoCode)
        let waitingHelps = [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode)
        metrics.acceptFailed(errno: name)
        if failuresInEpisode == 0 {
            episodeStart = .now()
            if waitingHelps {
                let limit = DescriptorLimit.current.map { "soft limit \($0.soft), hard limit \($0.hard)" } ?? "limit unknown"
                logger.error(
                    "cannot accept on \(listener(context)): \(name) (\(String(cString: strerror(error.errnoCode)))); descriptors: \(limit); pausing accepts for \(Self.pause.nanoseconds / 1_000_000) ms at a time until one succeeds"
                )
            } else {
                logger.warning("accept failed on \(listener(context)): \(name) (\(String(cString: strerror(error.errnoCode))))")
            }
        }
        failuresInEpisode += 1
        if waitingHelps && resume == nil {
            pauseAccepting(context: context)
        }
    }

    private func pauseAccepting(context: ChannelHandlerContext) {
        guard let options = context.channel.syncOptions, (try? options.setOption(.autoRead, value: false)) != nil else { return }
        resume = context.eventLoop.assumeIsolated().scheduleTask(in: Self.pause) { [self] in
            resume = nil
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }

    /// The symbolic name of the errno values an accept can fail with; the number for others.
    static func errnoName(_ code: CInt) -> String {
        switch code {
        case EMFILE: return "EMFILE"
        case ENFILE: return "ENFILE"
        case ENOBUFS: return "ENOBUFS"
        case ENOMEM: return "ENOMEM"
        case ECONNABORTED: return "ECONNABORTED"
        case EPERM: return "EPERM"
        case EPROTO: return "EPROTO"
        default: return "errno_\(code)"
        }
    }
}
