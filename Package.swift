// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "NetProxy",
    products: [
        .library(name: "ProxyProtocol", targets: ["ProxyProtocol"]),
        .executable(name: "netproxy", targets: ["netproxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
    ],
    targets: [
        .target(
            name: "ProxyProtocol",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        .executableTarget(
            name: "netproxy",
            dependencies: [
                "ProxyProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "ProxyProtocolTests",
            dependencies: [
                "ProxyProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
        .testTarget(
            name: "CommandTests",
            dependencies: ["netproxy"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
