import Foundation
import LFPData
import Testing

/// Creates a fresh, uniquely named temporary directory and returns its path.
/// Pair with `defer { removeTemporaryDirectory(dir) }`.
///
/// Tests deliberately avoid wrapping their bodies in a closure here: with Swift 6.3.1, a
/// closure inside a `#require(...)` argument that is itself nested in another closure can be
/// miscompiled so that a later closure in the same scope runs the earlier one's body.
func makeTemporaryDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("lfpdata-tests-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Removes a directory created by `makeTemporaryDirectory()`.
func removeTemporaryDirectory(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

/// Runs `body` and returns the `DataError` it throws, or `nil` if it succeeds.
/// Any other error type is recorded as a test issue.
func dataError(_ body: () throws -> Void) -> DataError? {
    do {
        try body()
        return nil
    } catch let error as DataError {
        return error
    } catch {
        Issue.record("expected a DataError, got \(type(of: error)): \(error)")
        return nil
    }
}

/// Writes raw bytes to a file (test fixture helper; not atomic).
func writeBytes(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// Reads a file as bytes.
func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Deterministic pixel pattern for `count` images of `rows x cols`.
func pixelPattern(count: Int, rows: Int, cols: Int) -> [UInt8] {
    (0..<(count * rows * cols)).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
}

/// Names of the files in a directory.
func directoryListing(_ path: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: path).sorted()
}
