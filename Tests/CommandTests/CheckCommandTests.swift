import Foundation
import TestSupport
import Testing

/// `netproxy check` and `--version`.
@Suite(.timeLimit(.minutes(1))) struct CheckCommandTests {
    func file(_ json: String) throws -> URL {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-check-\(UUID()).json")
        try Data(json.utf8).write(to: file)
        return file
    }

    /// A valid file: its listeners listed, its warnings on standard error, and no socket bound
    /// (the port is held by this test while the check runs).
    @Test func aValidConfigurationListsItsListenersWithoutBinding() async throws {
        let held = try ListeningSocket()
        defer { held.close() }
        let file = try file(
            #"{"interfaces": ["127.0.0.1"], "proxy_ports": [\#(held.port)], "echo_ports": [], "proxy_port_mappings": {"\#(held.port)": "echo"}, "proxy_trusted_proxies": []}"#
        )
        defer { try? FileManager.default.removeItem(at: file) }
        let output = try await CommandRunner.run(["check", "--config", file.path])
        #expect(output.status == 0, "\(output.standardError)")
        #expect(output.standardOutput == "\(file.path) is valid: 1 listener(s)\n  PROXY on 127.0.0.1:\(held.port) -> echo\n")
        #expect(
            output.standardError
                == "warning: proxy_trusted_proxies is empty: ANY client may send a PROXY header and claim any address\n")
    }

    /// An invalid file: exit status 1 and the file and the entry at fault, as `serve` says it.
    @Test func anInvalidConfigurationNamesTheEntry() async throws {
        let file = try file(#"{"proxy_port_mappings": {"15222": "c2s"}}"#)
        defer { try? FileManager.default.removeItem(at: file) }
        let output = try await CommandRunner.run(["check", "--config", file.path])
        #expect(output.status == 1)
        #expect(output.standardOutput == "")
        let lines = output.standardError.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: \(file.path): proxy_port_mappings: "), "\(output.standardError)")
    }

    @Test func versionIsPrinted() async throws {
        let output = try await CommandRunner.run(["--version"])
        #expect(output.status == 0)
        #expect(output.standardOutput == "0.9.0\n")
    }
}

/// What `serve` says when it cannot start.
@Suite(.timeLimit(.minutes(1))) struct ServeStartFailureTests {
    /// A port another socket holds: one error line naming the listener, and no word of a
    /// shutdown or of draining (nothing was served).
    @Test func aPortInUseIsTheOnlyNews() async throws {
        let held = try ListeningSocket()
        defer { held.close() }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-in-use-\(UUID()).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(#"{"interfaces": ["127.0.0.1"], "echo_ports": [\#(held.port)]}"#.utf8).write(to: file)
        let output = try await CommandRunner.run(["serve", "--config", file.path, "--log-level", "info"], killAfter: 30)
        #expect(output.status == 1)
        #expect(!output.standardError.contains("shutting down"), "\(output.standardError)")
        #expect(!output.standardError.contains("draining"), "\(output.standardError)")
        let errors = output.standardError.split(separator: "\n").filter { $0.hasPrefix("error: ") }
        #expect(errors.count == 1 && errors[0].contains("127.0.0.1:\(held.port)"), "\(output.standardError)")
    }
}
