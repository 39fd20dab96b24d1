import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Two servers that publish the same UNIX socket path at the same moment: both find it free, and
/// the last rename wins, so the other would listen where no client can reach it. Each looks for
/// the other's socket after publishing; at most one keeps running.
@Suite(.timeLimit(.minutes(2))) struct UnixSocketRaceTests {
    static func config(_ path: String) -> String {
        #"{"echo_ports": [], "proxy_unix_sockets": {"\#(path)": "echo"}}"#
    }

    /// Another process listening where a server publishing the path binds (between its bind and
    /// its rename: in its private directory, or next to the path, as earlier versions did) is seen
    /// as a competitor.
    @Test(.enabled(if: Peer.available("python3")), arguments: [".c2s.sock.99999.0/s", ".c2s.sock.99999.0"])
    func aSocketBeingPublishedByAnotherProcessStopsTheStart(temporaryName: String) async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("c2s.sock").path
        let temporary = directory.appendingPathComponent(temporaryName).path
        // Listens on the temporary path until killed; says so once listening.
        let other = try ChildProcess(
            try Peer.require("python3"),
            [
                "-c",
                "import os, socket, sys, time; os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True); s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); print('ready', flush=True); time.sleep(600)",
                temporary,
            ], standardOutput: .pipe)
        defer { other.stop() }
        try #require(other.readLine(within: 30) == "ready")
        // A server that wrongly starts prints its banner and is killed when the test ends.
        let server = try ServeProcess(config: Self.config(path))
        #expect(server.banner == "")
        let output = try await server.waitForExit()
        #expect(output.status == 1)
        // The entry at fault, and the competitor's socket.
        let last = output.errors.split(separator: "\n").last ?? ""
        #expect(last.hasPrefix("error: proxy_unix_sockets.\(path): ") && last.contains("(\(temporary))"), "\(output.errors)")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    /// Started from a shell with `&`, the two are a fraction of a millisecond apart, often within
    /// the window between finding the path free and renaming onto it.
    @Test func twoServersStartedTogetherNeverBothServe() async throws {
        let directory = try Peer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("s.sock").path
        let config = directory.appendingPathComponent("config.json")
        try Data(Self.config(path).utf8).write(to: config)
        let script = """
            both=0
            for round in 1 2 3 4 5 6 7 8 9 10; do
              "$1" serve --config "$2" >"$3/a.out" 2>/dev/null & a=$!
              "$1" serve --config "$2" >"$3/b.out" 2>/dev/null & b=$!
              # Each has either started (its banner comes after its check for a competitor)
              # or given up; a loaded machine may take a while for either.
              settled() { ! kill -0 $1 2>/dev/null || grep -q listening "$2" 2>/dev/null; }
              for i in $(seq 400); do settled $a "$3/a.out" && settled $b "$3/b.out" && break; sleep 0.05; done
              up=0
              kill -0 $a 2>/dev/null && up=$((up + 1))
              kill -0 $b 2>/dev/null && up=$((up + 1))
              [ $up = 2 ] && both=$((both + 1))
              kill -TERM $a $b 2>/dev/null
              wait $a $b
            done
            echo "both up: $both"
            """
        let run = try await ChildProcess.run(
            "/bin/sh", ["-c", script, "sh", CommandRunner.executable.path, config.path, directory.path], standardError: .inherited)
        #expect(run.status == 0)
        #expect(run.standardOutput == "both up: 0\n")
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
