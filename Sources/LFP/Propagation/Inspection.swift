import LFPTensor

/// One forward and one backward pass of a model on a batch, every signal returned by name:
/// the library side of `lfp propagate` (and the interface conformance fixtures are compared
/// through).
public enum Inspection {
    /// Which backward pass to run.
    public enum Method: String, Sendable, CaseIterable {
        /// LFP: `feedback.<parameter>` (summed over the batch, the reference's convention).
        case lfp
        /// Back-propagation of mean softmax cross-entropy: `gradient.<parameter>`.
        case gradient
    }

    /// Runs `model` on `input` and propagates back.
    /// - Parameters:
    ///   - training: BatchNorm on the batch's statistics (and dropout active); the running
    ///     statistics after the batch are returned as `running.<buffer>`.
    /// - Returns: `logits`, then `reward` (the feedback at the logits, LFP) or `loss` (gradient),
    ///   `feedback.<name>` or `gradient.<name>` for every parameter, and `running.<name>` for
    ///   every buffer in training mode.
    public static func propagate(model: Sequential, input: Tensor, labels: [Int], method: Method, composite: Composite,
                                 feedback: FeedbackFunction, training: Bool, options: PropagationOptions = .init(),
                                 seed: UInt64 = 0) throws(LFPError) -> [(name: String, value: Tensor)] {
        var rng = SeededRandom(seed: seed)
        let trace = model.trace(input, training: training, rng: &rng)
        let logits = trace.output
        var result: [(name: String, value: Tensor)] = [("logits", logits)]
        switch method {
        case .lfp:
            let reward = feedback(logits: logits, labels: labels)
            let signals = try FeedbackPropagator(model: model, composite: composite, options: options).propagate(model: model, trace: trace, feedback: reward)
            result.append(("reward", reward))
            result += model.parameterNames.compactMap { name in signals.parameters[name].map { ("feedback." + name, $0) } }
        case .gradient:
            let (loss, g) = Loss.softmaxCrossEntropy.evaluate(logits: logits, labels: labels, reduction: .mean)
            let signals = Backpropagation.gradients(model: model, trace: trace, outputGradient: g)
            result.append(("loss", Tensor(shape: [], storage: [loss])))
            result += model.parameterNames.compactMap { name in signals.parameters[name].map { ("gradient." + name, $0) } }
        }
        if training {
            var moved = model
            moved.absorbStatistics(from: trace)
            result += moved.namedBuffers.map { ("running." + $0.name, $0.value) }
        }
        return result
    }
}
