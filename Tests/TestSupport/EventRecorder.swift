import NIOConcurrencyHelpers
import NIOCore

/// Records, in order, what reaches it at the end of a pipeline: activation, reads, user events,
/// the end of input and inactivation; usable from any thread.
///
/// The tests of the PROXY handler (what it passes on to the handlers after it) and those of
/// the host's services (what a service sees) ask the same question of a pipeline: one recorder
/// serves both.
public final class EventRecorder<UserEvent: Equatable & Sendable>: ChannelInboundHandler, Sendable {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    public enum Event: Equatable, Sendable {
        case active
        /// A user event of the recorder's `UserEvent` type.
        case user(UserEvent)
        /// Any other user event, described.
        case event(String)
        case read(String)
        /// `ChannelEvent.inputClosed`: the peer half-closed.
        case inputClosed
        case inactive
    }

    private let recorded = NIOLockedValueBox<[Event]>([])
    private let inactive: EventLoopPromise<Void>?
    private let answer: String?

    /// - Parameters:
    ///   - inactive: Succeeded when the channel goes inactive.
    ///   - answer: Written, and the channel closed once it is, when the input ends.
    public init(inactive: EventLoopPromise<Void>? = nil, answerOnInputClosed answer: String? = nil) {
        self.inactive = inactive
        self.answer = answer
    }

    public var events: [Event] { recorded.withLockedValue { $0 } }

    /// What was read, all of it.
    public var readBytes: String {
        events.compactMap { if case .read(let text) = $0 { return text } else { return nil } }.joined()
    }

    public func channelActive(context: ChannelHandlerContext) {
        record(.active)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        record(.read(String(buffer: unwrapInboundIn(data))))
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? UserEvent {
            record(.user(event))
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            record(.inputClosed)
            if let answer {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: answer))).assumeIsolated().whenComplete { _ in
                    context.close(promise: nil)
                }
            }
        } else {
            record(.event(String(describing: event)))
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        record(.inactive)
        inactive?.succeed()
    }

    private func record(_ event: Event) {
        recorded.withLockedValue { $0.append(event) }
    }
}
