import ArgumentParser
import Foundation
import LFP
import LFPExperiments
import LFPData
import LFPTensor

/// `lfp experiment <name>`: the paper's experiments, each writing results.csv, SVG plots and report.md.
public struct ExperimentCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "experiment",
        abstract: "Run one of the paper's experiments (or all) and write results.csv, plots and report.md.",
        discussion: """
            Experiments: \(Experiments.names.joined(separator: ", ")).
            --quick finishes each in a few minutes on 2 cores (data subsets, few epochs, one seed); the default \
            is a faithful but smaller run; --full is the paper's scale. Image experiments use CIFAR-10 when \
            --data-dir holds its binary files, an IDX data set (MNIST) when it holds those, else Fashion-MNIST \
            at \(DatasetCatalog.fashionMNISTDefault).
            """)

    @Argument(help: "Experiment: \(Experiments.names.joined(separator: ", ")).") var name: String
    @Flag(help: "Small and fast (minutes on 2 cores).") var quick = false
    @Flag(help: "The paper's scale (hours).") var full = false
    @Option(help: .hidden) var scale: String?
    @Option(help: "Directory holding CIFAR-10 (binary) or MNIST/Fashion-MNIST (IDX) files.") var dataDir: String?
    @Option(help: "Data set for the image experiments: fashion-mnist, mnist, cifar10 (default: chosen from --data-dir).") var dataset: String?
    @Option(help: "Number of seeds (default: 1 with --quick, more otherwise).") var seeds: Int?
    @Option(help: "rules: pretrained weights (safetensors with this library's parameter names) instead of pretraining here.") var pretrained: String?
    @Option(help: "BLAS threads (default: all cores).") var threads: Int?
    @Option(help: "Output directory.") var output: String
    @Flag(help: "No progress lines.") var quiet = false

    public init() {}

    public mutating func validate() throws {
        guard Experiments.names.contains(name) else {
            throw ValidationError("unknown experiment '\(name)'; valid: \(Experiments.names.joined(separator: ", "))")
        }
        if quick && full { throw ValidationError("--quick and --full exclude each other") }
        if let scale, ExperimentScale(rawValue: scale) == nil {
            throw ValidationError("unknown --scale '\(scale)'; valid: \(ExperimentScale.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let seeds, seeds < 1 { throw ValidationError("--seeds must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let pretrained, !FileManager.default.fileExists(atPath: pretrained) {
            throw ValidationError("--pretrained \(pretrained): no such file")
        }
    }

    var resolvedScale: ExperimentScale {
        if let scale, let s = ExperimentScale(rawValue: scale) { return s }
        return quick ? .quick : (full ? .full : .standard)
    }

    public func run() throws {
        try reportingErrors {
            if let threads { BLAS.setThreads(threads) }
            BLAS.configure()
            let quiet = self.quiet
            let start = Date()
            let config = ExperimentConfiguration(
                scale: resolvedScale, dataDir: dataDir, dataset: dataset, seeds: seeds,
                output: URL(fileURLWithPath: output), pretrained: pretrained,
                log: { line in
                    guard !quiet else { return }
                    let t = Date().timeIntervalSince(start)
                    FileHandle.standardError.write(Data(String(format: "[%5.0fs] %@\n", t, line).utf8))
                })
            let outcomes = try Experiments.run(name, config)
            for o in outcomes {
                print(String(format: "%@: %@ (%.0f s) -> %@", o.name, o.skipped.map { "skipped: \($0)" } ?? o.headline.joined(separator: "; "),
                             o.seconds, o.directory.appendingPathComponent("report.md").path))
            }
            if name == "all" { print("index: \(URL(fileURLWithPath: output).appendingPathComponent("index.md").path)") }
        }
    }
}

/// `lfp explain`: LRP explanations of a trained checkpoint from the LFP engine: the feedback of
/// one logit propagated to the input, as heatmaps, with per-layer feedback statistics.
public struct Explain: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Explain a checkpoint's predictions: input heatmaps (LRP from the LFP engine) and per-layer feedback statistics.",
        discussion: """
            For each of the first --count test samples (from --start), the explained logit (of the predicted class, or the \
            true one with --target true) is propagated back to the input with the chosen rule or composite; every other \
            logit gets no feedback. Writes heatmaps.svg (input next to its relevance: red positive, blue negative), \
            layers.csv (per sample and layer: sum, max |feedback|, fraction positive/negative) and explanations.json \
            (the same plus the relevance of every input value).
            """)

    @Option(help: "Checkpoint written by lfp train (model.safetensors).") var checkpoint: String
    @Option(help: "Model name (default: the one recorded in the checkpoint).") var model: String?
    @Option(help: "Dataset: \(DatasetCatalog.names.joined(separator: ", ")).") var dataset = "fashion-mnist"
    @Option(help: "Directory (or CSV file) holding the dataset.") var dataDir: String?
    @Option(help: "Seed of the train/test split for CSV and toy datasets.") var seed: UInt64 = 1
    @Option(help: "Number of samples to explain.") var count = 8
    @Option(help: "Index of the first test sample.") var start = 0
    @Option(name: [.long, .customLong("rule")], help: "Rule or composite: \(Composite.presetNames.joined(separator: ", ")), or epsilon:EPS, alpha-beta:A:B.")
    var composite = "epsilon"
    @Option(help: "Which logit to explain: predicted or true.") var target = "predicted"
    @Option(help: "Output directory.") var output: String

    public init() {}

    public mutating func validate() throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        guard start >= 0 else { throw ValidationError("--start must be non-negative") }
        guard Explanations.Target(rawValue: target) != nil else { throw ValidationError("--target must be predicted or true") }
        do { _ = try Composite.preset(named: composite) } catch { throw ValidationError("\(error)") }
    }

    public func run() throws {
        try reportingErrors {
            BLAS.configure()
            let meta = try Checkpoint.metadata(at: checkpoint)
            let (trainSet, loadedTest) = try DatasetCatalog.load(dataset, dataDir: dataDir, seed: seed)
            let mean = meta["lfp.normalization_mean"]?.split(separator: ",").compactMap { Float($0) }
            let std = meta["lfp.normalization_std"]?.split(separator: ",").compactMap { Float($0) }
            let stats = (mean != nil && std != nil && !mean!.isEmpty) ? (mean!, std!) : trainSet.channelStatistics()
            let testSet = try loadedTest.normalized(mean: stats.0, std: stats.1)
            guard start < testSet.count else { throw ValidationFailure("--start \(start) is beyond the \(testSet.count) test samples") }
            let options = try ModelOptions.recorded(in: meta, model: model)
            let classes = meta["lfp.classes"].flatMap(Int.init) ?? testSet.classCount
            var net = try options.build(inputShape: testSet.sampleShape, classes: classes, seed: 0)
            try Checkpoint.restore(&net, from: checkpoint)
            let indices = Array(start..<min(testSet.count, start + count))
            let explanations = try Explanations.explain(model: net, data: testSet, indices: indices,
                                                        composite: try Composite.preset(named: composite),
                                                        target: Explanations.Target(rawValue: target)!)
            let dir = URL(fileURLWithPath: output)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let svg = Explanations.heatmapSVG(explanations, mean: stats.0, std: stats.1,
                                              title: "\(options.model) on \(dataset): LRP (\(composite)) of the \(target) class",
                                              classNames: Explanations.classNames(dataset: dataset))
            try svg.write(to: dir.appendingPathComponent("heatmaps.svg"), atomically: true, encoding: .utf8)
            try Explanations.layerCSV(explanations).write(to: dir.appendingPathComponent("layers.csv"))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            try encoder.encode(explanations).write(to: dir.appendingPathComponent("explanations.json"), options: .atomic)
            let correct = explanations.filter { $0.label == $0.predicted }.count
            print("explained \(explanations.count) samples (\(correct) predicted correctly) with \(composite); heatmaps.svg, layers.csv, explanations.json in \(output)")
        }
    }
}
