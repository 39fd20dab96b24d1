import NIOCore
import ProxyProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

// Times the codec the way Benchmarks/go-proxyproto times go-proxyproto, on the same bytes: the
// best of 7 runs of a million operations, in nanoseconds per operation. Run both with
// Benchmarks/codec-compare.sh.

let runs = 7
let iterations = 1_000_000

func hexBytes(_ text: String) -> ByteBuffer {
    var buffer = ByteBuffer()
    var digits = text.utf8.makeIterator()
    while let high = digits.next(), let low = digits.next() {
        buffer.writeInteger(UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)!)
    }
    return buffer
}

func nanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

@inline(never)
func best(_ operation: () throws -> Void) rethrows -> Double {
    var best = UInt64.max
    for _ in 0..<runs {
        let start = nanoseconds()
        for _ in 0..<iterations {
            try operation()
        }
        best = min(best, nanoseconds() - start)
    }
    return Double(best) / Double(iterations)
}

func tenths(_ value: Double) -> Double { (value * 10).rounded() / 10 }

@inline(never)
func blackHole<T>(_ value: T) {}

let headers: [(String, ByteBuffer)] = [
    ("v2 INET", hexBytes("0d0a0d0a000d0a515549540a2111000cc0000201c633640704c801bb")),
    (
        "v2 INET6",
        hexBytes("0d0a0d0a000d0a515549540a21210024" + "20010db8000000000000000000000001" + "20010db8ffff00000000000000000022" + "c80101bb")
    ),
    ("v1 TCP4", ByteBuffer(string: "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n")),
    ("v1 TCP6", ByteBuffer(string: "PROXY TCP6 2001:db8::1 2001:db8:ffff::22 51234 443\r\n")),
    ("v1 UNKNOWN", ByteBuffer(string: "PROXY UNKNOWN\r\n")),
]

// An optional argument picks the operations whose name contains it (for a profiler).
let filter = CommandLine.arguments.dropFirst().first

func timeParse(_ name: String, _ bytes: ByteBuffer) throws {
    let parser = ProxyHeaderParser()
    guard case .complete(_, let length) = try parser.parse(bytes), length == bytes.readableBytes else {
        fatalError("\(name) does not parse")
    }
    let nanos = try best { blackHole(try parser.parse(bytes)) }
    print("parse \(name)\t\(tenths(nanos))")
}

func timeEncode(_ name: String, _ bytes: ByteBuffer) throws {
    guard case .complete(let header, _) = try ProxyHeaderParser().parse(bytes) else { fatalError("\(name) does not parse") }
    var output = ByteBuffer()
    output.reserveCapacity(64)
    let nanos = try best {
        output.clear()
        blackHole(try header.encode(into: &output))
    }
    precondition(output == bytes, "\(name) encodes differently")
    print("encode \(name)\t\(tenths(nanos))")
}

for (name, bytes) in headers where filter.map({ "parse \(name)".contains($0) }) ?? true {
    try timeParse(name, bytes)
}
if filter.map({ "encode v2 INET".contains($0) }) ?? true {
    try timeEncode(headers[0].0, headers[0].1)
}
