import Hummingbird
import HummingbirdCore
import HummingbirdProxyProtocol
import Testing

/// Runs `router` in an application on 127.0.0.1, on a port the OS chooses, behind `server`,
/// while `body` runs with that port; then stops it. Both suites run their applications this
/// way, each with a router of its own.
func withRunningApplication(
    router: Router<ProxiedRequestContext>, server: HTTPServerBuilder, _ body: (_ port: Int) async throws -> Void
) async throws {
    let port = AsyncStream<Int>.makeStream()
    let app = Application(
        router: router, server: server,
        configuration: .init(address: .hostname("127.0.0.1", port: 0)),
        onServerRunning: { channel in port.continuation.yield(channel.localAddress!.port!) }
    )
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await app.run() }
        var ports = port.stream.makeAsyncIterator()
        let bound = try #require(await ports.next())
        try await body(bound)
        group.cancelAll()
    }
}
