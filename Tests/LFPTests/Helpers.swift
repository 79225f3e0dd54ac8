import Testing
@testable import LFP
import LFPTensor

func expectClose(_ a: [Float], _ b: [Double], tolerance: Double = 1e-4, _ what: String = "",
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.count == b.count, "\(what): count \(a.count) vs \(b.count)", sourceLocation: sourceLocation)
    let scale = max(1, b.map(abs).max() ?? 0)
    var worst = 0.0, worstIndex = 0
    for i in 0..<min(a.count, b.count) where !(abs(Double(a[i]) - b[i]) <= worst) {
        worst = abs(Double(a[i]) - b[i]); worstIndex = i
        if worst.isNaN { break }
    }
    #expect(worst <= tolerance * scale,
            "\(what): max error \(worst) at \(worstIndex): \(worstIndex < a.count ? a[worstIndex] : .nan) vs \(worstIndex < b.count ? b[worstIndex] : .nan) (scale \(scale))",
            sourceLocation: sourceLocation)
}

func expectClose(_ a: Tensor, _ b: Tensor, tolerance: Double = 1e-4, _ what: String = "",
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.shape == b.shape, "\(what): shape \(a.shape) vs \(b.shape)", sourceLocation: sourceLocation)
    expectClose(a.storage, b.storage.map(Double.init), tolerance: tolerance, what, sourceLocation: sourceLocation)
}

/// The gradient engine's parameter and input gradients of `L = <r, model(x)>` against central
/// differences with step `h` (forward in training mode when `training`: dropout off needs no
/// masks here, BatchNorm on batch statistics). Every parameter must get a gradient.
func expectGradientsMatchFiniteDifferences(_ model: Sequential, input x: Tensor, outputGradient r: Tensor, training: Bool = false,
                                           h: Float = 1e-2, tolerance: Double = 2e-3, _ what: String,
                                           sourceLocation: SourceLocation = #_sourceLocation) {
    func loss(_ m: Sequential, _ input: Tensor) -> Double {
        var unused = SeededRandom(seed: 0)
        return zip(m.trace(input, training: training, rng: &unused).output.storage, r.storage).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }
    var traceRng = SeededRandom(seed: 0)
    let trace = model.trace(x, training: training, rng: &traceRng)
    let signals = Backpropagation.gradients(model: model, trace: trace, outputGradient: r, computeInputGradient: true)
    #expect(Set(signals.parameters.keys) == Set(model.parameterNames), "\(what): parameters with a gradient", sourceLocation: sourceLocation)
    var numeric = [Double](repeating: 0, count: x.count)
    for i in 0..<x.count {
        var xp = x, xm = x
        xp.storage[i] += h; xm.storage[i] -= h
        numeric[i] = (loss(model, xp) - loss(model, xm)) / Double(2 * h)
    }
    expectClose(signals.input!.storage, numeric, tolerance: tolerance, "\(what): input gradient", sourceLocation: sourceLocation)
    for (name, p) in model.namedParameters {
        var numericP = [Double](repeating: 0, count: p.count)
        for i in 0..<p.count {
            var mp = model, mm = model
            var pp = p, pm = p
            pp.storage[i] += h; pm.storage[i] -= h
            mp.setParameter(name, pp); mm.setParameter(name, pm)
            numericP[i] = (loss(mp, x) - loss(mm, x)) / Double(2 * h)
        }
        expectClose(signals.parameters[name]?.storage ?? [], numericP, tolerance: tolerance, "\(what): \(name)", sourceLocation: sourceLocation)
    }
}

/// Small random networks used across the tests.
enum TestNets {
    /// Conv -> ReLU -> MaxPool -> Conv(stride 2, pad 1) -> ReLU -> AvgPool -> Flatten -> Linear -> ReLU -> Linear.
    static func convNet(seed: UInt64, activation: Activation = .relu) -> Sequential {
        var rng = SeededRandom(seed: seed)
        return Sequential([
            .conv2d(Conv2d(inChannels: 2, outChannels: 3, kernelSize: (3, 3), padding: (1, 1), rng: &rng)),
            .activation(activation),
            .maxPool2d(MaxPool2d(kernel: 2)),
            .conv2d(Conv2d(inChannels: 3, outChannels: 4, kernelSize: (3, 3), stride: (2, 2), padding: (1, 1), rng: &rng)),
            .activation(activation),
            .avgPool2d(AvgPool2d(kernel: 2)),
            .flatten,
            .linear(Linear(inFeatures: 4, outFeatures: 5, rng: &rng)),
            .activation(activation),
            .linear(Linear(inFeatures: 5, outFeatures: 3, rng: &rng)),
        ])
    }

    static func mlp(_ sizes: [Int], seed: UInt64, activation: Activation = .relu) -> Sequential {
        var rng = SeededRandom(seed: seed)
        var layers: [Layer] = []
        for i in 0..<(sizes.count - 1) {
            layers.append(.linear(Linear(inFeatures: sizes[i], outFeatures: sizes[i + 1], rng: &rng)))
            if i < sizes.count - 2 { layers.append(.activation(activation)) }
        }
        return Sequential(layers)
    }
}
