import Logging
import NIOConcurrencyHelpers
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

    /// A run of failed accepts on a listener, shared by its sockets (one per event loop), so
    /// that the run is logged once however many of them fail.
    final class Episode: Sendable {
        private struct State {
            var failures = 0
            var start = NIODeadline.now()
        }

        private let state = NIOLockedValueBox(State())

        /// Counts a failure; `true` for the first of a run.
        func failed() -> Bool {
            state.withLockedValue { state in
                defer { state.failures += 1 }
                if state.failures == 0 { state.start = .now() }
                return state.failures == 0
            }
        }

        /// Ends the run, if there is one: how many accepts failed, and for how long.
        func ended() -> (failures: Int, duration: TimeAmount)? {
            state.withLockedValue { state in
                guard state.failures > 0 else { return nil }
                defer { state.failures = 0 }
                return (state.failures, .now() - state.start)
            }
        }
    }

    /// Read when logging: a reload may have given the listener another role since.
    private let slot: ListenerSlot
    private let logger: Logger
    private let metrics: HostMetrics
    private let episode: Episode
    private var inEpisode = false
    private var resume: Scheduled<Void>?

    init(slot: ListenerSlot, episode: Episode, logger: Logger, metrics: HostMetrics) {
        self.slot = slot
        self.episode = episode
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
        var bound = slot.role.plan
        bound.port = context.channel.localAddress?.port ?? bound.port
        return bound.description
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Only a socket that saw failures asks, so a busy listener takes no lock per connection.
        if inEpisode {
            inEpisode = false
            if let (failures, duration) = episode.ended() {
                logger.notice(
                    "accepting again on \(listener(context)) after \(failures) failed accept(s) over \(duration.nanoseconds / 1_000_000) ms")
            }
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let error = error as? IOError else { return context.fireErrorCaught(error) }
        let name = Self.errnoName(error.errnoCode)
        let waitingHelps = [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode)
        metrics.acceptFailed(errno: name)
        inEpisode = true
        if episode.failed() {
            if waitingHelps {
                let limit = DescriptorLimit.current.map { "soft limit \($0.soft), hard limit \($0.hard)" } ?? "limit unknown"
                logger.error(
                    "cannot accept on \(listener(context)): \(name) (\(String(cString: strerror(error.errnoCode)))); descriptors: \(limit); pausing accepts for \(Self.pause.nanoseconds / 1_000_000) ms at a time until one succeeds"
                )
            } else {
                logger.warning("accept failed on \(listener(context)): \(name) (\(String(cString: strerror(error.errnoCode))))")
            }
        }
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
