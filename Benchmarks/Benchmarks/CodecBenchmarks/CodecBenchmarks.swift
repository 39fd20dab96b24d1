import Benchmark
import NIOCore
import ProxyProtocol

/// Parsing and encoding costs, with heap allocations counted: parsing a header without TLVs
/// must not allocate.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .instructions, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(3)
    )

    let parser = ProxyHeaderParser()
    let v1 = ByteBuffer(string: "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n")
    let v1IPv6 = ByteBuffer(string: "PROXY TCP6 2001:db8::1 2001:db8:ffff::22 51234 443\r\n")
    let v1Unknown = ByteBuffer(string: "PROXY UNKNOWN\r\n")
    let inet = ProxyHeader(
        version: .v2,
        addresses: .inet(
            source: .init(ProxyIPv4Address(192, 0, 2, 1), port: 51234), destination: .init(ProxyIPv4Address(198, 51, 100, 7), port: 443)))
    let v2 = try! inet.encoded()
    let inet6 = ProxyHeader(
        version: .v2,
        addresses: .inet6(
            source: .init(ProxyIPv6Address("2001:db8::1")!, port: 51234), destination: .init(ProxyIPv6Address("2001:db8:ffff::22")!, port: 443)))
    let v2IPv6 = try! inet6.encoded()
    var withTLVs = inet
    withTLVs.tlvs = try! [
        .authority("example.com"), .uniqueID(Array("0123456789abcdef".utf8)),
        .ssl(ProxySSLInfo(client: [.ssl], verify: 0, subTLVs: [ProxyTLV(type: .sslVersion, value: ByteBuffer(string: "TLSv1.3"))])),
    ]
    let v2TLVs = try! withTLVs.encoded(appendingCRC32C: true)

    for (name, bytes) in [
        ("v1 TCP4", v1), ("v1 TCP6", v1IPv6), ("v1 UNKNOWN", v1Unknown), ("v2 INET", v2), ("v2 INET6", v2IPv6),
        ("v2 INET with TLVs and CRC32C", v2TLVs),
    ] {
        Benchmark("parse \(name)") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try parser.parse(bytes))
            }
        }
    }

    Benchmark("walk TLVs of a parsed v2 header") { benchmark in
        guard case .complete(let header, _) = try parser.parse(v2TLVs) else { return }
        for _ in benchmark.scaledIterations {
            var count = 0
            for tlv in header.tlvs { count += tlv.value.readableBytes }
            blackHole(count)
        }
    }

    Benchmark("encode v2 INET into a reused buffer") { benchmark in
        var buffer = ByteBuffer()
        buffer.reserveCapacity(64)
        for _ in benchmark.scaledIterations {
            buffer.clear()
            blackHole(try inet.encode(into: &buffer))
        }
    }

    Benchmark("CRC32C of 1 KiB") { benchmark in
        let data = [UInt8](repeating: 0x5A, count: 1024)
        for _ in benchmark.scaledIterations {
            blackHole(CRC32C.checksum(data))
        }
    }
}
