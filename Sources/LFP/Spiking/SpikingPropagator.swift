import LFPTensor

/// Layer-wise Feedback Propagation through time for a ``SpikingNetwork`` (LFP-MATH.md
/// section 6), as the reference implements it.
///
/// For every spiking layer and step, the feedback `R_spikes` arriving at the spikes `S[t]` is
/// feedback on the membrane (no derivative of `H` is taken). With the temporal carry `C[t]`
/// from step t+1 (`C[T] = 0`):
///
///     R      = R_spikes + C[t]
///     D      = |U[t-1]| + |I[t] - (1 - beta) U[t-1]|          (LFP-epsilon; U[0] = 0)
///     c      = R / (D + eps)
///     C[t-1] = beta U[t-1] c
///     F(W)  += |W| * (c^T s_in[t]),   F(b) += |b| * sum c        (summed over batch and time)
///     R_spikes(layer below, t) = s_in[t] * (c W)                 (transposed conv for Conv2d)
///
/// then through max-pooling to the winners and through flatten by reshape.
///
/// **(choice)** The reference evaluates this as a strict reverse-time, top-down loop. Because
/// the layers only feed forward, the same numbers are computed here layer by layer: for each
/// synapse from the top, the elementwise recurrence over t = T..1 gives every `c`, and then one
/// kernel call over the time-major stack `[T * N, ...]` gives the parameter feedback and the
/// feedback for the layer below at every step.
///
/// Rules:
/// - `.epsilon(eps)` (the default) and `.zero` (`c = 0` where `D = 0`) are the formulas above.
/// - `.zPlusZMinus(eps)` **(choice)**: the project's z+z- rule (LFP-MATH.md section 2) applied to
///   the pre-reset membrane `z = beta U[t-1] + I[t]`, whose contributions are the decayed
///   membrane `beta U[t-1]`, the synaptic terms `s_i w_ji` and the bias:
///   `c = sign(z) R / (beta |U[t-1]| + sum_i |s_i w_ji| + |b_j| + eps)`, with the same carry,
///   parameter and input maps. So `|C[t-1]| + sum_i |f_ij| <= |R|`: feedback never grows. (The
///   reference's own z+z- gives unsigned shares; LFP-MATH.md explains why we do not copy it.)
/// - `.alphaBeta` is not defined for spiking layers and is rejected.
///
/// **(choice)** With `LIFNeuron.Reset.zero`, `D` is computed from the pre-reset membrane as
/// above (the reference's "reverse reset"), and the carry is `beta (1 - r[t]) U[t-1] c`: no
/// feedback flows through a membrane that the reset zeroed.
public struct SpikingPropagator: Sendable {
    /// The rule (`.epsilon`, `.zero` or `.zPlusZMinus`).
    public let rule: Rule
    /// Divide the feedback sent from a synapse to the layer below by its max-abs value, per
    /// step (over the batch), skipping all-zero steps (LFP-MATH.md section 5). **(choice)**
    /// The temporal carry is not normalised.
    public var backwardNormalization: Bool
    /// Sum parameter feedback over the batch (and time), or divide the sum by the batch size.
    public var reduction: Reduction

    /// - Throws: ``LFPError/incompatibleRule(_:)`` for alpha-beta and scaled-epsilon.
    public init(rule: Rule = .epsilon, backwardNormalization: Bool = false, reduction: Reduction = .sum) throws(LFPError) {
        switch rule {
        case .alphaBeta: throw .incompatibleRule("alpha-beta is not defined for spiking layers; use epsilon, zero or zplus-zminus")
        case .scaledEpsilon, .thresholdEpsilon:
            throw .incompatibleRule("\(rule) is not defined for spiking layers; use epsilon, zero or zplus-zminus")
        default: break
        }
        self.rule = rule
        self.backwardNormalization = backwardNormalization
        self.reduction = reduction
    }

    /// Propagates `feedback` at the output spikes (`[T, N, C]`, e.g. from
    /// ``SpikingFeedbackFunction/rateCoded``) down to every parameter.
    /// - Returns: parameter feedback by name (`layers.<index>.weight`), summed over batch and
    ///   time (or batch-averaged with `.mean`).
    public func propagate(network: SpikingNetwork, trace: SpikingTrace, feedback: Tensor) -> ParameterSignals {
        let rule = rule
        let steps = trace.steps
        var parameters = TemporalBackward.run(network: network, trace: trace, top: feedback, lfp: true,
                                              normalize: backwardNormalization) { index, k, map, f in
            let neuron = network.neurons[k]
            let current = trace.currents[k], membrane = trace.membranes[k]
            let block = current.count / steps
            // z+z-: the magnitudes of the synaptic contributions, sum_i |s_i w_ji| + |b_j|.
            var magnitudes = Tensor(shape: [0])
            if case .zPlusZMinus = rule {
                magnitudes = map.forward(trace.inputs[index].magnitude, .magnitude)
                if let b = map.bias { magnitudes = Rule.addBias(magnitudes, b.magnitude) }
            }
            let magnitudeStride = magnitudes.count == block ? 0 : block  // static input: same every step
            var c = Tensor(shape: current.shape)
            var carry = [Float](repeating: 0, count: block)
            let beta = neuron.beta
            f.storage.withUnsafeBufferPointer { pf in
                current.storage.withUnsafeBufferPointer { pi in
                    membrane.storage.withUnsafeBufferPointer { pu in
                        magnitudes.storage.withUnsafeBufferPointer { pm in
                            c.storage.withUnsafeMutableBufferPointer { pc in
                                for t in (0..<steps).reversed() {
                                    let base = t * block
                                    for j in 0..<block {
                                        let previous: Float = t > 0 ? pu[base - block + j] : 0
                                        let r = pf[base + j] + carry[j]
                                        let value: Float
                                        switch rule {
                                        case .epsilon(let eps):
                                            let d = abs(previous) + abs(pi[base + j] - (1 - beta) * previous)
                                            value = r / (d + eps)
                                        case .zero:
                                            let d = abs(previous) + abs(pi[base + j] - (1 - beta) * previous)
                                            value = d == 0 ? 0 : r / d
                                        case .zPlusZMinus(let eps):
                                            let z = beta * previous + pi[base + j]
                                            let d = beta * abs(previous) + pm[t * magnitudeStride + j] + eps
                                            value = z >= 0 ? r / d : -r / d
                                        case .alphaBeta, .scaledEpsilon, .thresholdEpsilon:
                                            preconditionFailure("alpha-beta, scaled-epsilon and threshold-epsilon are rejected at init")
                                        }
                                        pc[base + j] = value
                                        carry[j] = neuron.effectiveDecay(previous: previous) * previous * value
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return c
        }
        if reduction == .mean && trace.batch > 0 {
            let scale = 1 / Float(trace.batch)
            for name in parameters.keys { parameters[name]!.scale(by: scale) }
        }
        return ParameterSignals(parameters: parameters, input: nil, layerOutputs: nil)
    }
}

/// The walk shared by LFP through time and back-propagation through time: top-down over the
/// layers, each synapse turning the signal at its spikes into a signal `c` at its currents
/// (all steps at once), then the stacked weight, bias and input maps.
enum TemporalBackward {
    /// - Parameters:
    ///   - top: the signal at the output spikes, `[T, N, ...]` (or already stacked).
    ///   - lfp: multiply parameter maps by `|W|`, `|b|` and input maps by the input (LFP);
    ///     otherwise plain gradient maps.
    ///   - normalize: divide the signal sent below each synapse by its max-abs per step.
    ///   - membraneSignal: `(layer index, neuron index, affine map, signal at the spikes)` ->
    ///     signal `c` at the currents, stacked like `trace.currents[k]`.
    static func run(network: SpikingNetwork, trace: SpikingTrace, top: Tensor, lfp: Bool, normalize: Bool,
                    membraneSignal: (Int, Int, AffineMap, Tensor) -> Tensor) -> [String: Tensor] {
        let layers = network.synapses.layers
        let synapseIndices = network.synapseIndices
        guard let first = synapseIndices.first, let outputSpikes = trace.spikes.last else { return [:] }
        precondition(trace.inputs.count == layers.count && trace.spikes.count == synapseIndices.count,
                     "trace does not belong to this network")
        precondition(top.count == outputSpikes.count, "signal \(top.shape) does not match the output spikes \(trace.output.shape)")
        let steps = trace.steps
        var result: [String: Tensor] = [:]
        var f = top.reshaped(outputSpikes.shape)
        var k = synapseIndices.count - 1
        for index in layers.indices.reversed() {
            if index < first { break }  // nothing below the first synapse needs a signal
            let layer = layers[index]
            let a = trace.inputs[index]
            switch layer {
            case .linear, .conv2d:
                let map = AffineMap(layer, inputShape: a.shape)!
                let c = membraneSignal(index, k, map, f)
                // Constant encoding: sum_t c[t]^T x = (sum_t c[t])^T x for the static input.
                let s = index < trace.staticLayers ? Self.sumOverSteps(c, steps) : c
                if let w = map.weight, var fw = map.weightMap(s, input: a) {
                    if lfp { fw.formZipMap(w) { $0 * abs($1) } }
                    result[Sequential.parameterName(layer: index, "weight")] = fw
                }
                if let b = map.bias {
                    var fb = map.biasMap(c)
                    if lfp { fb.formZipMap(b) { $0 * abs($1) } }
                    result[Sequential.parameterName(layer: index, "bias")] = fb
                }
                if index > first {
                    var g = map.transpose(c, .plain)
                    if lfp { g.formZipMap(a, *) }
                    if normalize { Self.normalizePerStep(&g, steps) }
                    f = g
                }
                k -= 1
            case .maxPool2d(let p):
                f = Pooling.maxBackward(f, argmax: trace.maxPoolArgmax[index]!, inputShape: a.shape,
                                        geometry: p.geometry(input: a.shape))
            case .flatten:
                f.reshape(a.shape)
            default:
                preconditionFailure("layer \(index): \(layer) is not allowed in a spiking network")
            }
        }
        return result
    }

    /// `sum_t x[t]` of a stacked `[T * N, ...]` tensor: `[N, ...]`.
    static func sumOverSteps(_ x: Tensor, _ steps: Int) -> Tensor {
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
