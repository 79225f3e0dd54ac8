import Foundation
import Testing
@testable import LFPData

@Suite("CIFAR-10")
struct CIFAR10Tests {
    static let labels: [UInt8] = [6, 9, 0]
    static let images = pixelPattern(count: 3, rows: 3 * 32, cols: 32)

    @Test func roundTrip() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        try CIFAR10.write(images: Self.images, labels: Self.labels, to: dir + "/batch.bin")
        #expect(try readBytes(dir + "/batch.bin").count == 3 * 3073)
        let data = try CIFAR10.load(files: [dir + "/batch.bin", dir + "/batch.bin"])
        #expect(data.count == 6)
        #expect(data.sampleShape == [3, 32, 32])
        #expect(data.classCount == 10)
        #expect(data.labels == (Self.labels + Self.labels).map(Int.init))
        let expected = Self.images.map { Float($0) / 255 }
        #expect(Array(data.features[0..<expected.count]) == expected)
        #expect(Array(data.features[expected.count...]) == expected)
    }

    @Test func loadDirectoryWithSubfolderAndMissingFiles() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        let sub = dir + "/cifar-10-batches-bin"
        try CIFAR10.write(images: Self.images, labels: Self.labels, to: sub + "/test_batch.bin")
        let test = try CIFAR10.loadDirectory(dir, split: .test)
        #expect(test.count == 3)
        #expect(test.name == "cifar10-test")

        for i in [1, 2, 4, 5] {
            try CIFAR10.write(images: Self.images, labels: Self.labels, to: sub + "/data_batch_\(i).bin")
        }
        let errorResult = dataError { _ = try CIFAR10.loadDirectory(dir, split: .train) }
        let error = try #require(errorResult)
        guard case .notFound(_, let reason) = error else {
            Issue.record("expected .notFound, got \(error)")
            return
        }
        #expect(reason.contains("missing data_batch_3.bin"))

        try CIFAR10.write(images: Self.images, labels: Self.labels, to: sub + "/data_batch_3.bin")
        #expect(try CIFAR10.loadDirectory(dir, split: .train).count == 15)
    }

    @Test func badSizeAndBadLabel() throws {
        let dir = try makeTemporaryDirectory()
        defer { removeTemporaryDirectory(dir) }
        try CIFAR10.write(images: Self.images, labels: Self.labels, to: dir + "/ok.bin")
        var bytes = try readBytes(dir + "/ok.bin")
        try writeBytes(bytes.dropLast(100), to: dir + "/short.bin")
        let sizeResult = dataError { _ = try CIFAR10.load(files: [dir + "/short.bin"]) }
        let size = try #require(sizeResult)
        #expect(size.reason.contains("not a multiple of the 3073-byte"))
        #expect(size.file == dir + "/short.bin")

        try writeBytes([], to: dir + "/empty.bin")
        let caught2 = dataError { _ = try CIFAR10.load(files: [dir + "/empty.bin"]) }
        #expect(caught2?.reason.contains("empty") == true)

        bytes[3073] = 10
        try writeBytes(bytes, to: dir + "/label.bin")
        let labelResult = dataError { _ = try CIFAR10.load(files: [dir + "/label.bin"]) }
        let label = try #require(labelResult)
        #expect(label.reason.contains("record 1 has label 10"))

        #expect(throws: DataError.self) { try CIFAR10.load(files: []) }
        #expect(throws: DataError.self) { try CIFAR10.write(images: [1], labels: [1], to: dir + "/x.bin") }
    }
}
