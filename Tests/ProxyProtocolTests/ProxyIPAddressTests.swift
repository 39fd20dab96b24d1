import ProxyProtocol
import Testing

@Suite struct IPAddressTests {
    @Test(arguments: [
        ("0.0.0.0", UInt32(0)), ("255.255.255.255", 0xFFFF_FFFF), ("192.0.2.1", 0xC000_0201),
        ("10.0.100.9", 0x0A00_6409),
    ])
    func parsesIPv4(text: String, value: UInt32) {
        #expect(ProxyIPv4Address(text) == ProxyIPv4Address(rawValue: value))
        #expect(ProxyIPv4Address(rawValue: value).description == text)
    }

    @Test(arguments: [
        "", "1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.00", "256.0.0.1", "1.2.3.4 ", " 1.2.3.4", "1..3.4",
        "1.2.3.", ".1.2.3", "a.b.c.d", "1.2.3.-4", "1.2.3.4/8", "1000.2.3.4", "0x1.2.3.4",
    ])
    func rejectsInvalidIPv4(text: String) {
        #expect(ProxyIPv4Address(text) == nil)
    }

    @Test(arguments: [
        ("::", "::"), ("::1", "::1"), ("1::", "1::"), ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"), ("2001:0db8:0000:0000:0000:ff00:0042:8329", "2001:db8::ff00:42:8329"),
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"), ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"), ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"), ("::ffff:c000:0201", "::ffff:192.0.2.1"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"), ("fe80::1:2:3:4", "fe80::1:2:3:4"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("0:0:0:0:0:0:0:0", "::"), ("1:2:3:4:5:6:0:0", "1:2:3:4:5:6::"),
    ])
    func parsesAndCanonicalisesIPv6(text: String, canonical: String) throws {
        let address = try #require(ProxyIPv6Address(text))
        #expect(address.description == canonical)
        #expect(ProxyIPv6Address(canonical) == address)
    }

    @Test(arguments: [
        "", ":", ":::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", ":1::2", "1::2:", "12345::1",
        "g::1", "fe80::1%eth0", "::1.2.3", "::1.2.3.04", "1:2:3:4:5:6:7:1.2.3.4", "1:2:3:4:5:6:7::8",
        "::ffff:1.2.3.4:5", "[::1]", "1:2:3:4:5:6:7:8::",
    ])
    func rejectsInvalidIPv6(text: String) {
        #expect(ProxyIPv6Address(text) == nil)
    }

    @Test func ipv6Groups() throws {
        let address = try #require(ProxyIPv6Address("2001:db8::8:9"))
        #expect((0..<8).map { address.group($0) } == [0x2001, 0xDB8, 0, 0, 0, 0, 8, 9])
        #expect(address.high == 0x2001_0DB8_0000_0000)
        #expect(address.low == 0x0000_0000_0008_0009)
    }

    @Test func ipv4MappedAddressesUnmap() {
        let mapped = ProxyIPv6Address(ipv4Mapped: ProxyIPv4Address(127, 0, 0, 1))
        #expect(mapped.description == "::ffff:127.0.0.1")
        #expect(ProxyIPAddress.v6(mapped).unmapped == .v4(ProxyIPv4Address(127, 0, 0, 1)))
        #expect(ProxyIPAddress("::1")?.unmapped == ProxyIPAddress("::1"))
        #expect(ProxyIPAddress("127.0.0.1") == .v4(ProxyIPv4Address(127, 0, 0, 1)))
        #expect(ProxyIPAddress("nonsense") == nil)
    }
}
