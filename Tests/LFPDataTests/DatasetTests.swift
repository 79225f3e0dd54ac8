import Foundation
import Testing
@testable import LFPData

@Suite("Dataset and batching")
struct DatasetTests {
    /// 4 samples of shape [2, 3] (2 channels); sample i, channel c, position j = 100i + 10c + j.
    func small() throws -> Dataset {
        var features = [Float]()
        for i in 0..<4 { for c in 0..<2 { for j in 0..<3 { features.append(Float(100 * i + 10 * c + j)) } } }
        return try Dataset(features: features, labels: [0, 1, 2, 1], sampleShape: [2, 3], classCount: 3, name: "small")
    }

    @Test func initValidates() {
        #expect(throws: DataError.self) { try Dataset(features: [1, 2], labels: [0], sampleShape: [3], classCount: 1, name: "a") }
        #expect(throws: DataError.self) { try Dataset(features: [1], labels: [1], sampleShape: [1], classCount: 1, name: "a") }
        #expect(throws: DataError.self) { try Dataset(features: [], labels: [], sampleShape: [0], classCount: 1, name: "a") }
        #expect(throws: DataError.self) { try Dataset(features: [], labels: [], sampleShape: [], classCount: 1, name: "a") }
        #expect(throws: DataError.self) { try Dataset(features: [1], labels: [-1], sampleShape: [1], classCount: 2, name: "a") }
        #expect((try? Dataset(features: [], labels: [], sampleShape: [4], classCount: 0, name: "empty"))?.count == 0)
    }

    @Test func permutationIsDeterministicPermutation() {
        let p = BatchOrder.permutation(count: 1000, seed: 5, epoch: 0)
        #expect(p.sorted() == Array(0..<1000))
        #expect(p == BatchOrder.permutation(count: 1000, seed: 5, epoch: 0))
        #expect(p != BatchOrder.permutation(count: 1000, seed: 5, epoch: 1))
        #expect(p != BatchOrder.permutation(count: 1000, seed: 6, epoch: 0))
        #expect(p != Array(0..<1000))
        let epochs = (0..<5).map { BatchOrder.permutation(count: 50, seed: 1, epoch: $0) }
        #expect(Set(epochs.map { $0.description }).count == 5)
        #expect(BatchOrder.permutation(count: 0, seed: 1, epoch: 0).isEmpty)
        #expect(BatchOrder.permutation(count: 1, seed: 1, epoch: 3) == [0])
    }

    @Test func batchesCoverAndRespectDropLast() {
        let order = BatchOrder(count: 10, batchSize: 4, seed: 9)
        let batches = order.batches(epoch: 2)
        #expect(batches.map(\.count) == [4, 4, 2])
        #expect(order.batchesPerEpoch == 3)
        #expect(batches.flatMap { Array($0) }.sorted() == Array(0..<10))
        #expect(batches.flatMap { Array($0) } == BatchOrder.permutation(count: 10, seed: 9, epoch: 2))

        let dropped = BatchOrder.batches(count: 10, batchSize: 4, seed: 9, epoch: 2, dropLast: true)
        #expect(dropped.map(\.count) == [4, 4])
        let ordered = BatchOrder.batches(count: 5, batchSize: 2, seed: 9, epoch: 0, shuffle: false)
        #expect(ordered.map { Array($0) } == [[0, 1], [2, 3], [4]])
        #expect(BatchOrder.batches(count: 3, batchSize: 0, seed: 0, epoch: 0).count == 3)
        #expect(BatchOrder.batches(count: 0, batchSize: 4, seed: 0, epoch: 0).isEmpty)
    }

    @Test func batchFillsCallerBuffers() throws {
        let data = try small()
        var x = [Float](repeating: -1, count: 100)
        var y = [Int](repeating: -1, count: 7)
        let indices = [3, 0, 3]
        data.batch(indices: indices[...], into: &x, labels: &y)
        #expect(y == [1, 0, 1])
        #expect(x.count == 18)
        #expect(Array(x[0..<6]) == Array(data.features[18..<24]))
        #expect(Array(x[6..<12]) == Array(data.features[0..<6]))

        let order = BatchOrder(count: data.count, batchSize: 3, seed: 1)
        var seen = [Int]()
        for batch in order.batches(epoch: 0) {
            data.batch(indices: batch, into: &x, labels: &y)
            #expect(x.count == batch.count * 6)
            for (row, index) in batch.enumerated() {
                #expect(Array(x[(row * 6)..<(row * 6 + 6)]) == Array(data.features[(index * 6)..<(index * 6 + 6)]))
                #expect(y[row] == data.labels[index])
            }
            seen += batch
        }
        #expect(seen.sorted() == [0, 1, 2, 3])
    }

    @Test func statisticsAndNormalization() throws {
        let data = try small()
        let (mean, std) = data.channelStatistics()
        #expect(mean.count == 2 && std.count == 2)
        // Channel 0 values: 100i + j for i in 0..<4, j in 0..<3 → mean 151.
        #expect(abs(mean[0] - 151) < 1e-3)
        #expect(abs(mean[1] - 161) < 1e-3)
        let values = (0..<4).flatMap { i in (0..<3).map { j in Double(100 * i + j) } }
        let variance = values.map { ($0 - 151) * ($0 - 151) }.reduce(0, +) / Double(values.count)
        #expect(abs(Double(std[0]) - variance.squareRoot()) < 1e-3)

        let normalized = data.normalized()
        let stats = normalized.channelStatistics()
        #expect(stats.mean.allSatisfy { abs($0) < 1e-4 })
        #expect(stats.std.allSatisfy { abs($0 - 1) < 1e-4 })
        #expect(normalized.labels == data.labels)

        let constant = try Dataset(features: [2, 2, 2], labels: [0, 0, 0], sampleShape: [1], classCount: 1, name: "c")
        #expect(constant.normalized().features == [0, 0, 0])
        #expect(throws: DataError.self) { try data.normalized(mean: [0], std: [1]) }
        let manual = try data.normalized(mean: [1, 2], std: [2, 0])
        #expect(manual.features[0] == -0.5)
        #expect(manual.features[3] == 8)
    }

    @Test func subsetPrefixAndDescribe() throws {
        let data = try small()
        let sub = try data.subset([2, 2, 0])
        #expect(sub.labels == [2, 2, 0])
        #expect(Array(sub.features[0..<6]) == Array(data.features[12..<18]))
        #expect(throws: DataError.self) { try data.subset([4]) }
        #expect(data.prefix(2).labels == [0, 1])
        #expect(data.prefix(2).features.count == 12)
        #expect(data.prefix(-3).count == 0)
        #expect(data.prefix(99).count == 4)

        let text = data.describe()
        #expect(text.contains("samples:   4"))
        #expect(text.contains("[2, 3]"))
        #expect(text.contains("0: 1, 1: 2, 2: 1"))
    }
}
