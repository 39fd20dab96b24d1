import Foundation
import NIOCore
import TestSupport
import Testing

@testable import NetProxy

/// The check that catches a second process sharing the host's port through `SO_REUSEPORT`.
struct ForeignListenersTests {
    /// A listening socket with `SO_REUSEPORT` in another process, as a second host would have.
    static func foreignListener(on address: String) throws -> (Process, port: Int) {
        let script = """
            import socket, sys
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((sys.argv[1], 0))
            s.listen(8)
            print(s.getsockname()[1], flush=True)
            sys.stdin.read()
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, address]
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = Pipe()
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { break }
            line.append(chunk)
        }
        let port = try #require(Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        return (process, port)
    }

    @Test func anotherProcessOnTheSameAddressIsFound() throws {
        let (process, port) = try Self.foreignListener(on: "127.0.0.1")
        defer { Peer.stop(process) }
        let same = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        let otherAddress = try SocketAddress(ipAddress: "127.0.0.2", port: port)
        let otherPort = try SocketAddress(ipAddress: "127.0.0.1", port: port == 65535 ? 1 : port + 1)
        let wildcard = try SocketAddress(ipAddress: "0.0.0.0", port: port)
        #expect(ForeignListeners.shared(among: [same, otherAddress, otherPort, wildcard]) == [same, wildcard])
    }

    @Test func thisProcessesOwnSocketsAreNotForeign() throws {
        let own = try ListeningSocket()
        defer { own.close() }
        #expect(ForeignListeners.shared(among: [try SocketAddress(ipAddress: "127.0.0.1", port: own.port)]) == [])
    }
}
