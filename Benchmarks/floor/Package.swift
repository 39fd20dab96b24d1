// swift-tools-version:6.1
import PackageDescription

// The least a SwiftNIO program does to forward a PROXY port: Benchmarks/forward.sh runs it beside
// netproxy, so that the gap to HAProxy splits into SwiftNIO's share and netproxy's own.
// SWIFT_NIO_PATH builds it against a local checkout of swift-nio instead, to measure a change
// to SwiftNIO before proposing it.
let nio: Package.Dependency =
    if let path = Context.environment["SWIFT_NIO_PATH"], !path.isEmpty {
        .package(path: path)
    } else {
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2")
    }

let package = Package(
    name: "NIOForwardFloor",
    platforms: [.macOS(.v13)],
    dependencies: [nio],
    targets: [
        .executableTarget(
            name: "nio-forward-floor",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        )
    ]
)
