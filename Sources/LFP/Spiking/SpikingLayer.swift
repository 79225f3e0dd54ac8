import LFPTensor

/// A spiking layer (LFP-MATH.md section 6): a synapse (`Linear` or `Conv2d`) whose currents
/// drive leaky integrate-and-fire neurons, unrolled over the time steps of the forward pass.
///
/// A spiking network is an ordinary ``Sequential`` whose layers include spiking layers, run with
/// ``Sequential/trace(_:training:rng:timeSteps:)``. Tensors after the first spiking layer are
/// time-major stacks `[T * N, ...]` (step t in rows `t*N ..< (t+1)*N`); the other leaves
/// (max-pooling, flatten, ...) act on every step at once. Inputs are static (constant
/// encoding): the first spiking layer maps the static input `[N, ...]` once and feeds the same
/// current at every step. This is the same computation as stepping the whole network through
/// time, because layers only feed forward; both engines (``Backpropagation``,
/// ``FeedbackPropagator``) walk the one trace in reverse like any other layer.
///
/// The layer's parameters are its synapse's (`weight`, `bias`): a spiking layer at child
/// `layers.3` has `layers.3.weight`, as the synapse alone would.
public struct SpikingLayer: Sendable, Equatable, CustomStringConvertible {
    /// The synapse of a spiking layer.
    public enum Synapse: Sendable, Equatable {
        case linear(Linear)
        case conv2d(Conv2d)

        /// The synapse as a layer of its own.
        public var layer: Layer {
            switch self {
            case .linear(let l): .linear(l)
            case .conv2d(let c): .conv2d(c)
            }
        }
    }

    /// The synapse (Linear or Conv2d).
    public internal(set) var synapse: Synapse
    /// The neuron after the synapse.
    public var neuron: LIFNeuron

    /// A synapse followed by its LIF neuron.
    /// - Throws: ``ModelError/invalidConfiguration(_:)`` when the synapse is not Linear or Conv2d,
    ///   or the neuron has `beta` outside `[0, 1]` or a non-positive threshold.
    public init(_ synapse: Layer, neuron: LIFNeuron = LIFNeuron()) throws(ModelError) {
        switch synapse {
        case .linear(let l): self.synapse = .linear(l)
        case .conv2d(let c): self.synapse = .conv2d(c)
        default: throw .invalidConfiguration("\(synapse) cannot drive LIF neurons; a spiking layer's synapse is Linear or Conv2d")
        }
        guard neuron.beta.isFinite, neuron.beta >= 0, neuron.beta <= 1 else {
            throw .invalidConfiguration("LIF beta must be in [0, 1], got \(neuron.beta)")
        }
        guard neuron.threshold.isFinite, neuron.threshold > 0 else {
            throw .invalidConfiguration("LIF threshold must be positive, got \(neuron.threshold)")
        }
        self.neuron = neuron
    }

    public var description: String { "Spiking(\(synapse.layer), \(neuron))" }

    /// What the forward pass of a spiking layer recorded for the backward passes.
    public struct Record: Sendable {
        /// Synaptic currents `I[t]`, stacked `[T * N, ...]`.
        public var currents: Tensor
        /// Membranes `U[t]`, stacked like the currents (the spikes are the layer's output).
        public var membranes: Tensor
        /// The layer's input was the static input `[N, ...]`, the same at every step.
        public var staticInput: Bool
    }

    /// The synapse's parameters (`weight`, `bias`).
    var parameters: [(name: String, value: Tensor)] { synapse.layer.parameters }

    /// Replaces the synapse's `weight` or `bias`; the shape must match.
    mutating func setParameter(_ local: String, _ value: Tensor) {
        var layer = synapse.layer
        layer.setParameter(local, value)
        switch layer {
        case .linear(let l): synapse = .linear(l)
        case .conv2d(let c): synapse = .conv2d(c)
        default: preconditionFailure("a synapse stays Linear or Conv2d")
        }
    }

    /// The synapse as an affine map of an input of the given shape.
    func map(inputShape: [Int]) -> AffineMap { AffineMap(synapse.layer, inputShape: inputShape)! }

    /// Applies `visit` to each parameter in place (the synapse is taken out while it is updated,
    /// so its tensors are uniquely referenced).
    mutating func updateParameters(_ visit: (String, inout Tensor) -> Void) {
        let empty = Synapse.linear(Linear(weight: Tensor(shape: [0, 0]), bias: nil))
        switch synapse {
        case .linear(var l):
            synapse = empty
            l.updateParameters(visit)
            synapse = .linear(l)
        case .conv2d(var c):
            synapse = empty
            c.updateParameters(visit)
            synapse = .conv2d(c)
        }
    }

    /// The spikes `[T * N, ...]` for input `x` (static `[N, ...]` while `time.stacked` is false,
    /// stacked otherwise), and what the backward passes need.
    func forward(_ x: Tensor, time: inout TimeContext) -> (spikes: Tensor, record: Record) {
        var current: Tensor
        switch synapse {
        case .linear(let l): current = l(x)
        case .conv2d(let c): current = c(x)
        }
        let staticInput = !time.stacked
        if staticInput {
            // Constant encoding: the same current at every step.
            current = Spiking.repeated(current, time.steps)
            time.stacked = true
        }
        let (u, s) = neuron.run(currents: current, steps: time.steps, spike: time.spike)
        return (s, Record(currents: current, membranes: u, staticInput: staticInput))
    }

    // MARK: - From the spikes to the currents

    /// Back-propagation through time with a surrogate spike derivative, the reset detached
    /// (snnTorch's default): for t = T..1
    ///
    ///     dL/dU[t] = dL/dS[t] * surrogate(U[t] - theta) + decay[t+1] * dL/dU[t+1],   dL/dI[t] = dL/dU[t]
    ///
    /// with `decay[t] = dU[t]/dU[t-1]` (`beta`, or `beta (1 - r[t])` for the zero reset).
    /// With ``Surrogate/heaviside`` every gradient is exactly zero.
    func currentGradient(_ g: Tensor, record: Record, steps: Int, surrogate: Surrogate) -> Tensor {
        let membrane = record.membranes
        precondition(g.count == membrane.count, "gradient \(g.shape) does not match the spikes \(membrane.shape)")
        let block = membrane.count / steps
        var gradient = Tensor(shape: membrane.shape)
        let theta = neuron.threshold
        g.storage.withUnsafeBufferPointer { pg in
            membrane.storage.withUnsafeBufferPointer { pu in
                gradient.storage.withUnsafeMutableBufferPointer { pd in
                    Spiking.backInTime(steps: steps, block: block) { t, _, i, carry in
                        let du = pg[i] * surrogate.derivative(pu[i] - theta) + carry
                        pd[i] = du
                        carry = t > 0 ? neuron.effectiveDecay(previous: pu[i - block]) * du : 0
                    }
                }
            }
        }
        return gradient
    }

    /// LFP through time, as the reference implements it: the feedback `F` arriving at the spikes
    /// is feedback on the membrane (no derivative of `H`); with the temporal carry `C[t]` from
    /// step t+1 (`C[T] = 0`), for t = T..1
    ///
    ///     R = F[t] + C[t],   D = |U[t-1]| + |I[t] - (1 - beta) U[t-1]|,   c = R / (D + eps),   C[t-1] = beta U[t-1] c
    ///
    /// Returns `c` at the currents, stacked; the synapse's maps take it from there
    /// (``feedbackMaps(_:input:record:steps:needInput:scale:)``).
    ///
    /// Rules: `.epsilon(eps)`, `.zero` (`c = 0` where `D = 0`), and **(choice)** `.zPlusZMinus(eps)`:
    /// the z+z- rule on the pre-reset membrane `z = beta U[t-1] + I[t]`, whose contributions are
    /// `beta U[t-1]`, the synaptic terms and the bias: `c = sign(z) R / (beta |U[t-1]| + sum_i
    /// |s_i w_ji| + |b_j| + eps)`, so feedback never grows. **(choice)** With the zero reset the carry
    /// is `beta (1 - r[t]) U[t-1] c`: no feedback flows through a membrane the reset zeroed.
    /// Other rules are rejected when a composite is resolved (``Composite/resolve(for:)``).
    func currentFeedback(_ f: Tensor, input: Tensor, record: Record, steps: Int, rule: Rule) -> Tensor {
        let current = record.currents, membrane = record.membranes
        precondition(f.count == current.count, "feedback \(f.shape) does not match the spikes \(current.shape)")
        let block = current.count / steps
        // z+z-: the magnitudes of the synaptic contributions, sum_i |s_i w_ji| + |b_j|.
        var magnitudes = Tensor(shape: [0])
        if case .zPlusZMinus = rule {
            let map = map(inputShape: input.shape)
            magnitudes = map.forward(input.magnitude, .magnitude)
            if let b = map.bias { magnitudes = Rule.addBias(magnitudes, b.magnitude) }
        }
        let magnitudeStride = record.staticInput ? 0 : block  // a static input's magnitudes are the same every step
        var c = Tensor(shape: current.shape)
        let beta = neuron.beta
        f.storage.withUnsafeBufferPointer { pf in
            current.storage.withUnsafeBufferPointer { pi in
                membrane.storage.withUnsafeBufferPointer { pu in
                    magnitudes.storage.withUnsafeBufferPointer { pm in
                        c.storage.withUnsafeMutableBufferPointer { pc in
                            Spiking.backInTime(steps: steps, block: block) { t, j, i, carry in
                                let previous: Float = t > 0 ? pu[i - block] : 0
                                let r = pf[i] + carry
                                let value: Float
                                switch rule {
                                case .epsilon(let eps):
                                    let d = abs(previous) + abs(pi[i] - (1 - beta) * previous)
                                    value = r / (d + eps)
                                case .zero:
                                    let d = abs(previous) + abs(pi[i] - (1 - beta) * previous)
                                    value = d == 0 ? 0 : r / d
                                case .zPlusZMinus(let eps):
                                    let z = beta * previous + pi[i]
                                    let d = beta * abs(previous) + pm[t * magnitudeStride + j] + eps
                                    value = z >= 0 ? r / d : -r / d
                                case .alphaBeta, .scaledEpsilon, .thresholdEpsilon:
                                    preconditionFailure("\(rule) is rejected for spiking layers when the composite is resolved")
                                }
                                pc[i] = value
                                carry = neuron.effectiveDecay(previous: previous) * previous * value
                            }
                        }
                    }
                }
            }
        }
        return c
    }

    /// Whether `rule` is defined on a spiking layer (epsilon, zero, z+z-).
    static func accepts(_ rule: Rule) -> Bool {
        switch rule {
        case .epsilon, .zero, .zPlusZMinus: true
        case .alphaBeta, .scaledEpsilon, .thresholdEpsilon: false
        }
    }

    // MARK: - From the currents to the parameters and the input

    /// The synapse's maps of a signal `c` at the currents (stacked): weight map
    /// `sum_t c[t]^T s_in[t]`, bias map `sum c` and input map `c[t] W` (for a static input the
    /// steps are summed first: `sum_t c[t]^T x = (sum_t c[t])^T x`).
    func synapseMaps(_ c: Tensor, input: Tensor, record: Record, steps: Int, needInput: Bool)
        -> (weight: Tensor, bias: Tensor?, input: Tensor?) {
        let map = map(inputShape: input.shape)
        let s = record.staticInput ? Spiking.sumOverSteps(c, steps) : c
        let weight = map.weightMap(s, input: input)!
        let bias = map.bias == nil ? nil : map.biasMap(c)
        return (weight, bias, needInput ? map.transpose(s, .plain) : nil)
    }

    /// The LFP maps (LFP-MATH.md section 6): `F(W) = |W| * sum_t c[t]^T s_in[t]`, `F(b) = |b| *
    /// sum c` (times `scale`), and the feedback at the input `s_in[t] * (c[t] W)`.
    func feedbackMaps(_ c: Tensor, input: Tensor, record: Record, steps: Int, needInput: Bool, scale: Float) -> RuleOutput {
        let map = map(inputShape: input.shape)
        let s = record.staticInput ? Spiking.sumOverSteps(c, steps) : c
        var out = RuleOutput()
        (out.weightFeedback, out.weightFeedbackIsFinite) = map.weightFeedback(s, input: input, scale: scale)!
        if let b = map.bias {
            var fb = map.biasMap(c)
            out.biasFeedbackIsFinite = fb.multiplyByMagnitude(of: b, scale: scale)
            out.biasFeedback = fb
        }
        if needInput {
            var fin = map.transpose(s, .plain)
            fin.multiplyElementwise(by: input)
            out.inputFeedback = fin
        }
        return out
    }
}

/// The time context of one forward pass: how many steps the network is unrolled over, whether
/// the tensor flowing through is already stacked over time, and the spike function.
struct TimeContext {
    let steps: Int
    var stacked = false
    let spike: SpikeFunction

    init(steps: Int, spike: SpikeFunction = .heaviside) {
        precondition(steps >= 1, "a forward pass needs at least one time step")
        self.steps = steps
        self.spike = spike
    }
}

/// Helpers for spiking networks: readout of the time-stacked output, and building blocks of the
/// time-major layout.
public enum Spiking {
    /// Whether a model has spiking layers (its output is then stacked over time).
    public static func isSpiking(_ model: Sequential) -> Bool {
        model.leaves.contains { $0.layer.kind == .spiking }
    }

    /// Every spiking layer of a model, depth first.
    public static func layers(of model: Sequential) -> [(path: String, layer: SpikingLayer)] {
        model.leaves.compactMap { path, layer in
            if case .spiking(let s) = layer { (path, s) } else { nil }
        }
    }

    /// Output spikes `[T * N, ...]` (time-major stack) seen as `[T, N, ...]`.
    public static func unstacked(_ output: Tensor, steps: Int) -> Tensor {
        precondition(steps >= 1 && output.rank >= 1 && output.shape[0] % steps == 0, "\(output.shape) is not \(steps) stacked steps")
        return output.reshaped([steps, output.shape[0] / steps] + output.shape.dropFirst())
    }

    /// Spike counts `[N, C]` of output spikes `[T, N, C]` (summed over steps).
    public static func spikeCounts(_ spikes: Tensor) -> Tensor {
        precondition(spikes.rank >= 3, "output spikes must be [T, N, C], got \(spikes.shape)")
        let steps = spikes.shape[0], n = spikes.shape[1], block = spikes.count / max(1, steps)
        var counts = Tensor(shape: [n, block / max(1, n)])
        spikes.storage.withUnsafeBufferPointer { ps in
            counts.storage.withUnsafeMutableBufferPointer { pc in
                for t in 0..<steps {
                    for j in 0..<block { pc[j] += ps[t * block + j] }
                }
            }
        }
        return counts
    }

    /// Predictions from output spikes `[T, N, C]`: the argmax of the spike counts (ties go to the
    /// lowest class).
    public static func predictions(spikes: Tensor) -> [Int] {
        spikeCounts(spikes).argmaxRows()
    }

    /// A reverse-time recurrence over a stacked tensor of `steps` blocks: `body(t, j, i, &carry)`
    /// for t = T-1 ... 0 and every element j of a block (`i = t * block + j`), with one carry per
    /// element handed from step t to step t-1 (zero before the last step).
    @inline(__always)
    static func backInTime(steps: Int, block: Int, _ body: (_ t: Int, _ j: Int, _ i: Int, _ carry: inout Float) -> Void) {
        var carry = [Float](repeating: 0, count: block)
        carry.withUnsafeMutableBufferPointer { pc in
            for t in (0..<steps).reversed() {
                let base = t * block
                for j in 0..<block { body(t, j, base + j, &pc[j]) }
            }
        }
    }

    /// `x [N, ...]` repeated `steps` times along the batch dimension: `[T * N, ...]`.
    static func repeated(_ x: Tensor, _ steps: Int) -> Tensor {
        if steps == 1 { return x }
        var storage = [Float]()
        storage.reserveCapacity(x.count * steps)
        for _ in 0..<steps { storage.append(contentsOf: x.storage) }
        return Tensor(shape: [x.shape[0] * steps] + x.shape.dropFirst(), storage: storage)
    }

    /// `sum_t x[t]` of a stacked `[T * N, ...]` tensor: `[N, ...]`.
    static func sumOverSteps(_ x: Tensor, _ steps: Int) -> Tensor {
        if steps == 1 { return x }
        let block = x.count / steps
        var out = Tensor(shape: [x.shape[0] / steps] + x.shape.dropFirst())
        x.storage.withUnsafeBufferPointer { px in
            out.storage.withUnsafeMutableBufferPointer { po in
                for t in 0..<steps {
                    for j in 0..<block { po[j] += px[t * block + j] }
                }
            }
        }
        return out
    }

    /// Divides every step of a stacked tensor by its max-abs value (all-zero steps untouched).
    static func normalizePerStep(_ x: inout Tensor, _ steps: Int) {
        let block = x.count / steps
        x.storage.withUnsafeMutableBufferPointer { p in
            for t in 0..<steps {
                var m: Float = 0
                for j in 0..<block { m = max(m, abs(p[t * block + j])) }
                guard m > 0 && m.isFinite else { continue }
                let scale = 1 / m
                for j in 0..<block { p[t * block + j] *= scale }
            }
        }
    }
}

extension Trace {
    /// Firing rate of every spiking layer (mean spikes per neuron per step, over the batch),
    /// depth first.
    public var firingRates: [Float] {
        var rates: [Float] = []
        for index in outputs.indices {
            if spiking[index] != nil {
                let s = outputs[index]
                rates.append(s.count == 0 ? 0 : s.sum() / Float(s.count))
            }
            for child in children[index] ?? [] { rates += child.firingRates }
        }
        return rates
    }
}
