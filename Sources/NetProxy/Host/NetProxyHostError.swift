/// Why the host could not start, reload or listen, apart from a configuration it cannot run
/// (``NetProxyConfigurationError``).
public struct NetProxyHostError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public let kind: Kind
    /// One line fit for a log.
    public let description: String

    /// A kind of host failure. A struct rather than an enum, so that a new kind is not a
    /// breaking change.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// `start()` was called a second time.
        public static let alreadyStarted = Kind("already started")
        /// A reload before the host runs.
        public static let notRunning = Kind("not running")
        /// A start or reload met a shutdown, and undid what it did.
        public static let shuttingDown = Kind("shutting down")
        /// A reload while another is in progress.
        public static let reloadInProgress = Kind("reload in progress")
        /// A reload that did not finish within its deadline, and was abandoned.
        public static let reloadTimedOut = Kind("reload timed out")
        /// A listener could not be bound: the address is in use (by this host or another
        /// process), not this machine's, or not allowed.
        public static let cannotListen = Kind("cannot listen")

        public var description: String { name }
    }

    init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}
