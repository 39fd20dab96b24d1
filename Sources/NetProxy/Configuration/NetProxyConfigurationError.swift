/// A configuration the host cannot run: what kind of fault, the key or entry at fault, and one
/// line fit for a log that names both (`forward_services.fw.target: "a" is not host:port`).
public struct NetProxyConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of fault.
    public let kind: Kind
    /// The key or entry the message starts with (`forward_services.fw.target`,
    /// `proxy_port_mappings.15222`); `nil` when the fault is not one entry's (the file's syntax,
    /// two entries at once).
    public let key: String?
    /// The whole message, the key first.
    public let description: String

    /// A kind of configuration fault. A struct rather than an enum, so that a new kind is not a
    /// breaking change.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// The text is not strict JSON (a syntax error, a duplicate key): the message gives the
        /// line and column.
        public static let syntax = Kind("syntax")
        /// A key the host does not know.
        public static let unknownKey = Kind("unknown key")
        /// A value of the wrong type, out of range, or that does not parse.
        public static let invalidValue = Kind("invalid value")
        /// A service name that no service has.
        public static let unknownService = Kind("unknown service")
        /// Entries that cannot hold together: a port used twice, a forward into its own host.
        public static let conflict = Kind("conflict")
        /// A file the configuration names cannot be used: missing, not a regular file, too large,
        /// not a certificate or key, or a socket path that is taken.
        public static let file = Kind("file")

        public var description: String { name }
    }

    /// An error of `kind` whose message is `description`, its key first.
    package init(_ kind: Kind, _ description: String) {
        self.init(kind, key: Self.leadingKey(description), description)
    }

    /// An error of `kind` about `key`, whose message is `description`.
    package init(_ kind: Kind, key: String?, _ description: String) {
        self.kind = kind
        self.key = key
        self.description = description
    }

    /// An ``Kind/invalidValue`` error.
    package init(_ description: String) {
        self.init(.invalidValue, description)
    }

    /// The key a message starts with: the text before the first `": "`, if it has no space.
    private static func leadingKey(_ text: String) -> String? {
        guard let colon = text.range(of: ": ") else { return nil }
        let key = text[..<colon.lowerBound]
        guard !key.isEmpty, !key.contains(" "), !key.contains("\"") else { return nil }
        return String(key)
    }
}
