import ArgumentParser
import Foundation
import NetProxy

@main
struct NetProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netproxy",
        abstract: "PROXY protocol tools.",
        version: NetProxyHost.version,
        subcommands: [Serve.self, Check.self, Send.self, Decode.self, Reload.self],
        defaultSubcommand: Serve.self
    )

    /// Runs the command; a ``CommandFailure`` becomes one `error: ...` line and exit status 1.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let failure as CommandFailure {
            FileHandle.standardError.write(Data("error: \(failure.description)\n".utf8))
            Foundation.exit(1)
        } catch {
            exit(withError: error)
        }
    }
}
