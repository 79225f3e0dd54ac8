import Foundation
import Testing
@testable import LFPData

@Suite("IDX")
struct IDXTests {
    static let count = 5, rows = 3, cols = 4
    static let pixels = pixelPattern(count: count, rows: rows, cols: cols)
    static let labels: [UInt8] = [3, 0, 9, 1, 7]

    func writePair(in dir: String, images: String, labels: String, gzip: Bool) throws {
        try IDX.write(images: Self.pixels, count: Self.count, rows: Self.rows, cols: Self.cols,
                      to: dir + "/" + images, gzip: gzip)
        try IDX.writeLabels(Self.labels, to: dir + "/" + labels, gzip: gzip)
    }

    func checkContents(_ data: Dataset) {
        #expect(data.count == Self.count)
        #expect(data.sampleShape == [1, Self.rows, Self.cols])
        #expect(data.featuresPerSample == Self.rows * Self.cols)
        #expect(data.classCount == 10)
        #expect(data.labels == Self.labels.map(Int.init))
        #expect(data.features == Self.pixels.map { Float($0) / 255 })
        #expect(data.features.allSatisfy { $0 >= 0 && $0 <= 1 })
    }

    @Test(arguments: [false, true])
    func roundTrip(gzip: Bool) throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        let suffix = gzip ? ".gz" : ""
        try writePair(in: dir, images: "img" + suffix, labels: "lbl" + suffix, gzip: gzip)
        let head = try readBytes(dir + "/img" + suffix).prefix(4)
        #expect(Array(head) == (gzip ? [0x1F, 0x8B, 0x08, 0x00] : [0, 0, 8, 3]))
        let data = try IDX.load(images: dir + "/img" + suffix, labels: dir + "/lbl" + suffix, name: "tiny")
        #expect(data.name == "tiny")
        checkContents(data)

        let array = try IDX.read(dir + "/lbl" + suffix)
        #expect(array.dimensions == [Self.count])
        #expect(array.values == Self.labels)
    }

    @Test func loadDirectoryFindsStandardNames() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        try writePair(in: dir, images: "train-images-idx3-ubyte.gz", labels: "train-labels-idx1-ubyte.gz", gzip: true)
        try writePair(in: dir, images: "t10k-images.idx3-ubyte", labels: "t10k-labels.idx1-ubyte", gzip: false)
        let train = try IDX.loadDirectory(dir, split: .train)
        checkContents(train)
        #expect(train.name.hasSuffix("-train"))
        let test = try IDX.loadDirectory(dir, split: .test, name: "custom")
        checkContents(test)
        #expect(test.name == "custom")
    }

    @Test func loadDirectoryListsMissingNames() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        try IDX.writeLabels(Self.labels, to: dir + "/t10k-labels-idx1-ubyte")
        let errorResult = dataError { _ = try IDX.loadDirectory(dir, split: .test) }
        let error = try #require(errorResult)
        guard case .notFound(let file, let reason) = error else {
            Issue.record("expected .notFound, got \(error)")
            return
        }
        #expect(file == dir)
        for name in ["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz", "t10k-images.idx3-ubyte"] {
            #expect(reason.contains(name))
        }
        #expect(!reason.contains("labels"))
        #expect(!error.description.contains("\n"))

        let noDir = dataError { _ = try IDX.loadDirectory(dir + "/missing", split: .train) }
        #expect(noDir == .notFound(file: dir + "/missing", reason: "directory does not exist"))
    }

    @Test func truncatedAndTrailingBytes() throws {
        let valid = [UInt8](try IDX.encode(values: Self.pixels, dimensions: [Self.count, Self.rows, Self.cols]))
        let truncated = dataError { _ = try IDX.decode(Data(valid.dropLast()), file: "f") }
        #expect(truncated?.reason.contains("truncated") == true)
        let header = dataError { _ = try IDX.decode(Data(valid.prefix(9)), file: "f") }
        #expect(header?.reason.contains("truncated IDX header") == true)
        let trailing = dataError { _ = try IDX.decode(Data(valid + [1, 2]), file: "f") }
        #expect(trailing?.reason.contains("2 unexpected trailing bytes") == true)
        #expect(throws: DataError.self) { try IDX.decode(Data([0, 0]), file: "f") }
        #expect(throws: DataError.self) { try IDX.decode(Data(), file: "f") }
    }

    @Test func badMagicAndTypes() throws {
        var valid = [UInt8](try IDX.encode(values: Self.labels, dimensions: [Self.labels.count]))
        valid[0] = 0x01
        let magicResult = dataError { _ = try IDX.decode(Data(valid), file: "m") }
        let magic = try #require(magicResult)
        #expect(magic.reason.contains("magic"))
        valid[0] = 0
        valid[2] = 0x0D
        let floatResult = dataError { _ = try IDX.decode(Data(valid), file: "m") }
        let float = try #require(floatResult)
        guard case .unsupported = float else {
            Issue.record("float IDX should be unsupported, got \(float)")
            return
        }
        valid[2] = 0x42
        #expect(throws: DataError.self) { try IDX.decode(Data(valid), file: "m") }
        valid[2] = 0x08
        valid[3] = 0
        #expect(throws: DataError.self) { try IDX.decode(Data(valid), file: "m") }
    }

    @Test func countMismatchAndLabelRange() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        try IDX.write(images: Self.pixels, count: Self.count, rows: Self.rows, cols: Self.cols, to: dir + "/img")
        try IDX.writeLabels([1, 2, 3, 4], to: dir + "/short")
        let mismatchResult = dataError { _ = try IDX.load(images: dir + "/img", labels: dir + "/short", name: "x") }
        let mismatch = try #require(mismatchResult)
        guard case .mismatch(let file, let reason) = mismatch else {
            Issue.record("expected .mismatch, got \(mismatch)")
            return
        }
        #expect(file == dir + "/short")
        #expect(reason.contains("4 labels") && reason.contains("5 images"))

        try IDX.writeLabels([1, 2, 10, 4, 5], to: dir + "/big")
        let rangeResult = dataError { _ = try IDX.load(images: dir + "/img", labels: dir + "/big", name: "x") }
        let range = try #require(rangeResult)
        #expect(range.reason.contains("label 10 at index 2"))
        // A larger class count accepts the same file.
        let wide = try IDX.load(images: dir + "/img", labels: dir + "/big", name: "x", classCount: 11)
        #expect(wide.classCount == 11)

        // Swapped files: images where labels are expected is a rank error.
        #expect(throws: DataError.self) {
            try IDX.load(images: dir + "/big", labels: dir + "/img", name: "x")
        }
    }

    @Test func writeValidatesSizes() {
        #expect(throws: DataError.self) {
            try IDX.write(images: [1, 2, 3], count: 1, rows: 2, cols: 2, to: "/tmp/never-written")
        }
        #expect(!FileManager.default.fileExists(atPath: "/tmp/never-written"))
    }
}
