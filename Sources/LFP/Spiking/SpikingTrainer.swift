import LFPTensor

/// How a spiking network is trained.
public enum SpikingMethod: Sendable, Equatable, CustomStringConvertible {
    /// LFP-epsilon through time (``SpikingPropagator``) with the spiking feedback function.
    case lfp(epsilon: Float = Rule.defaultEpsilon)
    /// LFP-z+z- through time (``SpikingPropagator``, rule `.zPlusZMinus`).
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

/// One training step for a ``SpikingNetwork``, LFP or gradient: forward over `steps` time
/// steps (constant encoding), signal at the output spikes (feedback function or loss gradient),
/// backward through time, optional clipping, optimizer update. Under LFP the optimizer
/// receives `-feedback` (LFP-MATH.md section 3), as ``Trainer`` does.
public struct SpikingTrainer<O: Optimizer>: StepTrainer {
    public var network: SpikingNetwork
    public var optimizer: O
    public var method: SpikingMethod
    /// Number of time steps `T` per sample.
    public var steps: Int
    /// The feedback function at the output spikes (LFP only).
    public var feedback: SpikingFeedbackFunction
    /// Divide the feedback sent below each synapse by its max-abs per step (LFP only; the
    /// paper's SNN experiments use it).
    public var backwardNormalization: Bool
    /// Sum LFP parameter feedback over the batch (the reference) or average it.
    public var reduction: Reduction
    /// Unit-wise adaptive clipping of the directions (nil: off). Applied before `clipNorm`.
    public var adaptiveClipping: AdaptiveGradientClipping?
    /// Rescale the directions so their global L2 norm is at most this (nil: no clipping).
    public var clipNorm: Float?

    public init(network: SpikingNetwork, optimizer: O, method: SpikingMethod = .lfp(), steps: Int = 15,
                feedback: SpikingFeedbackFunction = .rateCoded, backwardNormalization: Bool = false,
                reduction: Reduction = .sum, adaptiveClipping: AdaptiveGradientClipping? = nil, clipNorm: Float? = nil) {
        precondition(steps >= 1, "a spiking network needs at least one time step")
        self.network = network
        self.optimizer = optimizer
        self.method = method
        self.steps = steps
        self.feedback = feedback
        self.backwardNormalization = backwardNormalization
        self.reduction = reduction
        self.adaptiveClipping = adaptiveClipping
        self.clipNorm = clipNorm
    }

    /// The parameter directions (gradient, or `-feedback`) for a batch, without updating.
    /// The result's objective is the mean feedback at the true class (over steps and batch)
    /// under LFP, the loss under gradient descent.
    public func directions(input: Tensor, labels: [Int]) throws(NumericalFault) -> (directions: [String: Tensor], result: StepResult) {
        precondition(input.shape.first == labels.count, "input \(input.shape) vs \(labels.count) labels")
        var directions: [String: Tensor]
        let objective: Float
        let trace: SpikingTrace
        switch method {
        case .lfp, .lfpZPlusZMinus:
            trace = network.trace(input, steps: steps)
            let spikes = trace.output
            let f = feedback(spikes: spikes, labels: labels)
            if let bad = f.firstNonFiniteIndex { throw NumericalFault(location: "output feedback", value: f.storage[bad]) }
            let n = labels.count, c = spikes.count / max(1, steps * n)
            var total = 0.0
            for t in 0..<steps {
                for (i, y) in labels.enumerated() { total += Double(f.storage[(t * n + i) * c + y]) }
            }
            objective = Float(total / Double(max(1, steps * n)))
            // `method.rule` is epsilon or z+z-: never rejected.
            let propagator = try! SpikingPropagator(rule: method.rule!, backwardNormalization: backwardNormalization,
                                                    reduction: reduction)
            directions = propagator.propagate(network: network, trace: trace, feedback: f).parameters
            for name in directions.keys { directions[name]!.negate() }  // the optimizer descends along -feedback
        case .gradient(let surrogate, let loss):
            trace = network.trace(input, steps: steps)
            let (value, g) = loss.evaluate(spikes: trace.output, labels: labels)
            objective = value
            directions = SpikingBackpropagation.gradients(network: network, trace: trace, outputGradient: g,
                                                          surrogate: surrogate).parameters
        }
        for name in directions.keys.sorted() {
            let d = directions[name]!
            if let bad = d.firstNonFiniteIndex {
                throw NumericalFault(location: method.rule != nil ? "feedback of \(name)" : "gradient of \(name)",
                                     value: d.storage[bad])
            }
        }
        let predictions = SpikingNetwork.predictions(spikes: trace.output)
        let correct = zip(predictions, labels).filter { $0 == $1 }.count
        return (directions, StepResult(objective: objective, correct: correct, count: labels.count))
    }

    public var parameterModel: Sequential { network.synapses }

    public var directionsAreBatchMeans: Bool {
        switch method {
        case .gradient: true
        case .lfp, .lfpZPlusZMinus: reduction == .mean
        }
    }

    /// One training step (`rng` is unused: spiking networks here have no dropout).
    public mutating func step(input: Tensor, labels: [Int], rng: inout SeededRandom) throws(NumericalFault) -> StepResult {
        try step(input: input, labels: labels)
    }

    public func directions(input: Tensor, labels: [Int], rng: inout SeededRandom) throws(NumericalFault) -> (directions: [String: Tensor], result: StepResult) {
        try directions(input: input, labels: labels)
    }

    /// `directions` after unit-wise (AGC) and global-norm clipping, as configured.
    public func clipped(_ directions: [String: Tensor]) -> [String: Tensor] {
        var directions = directions
        if let adaptiveClipping { adaptiveClipping.apply(to: &directions, parameters: network.synapses) }
        if let clipNorm { clipGlobalNorm(&directions, to: clipNorm) }
        return directions
    }

    public mutating func apply(_ directions: [String: Tensor]) throws(NumericalFault) {
        let directions = clipped(directions)
        optimizer.step(&network.synapses, directions: directions)
        try checkFinite(network.synapses, names: directions.keys)
    }

    public func accuracy(on source: some BatchSource) -> Double { accuracy(on: source, batchSize: 256) }

    /// One full training step on a batch.
    @discardableResult
    public mutating func step(input: Tensor, labels: [Int]) throws(NumericalFault) -> StepResult {
        let (directions, result) = try directions(input: input, labels: labels)
        try apply(directions)
        return result
    }

    /// Accuracy on a source (prediction = most output spikes over `steps` steps), in batches.
    public func accuracy(on source: some BatchSource, batchSize: Int = 256) -> Double {
        Fit.accuracy(on: source, batchSize: batchSize) { network.predictions($0, steps: steps) }
    }
}
