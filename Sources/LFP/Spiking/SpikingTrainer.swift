import LFPTensor

/// How a spiking network is trained.
public enum SpikingMethod: Sendable, Equatable, CustomStringConvertible {
    /// LFP-epsilon through time (``SpikingLayer``s in ``FeedbackPropagator``) with the spiking feedback function.
    case lfp(epsilon: Float = Rule.defaultEpsilon)
    /// LFP-z+z- through time (rule `.zPlusZMinus` on every spiking layer).
    case lfpZPlusZMinus(epsilon: Float = Rule.defaultEpsilon)
    /// Back-propagation through time with a surrogate spike derivative and a spike loss.
    case gradient(surrogate: Surrogate = .atan(), loss: SpikingLoss = .rateCrossEntropy)

    public var description: String {
        switch self {
        case .lfp(let e): "lfp-epsilon(\(e))"
        case .lfpZPlusZMinus(let e): "lfp-zplus-zminus(\(e))"
        case .gradient(let s, let l): "gradient(\(s), \(l.rawValue))"
        }
    }

    /// The LFP rule of an LFP method (nil for gradient descent).
    public var rule: Rule? {
        switch self {
        case .lfp(let e): .epsilon(e)
        case .lfpZPlusZMinus(let e): .zPlusZMinus(epsilon: e)
        case .gradient: nil
        }
    }
}

/// One training step for a spiking network (a ``Sequential`` with ``SpikingLayer``s), LFP or
/// gradient: forward unrolled over `steps` time steps (constant encoding), signal at the output
/// spikes (the spiking feedback function, or a spike loss's gradient), backward through time by
/// the ordinary engines (``FeedbackPropagator``, ``Backpropagation``), optional clipping,
/// optimizer update. Under LFP the optimizer receives `-feedback` (LFP-MATH.md section 3), as
/// ``Trainer`` does.
public struct SpikingTrainer<O: Optimizer>: StepTrainer {
    public var model: Sequential
    public var optimizer: O
    public var method: SpikingMethod
    /// Number of time steps `T` per sample.
    public var steps: Int
    /// The feedback function at the output spikes (LFP only).
    public var feedback: SpikingFeedbackFunction
    /// Divide the feedback sent below each spiking layer by its max-abs per step (LFP only; the
    /// paper's SNN experiments use it). **(choice)** The temporal carry is not normalised.
    public var backwardNormalization: Bool
    /// Sum LFP parameter feedback over the batch (the reference) or average it.
    public var reduction: Reduction
    /// Unit-wise adaptive clipping of the directions (nil: off). Applied before `clipNorm`.
    public var adaptiveClipping: AdaptiveGradientClipping?
    /// Rescale the directions so their global L2 norm is at most this (nil: no clipping).
    public var clipNorm: Float?

    /// - Throws: ``ModelError/invalidConfiguration(_:)`` when the model has no spiking layer
    ///   (its output would not be spikes over time).
    public init(model: Sequential, optimizer: O, method: SpikingMethod = .lfp(), steps: Int = 15,
                feedback: SpikingFeedbackFunction = .rateCoded, backwardNormalization: Bool = false,
                reduction: Reduction = .sum, adaptiveClipping: AdaptiveGradientClipping? = nil, clipNorm: Float? = nil) throws(ModelError) {
        guard Spiking.isSpiking(model) else {
            throw .invalidConfiguration("a spiking trainer needs a model with spiking layers (Layer.spiking)")
        }
        guard steps >= 1 else { throw .invalidConfiguration("a spiking network needs at least one time step, got \(steps)") }
        self.model = model
        self.optimizer = optimizer
        self.method = method
        self.steps = steps
        self.feedback = feedback
        self.backwardNormalization = backwardNormalization
        self.reduction = reduction
        self.adaptiveClipping = adaptiveClipping
        self.clipNorm = clipNorm
    }

    /// The forward pass over `steps` steps.
    public func trace(_ input: Tensor, rng: inout SeededRandom) -> Trace {
        model.trace(input, training: true, rng: &rng, timeSteps: steps)
    }

    /// The parameter directions (gradient, or `-feedback`) for a batch, without updating.
    /// The result's objective is the mean feedback at the true class (over steps and batch)
    /// under LFP, the loss under gradient descent.
    public func directions(input: Tensor, labels: [Int], rng: inout SeededRandom) throws(NumericalFault) -> (directions: [String: Tensor], result: StepResult) {
        // The optimizer descends along -feedback: the rules' epilogues negate it.
        let pass = try Spiking.backward(model: model, input: input, labels: labels, method: method, steps: steps, feedback: feedback,
                                        backwardNormalization: backwardNormalization, reduction: reduction, parameterScale: -1, rng: &rng)
        for name in pass.parameters.keys.sorted() {
            let d = pass.parameters[name]!
            if let bad = d.firstNonFiniteIndex {
                throw NumericalFault(location: method.rule != nil ? "feedback of \(name)" : "gradient of \(name)",
                                     value: d.storage[bad])
            }
        }
        let predictions = Spiking.predictions(spikes: pass.spikes)
        let correct = zip(predictions, labels).filter { $0 == $1 }.count
        return (pass.parameters, StepResult(objective: pass.objective, correct: correct, count: labels.count))
    }

    /// `directions(input:labels:rng:)` for models without randomness in training (no dropout).
    public func directions(input: Tensor, labels: [Int]) throws(NumericalFault) -> (directions: [String: Tensor], result: StepResult) {
        var rng = SeededRandom(seed: 0)
        return try directions(input: input, labels: labels, rng: &rng)
    }

    public var parameterModel: Sequential { model }

    public var directionsAreBatchMeans: Bool {
        switch method {
        case .gradient: true
        case .lfp, .lfpZPlusZMinus: reduction == .mean
        }
    }

    /// One training step (`rng` draws dropout masks where the model has any).
    public mutating func step(input: Tensor, labels: [Int], rng: inout SeededRandom) throws(NumericalFault) -> StepResult {
        let (directions, result) = try directions(input: input, labels: labels, rng: &rng)
        try apply(directions)
        return result
    }

    /// `directions` after unit-wise (AGC) and global-norm clipping, as configured.
    public func clipped(_ directions: [String: Tensor]) -> [String: Tensor] {
        var directions = directions
        if let adaptiveClipping { adaptiveClipping.apply(to: &directions, parameters: model) }
        if let clipNorm { clipGlobalNorm(&directions, to: clipNorm) }
        return directions
    }

    public mutating func apply(_ directions: [String: Tensor]) throws(NumericalFault) {
        let directions = clipped(directions)
        // The update first: `model` as an argument before it would be a second reference, and
        // the update would copy every parameter.
        let nonFinite = optimizer.step(&model, directions: directions)
        try checkFinite(model, names: nonFinite)
    }

    /// One full training step on a batch (for models without dropout).
    @discardableResult
    public mutating func step(input: Tensor, labels: [Int]) throws(NumericalFault) -> StepResult {
        var rng = SeededRandom(seed: 0)
        return try step(input: input, labels: labels, rng: &rng)
    }

    /// The predicted classes: most output spikes over `steps` steps (ties go to the lowest class).
    public func predictions(_ input: Tensor) -> [Int] {
        Spiking.predictions(spikes: Spiking.unstacked(model(input, timeSteps: steps), steps: steps))
    }

    public func accuracy(on source: some BatchSource) -> Double { accuracy(on: source, batchSize: 256) }

    /// Accuracy on a source (prediction = most output spikes over `steps` steps), in batches.
    public func accuracy(on source: some BatchSource, batchSize: Int = 256) -> Double {
        Fit.accuracy(on: source, batchSize: batchSize) { predictions($0) }
    }

    /// Firing rate of every spiking layer on `input` (mean spikes per neuron per step).
    public func firingRates(_ input: Tensor) -> [Float] {
        var rng = SeededRandom(seed: 0)
        return model.trace(input, training: false, rng: &rng, timeSteps: steps).firingRates
    }
}

/// The signals of one forward and backward pass of a spiking network (``Spiking/backward(model:input:labels:method:steps:feedback:backwardNormalization:reduction:parameterScale:rng:)``).
public struct SpikingPass: Sendable {
    /// Output spikes `[T, N, C]`.
    public var spikes: Tensor
    /// The signal at the output spikes, `[T, N, C]`: the feedback function's reward under LFP,
    /// the spike loss's gradient under gradient descent.
    public var outputSignal: Tensor
    /// Under LFP the mean feedback at the true class (over steps and batch), else the loss.
    public var objective: Float
    /// Every parameter's feedback times `parameterScale` under LFP, its gradient otherwise.
    public var parameters: [String: Tensor]
}

extension Spiking {
    /// One forward pass over `steps` time steps (constant encoding, training mode) and one
    /// backward pass through time by the ordinary engines: what ``SpikingTrainer`` computes
    /// before its update, and what `lfp propagate` writes for a spiking model.
    /// - Parameter parameterScale: multiplies the LFP parameter feedback (``SpikingTrainer``
    ///   passes -1: the optimizer descends along -feedback); unused by gradient descent.
    /// - Throws: ``NumericalFault`` when the feedback at the output spikes is not finite.
    public static func backward(model: Sequential, input: Tensor, labels: [Int], method: SpikingMethod, steps: Int,
                                feedback: SpikingFeedbackFunction = .rateCoded, backwardNormalization: Bool = false,
                                reduction: Reduction = .sum, parameterScale: Float = 1,
                                rng: inout SeededRandom) throws(NumericalFault) -> SpikingPass {
        precondition(input.shape.first == labels.count, "input \(input.shape) vs \(labels.count) labels")
        let trace = model.trace(input, training: true, rng: &rng, timeSteps: steps)
        let spikes = Spiking.unstacked(trace.output, steps: steps)
        switch method {
        case .lfp, .lfpZPlusZMinus:
            let f = feedback(spikes: spikes, labels: labels)
            if let bad = f.firstNonFiniteIndex { throw NumericalFault(location: "output feedback", value: f.storage[bad]) }
            let n = labels.count, c = spikes.count / max(1, steps * n)
            var total = 0.0
            for t in 0..<steps {
                for (i, y) in labels.enumerated() { total += Double(f.storage[(t * n + i) * c + y]) }
            }
            // `method.rule` is epsilon or z+z-, which every spiking layer accepts: never rejected.
            let propagator = try! FeedbackPropagator(model: model, composite: .uniform(method.rule!),
                                                     options: PropagationOptions(reduction: reduction, backwardNormalization: backwardNormalization))
            let parameters = propagator.propagate(model: model, trace: trace, feedback: f.reshaped(trace.output.shape),
                                                  parameterScale: parameterScale).parameters
            return SpikingPass(spikes: spikes, outputSignal: f, objective: Float(total / Double(max(1, steps * n))), parameters: parameters)
        case .gradient(let surrogate, let loss):
            let (value, g) = loss.evaluate(spikes: spikes, labels: labels)
            let parameters = Backpropagation.gradients(model: model, trace: trace, outputGradient: g.reshaped(trace.output.shape),
                                                       surrogate: surrogate).parameters
            return SpikingPass(spikes: spikes, outputSignal: g, objective: value, parameters: parameters)
        }
    }
}
