import Foundation

/// Loads numeric classification data from CSV (comma-separated, or another single-byte delimiter).
///
/// One column holds integer class ids; every other column is a floating-point feature.
/// Fields may be surrounded by spaces and may be double-quoted (`"1.5"`, with `""` as an
/// escaped quote). Blank lines are skipped, `\r\n` line endings are accepted, and the file may be gzip-compressed.
public enum CSVDataset {
    /// Class ids must be below this bound (1,000,000), which keeps per-class tables small.
    public static let maxClassCount = 1_000_000

    /// Loads a CSV file as a ``Dataset`` with `sampleShape == [featureCount]` and
    /// `classCount == max label + 1`.
    ///
    /// - Parameters:
    ///   - path: The CSV file (raw or gzip).
    ///   - labelColumn: The zero-based column of the class ids; negative values count from the end
    ///     (`-1` is the last column).
    ///   - hasHeader: `true`/`false` to force; `nil` auto-detects a header when any field of the first
    ///     non-blank row is not a number.
    ///   - delimiter: The field separator (default `,`); must be ASCII.
    ///   - name: The dataset name; defaults to the file name.
    /// - Throws: ``DataError/corrupt(file:reason:)`` with the line (and column) for ragged rows,
    ///   non-numeric or non-finite fields (or features beyond the range of `Float`), negative, non-integer or too large (≥ ``maxClassCount``) labels, unterminated quotes,
    ///   invalid UTF-8, or a file without data rows; ``DataError/invalidArgument(reason:)`` for a bad
    ///   delimiter; ``DataError/mismatch(file:reason:)`` when `labelColumn` is outside the columns.
    public static func load(
        path: String, labelColumn: Int = 0, hasHeader: Bool? = nil, delimiter: Character = ",", name: String? = nil
    ) throws(DataError) -> Dataset {
        let separator = try separatorByte(delimiter)
        let bytes = try Gzip.readBytesMaybeGzip(path)
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw .corrupt(file: path, reason: "CSV file is not valid UTF-8")
        }
        return try parse(bytes: bytes, file: path, labelColumn: labelColumn, hasHeader: hasHeader,
                         separator: separator, name: name ?? FileIO.split(path).name)
    }

    /// Parses CSV text (see ``load(path:labelColumn:hasHeader:delimiter:name:)``); `file` is used in messages.
    public static func parse(
        _ text: String, file: String = "<memory>", labelColumn: Int = 0, hasHeader: Bool? = nil,
        delimiter: Character = ",", name: String = "csv"
    ) throws(DataError) -> Dataset {
        let separator = try separatorByte(delimiter)
        return try parse(bytes: Array(text.utf8), file: file, labelColumn: labelColumn, hasHeader: hasHeader,
                         separator: separator, name: name)
    }

    /// Parses UTF-8 CSV bytes. Splitting works on bytes, which is safe because the delimiter,
    /// quote and newline are ASCII and never occur inside a multi-byte UTF-8 sequence.
    static func parse(
        bytes: [UInt8], file: String, labelColumn: Int, hasHeader: Bool?, separator: UInt8, name: String
    ) throws(DataError) -> Dataset {
        var features = [Float]()
        var labels = [Int]()
        var columnCount: Int? = nil
        var labelIndex = 0
        var lineNumber = 0
        var lineStart = 0

        while lineStart < bytes.count {
            lineNumber += 1
            var lineEnd = lineStart
            while lineEnd < bytes.count && bytes[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            let next = lineEnd + 1
            if lineEnd > lineStart && bytes[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
            let line = bytes[lineStart..<lineEnd]
            lineStart = next
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            let fields = try splitFields(line, separator: separator, file: file, line: lineNumber)

            if columnCount == nil {
                columnCount = fields.count
                guard fields.count >= 2 else {
                    throw .corrupt(
                        file: file,
                        reason: "line \(lineNumber): need at least 2 columns (a label and a feature), found \(fields.count)")
                }
                let resolved = labelColumn < 0 ? fields.count + labelColumn : labelColumn
                guard resolved >= 0 && resolved < fields.count else {
                    throw .mismatch(
                        file: file,
                        reason: "label column \(labelColumn) is outside the \(fields.count) columns of line \(lineNumber)")
                }
                labelIndex = resolved
                if hasHeader ?? fields.contains(where: { parseNumber($0) == nil }) { continue }
            }

            guard fields.count == columnCount else {
                throw .corrupt(
                    file: file,
                    reason: "line \(lineNumber): expected \(columnCount ?? 0) fields, found \(fields.count)")
            }
            for (column, field) in fields.enumerated() {
                guard let value = parseNumber(field) else {
                    throw .corrupt(
                        file: file,
                        reason: "line \(lineNumber), column \(column + 1): '\(field)' is not a number")
                }
                guard value.isFinite else {
                    throw .corrupt(
                        file: file,
                        reason: "line \(lineNumber), column \(column + 1): '\(field)' is not a finite number")
                }
                if column == labelIndex {
                    guard value >= 0, value == value.rounded(), value < Double(maxClassCount) else {
                        throw .corrupt(
                            file: file,
                            reason: "line \(lineNumber), column \(column + 1): label '\(field)' is not an integer class id in 0..<\(maxClassCount)")
                    }
                    labels.append(Int(value))
                } else {
                    // A finite Double such as 1e300 can still overflow Float (the feature type).
                    let feature = Float(value)
                    guard feature.isFinite else {
                        throw .corrupt(
                            file: file,
                            reason: "line \(lineNumber), column \(column + 1): '\(field)' is outside the range of a 32-bit float")
                    }
                    features.append(feature)
                }
            }
        }
        guard let columns = columnCount, !labels.isEmpty else {
            throw .corrupt(file: file, reason: "CSV file has no data rows")
        }
        let classCount = (labels.max() ?? 0) + 1
        return Dataset(
            unchecked: features, labels: labels, sampleShape: [columns - 1], classCount: classCount, name: name)
    }

    /// Splits one line into fields: unquoted fields are trimmed of spaces and tabs; a quoted
    /// field keeps its content verbatim, with `""` unescaped to `"`.
    private static func splitFields(
        _ line: ArraySlice<UInt8>, separator: UInt8, file: String, line lineNumber: Int
    ) throws(DataError) -> [String] {
        let quote = UInt8(ascii: "\"")
        func isBlank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }
        var fields = [String]()
        var current = [UInt8]()
        var inQuotes = false
        var wasQuoted = false
        var index = line.startIndex
        func finish() {
            if wasQuoted {
                fields.append(String(decoding: current, as: UTF8.self))
            } else {
                let trimmed = current.drop(while: isBlank).reversed().drop(while: isBlank).reversed()
                fields.append(String(decoding: trimmed, as: UTF8.self))
            }
            current.removeAll(keepingCapacity: true)
            wasQuoted = false
        }
        while index < line.endIndex {
            let byte = line[index]
            if inQuotes {
                if byte == quote {
                    if index + 1 < line.endIndex && line[index + 1] == quote {
                        current.append(quote)
                        index += 1
                    } else {
                        inQuotes = false
                    }
                } else {
                    current.append(byte)
                }
            } else if byte == separator {
                finish()
            } else if byte == quote && !wasQuoted && current.allSatisfy(isBlank) {
                current.removeAll(keepingCapacity: true)
                inQuotes = true
                wasQuoted = true
            } else if !(wasQuoted && isBlank(byte)) {
                current.append(byte)
            }
            index += 1
        }
        guard !inQuotes else {
            throw .corrupt(file: file, reason: "line \(lineNumber): unterminated quoted field")
        }
        finish()
        return fields
    }

    private static func separatorByte(_ delimiter: Character) throws(DataError) -> UInt8 {
        guard let byte = delimiter.asciiValue, byte != UInt8(ascii: "\""),
              byte != UInt8(ascii: "\n"), byte != UInt8(ascii: "\r")
        else {
            throw .invalidArgument(
                reason: "CSV delimiter '\(delimiter)' must be a single ASCII character other than a quote or newline")
        }
        return byte
    }

    /// Parses a decimal number (no hex floats; `nan`/`inf` parse but are rejected as non-finite later).
    private static func parseNumber(_ field: String) -> Double? {
        guard !field.isEmpty, !field.contains(where: { $0 == "x" || $0 == "X" }) else { return nil }
        return Double(field)
    }
}
