import LFPTensor

/// The result of a backward pass: one tensor per parameter (keyed by dotted name) and,
/// when requested, the signal at the model's input.
public struct ParameterSignals: Sendable {
    /// Gradients or feedback by parameter name (`layers.0.weight`).
    public var parameters: [String: Tensor]
    /// The signal arriving at the model input (input-shaped), when requested.
    public var input: Tensor?
    /// The signal arriving at each layer's output, when requested (index = layer).
    public var layerOutputs: [Tensor]?
    /// Parameters whose signal was found finite while it was computed (the trainer skips
    /// re-reading them for its NaN/Inf check).
    public var checkedFinite: Set<String> = []

    public init(parameters: [String: Tensor], input: Tensor? = nil, layerOutputs: [Tensor]? = nil, checkedFinite: Set<String> = []) {
        self.parameters = parameters
        self.input = input
        self.layerOutputs = layerOutputs
        self.checkedFinite = checkedFinite
    }
}

/// Gradient back-propagation: the baseline LFP is compared with, and the oracle it is tested against.
public enum Backpropagation {
    /// Back-propagates `outputGradient` (dL/dlogits) through the traced model.
    /// - Parameters:
    ///   - computeInputGradient: also compute dL/dinput (skipped by default: the first layer
    ///     needs no input map).
    ///   - surrogate: the derivative spiking layers use for their spike function (back-propagation
    ///     through time, LFP-MATH.md section 6); `.heaviside` is the true, zero derivative.
    public static func gradients(model: Sequential, trace: Trace, outputGradient: Tensor,
                                 computeInputGradient: Bool = false, surrogate: Surrogate = .atan()) -> ParameterSignals {
        var grads: [String: Tensor] = [:]
        let g = backward(model, trace: trace, gradient: outputGradient, prefix: "", computeInput: computeInputGradient,
                         surrogate: surrogate, into: &grads)
        return ParameterSignals(parameters: grads, input: computeInputGradient ? g : nil, layerOutputs: nil)
    }

    /// Back-propagates `g` through one sequence, adding parameter gradients (named under
    /// `prefix`) to `grads`; returns the gradient at the sequence's input when `computeInput`
    /// (otherwise whatever signal reached the lowest layer that needed one).
    static func backward(_ model: Sequential, trace: Trace, gradient: Tensor, prefix: String, computeInput: Bool,
                         surrogate: Surrogate, into grads: inout [String: Tensor]) -> Tensor {
        precondition(trace.outputs.count == model.layers.count, "trace does not belong to this model")
        var g = gradient
        let lowest = model.firstParameterLayer ?? model.layers.count
        for index in model.layers.indices.reversed() {
            let layer = model.layers[index]
            let input = trace.inputs[index]
            if index < lowest && !computeInput { break }  // nothing below needs the signal
            let needInput = index > lowest || computeInput
            let name = Sequential.join(prefix, model.name(of: index))
            switch layer {
            case .linear, .conv2d, .avgPool2d, .adaptiveAvgPool2d:
                let map = AffineMap(layer, inputShape: input.shape)!
                if let dw = map.weightMap(g, input: input) { grads[Sequential.join(name, "weight")] = dw }
                if map.bias != nil { grads[Sequential.join(name, "bias")] = map.biasMap(g) }
                if needInput { g = map.transpose(g, .plain) }
            case .batchNorm(let b):
                let (dx, dGamma, dBeta) = b.backward(g, input: input, trace.normalization[index]!, needInput: needInput)
                grads[Sequential.join(name, "weight")] = dGamma
                grads[Sequential.join(name, "bias")] = dBeta
                if let dx { g = dx }
            case .sequential(let s):
                g = backward(s, trace: trace.children[index]![0], gradient: g, prefix: name, computeInput: needInput, surrogate: surrogate, into: &grads)
            case .residual(let r):
                let children = trace.children[index]!
                if let a = r.activation { a.multiplyByDerivative(&g, input: trace.residualSums[index]!, output: trace.outputs[index]) }
                let fromMain = backward(r.main, trace: children[0], gradient: g, prefix: name, computeInput: needInput, surrogate: surrogate, into: &grads)
                let fromShortcut = r.shortcut.map {
                    backward($0, trace: children[1], gradient: g, prefix: name, computeInput: needInput, surrogate: surrogate, into: &grads)
                } ?? g
                if needInput { g = fromMain + fromShortcut }
            case .layerNorm(let l):
                let (dx, dGamma, dBeta) = l.backward(g, input: input, trace.layerNormalization[index]!, needInput: needInput)
                grads[Sequential.join(name, "weight")] = dGamma
                grads[Sequential.join(name, "bias")] = dBeta
                if let dx { g = dx }
            case .attention(let a):
                let (dx, params) = a.backward(g, input: input, record: trace.attention[index]!, needInput: needInput)
                for (local, value) in params { grads[Sequential.join(name, local)] = value }
                if let dx { g = dx }
            case .tokens(let t):
                let (dx, dCls, dPos) = t.backward(g, input: input, needInput: needInput)
                grads[Sequential.join(name, "cls_token")] = dCls
                grads[Sequential.join(name, "pos_embed")] = dPos
                if let dx { g = dx }
            case .classToken:
                g = TokenEmbedding.atFirstToken(g, shape: input.shape)
            case .maxPool2d(let p):
                if needInput {
                    g = Pooling.maxBackward(g, argmax: trace.maxPoolArgmax[index]!, inputShape: input.shape,
                                            geometry: p.geometry(input: input.shape))
                }
            case .flatten:
                g.reshape(input.shape)
            case .dropout(let p):
                if let mask = trace.dropoutMasks[index] {
                    let scale = 1 / (1 - p)
                    g.storage.withUnsafeMutableBufferPointer { pg in
                        for i in pg.indices { pg[i] *= mask[i] * scale }
                    }
                }
            case .gaussianNoise:
                break  // additive noise: the gradient passes unchanged
            case .activation(let a):
                if needInput { a.multiplyByDerivative(&g, input: trace.inputs[index], output: trace.outputs[index]) }
            case .spiking(let s):
                // Through the neurons back in time (surrogate derivative), then the synapse's maps.
                let record = trace.spiking[index]!
                let dI = s.currentGradient(g, record: record, steps: trace.timeSteps, surrogate: surrogate)
                let (dw, db, dx) = s.synapseMaps(dI, input: input, record: record, steps: trace.timeSteps, needInput: needInput)
                grads[Sequential.join(name, "weight")] = dw
                if let db { grads[Sequential.join(name, "bias")] = db }
                if let dx { g = dx }
            }
        }
        return g
    }
}
