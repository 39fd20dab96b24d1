// swift-tools-version:6.1
import Foundation
import PackageDescription

// A path dependency is named after its directory, which is whatever the clone is called.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

// libFuzzer targets, kept out of the main package so `swift test` stays plain.
// swift build -c release --sanitize=fuzzer --product FuzzParser
// SWIFT_BACKTRACE=enable=no .build/release/FuzzParser -max_total_time=60
let package = Package(
    name: "NetProxyFuzz",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "FuzzParser",
            dependencies: [
                .product(name: "ProxyProtocol", package: root),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        )
    ]
)
