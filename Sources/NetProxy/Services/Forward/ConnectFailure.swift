import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A failed connect in words an operator reads: "connection refused", "no answer within 5 s",
/// rather than SwiftNIO's descriptions ("connection reset (error set): Connection refused)
/// (errno: 111)"). Used by the forward's log lines and by `netproxy send`.
package enum ConnectFailure {
    package static func describe(_ error: any Error) -> String {
        if let error = error as? ChannelError, case .connectTimeout(let timeout) = error {
            return "no answer within \(timeout.secondsText)"
        }
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode)).lowercased()
        }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first {
                return "\(describe(first.error)) (\(first.target.displayText))"
            }
            if error.dnsAError != nil || error.dnsAAAAError != nil {
                return "\(error.host) did not resolve"
            }
        }
        return "\(error)"
    }
}
