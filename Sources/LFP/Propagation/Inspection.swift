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

    /// Runs a spiking `model` (``Spiking/isSpiking(_:)``) on `input` for `steps` time steps
    /// (constant encoding, training mode, as ``SpikingTrainer`` does) and propagates back through
    /// time with `method`, the rate-coded spiking feedback function and the feedback summed over
    /// the batch.
    /// - Returns: `spikes` (`[T, N, C]`), then `reward` (the feedback at the output spikes, LFP)
    ///   or `loss` (gradient descent), and `feedback.<name>` or `gradient.<name>` for every parameter.
    ///   `labels` must be one class index of the model's output per sample (a precondition, as in
    ///   ``propagate(model:input:labels:method:composite:feedback:training:options:seed:)``).
    /// - Throws: ``ModelError/invalidConfiguration(_:)`` when the model has no spiking layer or
    ///   `steps` is below 1; ``NumericalFault`` when the feedback at the output spikes is not finite.
    public static func propagateSpiking(model: Sequential, input: Tensor, labels: [Int], method: SpikingMethod, steps: Int,
                                        seed: UInt64 = 0) throws -> [(name: String, value: Tensor)] {
        guard Spiking.isSpiking(model) else { throw ModelError.invalidConfiguration("a spiking pass needs a model with spiking layers") }
        guard steps >= 1 else { throw ModelError.invalidConfiguration("a spiking network needs at least one time step, got \(steps)") }
        var rng = SeededRandom(seed: seed)
        let pass = try Spiking.backward(model: model, input: input, labels: labels, method: method, steps: steps, rng: &rng)
        var result: [(name: String, value: Tensor)] = [("spikes", pass.spikes)]
        let prefix: String
        if method.rule != nil {
            result.append(("reward", pass.outputSignal))
            prefix = "feedback."
        } else {
            result.append(("loss", Tensor(shape: [], storage: [pass.objective])))
            prefix = "gradient."
        }
        result += model.parameterNames.compactMap { name in pass.parameters[name].map { (prefix + name, $0) } }
        return result
    }
}
