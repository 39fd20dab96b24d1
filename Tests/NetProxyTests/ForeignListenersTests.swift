import Foundation
import NIOCore
import TestSupport
import Testing

@testable import NetProxy

/// The check that catches a second process sharing the host's port through `SO_REUSEPORT`.
struct ForeignListenersTests {
    /// A listening socket with `SO_REUSEPORT` in another process, as a second host would have.
    static func foreignListener(on address: String) throws -> (ChildProcess, port: Int) {
        let script = """
            import socket, sys
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((sys.argv[1], 0))
            s.listen(8)
            print(s.getsockname()[1], flush=True)
            sys.stdin.read()
            """
        let process = try ChildProcess(
            try Peer.require("python3"), ["-c", script, address], standardInput: .pipe, standardOutput: .pipe)
        let line = process.readLine(within: 30)
        let port = try #require(Int(line), "python3 did not print its port: \(String(reflecting: line))")
        return (process, port)
    }

    @Test func anotherProcessOnTheSameAddressIsFound() throws {
        let (process, port) = try Self.foreignListener(on: "127.0.0.1")
        defer { process.stop() }
        let same = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        let otherAddress = try SocketAddress(ipAddress: "127.0.0.2", port: port)
        let otherPort = try SocketAddress(ipAddress: "127.0.0.1", port: port == 65535 ? 1 : port + 1)
        let wildcard = try SocketAddress(ipAddress: "0.0.0.0", port: port)
        #expect(ForeignListeners.shared(among: [same, otherAddress, otherPort, wildcard]) == [same, wildcard])
    }

    /// Own sockets are told apart by `/proc/self/fd`; without `/proc` the check cannot tell
    /// anything (and answers nothing), so the test needs it.
    @Test(
        .enabled(
            if: FileManager.default.isReadableFile(atPath: "/proc/net/tcp") && FileManager.default.isReadableFile(atPath: "/proc/self/fd"),
            "needs /proc/net/tcp and /proc/self/fd, without which no listener is ever reported"))
    func thisProcessesOwnSocketsAreNotForeign() throws {
        let own = try ListeningSocket()
        defer { own.close() }
        // The socket is in the table the check reads: the empty answer below is a decision.
        try #require(
            listensExactly(on: "127.0.0.1", port: own.port) == true, "/proc/net/tcp does not list this process's listener on port \(own.port)")
        #expect(ForeignListeners.shared(among: [try SocketAddress(ipAddress: "127.0.0.1", port: own.port)]) == [])
    }
}
