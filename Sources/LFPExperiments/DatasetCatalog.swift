import Foundation
import LFP
import LFPData

/// Data sets by name: where `lfp` and the experiments find them.
public enum DatasetCatalog {
    public static let names = ["fashion-mnist", "mnist", "cifar10", "csv", "sign", "blobs", "circles", "spirals"]
    public static let fashionMNISTDefault = "/usr/share/datasets/fashion-mnist"

    /// Loads the train and test splits of a named data set.
    public static func load(_ name: String, dataDir: String?, seed: UInt64, toyCount: Int = 2000) throws -> (train: Dataset, test: Dataset) {
        switch name.lowercased() {
        case "fashion-mnist", "fashionmnist", "fmnist":
            let dir = dataDir ?? fashionMNISTDefault
            return (try IDX.loadDirectory(dir, split: .train, name: "fashion-mnist"), try IDX.loadDirectory(dir, split: .test, name: "fashion-mnist"))
        case "mnist", "idx":
            guard let dir = dataDir else { throw ValidationFailure("--dataset \(name) needs --data-dir (a directory with the IDX files)") }
            return (try IDX.loadDirectory(dir, split: .train, name: name), try IDX.loadDirectory(dir, split: .test, name: name))
        case "cifar10", "cifar-10":
            guard let dir = dataDir else { throw ValidationFailure("--dataset cifar10 needs --data-dir (a directory with data_batch_*.bin and test_batch.bin)") }
            return (try CIFAR10.loadDirectory(dir, split: .train), try CIFAR10.loadDirectory(dir, split: .test))
        case "csv":
            guard let path = dataDir else { throw ValidationFailure("--dataset csv needs --data-dir pointing at a CSV file (label in column 0)") }
            let all = try CSVDataset.load(path: path)
            return try split(all, seed: seed)
        case "sign", "blobs", "circles", "spirals":
            let all = try ToyData.named(name, count: toyCount, seed: seed)
            return try split(all, seed: seed)
        default:
            throw ValidationFailure("unknown dataset '\(name)'; valid: \(names.joined(separator: ", "))")
        }
    }

    /// A seeded 80/20 split.
    public static func split(_ all: Dataset, seed: UInt64) throws -> (Dataset, Dataset) {
        let order = Fit.permutation(count: all.count, seed: seed &+ 99, epoch: 0)
        let cut = all.count * 4 / 5
        return (try all.subset(Array(order[..<cut])), try all.subset(Array(order[cut...])))
    }
}

/// A user-facing error about options or inputs: one clear line.
public struct ValidationFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
