import Testing
@testable import LFP
import LFPTensor

/// Every layer's backward pass against central finite differences of `L = <r, model(x)>`.
@Suite struct GradientTests {
    static let layerCases: [(String, [Layer], [Int])] = {
        var rng = SeededRandom(seed: 100)
        return [
            ("linear", [.linear(Linear(inFeatures: 5, outFeatures: 4, rng: &rng))], [3, 5]),
            ("linear-no-bias", [.linear(Linear(inFeatures: 5, outFeatures: 4, bias: false, rng: &rng))], [3, 5]),
            ("conv", [.conv2d(Conv2d(inChannels: 2, outChannels: 3, kernelSize: (3, 2), stride: (2, 1), padding: (1, 1), rng: &rng))], [2, 2, 6, 5]),
            ("conv-dilated", [.conv2d(Conv2d(inChannels: 2, outChannels: 2, kernelSize: (3, 3), padding: (2, 2), dilation: (2, 2), rng: &rng))], [1, 2, 6, 6]),
            ("maxpool", [.maxPool2d(MaxPool2d(kernel: 2))], [2, 2, 6, 6]),
            ("maxpool-overlap", [.maxPool2d(MaxPool2d(kernel: 3, stride: 2, padding: 1))], [1, 2, 7, 7]),
            ("avgpool", [.avgPool2d(AvgPool2d(kernel: 2))], [2, 2, 6, 6]),
            ("avgpool-pad", [.avgPool2d(AvgPool2d(kernel: 3, stride: 2, padding: 1, countIncludePad: false))], [1, 2, 7, 7]),
            ("flatten", [.flatten], [2, 2, 3, 3]),
            ("relu", [.activation(.relu)], [3, 7]),
            ("leaky-relu", [.activation(.leakyReLU(slope: 0.1))], [3, 7]),
            ("sigmoid", [.activation(.sigmoid)], [3, 7]),
            ("tanh", [.activation(.tanh)], [3, 7]),
            ("silu", [.activation(.silu)], [3, 7]),
            ("elu", [.activation(.elu(alpha: 1))], [3, 7]),
            ("step", [.activation(.step)], [3, 7]),
        ]
    }()

    @Test(arguments: 0..<layerCases.count)
    func layerBackwardMatchesFiniteDifferences(_ caseIndex: Int) {
        let (name, layers, inputShape) = Self.layerCases[caseIndex]
        var rng = SeededRandom(seed: 200 + UInt64(caseIndex))
        let model = Sequential(layers)
        var x = Tensor.normal(inputShape, rng: &rng)
        if name.hasPrefix("maxpool") {
            // Distinct values 0.05 apart, so no central difference crosses a tie.
            var values = (0..<x.count).map { Float($0) * 0.05 - 1 }
            values.shuffle(using: &rng)
            x = Tensor(shape: inputShape, storage: values)
        }
        let outShape = try! model.outputShape(input: inputShape)
        let r = Tensor.normal(outShape, rng: &rng)
        expectGradientsMatchFiniteDifferences(model, input: x, outputGradient: r, name)
    }

    @Test func dropoutBackwardUsesTheForwardMask() {
        let model = Sequential([.dropout(p: 0.5)])
        var rng = SeededRandom(seed: 1)
        let x = Tensor.normal([4, 50], rng: &rng)
        let trace = model.trace(x, training: true, rng: &rng)
        let mask = trace.dropoutMasks[0]!
        #expect(mask.contains(0) && mask.contains(1))
        for i in 0..<x.count { #expect(trace.output.storage[i] == x.storage[i] * mask[i] * 2) }
        let g = Tensor(shape: x.shape, repeating: 1)
        let back = Backpropagation.gradients(model: model, trace: trace, outputGradient: g, computeInputGradient: true)
        for i in 0..<x.count { #expect(back.input!.storage[i] == mask[i] * 2) }
        // Inference: identity.
        #expect(model(x) == x)
    }

    @Test(arguments: [Loss.softmaxCrossEntropy, .sigmoidBinaryCrossEntropy], [Reduction.sum, .mean])
    func lossGradientMatchesFiniteDifferences(loss: Loss, reduction: Reduction) {
        var rng = SeededRandom(seed: 4)
        let y = Tensor.normal([4, 5], std: 2, rng: &rng)
        let labels = [0, 3, 4, 1]
        let (_, g) = loss.evaluate(logits: y, labels: labels, reduction: reduction)
        var numeric = [Double](repeating: 0, count: y.count)
        let h: Float = 1e-2
        for i in 0..<y.count {
            var yp = y, ym = y
            yp.storage[i] += h; ym.storage[i] -= h
            numeric[i] = Double(loss.evaluate(logits: yp, labels: labels, reduction: reduction).value
                                - loss.evaluate(logits: ym, labels: labels, reduction: reduction).value) / Double(2 * h)
        }
        expectClose(g.storage, numeric, tolerance: 2e-3, "\(loss) \(reduction)")
    }

    @Test func lossValuesMatchHandComputation() {
        let y = Tensor(shape: [1, 2], storage: [0, 0])
        let ce = Loss.softmaxCrossEntropy.evaluate(logits: y, labels: [1], reduction: .sum).value
        #expect(abs(Double(ce) - 0.6931471805599453) < 1e-6)
        let bce = Loss.sigmoidBinaryCrossEntropy.evaluate(logits: y, labels: [1], reduction: .sum).value
        #expect(abs(Double(bce) - 2 * 0.6931471805599453) < 1e-6)
    }

    @Test func sameSeedSameModelAndOutputs() {
        let a = TestNets.convNet(seed: 5), b = TestNets.convNet(seed: 5), c = TestNets.convNet(seed: 6)
        #expect(a == b)
        #expect(a != c)
        var rng = SeededRandom(seed: 1)
        let x = Tensor.normal([2, 2, 8, 8], rng: &rng)
        #expect(a(x).storage == b(x).storage)
    }

    @Test func parameterNamesAreStableAndDotted() {
        let m = TestNets.convNet(seed: 1)
        #expect(m.parameterNames == ["layers.0.weight", "layers.0.bias", "layers.3.weight", "layers.3.bias",
                                     "layers.7.weight", "layers.7.bias", "layers.9.weight", "layers.9.bias"])
        #expect(m.parameter("layers.3.weight")?.shape == [4, 3, 3, 3])
        #expect(m.parameter("layers.2.weight") == nil)
    }

    @Test func initialisationFollowsPyTorchBounds() {
        var rng = SeededRandom(seed: 3)
        let l = Linear(inFeatures: 100, outFeatures: 300, rng: &rng)
        #expect(l.weight.storage.allSatisfy { abs($0) <= 0.1 })
        #expect(l.weight.maxAbs() > 0.099)
        #expect(l.bias!.storage.allSatisfy { abs($0) <= 0.1 })
        let c = Conv2d(inChannels: 4, outChannels: 64, kernelSize: (5, 5), rng: &rng)
        #expect(c.weight.storage.allSatisfy { abs($0) <= 0.1 } && c.weight.maxAbs() > 0.099)
    }

    /// BatchNorm's backward with LFP's factor multiplied in (`timesInput`) gives the plain
    /// backward times the input, through batch statistics (the fused pass) and running ones.
    @Test(arguments: [true, false])
    func batchNormBackwardTimesInputIsBackwardTimesInput(training: Bool) throws {
        var rng = SeededRandom(seed: 12)
        var norm = BatchNorm(features: 3)
        norm.weight = Tensor.normal([3], rng: &rng)
        norm.bias = Tensor.normal([3], rng: &rng)
        // Running statistics far from (0, 1), so that x and xhat differ.
        norm.runningMean = Tensor(shape: [3], storage: [1.5, -2, 0.5])
        norm.runningVariance = Tensor(shape: [3], storage: [4, 0.25, 9])
        let x = Tensor.normal([4, 3, 5, 5], rng: &rng) * 2, dy = Tensor.normal([4, 3, 5, 5], rng: &rng)
        let stats = norm.statistics(x, training: training)
        #expect(stats.fromBatch == training)
        let plain = norm.backward(dy, input: x, stats, needInput: true)
        let fused = norm.backward(dy, input: x, stats, needInput: true, timesInput: true)
        let expected = try #require(plain.input) * x
        expectClose(try #require(fused.input), expected, tolerance: 1e-6, "input")
        #expect(fused.weight.storage.elementsEqual(plain.weight.storage) && fused.bias.storage.elementsEqual(plain.bias.storage))
    }
}
