import Foundation
import Testing
@testable import LFP
import LFPTensor

/// Tiny spiking networks with explicit, reproducible parameters.
enum SpikingTestNets {
    /// A dense network with weights uniform in `±weightBound`, biases in `±biasBound`.
    static func dense(_ sizes: [Int], seed: UInt64, weightBound: Float = 1.5, biasBound: Float = 0.5,
                      neuron: LIFNeuron = LIFNeuron()) throws -> Sequential {
        var rng = SeededRandom(seed: seed)
        var layers: [Layer] = []
        for i in 0..<(sizes.count - 1) {
            layers.append(.spiking(try SpikingLayer(.linear(Linear(weight: .uniform([sizes[i + 1], sizes[i]], bound: weightBound, rng: &rng),
                                                                   bias: .uniform([sizes[i + 1]], bound: biasBound, rng: &rng))),
                                                    neuron: neuron)))
        }
        return Sequential(layers)
    }

    /// Conv 1->2 k3 (6x6 -> 4x4), LIF, MaxPool 2, Flatten, Linear 8->3, LIF.
    static func conv(seed: UInt64, neuron: LIFNeuron = LIFNeuron()) throws -> Sequential {
        var rng = SeededRandom(seed: seed)
        return Sequential([
            .spiking(try SpikingLayer(.conv2d(Conv2d(weight: .uniform([2, 1, 3, 3], bound: 0.8, rng: &rng), bias: .uniform([2], bound: 0.3, rng: &rng))),
                                      neuron: neuron)),
            .maxPool2d(MaxPool2d(kernel: 2)),
            .flatten,
            .spiking(try SpikingLayer(.linear(Linear(weight: .uniform([3, 8], bound: 1.5, rng: &rng), bias: .uniform([3], bound: 0.5, rng: &rng))),
                                      neuron: neuron)),
        ])
    }

    /// The forward pass over `steps` steps (spikes from `spike`: `H`, or a smooth step in tests
    /// of back-propagation through time).
    static func trace(_ net: Sequential, _ x: Tensor, steps: Int, spike: SpikeFunction = .heaviside) -> Trace {
        var rng = SeededRandom(seed: 0)
        var time = TimeContext(steps: steps, spike: spike)
        return net.trace(x, training: false, rng: &rng, time: &time)
    }

    /// The membranes of every spiking layer, by layer index.
    static func membranes(_ trace: Trace) -> [Tensor] {
        trace.spiking.keys.sorted().map { trace.spiking[$0]!.membranes }
    }

    /// Inputs uniform in `[low, high)`.
    static func input(_ shape: [Int], seed: UInt64, low: Float = 0, high: Float = 1.5) -> Tensor {
        var rng = SeededRandom(seed: seed)
        var t = Tensor(shape: shape)
        for i in 0..<t.count { t.storage[i] = rng.uniform(low, high) }
        return t
    }
}

@Suite struct SpikingLIFNeuronTests {
    /// Runs one neuron per element through `currents` (one tensor per step) with the step API.
    func run(_ neuron: LIFNeuron, _ currents: [[Float]]) -> (u: [[Float]], s: [[Float]]) {
        var state = LIFNeuron.State(shape: [currents[0].count])
        var us: [[Float]] = [], ss: [[Float]] = []
        for i in currents {
            let s = neuron.step(Tensor(shape: [i.count], storage: i), state: &state)
            us.append(state.membrane.storage)
            ss.append(s.storage)
        }
        return (us, ss)
    }

    @Test func constantCurrentSubtractResetIsDelayedOneStep() {
        // beta 0.9, theta 1, I = 0.6 (neuron 0) and I = 2.5 (neuron 1), by hand:
        // U1 = 0.6; U2 = 0.54 + 0.6 = 1.14 (spike); U3 = 1.026 + 0.6 - 1 = 0.626 (reset at t+1);
        // U4 = 0.5634 + 0.6 = 1.1634 (spike); U5 = 1.04706 + 0.6 - 1 = 0.64706.
        // I = 2.5: 2.5 (spike); 2.25 + 2.5 - 1 = 3.75; 3.375 + 2.5 - 1 = 4.875; 4.3875 + 1.5 = 5.8875; 5.29875 + 1.5 = 6.79875.
        let (u, s) = run(LIFNeuron(), Array(repeating: [0.6, 2.5], count: 5))
        expectClose(u.map { $0[0] }, [0.6, 1.14, 0.626, 1.1634, 0.64706], tolerance: 1e-6, "U (I = 0.6)")
        expectClose(u.map { $0[1] }, [2.5, 3.75, 4.875, 5.8875, 6.79875], tolerance: 1e-6, "U (I = 2.5)")
        #expect(s.map { $0[0] } == [0, 1, 0, 1, 0])
        #expect(s.map { $0[1] } == [1, 1, 1, 1, 1])
    }

    @Test func constantCurrentZeroReset() {
        // U1 = 0.6; U2 = 1.14 (spike); U3 = 0.9 * 1.14 * 0 + 0.6 = 0.6; U4 = 1.14 (spike); U5 = 0.6.
        // I = 2.5: 2.5; 0 + 2.5; ... every step spikes and restarts from I.
        let (u, s) = run(LIFNeuron(reset: .zero), Array(repeating: [0.6, 2.5], count: 5))
        expectClose(u.map { $0[0] }, [0.6, 1.14, 0.6, 1.14, 0.6], tolerance: 1e-6, "U (I = 0.6)")
        expectClose(u.map { $0[1] }, [2.5, 2.5, 2.5, 2.5, 2.5], tolerance: 1e-6, "U (I = 2.5)")
        #expect(s.map { $0[0] } == [0, 1, 0, 1, 0])
        #expect(s.map { $0[1] } == [1, 1, 1, 1, 1])
    }

    @Test func varyingCurrent() {
        // I = [1.5, 0, 0.2, -0.5, 1.2], beta 0.9, subtract:
        // U1 = 1.5 (spike); U2 = 1.35 + 0 - 1 = 0.35; U3 = 0.315 + 0.2 = 0.515;
        // U4 = 0.4635 - 0.5 = -0.0365; U5 = -0.03285 + 1.2 = 1.16715 (spike).
        let currents: [[Float]] = [[1.5], [0], [0.2], [-0.5], [1.2]]
        let (u, s) = run(LIFNeuron(), currents)
        expectClose(u.map { $0[0] }, [1.5, 0.35, 0.515, -0.0365, 1.16715], tolerance: 1e-6, "subtract")
        #expect(s.map { $0[0] } == [1, 0, 0, 0, 1])
        // zero reset: U2 = 0 + 0 = 0; U3 = 0.2; U4 = 0.18 - 0.5 = -0.32; U5 = -0.288 + 1.2 = 0.912.
        let (uz, sz) = run(LIFNeuron(reset: .zero), currents)
        expectClose(uz.map { $0[0] }, [1.5, 0, 0.2, -0.32, 0.912], tolerance: 1e-6, "zero")
        #expect(sz.map { $0[0] } == [1, 0, 0, 0, 0])
        // beta 0.5, threshold 0.5: U1 = 1.5 (spike); U2 = 0.75 - 0.5 = 0.25; U3 = 0.125 + 0.2 = 0.325;
        // U4 = 0.1625 - 0.5 = -0.3375; U5 = -0.16875 + 1.2 = 1.03125 (spike).
        let (uh, sh) = run(LIFNeuron(beta: 0.5, threshold: 0.5), currents)
        expectClose(uh.map { $0[0] }, [1.5, 0.25, 0.325, -0.3375, 1.03125], tolerance: 1e-6, "beta 0.5")
        #expect(sh.map { $0[0] } == [1, 0, 0, 0, 1])
    }

    @Test func exactlyAtThresholdDoesNotSpike() {
        let (u, s) = run(LIFNeuron(beta: 0, threshold: 1), [[1], [1], [1.5]])
        #expect(u.map { $0[0] } == [1, 1, 1.5])
        #expect(s.map { $0[0] } == [0, 0, 1])
    }

    @Test func networkTraceRecordsTheSameDynamics() throws {
        // One synapse with weight 1 and no bias: the current is the input.
        let net = Sequential([.spiking(try SpikingLayer(.linear(Linear(weight: Tensor(shape: [1, 1], storage: [1]), bias: nil))))])
        var rng = SeededRandom(seed: 0)
        let trace = net.trace(Tensor(shape: [2, 1], storage: [0.6, 2.5]), training: false, rng: &rng, timeSteps: 5)
        #expect(trace.output.shape == [10, 1])  // time-major stack [T * N, 1]
        #expect(trace.timeSteps == 5)
        let membranes = trace.spiking[0]!.membranes
        expectClose((0..<5).map { membranes.storage[2 * $0] }, [0.6, 1.14, 0.626, 1.1634, 0.64706], tolerance: 1e-6)
        let output = Spiking.unstacked(trace.output, steps: 5)
        #expect(output.shape == [5, 2, 1])
        #expect((0..<5).map { output[$0, 0, 0] } == [0, 1, 0, 1, 0])
        #expect((0..<5).map { output[$0, 1, 0] } == [1, 1, 1, 1, 1])
        #expect(trace.firingRates == [0.7])  // 7 spikes / (5 steps * 2 neurons)
        #expect(Spiking.predictions(spikes: output) == [0, 0])
    }
}

@Suite struct SpikingFeedbackTests {
    @Test func rateCodedFeedbackByHand() {
        // T = 4 (kappa = 2), one sample, label 1.
        // class 0 spikes [1,0,1,1]: n+ = 3, n- = 1 -> -S (1 - sigmoid(1 - 2)) = -S * 0.7310586
        // class 1 (true) spikes [0,1,0,1]: n+ = 2 -> 1 - sigmoid(0) = 0.5 at every step
        // class 2 spikes [0,0,0,0]: 0
        let s: [[Float]] = [[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]]
        let spikes = Tensor(shape: [4, 1, 3], storage: s.flatMap { $0 })
        let f = SpikingFeedbackFunction.rateCoded(spikes: spikes, labels: [1])
        let a = 1 / (1 + exp(-1.0))
        expectClose(f.storage, [-a, 0.5, 0, 0, 0.5, 0, -a, 0.5, 0, -a, 0.5, 0], tolerance: 1e-6)
        #expect(Spiking.predictions(spikes: spikes) == [0])
        // T = 5 (kappa = 2): a silent true class gets 1 - sigmoid(-2) at every step.
        let silent = SpikingFeedbackFunction.rateCoded(spikes: Tensor(shape: [5, 1, 2]), labels: [0])
        expectClose(silent.storage, Array(repeating: [1 - 1 / (1 + exp(2.0)), 0], count: 5).flatMap { $0 }, tolerance: 1e-6)
    }

    @Test func lossesMatchTheirDefinitions() {
        let s: [Float] = [1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1]  // [T=3, N=2, C=2]
        let spikes = Tensor(shape: [3, 2, 2], storage: s)
        let labels = [1, 0]
        func ce(_ logits: [Double], _ y: Int) -> Double { log(logits.map { exp($0) }.reduce(0, +)) - logits[y] }
        var rate = 0.0
        for t in 0..<3 { for n in 0..<2 { rate += ce([Double(s[(t * 2 + n) * 2]), Double(s[(t * 2 + n) * 2 + 1])], labels[n]) } }
        let (value, g) = SpikingLoss.rateCrossEntropy.evaluate(spikes: spikes, labels: labels)
        #expect(abs(Double(value) - rate / 6) < 1e-6)
        #expect(g.shape == [3, 2, 2])
        let counts: [[Double]] = [[3, 2], [0, 2]]
        let (countValue, gc) = SpikingLoss.countCrossEntropy.evaluate(spikes: spikes, labels: labels)
        #expect(abs(Double(countValue) - (ce(counts[0], 1) + ce(counts[1], 0)) / 2) < 1e-6)
        // The count gradient is the same at every step.
        #expect(gc[0, 1, 0] == gc[2, 1, 0] && gc[0, 0, 1] == gc[1, 0, 1])
    }
}

@Suite struct SpikingSurrogateTests {
    @Test(arguments: [Surrogate.atan(), .atan(alpha: 5), .fastSigmoid(), .fastSigmoid(slope: 3)])
    func derivativeIsTheDerivativeOfItsSmoothStep(_ s: Surrogate) {
        let h = 1e-6
        for x in stride(from: -2.0, through: 2.0, by: 0.0625) where abs(x) > 2 * h {
            let fd = (s.smoothStep(x + h) - s.smoothStep(x - h)) / (2 * h)
            #expect(abs(fd - s.derivative(x)) < 1e-6, "\(s) at \(x): \(fd) vs \(s.derivative(x))")
            #expect(abs(Double(s.derivative(Float(x))) - s.derivative(x)) < 1e-6)
        }
    }

    @Test func formulas() throws {
        // snnTorch ATan with alpha 2 is 1 / (1 + (pi x)^2); fast sigmoid 1 / (1 + 25|x|)^2.
        for x in [-0.7, -0.1, 0, 0.05, 0.3] {
            #expect(abs(Surrogate.atan().derivative(x) - 1 / (1 + (Double.pi * x) * (Double.pi * x))) < 1e-12)
            #expect(abs(Surrogate.fastSigmoid().derivative(x) - 1 / ((1 + 25 * abs(x)) * (1 + 25 * abs(x)))) < 1e-12)
            #expect(Surrogate.heaviside.derivative(x) == 0)
        }
        #expect(try Surrogate.parse("atan:3") == .atan(alpha: 3))
        #expect(try Surrogate.parse("fast-sigmoid") == .fastSigmoid(slope: 25))
        #expect(throws: LFPError.self) { try Surrogate.parse("relu") }
    }
}

@Suite struct SpikingBPTTTests {
    /// Loss of the network whose spikes are the smooth step of `surrogate`.
    func smoothLoss(_ net: Sequential, _ x: Tensor, _ labels: [Int], steps: Int, _ s: Surrogate, _ loss: SpikingLoss) -> Double {
        let output = SpikingTestNets.trace(net, x, steps: steps, spike: .smooth(s)).output
        return Double(loss.evaluate(spikes: Spiking.unstacked(output, steps: steps), labels: labels).value)
    }

    @Test(arguments: [
        (Surrogate.atan(), SpikingLoss.rateCrossEntropy, LIFNeuron.Reset.subtract),
        (Surrogate.fastSigmoid(slope: 4), SpikingLoss.rateCrossEntropy, LIFNeuron.Reset.subtract),
        (Surrogate.atan(alpha: 1), SpikingLoss.countCrossEntropy, LIFNeuron.Reset.zero),
    ])
    func gradientsMatchFiniteDifferencesOfTheSmoothNetwork(_ s: Surrogate, _ loss: SpikingLoss, _ reset: LIFNeuron.Reset) throws {
        // With spikes = smoothStep(U - theta), the surrogate is the true derivative, so BPTT (reset
        // detached) must equal finite differences as long as no hard reset flips.
        let net = try SpikingTestNets.dense([3, 4, 3], seed: 11, weightBound: 1.2, neuron: LIFNeuron(beta: 0.8, reset: reset))
        let x = SpikingTestNets.input([2, 3], seed: 12, low: 0, high: 2)
        let labels = [2, 0], steps = 4
        let trace = SpikingTestNets.trace(net, x, steps: steps, spike: .smooth(s))
        let margin = SpikingTestNets.membranes(trace).flatMap(\.storage).map { abs($0 - 1) }.min()!
        try #require(margin > 0.02, "a membrane is too close to the threshold for finite differences: \(margin)")
        let (_, g) = loss.evaluate(spikes: Spiking.unstacked(trace.output, steps: steps), labels: labels)
        let grads = Backpropagation.gradients(model: net, trace: trace, outputGradient: g.reshaped(trace.output.shape), surrogate: s).parameters
        #expect(Set(grads.keys) == Set(net.parameterNames))
        let h: Float = 2e-3
        var checked = 0
        for (name, value) in net.namedParameters {
            var fd = [Double]()
            for i in 0..<value.count {
                var plus = net, minus = net
                var p = value; p.storage[i] += h; plus.setParameter(name, p)
                var m = value; m.storage[i] -= h; minus.setParameter(name, m)
                let dl = smoothLoss(plus, x, labels, steps: steps, s, loss) - smoothLoss(minus, x, labels, steps: steps, s, loss)
                fd.append(dl / Double(2 * h))
            }
            let analytic = grads[name]!.storage
            for i in fd.indices {
                #expect(abs(Double(analytic[i]) - fd[i]) <= 2e-3 + 0.03 * abs(fd[i]),
                        "\(name)[\(i)]: BPTT \(analytic[i]) vs finite differences \(fd[i])")
            }
            checked += fd.filter { abs($0) > 1e-3 }.count
        }
        #expect(checked > 10, "too few non-trivial gradients to be a test")
    }

    @Test func heavisideGivesZeroGradientsAndNoUpdate() throws {
        let net = try SpikingTestNets.dense([3, 5, 3], seed: 3)
        let x = SpikingTestNets.input([4, 3], seed: 4)
        var trainer = try SpikingTrainer(model: net, optimizer: SGD(learningRate: 0.5), method: .gradient(surrogate: .heaviside), steps: 6)
        let (directions, result) = try trainer.directions(input: x, labels: [0, 1, 2, 0])
        #expect(Set(directions.keys) == Set(net.parameterNames))
        #expect(directions.values.allSatisfy { d in d.storage.allSatisfy { $0 == 0 } })
        #expect(result.objective > 0)
        try trainer.step(input: x, labels: [0, 1, 2, 0])
        #expect(trainer.model == net)
        // The atan surrogate does give a signal on the same batch.
        trainer.method = .gradient(surrogate: .atan())
        let (atan, _) = try trainer.directions(input: x, labels: [0, 1, 2, 0])
        #expect(atan.values.contains { $0.maxAbs() > 0 })
    }
}

@Suite struct SpikingLFPTests {
    struct Case: Sendable, CustomStringConvertible {
        var rule: Rule
        var reset: LIFNeuron.Reset
        var normalize: Bool
        var description: String { "\(rule), \(reset), normalize: \(normalize)" }
    }

    static let cases = [
        Case(rule: .epsilon, reset: .subtract, normalize: false),
        Case(rule: .epsilon(0.01), reset: .zero, normalize: false),
        Case(rule: .epsilon, reset: .subtract, normalize: true),
        Case(rule: .zPlusZMinus, reset: .subtract, normalize: false),
        Case(rule: .zPlusZMinus(epsilon: 1e-3), reset: .zero, normalize: true),
    ]

    func naiveRule(_ rule: Rule) -> NaiveSNN.Rule {
        switch rule {
        case .epsilon(let e): .epsilon(Double(e))
        case .zPlusZMinus(let e): .zPlusZMinus(Double(e))
        default: fatalError()
        }
    }

    /// Compares the library with the naive oracle on one network and input.
    func compare(_ net: Sequential, _ x: Tensor, sampleShape: [Int], labels: [Int], steps: Int, _ c: Case) throws {
        let trace = SpikingTestNets.trace(net, x, steps: steps)
        let output = Spiking.unstacked(trace.output, steps: steps)
        let naive = NaiveSNN(net, sampleShape: sampleShape)
        let n = x.shape[0], size = x.count / n
        let rec = naive.forward((0..<n).map { s in (0..<size).map { Double(x.storage[s * size + $0]) } }, steps: steps)
        // Same spikes step by step (the stacked forward equals stepping through time).
        let naiveOut = rec.output.flatMap { $0.flatMap { $0 } }.map { Float($0) }
        try #require(naiveOut == trace.output.storage, "forward passes disagree")
        let synapses = net.layers.indices.filter { net.layers[$0].kind == .spiking }
        for l in synapses {
            let u = (0..<steps).flatMap { rec.membranes[l][$0].flatMap { $0 } }
            expectClose(trace.spiking[l]!.membranes.storage, u, tolerance: 1e-5, "membranes of layer \(l)")
        }
        #expect(trace.firingRates.allSatisfy { $0 > 0 && $0 < 1 }, "firing rates \(trace.firingRates): need activity")

        let feedback = SpikingFeedbackFunction.rateCoded(spikes: output, labels: labels)
        let naiveFeedback = NaiveSNN.rateCodedFeedback(rec.output, labels: labels)
        expectClose(feedback.storage, naiveFeedback.flatMap { $0.flatMap { $0 } }, tolerance: 1e-6, "feedback")

        // The ordinary LFP engine on the graph model, fed the stacked feedback.
        let propagator = try FeedbackPropagator(model: net, composite: .uniform(c.rule), options: PropagationOptions(backwardNormalization: c.normalize))
        let signals = propagator.propagate(model: net, trace: trace, feedback: feedback.reshaped(trace.output.shape)).parameters
        let expected = naive.lfp(rec, feedback: naiveFeedback, rule: naiveRule(c.rule), normalize: c.normalize)
        #expect(Set(signals.keys) == Set(expected.keys))
        #expect(Set(signals.keys) == Set(net.parameterNames))
        for (name, value) in expected.sorted(by: { $0.key < $1.key }) {
            expectClose(signals[name]?.storage ?? [], value, tolerance: 1e-4, "\(name) (\(c))")
        }
        // The first layer must receive feedback through the hidden layer and the temporal carry.
        #expect(signals["layers.\(synapses[0]).weight"]!.maxAbs() > 0)

        // The mean reduction divides by the batch size.
        var meanPropagator = propagator
        meanPropagator.options.reduction = .mean
        let mean = meanPropagator.propagate(model: net, trace: trace, feedback: feedback.reshaped(trace.output.shape)).parameters
        for (name, value) in signals { expectClose(mean[name]!, value * (1 / Float(n)), tolerance: 1e-6, "mean \(name)") }
    }

    @Test(arguments: cases)
    func denseMatchesTheNaiveOracle(_ c: Case) throws {
        let net = try SpikingTestNets.dense([4, 3, 2], seed: 21, neuron: LIFNeuron(reset: c.reset))
        try compare(net, SpikingTestNets.input([2, 4], seed: 22), sampleShape: [4], labels: [1, 0], steps: 4, c)
    }

    @Test(arguments: [cases[0], cases[3], cases[4]])
    func convMaxPoolMatchesTheNaiveOracle(_ c: Case) throws {
        let net = try SpikingTestNets.conv(seed: 31, neuron: LIFNeuron(reset: c.reset))
        try compare(net, SpikingTestNets.input([2, 1, 6, 6], seed: 32, high: 1), sampleShape: [1, 6, 6], labels: [2, 1], steps: 5, c)
    }

    @Test func temporalCarryMatters() throws {
        // Without the carry (beta = 0 kills it) the first layer's feedback differs: a check that
        // the carry is part of what the oracle test compares.
        let net = try SpikingTestNets.dense([4, 3, 2], seed: 21)
        let x = SpikingTestNets.input([2, 4], seed: 22)
        let trace = SpikingTestNets.trace(net, x, steps: 4)
        let f = SpikingFeedbackFunction.rateCoded(spikes: Spiking.unstacked(trace.output, steps: 4), labels: [1, 0])
        let with = try FeedbackPropagator(model: net).propagate(model: net, trace: trace, feedback: f.reshaped(trace.output.shape)).parameters
        let rec = NaiveSNN(net, sampleShape: [4])
        let r = rec.forward((0..<2).map { s in (0..<4).map { Double(x.storage[s * 4 + $0]) } }, steps: 4)
        var noCarry = rec
        noCarry.beta = 0  // the backward pass then drops C[t-1] = beta U[t-1] c, and D changes
        let without = noCarry.lfp(r, feedback: NaiveSNN.rateCodedFeedback(r.output, labels: [1, 0]), rule: .epsilon(1e-6), normalize: false)
        let diff = zip(with["layers.0.weight"]!.storage, without["layers.0.weight"]!).map { abs(Double($0) - $1) }.max()!
        #expect(diff > 1e-3)
    }

    @Test func zPlusZMinusFeedbackNeverGrows() throws {
        // With unit feedback at one step and no carry (T = 1), sum |f_ij| <= |R| for each output.
        let net = try SpikingTestNets.dense([4, 3], seed: 5)
        let x = SpikingTestNets.input([1, 4], seed: 6)
        let trace = SpikingTestNets.trace(net, x, steps: 1)
        let f = Tensor(shape: [1, 3], storage: [1, -1, 0.5])
        let signals = try FeedbackPropagator(model: net, composite: .uniform(.zPlusZMinus)).propagate(model: net, trace: trace, feedback: f).parameters
        let fw = signals["layers.0.weight"]!, fb = signals["layers.0.bias"]!
        for j in 0..<3 {
            let total = (0..<4).reduce(Float(0)) { $0 + abs(fw[j, $1]) } + abs(fb[j])
            #expect(total <= abs(f.storage[j]) * (1 + 1e-5))
            #expect(total >= abs(f.storage[j]) * (1 - 1e-3))  // no membrane yet: all of R reaches the synapse
        }
    }

    @Test func rulesWithoutASpikingFormAreRejected() throws {
        let net = try SpikingTestNets.dense([4, 3], seed: 5)
        for rule in [Rule.alphaBeta(alpha: 2, beta: 1, epsilon: 1e-6), .scaledEpsilon(0.25), .thresholdEpsilon(0.5)] {
            #expect(throws: LFPError.self, "\(rule)") { try FeedbackPropagator(model: net, composite: .uniform(rule)) }
        }
    }
}

@Suite struct SpikingModelTests {
    @Test func zooModels() throws {
        let lenet = try SpikingZoo.make("snn-lenet", inputShape: [1, 28, 28], classes: 10, seed: 1)
        #expect(lenet.parameterNames == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias",
                                         "layers.5.weight", "layers.5.bias"])
        #expect(lenet.parameter("layers.2.weight")!.shape == [64, 12, 5, 5])
        #expect(lenet.parameter("layers.5.weight")!.shape == [10, 1024])
        #expect(Spiking.layers(of: lenet).map(\.path) == ["layers.0", "layers.2", "layers.5"])
        #expect(lenet.connectionWeightNames == ["layers.0.weight", "layers.2.weight", "layers.5.weight"])
        // PyTorch default init: |w| <= 1/sqrt(fan_in).
        #expect(lenet.parameter("layers.0.weight")!.maxAbs() <= 1 / 5)
        let out = lenet(SpikingTestNets.input([1, 1, 28, 28], seed: 2, high: 3), timeSteps: 2)
        #expect(out.shape == [2, 10])

        let mlp = try SpikingZoo.make("snn-mlp", inputShape: [1, 8, 8], classes: 4, beta: 0.7, threshold: 0.5, seed: 1)
        #expect(mlp.parameterNames == ["layers.1.weight", "layers.1.bias", "layers.2.weight", "layers.2.bias",
                                       "layers.3.weight", "layers.3.bias"])
        #expect(mlp.parameter("layers.2.weight")!.shape == [1000, 1000])
        #expect(mlp.parameterCount == 64 * 1000 + 1000 + 1000 * 1000 + 1000 + 1000 * 4 + 4)
        let neurons = Spiking.layers(of: mlp).map(\.layer.neuron)
        #expect(neurons.count == 3 && neurons.allSatisfy { $0 == LIFNeuron(beta: 0.7, threshold: 0.5) })

        do {
            _ = try SpikingZoo.make("snn-vgg", inputShape: [4], classes: 2, seed: 1)
            Issue.record("unknown name accepted")
        } catch {
            #expect("\(error)".contains("snn-mlp") && "\(error)".contains("snn-lenet"))
        }
        #expect(throws: ModelError.self) { try SpikingZoo.make("snn-lenet", inputShape: [1, 8, 8], classes: 2, seed: 1) }
    }

    @Test func invalidNetworksAreRejected() throws {
        var rng = SeededRandom(seed: 1)
        let linear = Layer.linear(Linear(inFeatures: 2, outFeatures: 2, rng: &rng))
        #expect(throws: ModelError.self) { try SpikingLayer(.activation(.relu)) }
        #expect(throws: ModelError.self) { try SpikingLayer(.maxPool2d(MaxPool2d(kernel: 2))) }
        #expect(throws: ModelError.self) { try SpikingLayer(linear, neuron: LIFNeuron(beta: 1.5)) }
        #expect(throws: ModelError.self) { try SpikingLayer(linear, neuron: LIFNeuron(threshold: 0)) }
        // A model without spiking layers has no spikes to train on.
        #expect(throws: ModelError.self) { try SpikingTrainer(model: Sequential([linear]), optimizer: SGD(learningRate: 0.1)) }
        #expect(throws: ModelError.self) {
            try SpikingTrainer(model: Sequential([.spiking(try SpikingLayer(linear))]), optimizer: SGD(learningRate: 0.1), steps: 0)
        }
        // A synapse that does not fit its input is named by the shape check.
        let wide = Sequential([.flatten, .spiking(try SpikingLayer(linear)), .spiking(try SpikingLayer(.linear(Linear(inFeatures: 3, outFeatures: 2, rng: &rng))))])
        #expect(throws: ModelError.self) { try wide.outputShape(input: [1, 2]) }
    }

    @Test func convolutionalOutputLayer() throws {
        // A last synapse that is a convolution: its spikes [T, N, C, H, W] count as C*H*W classes.
        var rng = SeededRandom(seed: 4)
        let net = Sequential([
            .spiking(try SpikingLayer(.conv2d(Conv2d(weight: .uniform([3, 1, 3, 3], bound: 1, rng: &rng), bias: .uniform([3], bound: 0.5, rng: &rng))))),
            .spiking(try SpikingLayer(.conv2d(Conv2d(weight: .uniform([2, 3, 2, 2], bound: 1, rng: &rng), bias: .uniform([2], bound: 0.5, rng: &rng))))),
        ])
        let x = SpikingTestNets.input([3, 1, 5, 5], seed: 5)
        let out = Spiking.unstacked(net(x, timeSteps: 4), steps: 4)
        #expect(out.shape == [4, 3, 2, 2, 2])
        #expect(SpikingFeedbackFunction.rateCoded(spikes: out, labels: [0, 7, 3]).shape == out.shape)
        for method in [SpikingMethod.lfp(), .gradient(loss: .countCrossEntropy)] {
            let trainer = try SpikingTrainer(model: net, optimizer: SGD(learningRate: 0.1), method: method, steps: 4)
            let (directions, result) = try trainer.directions(input: x, labels: [0, 7, 3])
            #expect(Set(directions.keys) == Set(net.parameterNames))
            #expect(result.count == 3)
            for (name, d) in directions { #expect(d.shape == net.parameter(name)!.shape) }
        }
    }

    @Test func sameSeedIsBitIdentical() throws {
        let a = try SpikingZoo.mlp([6, 16, 3], seed: 9), b = try SpikingZoo.mlp([6, 16, 3], seed: 9)
        #expect(a == b)
        let x = SpikingTestNets.input([5, 6], seed: 10, low: -3, high: 3)
        #expect(a(x, timeSteps: 7).storage == b(x, timeSteps: 7).storage)
        func train(_ net: Sequential, _ method: SpikingMethod) throws -> Sequential {
            var trainer = try SpikingTrainer(model: net, optimizer: Adam(learningRate: 0.01), method: method, steps: 5,
                                             backwardNormalization: true, adaptiveClipping: AdaptiveGradientClipping())
            for _ in 0..<3 { try trainer.step(input: x, labels: [0, 1, 2, 0, 1]) }
            return trainer.model
        }
        for method in [SpikingMethod.lfp(), .lfpZPlusZMinus(), .gradient()] {
            let (ta, tb) = (try train(a, method), try train(b, method))
            #expect(ta == tb, "\(method)")
            #expect(ta != a, "\(method) did not update")
        }
    }

    @Test func readmeExample() throws {
        // The README's spiking example, on a small input.
        let snn = try SpikingZoo.make("snn-mlp", inputShape: [1, 4, 4], classes: 3, seed: 1)
        var trainer = try SpikingTrainer(model: snn, optimizer: Adam(learningRate: 1e-3), method: .lfp(), steps: 5,
                                         backwardNormalization: true, adaptiveClipping: AdaptiveGradientClipping(clipping: 0.1))
        let x = SpikingTestNets.input([2, 1, 4, 4], seed: 3, high: 3), y = [0, 2]
        try trainer.step(input: x, labels: y)
        let spikes = Spiking.unstacked(trainer.model(x, timeSteps: 5), steps: 5)
        #expect(spikes.shape == [5, 2, 3])
        #expect(trainer.model != snn)
    }

    @Test func nestedSpikingLayersRunInTheSameTime() throws {
        // Spiking layers inside a container see the same time context: a nested network gives the
        // flat network's spikes, gradients and feedback (under the container's names).
        let flat = try SpikingTestNets.dense([4, 5, 3], seed: 41)
        let nested = Sequential(named: [("body", .sequential(Sequential([flat.layers[0]]))), ("head", flat.layers[1])])
        let x = SpikingTestNets.input([3, 4], seed: 42, high: 2)
        let labels = [0, 2, 1]
        for method in [SpikingMethod.lfp(), .lfpZPlusZMinus(), .gradient()] {
            let a = try SpikingTrainer(model: flat, optimizer: SGD(learningRate: 0.1), method: method, steps: 6, backwardNormalization: true)
            let b = try SpikingTrainer(model: nested, optimizer: SGD(learningRate: 0.1), method: method, steps: 6, backwardNormalization: true)
            let (da, ra) = try a.directions(input: x, labels: labels)
            let (db, rb) = try b.directions(input: x, labels: labels)
            #expect(ra.objective == rb.objective && ra.correct == rb.correct)
            let rename = ["layers.0": "body.layers.0", "layers.1": "head"]
            for (name, value) in da {
                let parts = name.split(separator: ".")
                let renamed = rename["\(parts[0]).\(parts[1])"]! + "." + parts[2]
                #expect(db[renamed]?.storage == value.storage, "\(method) \(name)")
            }
            #expect(da.values.contains { $0.maxAbs() > 0 }, "\(method): no signal")
        }
        var rng = SeededRandom(seed: 0)
        #expect(nested.trace(x, training: false, rng: &rng, timeSteps: 6).firingRates
                == flat.trace(x, training: false, rng: &rng, timeSteps: 6).firingRates)
    }

    @Test func timeStepsChangeNothingWithoutSpikingLayers() throws {
        var rng = SeededRandom(seed: 5)
        let model = Sequential([.linear(Linear(inFeatures: 4, outFeatures: 3, rng: &rng)), .activation(.relu),
                                .linear(Linear(inFeatures: 3, outFeatures: 2, rng: &rng))])
        let x = SpikingTestNets.input([3, 4], seed: 6)
        let once = model.trace(x, training: false, rng: &rng), unrolled = model.trace(x, training: false, rng: &rng, timeSteps: 4)
        #expect(unrolled.timeSteps == 1 && unrolled.output.storage == once.output.storage)
        let propagator = try FeedbackPropagator(model: model, options: PropagationOptions(reduction: .mean))
        let f = Tensor.uniform([3, 2], bound: 1, rng: &rng)
        let a = propagator.propagate(model: model, trace: once, feedback: f).parameters
        let b = propagator.propagate(model: model, trace: unrolled, feedback: f).parameters
        for (name, value) in a { #expect(b[name]?.storage == value.storage, "\(name)") }
    }

    @Test func adaptiveClippingByHand() {
        let agc = AdaptiveGradientClipping(clipping: 0.01)
        // Row 0: |w| = 5, |g| = 0.5 > 0.05 -> scaled to norm 0.05. Row 1: |w| = 0 -> floor 1e-3,
        // limit 1e-5. Row 2: |g| = 0.01 <= 0.02: unchanged.
        let w = Tensor(shape: [3, 2], storage: [3, 4, 0, 0, 0, 2])
        let g = Tensor(shape: [3, 2], storage: [0.3, 0.4, 1, 0, 0.01, 0])
        expectClose(agc.clip(g, parameter: w).storage, [0.03, 0.04, 1e-5, 0, 0.01, 0], tolerance: 1e-9)
        // A bias is one unit.
        let b = Tensor(shape: [2], storage: [3, 4]), gb = Tensor(shape: [2], storage: [3, 4])
        expectClose(agc.clip(gb, parameter: b).storage, [0.03, 0.04], tolerance: 1e-9)
        // Conv: one unit per output channel.
        let wc = Tensor(shape: [2, 1, 1, 2], storage: [1, 0, 0, 100]), gc = Tensor(shape: [2, 1, 1, 2], storage: [0, 1, 0.5, 0])
        expectClose(agc.clip(gc, parameter: wc).storage, [0, 0.01, 0.5, 0], tolerance: 1e-9)
    }
}

@Suite struct SpikingTrainingTests {
    @Test func lfpTrainsATinySpikingNetworkOnBlobs() throws {
        // The paper's SNN recipe on a toy problem: Adam, backward normalisation, AGC.
        let data = try ToyData.blobs(count: 300, classes: 3, seed: 1).normalized()
        let net = try SpikingZoo.mlp([2, 32, 3], seed: 3)
        var trainer = try SpikingTrainer(model: net, optimizer: Adam(learningRate: 0.01), method: .lfp(), steps: 8,
                                         backwardNormalization: true, adaptiveClipping: AdaptiveGradientClipping(clipping: 0.1))
        let before = trainer.accuracy(on: data)
        var objectives: [Double] = []
        for epoch in 0..<3 {
            objectives.append(try Fit.epoch(&trainer, data: data, epoch: epoch, batchSize: 16, seed: 1).objective)
        }
        let after = trainer.accuracy(on: data)
        #expect(after > 0.8, "accuracy \(before) -> \(after)")
        #expect(after > before + 0.2)
        // Less feedback is left at the true class as it learns to spike for it.
        #expect(objectives.last! < objectives.first!, "objectives \(objectives)")
    }
}
