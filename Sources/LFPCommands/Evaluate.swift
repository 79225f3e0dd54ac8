import ArgumentParser
import Foundation
import LFP
import LFPExperiments
import LFPData

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure a checkpoint's accuracy on a dataset's test split.")

    @Option(help: "Checkpoint written by lfp train (model.safetensors).") var checkpoint: String
    @Option(help: "Model name (default: the one recorded in the checkpoint).") var model: String?
    @Option(help: "Dataset: \(DatasetCatalog.names.joined(separator: ", ")).") var dataset = "fashion-mnist"
    @Option(help: "Directory (or CSV file) holding the dataset.") var dataDir: String?
    @Option(help: "Seed of the train/test split for CSV and toy datasets.") var seed: UInt64 = 1
    @Flag(help: "Print {\"accuracy\": ...}.") var json = false

    func run() throws {
        try reportingErrors {
            let meta = try Checkpoint.metadata(at: checkpoint)
            let (trainSet, loadedTest) = try DatasetCatalog.load(dataset, dataDir: dataDir, seed: seed)
            var testSet = loadedTest
            // Normalise exactly as in training (statistics recorded in the checkpoint, else recomputed).
            let mean = meta["lfp.normalization_mean"]?.split(separator: ",").compactMap { Float($0) }
            let std = meta["lfp.normalization_std"]?.split(separator: ",").compactMap { Float($0) }
            let stats = (mean != nil && std != nil) ? (mean!, std!) : trainSet.channelStatistics()
            testSet = try testSet.normalized(mean: stats.0, std: stats.1)
            let options = try ModelOptions.recorded(in: meta, model: model)
            let classes = meta["lfp.classes"].flatMap(Int.init) ?? testSet.classCount
            let accuracy: Double
            if options.isSpiking {
                var network = try options.buildSpiking(inputShape: testSet.sampleShape, classes: classes, seed: 0)
                try Checkpoint.restore(&network, from: checkpoint)
                accuracy = try SpikingTrainer(model: network, optimizer: SGD(learningRate: 0), steps: options.timesteps).accuracy(on: testSet)
            } else {
                var net = try options.build(inputShape: testSet.sampleShape, classes: classes, seed: 0)
                try Checkpoint.restore(&net, from: checkpoint)
                accuracy = Fit.accuracy(net, on: testSet)
            }
            if json {
                print("{\"accuracy\": \(accuracy), \"samples\": \(testSet.count)}")
            } else {
                print(String(format: "accuracy %.4f on %d test samples of %@", accuracy, testSet.count, dataset))
            }
        }
    }
}

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "data", abstract: "Describe a dataset: counts, shape, classes.")

    @Option(help: "Dataset: \(DatasetCatalog.names.joined(separator: ", ")).") var dataset = "fashion-mnist"
    @Option(help: "Directory (or CSV file) holding the dataset.") var dataDir: String?
    @Option(help: "Seed of the train/test split for CSV and toy datasets.") var seed: UInt64 = 1

    func run() throws {
        try reportingErrors {
            let (train, test) = try DatasetCatalog.load(dataset, dataDir: dataDir, seed: seed)
            print("train:\n\(train.describe())\ntest:\n\(test.describe())")
        }
    }
}
