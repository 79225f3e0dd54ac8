import LFPTensor

/// The paper's spiking models (appendix A.6.3), built with PyTorch's default initialisation
/// from a seed. Every synapse is followed by a LIF neuron with the given `beta` and threshold.
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
                            reset: LIFNeuron.Reset = .subtract, seed: UInt64) throws(ModelError) -> SpikingNetwork {
        guard classes >= 1, !inputShape.isEmpty, inputShape.allSatisfy({ $0 > 0 }) else {
            throw .invalidConfiguration("\(name) needs a non-empty input shape and at least one class, got \(inputShape) and \(classes)")
        }
        var rng = SeededRandom(seed: seed)
        let neuron = LIFNeuron(beta: beta, threshold: threshold, reset: reset)
        let synapses: Sequential
        switch name.lowercased() {
        case "snn-mlp":
            let features = inputShape.reduce(1, *)
            synapses = Sequential([.flatten] + denseLayers([features, 1000, 1000, classes], rng: &rng))
        case "snn-lenet":
            guard inputShape.count == 3 else {
                throw .invalidConfiguration("snn-lenet needs image input [C, H, W], got \(inputShape)")
            }
            let c = inputShape[0], h = inputShape[1], w = inputShape[2]
            let fh = ((h - 4) / 2 - 4) / 2, fw = ((w - 4) / 2 - 4) / 2
            guard h >= 16, w >= 16, fh > 0, fw > 0 else {
                throw .invalidConfiguration("snn-lenet needs images of at least 16x16, got \(h)x\(w)")
            }
            synapses = Sequential([
                .conv2d(Conv2d(inChannels: c, outChannels: 12, kernelSize: (5, 5), rng: &rng)),
                .maxPool2d(MaxPool2d(kernel: 2)),
                .conv2d(Conv2d(inChannels: 12, outChannels: 64, kernelSize: (5, 5), rng: &rng)),
                .maxPool2d(MaxPool2d(kernel: 2)),
                .flatten,
                .linear(Linear(inFeatures: 64 * fh * fw, outFeatures: classes, rng: &rng)),
            ])
        default:
            throw .invalidConfiguration("unknown spiking model '\(name)'; valid: \(names.joined(separator: ", "))")
        }
        let network = try SpikingNetwork(synapses: synapses, neuron: neuron)
        _ = try network.outputShape(input: [1] + inputShape)
        return network
    }

    /// A spiking MLP with the given layer sizes (`[in, hidden..., classes]`): Flatten, then
    /// Linear + LIF for each consecutive pair, PyTorch's default initialisation from `seed`.
    public static func mlp(_ sizes: [Int], neuron: LIFNeuron = LIFNeuron(), seed: UInt64) throws(ModelError) -> SpikingNetwork {
        guard sizes.count >= 2, sizes.allSatisfy({ $0 > 0 }) else {
            throw .invalidConfiguration("a spiking MLP needs at least two positive layer sizes, got \(sizes)")
        }
        var rng = SeededRandom(seed: seed)
        return try SpikingNetwork(synapses: Sequential([.flatten] + denseLayers(sizes, rng: &rng)), neuron: neuron)
    }

    private static func denseLayers(_ sizes: [Int], rng: inout SeededRandom) -> [Layer] {
        (0..<(sizes.count - 1)).map { .linear(Linear(inFeatures: sizes[$0], outFeatures: sizes[$0 + 1], rng: &rng)) }
    }
}
