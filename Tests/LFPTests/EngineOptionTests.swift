import Foundation
import Testing
@testable import LFP
import LFPTensor

@Suite struct CompositeTests {
    @Test func presetsResolvePerLayerKind() throws {
        let model = TestNets.convNet(seed: 1)
        let mixed = try Composite.preset(named: "zplus-zminus-dense+epsilon-conv").resolve(for: model)
        #expect(mixed[0] == .epsilon && mixed[3] == .epsilon && mixed[5] == .epsilon)
        #expect(mixed[7] == .zPlusZMinus && mixed[9] == .zPlusZMinus)
        #expect(mixed[1] == nil && mixed[2] == nil && mixed[6] == nil)
        let ab = try Composite.preset(named: "zplus-zminus-dense+alpha-beta-conv").resolve(for: model)
        #expect(ab[0] == .alphaBeta(alpha: 2, beta: 1, epsilon: 1e-6) && ab[9] == .zPlusZMinus)
        for name in Composite.presetNames { _ = try Composite.preset(named: name).resolve(for: model) }
        #expect(throws: LFPError.self) { try Composite.preset(named: "nonsense") }
    }

    @Test func selectorsByIndexRangeNameFirstAndLast() throws {
        let model = TestNets.convNet(seed: 1)
        let c = Composite(default: .epsilon, overrides: [
            (.first, .zero), (.last, .zPlusZMinus), (.range(3...5), .alphaBeta(alpha: 2, beta: 1, epsilon: 1e-6)), (.name("layers.7"), .epsilon(0.1)),
        ])
        let rules = try c.resolve(for: model)
        #expect(rules[0] == .zero && rules[9] == .zPlusZMinus && rules[7] == .epsilon(0.1))
        #expect(rules[3] == .alphaBeta(alpha: 2, beta: 1, epsilon: 1e-6) && rules[5] == .alphaBeta(alpha: 2, beta: 1, epsilon: 1e-6))
    }

    @Test func ruleListsParseIntoADefaultAndOrderedOverrides() throws {
        let model = TestNets.convNet(seed: 1)
        let c = try Composite.preset(named: "threshold-epsilon:0.5, conv=epsilon, last=scaled-epsilon:0.25, 7=zero")
        #expect(c.defaultRule == .thresholdEpsilon(0.5))
        let rules = try c.resolve(for: model)
        #expect(rules[0] == .epsilon && rules[3] == .epsilon)
        #expect(rules[7] == .zero && rules[9] == .scaledEpsilon(0.25))
        let ranged = try Composite.preset(named: "epsilon,3-5=zplus-zminus,first=zero").resolve(for: model)
        #expect(ranged[0] == .zero && ranged[3] == .zPlusZMinus && ranged[5] == .zPlusZMinus && ranged[7] == .epsilon)
        for bad in ["epsilon,last", "epsilon,top=zero", "epsilon,last=gamma", "gamma,last=zero", "epsilon,5-3=zero", "epsilon,"] {
            #expect(throws: LFPError.self, "\(bad)") { try Composite.preset(named: bad) }
        }
    }

    @Test func ruleOnANonAffineLayerIsAnError() {
        let model = TestNets.convNet(seed: 1)
        #expect(throws: LFPError.self) { try Composite(default: .epsilon, overrides: [(.index(1), .zero)]).resolve(for: model) }
        #expect(throws: LFPError.self) { try Composite(default: .epsilon, overrides: [(.kind(.maxPool2d), .zero)]).resolve(for: model) }
        #expect(throws: LFPError.self) { try Composite(default: .epsilon, overrides: [(.index(42), .zero)]).resolve(for: model) }
    }
}

@Suite struct FeedbackFunctionTests {
    @Test func builtInFunctionsMatchTheirFormulas() {
        let y = Tensor(shape: [2, 3], storage: [1, -2, 0.5, -1, 3, 2])
        let labels = [0, 1]
        let sig = FeedbackFunction.sigmoid(logits: y, labels: labels)
        let soft = FeedbackFunction.softmax(logits: y, labels: labels)
        for i in 0..<2 {
            let row = (0..<3).map { Double(y[i, $0]) }
            let z = row.map { Foundation.exp($0) }.reduce(0, +)
            for k in 0..<3 {
                let t = k == labels[i] ? 1.0 : 0.0
                #expect(abs(Double(sig[i, k]) - row[k] * (t - 1 / (1 + Foundation.exp(-row[k])))) < 1e-6)
                #expect(abs(Double(soft[i, k]) - row[k] * (t - Foundation.exp(row[k]) / z)) < 1e-6)
            }
        }
        // Simple reward: sample 0 is predicted right (+1 * sign(1)); sample 1 too (+1 * sign(3)).
        let simple = FeedbackFunction.simpleReward(logits: y, labels: labels)
        #expect(simple.storage == [1, 0, 0, 0, 1, 0])
        let wrong = FeedbackFunction.simpleReward(logits: y, labels: [2, 0])
        #expect(wrong.storage == [0, 0, -1, 1, 0, 0])  // sample 1: wrong, logit -1 -> -1 * -1
    }

    /// The reference's simple rewards (lfprop's CorrectclassificationReward and
    /// MisclassificationReward), hand-computed.
    @Test func referenceSimpleRewards() throws {
        // Sample 0: logits [2, -1, 0.5], true 0 (correct). Sample 1: [-3, -1, 4], true 1 (wrong:
        // class 2 is above it, class 0 is not). Sample 2: [0, 0, -2], true 1 (a tie counts as correct; sign(0) = 0).
        let y = Tensor(shape: [3, 3], storage: [2, -1, 0.5, -3, -1, 4, 0, 0, -2])
        let labels = [0, 1, 1]
        #expect(FeedbackFunction.correctClass(logits: y, labels: labels).storage == [1, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(FeedbackFunction.misclassification(logits: y, labels: labels).storage == [0, 0, 0, 0, 0, -1, 0, 0, 0])
        #expect(FeedbackFunction.correctClassAndMisclassification(logits: y, labels: labels).storage == [1, 0, 0, 0, 0, -1, 0, 0, 0])
        // A negative logit above the true class gets +1 (-sign(y)), and a correct negative true logit -1.
        let z = Tensor(shape: [2, 2], storage: [-2, -1, -1, -3])
        #expect(FeedbackFunction.misclassification(logits: z, labels: [0, 0]).storage == [0, 1, 0, 0])
        #expect(FeedbackFunction.correctClass(logits: z, labels: [0, 0]).storage == [0, 0, -1, 0])
        for name in ["correct-class", "misclassification", "correct-class+misclassification"] {
            #expect(try FeedbackFunction.named(name).description == name)
        }
    }

    @Test func customFunctionIsUsed() {
        let f = FeedbackFunction.custom(name: "ones") { y, _ in Tensor(shape: y.shape, repeating: 1) }
        #expect(f(logits: Tensor(shape: [1, 2]), labels: [0]).storage == [1, 1])
        #expect(f.description == "ones")
    }
}

@Suite struct PropagationOptionTests {
    @Test func meanReductionDividesByBatch() throws {
        let model = TestNets.mlp([4, 5, 3], seed: 2)
        var rng = SeededRandom(seed: 2)
        let x = Tensor.normal([6, 4], rng: &rng)
        let trace = model.trace(x, training: false, rng: &rng)
        let f = FeedbackFunction.sigmoid(logits: trace.output, labels: [0, 1, 2, 0, 1, 2])
        let sum = try FeedbackPropagator(model: model).propagate(model: model, trace: trace, feedback: f)
        let mean = try FeedbackPropagator(model: model, options: .init(reduction: .mean)).propagate(model: model, trace: trace, feedback: f)
        for name in model.parameterNames { expectClose(mean.parameters[name]!, sum.parameters[name]! * (1 / 6), name) }
    }

    @Test func backwardNormalizationScalesEachLayersFeedbackToUnitMaxAbs() throws {
        let model = TestNets.mlp([4, 6, 5, 3], seed: 3)
        var rng = SeededRandom(seed: 3)
        let x = Tensor.normal([5, 4], rng: &rng)
        let trace = model.trace(x, training: false, rng: &rng)
        let f = FeedbackFunction.sigmoid(logits: trace.output, labels: [0, 1, 2, 0, 1]) * 7
        let p = try FeedbackPropagator(model: model, options: .init(backwardNormalization: true, computeInputFeedback: true, recordLayerFeedback: true))
        let r = p.propagate(model: model, trace: trace, feedback: f)
        // Feedback arriving at layers below the top linear layer has max-abs 1.
        #expect(abs(r.layerOutputs![3].maxAbs() - 1) < 1e-6)
        #expect(abs(r.layerOutputs![1].maxAbs() - 1) < 1e-6)
        #expect(abs(r.input!.maxAbs() - 1) < 1e-6)
        // The top layer's parameter feedback is unchanged by normalisation below it.
        let plain = try FeedbackPropagator(model: model).propagate(model: model, trace: trace, feedback: f)
        expectClose(r.parameters["layers.4.weight"]!, plain.parameters["layers.4.weight"]!, "top layer")
    }

    @Test func dropoutPassesFeedbackThroughKeptUnitsOnly() throws {
        var rng = SeededRandom(seed: 4)
        let model = Sequential([.linear(Linear(inFeatures: 4, outFeatures: 8, rng: &rng)), .activation(.relu), .dropout(p: 0.5),
                                .linear(Linear(inFeatures: 8, outFeatures: 3, rng: &rng))])
        let x = Tensor.normal([3, 4], rng: &rng)
        let trace = model.trace(x, training: true, rng: &rng)
        let p = try FeedbackPropagator(model: model, options: .init(recordLayerFeedback: true))
        let r = p.propagate(model: model, trace: trace, feedback: FeedbackFunction.sigmoid(logits: trace.output, labels: [0, 1, 2]))
        let mask = trace.dropoutMasks[2]!
        let above = r.layerOutputs![2], below = r.layerOutputs![1]
        for i in 0..<mask.count { #expect(below.storage[i] == above.storage[i] * mask[i]) }
    }

    @Test func stepActivationPassesFeedbackUnchanged() throws {
        let model = TestNets.mlp([4, 6, 3], seed: 5, activation: .step)
        var rng = SeededRandom(seed: 5)
        let x = Tensor.normal([4, 4], rng: &rng)
        let trace = model.trace(x, training: false, rng: &rng)
        let r = try FeedbackPropagator(model: model, options: .init(recordLayerFeedback: true))
            .propagate(model: model, trace: trace, feedback: FeedbackFunction.sigmoid(logits: trace.output, labels: [0, 1, 2, 0]))
        #expect(r.layerOutputs![0] == r.layerOutputs![1])
        // A step network still gets non-zero feedback on its first layer (no derivative taken).
        #expect(r.parameters["layers.0.weight"]!.maxAbs() > 0)
        let g = Backpropagation.gradients(model: model, trace: trace, outputGradient: Loss.softmaxCrossEntropy.evaluate(logits: trace.output, labels: [0, 1, 2, 0]).gradient)
        #expect(g.parameters["layers.0.weight"]!.maxAbs() == 0)
    }
}

@Suite struct OptimizerTests {
    @Test func parametersWithoutFeedbackDoNotMove() throws {
        // A ReLU unit that is off for every sample gets no feedback and must not move.
        var rng = SeededRandom(seed: 6)
        var first = Linear(inFeatures: 3, outFeatures: 4, rng: &rng)
        for i in 0..<3 { first.weight[0, i] = -1 }
        first.bias![0] = -10
        let model = Sequential([.linear(first), .activation(.relu), .linear(Linear(inFeatures: 4, outFeatures: 2, rng: &rng))])
        var trainer = try Trainer(model: model, optimizer: SGD(learningRate: 0.1, momentum: 0.9))
        let x = Tensor(shape: [4, 3], storage: (0..<12).map { Float($0 % 5) * 0.3 })
        try trainer.step(input: x, labels: [0, 1, 0, 1], rng: &rng)
        let before = model.parameter("layers.0.weight")!, after = trainer.model.parameter("layers.0.weight")!
        for i in 0..<3 { #expect(after[0, i] == before[0, i]) }
        #expect(trainer.model.parameter("layers.0.bias")![0] == -10)
        #expect(after != before)  // the other units moved
    }

    @Test func sgdMatchesHandComputedPyTorchSteps() {
        var model = Sequential([.linear(Linear(weight: Tensor(shape: [1, 2], storage: [1, -2]), bias: nil))])
        var sgd = SGD(learningRate: 0.1, momentum: 0.9, nesterov: false, weightDecay: 0.01)
        let g = Tensor(shape: [1, 2], storage: [0.5, 0.25])
        // step 1: d = g + wd*p = [0.51, 0.23]; v = d; p = [1 - 0.051, -2 - 0.023]
        sgd.step(&model, directions: ["layers.0.weight": g])
        expectClose(model.parameter("layers.0.weight")!.storage, [0.949, -2.023], tolerance: 1e-6)
        // step 2: d = g + wd*p = [0.50949, 0.22977]; v = 0.9*[0.51,0.23] + d = [0.96849, 0.43677]
        sgd.step(&model, directions: ["layers.0.weight": g])
        expectClose(model.parameter("layers.0.weight")!.storage, [0.949 - 0.096849, -2.023 - 0.043677], tolerance: 1e-6)
        // Nesterov: p -= lr * (d + mu * v)
        var m2 = Sequential([.linear(Linear(weight: Tensor(shape: [1, 1], storage: [1]), bias: nil))])
        var nes = SGD(learningRate: 0.1, momentum: 0.9, nesterov: true)
        nes.step(&m2, directions: ["layers.0.weight": Tensor(shape: [1, 1], storage: [1])])
        expectClose(m2.parameter("layers.0.weight")!.storage, [1 - 0.1 * 1.9], tolerance: 1e-6)
    }

    /// The fused, parallel SGD pass (a parameter large enough to be split over the workers)
    /// gives PyTorch's update, for the branch-free common case (momentum, later steps) and for
    /// dampening, weight decay and Nesterov; the parameters are updated in place.
    @Test(arguments: [(Float(0), Float(0), false), (Float(0.1), Float(0.01), false), (Float(0), Float(0.01), true)])
    func fusedSGDMatchesNaiveUpdatesOnLargeParameters(dampening: Float, weightDecay: Float, nesterov: Bool) {
        var rng = SeededRandom(seed: 31)
        let (rows, cols) = (300, 400)
        let w0 = Tensor.normal([rows, cols], rng: &rng)
        var model = Sequential([.linear(Linear(weight: w0, bias: nil))])
        var sgd = SGD(learningRate: 0.05, momentum: 0.9, dampening: dampening, nesterov: nesterov, weightDecay: weightDecay)
        var p = w0.storage.map(Double.init), v = [Double](repeating: 0, count: p.count)
        var address: UnsafePointer<Float>?
        for step in 0..<3 {
            let g = Tensor.normal([rows, cols], rng: &rng)
            sgd.step(&model, directions: ["layers.0.weight": g])
            // The first step copies (w0 still shares the storage); later ones update in place.
            if step == 0 { address = model.parameter("layers.0.weight")!.storage.withUnsafeBufferPointer { $0.baseAddress } }
            for i in p.indices {
                let d = Double(g.storage[i]) + Double(weightDecay) * p[i]
                v[i] = step == 0 ? d : 0.9 * v[i] + (1 - Double(dampening)) * d
                p[i] -= 0.05 * (nesterov ? d + 0.9 * v[i] : v[i])
            }
        }
        let w = model.parameter("layers.0.weight")!
        expectClose(w.storage, p, tolerance: 1e-5, "SGD after 3 steps")
        // In place after the first step: the update neither copied the parameter nor reallocated it.
        #expect(w.storage.withUnsafeBufferPointer { $0.baseAddress } == address)
    }

    @Test func adamAndAdamWMatchHandComputedPyTorchSteps() {
        // Adam's first step moves every coordinate by lr * sign(g) (bias-corrected).
        var model = Sequential([.linear(Linear(weight: Tensor(shape: [1, 2], storage: [1, -2]), bias: nil))])
        var adam = Adam(learningRate: 0.01)
        adam.step(&model, directions: ["layers.0.weight": Tensor(shape: [1, 2], storage: [3, -0.5])])
        expectClose(model.parameter("layers.0.weight")!.storage, [0.99, -1.99], tolerance: 1e-6)
        // Second step with g = [1, 1]: m = [0.01*... ] computed by hand in Double.
        adam.step(&model, directions: ["layers.0.weight": Tensor(shape: [1, 2], storage: [1, 1])])
        func second(_ g1: Double, _ g2: Double) -> Double {
            let m = 0.9 * 0.1 * g1 + 0.1 * g2, v = 0.999 * 0.001 * g1 * g1 + 0.001 * g2 * g2
            let mh = m / (1 - 0.81), vh = v / (1 - 0.998001)
            return 0.01 * mh / (vh.squareRoot() + 1e-8)
        }
        expectClose(model.parameter("layers.0.weight")!.storage, [0.99 - second(3, 1), -1.99 - second(-0.5, 1)], tolerance: 1e-5)
        // AdamW: p *= (1 - lr*wd) before the Adam update.
        var m3 = Sequential([.linear(Linear(weight: Tensor(shape: [1, 1], storage: [2]), bias: nil))])
        var adamw = Adam.adamW(learningRate: 0.1, weightDecay: 0.5)
        adamw.step(&m3, directions: ["layers.0.weight": Tensor(shape: [1, 1], storage: [1])])
        expectClose(m3.parameter("layers.0.weight")!.storage, [2 * (1 - 0.05) - 0.1], tolerance: 1e-6)
    }

    @Test func schedulesMatchPyTorchFormulas() {
        #expect(LearningRateSchedule.constant.rate(base: 0.1, step: 100) == 0.1)
        #expect(abs(LearningRateSchedule.step(stepSize: 10, gamma: 0.5).rate(base: 0.1, step: 25) - 0.025) < 1e-7)
        #expect(abs(LearningRateSchedule.multiStep(milestones: [5, 8], gamma: 0.1).rate(base: 1, step: 8) - 0.01) < 1e-7)
        let cos = LearningRateSchedule.cosine(totalSteps: 100, minimum: 0)
        #expect(abs(cos.rate(base: 1, step: 50) - 0.5) < 1e-6 && cos.rate(base: 1, step: 100) < 1e-6)
        let one = LearningRateSchedule.oneCycle(totalSteps: 100)
        #expect(abs(one.rate(base: 1, step: 0) - 0.04) < 1e-6)          // max_lr / div_factor
        #expect(abs(one.rate(base: 1, step: 29) - 1) < 1e-6)            // peak at pct_start*total - 1
        #expect(abs(one.rate(base: 1, step: 99) - 0.04 / 1e4) < 1e-7)   // initial / final_div_factor
        #expect(abs(one.momentum(step: 0)! - 0.95) < 1e-6 && abs(one.momentum(step: 29)! - 0.85) < 1e-6)
        #expect(abs(one.momentum(step: 99)! - 0.95) < 1e-6)
        #expect(cos.momentum(step: 3) == nil)
    }

    @Test func clippingBoundsTheGlobalNorm() throws {
        let model = TestNets.mlp([4, 5, 3], seed: 8)
        var trainer = try Trainer(model: model, optimizer: SGD(learningRate: 1))
        trainer.clipNorm = 0.01
        var rng = SeededRandom(seed: 8)
        let x = Tensor.normal([8, 4], std: 5, rng: &rng)
        let (raw, _) = try trainer.directions(input: x, labels: [0, 1, 2, 0, 1, 2, 0, 1], rng: &rng)
        let d = trainer.clipped(raw)
        let norm = d.values.reduce(0.0) { $0 + $1.squaredNorm() }.squareRoot()
        #expect(abs(norm - 0.01) < 1e-5)
    }

    @Test func nonFiniteValuesStopTrainingWithALocation() throws {
        var model = TestNets.mlp([3, 4, 2], seed: 9)
        var w = model.parameter("layers.0.weight")!
        w[0, 0] = .nan
        model.setParameter("layers.0.weight", w)
        var trainer = try Trainer(model: model, optimizer: SGD(learningRate: 0.1))
        var rng = SeededRandom(seed: 9)
        #expect(throws: NumericalFault.self) { try trainer.step(input: Tensor(shape: [2, 3], repeating: 1), labels: [0, 1], rng: &rng) }
    }

    /// Feedback that overflows while the logits stay finite is caught where it is computed
    /// (the |W| epilogue reports it) and named: z = 1e33 - 1e33 = 0, so with feedback 1 at
    /// the logits S = 1 / eps = 1e6, and the weight feedback S a |w| = 1e39 overflows.
    @Test func overflowingFeedbackIsNamed() throws {
        let model = Sequential([.linear(Linear(weight: Tensor(shape: [2, 2], storage: [1, -1, 0, 0]), bias: nil))])
        let ones = FeedbackFunction.custom(name: "ones") { logits, _ in Tensor(shape: logits.shape, repeating: 1) }
        var trainer = try Trainer(model: model, optimizer: SGD(learningRate: 0.1), feedback: ones)
        var rng = SeededRandom(seed: 1)
        do {
            try trainer.step(input: Tensor(shape: [1, 2], storage: [1e33, 1e33]), labels: [0], rng: &rng)
            Issue.record("the step did not fail")
        } catch {
            #expect(error.location == "feedback of layers.0.weight", "\(error)")
        }
    }
}

@Suite struct NoiseLayerTests {
    @Test func noiseIsAddedInTrainingOnlyAndSignalsPassUnchanged() throws {
        let model = Sequential([.gaussianNoise(std: 0.5)])
        var rng = SeededRandom(seed: 3)
        let x = Tensor(shape: [4, 5000], repeating: 1)
        #expect(model(x) == x)
        let trace = model.trace(x, training: true, rng: &rng)
        let noise = trace.output - x
        let variance = noise.squaredNorm() / Double(noise.count)
        #expect(abs(variance - 0.25) < 0.01 && abs(noise.mean()) < 0.01)
        let g = Tensor.normal(x.shape, rng: &rng)
        #expect(Backpropagation.gradients(model: model, trace: trace, outputGradient: g, computeInputGradient: true).input == g)
        let lfp = try FeedbackPropagator(model: model, options: .init(computeInputFeedback: true)).propagate(model: model, trace: trace, feedback: g)
        #expect(lfp.input == g)
    }

    @Test func zooInsertsNoiseBeforeEveryParameterLayer() throws {
        let m = try ModelZoo.make("lenet", .init(inputShape: [1, 28, 28], classes: 10, activation: .step, noise: 0.1), seed: 1)
        let noisy = m.layers.indices.filter { if case .gaussianNoise = m.layers[$0] { return true } else { return false } }
        #expect(noisy.count == 5)
        for i in noisy { #expect(m.layers[i + 1].kind == .linear || m.layers[i + 1].kind == .conv2d) }
    }
}

@Suite struct RunStateTests {
    private func metadata(_ json: String) -> [String: String] { [RunState.metadataKey: json] }

    @Test func roundTripsThroughMetadata() throws {
        var state = RunState()
        state.epoch = 3
        state.progress.nextBatch = 7
        state.progress.seen = 224
        state.progress.correct = 200
        state.normalizationMean = [0.25]
        state.normalizationStd = [0.5]
        let decoded = try RunState.decode(metadata: try state.metadata(), file: "s.safetensors")
        #expect(decoded.epoch == 3 && decoded.progress == state.progress)
        #expect(decoded.normalizationMean == [0.25] && decoded.normalizationStd == [0.5])
    }

    @Test func missingGarbageAndOutOfRangeStatesAreErrorsNamingTheFile() throws {
        let valid = String(decoding: try JSONEncoder().encode(RunState()), as: UTF8.self)
        let cases: [([String: String], String)] = [
            ([:], "no run state"),
            (metadata("{\"epoch\": "), "not valid"),
            (metadata(valid.replacingOccurrences(of: "\"epoch\":1", with: "\"epoch\":0")), "out of range"),
            (metadata(valid.replacingOccurrences(of: "\"nextBatch\":0", with: "\"nextBatch\":-5")), "out of range"),
            (metadata(valid.replacingOccurrences(of: "\"correct\":0", with: "\"correct\":3")), "out of range"),
            (metadata(valid.replacingOccurrences(of: "\"normalizationMean\":[]", with: "\"normalizationMean\":[1]")),
             "normalisation statistics"),
        ]
        for (meta, expected) in cases {
            if let json = meta.values.first { #expect(json != valid || meta.isEmpty) }
            do throws(Checkpoint.Error) {
                _ = try RunState.decode(metadata: meta, file: "dir/state.safetensors")
                Issue.record("accepted \(meta)")
            } catch {
                #expect(error.description.hasPrefix("dir/state.safetensors: "))
                #expect(error.description.contains(expected), "\(error.description)")
                #expect(error.description.hasSuffix("cannot resume"))
            }
        }
    }
}
