import Foundation
import Testing
@testable import LFPCommands
import LFP
import LFPData
import LFPTensor

/// `lfp propagate` and fine-tuning from a state dict (`lfp train --init --classes --freeze`).
@Suite struct ModelCommandTests {
    static func write(_ tensors: [(String, Tensor)], to path: String) throws {
        try SafeTensors.write(tensors.map { TensorRecord(name: $0.0, shape: $0.1.shape, values: $0.1.storage) }, to: path)
    }

    /// The file `lfp propagate` writes holds what the library computes, for LFP and gradient,
    /// eval and train mode; bad input files get one clear error.
    @Test func propagateWritesEverySignalByName() throws {
        let dir = temporaryDirectory("propagate")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = ModelZoo.Configuration(inputShape: [3, 8, 8], classes: 4, width: 0.25)
        let model = try ModelZoo.make("cifar-resnet", config, seed: 5)
        let weights = dir.appendingPathComponent("w.safetensors").path
        try Checkpoint.save(model, to: weights)
        var rng = SeededRandom(seed: 6)
        let x = Tensor.normal([2, 3, 8, 8], rng: &rng)
        let input = dir.appendingPathComponent("i.safetensors").path
        try Self.write([("input", x), ("labels", Tensor(shape: [2], storage: [3, 1]))], to: input)
        for (method, mode) in [("lfp", "eval"), ("lfp", "train"), ("gradient", "train")] {
            let out = dir.appendingPathComponent("o-\(method)-\(mode).safetensors").path
            try runLFP(["propagate", "--model", "cifar-resnet", "--width", "0.25", "--classes", "4", "--checkpoint", weights,
                        "--input", input, "--composite", "epsilon", "--feedback", "softmax", "--method", method, "--mode", mode,
                        "--output", out])
            let written = try SafeTensors.read(out).tensors
            let expected = try Inspection.propagate(model: model, input: x, labels: [3, 1], method: Inspection.Method(rawValue: method)!,
                                                    composite: .uniform(.epsilon), feedback: .softmax, training: mode == "train")
            #expect(Set(written.keys) == Set(expected.map(\.name)), "\(method) \(mode)")
            // (Not bit-exact: tests run concurrently and may change the process's thread count,
            // which changes the order of parallel sums.)
            for (name, value) in expected {
                let got = written[name]?.values ?? []
                let scale = value.storage.map { abs(Double($0)) }.max() ?? 0
                let worst = zip(got, value.storage).map { abs(Double($0) - Double($1)) }.max() ?? 0
                #expect(got.count == value.count && worst <= 1e-5 * max(scale, 1e-30), "\(method) \(mode) \(name): \(worst) of \(scale)")
            }
            let prefix = method == "lfp" ? "feedback." : "gradient."
            #expect(written.keys.filter { $0.hasPrefix(prefix) }.count == model.namedParameters.count)
            #expect(written.keys.contains { $0.hasPrefix("running.") } == (mode == "train"))
        }
        // Bad inputs (in a subprocess): no labels; a label outside the classes; a checkpoint of another model.
        let noLabels = dir.appendingPathComponent("nolabels.safetensors").path
        try Self.write([("input", x)], to: noLabels)
        let badLabel = dir.appendingPathComponent("badlabel.safetensors").path
        try Self.write([("input", x), ("labels", Tensor(shape: [2], storage: [0, 9]))], to: badLabel)
        guard let exe = lfpExecutable() else { return }
        let common = ["propagate", "--model", "cifar-resnet", "--width", "0.25", "--classes", "4", "--output", dir.appendingPathComponent("x.safetensors").path]
        for (file, message) in [(noLabels, "no tensor named 'labels'"), (badLabel, "label 9.0 is not a class index")] {
            let r = try runProcess(exe, common + ["--input", file, "--checkpoint", weights])
            #expect(r.status != 0 && r.stderr.contains(message), "\(r.stderr)")
        }
        let r = try runProcess(exe, ["propagate", "--model", "toy", "--classes", "4", "--input", input, "--checkpoint", weights,
                                     "--output", dir.appendingPathComponent("x.safetensors").path])
        #expect(r.status != 0 && r.stderr.contains("missing tensors"), "\(r.stderr)")
    }

    /// `lfp propagate` on a spiking model writes what the library's spiking pass computes (the
    /// pass `SpikingTrainer` runs before its update, whose directions are minus the written LFP
    /// feedback and equal the written gradient), for LFP-epsilon, LFP-z+z- and the surrogate
    /// gradient; a non-spiking feedback function or rule is refused.
    @Test func propagateRunsSpikingModels() throws {
        let dir = temporaryDirectory("propagate-snn")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try SpikingZoo.make("snn-mlp", inputShape: [1, 6, 6], classes: 3, seed: 4)
        let weights = dir.appendingPathComponent("w.safetensors").path
        try Checkpoint.save(model, to: weights)
        var rng = SeededRandom(seed: 7)
        let x = Tensor.uniform([2, 1, 6, 6], bound: 3, rng: &rng)
        let input = dir.appendingPathComponent("i.safetensors").path
        try Self.write([("input", x), ("labels", Tensor(shape: [2], storage: [2, 0]))], to: input)
        let cases: [(String, String, SpikingMethod)] = [("lfp", "epsilon", .lfp()), ("lfp", "zplus-zminus", .lfpZPlusZMinus()),
                                                        ("gradient", "epsilon", .gradient(surrogate: .atan(), loss: .rateCrossEntropy))]
        for (method, composite, spiking) in cases {
            let out = dir.appendingPathComponent("o-\(method)-\(composite).safetensors").path
            try runLFP(["propagate", "--model", "snn-mlp", "--classes", "3", "--timesteps", "4", "--checkpoint", weights,
                        "--input", input, "--composite", composite, "--method", method, "--output", out])
            let written = try SafeTensors.read(out).tensors
            let expected = try Inspection.propagateSpiking(model: model, input: x, labels: [2, 0], method: spiking, steps: 4)
            #expect(Set(written.keys) == Set(expected.map(\.name)), "\(method) \(composite)")
            #expect(written["spikes"]?.shape == [4, 2, 3])
            func close(_ got: [Float], _ want: [Float], _ what: String) {
                let scale = want.map { abs(Double($0)) }.max() ?? 0
                let worst = zip(got, want).map { abs(Double($0) - Double($1)) }.max() ?? 0
                #expect(got.count == want.count && worst <= 1e-5 * max(scale, 1e-30), "\(method) \(composite) \(what): \(worst) of \(scale)")
            }
            for (name, value) in expected { close(written[name]?.values ?? [], value.storage, name) }
            let trainer = try SpikingTrainer(model: model, optimizer: SGD(learningRate: 0.1), method: spiking, steps: 4)
            let directions = try trainer.directions(input: x, labels: [2, 0]).directions
            let prefix = method == "lfp" ? "feedback." : "gradient."
            #expect(written.keys.filter { $0.hasPrefix(prefix) }.count == model.namedParameters.count)
            for (name, d) in directions {
                close(written[prefix + name]?.values ?? [], method == "lfp" ? d.storage.map { -$0 } : d.storage, "direction of \(name)")
            }
        }
        guard let exe = lfpExecutable() else { return }
        let common = ["propagate", "--model", "snn-mlp", "--classes", "3", "--input", input, "--output", dir.appendingPathComponent("x.safetensors").path]
        for (extra, message) in [(["--feedback", "softmax"], "rate-coded spiking feedback"), (["--composite", "alpha1-beta0"], "epsilon or zplus-zminus"),
                                 (["--method", "gradient", "--surrogate", "bogus"], "unknown surrogate 'bogus'")] {
            let r = try runProcess(exe, common + extra)
            #expect(r.status != 0 && r.stderr.contains(message), "\(r.stderr)")
        }
    }

    /// Fine-tuning: a state dict with another head loads with --classes (new head), is refused
    /// without it (the message says what to do), and --freeze keeps the frozen parameters.
    @Test func trainInitialisesFromStateDictAndFreezes() throws {
        let dir = temporaryDirectory("init")
        defer { try? FileManager.default.removeItem(at: dir) }
        let pretrained = try ModelZoo.make("cifar-resnet", .init(inputShape: [1, 28, 28], classes: 7, width: 0.25), seed: 9)
        let weights = dir.appendingPathComponent("pretrained.safetensors").path
        try Checkpoint.save(pretrained, to: weights)
        let common = ["train", "--model", "cifar-resnet", "--width", "0.25", "--init", weights, "--epochs", "1", "--train-limit", "64",
                      "--test-limit", "32", "--batch-size", "16", "--quiet"]
        if let exe = lfpExecutable() {
            let r = try runProcess(exe, common + ["--output", dir.appendingPathComponent("refused").path])
            #expect(r.status != 0 && r.stderr.contains("pass --classes N"), "\(r.stderr)")
        }
        let out = dir.appendingPathComponent("run")
        try runLFP(common + ["--classes", "10", "--freeze", "conv1,bn1,layer1", "--output", out.path])
        var trained = try ModelZoo.make("cifar-resnet", .init(inputShape: [1, 28, 28], classes: 10, width: 0.25), seed: 0)
        try Checkpoint.restore(&trained, from: out.appendingPathComponent("model.safetensors").path)
        #expect(trained.parameter("fc.weight")?.shape == [10, 32])
        for name in ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer1.1.bn2.bias"] {
            #expect(trained.parameter(name) == pretrained.parameter(name), "\(name) is frozen")
        }
        for name in ["layer2.0.conv1.weight", "layer4.1.conv2.weight"] {
            #expect(trained.parameter(name) != pretrained.parameter(name), "\(name) trains")
        }
        // BatchNorm's running statistics move in training, frozen or not (as in PyTorch).
        #expect(trained.parameter("bn1.running_mean") != pretrained.parameter("bn1.running_mean"))
        #expect(throws: (any Error).self) { try runLFP(common + ["--classes", "10", "--freeze", "nonexistent", "--output", out.path + "2"]) }
    }

    /// A ViT trained with a non-default patch size is rebuilt from its checkpoint's metadata by
    /// `evaluate` and `explain` (the patch size is recorded).
    @Test func vitCheckpointIsRebuiltFromItsMetadata() throws {
        let dir = temporaryDirectory("vit")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runLFP(["train", "--model", "vit-tiny", "--patch", "7", "--width", "0.25", "--epochs", "1", "--train-limit", "64",
                    "--test-limit", "16", "--batch-size", "16", "--quiet", "--output", dir.path])
        let checkpoint = dir.appendingPathComponent("model.safetensors").path
        #expect(try Checkpoint.metadata(at: checkpoint)["lfp.patch"] == "7")
        try runLFP(["evaluate", "--checkpoint", checkpoint])
        try runLFP(["explain", "--checkpoint", checkpoint, "--count", "1", "--composite", "epsilon:1",
                    "--output", dir.appendingPathComponent("explain").path])
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("explain/heatmaps.svg").path))
    }

    /// A BatchNorm ResNet resumes exactly: the running statistics travel in the checkpoint, so an
    /// interrupted and resumed run ends with the same bytes as an uninterrupted one.
    @Test func batchNormModelResumesExactly() throws {
        let base = temporaryDirectory("bn-resume")
        defer { try? FileManager.default.removeItem(at: base) }
        let common = ["train", "--model", "cifar-resnet", "--width", "0.25", "--epochs", "2", "--train-limit", "96", "--test-limit", "16",
                      "--batch-size", "16", "--quiet"]
        try runLFP(common + ["--output", base.appendingPathComponent("full").path])
        let stopped = base.appendingPathComponent("stopped")
        #expect(throws: (any Error).self) { try runLFP(common + ["--output", stopped.path, "--stop-after", "5"]) }
        try runLFP(["train", "--resume", stopped.path, "--quiet"])
        let a = try Checkpoint.metadata(at: base.appendingPathComponent("full/model.safetensors").path)
        #expect(a["lfp.model"] == "cifar-resnet")
        let full = try SafeTensors.read(base.appendingPathComponent("full/model.safetensors").path).tensors
        let resumed = try SafeTensors.read(stopped.appendingPathComponent("model.safetensors").path).tensors
        #expect(Set(full.keys) == Set(resumed.keys) && full.keys.contains("bn1.running_mean"))
        for (name, record) in full {
            // Bit-exact unless a concurrently running test changed the process's thread count.
            let worst = zip(record.values, resumed[name]?.values ?? []).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-5, "\(name): \(worst)")
        }
    }

    @Test func patternsSelectByNamePrefixAndGlob() {
        #expect(ParameterPattern("layer1").matches("layer1.0.conv1.weight"))
        #expect(!ParameterPattern("layer1").matches("layer10.0.conv1.weight"))
        #expect(ParameterPattern("fc.weight").matches("fc.weight") && !ParameterPattern("fc.weight").matches("fc.bias"))
        #expect(ParameterPattern("*.bn*.weight").matches("layer2.0.bn1.weight"))
        #expect(!ParameterPattern("*.bn*.weight").matches("bn1.weight"))
        #expect(ParameterPattern("*").matches("anything"))
    }
}
