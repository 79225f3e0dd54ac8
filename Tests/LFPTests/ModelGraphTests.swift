import Foundation
import Testing
@testable import LFP
import LFPTensor

/// The model graph: containers (nested sequences, residual blocks), BatchNorm, adaptive
/// pooling, torchvision names, and both engines walking the graph.
@Suite struct ModelGraphTests {
    /// A small graph with every new layer and container, smooth (tanh) so that central
    /// differences do not cross a kink.
    static func graph(seed: UInt64, batchNorm1d: Bool = true) -> Sequential {
        var rng = SeededRandom(seed: seed)
        func conv(_ i: Int, _ o: Int, _ k: Int, stride: Int = 1, padding: Int = 0, bias: Bool = false) -> Layer {
            .conv2d(Conv2d(inChannels: i, outChannels: o, kernelSize: (k, k), stride: (stride, stride), padding: (padding, padding), bias: bias, rng: &rng))
        }
        func norm(_ c: Int) -> Layer {
            var b = BatchNorm(features: c)
            b.weight = .uniform([c], bound: 1, rng: &rng) + Tensor(shape: [c], storage: [Float](repeating: 0.5, count: c))
            b.bias = .uniform([c], bound: 0.3, rng: &rng)
            b.runningMean = .uniform([c], bound: 0.3, rng: &rng)
            b.runningVariance = .uniform([c], bound: 0.5, rng: &rng) + Tensor(shape: [c], storage: [Float](repeating: 1, count: c))
            return .batchNorm(b)
        }
        let identityBlock = Residual(main: Sequential(named: [("conv1", conv(3, 3, 3, padding: 1)), ("bn1", norm(3)), ("act", .activation(.tanh)),
                                                              ("conv2", conv(3, 3, 3, padding: 1)), ("bn2", norm(3))]),
                                     shortcut: nil, activation: .tanh)
        let projectionBlock = Residual(main: Sequential(named: [("conv1", conv(3, 4, 3, stride: 2, padding: 1)), ("bn1", norm(4))]),
                                       shortcut: Sequential(named: [("downsample.0", conv(3, 4, 1, stride: 2)), ("downsample.1", norm(4))]),
                                       activation: .tanh)
        var layers: [(String, Layer)] = [
            ("conv1", conv(2, 3, 3, padding: 1, bias: true)), ("bn1", norm(3)), ("act", .activation(.tanh)),
            ("layer1", .sequential(Sequential(named: [("0", .residual(identityBlock)), ("1", .residual(projectionBlock))]))),
            ("avgpool", .adaptiveAvgPool2d(AdaptiveAvgPool2d(outputSize: (2, 2)))), ("flatten", .flatten),
        ]
        if batchNorm1d { layers.append(("bn2", norm(16))) }
        layers.append(("fc", .linear(Linear(inFeatures: 16, outFeatures: 3, rng: &rng))))
        return Sequential(named: layers)
    }

    /// Parameter and input gradients of `L = <r, model(x)>` against central differences, in
    /// training mode (BatchNorm on batch statistics: the gradient flows through them) and in
    /// evaluation mode (running statistics).
    @Test(arguments: [false, true])
    func gradientMatchesFiniteDifferences(training: Bool) throws {
        let model = Self.graph(seed: 7)
        var rng = SeededRandom(seed: 8)
        let x = Tensor.normal([3, 2, 5, 5], rng: &rng)
        let r = Tensor.normal(try model.outputShape(input: x.shape), rng: &rng)
        // Batch statistics (3 samples) make the loss strongly curved: the central difference's
        // truncation error at h = 1e-2 reached 3 % (3e-2: 10 %), so a narrower step in training.
        expectGradientsMatchFiniteDifferences(model, input: x, outputGradient: r, training: training, h: training ? 3e-3 : 1e-2,
                                              tolerance: 3e-3, "graph (training \(training))")
    }

    /// Adaptive average pooling against PyTorch's window rule on a size that does not divide.
    @Test func adaptiveAveragePoolingWindows() {
        let x = Tensor(shape: [1, 1, 5, 5], storage: (0..<25).map(Float.init))
        let y = AdaptivePooling.averageForward(x, outHeight: 2, outWidth: 3)
        // rows 0..<3 and 2..<5; columns 0..<2, 1..<4, 3..<5
        func mean(_ rows: Range<Int>, _ cols: Range<Int>) -> Float {
            var s: Float = 0
            for i in rows { for j in cols { s += Float(i * 5 + j) } }
            return s / Float(rows.count * cols.count)
        }
        let expected = [mean(0..<3, 0..<2), mean(0..<3, 1..<4), mean(0..<3, 3..<5), mean(2..<5, 0..<2), mean(2..<5, 1..<4), mean(2..<5, 3..<5)]
        expectClose(y.storage, expected.map(Double.init), tolerance: 1e-6, "adaptive windows")
    }

    /// The running statistics after a training step follow PyTorch: momentum 0.1, the variance
    /// unbiased; evaluation leaves them alone.
    @Test func runningStatisticsMoveAsPyTorch() throws {
        var model = Sequential(named: [("bn", .batchNorm(BatchNorm(features: 2))), ("flatten", .flatten),
                                       ("fc", .linear(Linear(inFeatures: 8, outFeatures: 2, rng: &Self.seeded)))])
        var rng = SeededRandom(seed: 3)
        let x = Tensor.normal([3, 2, 2, 2], rng: &rng)
        var trainer = try Trainer(model: model, optimizer: SGD(learningRate: 0), feedback: .softmax)
        try trainer.step(input: x, labels: [0, 1, 0], rng: &rng)
        for c in 0..<2 {
            var values: [Double] = []
            for n in 0..<3 { for k in 0..<4 { values.append(Double(x.storage[(n * 2 + c) * 4 + k])) } }
            let mean = values.reduce(0, +) / 12
            let unbiased = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / 11
            #expect(abs(Double(trainer.model.parameter("bn.running_mean")!.storage[c]) - 0.1 * mean) < 1e-6)
            #expect(abs(Double(trainer.model.parameter("bn.running_var")!.storage[c]) - (0.9 + 0.1 * unbiased)) < 1e-5)
        }
        #expect(trainer.model.parameter("bn.num_batches_tracked")!.storage == [1])
        model = trainer.model
        _ = model(x)
        #expect(model == trainer.model)
    }

    nonisolated(unsafe) static var seeded = SeededRandom(seed: 1)

    /// torchvision's names and parameter counts (1000 classes): resnet18 11,689,512 parameters in
    /// 62 tensors and 122 state-dict entries; resnet34 21,797,672; resnet50 25,557,032.
    @Test func resNetsHaveTorchvisionNamesAndSizes() throws {
        let config = ModelZoo.Configuration(inputShape: [3, 224, 224], classes: 1000)
        let r18 = try ModelZoo.make("resnet18", config, seed: 0)
        #expect(r18.parameterCount == 11_689_512)
        #expect(r18.namedParameters.count == 62 && r18.stateDict.count == 122)
        let names = Set(r18.stateDict.map(\.name))
        for name in ["conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight", "layer1.1.bn2.bias",
                     "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var", "layer4.1.conv2.weight", "fc.weight", "fc.bias"] {
            #expect(names.contains(name), "\(name)")
        }
        #expect(!names.contains("layer1.0.downsample.0.weight"))
        #expect(try r18.outputShape(input: [2, 3, 224, 224]) == [2, 1000])
        #expect(try ModelZoo.make("resnet34", config, seed: 0).parameterCount == 21_797_672)
        let r50 = try ModelZoo.make("resnet50", config, seed: 0)
        #expect(r50.parameterCount == 25_557_032)
        #expect(r50.parameter("layer1.0.conv3.weight")?.shape == [256, 64, 1, 1])
        let cifar = try ModelZoo.make("cifar-resnet", .init(inputShape: [3, 32, 32], classes: 10), seed: 0)
        #expect(try cifar.outputShape(input: [1, 3, 32, 32]) == [1, 10])
    }

    /// Parameters and buffers of a graph model survive a checkpoint, and a missing buffer is named.
    @Test func checkpointRoundTripsStateDict() throws {
        let model = Self.graph(seed: 11)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lfp-graph-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("m.safetensors").path
        try Checkpoint.save(model, to: path)
        var restored = Self.graph(seed: 12)
        #expect(restored != model)
        try Checkpoint.restore(&restored, from: path)
        #expect(restored == model)
        var flat = TestNets.mlp([4, 3], seed: 1)
        #expect(throws: Checkpoint.Error.self) { try Checkpoint.restore(&flat, from: path) }
    }

    /// Updating parameters reaches every container and keeps storage unique (no copies).
    @Test func updatesReachNestedParameters() {
        var model = Self.graph(seed: 13)
        var seen: [String] = []
        model.updateParameters { name, t in
            seen.append(name)
            t.storage.withUnsafeMutableBufferPointer { p in for i in p.indices { p[i] = 0.5 } }
        }
        #expect(seen == model.parameterNames)
        for (name, p) in model.namedParameters { #expect(p.storage.allSatisfy { $0 == 0.5 }, "\(name)") }
        // In place: a second update keeps every parameter's storage (no copy inside containers).
        func addresses() -> [UnsafePointer<Float>?] {
            model.namedParameters.map { $0.value.storage.withUnsafeBufferPointer { $0.baseAddress } }
        }
        let before = addresses()
        model.updateParameters { _, t in t.storage.withUnsafeMutableBufferPointer { p in for i in p.indices { p[i] += 1 } } }
        #expect(addresses() == before)
        #expect(model.namedParameters.allSatisfy { $0.value.storage.allSatisfy { $0 == 1.5 } })
    }

    /// Composite selectors see the graph's leaves: indices count leaves, names are dotted paths.
    @Test func compositesSelectLeavesByPath() throws {
        let model = Self.graph(seed: 14)
        let c = Composite(default: .epsilon, overrides: [(.name("layer1.1.downsample.0"), .zero), (.kind(.batchNorm), .zPlusZMinus)])
        let rules = try c.resolve(for: model)
        let leaves = model.leaves
        #expect(rules.count == leaves.count)
        for ((path, layer), rule) in zip(leaves, rules) {
            if path == "layer1.1.downsample.0" { #expect(rule == .zero) }
            else if layer.kind == .batchNorm { #expect(rule == .zPlusZMinus, "\(path)") }
            else if layer.isAffine { #expect(rule == .epsilon, "\(path)") }
            else { #expect(rule == nil, "\(path)") }
        }
        #expect(throws: LFPError.self) { try Composite(default: .epsilon, overrides: [(.name("layer1.0.act"), .zero)]).resolve(for: model) }
    }

    /// LFP-MATH.md section 7 on a ReLU ResNet with BatchNorm, in evaluation and in training
    /// mode: LFP-0 parameter feedback equals |p| * (-dL/dp) (L summed cross-entropy with softmax
    /// feedback). Holds for BatchNorm because its rule is gradient times input with the stabilised
    /// division (RESNET-NOTES.md section f.3), through the batch statistics in training.
    @Test(arguments: [false, true])
    func lfpZeroEqualsGradientIdentityOnResNet(training: Bool) throws {
        var model = ResNet.make(block: .basic, blocks: [1, 1], widths: [4, 8], stem: .cifar, inputChannels: 2, classes: 5, seed: 21)
        var rng = SeededRandom(seed: 22)
        for (name, p) in model.namedParameters where name.contains("bn") || name.contains("downsample.1") {
            // Non-trivial BatchNorm: gamma of both signs, beta and running statistics away from 0/1.
            let values = (0..<p.count).map { _ in rng.uniform(-1.5, 1.5) }
            model.setParameter(name, Tensor(shape: p.shape, storage: values))
        }
        for (name, b) in model.namedBuffers where name.hasSuffix("running_var") {
            model.setParameter(name, Tensor(shape: b.shape, storage: (0..<b.count).map { _ in rng.uniform(0.5, 1.5) }))
        }
        let x = Tensor.normal([4, 2, 6, 6], rng: &rng)
        let labels = [0, 3, 1, 4]
        let trace = model.trace(x, training: training, rng: &rng)
        let feedback = FeedbackFunction.softmax(logits: trace.output, labels: labels)
        let lfp = try FeedbackPropagator(model: model, composite: .uniform(.zero), options: .init(computeInputFeedback: true))
            .propagate(model: model, trace: trace, feedback: feedback)
        let (_, g) = Loss.softmaxCrossEntropy.evaluate(logits: trace.output, labels: labels, reduction: .sum)
        let grads = Backpropagation.gradients(model: model, trace: trace, outputGradient: g, computeInputGradient: true)
        #expect(Set(lfp.parameters.keys) == Set(model.parameterNames))
        for (name, p) in model.namedParameters {
            let expected = zip(p.storage, grads.parameters[name]!.storage).map { Double(abs($0)) * -Double($1) }
            expectClose(lfp.parameters[name]!.storage, expected, tolerance: 1e-4, "\(name) (training \(training))")
        }
        let expectedInput = zip(x.storage, grads.input!.storage).map { Double($0) * -Double($1) }
        expectClose(lfp.input!.storage, expectedInput, tolerance: 1e-4, "input (training \(training))")
    }

    /// A small ViT (patch convolution, class token and positions, LayerNorm, attention, GELU,
    /// residual adds, class-token pooling): parameter and input gradients against central
    /// differences, with every parameter drawn at a scale where each part matters.
    @Test func vitGradientMatchesFiniteDifferences() throws {
        var model = VisionTransformer.make(inputShape: [2, 6, 6], patch: 3, dimension: 4, depth: 1, heads: 2, classes: 3, seed: 31)
        var rng = SeededRandom(seed: 32)
        for (name, p) in model.namedParameters {
            model.setParameter(name, Tensor(shape: p.shape, storage: (0..<p.count).map { _ in rng.uniform(-0.8, 0.8) }))
        }
        let x = Tensor.normal([2, 2, 6, 6], rng: &rng)
        let r = Tensor.normal(try model.outputShape(input: x.shape), rng: &rng)
        expectGradientsMatchFiniteDifferences(model, input: x, outputGradient: r, tolerance: 3e-3, "ViT")
    }

    /// timm's names and sizes: vit_tiny_patch16_224 has 5,717,416 parameters at 1000 classes,
    /// vit_small 22,050,664 (vit_base, 86,567,656, is left out: building it takes 10 s in a debug build).
    @Test func vitsHaveTimmNamesAndSizes() throws {
        let config = ModelZoo.Configuration(inputShape: [3, 224, 224], classes: 1000)
        let tiny = try ModelZoo.make("vit-tiny", config, seed: 0)
        #expect(tiny.parameterCount == 5_717_416)
        let names = Set(tiny.parameterNames)
        for name in ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight", "blocks.0.attn.qkv.weight",
                     "blocks.0.attn.proj.bias", "blocks.11.mlp.fc2.weight", "norm.bias", "head.weight"] {
            #expect(names.contains(name), "\(name)")
        }
        #expect(tiny.parameter("pos_embed")?.shape == [1, 197, 192] && tiny.parameter("blocks.3.attn.qkv.weight")?.shape == [576, 192])
        #expect(try tiny.outputShape(input: [2, 3, 224, 224]) == [2, 1000])
        #expect(try ModelZoo.make("vit-small", config, seed: 0).parameterCount == 22_050_664)
    }

    /// torchvision's vgg16_bn names and indices (`features.0` conv, `.1` BatchNorm, `.6` max-pool
    /// ... `features.41` the last BatchNorm, `classifier.6` the head); at width 1 it has
    /// torchvision's 138,365,992 parameters (counted from the shapes here, at width 1/8 for speed).
    @Test func vgg16BNHasTorchvisionNames() throws {
        let model = try ModelZoo.make("vgg16-bn", .init(inputShape: [3, 32, 32], classes: 10, dropout: 0.5, width: 0.125), seed: 0)
        for name in ["features.0.weight", "features.0.bias", "features.1.running_var", "features.7.weight", "features.41.num_batches_tracked",
                     "classifier.0.weight", "classifier.3.weight", "classifier.6.bias"] {
            #expect(model.parameter(name) != nil, "\(name)")
        }
        #expect(model.parameter("features.6.weight") == nil)  // features.6 is a max-pool
        #expect(model.parameter("classifier.0.weight")?.shape == [512, 64 * 49])
        #expect(try model.outputShape(input: [2, 3, 32, 32]) == [2, 10])
        // torchvision's count at width 1, from the same plan: convolutions + BatchNorm + classifier.
        let plan = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
        var count = 0, channels = 3
        for c in plan { count += c * channels * 9 + c + 2 * c; channels = c }
        count += 512 * 49 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
        #expect(count == 138_365_992)
        var small = 0; channels = 3
        for c in plan.map({ max(1, Int((Float($0) * 0.125).rounded())) }) { small += c * channels * 9 + c + 2 * c; channels = c }
        small += 64 * 49 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
        #expect(model.parameterCount == small)
    }
}
