import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOProxyProtocol
import ProxyProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The IP addresses of this machine: its interfaces' addresses, and every loopback address.
///
/// A snapshot, taken when a configuration is built (start-up and each reload): an address added
/// to an interface later is known from the next reload on.
struct LocalAddresses: Sendable {
    private let addresses: Set<ProxyIPAddress>

    init(_ addresses: Set<ProxyIPAddress>) {
        self.addresses = Set(addresses.map(\.unmapped))
    }

    /// The interfaces' addresses now (none if they cannot be listed: loopback still counts).
    static func current() -> LocalAddresses {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return LocalAddresses([]) }
        defer { freeifaddrs(list) }
        var found: Set<ProxyIPAddress> = []
        var entry = list
        while let current = entry {
            defer { entry = current.pointee.ifa_next }
            if let ip = current.pointee.ifa_addr.flatMap(ProxyIPAddress.init(socketAddress:)) { found.insert(ip) }
        }
        return LocalAddresses(found)
    }

    /// Whether a connection to or from `address` stays on this machine: a loopback address, an
    /// unspecified one (a connect to it reaches this machine), or an interface's.
    func contains(_ address: ProxyIPAddress) -> Bool {
        let address = address.unmapped
        return address.isLoopback || address.isWildcard || addresses.contains(address)
    }
}

extension ProxyIPAddress {
    /// The address of an IPv4 or IPv6 `sockaddr`; `nil` for another family.
    init?(socketAddress raw: UnsafeMutablePointer<sockaddr>) {
        let address: SocketAddress
        switch CInt(raw.pointee.sa_family) {
        case AF_INET: address = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee, host: "") }
        case AF_INET6: address = raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee, host: "") }
        default: return nil
        }
        self.init(address)
    }

    /// 127.0.0.0/8 or ::1.
    var isLoopback: Bool {
        switch unmapped {
        case .v4(let v4): return v4.rawValue >> 24 == 127
        case .v6(let v6): return v6 == ProxyIPv6Address(high: 0, low: 1)
        }
    }
}

/// Name resolution for the start-up checks, bounded in time: a resolver that does not answer
/// must not hold a start or a reload.
enum BoundedResolver {
    /// The IP addresses of each name, for those resolved within `timeout`; a name missing from
    /// the result did not resolve (or not in time).
    static func resolve(_ names: Set<String>, timeout: TimeAmount) -> [String: Set<ProxyIPAddress>] {
        guard !names.isEmpty else { return [:] }
        let results = NIOLockedValueBox<(addresses: [String: Set<ProxyIPAddress>], pending: Int)>(([:], names.count))
        let finished = ConditionLock(value: false)
        for name in names {
            // A thread per name, not a shared pool: a resolver that hangs keeps its thread (until
            // its own timeout), and must not take one another part of the process needs.
            Thread.detachNewThread {
                let addresses = addressesOf(name)
                let last = results.withLockedValue { results in
                    results.addresses[name] = addresses
                    results.pending -= 1
                    return results.pending == 0
                }
                guard last else { return }
                finished.lock()
                finished.unlock(withValue: true)
            }
        }
        if finished.lock(whenValue: true, timeoutSeconds: Double(timeout.nanoseconds) / 1e9) {
            finished.unlock()
        }
        return results.withLockedValue { $0.addresses }
    }

    /// `getaddrinfo`'s TCP addresses for `name`; `nil` if it fails.
    private static func addressesOf(_ name: String) -> Set<ProxyIPAddress>? {
        var hints = addrinfo()
        #if canImport(Glibc)
            hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
        #else
            hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &list) == 0 else { return nil }
        defer { freeaddrinfo(list) }
        var found: Set<ProxyIPAddress> = []
        var entry = list
        while let current = entry {
            defer { entry = current.pointee.ai_next }
            if let ip = current.pointee.ai_addr.flatMap(ProxyIPAddress.init(socketAddress:)) { found.insert(ip) }
        }
        return found
    }
}

extension ProxyIPAddress {
    /// `0.0.0.0` or `::`: a listener there takes every address of the machine.
    var isWildcard: Bool {
        self == .v4(ProxyIPv4Address(0, 0, 0, 0)) || self == .v6(ProxyIPv6Address(high: 0, low: 0))
    }

    /// Whether a listener bound here gets a connection made to `target`: the same address, or
    /// one of this machine's when bound to all (all IPv4 ones for `0.0.0.0`, all for `::`).
    func reaches(by target: ProxyIPAddress, local: LocalAddresses) -> Bool {
        let target = target.unmapped
        guard isWildcard else { return unmapped == target }
        if case .v4 = self, case .v6 = target { return false }
        return local.contains(target)
    }
}
