/// A configuration the host cannot run, naming the key or entry at fault.
public struct NetProxyConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String

    /// Creates an error with its message.
    public init(_ description: String) {
        self.description = description
    }
}
