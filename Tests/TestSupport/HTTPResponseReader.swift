/// Reads HTTP/1.1 responses one at a time from a blocking socket, each to the end of its
/// `Content-Length` body (none without one), keeping what follows for the next: keep-alive
/// and pipelining clients in the host's and the Hummingbird suites read their answers with it.
public final class HTTPResponseReader {
    /// One response: the head, status line first, without the blank line that ends it, and the
    /// body.
    public struct Response: Sendable {
        public var head: String
        public var body: [UInt8]
        public var statusLine: Substring { head.prefix { !$0.isNewline } }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    private let socket: BlockingSocket
    private var buffer: [UInt8] = []

    public init(_ socket: BlockingSocket) {
        self.socket = socket
    }

    /// The next response; throws if the server closes before all of it has come.
    public func next() throws -> Response {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var end: Int?
        while end == nil {
            end = buffer.indices.dropLast(3).first { Array(buffer[$0..<($0 + 4)]) == separator }
            if end == nil { try fill() }
        }
        let head = String(decoding: buffer[..<end!], as: UTF8.self)
        let lengthLine = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
        let length = lengthLine.map { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
        guard let length else { throw Failure(description: "a Content-Length that is not a number: \(head)") }
        let bodyStart = end! + 4
        while buffer.count < bodyStart + length { try fill() }
        let body = Array(buffer[bodyStart..<(bodyStart + length)])
        buffer.removeFirst(bodyStart + length)
        return Response(head: head, body: body)
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 16384)
        let count = try chunk.withUnsafeMutableBytes { try socket.receive(into: $0) }
        guard count > 0 else { throw Failure(description: "the server closed with \(buffer.count) byte(s) of a response unread") }
        buffer += chunk[..<count]
    }
}
