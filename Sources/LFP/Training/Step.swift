import LFPTensor

/// How a model is trained.
public enum TrainingMethod: Sendable, Equatable {
    /// Layer-wise Feedback Propagation with a composite and a feedback function.
    case lfp
    /// Gradient descent on a loss.
    case gradient(Loss)
}

/// Statistics of one training step.
public struct StepResult: Sendable {
    /// Mean feedback at the true class (LFP) or mean loss (gradient).
    public var objective: Float
    /// Correct predictions in the batch.
    public var correct: Int
    /// Batch size.
    public var count: Int
    /// Data-parallel training: some rank asked to stop after this step.
    public var stopRequested = false
    /// Buffers the step moved (BatchNorm running statistics after a training batch), by name;
    /// the trainer stores them with `setBuffers` once the step is applied.
    public var buffers: [String: Tensor] = [:]

    public init(objective: Float, correct: Int, count: Int) {
        self.objective = objective
        self.correct = correct
        self.count = count
    }
}

/// A non-finite value found during training.
public struct NumericalFault: Error, CustomStringConvertible, Sendable {
    public var location: String
    public var value: Float
    public var description: String { "non-finite value \(value) in \(location)" }
}

/// Anything the training loop (`Fit.epoch`) can drive: a trainer of a `Sequential` model
/// (`Trainer`) or of a spiking network (`SpikingTrainer`).
public protocol StepTrainer: Sendable {
    associatedtype O: Optimizer
    var optimizer: O { get set }
    /// The trainable layers, for checkpoints and parameter statistics.
    var parameterModel: Sequential { get }
    /// One training step on a batch (`rng` draws dropout masks where there are any).
    mutating func step(input: Tensor, labels: [Int], rng: inout SeededRandom) throws(NumericalFault) -> StepResult
    /// The raw update directions of a batch (gradient, or `-feedback`), before clipping.
    func directions(input: Tensor, labels: [Int], rng: inout SeededRandom) throws(NumericalFault) -> (directions: [String: Tensor], result: StepResult)
    /// Clips `directions` (if configured), updates the parameters and checks them.
    mutating func apply(_ directions: [String: Tensor]) throws(NumericalFault)
    /// Whether `directions` are means over the batch (they are sums otherwise): data-parallel
    /// training then weights each shard by its share of the batch.
    var directionsAreBatchMeans: Bool { get }
    /// Accuracy on a data source (inference mode).
    func accuracy(on source: some BatchSource) -> Double
    /// Stores buffers a step computed (`StepResult.buffers`).
    mutating func setBuffers(_ buffers: [String: Tensor])
}

extension StepTrainer {
    public mutating func setBuffers(_ buffers: [String: Tensor]) {}
}

/// One training step, LFP or gradient: forward trace, signal at the logits, backward pass,
/// optimizer update (the optimizer receives `-feedback` under LFP).
public struct Trainer<O: Optimizer>: StepTrainer {
    public var model: Sequential
    public var optimizer: O
    public var method: TrainingMethod
    public var propagator: FeedbackPropagator
    public var feedbackFunction: FeedbackFunction
    /// Rescale the directions so their global L2 norm is at most this (nil: no clipping).
    public var clipNorm: Float?
    /// Unit-wise adaptive clipping (AGC, Brock et al. 2021), applied before `clipNorm`.
    public var adaptiveClipping: AdaptiveGradientClipping?
    /// Parameters that are not updated (fine-tuning with a frozen body): their directions are
    /// dropped before clipping and the update (see `ParameterPattern`).
    public var frozen: Set<String> = []

    public var parameterModel: Sequential { model }

    public func accuracy(on source: some BatchSource) -> Double { Fit.accuracy(model, on: source) }

    public init(model: Sequential, optimizer: O, method: TrainingMethod = .lfp,
                composite: Composite = .uniform(.epsilon), feedback: FeedbackFunction = .sigmoid,
                options: PropagationOptions = .init()) throws(LFPError) {
        self.model = model
        self.optimizer = optimizer
        self.method = method
        self.propagator = try FeedbackPropagator(model: model, composite: composite, options: options)
        self.feedbackFunction = feedback
    }

    /// The parameter directions (gradient, or `-feedback`) for a batch, without updating.
    public func directions(input: Tensor, labels: [Int], rng: inout SeededRandom) throws(NumericalFault) -> (directions: [String: Tensor], result: StepResult) {
        let trace = model.trace(input, training: true, rng: &rng)
        let logits = trace.output
        if let bad = logits.firstNonFiniteIndex {
            // Name the layer where the forward pass first left the finite numbers.
            let layer = trace.outputs.firstIndex { !$0.isFinite } ?? model.layers.count - 1
            throw NumericalFault(location: "logits (first non-finite output: layer \(layer), \(model.layers[layer]))", value: logits.storage[bad])
        }
        let predictions = logits.argmaxRows()
        let correct = zip(predictions, labels).filter { $0 == $1 }.count
        var directions: [String: Tensor]
        var checkedFinite: Set<String> = []
        var objective: Float
        switch method {
        case .lfp:
            let f = feedbackFunction(logits: logits, labels: labels)
            let c = logits.shape[1]
            objective = labels.enumerated().reduce(0) { $0 + f.storage[$1.offset * c + $1.element] } / Float(max(1, labels.count))
            // The optimizer descends along -feedback: the sign is applied inside the rules.
            let signals = propagator.propagate(model: model, trace: trace, feedback: f, parameterScale: -1)
            directions = signals.parameters
            checkedFinite = signals.checkedFinite
        case .gradient(let loss):
            let (value, g) = loss.evaluate(logits: logits, labels: labels, reduction: .mean)
            objective = value
            directions = Backpropagation.gradients(model: model, trace: trace, outputGradient: g).parameters
        }
        for name in frozen { directions[name] = nil }
        for (name, d) in directions where !checkedFinite.contains(name) {
            if let bad = d.firstNonFiniteIndex {
                throw NumericalFault(location: method == .lfp ? "feedback of \(name)" : "gradient of \(name)", value: d.storage[bad])
            }
        }
        var result = StepResult(objective: objective, correct: correct, count: labels.count)
        if !trace.normalization.isEmpty || !trace.children.isEmpty {
            // BatchNorm's running statistics after this batch (PyTorch moves them in the forward pass).
            var moved = model
            moved.absorbStatistics(from: trace)
            for (name, value) in moved.namedBuffers { result.buffers[name] = value }
        }
        return (directions, result)
    }

    public mutating func setBuffers(_ buffers: [String: Tensor]) {
        for (name, value) in buffers { model.setParameter(name, value) }
    }

    public var directionsAreBatchMeans: Bool {
        switch method {
        case .gradient: true
        case .lfp: propagator.options.reduction == .mean
        }
    }

    /// `directions` after unit-wise (AGC) and global-norm clipping, as configured.
    public func clipped(_ directions: [String: Tensor]) -> [String: Tensor] {
        var directions = directions
        if let adaptiveClipping { adaptiveClipping.apply(to: &directions, parameters: model) }
        if let clipNorm { clipGlobalNorm(&directions, to: clipNorm) }
        return directions
    }

    public mutating func apply(_ directions: [String: Tensor]) throws(NumericalFault) {
        var directions = directions
        for name in frozen { directions[name] = nil }
        directions = clipped(directions)
        // The update first: `model` as an argument before it would be a second reference, and
        // the update would copy every parameter.
        let nonFinite = optimizer.step(&model, directions: directions)
        try checkFinite(model, names: nonFinite)
    }

    /// One full training step on a batch.
    @discardableResult
    public mutating func step(input: Tensor, labels: [Int], rng: inout SeededRandom) throws(NumericalFault) -> StepResult {
        let (directions, result) = try directions(input: input, labels: labels, rng: &rng)
        try apply(directions)
        setBuffers(result.buffers)
        return result
    }
}

/// Rescales `directions` so that their global L2 norm is at most `maximum`.
public func clipGlobalNorm(_ directions: inout [String: Tensor], to maximum: Float) {
    let norm = directions.values.reduce(0.0) { $0 + $1.squaredNorm() }.squareRoot()
    if norm > Double(maximum) {
        let scale = Float(Double(maximum) / norm)
        for name in directions.keys { directions[name]!.scale(by: scale) }
    }
}

/// Throws when a parameter named in `names` (the optimizer's report of what it made non-finite)
/// holds NaN or an infinity.
func checkFinite(_ model: Sequential, names wanted: Set<String>) throws(NumericalFault) {
    guard !wanted.isEmpty else { return }
    // One walk of the model (a lookup by name per parameter walks the graph each time); the
    // alphabetically first faulty parameter is named.
    var first: (name: String, value: Float)?
    for (name, p) in model.namedParameters where wanted.contains(name) && (first == nil || name < first!.name) {
        if let bad = p.firstNonFiniteIndex { first = (name, p.storage[bad]) }
    }
    if let first { throw NumericalFault(location: "parameter \(first.name) after the update", value: first.value) }
}


/// Selects parameters by dotted name: a name (`fc.weight`), a prefix ending at a dot boundary
/// (`layer1` selects `layer1.0.conv1.weight`), or a glob with `*` (`*.bn*.weight`).
public struct ParameterPattern: Sendable, Equatable, CustomStringConvertible {
    public var text: String
    public init(_ text: String) { self.text = text }
    public var description: String { text }

    public func matches(_ name: String) -> Bool {
        if text.contains("*") { return Self.glob(Array(text.utf8)[...], Array(name.utf8)[...]) }
        return name == text || name.hasPrefix(text + ".")
    }

    private static func glob(_ p: ArraySlice<UInt8>, _ s: ArraySlice<UInt8>) -> Bool {
        guard let first = p.first else { return s.isEmpty }
        if first == UInt8(ascii: "*") {
            var rest = s
            while true {
                if glob(p.dropFirst(), rest) { return true }
                guard !rest.isEmpty else { return false }
                rest = rest.dropFirst()
            }
        }
        guard let c = s.first, c == first else { return false }
        return glob(p.dropFirst(), s.dropFirst())
    }

    /// The parameters of `model` any of `patterns` selects; throws naming a pattern that selects none.
    public static func select(_ patterns: [ParameterPattern], in model: Sequential) throws(ModelError) -> Set<String> {
        var selected: Set<String> = []
        for pattern in patterns {
            let hits = model.parameterNames.filter(pattern.matches)
            guard !hits.isEmpty else {
                throw .invalidConfiguration("pattern '\(pattern)' selects no parameter (names look like \(model.parameterNames.prefix(3).joined(separator: ", ")), ...)")
            }
            selected.formUnion(hits)
        }
        return selected
    }
}
