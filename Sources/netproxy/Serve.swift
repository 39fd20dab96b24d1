import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOProxyProtocol
import NetProxy
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `netproxy serve`: runs the host with the built-in services.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve PROXY ports and regular ports from a configuration file.",
        discussion: """
            Services, each reached by its own ports (<service>_ports), by PROXY ports
            (proxy_port_mappings) or by UNIX sockets (proxy_unix_sockets):
              echo       built in: sends back what it receives
              whoami     built in: answers with the client's addresses as JSON
              http       built in: answers HTTP requests with the same JSON
              forward    relays to a TCP server, with a PROXY header or transparently
                         from the client's own address (forward_services)
              multiplex  tells TLS, HTTP, XMPP and SSH apart by their first bytes and
                         hands each to its service (multiplex_services)
            and Prometheus metrics on metrics_port.

            Without --config: echo on 7000, whoami on 7001 and http on 8080, and PROXY
            ports 17000 (echo), 17001 (whoami) and 18080 (http), on 127.0.0.1 and ::1,
            trusting 127.0.0.1 and ::1.

            SIGHUP (or netproxy reload) re-reads the file. SIGTERM or SIGINT stops
            accepting, lets connections finish for shutdown_grace_period, and exits.
            """
    )

    @Option(help: "A JSON configuration file (mod_net_proxy keys: proxy_ports, proxy_port_mappings, ...).")
    var config: String?

    @Option(help: "Log level: trace, debug, info (the default), notice, warning, error or critical.", transform: Self.logLevel)
    var logLevel: Logger.Level = .info

    @Option(
        help: "Write the process ID to this file (removed on exit), and each reload's outcome to FILE.reload, for `netproxy reload --pid-file`."
    )
    var pidFile: String?

    func run() async throws {
        // Handled from the start: a signal during start-up must neither be lost nor end the process.
        let signals = try SignalPipe.install([SIGINT, SIGTERM, SIGQUIT, SIGHUP])
        var logger = Logger(label: "netproxy") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = logLevel
        let host = try Self.host(Self.configuration(config), path: config, logger: logger) { listeners in
            FileHandle.standardOutput.write(Data(Self.banner(listeners).utf8))
        }
        Self.raiseDescriptorLimit(logger: logger)
        // Taken before the listeners exist: a second server on the same file stops here, and one
        // that fails to start leaves nothing behind.
        let pidFile = try pidFile.map { path throws(CommandFailure) in try PIDFile.create(path) }
        let outcomePath = pidFile.map { ReloadOutcome.path(forPIDFile: $0.path) }
        defer { pidFile?.remove(companion: outcomePath) }
        let signalService = SignalService(signals: signals, logger: logger) { [config, logger] in
            logger.info("SIGHUP received: reloading \(config ?? "the default configuration")")
            let started = ReloadOutcome.now()
            // The outcome is logged and counted by the host, and kept for `netproxy reload`.
            var failure: String?
            do {
                try await host.reload { try Self.load(config) }
            } catch {
                failure = "\(error)"
            }
            if let outcomePath, let reason = ReloadOutcome(started: started, error: failure).save(to: outcomePath) {
                logger.warning("cannot record the reload's outcome for netproxy reload: \(reason)")
            }
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: host),
                    .init(service: signalService, successTerminationBehavior: .gracefullyShutdownGroup),
                ],
                logger: logger
            ))
        do {
            try await group.run()
        } catch {
            // A listener that cannot be bound, said without a stack of wrappers.
            throw CommandFailure("\(error)")
        }
    }

    /// A `--log-level` value: one of swift-log's level names.
    static func logLevel(_ text: String) throws -> Logger.Level {
        guard let level = Logger.Level(rawValue: text) else {
            throw ValidationError("\"\(text)\" is not a log level (trace, debug, info, notice, warning, error or critical)")
        }
        return level
    }

    /// The configuration in the file `path`, or the default one; the error names the file and the entry.
    static func configuration(_ path: String?) throws(CommandFailure) -> NetProxyConfiguration {
        do {
            return try load(path)
        } catch {
            throw CommandFailure("\(error)")
        }
    }

    /// The host for `configuration`, read from `path`, with every check made: what `serve` runs
    /// and `check` inspects. The error names the file and the entry.
    static func host(
        _ configuration: NetProxyConfiguration, path: String?, logger: Logger,
        onServerRunning: @escaping @Sendable ([NetProxyHost.BoundListener]) async -> Void = { _ in }
    ) throws(CommandFailure) -> NetProxyHost {
        do {
            return try NetProxyHost(configuration: configuration, logger: logger, onServerRunning: onServerRunning)
        } catch {
            throw CommandFailure("\(path ?? "configuration"): \(error)")
        }
    }

    /// The configuration file `path`, or the default one without a path; the error names the file.
    static func load(_ path: String?) throws(NetProxyConfigurationError) -> NetProxyConfiguration {
        guard let path else { return .builtinServicesOnLoopback }
        let data = try readFile(path)
        do {
            return try NetProxyConfiguration(json: data)
        } catch {
            throw NetProxyConfigurationError(error.kind, key: error.key, "\(path): \(error)")
        }
    }

    /// A regular file's bytes, read without blocking (see `RegularFile`); the error says why
    /// not (missing, a directory, a FIFO, too large, no permission).
    static func readFile(_ path: String) throws(NetProxyConfigurationError) -> Data {
        do {
            return Data(try RegularFile.contents(of: path, sizeLimit: RegularFile.configurationSizeLimit))
        } catch {
            throw NetProxyConfigurationError(.file, key: nil, "cannot read \(path): \(error)")
        }
    }

    /// Raises the soft descriptor limit to the hard one and logs both.
    static func raiseDescriptorLimit(logger: Logger) {
        guard let before = DescriptorLimit.current else { return }
        if before.soft >= before.hard {
            logger.info("descriptor limit: \(before.soft) (soft and hard)")
        } else if let error = DescriptorLimit.raiseSoftToHard() {
            logger.warning("descriptor limit: soft \(before.soft), hard \(before.hard); raising the soft limit failed (errno \(error))")
        } else {
            logger.info("descriptor limit: soft \(before.soft) raised to the hard limit, \(before.hard)")
        }
    }

    /// What listens where, and one command to try each PROXY port.
    static func banner(_ listeners: [NetProxyHost.BoundListener]) -> String {
        var text = "netproxy is listening:\n"
        for listener in listeners {
            text += "  \(listener.plan.kind.summary) \(listener.address.displayText)\n"
        }
        let tries = listeners.compactMap(\.tryCommand)
        if !tries.isEmpty {
            text += "Try:\n"
            for command in tries { text += "  \(command)\n" }
        }
        return text
    }
}

extension ListenerPlan.Kind {
    var summary: String {
        if isMetrics { return "metrics".padding(toLength: 22, withPad: " ", startingAt: 0) }
        if !isProxy { return "\(service ?? "")".padding(toLength: 22, withPad: " ", startingAt: 0) }
        return "\(service ?? "unmapped") (PROXY\(isTLS ? "+TLS" : ""))".padding(toLength: 22, withPad: " ", startingAt: 0)
    }
}

extension NetProxyHost.BoundListener {
    /// A command that exercises this listener, for PROXY ports.
    var tryCommand: String? {
        // `send` speaks TCP only.
        guard plan.kind.isProxy, let service = plan.kind.service, plan.path == nil else { return nil }
        let tls = plan.kind.isTLS
        let target = address.displayText
        if service == "http" {
            return "curl --haproxy-protocol \(tls ? "-k https" : "http")://\(target)/"
        }
        let host = address.ipAddress.map { $0.contains(":") ? "::1" : $0 } ?? "127.0.0.1"
        return
            "echo hello | netproxy send --source 192.0.2.1:51234 \(host) \(address.port ?? 0)\(tls ? "   # TLS after the header: use curl or openssl s_client" : "")"
    }
}
