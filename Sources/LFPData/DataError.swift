/// The single error type thrown by every loader, parser and writer in `LFPData`.
///
/// Every case names the file involved (or, for ``invalidArgument(reason:)``, the
/// argument) and carries a precise, human-readable reason. ``description`` renders
/// the error as one line suitable for a command-line tool.
public enum DataError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A required file or directory does not exist; `reason` says what was looked for.
    case notFound(file: String, reason: String)
    /// The operating system refused a read or write (permissions, disk full, is a directory, …).
    case io(file: String, reason: String)
    /// The bytes of `file` are not a valid instance of the expected format
    /// (bad magic, truncated, trailing bytes, malformed header, value out of range, …).
    case corrupt(file: String, reason: String)
    /// Two inputs, or two parts of one input, disagree (e.g. image count vs label count).
    case mismatch(file: String, reason: String)
    /// The input is well-formed but uses a feature this library does not implement
    /// (e.g. an IDX element type other than unsigned byte, a safetensors dtype such as I32).
    case unsupported(file: String, reason: String)
    /// An argument passed by the caller is invalid; no file is involved.
    case invalidArgument(reason: String)

    /// The file (or directory) the error is about, or `nil` for ``invalidArgument(reason:)``.
    public var file: String? {
        switch self {
        case .notFound(let file, _), .io(let file, _), .corrupt(let file, _),
             .mismatch(let file, _), .unsupported(let file, _):
            return file
        case .invalidArgument:
            return nil
        }
    }

    /// The precise explanation of the problem, without the file name.
    public var reason: String {
        switch self {
        case .notFound(_, let reason), .io(_, let reason), .corrupt(_, let reason),
             .mismatch(_, let reason), .unsupported(_, let reason), .invalidArgument(let reason):
            return reason
        }
    }

    /// One line naming the file and the problem, e.g.
    /// `corrupt file '/data/t10k-images-idx3-ubyte': truncated: ...`.
    public var description: String {
        let text: String
        switch self {
        case .notFound(let file, let reason): text = "not found: '\(file)': \(reason)"
        case .io(let file, let reason): text = "I/O error on '\(file)': \(reason)"
        case .corrupt(let file, let reason): text = "corrupt file '\(file)': \(reason)"
        case .mismatch(let file, let reason): text = "mismatch in '\(file)': \(reason)"
        case .unsupported(let file, let reason): text = "unsupported content in '\(file)': \(reason)"
        case .invalidArgument(let reason): text = "invalid argument: \(reason)"
        }
        return Self.oneLine(text)
    }

    /// `text` made safe to print as one line: line breaks and tabs become spaces, and other
    /// control characters (which a corrupt file can put into a tensor name or JSON key, and
    /// which a terminal would interpret) are written as `\u{1b}`.
    public static func oneLine(_ text: String) -> String {
        var line = ""
        line.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029:
                line.unicodeScalars.append(" ")
            case 0x00..<0x20, 0x7F..<0xA0:
                line += "\\u{" + String(scalar.value, radix: 16) + "}"
            default:
                line.unicodeScalars.append(scalar)
            }
        }
        return line
    }
}
