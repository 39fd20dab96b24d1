import Foundation
import TestSupport
import Testing

/// The configuration examples of README.md, each checked by `netproxy check` as the README shows
/// it, so that no example drifts from what `serve` accepts.
@Suite(.timeLimit(.minutes(2))) struct ReadmeConfigurationTests {
    static let readme = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("README.md")

    /// Every ```json block of README.md passes `netproxy check`: exit 0 and no warning. A failure
    /// is recorded at the block's line of README.md.
    @Test func everyConfigurationInTheReadmePassesCheck() async throws {
        let blocks = ReadmeConfiguration.blocks(in: try String(contentsOf: Self.readme, encoding: .utf8))
        #expect(!blocks.isEmpty, "README.md has no ```json block: has the README moved, or the fence changed?")
        for block in blocks {
            if let failure = await ReadmeConfiguration.check(block, file: "README.md") {
                Issue.record(
                    Comment(rawValue: failure),
                    sourceLocation: SourceLocation(fileID: "NetProxy/README.md", filePath: Self.readme.path, line: block.line, column: 1))
            }
        }
    }

    @Test func blocksAreReadWithTheirMarkersAndFenceLines() {
        let markdown = """
            # Example

            ```json
            {"echo_ports": [7]}
            ```

            <!-- snippet: fragment; services c2s -->
            ```jsonc
            "proxy_port_mappings": {"15222": "c2s"},
            "c2s_ports": []
            ```

            ```sh
            netproxy check
            ```
            """
        #expect(
            ReadmeConfiguration.blocks(in: markdown) == [
                .init(line: 3, marker: nil, text: #"{"echo_ports": [7]}"#),
                .init(
                    line: 8, marker: "fragment; services c2s",
                    text: """
                        "proxy_port_mappings": {"15222": "c2s"},
                        "c2s_ports": []
                        """),
            ])
    }

    /// A fragment is checked inside braces opened on its first line (so that `check`'s line
    /// numbers are the block's), and each service registered in code stands in as a forward.
    @Test func fragmentsAndServicesBecomeAWholeConfiguration() throws {
        let block = ReadmeConfiguration.Block(line: 1, marker: "fragment; services c2s s2s", text: #""c2s_ports": [5222]"#)
        #expect(
            try ReadmeConfiguration.configuration(block)
                == #"{ "c2s_ports": [5222] , "forward_services": {"c2s": {"target": "192.0.2.1:9"}, "s2s": {"target": "192.0.2.1:9"}} }"#
        )
        let whole = ReadmeConfiguration.Block(line: 1, marker: nil, text: "{\n  \"echo_ports\": [7]\n}")
        #expect(try ReadmeConfiguration.configuration(whole) == "{\n  \"echo_ports\": [7]\n}")
    }

    /// Certificate and key files are made for the names that use them, under the directory, and
    /// the block's paths are moved there; the rest of the text is unchanged.
    @Test func certificatesAreMadeUnderTheDirectory() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-readme-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let text = """
            {"proxy_tls_certificate": "/etc/np/a.pem", "proxy_tls_key": "/etc/np/a.key", // the default
             "proxy_tls_certificates": {"*.example.net": {"certificate": "/etc/np/w.pem", "key": "w.key"}}}
            """
        let root = directory.path
        #expect(
            try ReadmeConfiguration.withCertificates(text, under: directory) == """
                {"proxy_tls_certificate": "\(root)/etc/np/a.pem", "proxy_tls_key": "\(root)/etc/np/a.key", // the default
                 "proxy_tls_certificates": {"*.example.net": {"certificate": "\(root)/etc/np/w.pem", "key": "\(root)/w.key"}}}
                """)
        for file in ["etc/np/a.pem", "etc/np/w.pem"] {
            let pem = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            #expect(pem.hasPrefix("-----BEGIN CERTIFICATE-----\n"), "\(file)")
        }
        for file in ["etc/np/a.key", "w.key"] {
            let pem = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            #expect(pem.hasPrefix("-----BEGIN PRIVATE KEY-----\n"), "\(file)")
        }
    }

    /// A block that `check` refuses, and a marker that means nothing, fail naming the line.
    @Test func aFailingBlockIsNamedByItsLine() async throws {
        let unknownService = ReadmeConfiguration.Block(line: 42, marker: nil, text: #"{"proxy_port_mappings": {"15222": "c2s"}}"#)
        let failure = await ReadmeConfiguration.check(unknownService, file: "README.md")
        #expect(failure?.hasPrefix("README.md:42: netproxy check exited 1: error: ") == true, "\(failure ?? "passed")")
        #expect(failure?.contains(#"unknown service "c2s""#) == true, "\(failure ?? "passed")")

        let misspelt = ReadmeConfiguration.Block(line: 7, marker: "fragmnet", text: "{}")
        #expect(
            await ReadmeConfiguration.check(misspelt, file: "README.md")
                == #"README.md:7: unknown snippet marker "fragmnet" (known: fragment, services NAME...)"#)
    }
}

/// The ```json blocks of a Markdown file as configurations that `netproxy check` can read.
///
/// A marker on the line just before a block's opening fence, an HTML comment that Markdown does not
/// render (`<!-- snippet: ... -->`, as `scripts/check-snippets.sh` reads on Swift blocks), says how
/// a block that is not a whole configuration becomes one; parts are separated by `;`:
/// - `fragment`: the block is members of the configuration's object, checked inside `{ }`;
/// - `services NAME...`: the configuration is for a host that registers these services in code
///   (`NetProxyHost(configuration:services:)`). `netproxy` has only its built-in ones, so each
///   stands in as a forward service to 192.0.2.1:9 (TEST-NET-1: `check` neither resolves nor
///   connects to an address). Such a block has no `forward_services` of its own (`check` would
///   refuse the key given twice).
///
/// Certificate and key files (`proxy_tls_certificate`, `proxy_tls_key`, `proxy_tls_certificates`),
/// which `check` loads, are made afresh for the names that use them under a temporary directory,
/// and their paths in the block are moved under it. Nothing else is changed: `check` touches no
/// UNIX socket path, binds no port and looks up no user or group.
enum ReadmeConfiguration {
    struct Block: Equatable, Sendable {
        /// The line of the opening fence.
        var line: Int
        var marker: String?
        var text: String
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Where the services registered in code are sent by their stand-ins.
    static let standInTarget = "192.0.2.1:9"

    static func blocks(in markdown: String) -> [Block] {
        let lines = markdown.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var blocks: [Block] = []
        var index = 0
        while index < lines.count {
            let opening = lines[index].trimmingCharacters(in: .whitespaces)
            guard opening.hasPrefix("```") else {
                index += 1
                continue
            }
            var end = index + 1
            while end < lines.count, lines[end].trimmingCharacters(in: .whitespaces) != "```" { end += 1 }
            let language = opening.dropFirst(3).trimmingCharacters(in: .whitespaces)
            if language == "json" || language == "jsonc" {
                blocks.append(
                    Block(
                        line: index + 1, marker: index > 0 ? marker(lines[index - 1]) : nil,
                        text: lines[(index + 1)..<min(end, lines.count)].joined(separator: "\n")))
            }
            index = end + 1
        }
        return blocks
    }

    /// The text of `<!-- snippet: TEXT -->`.
    static func marker(_ line: String) -> String? {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("<!--"), trimmed.hasSuffix("-->") else { return nil }
        let inside = trimmed.dropFirst(4).dropLast(3).trimmingCharacters(in: .whitespaces)
        guard inside.hasPrefix("snippet:") else { return nil }
        return inside.dropFirst("snippet:".count).trimmingCharacters(in: .whitespaces)
    }

    /// The block as a whole configuration, as its marker says.
    static func configuration(_ block: Block) throws(Failure) -> String {
        var fragment = false
        var services: [String] = []
        for part in (block.marker ?? "").split(separator: ";") {
            let words = part.split(separator: " ").map(String.init)
            switch (words.first, words.count) {
            case ("fragment", 1): fragment = true
            case ("services", 2...): services += words.dropFirst()
            default: throw Failure(description: "unknown snippet marker \"\(block.marker ?? "")\" (known: fragment, services NAME...)")
            }
        }
        var text = fragment ? "{ \(block.text) }" : block.text
        if !services.isEmpty {
            guard let close = text.lastIndex(of: "}") else { throw Failure(description: "no closing brace to add the services before") }
            let standIns = services.map { #""\#($0)": {"target": "\#(standInTarget)"}"# }.joined(separator: ", ")
            text.insert(contentsOf: #", "forward_services": {\#(standIns)} "#, at: close)
        }
        return text
    }

    /// `text` with its certificate and key paths moved under `directory`, where the files are made:
    /// a new self-signed certificate for each server name (`localhost` for the default one).
    static func withCertificates(_ text: String, under directory: URL) throws -> String {
        // Only to find the paths: what `check` makes of the text is its own business.
        guard let data = withoutComments(text).data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return text }
        var pairs: [(name: String, certificate: String, key: String)] = []
        if let certificate = object["proxy_tls_certificate"] as? String, let key = object["proxy_tls_key"] as? String {
            pairs.append(("localhost", certificate, key))
        }
        for (name, files) in (object["proxy_tls_certificates"] as? [String: Any] ?? [:]).sorted(by: { $0.key < $1.key }) {
            if let files = files as? [String: Any], let certificate = files["certificate"] as? String, let key = files["key"] as? String {
                pairs.append((name, certificate, key))
            }
        }
        var moved = text
        var made: [String: TestCertificate] = [:]
        for pair in pairs {
            let certificate = try made[pair.certificate] ?? TestCertificate(commonName: pair.name)
            made[pair.certificate] = certificate
            for (path, contents) in [(pair.certificate, certificate.certificatePEM), (pair.key, certificate.privateKeyPEM)] {
                let file = directory.appendingPathComponent(path.hasPrefix("/") ? String(path.dropFirst()) : path)
                try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(contents.utf8).write(to: file)
                moved = moved.replacingOccurrences(of: "\"\(path)\"", with: "\"\(file.path)\"")
            }
        }
        return moved
    }

    /// JSON with comments (`//` to the end of the line, `/* */`) as plain JSON, for finding paths.
    static func withoutComments(_ text: String) -> String {
        var result = ""
        var characters = Array(text)[...]
        var inString = false
        while let character = characters.popFirst() {
            if inString {
                result.append(character)
                if character == "\\", let escaped = characters.popFirst() {
                    result.append(escaped)
                } else if character == "\"" {
                    inString = false
                }
            } else if character == "/", characters.first == "/" {
                while let next = characters.first, next != "\n" { characters.removeFirst() }
            } else if character == "/", characters.first == "*" {
                characters.removeFirst()
                while !characters.isEmpty, !(characters.first == "*" && characters.dropFirst().first == "/") { characters.removeFirst() }
                characters = characters.dropFirst(2)
                result.append(" ")
            } else {
                inString = character == "\""
                result.append(character)
            }
        }
        return result
    }

    /// Runs `netproxy check` on the block; nil when it passes, else why not, naming the block's line.
    static func check(_ block: Block, file: String) async -> String? {
        let place = "\(file):\(block.line)"
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("netproxy-readme-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let text: String
        let output: ChildProcess.Output
        do {
            text = try withCertificates(try configuration(block), under: directory)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let configuration = directory.appendingPathComponent("netproxy.json")
            try Data(text.utf8).write(to: configuration)
            output = try await CommandRunner.run(["check", "--config", configuration.path], killAfter: 30)
        } catch {
            return "\(place): \(error)"
        }
        guard output.status != 0 || !output.standardError.isEmpty else { return nil }
        return "\(place): netproxy check exited \(output.status): \(output.standardError)checked as:\n\(text)"
    }
}
