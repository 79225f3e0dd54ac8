import ArgumentParser
import Foundation
import LFP
import LFPExperiments
import LFPTensor

#if os(Linux)
private let RUSAGE_SELF_VALUE = __rusage_who_t(RUSAGE_SELF.rawValue)
#else
private let RUSAGE_SELF_VALUE = RUSAGE_SELF
#endif

/// Peak resident set size of this process in MB.
func peakRSSMegabytes() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF_VALUE, &usage)
    #if os(Linux)
    return Double(usage.ru_maxrss) / 1024  // KiB on Linux
    #else
    return Double(usage.ru_maxrss) / 1_048_576  // bytes on macOS
    #endif
}

/// One benchmark measurement of a training step.
public struct StepBenchmark: Codable, Sendable {
    public var model: String
    public var batch: Int
    public var method: String
    public var median_ms: Double
    public var samples_per_s: Double
    public var peak_rss_mb: Double
}

/// Times full training steps (forward, signal at the logits, backward, SGD-momentum update).
public enum StepBench {
    public static let models = ["mlp3072", "lenet3x32", "lenet1x28"]

    static func inputShape(_ model: String) -> [Int] {
        switch model {
        case "mlp3072", "lenet3x32": [3, 32, 32]
        default: [1, 28, 28]
        }
    }

    /// Median step time over `steps` steps after `warmup` steps, on random data.
    public static func run(model name: String, batch: Int, method: String, steps: Int = 30, warmup: Int = 5) throws -> StepBenchmark {
        try compare(model: name, batch: batch, methods: [method], steps: steps, warmup: warmup)[0]
    }

    /// Times several methods on the same model and data, alternating them step by step so that
    /// machine noise hits all of them alike (the robust way to get a ratio on a shared machine).
    public static func compare(model name: String, batch: Int, methods: [String], steps: Int = 30, warmup: Int = 5) throws -> [StepBenchmark] {
        let shape = inputShape(name)
        let model = try ModelZoo.make(name, .init(inputShape: shape, classes: 10), seed: 1)
        var trainers = try methods.map { method in
            try Trainer(model: model, optimizer: SGD(learningRate: 1e-4, momentum: 0.9),
                        method: method == "gradient" ? .gradient(.softmaxCrossEntropy) : .lfp)
        }
        var rng = SeededRandom(seed: 2)
        let x = Tensor.normal([batch] + shape, rng: &rng)
        let labels = (0..<batch).map { $0 % 10 }
        var times = [[Double]](repeating: [], count: methods.count)
        for i in 0..<(warmup + steps) {
            for m in methods.indices {
                let start = DispatchTime.now().uptimeNanoseconds
                try trainers[m].step(input: x, labels: labels, rng: &rng)
                let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
                if i >= warmup { times[m].append(ms) }
            }
        }
        let rss = (peakRSSMegabytes() * 10).rounded() / 10
        return methods.indices.map { m in
            let sorted = times[m].sorted()
            let median = sorted[sorted.count / 2]
            return StepBenchmark(model: name, batch: batch, method: methods[m], median_ms: (median * 100).rounded() / 100,
                                 samples_per_s: (Double(batch) / median * 1000).rounded(), peak_rss_mb: rss)
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure training-step speed.",
        subcommands: [BenchStep.self, BenchAll.self])
}

struct BenchStep: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "step", abstract: "Time one training step of a benchmark model.")

    @Option(help: "mlp3072, lenet3x32 or lenet1x28.") var model = "mlp3072"
    @Option(help: "Batch size.") var batch = 32
    @Option(help: "lfp or gradient.") var method = "lfp"
    @Option(help: "Timed steps (after 5 warm-up steps).") var steps = 30
    @Option(help: "BLAS threads (default: all cores).") var threads: Int?
    @Flag(help: "Print one JSON object.") var json = false

    mutating func validate() throws {
        guard StepBench.models.contains(model) else { throw ValidationError("unknown --model '\(model)'; valid: \(StepBench.models.joined(separator: ", "))") }
        guard ["lfp", "gradient"].contains(method) else { throw ValidationError("unknown --method '\(method)'; valid: lfp, gradient") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        if let threads { BLAS.setThreads(threads) }
        let r = try StepBench.run(model: model, batch: batch, method: method, steps: steps)
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            print(String(decoding: try e.encode(r), as: UTF8.self))
        } else {
            print("\(r.model) batch \(r.batch) \(r.method): \(r.median_ms) ms/step, \(Int(r.samples_per_s)) samples/s, peak RSS \(r.peak_rss_mb) MB")
        }
    }
}

struct BenchAll: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "all", abstract: "The full table: every benchmark model, batch 32 and 256, LFP and gradient, against the reference.")

    @Option(help: "Timed steps per configuration.") var steps = 30
    @Option(help: "BLAS threads (default: all cores).") var threads: Int?
    @Flag(help: "Print JSON lines.") var json = false

    /// The reference implementation's LFP step on this machine (REFERENCE.md, fastest of its measured range, ms).
    static let referenceLFP: [String: Double] = [
        "mlp3072/32": 8.7, "mlp3072/256": 17.7, "lenet3x32/32": 18.8, "lenet3x32/256": 87.7, "lenet1x28/32": 11.8, "lenet1x28/256": 67.0,
    ]

    func run() throws {
        if let threads { BLAS.setThreads(threads) }
        let config = BLAS.configure()
        if !json {
            print("BLAS: \(config.backend) \(config.core), \(config.threads) threads; \(steps) timed steps, LFP and gradient alternating\n")
            print("| model | batch | LFP ms | gradient ms | LFP / gradient | reference LFP ms | reference / ours | LFP samples/s | peak RSS MB |")
            print("|---|---|---|---|---|---|---|---|---|")
        }
        for model in StepBench.models {
            for batch in [32, 256] {
                let pair = try StepBench.compare(model: model, batch: batch, methods: ["lfp", "gradient"], steps: steps)
                let (lfp, grad) = (pair[0], pair[1])
                if json {
                    let e = JSONEncoder()
                    e.outputFormatting = [.sortedKeys]
                    print(String(decoding: try e.encode(lfp), as: UTF8.self))
                    print(String(decoding: try e.encode(grad), as: UTF8.self))
                } else {
                    let ref = Self.referenceLFP["\(model)/\(batch)"] ?? .nan
                    print("| \(model) | \(batch) | \(lfp.median_ms) | \(grad.median_ms) | \(String(format: "%.2f", lfp.median_ms / grad.median_ms)) | \(ref) | \(String(format: "%.2f", ref / lfp.median_ms)) | \(Int(lfp.samples_per_s)) | \(lfp.peak_rss_mb) |")
                }
            }
        }
    }
}
