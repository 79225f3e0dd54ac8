import Foundation
import LFP

// MARK: - Configuration

/// How big an experiment run is.
public enum ExperimentScale: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Tiny: for the end-to-end tests only (seconds, numbers meaningless).
    case smoke
    /// A few minutes at most on a 2-core machine: data subsets, few epochs, one seed.
    case quick
    /// A faithful but smaller run than the paper's.
    case standard = "default"
    /// The paper's scale.
    case full

    public var description: String { rawValue }

    /// Picks a value by scale.
    public func pick<T>(smoke: T, quick: T, standard: T, full: T) -> T {
        switch self {
        case .smoke: smoke
        case .quick: quick
        case .standard: standard
        case .full: full
        }
    }
}

/// What every experiment is given.
public struct ExperimentConfiguration: Sendable {
    public var scale: ExperimentScale
    /// Where a real data set lies (CIFAR-10 binary or IDX files); nil: Fashion-MNIST at its default place.
    public var dataDir: String?
    /// The data set to use (nil: chosen from `dataDir`, see ``ExperimentData``).
    public var dataset: String?
    /// Number of seeds (nil: the scale's default).
    public var seeds: Int?
    /// The output directory (created if needed).
    public var output: URL
    /// Real pretrained weights for the `rules` experiment (safetensors with this library's names).
    public var pretrained: String?
    /// Progress lines (one per finished run or epoch).
    public var log: @Sendable (String) -> Void

    public init(scale: ExperimentScale = .quick, dataDir: String? = nil, dataset: String? = nil, seeds: Int? = nil,
                output: URL, pretrained: String? = nil, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.scale = scale
        self.dataDir = dataDir
        self.dataset = dataset
        self.seeds = seeds
        self.output = output
        self.pretrained = pretrained
        self.log = log
    }

    /// The number of seeds to run: the override, else the scale's default.
    public func seedCount(smoke: Int = 1, quick: Int = 1, standard: Int, full: Int) -> Int {
        max(1, seeds ?? scale.pick(smoke: smoke, quick: quick, standard: standard, full: full))
    }

    /// `output/name`.
    public func file(_ name: String) -> URL { output.appendingPathComponent(name) }

    /// A copy writing into a sub-directory.
    public func subdirectory(_ name: String) -> ExperimentConfiguration {
        var c = self
        c.output = output.appendingPathComponent(name)
        return c
    }
}

/// What an experiment wrote.
public struct ExperimentOutcome: Sendable {
    public var name: String
    public var title: String
    /// Output directory.
    public var directory: URL
    /// File names (relative to `directory`) of the plots.
    public var plots: [String]
    /// One-line findings, for the index.
    public var headline: [String]
    public var seconds: Double
    /// Set when the experiment could not run (e.g. a missing component); the report says why.
    public var skipped: String?

    public init(name: String, title: String, directory: URL, plots: [String], headline: [String], seconds: Double, skipped: String? = nil) {
        self.name = name; self.title = title; self.directory = directory; self.plots = plots
        self.headline = headline; self.seconds = seconds; self.skipped = skipped
    }
}

/// An error that stops an experiment with one clear line.
public struct ExperimentError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

// MARK: - Data

/// The data sets the experiments train on.
public enum ExperimentData {
    /// A loaded, normalised image data set.
    public struct Images: Sendable {
        public var train: Dataset
        public var test: Dataset
        /// `cifar10`, `fashion-mnist` or `mnist`.
        public var name: String
        public var mean: [Float]
        public var std: [Float]
    }

    /// Whether `dir` holds CIFAR-10 binary files (itself or its `cifar-10-batches-bin/`).
    public static func holdsCIFAR(_ dir: String) -> Bool {
        let fm = FileManager.default
        return [dir, (dir as NSString).appendingPathComponent("cifar-10-batches-bin")].contains {
            fm.fileExists(atPath: ($0 as NSString).appendingPathComponent("test_batch.bin"))
        }
    }

    /// The name of the image data set an experiment uses: `configuration.dataset` if set; else
    /// CIFAR-10 when `dataDir` holds it (and `preferCIFAR`), an IDX set in `dataDir` (named
    /// `fashion-mnist` when the path says so, else `mnist`), or Fashion-MNIST at its default place.
    public static func imageDatasetName(_ c: ExperimentConfiguration, preferCIFAR: Bool = true) -> String {
        if let d = c.dataset { return d.lowercased() }
        guard let dir = c.dataDir else { return "fashion-mnist" }
        if preferCIFAR && holdsCIFAR(dir) { return "cifar10" }
        if holdsCIFAR(dir) { return "cifar10" }
        return dir.lowercased().contains("fashion") ? "fashion-mnist" : "mnist"
    }

    /// Loads, subsets (first `trainLimit` / `testLimit` samples) and normalises an image data
    /// set with the training subset's per-channel statistics.
    public static func images(_ c: ExperimentConfiguration, trainLimit: Int?, testLimit: Int?, preferCIFAR: Bool = true) throws -> Images {
        let name = imageDatasetName(c, preferCIFAR: preferCIFAR)
        var (train, test) = try cache.load(name, dataDir: c.dataDir)
        if let n = trainLimit { train = train.prefix(n) }
        if let n = testLimit { test = test.prefix(n) }
        let (mean, std) = train.channelStatistics()
        return Images(train: try train.normalized(mean: mean, std: std), test: try test.normalized(mean: mean, std: std),
                      name: name, mean: mean, std: std)
    }

    /// The samples whose label is in `classes`, relabelled `0..<classes.count` in that order.
    public static func classSubset(_ data: Dataset, classes: [Int]) throws -> Dataset {
        var map = [Int: Int]()
        for (i, c) in classes.enumerated() { map[c] = i }
        let indices = data.labels.indices.filter { map[data.labels[$0]] != nil }
        let subset = try data.subset(indices)
        return try Dataset(features: subset.features, labels: subset.labels.map { map[$0]! }, sampleShape: data.sampleShape,
                           classCount: classes.count, name: "\(data.name)-classes-\(classes.map(String.init).joined(separator: "-"))")
    }

    /// The 1-D sign data of appendix A.1 as an evenly spaced grid from -1 to 1 (label 1 for x > 0).
    public static func signGrid(step: Double) throws -> Dataset {
        let n = Int((2 / step).rounded()) + 1
        let xs = (0..<n).map { Float(-1 + Double($0) * step) }
        return try Dataset(features: xs, labels: xs.map { $0 > 0 ? 1 : 0 }, sampleShape: [1], classCount: 2, name: "sign-grid")
    }

    /// Splits off `testCount` random samples as the test set (seeded).
    public static func holdOut(_ data: Dataset, testCount: Int, seed: UInt64) throws -> (train: Dataset, test: Dataset) {
        let order = Fit.permutation(count: data.count, seed: seed &+ 77, epoch: 0)
        let k = min(testCount, data.count)
        return (try data.subset(Array(order[k...]).sorted()), try data.subset(Array(order[..<k]).sorted()))
    }
}

/// Data sets loaded once per process (`all` runs several experiments on the same data).
final class DatasetCache: @unchecked Sendable {
    private let lock = NSLock()
    private var loaded: [String: (Dataset, Dataset)] = [:]

    func load(_ name: String, dataDir: String?) throws -> (Dataset, Dataset) {
        let key = "\(name)|\(dataDir ?? "")"
        lock.lock()
        defer { lock.unlock() }
        if let hit = loaded[key] { return hit }
        let value = try DatasetCatalog.load(name, dataDir: dataDir, seed: 1)
        loaded = [key: value]  // keep one data set: they are large
        return value
    }
}

extension ExperimentData {
    static let cache = DatasetCache()
}

// MARK: - Tables and reports

/// A CSV table: a header and rows of already formatted cells.
public struct ResultsTable: Sendable {
    public var columns: [String]
    public var rows: [[String]] = []

    public init(columns: [String]) { self.columns = columns }

    /// Appends a row given as column -> value (missing columns are left empty).
    public mutating func append(_ values: [String: CustomStringConvertible]) {
        rows.append(columns.map { values[$0].map { Self.format($0) } ?? "" })
    }

    static func format(_ v: CustomStringConvertible) -> String {
        if let d = v as? Double { return d.isFinite ? String(format: "%.6g", d) : (d.isNaN ? "nan" : (d > 0 ? "inf" : "-inf")) }
        if let f = v as? Float { return format(Double(f)) }
        let s = v.description
        return s.contains(",") || s.contains("\"") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }

    public var csv: String { ([columns] + rows).map { $0.joined(separator: ",") }.joined(separator: "\n") + "\n" }

    public func write(to url: URL) throws { try csv.write(to: url, atomically: true, encoding: .utf8) }

    /// Values of a column in the rows where `filter` holds (by column name).
    public func values(_ column: String, where filter: [String: String] = [:]) -> [String] {
        guard let c = columns.firstIndex(of: column) else { return [] }
        let checks = filter.compactMap { k, v in columns.firstIndex(of: k).map { ($0, v) } }
        return rows.filter { row in checks.allSatisfy { row[$0.0] == $0.1 } }.map { $0[c] }
    }
}

/// A Markdown report, built section by section.
public struct Report: Sendable {
    public var text: String

    public init(title: String) { text = "# \(title)\n\n" }

    public mutating func heading(_ s: String) { text += "## \(s)\n\n" }
    public mutating func paragraph(_ s: String) { text += s + "\n\n" }
    public mutating func bullets(_ items: [String]) { text += items.map { "- \($0)" }.joined(separator: "\n") + "\n\n" }
    public mutating func table(_ header: [String], _ rows: [[String]]) {
        text += "| " + header.joined(separator: " | ") + " |\n"
        text += "|" + header.map { _ in "---" }.joined(separator: "|") + "|\n"
        for r in rows { text += "| " + r.joined(separator: " | ") + " |\n" }
        text += "\n"
    }
    public mutating func image(_ file: String, _ alt: String) { text += "![\(alt)](\(file))\n\n" }

    /// A "paper says / we find / verdict" table.
    public mutating func claims(_ rows: [Claim]) {
        table(["paper's claim", "what we measured", "verdict"], rows.map { [$0.paper, $0.measured, $0.verdict.rawValue] })
    }

    public func write(to url: URL) throws { try text.write(to: url, atomically: true, encoding: .utf8) }
}

/// One comparison of a paper's claim with our measurement.
public struct Claim: Sendable {
    public enum Verdict: String, Sendable {
        case agree = "agree"
        case partly = "partly"
        case disagree = "disagree"
        case inconclusive = "inconclusive"
    }
    public var paper: String
    public var measured: String
    public var verdict: Verdict
    public init(_ paper: String, _ measured: String, _ verdict: Verdict) {
        self.paper = paper; self.measured = measured; self.verdict = verdict
    }
}

/// Formats a number with `digits` decimals.
func fmt(_ v: Double, _ digits: Int = 3) -> String {
    v.isFinite ? String(format: "%.\(digits)f", v) : (v.isNaN ? "n/a" : "\(v)")
}

/// Formats a fraction as a percentage.
func pct(_ v: Double, _ digits: Int = 1) -> String { v.isFinite ? String(format: "%.\(digits)f %%", v * 100) : "n/a" }

/// Formats a positive number compactly (scientific when tiny or huge).
func sci(_ v: Double) -> String {
    guard v.isFinite else { return v.isNaN ? "n/a" : "\(v)" }
    return (v != 0 && (abs(v) < 1e-3 || abs(v) >= 1e4)) ? String(format: "%.2e", v) : String(format: "%.4g", v)
}

// MARK: - Statistics

public enum Statistics {
    public static func mean(_ xs: [Double]) -> Double {
        let v = xs.filter(\.isFinite)
        return v.isEmpty ? .nan : v.reduce(0, +) / Double(v.count)
    }

    /// Sample standard deviation (0 for one value).
    public static func std(_ xs: [Double]) -> Double {
        let v = xs.filter(\.isFinite)
        guard v.count > 1 else { return v.isEmpty ? .nan : 0 }
        let m = mean(v)
        return (v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count - 1)).squareRoot()
    }

    public static func median(_ xs: [Double]) -> Double {
        let v = xs.filter(\.isFinite).sorted()
        guard !v.isEmpty else { return .nan }
        return v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
    }

    /// Autocorrelation of a series at `lag` (the standard estimator: the lagged covariance
    /// about the series' mean, divided by its variance, both summed over the whole series):
    /// `r(k) = sum_{i<n-k} (x_i - m)(x_{i+k} - m) / sum_i (x_i - m)^2`.
    /// NaN for a constant series (the correlation is undefined) or `lag >= n`.
    public static func autocorrelation(_ xs: [Double], lag: Int) -> Double {
        let n = xs.count
        guard lag >= 0, lag < n, n >= 2 else { return .nan }
        let m = xs.reduce(0, +) / Double(n)
        var denominator = 0.0
        for x in xs { denominator += (x - m) * (x - m) }
        guard denominator > 0, denominator.isFinite else { return .nan }
        var numerator = 0.0
        for i in 0..<(n - lag) { numerator += (xs[i] - m) * (xs[i + lag] - m) }
        return numerator / denominator
    }

    /// Pearson correlation of two equally long series (NaN if either is constant).
    public static func correlation(_ a: [Double], _ b: [Double]) -> Double {
        precondition(a.count == b.count)
        let n = Double(a.count)
        guard a.count >= 2 else { return .nan }
        let ma = a.reduce(0, +) / n, mb = b.reduce(0, +) / n
        var sab = 0.0, saa = 0.0, sbb = 0.0
        for i in a.indices {
            sab += (a[i] - ma) * (b[i] - mb)
            saa += (a[i] - ma) * (a[i] - ma)
            sbb += (b[i] - mb) * (b[i] - mb)
        }
        guard saa > 0, sbb > 0 else { return .nan }
        return sab / (saa * sbb).squareRoot()
    }
}

// MARK: - Pruning

public enum Pruning {
    /// Global magnitude pruning: sets to zero the `fraction` of all connection weights (Linear,
    /// Conv2d and attention weights; biases and normalisation parameters are kept) with the smallest |w|, counted over the whole model.
    /// Ties at the threshold are broken by parameter order, so exactly
    /// `floor(fraction * total)` weights are zeroed. Returns the pruned model.
    public static func globalMagnitude(_ model: Sequential, fraction: Double) -> Sequential {
        globalMagnitude(model, fraction: fraction, ranking: ranking(model))
    }

    /// Every connection weight of the model as (parameter name, index), from the
    /// smallest |w| to the largest; ties in parameter order, then position.
    public static func ranking(_ model: Sequential) -> [(name: String, index: Int)] {
        let connections = Set(model.connectionWeightNames)
        let weights = model.namedParameters.filter { connections.contains($0.name) }
        var entries: [(magnitude: Float, parameter: Int, index: Int)] = []
        entries.reserveCapacity(weights.reduce(0) { $0 + $1.value.count })
        for (p, w) in weights.enumerated() {
            w.value.storage.withUnsafeBufferPointer { v in
                for i in v.indices { entries.append((abs(v[i]), p, i)) }
            }
        }
        entries.sort { $0.magnitude != $1.magnitude ? $0.magnitude < $1.magnitude : ($0.parameter, $0.index) < ($1.parameter, $1.index) }
        return entries.map { (weights[$0.parameter].name, $0.index) }
    }

    /// Global magnitude pruning with a precomputed ``ranking(_:)`` of the same model.
    public static func globalMagnitude(_ model: Sequential, fraction: Double, ranking: [(name: String, index: Int)]) -> Sequential {
        let total = ranking.count
        let k = min(total, max(0, Int((fraction * Double(total) + 1e-9).rounded(.down))))
        guard k > 0 else { return model }
        var values: [String: Tensor] = [:]
        let connections = Set(model.connectionWeightNames)
        for (name, value) in model.namedParameters where connections.contains(name) { values[name] = value }
        for e in ranking[..<k] { values[e.name]!.storage[e.index] = 0 }
        var pruned = model
        for (name, value) in values { pruned.setParameter(name, value) }
        return pruned
    }
}

// MARK: - Training runs

/// Which optimizer a run uses.
public enum OptimizerChoice: Sendable, CustomStringConvertible {
    case sgd(learningRate: Float, momentum: Float)
    case adam(learningRate: Float)

    public var learningRate: Float {
        switch self {
        case .sgd(let lr, _), .adam(let lr): lr
        }
    }

    public var description: String {
        switch self {
        case .sgd(let lr, let m): "SGD lr \(lr) momentum \(m)"
        case .adam(let lr): "Adam lr \(lr)"
        }
    }

    func make() -> ErasedOptimizer {
        switch self {
        case .sgd(let lr, let m): ErasedOptimizer(SGD(learningRate: lr, momentum: m))
        case .adam(let lr): ErasedOptimizer(Adam(learningRate: lr))
        }
    }
}

/// The settings of one training run.
public struct RunSettings: Sendable {
    public var method: TrainingMethod
    public var composite: Composite = .uniform(.epsilon)
    public var feedback: FeedbackFunction = .sigmoid
    public var options: PropagationOptions = .init()
    public var optimizer: OptimizerChoice
    /// A schedule over the whole run (stepped per batch).
    public var schedule: LearningRateSchedule = .constant
    public var epochs: Int
    public var batchSize: Int
    public var seed: UInt64
    /// Under LFP: train with gradient descent (cross-entropy) for this many steps first.
    public var gradientSteps = 0
    /// Record weight statistics every this many steps (nil: only per epoch).
    public var probeEvery: Int?
    /// Clip the update direction to this global L2 norm.
    public var clipNorm: Float? = nil

    public init(method: TrainingMethod, composite: Composite = .uniform(.epsilon), feedback: FeedbackFunction = .sigmoid,
                options: PropagationOptions = .init(), optimizer: OptimizerChoice, schedule: LearningRateSchedule = .constant,
                epochs: Int, batchSize: Int, seed: UInt64, gradientSteps: Int = 0, probeEvery: Int? = nil) {
        self.method = method; self.composite = composite; self.feedback = feedback; self.options = options
        self.optimizer = optimizer; self.schedule = schedule; self.epochs = epochs; self.batchSize = batchSize
        self.seed = seed; self.gradientSteps = gradientSteps; self.probeEvery = probeEvery
    }
}

/// What one epoch of a run measured.
public struct EpochRecord: Sendable {
    public var epoch: Int
    public var trainObjective: Double
    public var trainAccuracy: Double
    public var testAccuracy: Double
    /// Fraction of weights whose sign changed during the epoch.
    public var signChanges: Double
    /// Fraction of weights whose sign differs from the initial one.
    public var signChangesFromStart: Double
    /// Mean squared parameter change during the epoch (all parameters).
    public var meanSquaredChange: Double
    public var medianAbsWeight: Double
    public var seconds: Double
    /// The run left the finite numbers at or before this epoch (accuracy recorded as chance).
    public var diverged: Bool
}

/// Weight statistics at a step.
public struct ProbeRecord: Sendable {
    public var step: Int
    /// Fraction of weights whose sign changed since the previous probe.
    public var signChanges: Double
    /// Fraction of weights whose sign differs from the initial one.
    public var signChangesFromStart: Double
    public var medianAbsWeight: Double
}

/// A finished run.
public struct RunResult: Sendable {
    public var initialTestAccuracy: Double
    public var epochs: [EpochRecord]
    public var probes: [ProbeRecord]
    public var model: Sequential
    public var diverged: Bool
    public var seconds: Double
    public var finalTestAccuracy: Double { epochs.last?.testAccuracy ?? initialTestAccuracy }
    public var bestTestAccuracy: Double { epochs.map(\.testAccuracy).max() ?? initialTestAccuracy }
}

public enum Runs {
    /// Trains `model` with `settings`, evaluating on `test` after every epoch. A run that leaves
    /// the finite numbers stops; its remaining epochs are recorded with chance accuracy and
    /// `diverged` set (what a PyTorch run that diverged reports).
    public static func train(_ model: Sequential, _ settings: RunSettings, train: Dataset, test: Dataset,
                             onEpoch: (EpochRecord) -> Void = { _ in }) throws -> RunResult {
        let start = Date()
        let lfpAfterGradient = settings.gradientSteps > 0
        var trainer = try Trainer(model: model, optimizer: settings.optimizer.make(), method: settings.method,
                                  composite: settings.composite, feedback: settings.feedback, options: settings.options)
        trainer.clipNorm = settings.clipNorm
        let initial = model
        let initialAccuracy = Fit.accuracy(model, on: test)
        let batches = (train.count + settings.batchSize - 1) / settings.batchSize
        let baseLR = settings.optimizer.learningRate
        let chance = 1 / Double(max(1, test.classCount))
        var epochs: [EpochRecord] = []
        var probes: [ProbeRecord] = []
        var lastProbe = model
        var diverged = false
        for epoch in 1...max(1, settings.epochs) {
            let epochStart = trainer.model
            let t0 = Date()
            var progress = Fit.EpochProgress()
            if !diverged {
                do {
                    _ = try Fit.epoch(&trainer, data: train, epoch: epoch, batchSize: settings.batchSize, seed: settings.seed,
                                      progress: &progress, firstStep: (epoch - 1) * batches,
                                      schedule: { settings.schedule.rate(base: baseLR, step: $0) },
                                      beforeStep: { step, t in
                                          if lfpAfterGradient { t.method = step < settings.gradientSteps ? .gradient(.softmaxCrossEntropy) : .lfp }
                                      },
                                      afterStep: { b, _, _, _, t in
                                          if let every = settings.probeEvery {
                                              let step = (epoch - 1) * batches + b + 1
                                              if step % every == 0 {
                                                  let since = Fit.parameterMovement(from: lastProbe, to: t.model)
                                                  let total = Fit.parameterMovement(from: initial, to: t.model)
                                                  probes.append(ProbeRecord(step: step, signChanges: since.signChanges,
                                                                            signChangesFromStart: total.signChanges,
                                                                            medianAbsWeight: since.medianAbsWeight))
                                                  lastProbe = t.model
                                              }
                                          }
                                          return true
                                      })
                } catch is NumericalFault {
                    diverged = true
                }
            }
            let record: EpochRecord
            if diverged {
                record = EpochRecord(epoch: epoch, trainObjective: .nan, trainAccuracy: chance, testAccuracy: chance,
                                     signChanges: .nan, signChangesFromStart: .nan, meanSquaredChange: .nan,
                                     medianAbsWeight: .nan, seconds: Date().timeIntervalSince(t0), diverged: true)
            } else {
                let movement = Fit.parameterMovement(from: epochStart, to: trainer.model)
                let fromStart = Fit.parameterMovement(from: initial, to: trainer.model)
                record = EpochRecord(epoch: epoch, trainObjective: progress.objective, trainAccuracy: progress.accuracy,
                                     testAccuracy: Fit.accuracy(trainer.model, on: test), signChanges: movement.signChanges,
                                     signChangesFromStart: fromStart.signChanges, meanSquaredChange: movement.meanSquaredChange,
                                     medianAbsWeight: movement.medianAbsWeight, seconds: Date().timeIntervalSince(t0), diverged: false)
            }
            epochs.append(record)
            onEpoch(record)
        }
        return RunResult(initialTestAccuracy: initialAccuracy, epochs: epochs, probes: probes, model: trainer.model,
                         diverged: diverged, seconds: Date().timeIntervalSince(start))
    }

    /// The columns `epochRow` fills.
    public static let epochColumns = ["epoch", "test_accuracy", "train_accuracy", "train_objective", "sign_change_fraction",
                                      "sign_change_from_init", "mean_squared_change", "median_abs_weight", "seconds", "diverged"]

    /// An epoch's values by column name.
    public static func epochRow(_ r: EpochRecord) -> [String: CustomStringConvertible] {
        ["epoch": r.epoch, "test_accuracy": r.testAccuracy, "train_accuracy": r.trainAccuracy, "train_objective": r.trainObjective,
         "sign_change_fraction": r.signChanges, "sign_change_from_init": r.signChangesFromStart,
         "mean_squared_change": r.meanSquaredChange, "median_abs_weight": r.medianAbsWeight, "seconds": r.seconds,
         "diverged": r.diverged ? 1 : 0]
    }
}

/// Writes an SVG (and returns its file name).
@discardableResult
func writePlot(_ svg: String, _ name: String, _ c: ExperimentConfiguration) throws -> String {
    try svg.write(to: c.file(name), atomically: true, encoding: .utf8)
    return name
}

/// Mean curve (and min..max band) over seeds of per-epoch values: `curves[seed][epoch]` with x = index + x0.
func meanSeries(_ name: String, _ curves: [[Double]], x0: Double = 1, dashed: Bool = false, color: String? = nil) -> LinePlot.Series {
    let n = curves.map(\.count).min() ?? 0
    let xs = (0..<n).map { Double($0) + x0 }
    let means = (0..<n).map { i in Statistics.mean(curves.map { $0[i] }) }
    let band: [(x: Double, low: Double, high: Double)] = curves.count > 1
        ? (0..<n).map { i in (xs[i], curves.map { $0[i] }.filter(\.isFinite).min() ?? .nan, curves.map { $0[i] }.filter(\.isFinite).max() ?? .nan) }
        : []
    return LinePlot.Series(name: name, points: Array(zip(xs, means)).map { (x: $0.0, y: $0.1) }, dashed: dashed, color: color, band: band)
}
