import Foundation
import Testing
@testable import LFPData

@Suite("Gzip")
struct GzipTests {
    @Test func roundTripRandomAndEmpty() throws {
        var generator = SeededGenerator(seed: 7)
        let payload = Data((0..<100_000).map { _ in UInt8(truncatingIfNeeded: generator.nextInt(below: 16)) })
        for input in [payload, Data(), Data("hello".utf8)] {
            let compressed = try Gzip.compress(input)
            #expect(Gzip.isGzip(compressed))
            #expect(try Gzip.decompress(compressed, file: "x") == input)
        }
    }

    /// Found by review during fuzzing: a corrupt stream whose trailer claims 4 GiB made the first
    /// output allocation 1100 x its size (up to 2 GiB) before the first bad byte was read.
    @Test func trailerClaimDoesNotSizeTheFirstAllocation() {
        let header: [UInt8] = [0x1F, 0x8B, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03]
        let bytes = header + [UInt8](repeating: 0xFF, count: 1 << 20) + [0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]
        let error = dataError { _ = try Gzip.decompress(Data(bytes), file: "claims-4GiB.gz") }
        #expect(error?.file == "claims-4GiB.gz")
        #expect(Gzip.maxInitialOutputGuess <= 1 << 26)
    }

    @Test func corruptStreamThrows() throws {
        let input = Data((0..<5000).map { UInt8(truncatingIfNeeded: $0 * 31) })
        var compressed = [UInt8](try Gzip.compress(input))
        compressed[compressed.count / 2] ^= 0xFF
        compressed[compressed.count / 2 + 1] ^= 0x5A
        let error = dataError { _ = try Gzip.decompress(Data(compressed), file: "broken.gz") }
        guard case .corrupt(let file, _)? = error else {
            Issue.record("expected .corrupt, got \(String(describing: error))")
            return
        }
        #expect(file == "broken.gz")
    }

    @Test func truncatedStreamThrows() throws {
        let compressed = [UInt8](try Gzip.compress(Data(repeating: 42, count: 10_000)))
        for keep in [0, 1, 5, 10, compressed.count / 2, compressed.count - 1] {
            let error = dataError { _ = try Gzip.decompress(Data(compressed[0..<keep]), file: "t.gz") }
            #expect(error != nil, "keeping \(keep) bytes should fail")
            if keep == compressed.count - 1 {
                #expect(error?.reason.contains("truncated") == true)
            }
        }
    }

    @Test func trailingGarbageThrowsButConcatenatedMembersWork() throws {
        let a = try Gzip.compress(Data("abc".utf8))
        let b = try Gzip.compress(Data("def".utf8))
        #expect(try Gzip.decompress(a + b) == Data("abcdef".utf8))
        #expect(try Gzip.decompress(a + Data(count: 16)) == Data("abc".utf8))
        #expect(throws: DataError.self) { try Gzip.decompress(a + Data("junk".utf8)) }
    }

    @Test func outputLimitIsEnforced() throws {
        let compressed = try Gzip.compress(Data(count: 1 << 20))
        let error = dataError { _ = try Gzip.decompress(compressed, maxOutputSize: 1000) }
        #expect(error?.reason.contains("limit") == true)
    }

    @Test func readMaybeGzipDetectsMagic() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        let text = Data("plain text\n".utf8)
        try text.write(to: URL(fileURLWithPath: dir + "/a.txt"))
        try Gzip.compress(text).write(to: URL(fileURLWithPath: dir + "/a.txt.gz"))
        #expect(try Gzip.readMaybeGzip(dir + "/a.txt") == text)
        #expect(try Gzip.readMaybeGzip(dir + "/a.txt.gz") == text)
        let missing = dataError { _ = try Gzip.readMaybeGzip(dir + "/nope") }
        #expect(missing == .notFound(file: dir + "/nope", reason: "no such file"))
        let directory = dataError { _ = try Gzip.readMaybeGzip(dir) }
        guard case .io? = directory else {
            Issue.record("reading a directory should be an I/O error, got \(String(describing: directory))")
            return
        }
    }
}
