import Foundation
import Testing
@testable import LFPData

/// Seeded mutation fuzzing: loaders must either succeed or throw `DataError`, never crash.
@Suite("Mutation fuzzing")
struct FuzzTests {
    static let iterations = 300

    /// Applies one to three random mutations (byte changes, truncation, insertion, deletion,
    /// header-focused changes) to `input`.
    static func mutate(_ input: [UInt8], _ g: inout SeededGenerator, headerBytes: Int) -> [UInt8] {
        var bytes = input
        for _ in 0..<(1 + g.nextInt(below: 3)) {
            switch g.nextInt(below: 6) {
            case 0 where !bytes.isEmpty:
                bytes[g.nextInt(below: bytes.count)] = UInt8(truncatingIfNeeded: g.next())
            case 1:
                bytes = Array(bytes.prefix(g.nextInt(below: bytes.count + 1)))
            case 2:
                let at = g.nextInt(below: bytes.count + 1)
                let extra = (0..<(1 + g.nextInt(below: 8))).map { _ in UInt8(truncatingIfNeeded: g.next()) }
                bytes.insert(contentsOf: extra, at: at)
            case 3 where !bytes.isEmpty:
                let start = g.nextInt(below: bytes.count)
                let end = min(bytes.count, start + 1 + g.nextInt(below: 16))
                bytes.removeSubrange(start..<end)
            case 4 where !bytes.isEmpty:
                let i = g.nextInt(below: min(headerBytes, bytes.count))
                bytes[i] = UInt8(truncatingIfNeeded: g.next())
            case 5 where !bytes.isEmpty:
                // Replace a digit in the header with another digit or a special character.
                let limit = min(headerBytes, bytes.count)
                let digits = (0..<limit).filter { bytes[$0] >= 0x30 && bytes[$0] <= 0x39 }
                if let i = digits.isEmpty ? nil : digits[g.nextInt(below: digits.count)] {
                    let choices = Array("0123456789-.e]\"".utf8)
                    bytes[i] = choices[g.nextInt(below: choices.count)]
                }
            default:
                bytes.append(UInt8(truncatingIfNeeded: g.next()))
            }
        }
        return bytes
    }

    @Test func idxMutations() throws {
        let images = [UInt8](try IDX.encode(values: pixelPattern(count: 4, rows: 5, cols: 6), dimensions: [4, 5, 6]))
        let gzipped = [UInt8](try Gzip.compress(Data(images)))
        var g = SeededGenerator(seed: 2024)
        var failures = 0
        for i in 0..<Self.iterations {
            let source = i % 3 == 2 ? gzipped : images
            let mutated = Self.mutate(source, &g, headerBytes: 16)
            if dataError({ _ = try IDX.decode(Data(mutated), file: "fuzz-\(i)") }) != nil { failures += 1 }
        }
        #expect(failures > Self.iterations / 2)

        // The file-based pair loader, on a smaller number of mutated label files.
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        try IDX.write(images: pixelPattern(count: 4, rows: 5, cols: 6), count: 4, rows: 5, cols: 6, to: dir + "/img")
        let labels = [UInt8](try IDX.encode(values: [1, 2, 3, 4], dimensions: [4]))
        for _ in 0..<50 {
            try writeBytes(Self.mutate(labels, &g, headerBytes: 8), to: dir + "/lbl")
            _ = dataError { _ = try IDX.load(images: dir + "/img", labels: dir + "/lbl", name: "fuzz") }
        }
    }

    @Test func safetensorsMutations() throws {
        let tensors = [
            TensorRecord(name: "w", shape: [3, 4], values: (0..<12).map(Float.init)),
            TensorRecord(name: "b", shape: [4], values: [1, 2, 3, 4]),
            TensorRecord(name: "s", shape: [], values: [9]),
            TensorRecord(name: "e", shape: [0], values: []),
        ]
        let valid = [UInt8](try SafeTensors.encode(tensors, metadata: ["epoch": "3"]))
        let headerLength = Int(valid[0]) | Int(valid[1]) << 8
        var g = SeededGenerator(seed: 77)
        var failures = 0
        var successes = 0
        for i in 0..<Self.iterations {
            let mutated = Self.mutate(valid, &g, headerBytes: 8 + headerLength)
            do {
                let result = try SafeTensors.decode(Data(mutated), file: "fuzz-\(i)")
                successes += 1
                for t in result.tensors.values { #expect(t.values.count == t.shape.reduce(1, *)) }
            } catch {
                failures += 1
                #expect(!error.description.isEmpty)
            }
        }
        #expect(successes + failures == Self.iterations)
        #expect(failures > Self.iterations / 2)
    }

    @Test func csvAndCifarMutations() throws {
        let csv = Array("label,a,b\n0,1.5,2\n1,3,4\n2,5,6\n".utf8)
        var g = SeededGenerator(seed: 5)
        for _ in 0..<Self.iterations {
            let mutated = Self.mutate(csv, &g, headerBytes: csv.count)
            if let text = String(validating: mutated, as: UTF8.self) {
                _ = dataError { _ = try CSVDataset.parse(text) }
            }
        }
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        try CIFAR10.write(images: pixelPattern(count: 2, rows: 96, cols: 32), labels: [1, 2], to: dir + "/ok.bin")
        let valid = try readBytes(dir + "/ok.bin")
        for _ in 0..<30 {
            try writeBytes(Self.mutate(valid, &g, headerBytes: 1), to: dir + "/m.bin")
            _ = dataError { _ = try CIFAR10.load(files: [dir + "/m.bin"]) }
        }
    }
}
