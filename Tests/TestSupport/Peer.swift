import Foundation
import NIOConcurrencyHelpers
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A real PROXY protocol peer from the machine's packages.
public enum Peer {
    /// The executable's path, or `nil` if it is not installed.
    public static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin", "/sbin"]
        return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    public static var inCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Runs the test when the peer is installed, or always in CI, where a missing peer fails.
    public static func available(_ name: String) -> Bool { inCI || find(name) != nil }

    public static func require(_ name: String) throws -> String {
        try #require(find(name), "\(name) is not installed (.ci/run installs it with apt-get)")
    }

    /// Starts a daemon in the foreground; the caller stops it (``ChildProcess/stop(signal:)``).
    ///
    /// - Parameters:
    ///   - standardInput: A descriptor the daemon gets as its standard input, such as a
    ///     ``ListeningSocket`` for HAProxy's `bind fd@0` or nginx's `NGINX=0;`.
    ///   - environment: Variables added to this process's environment.
    ///   - output: A file that receives the daemon's standard output and error; by default
    ///     both are discarded.
    public static func start(
        _ executable: String, _ arguments: [String], standardInput: CInt? = nil, environment: [String: String] = [:], output: URL? = nil
    ) throws -> ChildProcess {
        try ChildProcess(
            executable, arguments, environment: environment, standardInput: standardInput.map { .descriptor($0) } ?? .inherited,
            standardOutput: output.map { .file($0) } ?? .discarded, standardError: .sameAsOutput)
    }

    /// One response of a curl run, and the local endpoint curl used for it.
    public struct CurlTransfer: Sendable {
        public var body: String
        public var localIP: String
        public var localPort: Int
    }

    /// What a curl run fetched: one transfer per URL, in order, on one connection where curl
    /// can keep it (curl writes its endpoint after each), and its exit status and standard
    /// error (where `-v` writes).
    public struct CurlRun: Sendable {
        public var status: Int32
        public var transfers: [CurlTransfer]
        public var standardError: String
    }

    /// Runs curl (`-sS --max-time 10`) with `arguments`, one or more URLs among them.
    public static func runCurl(_ arguments: [String]) async throws -> CurlRun {
        let marker = "\n--netproxy-test-transfer "
        let output = try await ChildProcess.run(
            try require("curl"), ["-sS", "--max-time", "10", "-w", marker + "%{local_ip} %{local_port}\n"] + arguments, killAfter: 30)
        // The first body, then for each transfer the marker, "ip port\n" and the next body.
        let parts = output.standardOutput.components(separatedBy: marker)
        var transfers: [CurlTransfer] = []
        var body = parts[0]
        for part in parts.dropFirst() {
            let endpoint = part.prefix { $0 != "\n" }.split(separator: " ")
            transfers.append(CurlTransfer(body: body, localIP: String(endpoint.first ?? ""), localPort: Int(endpoint.last ?? "") ?? 0))
            body = String(part.drop { $0 != "\n" }.dropFirst())
        }
        return CurlRun(status: output.status, transfers: transfers, standardError: output.standardError)
    }

    /// Runs curl for one URL that answers JSON, as the http service does, and returns the JSON
    /// and the client endpoint curl used (`ip port`).
    public static func curl(_ arguments: [String]) async throws -> (body: [String: Any], client: String) {
        let run = try await runCurl(arguments)
        #expect(run.status == 0, "curl \(arguments): \(run.standardError)")
        let transfer = try #require(run.transfers.first, "curl \(arguments): \(run.standardError)")
        let body = try #require(try JSONSerialization.jsonObject(with: Data(transfer.body.utf8)) as? [String: Any])
        return (body, "\(transfer.localIP) \(transfer.localPort)")
    }

    /// Starts nginx with one `stream` server block, `server`, whose `listen` is on `listener`'s
    /// address and port (with `proxy_protocol` when `readsProxyProtocol`): nginx adopts the inherited socket (`NGINX=0;`, as on a binary upgrade).
    /// With a master process only: nginx 1.22 without one crashes on an inherited socket (fixed
    /// in 1.23.3), and the master relays SIGTERM to its worker. Stop it with
    /// `nginx.stop(signal: SIGTERM)`.
    public static func startNginxStream(
        server: String, readsProxyProtocol: Bool = false, listener: ListeningSocket, in directory: URL
    ) throws -> ChildProcess {
        let module = ["/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so"]
            .first { FileManager.default.fileExists(atPath: $0) }
        let config = """
            \(module.map { "load_module \($0);" } ?? "")
            daemon off;
            worker_processes 1;
            pid \(directory.path)/nginx.pid;
            error_log \(directory.path)/error.log;
            events { worker_connections 64; }
            stream {
                server {
                    listen 127.0.0.1:\(listener.port)\(readsProxyProtocol ? " proxy_protocol" : "");
            \(server)
                }
            }

            """
        let file = directory.appendingPathComponent("nginx.conf")
        try config.write(to: file, atomically: true, encoding: .utf8)
        return try start(
            try require("nginx"), ["-c", file.path, "-p", directory.path],
            standardInput: listener.descriptor, environment: ["NGINX": "0;"], output: directory.appendingPathComponent("nginx.out"))
    }

    /// nginx's error log in `directory`, for a failure message.
    public static func nginxErrors(in directory: URL) -> String {
        (try? String(contentsOf: directory.appendingPathComponent("error.log"), encoding: .utf8)) ?? ""
    }

    /// Starts HAProxy with `config`, whose frontend binds `fd@0`: the listening socket made here
    /// (port 0) and inherited as standard input, so no other process can take the port and
    /// connections made before HAProxy is ready wait in the backlog.
    public static func startHAProxy(_ config: String, in directory: URL) throws -> (haproxy: ChildProcess, port: Int, log: URL) {
        let listener = try ListeningSocket()
        defer { listener.close() }
        let file = directory.appendingPathComponent("haproxy.cfg")
        try config.write(to: file, atomically: true, encoding: .utf8)
        let log = directory.appendingPathComponent("haproxy.log")
        let haproxy = try start(try require("haproxy"), ["-db", "-f", file.path], standardInput: listener.descriptor, output: log)
        return (haproxy, listener.port, log)
    }

    /// HAProxy relaying TCP from its `fd@0` frontend to one backend server, given as the rest of
    /// its `server` line (`127.0.0.1:PORT send-proxy-v2`). No retries: a refused connection is
    /// tried once, so the server sees each client once.
    public static func startHAProxy(tcpServer server: String, in directory: URL) throws -> (haproxy: ChildProcess, port: Int, log: URL) {
        try startHAProxy(
            """
            defaults
                mode tcp
                retries 0
                timeout connect 5s
                timeout client 10s
                timeout server 10s
            frontend in
                bind fd@0
                default_backend netproxy
            backend netproxy
                server s \(server)

            """, in: directory)
    }

    public static func temporaryDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-interop-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }
}

/// Free ports for configurations that need fixed ports (settings keyed by port, ports kept
/// across a reload), taken below the kernel's ephemeral range: a port from inside it (what
/// binding port 0 gives) can be taken, before the test binds it, by any outgoing connection of
/// the tests running at once, which the suite makes by the thousand. Below the range, only an
/// explicit bind takes a port, and within this process none is handed out twice.
public func freePorts(_ count: Int) throws -> [Int] {
    let firstEphemeral = ephemeralPorts.lowerBound
    let candidates = max(1024, firstEphemeral - 12_000)..<firstEphemeral
    var ports: [Int] = []
    var next = candidates.lowerBound + Int.random(in: 0..<candidates.count)
    for _ in 0..<candidates.count where ports.count < count {
        next = next + 1 < candidates.upperBound ? next + 1 : candidates.lowerBound
        guard !handedOutPorts.withLockedValue({ $0.contains(next) }) else { continue }
        // Free on every address: a wildcard bind fails if any socket holds the port.
        guard let probe = try? ListeningSocket(host: "0.0.0.0", port: next, listens: false) else { continue }
        probe.close()
        if handedOutPorts.withLockedValue({ $0.insert(next).inserted }) { ports.append(next) }
    }
    guard ports.count == count else { throw BlockingSocket.Failure(description: "no \(count) free ports in \(candidates)") }
    return ports
}

/// `net.ipv4.ip_local_port_range`, where the kernel picks the ports of outgoing connections.
private let ephemeralPorts: ClosedRange<Int> = {
    let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
    let bounds = text.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
    guard bounds.count == 2, bounds[0] <= bounds[1] else { return 32768...60999 }
    return bounds[0]...bounds[1]
}()

private let handedOutPorts = NIOLockedValueBox<Set<Int>>([])

/// A TCP socket listening on a port the kernel chose, to hand to a peer as an inherited
/// descriptor, with the socket as standard input (HAProxy: `bind fd@0`; nginx: `NGINX=0;` in
/// its environment and a `listen` on the same address and port). No other process can take the
/// port between choosing and binding it, as one could with a port found free and closed again,
/// and connections made before the peer is ready wait in the backlog.
public final class ListeningSocket: @unchecked Sendable {
    public let descriptor: CInt
    public let port: Int
    private var isClosed = false

    /// Binds an IPv4 address and `port` (0: one the kernel chooses), and listens; with
    /// `listens` false it only binds, which keeps the port from other sockets while connects to
    /// it are refused.
    public init(host: String = "127.0.0.1", port requested: Int = 0, listens: Bool = true) throws {
        let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BlockingSocket.Failure(description: "socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(requested).bigEndian)
        let length = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            Glibc.close(fd)
            throw BlockingSocket.Failure(description: "not an IPv4 address: \(host)")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, !listens || listen(fd, 128) == 0 else {
            let failure = BlockingSocket.Failure(description: "bind/listen \(host): errno \(errno)")
            Glibc.close(fd)
            throw failure
        }
        var local = sockaddr_in()
        var localLength = length
        _ = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &localLength) }
        }
        descriptor = fd
        port = Int(UInt16(bigEndian: local.sin_port))
    }

    deinit {
        close()
    }

    /// Closes this process's descriptor; a peer that inherited the socket keeps listening.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(descriptor)
    }
}
