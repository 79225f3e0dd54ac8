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
    /// Growth of the peak RSS from the end of the warm-up to the last step (0 when memory is flat).
    public var rss_growth_mb: Double?
    /// Every timed step (ms), for merging runs (`benchmarks/bench.sh`).
    public var times_ms: [Double]?
}

/// Times full training steps (forward, signal at the logits, backward, SGD-momentum update).
public enum StepBench {
    /// The models `bench all` and `benchmarks/bench.sh` time at batch 32 and 256.
    public static let models = ["mlp3072", "lenet3x32", "lenet1x28"]
    /// Every model `bench step` accepts: also the ResNets (`resnet18` on 32x32 inputs,
    /// `resnet18-224` on ImageNet-sized ones).
    public static let allModels = models + ["cifar-resnet", "resnet18", "resnet18-224", "vit-tiny"]

    static func inputShape(_ model: String) -> [Int] {
        switch model {
        case "mlp3072", "lenet3x32", "cifar-resnet", "resnet18": [3, 32, 32]
        case "resnet18-224", "vit-tiny": [3, 224, 224]
        default: [1, 28, 28]
        }
    }

    static func zooName(_ model: String) -> String { model == "resnet18-224" ? "resnet18" : model }

    /// Median step time over `steps` steps after `warmup` steps, on random data.
    public static func run(model name: String, batch: Int, method: String, steps: Int = 30, warmup: Int = 5) throws -> StepBenchmark {
        try compare(model: name, batch: batch, methods: [method], steps: steps, warmup: warmup)[0]
    }

    /// Times several methods on the same model and data, alternating them step by step so that
    /// machine noise hits all of them alike (the robust way to get a ratio on a shared machine).
    public static func compare(model name: String, batch: Int, methods: [String], steps: Int = 30, warmup: Int = 5) throws -> [StepBenchmark] {
        let shape = inputShape(name)
        let model = try ModelZoo.make(zooName(name), .init(inputShape: shape, classes: 10), seed: 1)
        var trainers = try methods.map { method in
            // The ViTs take the reference's ViT composite, epsilon 1 (VIT-NOTES.md).
            try Trainer(model: model, optimizer: SGD(learningRate: 1e-4, momentum: 0.9),
                        method: method == "gradient" ? .gradient(.softmaxCrossEntropy) : .lfp,
                        composite: name.hasPrefix("vit") ? .uniform(.epsilon(1)) : .uniform(.epsilon))
        }
        var rng = SeededRandom(seed: 2)
        let x = Tensor.normal([batch] + shape, rng: &rng)
        let labels = (0..<batch).map { $0 % 10 }
        var times = [[Double]](repeating: [], count: methods.count)
        var rssAfterWarmup = 0.0
        for i in 0..<(warmup + steps) {
            if i == warmup { rssAfterWarmup = peakRSSMegabytes() }
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
                                 samples_per_s: (Double(batch) / median * 1000).rounded(), peak_rss_mb: rss,
                                 rss_growth_mb: ((peakRSSMegabytes() - rssAfterWarmup) * 10).rounded() / 10,
                                 times_ms: times[m].map { ($0 * 1000).rounded() / 1000 })
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure training-step speed.",
        subcommands: [BenchStep.self, BenchAll.self, BenchConv.self, BenchGEMM.self])
}

struct BenchStep: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "step", abstract: "Time one training step of a benchmark model.")

    @Option(help: "\(StepBench.allModels.joined(separator: ", ")).") var model = "mlp3072"
    @Option(help: "Batch size.") var batch = 32
    @Option(help: "lfp, gradient, or both alternating step by step (lfp,gradient).") var method = "lfp"
    @Option(help: "Timed steps (after the warm-up steps).") var steps = 30
    @Option(help: "Warm-up steps (not timed).") var warmup = 5
    @Option(help: "BLAS threads (default: all cores).") var threads: Int?
    @Flag(help: "Print one JSON object.") var json = false

    mutating func validate() throws {
        guard StepBench.allModels.contains(model) else { throw ValidationError("unknown --model '\(model)'; valid: \(StepBench.allModels.joined(separator: ", "))") }
        let methods = method.split(separator: ",").map(String.init)
        guard !methods.isEmpty, methods.allSatisfy(["lfp", "gradient"].contains) else {
            throw ValidationError("unknown --method '\(method)'; valid: lfp, gradient, lfp,gradient")
        }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
        guard warmup >= 1 else { throw ValidationError("--warmup must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        if let threads { BLAS.setThreads(threads) }
        let results = try StepBench.compare(model: model, batch: batch, methods: method.split(separator: ",").map(String.init), steps: steps,
                                            warmup: warmup)
        for r in results {
            if json {
                let e = JSONEncoder()
                e.outputFormatting = [.sortedKeys]
                print(String(decoding: try e.encode(r), as: UTF8.self))
            } else {
                print("\(r.model) batch \(r.batch) \(r.method): \(r.median_ms) ms/step, \(Int(r.samples_per_s)) samples/s, peak RSS \(r.peak_rss_mb) MB")
            }
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
                    var (lfp, grad) = (lfp, grad)
                    lfp.times_ms = nil; grad.times_ms = nil
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

/// Throughput of the convolution kernels on the benchmark models' layer shapes, against the
/// sgemm roofline measured in the same run.
public enum ConvBench {
    public struct Shape: Sendable {
        public var name: String
        public var geometry: ConvGeometry
    }

    /// The convolutions of the CIFAR `vgg-like` model (3x3, padding 1).
    public static let vggShapes: [Shape] = [
        Shape(name: "vgg-like.conv1", geometry: ConvGeometry(inChannels: 3, inHeight: 32, inWidth: 32, outChannels: 32, kernel: (3, 3), padding: (1, 1))),
        Shape(name: "vgg-like.conv2", geometry: ConvGeometry(inChannels: 32, inHeight: 32, inWidth: 32, outChannels: 32, kernel: (3, 3), padding: (1, 1))),
        Shape(name: "vgg-like.conv4", geometry: ConvGeometry(inChannels: 64, inHeight: 16, inWidth: 16, outChannels: 64, kernel: (3, 3), padding: (1, 1))),
        Shape(name: "vgg-like.conv6", geometry: ConvGeometry(inChannels: 128, inHeight: 8, inWidth: 8, outChannels: 128, kernel: (3, 3), padding: (1, 1))),
    ]

    /// The convolutions of `lenet3x32` and `lenet1x28`.
    public static let shapes: [Shape] = [
        Shape(name: "lenet3x32.conv1", geometry: ConvGeometry(inChannels: 3, inHeight: 32, inWidth: 32, outChannels: 16, kernel: (5, 5))),
        Shape(name: "lenet3x32.conv2", geometry: ConvGeometry(inChannels: 16, inHeight: 14, inWidth: 14, outChannels: 16, kernel: (5, 5))),
        Shape(name: "lenet1x28.conv1", geometry: ConvGeometry(inChannels: 1, inHeight: 28, inWidth: 28, outChannels: 16, kernel: (5, 5))),
        Shape(name: "lenet1x28.conv2", geometry: ConvGeometry(inChannels: 16, inHeight: 12, inWidth: 12, outChannels: 16, kernel: (5, 5))),
    ]

    public struct Result: Codable, Sendable {
        public var shape: String
        public var batch: Int
        public var map: String
        public var median_ms: Double
        public var gflops: Double
        /// The sgemm roofline (n = 1024, all threads) measured in the same window as this map.
        public var roofline_gflops: Double
        public var roofline_fraction: Double
    }

    /// Median time of each map over `repeats` runs; GFLOP/s counts `2 O C kh kw OH OW N`.
    ///
    /// The roofline is measured interleaved with each map, in 4 rounds: 3 timed n = 1024
    /// sgemm runs, then a quarter of the map's timed runs; the fraction is the map's median
    /// rate over the sgemm's median rate in that window. On a shared machine whose speed moves
    /// by 2x within minutes, a roofline measured once before all maps made the fraction follow
    /// the machine, not the kernel (three back-to-back runs: rooflines of 88, 147 and 210
    /// GFLOP/s). The map runs back to back within a round: right after the sgemm (which sweeps
    /// 12 MB through the caches) a 1-channel weight map measured 40 % slower, a cost of the
    /// benchmark's order, not of the kernel.
    public static func run(batch: Int, repeats: Int, shapes: [Shape] = shapes) -> [Result] {
        var results: [Result] = []
        let sgemm = RooflineProduct(n: 1024)
        for shape in shapes {
            let g = shape.geometry
            var rng = SeededRandom(seed: 3)
            let x = Tensor.normal([batch, g.inChannels, g.inHeight, g.inWidth], rng: &rng)
            let w = Tensor.normal([g.outChannels, g.inChannels, g.kernelHeight, g.kernelWidth], rng: &rng)
            let dy = Tensor.normal([batch, g.outChannels, g.outHeight, g.outWidth], rng: &rng)
            let flops = 2 * Double(g.outChannels * g.patchSize * g.positions * batch)
            let maps: [(String, () -> Tensor)] = [
                ("forward", { Convolution.forward(x, weight: w, bias: nil, geometry: g) }),
                ("input map", { Convolution.backwardInput(dy, weight: w, geometry: g) }),
                ("weight map", { Convolution.backwardWeight(dy, input: x, geometry: g) }),
            ]
            for (name, body) in maps {
                _ = body()
                sgemm.run()
                var times: [Double] = [], rooflines: [Double] = []
                let rounds = 4
                for round in 0..<rounds {
                    for _ in 0..<3 { rooflines.append(sgemm.timedGFLOPS()) }
                    _ = body()
                    for _ in (repeats * round / rounds)..<(repeats * (round + 1) / rounds) {
                        let start = DispatchTime.now().uptimeNanoseconds
                        _ = body()
                        times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
                    }
                }
                times.sort()
                rooflines.sort()
                let median = times[times.count / 2], roofline = rooflines[rooflines.count / 2]
                let gflops = flops / median / 1e6
                results.append(Result(shape: shape.name, batch: batch, map: name, median_ms: (median * 1000).rounded() / 1000,
                                      gflops: (gflops * 10).rounded() / 10, roofline_gflops: (roofline * 10).rounded() / 10,
                                      roofline_fraction: (gflops / roofline * 1000).rounded() / 1000))
            }
        }
        return results
    }
}

struct BenchConv: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conv",
        abstract: "Convolution kernel throughput on the LeNet layer shapes, as a fraction of the sgemm roofline (n=1024) measured in the same run.")

    @Option(help: "Layer shapes: lenet (the issue-14 shapes) or vgg-like.") var model = "lenet"
    @Option(help: "Batch size.") var batch = 256
    @Option(help: "Timed runs per map.") var repeats = 20
    @Option(help: "Worker threads (default: all cores).") var threads: Int?
    @Flag(help: "Print JSON lines.") var json = false

    mutating func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        guard ["lenet", "vgg-like"].contains(model) else { throw ValidationError("unknown --model '\(model)'; valid: lenet, vgg-like") }
    }

    func run() throws {
        if let threads { BLAS.setThreads(threads) }
        let results = ConvBench.run(batch: batch, repeats: repeats, shapes: model == "lenet" ? ConvBench.shapes : ConvBench.vggShapes)
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            for r in results { print(String(decoding: try e.encode(r), as: UTF8.self)) }
            return
        }
        print("batch \(batch), \(BLAS.threads) threads; roofline: n=1024 sgemm on all threads, timed in 4 rounds between the map's runs (medians)\n")
        print("| layer | map | ms | GFLOP/s | roofline GFLOP/s | of roofline |")
        print("|---|---|---|---|---|---|")
        for r in results {
            print("| \(r.shape) | \(r.map) | \(r.median_ms) | \(r.gflops) | \(r.roofline_gflops) | \(String(format: "%.1f", r.roofline_fraction * 100)) % |")
        }
    }
}

/// Large products through `BLAS.gemm` with each of its kernels (`BLAS.GEMMKernel`), alternating
/// product by product so that the machine's phases hit both alike.
public enum GEMMBench {
    /// A product `C [m, n] = op(A) op(B)` with depth k.
    public struct Shape: Sendable {
        public var name: String, m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool
    }

    /// The large products of a training step: `mlp3072`'s first layer at batch 256 (forward
    /// `X W^T`, weight map `S^T X`) and its second (input map `S W`), and a square product.
    public static let shapes = [
        Shape(name: "mlp3072 fc1 forward X W^T", m: 256, n: 512, k: 3072, transposeA: false, transposeB: true),
        Shape(name: "mlp3072 fc1 weight map S^T X", m: 512, n: 3072, k: 256, transposeA: true, transposeB: false),
        Shape(name: "mlp3072 fc2 input map S W", m: 256, n: 512, k: 256, transposeA: false, transposeB: false),
        Shape(name: "square 1024", m: 1024, n: 1024, k: 1024, transposeA: false, transposeB: false),
    ]

    /// One shape's result: median GFLOP/s of each kernel and the median of the per-round ratios.
    public struct Result: Codable, Sendable {
        public var shape: String
        public var m: Int, n: Int, k: Int
        public var blas_gflops: Double
        public var library_gflops: Double
        /// Median over rounds of (library rate / BLAS rate) of the two products of that round.
        public var library_over_blas: Double
    }

    /// Times `rounds` alternating pairs (library, BLAS; the order flips every round) of `shape`
    /// after 3 warm-up pairs.
    public static func run(_ shape: Shape, rounds: Int) -> Result {
        var rng = SeededRandom(seed: 3)
        let a = Tensor.normal(shape.transposeA ? [shape.k, shape.m] : [shape.m, shape.k], rng: &rng)
        let b = Tensor.normal(shape.transposeB ? [shape.n, shape.k] : [shape.k, shape.n], rng: &rng)
        var c = [Float](repeating: 0, count: shape.m * shape.n)
        let flop = 2.0 * Double(shape.m) * Double(shape.n) * Double(shape.k)
        func rate(_ kernel: BLAS.GEMMKernel) -> Double {
            a.storage.withUnsafeBufferPointer { pa in b.storage.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                let start = DispatchTime.now().uptimeNanoseconds
                BLAS.gemm(transposeA: shape.transposeA, transposeB: shape.transposeB, m: shape.m, n: shape.n, k: shape.k, alpha: 1,
                          a: pa.baseAddress!, lda: shape.transposeA ? shape.m : shape.k, b: pb.baseAddress!,
                          ldb: shape.transposeB ? shape.k : shape.n, beta: 0, c: pc.baseAddress!, ldc: shape.n, kernel: kernel)
                return flop / Double(DispatchTime.now().uptimeNanoseconds - start)
            } } }
        }
        for _ in 0..<3 { _ = rate(.library); _ = rate(.blas) }
        var library: [Double] = [], blas: [Double] = [], ratios: [Double] = []
        for round in 0..<rounds {
            let (l, o): (Double, Double)
            if round % 2 == 0 { l = rate(.library); o = rate(.blas) } else { o = rate(.blas); l = rate(.library) }
            library.append(l); blas.append(o); ratios.append(l / o)
        }
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        func round1(_ x: Double) -> Double { (x * 10).rounded() / 10 }
        return Result(shape: shape.name, m: shape.m, n: shape.n, k: shape.k, blas_gflops: round1(median(blas)),
                      library_gflops: round1(median(library)), library_over_blas: (median(ratios) * 100).rounded() / 100)
    }
}

struct BenchGEMM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm",
        abstract: "The large products of a training step with the library's own sgemm against BLAS, alternating (GFLOP/s, medians).")

    @Option(help: "Alternating pairs per shape.") var rounds = 40
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "Print JSON lines.") var json = false

    mutating func validate() throws {
        guard rounds >= 1 else { throw ValidationError("--rounds must be at least 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        if let threads { BLAS.setThreads(threads) }
        let config = BLAS.configure()
        if !json {
            let library = !BLAS.libraryGEMMAvailable ? "not available here (it needs AVX-512 and OpenBLAS): both columns are BLAS"
                : config.ownGEMM ? "AVX-512 kernel (gemm.c), in use" : "AVX-512 kernel (gemm.c), not in use (LFP_GEMM=blas)"
            print("BLAS: \(config.backend) \(config.core); library sgemm: \(library); \(config.threads) threads, \(rounds) alternating pairs per shape\n")
            print("| product | m x n x k | BLAS GFLOP/s | library GFLOP/s | library / BLAS (median of pairs) |")
            print("|---|---|---|---|---|")
        }
        for shape in GEMMBench.shapes {
            let r = GEMMBench.run(shape, rounds: rounds)
            if json {
                let e = JSONEncoder()
                e.outputFormatting = [.sortedKeys]
                print(String(decoding: try e.encode(r), as: UTF8.self))
            } else {
                print("| \(r.shape) | \(r.m) x \(r.n) x \(r.k) | \(r.blas_gflops) | \(r.library_gflops) | \(String(format: "%.2f", r.library_over_blas)) |")
            }
        }
    }
}
