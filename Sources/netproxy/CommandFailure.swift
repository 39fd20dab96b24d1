import ArgumentParser

/// A failure the command reports as one `error: ...` line with exit status 1.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
