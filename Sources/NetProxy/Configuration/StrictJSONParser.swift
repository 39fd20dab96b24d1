/// A JSON reader for configuration files, stricter than RFC 8259 requires of parsers: a key given
/// twice in one object, a trailing comma, or anything after the value is an error that names the
/// line and column. A file that decides who may claim any client address must mean one thing only.
///
/// Comments are read as JSONC does: `//` to the end of the line and `/* */` (not nested), wherever
/// whitespace may stand. An unclosed `/*` is an error at its start, rather than the rest of the
/// file silently becoming a comment.
struct StrictJSONParser {
    /// The deepest nesting accepted; configuration files need three levels.
    static let maximumDepth = 32

    private let bytes: [UInt8]
    private var index = 0
    private var depth = 0

    private init(_ bytes: [UInt8]) {
        self.bytes = bytes
        // A UTF-8 byte order mark, as some editors write, is not part of the text.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { index = 3 }
    }

    /// Parses one JSON value that makes up the whole of `bytes`.
    static func parse(_ bytes: [UInt8]) throws(NetProxyConfigurationError) -> JSONInput {
        var parser = StrictJSONParser(bytes)
        try parser.skipInsignificant()
        let value = try parser.value(path: "")
        try parser.skipInsignificant()
        guard parser.index == bytes.count else { throw parser.error("unexpected \(parser.found) after the end of the JSON value") }
        return value
    }

    private mutating func value(path: String) throws(NetProxyConfigurationError) -> JSONInput {
        guard index < bytes.count else { throw error("expected a value, found the end of the file") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try object(path: path)
        case UInt8(ascii: "["): return try array(path: path)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        default: throw error("expected a value, found \(found)")
        }
    }

    private mutating func object(path: String) throws(NetProxyConfigurationError) -> JSONInput {
        try enter()
        index += 1
        var members: [String: JSONInput] = [:]
        var lines: [String: Int] = [:]
        try skipInsignificant()
        if consume("}") {
            depth -= 1
            return .object(members)
        }
        while true {
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                throw error(members.isEmpty ? "expected a key in quotes, found \(found)" : "trailing comma before \(found)")
            }
            let keyLine = position.line
            let key = try string()
            let keyPath = path.isEmpty ? key : "\(path).\(key)"
            if let first = lines[key] {
                throw NetProxyConfigurationError(.syntax, key: nil, "line \(keyLine): \"\(keyPath)\" is given twice (first on line \(first))")
            }
            try skipInsignificant()
            guard consume(":") else { throw error("expected \":\" after \"\(keyPath)\", found \(found)") }
            try skipInsignificant()
            members[key] = try value(path: keyPath)
            lines[key] = keyLine
            try skipInsignificant()
            if consume("}") { break }
            guard consume(",") else {
                throw error("expected \",\" or \"}\" in \(path.isEmpty ? "the top-level object" : "\"\(path)\""), found \(found)")
            }
            try skipInsignificant()
        }
        depth -= 1
        return .object(members)
    }

    private mutating func array(path: String) throws(NetProxyConfigurationError) -> JSONInput {
        try enter()
        index += 1
        var items: [JSONInput] = []
        try skipInsignificant()
        if consume("]") {
            depth -= 1
            return .array(items)
        }
        while true {
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") { throw error("trailing comma before \"]\"") }
            items.append(try value(path: "\(path)[\(items.count)]"))
            try skipInsignificant()
            if consume("]") { break }
            guard consume(",") else { throw error("expected \",\" or \"]\" in \"\(path)\", found \(found)") }
            try skipInsignificant()
        }
        depth -= 1
        return .array(items)
    }

    private mutating func enter() throws(NetProxyConfigurationError) {
        depth += 1
        guard depth <= Self.maximumDepth else { throw error("nested deeper than \(Self.maximumDepth) levels") }
    }

    private mutating func string() throws(NetProxyConfigurationError) -> String {
        let start = index
        index += 1
        var utf8: [UInt8] = []
        while true {
            guard index < bytes.count else {
                index = start
                throw error("string is not closed")
            }
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                guard let text = String(validating: utf8, as: UTF8.self) else {
                    index = start
                    throw error("string is not valid UTF-8")
                }
                // A path or name with a NUL would be cut short where the system reads it.
                guard !utf8.contains(0) else {
                    index = start
                    throw error("string contains a NUL character (\\u0000)")
                }
                return text
            case UInt8(ascii: "\\"):
                try escape(into: &utf8)
            case 0..<0x20:
                throw error("control character 0x\(String(byte, radix: 16)) in a string (write it as an escape)")
            default:
                utf8.append(byte)
                index += 1
            }
        }
    }

    /// Reads the escape at `index` (a backslash) and appends what it stands for.
    private mutating func escape(into utf8: inout [UInt8]) throws(NetProxyConfigurationError) {
        guard index + 1 < bytes.count else { throw error("string is not closed") }
        let letter = bytes[index + 1]
        let simple: [UInt8: UInt8] = [
            UInt8(ascii: "\""): 0x22, UInt8(ascii: "\\"): 0x5C, UInt8(ascii: "/"): 0x2F, UInt8(ascii: "b"): 0x08,
            UInt8(ascii: "f"): 0x0C, UInt8(ascii: "n"): 0x0A, UInt8(ascii: "r"): 0x0D, UInt8(ascii: "t"): 0x09,
        ]
        if let replacement = simple[letter] {
            utf8.append(replacement)
            index += 2
            return
        }
        guard letter == UInt8(ascii: "u") else { throw error("unknown escape \"\\\(Unicode.Scalar(letter))\"") }
        var scalar = try hexQuad(at: index + 2)
        index += 6
        if (0xD800..<0xDC00).contains(scalar) {
            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                throw error("a high surrogate escape must be followed by a low surrogate escape")
            }
            let low = try hexQuad(at: index + 2)
            guard (0xDC00..<0xE000).contains(low) else {
                throw error("a high surrogate escape must be followed by a low surrogate escape")
            }
            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            index += 6
        }
        guard let unicode = Unicode.Scalar(scalar) else { throw error("escape of a lone surrogate") }
        utf8.append(contentsOf: String(Character(unicode)).utf8)
    }

    private func hexQuad(at start: Int) throws(NetProxyConfigurationError) -> UInt32 {
        var value: UInt32 = 0
        for offset in start..<start + 4 {
            guard offset < bytes.count, let digit = Self.hexDigit(bytes[offset]) else {
                throw error("\"\\u\" must be followed by four hexadecimal digits")
            }
            value = value << 4 | digit
        }
        return value
    }

    private static func hexDigit(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    private mutating func number() throws(NetProxyConfigurationError) -> JSONInput {
        let start = index
        var isInteger = true
        _ = consume("-")
        if consume("0") {
            // A leading zero stands alone.
        } else if digits() == 0 {
            index = start
            throw error("expected a digit in a number")
        }
        if consume(".") {
            isInteger = false
            guard digits() > 0 else { throw error("expected a digit after the decimal point") }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if !consume("+") { _ = consume("-") }
            guard digits() > 0 else { throw error("expected a digit in the exponent") }
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        // The message quotes the number, shortened: it may be megabytes long.
        let quoted = text.count > 24 ? "\(text.prefix(20))... (\(text.count) characters)" : text
        if isInteger {
            guard let value = Int(text) else {
                index = start
                throw error("\(quoted) is out of range")
            }
            return .integer(value)
        }
        guard let value = Double(text), value.isFinite else {
            index = start
            throw error("\(quoted) is out of range")
        }
        return .number(value)
    }

    private mutating func digits() -> Int {
        let start = index
        while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
        return index - start
    }

    private mutating func literal(_ word: String) throws(NetProxyConfigurationError) {
        guard bytes[index...].starts(with: word.utf8) else { throw error("expected a value, found \(found)") }
        index += word.utf8.count
    }

    private mutating func consume(_ character: Unicode.Scalar) -> Bool {
        guard index < bytes.count, bytes[index] == UInt8(ascii: character) else { return false }
        index += 1
        return true
    }

    /// Skips whitespace and comments.
    private mutating func skipInsignificant() throws(NetProxyConfigurationError) {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D:
                index += 1
            case UInt8(ascii: "/"):
                try comment()
            default:
                return
            }
        }
    }

    /// Skips the comment that starts at `index` (a slash).
    private mutating func comment() throws(NetProxyConfigurationError) {
        let start = index
        let next = index + 1 < bytes.count ? bytes[index + 1] : nil
        if next == UInt8(ascii: "/") {
            while index < bytes.count, bytes[index] != 0x0A { index += 1 }
            return
        }
        guard next == UInt8(ascii: "*") else { throw error("expected \"//\" or \"/*\" to start a comment, found \"/\" alone") }
        index += 2
        while index + 1 < bytes.count {
            if bytes[index] == UInt8(ascii: "*"), bytes[index + 1] == UInt8(ascii: "/") {
                index += 2
                return
            }
            index += 1
        }
        index = start
        throw error("comment is not closed (\"/*\" without \"*/\")")
    }

    /// What is at `index`, for error messages.
    private var found: String {
        guard index < bytes.count else { return "the end of the file" }
        let byte = bytes[index]
        if (0x21..<0x7F).contains(byte) { return "\"\(Unicode.Scalar(byte))\"" }
        return "byte 0x\(String(byte, radix: 16, uppercase: true))"
    }

    /// The line and column (in bytes, from 1) of `index`.
    private var position: (line: Int, column: Int) {
        var line = 1
        var lineStart = 0
        for offset in 0..<min(index, bytes.count) where bytes[offset] == 0x0A {
            line += 1
            lineStart = offset + 1
        }
        return (line, index - lineStart + 1)
    }

    private func error(_ message: String) -> NetProxyConfigurationError {
        let (line, column) = position
        return NetProxyConfigurationError(.syntax, key: nil, "line \(line), column \(column): \(message)")
    }
}
