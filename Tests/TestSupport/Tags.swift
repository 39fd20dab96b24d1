import Testing

extension Tag {
    /// Starts a program the host works with (HAProxy, nginx, curl, openssl, Prosody), so it
    /// depends on what is installed and on how that program behaves.
    @Tag public static var interop: Self

    /// Takes more than about 5 seconds on its own: it waits out real timeouts of seconds, moves
    /// hundreds of megabytes, or runs a separate `netproxy` process to its limits.
    @Tag public static var slow: Self

    /// Runs in a network namespace of its own (`unshare -n`).
    @Tag public static var namespace: Self
}
