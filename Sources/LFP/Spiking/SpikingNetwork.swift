import LFPTensor

/// A feed-forward spiking neural network (LFP-MATH.md section 6): a list of layers in which
/// every synapse (`Linear` or `Conv2d`) is followed by its own LIF neuron, with `MaxPool2d`
/// (pooling spikes) and `Flatten` allowed in between.
///
/// The layers live in a plain ``Sequential`` (``synapses``) without activation entries, so
/// parameter names are the project's `layers.<index>.weight` / `.bias` (index = position in
/// the layer list) and the optimizers, ``Checkpoint`` and `namedParameters` work unchanged on
/// `synapses`. `neurons[k]` is the LIF neuron after the k-th synapse.
///
/// Inputs are static and fed at every one of `T` steps (constant encoding). The output is the
/// spike train of the last spiking layer, `[T, N, C]`; the prediction is the class with the
/// most spikes.
public struct SpikingNetwork: Sendable, Equatable {
    /// The synapses (`Linear`, `Conv2d`) and routing layers (`MaxPool2d`, `Flatten`).
    public var synapses: Sequential
    /// The LIF neuron after each synapse, in order (`neurons.count` = number of synapses).
    public var neurons: [LIFNeuron]

    /// A network from its layers and one neuron per synapse.
    /// - Throws: ``ModelError/invalidConfiguration(_:)`` when a layer is not a synapse, a
    ///   max-pool or a flatten, when the last layer is not a synapse, when the neuron count
    ///   does not match, or when a neuron has `beta` outside `[0, 1]` or a non-positive threshold.
    public init(synapses: Sequential, neurons: [LIFNeuron]) throws(ModelError) {
        try Self.validate(synapses, neurons)
        self.synapses = synapses
        self.neurons = neurons
    }

    /// A network whose spiking layers all share one neuron configuration.
    public init(synapses: Sequential, neuron: LIFNeuron = LIFNeuron()) throws(ModelError) {
        let count = synapses.layers.filter { $0.kind == .linear || $0.kind == .conv2d }.count
        try self.init(synapses: synapses, neurons: Array(repeating: neuron, count: count))
    }

    static func validate(_ synapses: Sequential, _ neurons: [LIFNeuron]) throws(ModelError) {
        var count = 0
        for (index, layer) in synapses.layers.enumerated() {
            switch layer {
            case .linear, .conv2d: count += 1
            case .maxPool2d, .flatten: break
            default:
                throw .invalidConfiguration("layer \(index): \(layer) is not allowed in a spiking network; use Linear, "
                    + "Conv2d, MaxPool2d or Flatten (every synapse is followed by its LIF neuron)")
            }
        }
        guard count > 0, let last = synapses.layers.last, last.kind == .linear || last.kind == .conv2d else {
            throw .invalidConfiguration("a spiking network must end with a synapse (Linear or Conv2d) whose spikes are the output")
        }
        guard neurons.count == count else {
            throw .invalidConfiguration("\(count) synapses need \(count) LIF neurons, got \(neurons.count)")
        }
        for (k, n) in neurons.enumerated() {
            guard n.beta.isFinite, n.beta >= 0, n.beta <= 1 else {
                throw .invalidConfiguration("neuron \(k): beta must be in [0, 1], got \(n.beta)")
            }
            guard n.threshold.isFinite, n.threshold > 0 else {
                throw .invalidConfiguration("neuron \(k): threshold must be positive, got \(n.threshold)")
            }
        }
    }

    /// The layer index of every synapse, in order (synapse k is followed by `neurons[k]`).
    public var synapseIndices: [Int] {
        synapses.layers.indices.filter { synapses.layers[$0].kind == .linear || synapses.layers[$0].kind == .conv2d }
    }

    /// Every parameter with its dotted name (`layers.<index>.weight`), in layer order.
    public var namedParameters: [(name: String, value: Tensor)] { synapses.namedParameters }

    /// Total number of scalar parameters.
    public var parameterCount: Int { synapses.parameterCount }

    /// The shape of one step's output spikes for an input of the given shape (batch included).
    public func outputShape(input shape: [Int]) throws(ModelError) -> [Int] {
        try synapses.outputShape(input: shape)
    }

    /// The output spikes `[T, N, C]` for a static input fed at each of `steps` steps.
    public func callAsFunction(_ input: Tensor, steps: Int) -> Tensor {
        trace(input, steps: steps).output
    }

    /// The predicted classes: most output spikes over `steps` steps (ties go to the lowest class).
    public func predictions(_ input: Tensor, steps: Int) -> [Int] {
        Self.predictions(spikes: self(input, steps: steps))
    }

    /// Predictions from output spikes `[T, N, C]`: the argmax of the spike counts.
    public static func predictions(spikes: Tensor) -> [Int] {
        spikeCounts(spikes).argmaxRows()
    }

    /// Spike counts `[N, C]` of output spikes `[T, N, C]` (summed over steps).
    public static func spikeCounts(_ spikes: Tensor) -> Tensor {
        precondition(spikes.rank >= 3, "output spikes must be [T, N, C], got \(spikes.shape)")
        let steps = spikes.shape[0], n = spikes.shape[1], block = spikes.count / max(1, steps)
        var counts = Tensor(shape: [n, block / max(1, n)])
        spikes.storage.withUnsafeBufferPointer { ps in
            counts.storage.withUnsafeMutableBufferPointer { pc in
                for t in 0..<steps {
                    for j in 0..<block { pc[j] += ps[t * block + j] }
                }
            }
        }
        return counts
    }

    /// Runs the network for `steps` steps on a static input and records what the backward
    /// passes need (``SpikingTrace``). Spiking state starts at rest (`U = 0`) for every call.
    public func trace(_ input: Tensor, steps: Int) -> SpikingTrace {
        trace(input, steps: steps, spike: .heaviside)
    }

    /// The forward pass, computed layer by layer over all steps at once: a synapse maps the
    /// time-major stack `[T * N, ...]` of its input spikes with one kernel call, then the LIF
    /// recurrence runs over the steps elementwise. This is the same computation as stepping
    /// the whole network through time, because layers only feed forward.
    func trace(_ input: Tensor, steps: Int, spike: SpikeFunction) -> SpikingTrace {
        precondition(steps >= 1, "a spiking network needs at least one time step")
        precondition(input.rank >= 1, "input needs a batch dimension")
        let n = input.shape[0]
        var trace = SpikingTrace(steps: steps, batch: n)
        var x = input
        var stacked = false
        var k = 0
        for (index, layer) in synapses.layers.enumerated() {
            trace.inputs.append(x)
            switch layer {
            case .linear, .conv2d:
                var current: Tensor
                if case .linear(let l) = layer {
                    current = Kernels.linearForward(x, weight: l.weight, bias: l.bias)
                } else if case .conv2d(let c) = layer {
                    current = Convolution.forward(x, weight: c.weight, bias: c.bias, geometry: c.geometry(input: x.shape))
                } else { fatalError("unreachable") }
                if !stacked {
                    // Constant encoding: the first synapse sees the same input at every step.
                    trace.staticLayers = index + 1
                    current = Self.repeated(current, steps)
                    stacked = true
                }
                let (u, s) = neurons[k].run(currents: current, steps: steps, spike: spike)
                trace.currents.append(current)
                trace.membranes.append(u)
                trace.spikes.append(s)
                trace.firingRates.append(s.count == 0 ? 0 : s.sum() / Float(s.count))
                x = s
                k += 1
            case .maxPool2d(let p):
                let (y, argmax) = Pooling.maxForward(x, geometry: p.geometry(input: x.shape))
                trace.maxPoolArgmax[index] = argmax
                x = y
            case .flatten:
                x.reshape([x.shape[0], -1])
            default:
                preconditionFailure("layer \(index): \(layer) is not allowed in a spiking network")
            }
        }
        trace.output = x.reshaped([steps, n] + x.shape.dropFirst())
        return trace
    }

    /// `x [N, ...]` repeated `steps` times along the batch dimension: `[T * N, ...]`.
    static func repeated(_ x: Tensor, _ steps: Int) -> Tensor {
        if steps == 1 { return x }
        var storage = [Float]()
        storage.reserveCapacity(x.count * steps)
        for _ in 0..<steps { storage.append(contentsOf: x.storage) }
        return Tensor(shape: [x.shape[0] * steps] + x.shape.dropFirst(), storage: storage)
    }
}

/// What a spiking forward pass records for the backward passes (LFP through time and
/// back-propagation through time).
///
/// Per-step quantities are stored time-major and stacked along the batch dimension: a tensor
/// `[T * N, ...]` holds step t in rows `t*N ..< (t+1)*N`; ``step(_:_:)`` slices one step out.
public struct SpikingTrace: Sendable {
    /// Number of time steps `T`.
    public var steps: Int
    /// Batch size `N`.
    public var batch: Int
    /// The input of every layer of `synapses`: the synapse inputs `s_in[t]`. Layers with index
    /// below ``staticLayers`` (up to and including the first synapse) see the static input,
    /// `[N, ...]`, identical at every step; later layers see stacked spikes `[T * N, ...]`.
    public var inputs: [Tensor] = []
    /// Number of leading layers whose input is the static input.
    public var staticLayers = 0
    /// Synaptic currents `I[t]` of every spiking layer, stacked `[T * N, ...]`.
    public var currents: [Tensor] = []
    /// Membranes `U[t]` of every spiking layer, stacked `[T * N, ...]`.
    public var membranes: [Tensor] = []
    /// Spikes `S[t]` of every spiking layer, stacked `[T * N, ...]`.
    public var spikes: [Tensor] = []
    /// Max-pool winners by layer index, for the layer's whole (stacked or static) input.
    public var maxPoolArgmax: [Int: [Int32]] = [:]
    /// Firing rate of every spiking layer: mean spikes per neuron per step (over the batch).
    public var firingRates: [Float] = []
    /// The output spikes `[T, N, ...]` of the last spiking layer.
    public var output = Tensor(shape: [0])

    init(steps: Int, batch: Int) {
        self.steps = steps
        self.batch = batch
    }

    /// Step `t` (0-based) of a stacked tensor `[T * N, ...]`: `[N, ...]`.
    public func step(_ stacked: Tensor, _ t: Int) -> Tensor {
        precondition(t >= 0 && t < steps && stacked.count % steps == 0, "no step \(t) in \(stacked.shape)")
        let block = stacked.count / steps
        return Tensor(shape: [batch] + stacked.shape.dropFirst(),
                      storage: Array(stacked.storage[(t * block)..<((t + 1) * block)]))
    }

    /// The input of layer `index` at step `t` (the static input for the leading layers).
    public func input(layer index: Int, step t: Int) -> Tensor {
        index < staticLayers ? inputs[index] : step(inputs[index], t)
    }
}
