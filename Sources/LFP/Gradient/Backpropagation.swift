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
    /// - Parameter computeInputGradient: also compute dL/dinput (skipped by default: the
    ///   first layer needs no input map).
    public static func gradients(model: Sequential, trace: Trace, outputGradient: Tensor,
                                 computeInputGradient: Bool = false) -> ParameterSignals {
        precondition(trace.outputs.count == model.layers.count, "trace does not belong to this model")
        var grads: [String: Tensor] = [:]
        var g = outputGradient
        let lowest = model.firstParameterLayer ?? model.layers.count
        for index in model.layers.indices.reversed() {
            let layer = model.layers[index]
            let input = trace.inputs[index]
            if index < lowest && !computeInputGradient { break }  // nothing below needs the signal
            let needInput = index > lowest || computeInputGradient
            switch layer {
            case .linear, .conv2d, .avgPool2d:
                let map = AffineMap(layer, inputShape: input.shape)!
                if let dw = map.weightMap(g, input: input) {
                    grads[Sequential.parameterName(layer: index, "weight")] = dw
                }
                if map.bias != nil { grads[Sequential.parameterName(layer: index, "bias")] = map.biasMap(g) }
                if needInput { g = map.transpose(g, .plain) }
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
            }
        }
        return ParameterSignals(parameters: grads, input: computeInputGradient ? g : nil, layerOutputs: nil)
    }
}
