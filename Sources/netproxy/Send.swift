import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import NIOProxyProtocol
import NetProxy
import ProxyProtocol

/// `netproxy send`: connects, sends a PROXY header, then relays standard input and output.
struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect, send a PROXY header, then relay standard input and output like nc.",
        discussion: """
            Without --source the header carries the connection's own addresses (as curl \
            --haproxy-protocol does). When standard input ends, the sending side is shut down and \
            the command waits for the server to close.
            """
    )

    @Argument(help: "The host (an IP address) to connect to.")
    var host: String

    @Argument(help: "The port to connect to.")
    var port: Int

    @Flag(name: .customLong("v1"), help: "Send a version 1 (text) header instead of version 2.")
    var versionOne = false

    @Flag(help: "Send a LOCAL command (version 2): the connection's own addresses apply.")
    var local = false

    @Flag(help: "Send no addresses: PROXY UNKNOWN (v1) or PROXY with UNSPEC (v2).")
    var unknown = false

    @Option(help: "The client address to claim, IP:PORT or [IPv6]:PORT.")
    var source: String?

    @Option(help: "The destination address to claim; default: the address connected to.")
    var destination: String?

    @Flag(help: "Claim a UDP (DGRAM) flow for the --source and --destination addresses (version 2).")
    var datagram = false

    @Option(name: .customLong("tlv"), help: "A TLV as TYPE:HEX, TYPE in decimal or 0x hex (repeatable).")
    var tlvs: [String] = []

    @Option(help: "An AUTHORITY TLV (host name).")
    var authority: String?

    @Option(help: "A UNIQUE_ID TLV (text, at most 128 bytes).")
    var uniqueID: String?

    @Flag(help: "Append a CRC32C TLV with the header's checksum.")
    var crc32c = false

    func run() async throws {
        let version: ProxyVersion = versionOne ? .v1 : .v2
        let tlvList = try makeTLVs()
        if version == .v1 && (!tlvList.isEmpty || crc32c || local || datagram) {
            throw CommandFailure("--v1 headers carry no TLVs, CRC32C, LOCAL or DGRAM")
        }
        // A transport is claimed for claimed addresses only: LOCAL and UNSPEC headers carry
        // none, and the connection's own addresses are TCP's.
        if datagram && (local || unknown) {
            throw CommandFailure("--datagram claims addresses of a UDP flow: --local and --unknown send no addresses")
        }
        if datagram && source == nil {
            throw CommandFailure("--datagram needs --source: the connection's own addresses are TCP's")
        }
        guard (0...65535).contains(port) else {
            throw CommandFailure("\(port) is not a port (0-65535)")
        }
        guard let remote = try? SocketAddress(ipAddress: host, port: port) else {
            throw CommandFailure("\(host) port \(port) is not an IP address and port")
        }
        // Made once here for its errors; each channel gets its own, made on its loop.
        _ = try makeHandler(version: version, tlvs: tlvList, remote: remote)

        let group = MultiThreadedEventLoopGroup.singleton
        let closed = group.any().makePromise(of: Void.self)
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handler = try makeHandler(version: version, tlvs: tlvList, remote: remote)
                        try channel.pipeline.syncOperations.addHandlers([handler, StandardOutputWriter(closed: closed)])
                    }
                }
                .connect(to: remote)
                .get()
        } catch {
            closed.fail(error)
            throw CommandFailure("cannot connect to \(remote.displayText): \(ConnectFailure.describe(error))")
        }
        Thread.detachNewThread {
            while true {
                let data = FileHandle.standardInput.availableData
                if data.isEmpty { break }
                channel.writeAndFlush(ByteBuffer(bytes: data), promise: nil)
            }
            channel.close(mode: .output, promise: nil)
        }
        try await closed.futureResult.get()
        try? await channel.close()
    }

    private func makeHandler(version: ProxyVersion, tlvs: ProxyTLVs, remote: SocketAddress) throws -> ProxyProtocolClientHandler {
        do {
            if local {
                return try ProxyProtocolClientHandler(
                    header: ProxyHeader(version: .v2, command: .local, addresses: .unspecified, tlvs: tlvs), appendingCRC32C: crc32c)
            }
            if unknown {
                return try ProxyProtocolClientHandler(
                    header: ProxyHeader(version: version, addresses: .unspecified, tlvs: tlvs), appendingCRC32C: crc32c)
            }
            guard let source else {
                if destination != nil { throw CommandFailure("--destination needs --source") }
                return try ProxyProtocolClientHandler(version: version, tlvs: tlvs, appendingCRC32C: crc32c)
            }
            let claimedSource = try Self.endpoint(source, "--source")
            let claimedDestination = try destination.map { try Self.endpoint($0, "--destination") } ?? remote
            guard let addresses = ProxyAddresses(source: claimedSource, destination: claimedDestination) else {
                throw CommandFailure("--source and --destination must be IP addresses")
            }
            let header = ProxyHeader(version: version, addresses: addresses, transport: datagram ? .datagram : .stream, tlvs: tlvs)
            return try ProxyProtocolClientHandler(header: header, appendingCRC32C: crc32c)
        } catch let error as ProxyHeaderEncodingError {
            throw CommandFailure("cannot build the header: \(error)")
        }
    }

    private func makeTLVs() throws -> ProxyTLVs {
        var list = ProxyTLVs()
        for entry in tlvs {
            let parts = entry.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let typeText = String(parts[0])
            let type = typeText.hasPrefix("0x") ? UInt8(typeText.dropFirst(2), radix: 16) : UInt8(typeText)
            guard parts.count == 2, let type else {
                throw CommandFailure("--tlv \(entry): expected TYPE:HEX with TYPE from 0 to 255")
            }
            let bytes = try HexText.decode(String(parts[1]))
            list.append(
                try Self.tlv("--tlv \(typeText)") { () throws(ProxyHeaderEncodingError) in try ProxyTLV(type: ProxyTLVType(type), bytes: bytes) })
        }
        if let authority {
            list.append(try Self.tlv("--authority") { () throws(ProxyHeaderEncodingError) in try .authority(authority) })
        }
        if let uniqueID {
            list.append(try Self.tlv("--unique-id") { () throws(ProxyHeaderEncodingError) in try .uniqueID(Array(uniqueID.utf8)) })
        }
        return list
    }

    /// The TLV an option asks for, or a failure that names the option and says what is too long.
    private static func tlv(_ option: String, _ make: () throws(ProxyHeaderEncodingError) -> ProxyTLV) throws(CommandFailure) -> ProxyTLV {
        do {
            return try make()
        } catch {
            throw CommandFailure("\(option): \(error)")
        }
    }

    /// Parses `IP:PORT` or `[IPv6]:PORT`.
    static func endpoint(_ text: String, _ option: String) throws -> SocketAddress {
        var host = Substring(text)
        guard let colon = host.lastIndex(of: ":") else { throw CommandFailure("\(option) \(text): expected IP:PORT") }
        let portText = host[host.index(after: colon)...]
        host = host[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard let port = Int(portText), (0...65535).contains(port),
            let address = try? SocketAddress(ipAddress: String(host), port: port)
        else { throw CommandFailure("\(option) \(text): expected IP:PORT") }
        return address
    }
}

/// Copies what the server sends to standard output; completes `closed` when the server is done.
final class StandardOutputWriter: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    let closed: EventLoopPromise<Void>

    init(closed: EventLoopPromise<Void>) {
        self.closed = closed
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        FileHandle.standardOutput.write(Data(buffer.readableBytesView))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            closed.succeed()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed.succeed()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        closed.fail(CommandFailure("connection failed: \(ConnectFailure.describe(error))"))
        context.close(promise: nil)
    }
}
