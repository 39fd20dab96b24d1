#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The process's descriptor limit (`RLIMIT_NOFILE`): every connection takes a descriptor.
package enum DescriptorLimit {
    /// The soft and hard limits, if they can be read.
    package static var current: (soft: UInt64, hard: UInt64)? {
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return nil }
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }

    /// Raises the soft limit to the hard one, as servers do (the usual soft default, 1024, is far
    /// below what one host can serve). Returns the errno when the system refuses.
    package static func raiseSoftToHard() -> CInt? {
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return errno }
        guard limit.rlim_cur < limit.rlim_max else { return nil }
        limit.rlim_cur = limit.rlim_max
        return setrlimit(resource, &limit) == 0 ? nil : errno
    }

    #if canImport(Glibc)
        private static let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
        private static let resource = RLIMIT_NOFILE
    #endif
}
