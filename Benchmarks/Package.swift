// swift-tools-version:6.1
import Foundation
import PackageDescription

// A path dependency is named after its directory, which is whatever the clone is called.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

// Run with: swift package --disable-sandbox benchmark
let package = Package(
    name: "NetProxyBenchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "CodecBenchmarks",
            dependencies: [
                .product(name: "ProxyProtocol", package: root),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/CodecBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The codec timed as Benchmarks/go-proxyproto times go-proxyproto (codec-compare.sh).
        .executableTarget(
            name: "CodecTimings",
            dependencies: [
                .product(name: "ProxyProtocol", package: root),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/CodecTimings"
        ),
    ]
)
