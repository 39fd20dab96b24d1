import ArgumentParser
import Foundation
import Logging
import NetProxy

/// `netproxy check`: every check `serve` makes of a configuration, without listening, as
/// `nginx -t` and `haproxy -c` do.
struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a configuration as serve would, without listening.",
        discussion: """
            Reads the file, checks every entry, loads the TLS certificates and resolves forward \
            targets' names, then lists the listeners serve would open, each with its trust list, \
            header policy, TLS and what its service does. Prints the warnings serve \
            would log. Exits 1, naming the entry at fault, on the first error. A port that \
            another process holds is found only by serve, when it binds.
            """
    )

    @Option(help: "The JSON configuration file to check (without it: the built-in configuration).")
    var config: String?

    func run() async throws {
        let configuration = try Serve.configuration(config)
        // Nothing to log: the outcome is this command's output.
        let host = try Serve.host(configuration, path: config, logger: Logger(label: "netproxy") { _ in SwiftLogNoOpLogHandler() })
        for warning in host.warnings {
            FileHandle.standardError.write(Data("warning: \(warning)\n".utf8))
        }
        let text =
            "\(config ?? "the built-in configuration") is valid: \(host.plan.count) listener(s)\n"
            + PlanDescription(configuration: configuration, plan: host.plan).text
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
