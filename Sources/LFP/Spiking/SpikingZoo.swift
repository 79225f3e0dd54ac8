import LFPTensor

/// The paper's spiking models (appendix A.6.3), built with PyTorch's default initialisation
/// from a seed: ``Sequential`` models whose synapses are ``SpikingLayer``s (each followed by its
/// LIF neuron with the given `beta` and threshold). Parameter names count the layers of the
/// reference's module list: `layers.1.weight` is the MLP's first synapse.
public enum SpikingZoo {
    /// Names accepted by ``make(_:inputShape:classes:beta:threshold:reset:seed:)``.
    public static let names = ["snn-mlp", "snn-lenet"]

    /// Builds a spiking model by name:
    /// - `snn-mlp`: Flatten, Linear in-1000, LIF, Linear 1000-1000, LIF, Linear 1000-C, LIF.
    /// - `snn-lenet`: Conv 12 k5, LIF, MaxPool 2, Conv 64 k5, LIF, MaxPool 2, Flatten,
    ///   Linear -> C, LIF (the reference's `LifCNN`; pooling acts on spikes). Needs `[C, H, W]`
    ///   input of at least 16x16.
    /// - Throws: ``ModelError/invalidConfiguration(_:)`` for an unknown name (listing the valid
    ///   ones) or an input shape the model does not fit.
    public static func make(_ name: String, inputShape: [Int], classes: Int, beta: Float = 0.9, threshold: Float = 1,
                            reset: LIFNeuron.Reset = .subtract, seed: UInt64) throws(ModelError) -> Sequential {
        guard classes >= 1, !inputShape.isEmpty, inputShape.allSatisfy({ $0 > 0 }) else {
            throw .invalidConfiguration("\(name) needs a non-empty input shape and at least one class, got \(inputShape) and \(classes)")
        }
        var rng = SeededRandom(seed: seed)
        let neuron = LIFNeuron(beta: beta, threshold: threshold, reset: reset)
        let model: Sequential
        switch name.lowercased() {
        case "snn-mlp":
            let features = inputShape.reduce(1, *)
            model = Sequential([.flatten] + (try denseLayers([features, 1000, 1000, classes], neuron: neuron, rng: &rng)))
        case "snn-lenet":
            guard inputShape.count == 3 else {
                throw .invalidConfiguration("snn-lenet needs image input [C, H, W], got \(inputShape)")
            }
            let c = inputShape[0], h = inputShape[1], w = inputShape[2]
            let fh = ((h - 4) / 2 - 4) / 2, fw = ((w - 4) / 2 - 4) / 2
            guard h >= 16, w >= 16, fh > 0, fw > 0 else {
                throw .invalidConfiguration("snn-lenet needs images of at least 16x16, got \(h)x\(w)")
            }
            model = Sequential([
                .spiking(try SpikingLayer(.conv2d(Conv2d(inChannels: c, outChannels: 12, kernelSize: (5, 5), rng: &rng)), neuron: neuron)),
                .maxPool2d(MaxPool2d(kernel: 2)),
                .spiking(try SpikingLayer(.conv2d(Conv2d(inChannels: 12, outChannels: 64, kernelSize: (5, 5), rng: &rng)), neuron: neuron)),
                .maxPool2d(MaxPool2d(kernel: 2)),
                .flatten,
                .spiking(try SpikingLayer(.linear(Linear(inFeatures: 64 * fh * fw, outFeatures: classes, rng: &rng)), neuron: neuron)),
            ])
        default:
            throw .invalidConfiguration("unknown spiking model '\(name)'; valid: \(names.joined(separator: ", "))")
        }
        _ = try model.outputShape(input: [1] + inputShape)
        return model
    }

    /// A spiking MLP with the given layer sizes (`[in, hidden..., classes]`): Flatten, then
    /// Linear + LIF for each consecutive pair, PyTorch's default initialisation from `seed`.
    public static func mlp(_ sizes: [Int], neuron: LIFNeuron = LIFNeuron(), seed: UInt64) throws(ModelError) -> Sequential {
        guard sizes.count >= 2, sizes.allSatisfy({ $0 > 0 }) else {
            throw .invalidConfiguration("a spiking MLP needs at least two positive layer sizes, got \(sizes)")
        }
        var rng = SeededRandom(seed: seed)
        return Sequential([.flatten] + (try denseLayers(sizes, neuron: neuron, rng: &rng)))
    }

    private static func denseLayers(_ sizes: [Int], neuron: LIFNeuron, rng: inout SeededRandom) throws(ModelError) -> [Layer] {
        var layers: [Layer] = []
        for i in 0..<(sizes.count - 1) {
            layers.append(.spiking(try SpikingLayer(.linear(Linear(inFeatures: sizes[i], outFeatures: sizes[i + 1], rng: &rng)), neuron: neuron)))
        }
        return layers
    }
}
