import ArgumentParser
import Foundation
import NIOCore
import NetProxy
import ProxyProtocol

/// `netproxy decode`: prints the PROXY header at the start of a file or of standard input.
struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode a PROXY protocol header and print it as JSON.",
        discussion: """
            Reads raw bytes (or hex text with --hex) from FILE or standard input. Prints one JSON \
            object and exits 0 for a valid header; prints 'error: ...' and exits 1 otherwise.
            """
    )

    @Argument(help: "The file to read; standard input if omitted.")
    var file: String?

    @Flag(help: "The input is hexadecimal text; whitespace is ignored.")
    var hex = false

    func run() throws {
        let data: Data
        if let file {
            guard let contents = FileManager.default.contents(atPath: file) else {
                throw CommandFailure("cannot read \(file)")
            }
            data = contents
        } else {
            data = FileHandle.standardInput.readDataToEndOfFile()
        }
        let bytes = hex ? try HexText.decode(String(decoding: data, as: UTF8.self)) : Array(data)
        print(try HeaderReport.decode(ByteBuffer(bytes: bytes)))
    }
}

/// Turns hex text into bytes.
enum HexText {
    static func decode(_ text: String) throws(CommandFailure) -> [UInt8] {
        var bytes: [UInt8] = []
        var pending: UInt8?
        for (offset, character) in text.enumerated() where !character.isWhitespace {
            guard let digit = character.hexDigitValue else {
                throw CommandFailure("invalid hex character \(String(reflecting: String(character))) at character \(offset)")
            }
            if let high = pending {
                bytes.append(high << 4 | UInt8(digit))
                pending = nil
            } else {
                pending = UInt8(digit)
            }
        }
        guard pending == nil else { throw CommandFailure("odd number of hex digits") }
        return bytes
    }
}

/// The JSON that `decode` prints for the bytes it read.
enum HeaderReport {
    static func decode(_ input: ByteBuffer) throws(CommandFailure) -> String {
        let result: ProxyHeaderParseResult
        do {
            result = try ProxyHeaderParser().parse(input)
        } catch {
            throw CommandFailure(error.description)
        }
        switch result {
        case .needMoreBytes:
            throw CommandFailure("incomplete header: \(input.readableBytes) byte(s) are the start of a valid header but it does not end")
        case .complete(let header, let length):
            // The header's object with one more member: its closing brace makes way for it.
            var json = ByteBuffer()
            header.writeJSON(headerLength: length, into: &json)
            json.moveWriterIndex(to: json.writerIndex - 1)
            json.writeStaticString(",\"trailing_bytes\":")
            json.writeJSONInteger(input.readableBytes - length)
            json.writeJSONByte("}")
            return String(buffer: json)
        }
    }
}
