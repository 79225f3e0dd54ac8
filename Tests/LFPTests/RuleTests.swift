import Testing
@testable import LFP
import LFPTensor

/// A naive, per-connection implementation of the rules (LFP-MATH.md section 2) in Double:
/// every connection i -> j of one affine layer is listed explicitly with its z_ij.
enum NaiveLFP {
    struct Connection { var output: Int; var input: Int?; var weightIndex: Int?; var weight: Double }

    /// The connections of one sample (the same for every sample), output/input indices within a sample.
    static func connections(_ layer: Layer, inputShape s: [Int]) -> (conns: [Connection], outputs: Int) {
        var conns: [Connection] = []
        switch layer {
        case .linear(let l):
            for j in 0..<l.outFeatures {
                for i in 0..<l.inFeatures { conns.append(.init(output: j, input: i, weightIndex: j * l.inFeatures + i, weight: Double(l.weight.storage[j * l.inFeatures + i]))) }
                if let b = l.bias { conns.append(.init(output: j, input: nil, weightIndex: nil, weight: Double(b.storage[j]))) }
            }
            return (conns, l.outFeatures)
        case .conv2d(let c):
            let g = c.geometry(input: s)
            for o in 0..<g.outChannels { for oy in 0..<g.outHeight { for ox in 0..<g.outWidth {
                let j = (o * g.outHeight + oy) * g.outWidth + ox
                for ch in 0..<g.inChannels { for ki in 0..<g.kernelHeight { for kj in 0..<g.kernelWidth {
                    let iy = oy * g.strideHeight - g.paddingHeight + ki * g.dilationHeight
                    let ix = ox * g.strideWidth - g.paddingWidth + kj * g.dilationWidth
                    guard iy >= 0 && iy < g.inHeight && ix >= 0 && ix < g.inWidth else { continue }
                    let wi = ((o * g.inChannels + ch) * g.kernelHeight + ki) * g.kernelWidth + kj
                    conns.append(.init(output: j, input: (ch * g.inHeight + iy) * g.inWidth + ix, weightIndex: wi, weight: Double(c.weight.storage[wi])))
                } } }
                if let b = c.bias { conns.append(.init(output: j, input: nil, weightIndex: nil, weight: Double(b.storage[o]))) }
            } } }
            return (conns, g.outputSize)
        case .avgPool2d(let p):
            let g = p.geometry(input: s)
            for ch in 0..<g.channels { for oy in 0..<g.outHeight { for ox in 0..<g.outWidth {
                let j = (ch * g.outHeight + oy) * g.outWidth + ox
                var cells: [Int] = []
                for ki in 0..<g.kernelHeight { for kj in 0..<g.kernelWidth {
                    let iy = oy * g.strideHeight - g.paddingHeight + ki, ix = ox * g.strideWidth - g.paddingWidth + kj
                    if iy >= 0 && iy < g.inHeight && ix >= 0 && ix < g.inWidth { cells.append((ch * g.inHeight + iy) * g.inWidth + ix) }
                } }
                let divisor = p.countIncludePad ? Double(g.kernelHeight * g.kernelWidth) : Double(cells.count)
                for cell in cells { conns.append(.init(output: j, input: cell, weightIndex: nil, weight: 1 / divisor)) }
            } } }
            return (conns, g.channels * g.outHeight * g.outWidth)
        default:
            fatalError("not affine")
        }
    }

    /// f_ij for every connection of one sample, given the input a and output feedback f.
    /// With a `centre` c, contributions are measured from it: `z_ij = (a_i - c) w_ij`, while
    /// `z_j` stays the layer's true output (the rest, `c sum_i w_ij`, is a fixed reference).
    static func connectionFeedback(_ rule: Rule, conns: [Connection], a: [Double], f: [Double], outputs: Int, centre: Double = 0) -> [Double] {
        var z = [Double](repeating: 0, count: outputs), zp = z, zn = z, zabs = z
        let zij = conns.map { c in (c.input.map { a[$0] - centre } ?? 1) * c.weight }
        for (c, v) in zip(conns, zij) {
            z[c.output] += (c.input.map { a[$0] } ?? 1) * c.weight
            zp[c.output] += max(v, 0); zn[c.output] += min(v, 0); zabs[c.output] += abs(v)
        }
        // scaled-epsilon: the root mean square of this sample's outputs.
        let rms = (z.reduce(0) { $0 + $1 * $1 } / Double(max(1, outputs))).squareRoot()
        return zip(conns, zij).map { c, v in
            let j = c.output
            let sign: Double = z[j] >= 0 ? 1 : -1
            switch rule {
            case .scaledEpsilon(let k):
                let d = z[j] + Double(k) * rms * sign
                return d == 0 ? 0 : v / d * f[j]
            case .thresholdEpsilon(let k):
                let eps = Double(k) * rms
                let d = z[j] + (eps + (eps > 0 ? z[j] * z[j] / eps : 0)) * sign
                return d == 0 ? 0 : v / d * f[j]
            case .zero: return z[j] == 0 ? 0 : v / z[j] * f[j]
            case .epsilon(let e): return v / (z[j] + Double(e) * sign) * f[j]
            case .alphaBeta(let al, let be, let e):
                return sign * f[j] * (Double(al) * max(v, 0) / (zp[j] + Double(e)) - Double(be) * min(v, 0) / (zn[j] - Double(e)))
            case .zPlusZMinus(let e): return sign * f[j] * v / (zabs[j] + Double(e))
            }
        }
    }

    /// Input feedback (per sample), weight and bias feedback (summed) of one affine layer.
    static func layer(_ rule: Rule, _ layer: Layer, input: Tensor, feedback: Tensor, centre: Double = 0) -> (input: [Double], weight: [Double], bias: [Double]) {
        let n = input.shape[0]
        let (conns, outputs) = connections(layer, inputShape: input.shape)
        let perIn = input.count / n
        var fin = [Double](repeating: 0, count: input.count)
        let params = layer.parameters
        var fw = [Double](repeating: 0, count: params.first?.value.count ?? 0)
        var fb = [Double](repeating: 0, count: params.count > 1 ? params[1].value.count : 0)
        for s in 0..<n {
            let a = (0..<perIn).map { Double(input.storage[s * perIn + $0]) }
            let f = (0..<outputs).map { Double(feedback.storage[s * outputs + $0]) }
            let fij = connectionFeedback(rule, conns: conns, a: a, f: f, outputs: outputs, centre: centre)
            for (c, v) in zip(conns, fij) {
                let signW: Double = c.weight > 0 ? 1 : (c.weight < 0 ? -1 : 0)
                if let i = c.input {
                    fin[s * perIn + i] += v
                    if let wi = c.weightIndex { fw[wi] += v * signW }
                } else {
                    // bias connection of output j: channel = j / positions
                    let channel = fb.isEmpty ? 0 : c.output / (outputs / fb.count)
                    fb[channel] += v * signW
                }
            }
        }
        return (fin, fw, fb)
    }
}

@Suite struct RuleTests {
    /// A Linear layer whose weight map is large enough for the library's sgemm (at least 16 M
    /// multiply-adds: 1024 -> 256 at a batch of 80, above DenseKernels' 64, and 2048 -> 256 at
    /// a batch of 32, which DenseKernels would also take) gets the fused feedback where that
    /// sgemm runs (`Kernels.linearWeightFeedback`): the values of the weight map followed by
    /// the epilogue.
    @Test(arguments: [(1024, 80), (2048, 32)])
    func largeLinearFeedbackMatchesTheSeparatePasses(inFeatures: Int, batch: Int) throws {
        var rng = SeededRandom(seed: 21)
        let layer = Linear(inFeatures: inFeatures, outFeatures: 256, rng: &rng)
        let map = try #require(AffineMap(.linear(layer), inputShape: [inFeatures]))
        let s = Tensor.normal([batch, 256], rng: &rng), a = Tensor.normal([batch, inFeatures], rng: &rng)
        let (feedback, finite) = try #require(map.weightFeedback(s, input: a, scale: 0.25))
        var separate = try #require(map.weightMap(s, input: a))
        let separateFinite = separate.multiplyByMagnitude(of: layer.weight, scale: 0.25)
        #expect(separateFinite)
        #expect(finite)
        expectClose(feedback, separate, tolerance: 1e-5, "fused feedback")
    }

    static let rules: [Rule] = [.zero, .epsilon, .alphaBeta(alpha: 2, beta: 1, epsilon: 1e-6), .alphaBeta(alpha: 1, beta: 0, epsilon: 1e-6), .zPlusZMinus,
                                .scaledEpsilon(0.5), .scaledEpsilon(0.05), .thresholdEpsilon(0.25), .thresholdEpsilon(2)]

    static func layers() -> [(String, Layer, [Int])] {
        var rng = SeededRandom(seed: 300)
        return [
            ("linear", .linear(Linear(inFeatures: 6, outFeatures: 4, rng: &rng)), [3, 6]),
            ("linear-no-bias", .linear(Linear(inFeatures: 5, outFeatures: 3, bias: false, rng: &rng)), [2, 5]),
            ("conv", .conv2d(Conv2d(inChannels: 2, outChannels: 3, kernelSize: (3, 3), padding: (1, 1), rng: &rng)), [2, 2, 5, 5]),
            ("conv-s2p1", .conv2d(Conv2d(inChannels: 2, outChannels: 2, kernelSize: (3, 3), stride: (2, 2), padding: (1, 1), rng: &rng)), [2, 2, 6, 6]),
            ("conv-rect", .conv2d(Conv2d(inChannels: 1, outChannels: 2, kernelSize: (2, 3), stride: (1, 2), rng: &rng)), [2, 1, 5, 7]),
            ("avgpool", .avgPool2d(AvgPool2d(kernel: 2)), [2, 2, 4, 4]),
            ("avgpool-pad", .avgPool2d(AvgPool2d(kernel: 3, stride: 2, padding: 1, countIncludePad: false)), [1, 2, 5, 5]),
        ]
    }

    @Test(arguments: 0..<rules.count, 0..<7)
    func ruleMatchesNaivePerConnectionLoops(ruleIndex: Int, layerIndex: Int) {
        let rule = Self.rules[ruleIndex]
        let (name, layer, shape) = Self.layers()[layerIndex]
        var rng = SeededRandom(seed: UInt64(1000 + ruleIndex * 10 + layerIndex))
        let x = Tensor.normal(shape, rng: &rng)  // negative inputs included
        let model = Sequential([layer])
        var r2 = SeededRandom(seed: 0)
        let trace = model.trace(x, training: false, rng: &r2)
        let f = Tensor.normal(trace.output.shape, rng: &rng)  // negative feedback included
        let propagator = try! FeedbackPropagator(model: model, composite: .uniform(rule), options: .init(computeInputFeedback: true))
        let result = propagator.propagate(model: model, trace: trace, feedback: f)
        let naive = NaiveLFP.layer(rule, layer, input: x, feedback: f)
        expectClose(result.input!.storage, naive.input, tolerance: 1e-4, "\(rule) \(name): input feedback")
        if !naive.weight.isEmpty {
            expectClose(result.parameters["layers.0.weight"]!.storage, naive.weight, tolerance: 1e-4, "\(rule) \(name): weight feedback")
        }
        if !naive.bias.isEmpty {
            expectClose(result.parameters["layers.0.bias"]!.storage, naive.bias, tolerance: 1e-4, "\(rule) \(name): bias feedback")
        }
    }

    @Test func lfpZeroWithoutBiasConservesFeedback() {
        var rng = SeededRandom(seed: 9)
        let layer = Layer.linear(Linear(inFeatures: 7, outFeatures: 5, bias: false, rng: &rng))
        let x = Tensor.normal([4, 7], rng: &rng)
        let model = Sequential([layer])
        let trace = model.trace(x, training: false, rng: &rng)
        let f = Tensor.normal([4, 5], rng: &rng)
        let p = try! FeedbackPropagator(model: model, composite: .uniform(.zero), options: .init(computeInputFeedback: true))
        let fin = p.propagate(model: model, trace: trace, feedback: f).input!
        for s in 0..<4 {
            let sumIn = (0..<7).reduce(0.0) { $0 + Double(fin[s, $1]) }
            let sumOut = (0..<5).reduce(0.0) { $0 + Double(f[s, $1]) }
            #expect(abs(sumIn - sumOut) < 1e-4 * max(1, abs(sumOut)))
        }
    }

    @Test func alphaBetaSumsToSignedOutputFeedback() {
        var rng = SeededRandom(seed: 10)
        let lin = Linear(inFeatures: 6, outFeatures: 4, rng: &rng)
        let x = Tensor.normal([3, 6], rng: &rng)
        let f = Tensor.normal([3, 4], rng: &rng)
        let (conns, outputs) = NaiveLFP.connections(.linear(lin), inputShape: x.shape)
        for s in 0..<3 {
            let a = (0..<6).map { Double(x[s, $0]) }, fs = (0..<4).map { Double(f[s, $0]) }
            let fij = NaiveLFP.connectionFeedback(.alphaBeta(alpha: 2, beta: 1, epsilon: 1e-9), conns: conns, a: a, f: fs, outputs: outputs)
            let z = Kernels.linearForward(x, weight: lin.weight, bias: lin.bias)
            for j in 0..<4 {
                let total = zip(conns, fij).filter { $0.0.output == j }.reduce(0.0) { $0 + $1.1 }
                let expected = (z[s, j] >= 0 ? 1.0 : -1.0) * fs[j]
                #expect(abs(total - expected) < 1e-5 * max(1, abs(expected)))
            }
        }
    }

    @Test func zPlusZMinusNeverGrowsFeedback() {
        var rng = SeededRandom(seed: 11)
        let lin = Linear(inFeatures: 8, outFeatures: 5, rng: &rng)
        let x = Tensor.normal([4, 8], rng: &rng), f = Tensor.normal([4, 5], std: 3, rng: &rng)
        let (conns, outputs) = NaiveLFP.connections(.linear(lin), inputShape: x.shape)
        for s in 0..<4 {
            let fij = NaiveLFP.connectionFeedback(.zPlusZMinus, conns: conns, a: (0..<8).map { Double(x[s, $0]) },
                                                 f: (0..<5).map { Double(f[s, $0]) }, outputs: outputs)
            for j in 0..<5 {
                let total = zip(conns, fij).filter { $0.0.output == j }.reduce(0.0) { $0 + abs($1.1) }
                #expect(total <= abs(Double(f[s, j])) * (1 + 1e-9))
            }
        }
        // And the library's input feedback obeys it summed over outputs (bias-free share included).
        let model = Sequential([.linear(lin)])
        let trace = model.trace(x, training: false, rng: &rng)
        let p = try! FeedbackPropagator(model: model, composite: .uniform(.zPlusZMinus), options: .init(computeInputFeedback: true))
        let fin = p.propagate(model: model, trace: trace, feedback: f).input!
        for s in 0..<4 {
            let sumIn = (0..<8).reduce(0.0) { $0 + abs(Double(fin[s, $1])) }
            let sumOut = (0..<5).reduce(0.0) { $0 + abs(Double(f[s, $1])) }
            #expect(sumIn <= sumOut * (1 + 1e-5))
        }
    }

    @Test func lfpZeroGivesNoNaNAtExactZeroOutputs() {
        let lin = Linear(weight: Tensor(shape: [1, 2], storage: [1, -1]), bias: Tensor(shape: [1], storage: [0]))
        let model = Sequential([.linear(lin)])
        var rng = SeededRandom(seed: 0)
        let x = Tensor(shape: [1, 2], storage: [0.5, 0.5])
        let trace = model.trace(x, training: false, rng: &rng)
        #expect(trace.output.storage == [0])
        let p = try! FeedbackPropagator(model: model, composite: .uniform(.zero), options: .init(computeInputFeedback: true))
        let r = p.propagate(model: model, trace: trace, feedback: Tensor(shape: [1, 1], storage: [1]))
        #expect(r.input!.storage == [0, 0])
        #expect(r.parameters["layers.0.weight"]!.storage == [0, 0])
    }

    @Test func alphaBetaRequiresAlphaMinusBetaOne() {
        #expect(throws: LFPError.self) { try Rule.checkedAlphaBeta(alpha: 2, beta: 2) }
        #expect((try? Rule.checkedAlphaBeta(alpha: 3, beta: 2)) == .alphaBeta(alpha: 3, beta: 2, epsilon: 1e-6))
        #expect(throws: LFPError.self) { try Rule.parse("alpha-beta:1:1") }
        #expect(throws: LFPError.self) { try Rule.parse("gamma") }
        #expect((try? Rule.parse("epsilon:0.01")) == .epsilon(0.01))
        #expect((try? Rule.parse("scaled-epsilon")) == .scaledEpsilon(Rule.defaultScaledEpsilon))
        #expect((try? Rule.parse("scaled-epsilon:0.25")) == .scaledEpsilon(0.25))
        #expect(throws: LFPError.self) { try Rule.parse("scaled-epsilon:0") }
        #expect(throws: LFPError.self) { try Rule.parse("scaled-epsilon:-1") }
        #expect((try? Rule.parse("threshold-epsilon")) == .thresholdEpsilon(Rule.defaultThresholdEpsilon))
        #expect((try? Rule.parse("threshold-epsilon:0.5")) == .thresholdEpsilon(0.5))
        #expect(throws: LFPError.self) { try Rule.parse("threshold-epsilon:0") }
    }

    /// The scaled stabiliser bounds how much a unit near z = 0 amplifies its feedback:
    /// |f_j / stab(z_j)| <= |f_j| / (k rms), where plain epsilon divides by (almost) z_j.
    @Test func scaledEpsilonBoundsTheRatioNearZero() {
        let lin = Linear(weight: Tensor(shape: [2, 2], storage: [1, -1, 1, 1]), bias: nil)
        let model = Sequential([.linear(lin)])
        var rng = SeededRandom(seed: 0)
        let x = Tensor(shape: [1, 2], storage: [1, 0.999])   // z = [0.001, 1.999]
        let trace = model.trace(x, training: false, rng: &rng)
        let f = Tensor(shape: [1, 2], storage: [1, 0])
        func largestInputFeedback(_ rule: Rule) -> Float {
            let p = try! FeedbackPropagator(model: model, composite: .uniform(rule), options: .init(computeInputFeedback: true))
            return p.propagate(model: model, trace: trace, feedback: f).input!.maxAbs()
        }
        #expect(largestInputFeedback(.epsilon) > 900)               // 1 / 0.001
        let rms = ((0.001 * 0.001 + 1.999 * 1.999) / 2 as Float).squareRoot()
        #expect(largestInputFeedback(.scaledEpsilon(0.5)) <= 1 / (0.5 * rms) + 1e-4)
    }

    /// Centred inputs: a Linear layer after a step (and after a sigmoid through max-pooling and
    /// flattening) against the naive per-connection rule with contributions `(a_i - 0.5) w_ij`.
    @Test(arguments: [Rule.epsilon, .scaledEpsilon(0.5), .thresholdEpsilon(0.5), .zPlusZMinus, .alphaBeta(alpha: 2, beta: 1, epsilon: 1e-6)])
    func centredInputsMatchNaiveContributionsFromTheCentre(rule: Rule) throws {
        var rng = SeededRandom(seed: 77)
        let top = Linear(inFeatures: 8, outFeatures: 3, rng: &rng)
        for activation in [Activation.step, .sigmoid] {
            let model = Sequential([.linear(Linear(inFeatures: 5, outFeatures: 8, rng: &rng)), .activation(activation), .linear(top)])
            let x = Tensor.normal([4, 5], std: 2, rng: &rng)
            let trace = model.trace(x, training: false, rng: &rng)
            let f = Tensor.normal([4, 3], rng: &rng)
            let p = try FeedbackPropagator(model: model, composite: .uniform(rule), options: .init(centredInputs: true))
            let result = p.propagate(model: model, trace: trace, feedback: f)
            let naiveTop = NaiveLFP.layer(rule, .linear(top), input: trace.inputs[2], feedback: f, centre: 0.5)
            expectClose(result.parameters["layers.2.weight"]!.storage, naiveTop.weight, tolerance: 1e-4, "\(rule) \(activation): top weight")
            expectClose(result.parameters["layers.2.bias"]!.storage, naiveTop.bias, tolerance: 1e-4, "\(rule) \(activation): top bias")
            // The first layer's input is the data (no activation below): contributions from 0.
            let below = Tensor(shape: [4, 8], storage: naiveTop.input.map(Float.init))
            let naiveFirst = NaiveLFP.layer(rule, model.layers[0], input: x, feedback: below)
            expectClose(result.parameters["layers.0.weight"]!.storage, naiveFirst.weight, tolerance: 1e-3, "\(rule) \(activation): first weight")
        }
        // Through max-pooling and flattening: the sigmoid's centre still applies.
        let conv = Conv2d(inChannels: 1, outChannels: 2, kernelSize: (3, 3), padding: (1, 1), rng: &rng)
        let dense = Linear(inFeatures: 8, outFeatures: 2, rng: &rng)
        let model = Sequential([.conv2d(conv), .activation(.sigmoid), .maxPool2d(MaxPool2d(kernel: 2)), .flatten, .linear(dense)])
        let x = Tensor.normal([3, 1, 4, 4], rng: &rng)
        let trace = model.trace(x, training: false, rng: &rng)
        let f = Tensor.normal([3, 2], rng: &rng)
        let p = try FeedbackPropagator(model: model, composite: .uniform(rule), options: .init(centredInputs: true))
        let naive = NaiveLFP.layer(rule, .linear(dense), input: trace.inputs[4], feedback: f, centre: 0.5)
        expectClose(p.propagate(model: model, trace: trace, feedback: f).parameters["layers.4.weight"]!.storage, naive.weight,
                    tolerance: 1e-4, "\(rule): dense after sigmoid, max-pool, flatten")
    }

    /// Activations centred at 0 (ReLU, tanh, ...) are unchanged by centred inputs.
    @Test func centredInputsLeaveZeroCentredActivationsUnchanged() throws {
        var rng = SeededRandom(seed: 78)
        for activation in [Activation.relu, .tanh, .silu, .elu(alpha: 1), .leakyReLU(slope: 0.01)] {
            let model = Sequential([.linear(Linear(inFeatures: 5, outFeatures: 6, rng: &rng)), .activation(activation),
                                    .linear(Linear(inFeatures: 6, outFeatures: 3, rng: &rng))])
            let x = Tensor.normal([4, 5], rng: &rng)
            let trace = model.trace(x, training: false, rng: &rng)
            let f = Tensor.normal([4, 3], rng: &rng)
            let plain = try FeedbackPropagator(model: model).propagate(model: model, trace: trace, feedback: f)
            let centred = try FeedbackPropagator(model: model, options: .init(centredInputs: true)).propagate(model: model, trace: trace, feedback: f)
            for (name, value) in plain.parameters { #expect(centred.parameters[name]!.storage == value.storage, "\(activation) \(name)") }
        }
    }

    /// The rules compute their quotient in the feedback's storage when they own it. A caller's
    /// copy must stay as it was: the feedback given to `propagate`, and the layer feedback it
    /// records (which shares storage with what the next rule divides). 300 x 256 outputs: the
    /// quotient runs split over the cores.
    @Test(arguments: [Rule.epsilon(0.05), .scaledEpsilon(0.5), .thresholdEpsilon(0.25)])
    func ruleQuotientInPlaceLeavesCallersFeedbackUnchanged(rule: Rule) throws {
        var rng = SeededRandom(seed: 77)
        let model = Sequential([.linear(Linear(inFeatures: 32, outFeatures: 256, rng: &rng)), .activation(.relu),
                                .linear(Linear(inFeatures: 256, outFeatures: 256, rng: &rng))])
        let x = Tensor.normal([300, 32], rng: &rng)
        var r2 = SeededRandom(seed: 0)
        let trace = model.trace(x, training: false, rng: &r2)
        let f = Tensor.normal(trace.output.shape, rng: &rng)
        let kept = f.storage
        let options = PropagationOptions(computeInputFeedback: true, recordLayerFeedback: true)
        let recorded = try FeedbackPropagator(model: model, composite: .uniform(rule), options: options)
            .propagate(model: model, trace: trace, feedback: f)
        #expect(f.storage.elementsEqual(kept), "the caller's feedback was changed")
        let layers = recorded.layerOutputs ?? []
        #expect(layers.count == 3 && layers[2].storage.elementsEqual(kept), "the recorded feedback at the logits is not the feedback given")
        // Below: the feedback the top layer's rule passed down (naive per-connection loops), the
        // same through the ReLU; layer 0's rule divided it in place only in its own copy.
        if layers.count == 3 {
            // The first 4 samples (the naive loops are slow; samples are independent).
            let rows = 4, width = f.count / f.shape[0], inWidth = trace.inputs[2].count / f.shape[0]
            let naive = NaiveLFP.layer(rule, model.layers[2], input: Tensor(shape: [rows, inWidth], storage: Array(trace.inputs[2].storage[0..<(rows * inWidth)])),
                                       feedback: Tensor(shape: [rows, width], storage: Array(f.storage[0..<(rows * width)])))
            expectClose(Array(layers[1].storage[0..<(rows * inWidth)]), naive.input, tolerance: 1e-4, "\(rule): recorded feedback at the ReLU")
            #expect(layers[0].storage.elementsEqual(layers[1].storage), "\(rule): recorded feedback at the first layer")
        }
        // The same signals without recording (the rules then own every feedback they divide).
        let plain = try FeedbackPropagator(model: model, composite: .uniform(rule), options: .init(computeInputFeedback: true))
            .propagate(model: model, trace: trace, feedback: f)
        #expect(plain.input!.storage.elementsEqual(recorded.input!.storage), "\(rule): input feedback")
        for (name, value) in plain.parameters { #expect(recorded.parameters[name]!.storage.elementsEqual(value.storage), "\(rule) \(name)") }
        // Epsilon: the quotient in place gives the bits of the plain per-element division.
        if case .epsilon(let eps) = rule {
            var inPlace = f
            Rule.divideByEpsilonStabiliser(&inPlace, trace.outputs[2], epsilon: eps)
            let z = trace.outputs[2].storage
            let plain = (0..<f.count).map { f.storage[$0] / (z[$0] + (z[$0] >= 0 ? eps : -eps)) }
            #expect(inPlace.storage.elementsEqual(plain), "in place against the per-element division")
            #expect(f.storage.elementsEqual(kept), "the in-place quotient changed its source's copy")
        }
    }
}
