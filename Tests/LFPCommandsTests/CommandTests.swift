import Foundation
import Testing
@testable import LFPCommands
import LFP
import LFPData
import LFPTensor

func temporaryDirectory(_ name: String) -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("lfp-tests-\(name)-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Runs `lfp <arguments>` in-process.
func runLFP(_ arguments: [String]) throws {
    var command = try LFPCommand.parseAsRoot(arguments)
    try command.run()
}

/// The built `lfp` executable next to the test bundle.
func lfpExecutable() -> URL? {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("lfp")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return nil
}

func runProcess(_ url: URL, _ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = url
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

@Suite struct CommandTests {
    @Test func trainOnToyDataWritesMetricsPlotAndCheckpoint() throws {
        let dir = temporaryDirectory("toy")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runLFP(["train", "--model", "toy", "--dataset", "blobs", "--epochs", "3", "--batch-size", "16", "--lr", "0.01",
                    "--output", dir.path, "--quiet"])
        let csv = try String(contentsOf: dir.appendingPathComponent("metrics.csv"), encoding: .utf8)
        let rows = csv.split(separator: "\n")
        #expect(rows.count == 4)
        #expect(rows[0].hasPrefix("epoch,train_objective,train_accuracy,test_accuracy"))
        let jsonl = try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(jsonl.count == 3)
        let last = try JSONSerialization.jsonObject(with: Data(jsonl.last!.utf8)) as! [String: Any]
        let accuracy = try #require(last["test_accuracy"] as? Double)
        #expect(accuracy > 0.8, "LFP on separable blobs should learn; got \(accuracy)")
        let svg = try String(contentsOf: dir.appendingPathComponent("accuracy.svg"), encoding: .utf8)
        #expect(svg.contains("<svg") && svg.contains("accuracy") && svg.contains("polyline"))
        // The checkpoint evaluates to the same accuracy.
        try runLFP(["evaluate", "--checkpoint", dir.appendingPathComponent("model.safetensors").path, "--dataset", "blobs"])
        var model = try ModelZoo.make("toy", .init(inputShape: [2], classes: 3), seed: 99)
        try Checkpoint.restore(&model, from: dir.appendingPathComponent("model.safetensors").path)
    }

    @Test func gradientAndGradientThenLFPTrain() throws {
        for method in ["gradient", "gradient-then-lfp"] {
            let dir = temporaryDirectory(method)
            defer { try? FileManager.default.removeItem(at: dir) }
            try runLFP(["train", "--model", "toy", "--dataset", "circles", "--epochs", "2", "--method", method,
                        "--pretrain-steps", "20", "--output", dir.path, "--quiet", "--schedule", "cosine"])
            #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors").path))
        }
    }

    @Test func trainsLeNetOnIDXFilesInADirectory() throws {
        let dir = temporaryDirectory("idx")
        defer { try? FileManager.default.removeItem(at: dir) }
        // A tiny MNIST-like set: class k is a bright square at position k.
        var rng = SeededRandom(seed: 3)
        func make(_ count: Int, _ prefix: String) throws {
            var pixels = [UInt8](repeating: 0, count: count * 28 * 28)
            var labels = [UInt8]()
            for i in 0..<count {
                let label = i % 10
                labels.append(UInt8(label))
                let (r0, c0) = (2 + (label / 5) * 12, 2 + (label % 5) * 5)
                for r in r0..<(r0 + 10) { for c in c0..<(c0 + 4) { pixels[i * 784 + r * 28 + c] = UInt8(200 + Int(rng.nextUnit() * 55)) } }
            }
            try IDX.write(images: pixels, count: count, rows: 28, cols: 28, to: dir.appendingPathComponent("\(prefix)-images-idx3-ubyte.gz").path, gzip: true)
            try IDX.writeLabels(labels, to: dir.appendingPathComponent("\(prefix)-labels-idx1-ubyte.gz").path, gzip: true)
        }
        try make(300, "train")
        try make(100, "t10k")
        let out = dir.appendingPathComponent("run")
        try runLFP(["train", "--dataset", "mnist", "--data-dir", dir.path, "--epochs", "6", "--output", out.path, "--quiet"])
        let jsonl = try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        let last = try JSONSerialization.jsonObject(with: Data(jsonl.last!.utf8)) as! [String: Any]
        #expect((last["test_accuracy"] as? Double ?? 0) > 0.5)
    }

    @Test func badOptionsAreRejectedWithClearErrors() {
        #expect(throws: (any Error).self) { try LFPCommand.parseAsRoot(["train", "--model", "resnet"]) }
        #expect(throws: (any Error).self) { try LFPCommand.parseAsRoot(["train", "--lr", "-1"]) }
        #expect(throws: (any Error).self) { try LFPCommand.parseAsRoot(["train", "--epochs", "0"]) }
        #expect(throws: (any Error).self) { try LFPCommand.parseAsRoot(["train", "--composite", "nonsense"]) }
        #expect(throws: (any Error).self) { try LFPCommand.parseAsRoot(["train", "--no-such-option"]) }
        #expect(throws: (any Error).self) { try runLFP(["train", "--dataset", "mnist", "--data-dir", "/nonexistent", "--quiet"]) }
    }

    /// `--activation step|sigmoid` picks its LFP recipe; every option given overrides its part;
    /// ReLU and gradient descent keep the standard settings.
    @Test func activationPicksItsRecipeAndOptionsOverrideIt() throws {
        func train(_ arguments: [String]) throws -> Train { try #require(try LFPCommand.parseAsRoot(["train"] + arguments) as? Train) }
        let step = try train(["--activation", "step"])
        #expect(step.composite == "threshold-epsilon:0.5" && step.centredInputs && step.feedback == "softmax")
        #expect(step.clip == nil && step.modelOptions.noise == 0 && step.batchSize == 32 && step.optimizer == "sgd")
        let overridden = try train(["--activation", "step", "--composite", "epsilon:1", "--no-centred-inputs", "--noise", "0.1",
                                    "--clip", "5", "--batch-size", "64", "--feedback", "sigmoid"])
        #expect(overridden.composite == "epsilon:1" && !overridden.centredInputs && overridden.modelOptions.noise == 0.1)
        #expect(overridden.clip == 5 && overridden.batchSize == 64 && overridden.feedback == "sigmoid")
        let sigmoid = try train(["--activation", "sigmoid"])
        #expect(sigmoid.optimizer == "adam" && sigmoid.centredInputs && sigmoid.composite == "epsilon" && sigmoid.recipe == .lfp(for: .sigmoid))
        for plain in [["--activation", "relu"], ["--activation", "tanh"], ["--activation", "step", "--method", "gradient"]] {
            let t = try train(plain)
            #expect(t.recipe == .standard && t.composite == "epsilon" && !t.centredInputs && t.clip == nil, "\(plain)")
            #expect(t.modelOptions.noise == 0 && t.feedback == "sigmoid" && t.batchSize == 32, "\(plain)")
        }
        // run.json records the resolved values, so a resumed run replays them.
        #expect(step.arguments.contains("--centred-inputs") && step.arguments.contains("threshold-epsilon:0.5"))
    }

    /// The first line of `lfp train --activation X` names the recipe it picked, also when it is
    /// the standard one; ReLU without --activation and gradient descent print no recipe line.
    @Test func firstLineNamesTheActivationsRecipe() throws {
        guard let lfp = lfpExecutable() else {
            Issue.record("lfp executable not found next to the tests")
            return
        }
        let dir = temporaryDirectory("recipe-line")
        defer { try? FileManager.default.removeItem(at: dir) }
        func firstLine(_ extra: [String]) throws -> String {
            let r = try runProcess(lfp, ["train", "--model", "toy", "--dataset", "blobs", "--epochs", "1", "--train-limit", "64",
                                         "--test-limit", "32", "--output", dir.path] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            return String(r.stderr.split(separator: "\n").first ?? "")
        }
        let step = try firstLine(["--activation", "step"])
        #expect(step.contains("recipe for --activation step under LFP, its own") && step.contains("threshold-epsilon:0.5"), "\(step)")
        let tanh = try firstLine(["--activation", "tanh"])
        #expect(tanh.contains("recipe for --activation tanh under LFP, the standard one"), "\(tanh)")
        #expect(try !firstLine([]).contains("recipe"))
        #expect(try !firstLine(["--activation", "step", "--method", "gradient"]).contains("recipe"))
    }

    @Test func stepBenchmarkRuns() throws {
        let r = try StepBench.run(model: "lenet1x28", batch: 2, method: "lfp", steps: 2, warmup: 1)
        #expect(r.median_ms > 0 && r.samples_per_s > 0 && r.peak_rss_mb > 0)
        #expect(r.times_ms?.count == 2 && r.rss_growth_mb != nil)
    }

    /// The two benchmark commands benchmarks/bench.sh reads: `bench step` with both methods
    /// alternating (every timed step in the JSON) and `bench conv` (every layer and map).
    @Test func benchmarkCommandsPrintWhatBenchShReads() throws {
        guard let lfp = lfpExecutable() else {
            Issue.record("lfp executable not found next to the tests")
            return
        }
        let step = try runProcess(lfp, ["bench", "step", "--model", "lenet1x28", "--batch", "2", "--method", "lfp,gradient", "--steps", "3", "--json"])
        #expect(step.status == 0, "\(step.stderr)")
        let lines = step.stdout.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(lines.map { $0?["method"] as? String } == ["lfp", "gradient"])
        #expect(lines.allSatisfy { ($0?["times_ms"] as? [Double])?.count == 3 })
        let conv = try runProcess(lfp, ["bench", "conv", "--batch", "2", "--repeats", "1", "--json"])
        #expect(conv.status == 0, "\(conv.stderr)")
        let rows = conv.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(rows.count == ConvBench.shapes.count * 3)
        #expect(rows.allSatisfy { ($0["gflops"] as? Double ?? 0) > 0 && ($0["roofline_fraction"] as? Double ?? 0) > 0 })
        let bad = try runProcess(lfp, ["bench", "step", "--method", "lfp,adam"])
        #expect(bad.status != 0 && bad.stderr.contains("unknown --method"))
        let gemm = try runProcess(lfp, ["bench", "gemm", "--rounds", "1", "--json"])
        #expect(gemm.status == 0, "\(gemm.stderr)")
        let products = gemm.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(products.count == GEMMBench.shapes.count)
        #expect(products.allSatisfy { ($0["blas_gflops"] as? Double ?? 0) > 0 && ($0["library_gflops"] as? Double ?? 0) > 0 })
        let noRounds = try runProcess(lfp, ["bench", "gemm", "--rounds", "0"])
        #expect(noRounds.status != 0 && noRounds.stderr.contains("--rounds"))
    }

    /// `lfp doctor` names the routine of the large products, and `LFP_GEMM=blas` switches the
    /// library's sgemm off (an unknown value is reported and taken as auto).
    @Test func doctorNamesTheLargeProductsRoutine() throws {
        guard let lfp = lfpExecutable() else {
            Issue.record("lfp executable not found next to the tests")
            return
        }
        func largeProducts(_ environment: [String: String]) throws -> (String?, String) {
            let r = try runProcess(lfp, ["doctor", "--json", "--sizes", "16"], environment: environment)
            #expect(r.status == 0, "\(r.stderr)")
            let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            return (json?["large_products"] as? String, r.stderr)
        }
        let expected = BLAS.libraryGEMMAvailable ? "library" : "blas"
        #expect(try largeProducts(["LFP_GEMM": "auto"]).0 == expected)
        #expect(try largeProducts(["LFP_GEMM": "blas"]).0 == "blas")
        #expect(try largeProducts(["LFP_GEMM": "OpenBLAS"]).0 == "blas")
        #expect(try largeProducts(["LFP_GEMM": "lfp"]).0 == expected)
        let (odd, stderr) = try largeProducts(["LFP_GEMM": "fastest"])
        #expect(odd == expected && stderr.contains("LFP_GEMM=fastest"))
    }

    @Test func doctorCorrectsAMisdetectedOpenBLASCore() throws {
        guard let lfp = lfpExecutable() else {
            Issue.record("lfp executable not found next to the tests")
            return
        }
        guard BLAS.configuration.backend == "OpenBLAS", BLAS.cpuFlags().contains("avx2") else { return }
        // OPENBLAS_CORETYPE=Prescott reproduces the misdetection; LFP_BLAS_CORE=auto asks the library to correct it.
        let r = try runProcess(lfp, ["doctor", "--json", "--sizes", "64"], environment: ["OPENBLAS_CORETYPE": "Prescott", "LFP_BLAS_CORE": "auto"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect((json["detected_core"] as? String)?.lowercased() == "prescott")
        let core = (json["core"] as? String ?? "").lowercased()
        #expect(["skylakex", "cooperlake", "haswell", "sapphirerapids", "zen"].contains(core), "core \(core)")
        #expect((json["threads"] as? Int ?? 0) >= 1)
        let sgemm = json["sgemm"] as? [[String: Any]] ?? []
        #expect(sgemm.first?["n"] as? Int == 64 && (sgemm.first?["gflops"] as? Double ?? 0) > 0)
        // Without the request, an explicit OPENBLAS_CORETYPE is respected.
        let kept = try runProcess(lfp, ["doctor", "--json", "--sizes", "64"], environment: ["OPENBLAS_CORETYPE": "Prescott"])
        let keptJSON = try JSONSerialization.jsonObject(with: Data(kept.stdout.utf8)) as! [String: Any]
        #expect((keptJSON["core"] as? String)?.lowercased() == "prescott")
        // OpenBLAS's idle threads: lfp makes them sleep at once, unless the user chose a timeout.
        if ProcessInfo.processInfo.environment["OPENBLAS_THREAD_TIMEOUT"] == nil {
            #expect(keptJSON["openblas_thread_timeout"] as? Int == 4)
        }
        let chosen = try runProcess(lfp, ["doctor", "--json", "--sizes", "64"], environment: ["OPENBLAS_THREAD_TIMEOUT": "20"])
        let chosenJSON = try JSONSerialization.jsonObject(with: Data(chosen.stdout.utf8)) as! [String: Any]
        #expect(chosenJSON["openblas_thread_timeout"] as? Int == 20)
    }

    /// `--threads` in a process of its own (in this process it would change the thread count
    /// under the concurrently running command tests; see ResumeTests).
    @Test func threadsOptionIsValidatedAndApplied() throws {
        #expect(throws: (any Error).self) { try LFPCommand.parseAsRoot(["train", "--threads", "0"]) }
        guard let lfp = lfpExecutable() else {
            Issue.record("lfp executable not found next to the tests")
            return
        }
        let dir = temporaryDirectory("threads")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try runProcess(lfp, ["train", "--model", "toy", "--dataset", "blobs", "--epochs", "1", "--threads", "1", "--output", dir.path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect((r.stdout + r.stderr).contains(" x1"), "the header names the thread count: \(r.stdout)")
    }

    @Test func cliReportsErrorsWithNonZeroExit() throws {
        guard let lfp = lfpExecutable() else { return }
        let bad = try runProcess(lfp, ["train", "--model", "nope"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("unknown --model 'nope'"))
        let missing = try runProcess(lfp, ["train", "--dataset", "mnist", "--data-dir", "/nonexistent-dir", "--quiet"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("error:") && missing.stderr.contains("/nonexistent-dir"))
    }
}

/// The command tests run `lfp` in this process, concurrently: they must not pass `--threads`.
/// The thread count is process-wide (`BLAS.setThreads`) and sets how kernels split their work
/// (and so the order of partial sums), so one test's `--threads` would change the bits of
/// another's run between its straight and resumed halves. The option itself is checked by
/// parsing here and end to end in a separate process (`threadsOptionIsValidatedAndApplied`).
@Suite struct ResumeTests {
    /// Metrics rows without the timing columns (seconds, samples/s).
    func metricsWithoutTiming(_ dir: URL) throws -> [String] {
        try String(contentsOf: dir.appendingPathComponent("metrics.csv"), encoding: .utf8).split(separator: "\n").map { line in
            line.split(separator: ",", omittingEmptySubsequences: false).enumerated().filter { ![4, 5].contains($0.offset) }.map(\.element).joined(separator: ",")
        }
    }

    @Test(arguments: ["lfp", "gradient-then-lfp"])
    func interruptedAndResumedRunEqualsUninterruptedRun(method: String) throws {
        let base = temporaryDirectory("resume")
        defer { try? FileManager.default.removeItem(at: base) }
        let common = ["train", "--model", "toy", "--dataset", "spirals", "--epochs", "3", "--batch-size", "32", "--lr", "0.01",
                      "--dropout", "0.2", "--method", method, "--pretrain-steps", "30", "--optimizer", "sgd", "--quiet"]
        let straight = base.appendingPathComponent("straight"), resumed = base.appendingPathComponent("resumed")
        try runLFP(common + ["--output", straight.path])
        // Stop twice: once mid-epoch, once exactly at an epoch boundary (50 batches per epoch).
        #expect(throws: (any Error).self) { try runLFP(common + ["--output", resumed.path, "--stop-after", "37"]) }
        #expect(throws: (any Error).self) { try runLFP(["train", "--resume", resumed.path, "--quiet", "--stop-after", "63"]) }
        try runLFP(["train", "--resume", resumed.path, "--quiet"])
        let a = try Data(contentsOf: straight.appendingPathComponent("model.safetensors"))
        let b = try Data(contentsOf: resumed.appendingPathComponent("model.safetensors"))
        #expect(a == b, "resumed weights differ from the uninterrupted run")
        let rowsStraight = try metricsWithoutTiming(straight), rowsResumed = try metricsWithoutTiming(resumed)
        #expect(rowsStraight == rowsResumed)
        #expect(rowsStraight.count == 4)
    }

    @Test func adamStateRoundTripsThroughTheCheckpoint() throws {
        let base = temporaryDirectory("adam")
        defer { try? FileManager.default.removeItem(at: base) }
        let common = ["train", "--model", "toy", "--dataset", "blobs", "--epochs", "2", "--optimizer", "adam", "--lr", "0.001", "--quiet"]
        try runLFP(common + ["--output", base.appendingPathComponent("a").path])
        #expect(throws: (any Error).self) { try runLFP(common + ["--output", base.appendingPathComponent("b").path, "--stop-after", "10"]) }
        try runLFP(["train", "--resume", base.appendingPathComponent("b").path, "--quiet"])
        let a = try Data(contentsOf: base.appendingPathComponent("a/model.safetensors"))
        let b = try Data(contentsOf: base.appendingPathComponent("b/model.safetensors"))
        #expect(a == b)
    }

    /// A run.json that names --resume itself would make --resume recurse (found by fuzzing review).
    @Test func resumeOfARunJSONNamingResumeFailsClearly() throws {
        let dir = temporaryDirectory("resume-loop")
        defer { try? FileManager.default.removeItem(at: dir) }
        try JSONEncoder().encode(["--resume", dir.path]).write(to: dir.appendingPathComponent("run.json"))
        #expect(throws: (any Error).self) { try LFPCommand.parseAsRoot(["train", "--resume", dir.path]) }
    }

    /// Options in a run.json that lfp train rejects get one line naming the file, not
    /// ArgumentParser's internal error structure.
    @Test func resumeOfARunJSONWithBadOptionsNamesTheFile() throws {
        let dir = temporaryDirectory("resume-bad-options")
        defer { try? FileManager.default.removeItem(at: dir) }
        for saved in [["--bogus"], ["--epochs", "x"], ["--activation", "gelu-ish"]] {
            try JSONEncoder().encode(saved).write(to: dir.appendingPathComponent("run.json"))
            do {
                _ = try LFPCommand.parseAsRoot(["train", "--resume", dir.path])
                Issue.record("accepted \(saved)")
            } catch {
                let text = LFPCommand.message(for: error)
                #expect(text.contains("run.json") && text.contains("does not accept"), "\(text)")
                #expect(!text.contains("CommandError") && !text.contains("\n"), "\(text)")
            }
        }
    }

    @Test func resumeOfANonRunDirectoryFailsClearly() {
        #expect(throws: (any Error).self) { try LFPCommand.parseAsRoot(["train", "--resume", "/nonexistent-run"]) }
    }
}

@Suite struct SignalTests {
    @Test func sigintFinishesTheStepWritesACheckpointAndResumes() throws {
        guard let lfp = lfpExecutable() else {
            Issue.record("lfp executable not found next to the tests")
            return
        }
        let dir = temporaryDirectory("sigint")
        defer { try? FileManager.default.removeItem(at: dir) }
        let process = Process()
        process.executableURL = lfp
        process.arguments = ["train", "--model", "toy", "--dataset", "blobs", "--epochs", "400", "--quiet", "--output", dir.path]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = Pipe()
        try process.run()
        // Wait until training has written its run description, then interrupt.
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("run.json").path) && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
        }
        Thread.sleep(forTimeInterval: 0.3)
        process.interrupt()
        process.waitUntilExit()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 130, "\(message)")
        #expect(message.contains("SIGINT") && message.contains("--resume"))
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("state.safetensors").path))
        var model = try ModelZoo.make("toy", .init(inputShape: [2], classes: 3), seed: 0)
        try Checkpoint.restore(&model, from: dir.appendingPathComponent("model.safetensors").path)
        // No temporary files are left behind by the atomic writes.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("tmp") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }
}

@Suite struct FaultTests {
    @Test func divergenceStopsWithTheStepAndParameterAndKeepsTheLastCheckpoint() throws {
        guard let lfp = lfpExecutable() else {
            Issue.record("lfp executable not found next to the tests")
            return
        }
        let dir = temporaryDirectory("nan")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try runProcess(lfp, ["train", "--model", "toy", "--dataset", "blobs", "--lr", "1e30", "--schedule", "constant",
                                     "--epochs", "3", "--checkpoint-every", "1", "--quiet", "--output", dir.path])
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("non-finite") && r.stderr.contains("step"), "\(r.stderr)")
        // The last checkpoint written before the fault is intact and finite.
        if FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors").path) {
            var model = try ModelZoo.make("toy", .init(inputShape: [2], classes: 3), seed: 0)
            try Checkpoint.restore(&model, from: dir.appendingPathComponent("model.safetensors").path)
        }
    }

    @Test func corruptCheckpointIsRejectedByEvaluate() throws {
        let dir = temporaryDirectory("corrupt-ckpt")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("model.safetensors").path
        try Data([1, 2, 3, 4, 5, 6, 7, 8, 9]).write(to: URL(fileURLWithPath: path))
        #expect(throws: (any Error).self) { try runLFP(["evaluate", "--checkpoint", path, "--dataset", "blobs"]) }
    }
}

@Suite struct SpikingCommandTests {
    @Test func spikingModelsTrainWithLFPAndTheSurrogateBaselineAndResume() throws {
        let base = temporaryDirectory("snn")
        defer { try? FileManager.default.removeItem(at: base) }
        // A small spiking MLP on blobs (snn-mlp is in-1000-1000-C).
        let common = ["train", "--model", "snn-mlp", "--dataset", "blobs", "--epochs", "2", "--timesteps", "4", "--batch-size", "32",
                      "--train-limit", "128", "--test-limit", "64",
                      "--optimizer", "adam", "--lr", "0.001", "--quiet"]
        try runLFP(common + ["--output", base.appendingPathComponent("lfp").path, "--backward-normalization", "--agc", "0.1"])
        let jsonl = try String(contentsOf: base.appendingPathComponent("lfp/metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        let last = try JSONSerialization.jsonObject(with: Data(jsonl.last!.utf8)) as! [String: Any]
        let rates = try #require(last["firing_rates"] as? [Double])
        #expect(rates.count == 3 && rates.allSatisfy { $0 >= 0 && $0 <= 1 })
        try runLFP(common + ["--output", base.appendingPathComponent("grad").path, "--method", "gradient", "--surrogate", "fast-sigmoid"])
        try runLFP(["evaluate", "--checkpoint", base.appendingPathComponent("grad/model.safetensors").path, "--dataset", "blobs"])
        // Exact resume works for spiking models too.
        let stopped = base.appendingPathComponent("stopped")
        #expect(throws: (any Error).self) {
            try runLFP(common + ["--output", stopped.path, "--backward-normalization", "--agc", "0.1", "--stop-after", "5"])
        }
        try runLFP(["train", "--resume", stopped.path, "--quiet"])
        let a = try Data(contentsOf: base.appendingPathComponent("lfp/model.safetensors"))
        let b = try Data(contentsOf: stopped.appendingPathComponent("model.safetensors"))
        #expect(a == b)
        #expect(throws: (any Error).self) { try LFPCommand.parseAsRoot(["train", "--model", "snn-mlp", "--composite", "alpha-beta"]) }
        #expect(throws: (any Error).self) { try LFPCommand.parseAsRoot(["train", "--model", "snn-mlp", "--timesteps", "0"]) }
    }
}
