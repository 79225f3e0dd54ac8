import LFPTensor

/// What a forward pass recorded for the backward passes: every layer's input and output,
/// plus the routing a layer chose (max-pool winners, dropout masks), the statistics batch
/// normalisation used, and the traces of nested containers.
///
/// `inputs[i]` is the input of layer `i` and `outputs[i]` its output; because tensors are
/// copy-on-write, `inputs[i + 1]` shares storage with `outputs[i]`.
public struct Trace: Sendable {
    public var inputs: [Tensor] = []
    public var outputs: [Tensor] = []
    /// Max-pool winner indices by layer index.
    public var maxPoolArgmax: [Int: [Int32]] = [:]
    /// Dropout keep masks (0 or 1) by layer index; absent when the layer was inactive.
    public var dropoutMasks: [Int: [Float]] = [:]
    /// The statistics each BatchNorm layer normalised with, by layer index.
    public var normalization: [Int: BatchNorm.Statistics] = [:]
    /// Traces of container layers by index: `[inner]` for a nested sequential, `[main]` or
    /// `[main, shortcut]` for a residual block.
    public var children: [Int: [Trace]] = [:]
    /// A residual block's sum `main(x) + shortcut(x)` before its activation, by layer index.
    public var residualSums: [Int: Tensor] = [:]
    /// The row statistics of each LayerNorm, by layer index.
    public var layerNormalization: [Int: LayerNorm.Statistics] = [:]
    /// What each attention layer computed inside (q, k, v, attention weights, context), by index.
    public var attention: [Int: MultiheadAttention.Record] = [:]
    /// What each spiking layer computed (currents, membranes), by layer index.
    public var spiking: [Int: SpikingLayer.Record] = [:]
    /// The number of time steps `T` the pass was unrolled over (1 for a network without
    /// spiking layers). Tensors after the first spiking layer are stacked `[T * N, ...]`.
    public var timeSteps = 1

    /// The model's output (the logits).
    public var output: Tensor { outputs.last ?? inputs.first ?? Tensor(shape: [0]) }
}

/// A sequence of layers, each a leaf operation or a container (a nested sequence or a residual
/// block): the model graph both engines walk in reverse over one forward trace.
///
/// Parameter names are PyTorch's dotted `state_dict` names. Children are named `layers.<index>`
/// by default (an `nn.Sequential` under a `layers` attribute, the layout of every model before
/// the graph), or by explicit names (`conv1`, `layer1`, `fc`, ... for torchvision's ResNets).
public struct Sequential: Sendable, Equatable {
    public var layers: [Layer]
    /// The children's names (nil: `layers.<index>`); as many as `layers` when set.
    public var childNames: [String]?

    public init(_ layers: [Layer]) { self.layers = layers }

    /// A sequence with named children (`("conv1", .conv2d(...))`, `("0", block)`, ...).
    public init(named children: [(String, Layer)]) {
        layers = children.map(\.1)
        childNames = children.map(\.0)
    }

    /// The name of child `index` (`layers.3` by default).
    public func name(of index: Int) -> String {
        if let childNames {
            precondition(childNames.count == layers.count, "Sequential has \(layers.count) layers but \(childNames.count) names")
            return childNames[index]
        }
        return "layers.\(index)"
    }

    /// `a.b`, or either alone when the other is empty (a child with an empty name puts its
    /// parameters at its parent's level, as timm's `cls_token`).
    public static func join(_ a: String, _ b: String) -> String { a.isEmpty ? b : (b.isEmpty ? a : a + "." + b) }

    /// The rest of `name` below the child named `child` (nil when it is not below it).
    static func remainder(of name: String, after child: String) -> String? {
        if child.isEmpty { return name }
        guard name.hasPrefix(child + ".") else { return nil }
        return String(name.dropFirst(child.count + 1))
    }

    /// The dotted name of a parameter of child `layer` of a default-named sequence.
    public static func parameterName(layer: Int, _ local: String) -> String { "layers.\(layer).\(local)" }

    /// Every parameter with its stable dotted name, in layer order (depth first).
    public var namedParameters: [(name: String, value: Tensor)] { named(buffers: false) }

    /// Every buffer (state that is not trained: BatchNorm's running statistics) by dotted name.
    public var namedBuffers: [(name: String, value: Tensor)] { named(parameters: false) }

    /// Parameters and buffers: what PyTorch's `state_dict` holds.
    public var stateDict: [(name: String, value: Tensor)] { named() }

    private func named(parameters: Bool = true, buffers: Bool = true, prefix: String = "") -> [(name: String, value: Tensor)] {
        var result: [(name: String, value: Tensor)] = []
        for (index, layer) in layers.enumerated() {
            let name = Sequential.join(prefix, self.name(of: index))
            switch layer {
            case .sequential(let s): result += s.named(parameters: parameters, buffers: buffers, prefix: name)
            case .residual(let r):
                result += r.main.named(parameters: parameters, buffers: buffers, prefix: name)
                if let s = r.shortcut { result += s.named(parameters: parameters, buffers: buffers, prefix: name) }
            default:
                if parameters { result += layer.parameters.map { (Sequential.join(name, $0.name), $0.value) } }
                if buffers { result += layer.buffers.map { (Sequential.join(name, $0.name), $0.value) } }
            }
        }
        return result
    }

    /// Names of every parameter, in layer order.
    public var parameterNames: [String] { namedParameters.map(\.name) }

    /// Total number of scalar parameters.
    public var parameterCount: Int { namedParameters.reduce(0) { $0 + $1.value.count } }

    /// Every leaf layer with its dotted path (`layers.3`, `layer1.0.conv1`), depth first: the
    /// order composites number layers in.
    public var leaves: [(path: String, layer: Layer)] { leaves(prefix: "") }

    private func leaves(prefix: String) -> [(path: String, layer: Layer)] {
        var result: [(path: String, layer: Layer)] = []
        for (index, layer) in layers.enumerated() {
            let name = Sequential.join(prefix, self.name(of: index))
            switch layer {
            case .sequential(let s): result += s.leaves(prefix: name)
            case .residual(let r):
                result += r.main.leaves(prefix: name)
                if let s = r.shortcut { result += s.leaves(prefix: name) }
            default: result.append((name, layer))
            }
        }
        return result
    }

    /// The weights of the connections: Linear and Conv2d weights and attention's projections
    /// (not the normalisations' gamma, not embeddings). What sign statistics and magnitude
    /// pruning count.
    public var connectionWeightNames: [String] {
        leaves.flatMap { path, layer -> [String] in
            switch layer {
            case .linear, .conv2d, .spiking: [Sequential.join(path, "weight")]
            case .attention: [Sequential.join(path, "qkv.weight"), Sequential.join(path, "proj.weight")]
            default: []
            }
        }
    }

    /// The model with its classifier head (the last Linear layer) replaced by a fresh one of
    /// `classes` outputs (PyTorch's default initialisation from `seed`), for transfer to another
    /// task. Nil when the model has no Linear layer.
    public func withNewHead(classes: Int, seed: UInt64) -> Sequential? {
        guard let (path, layer) = leaves.last(where: { $0.layer.kind == .linear }), case .linear(let old) = layer else { return nil }
        var rng = SeededRandom(seed: seed)
        var copy = self
        guard copy.replaceLeaf(path, with: .linear(Linear(inFeatures: old.inFeatures, outFeatures: classes, bias: old.bias != nil, rng: &rng))) else {
            return nil
        }
        return copy
    }

    /// Replaces the leaf at `path` (as in `leaves`); false when there is none.
    public mutating func replaceLeaf(_ path: String, with layer: Layer) -> Bool {
        for index in layers.indices {
            let child = name(of: index)
            switch layers[index] {
            case .sequential(var s):
                guard let rest = Self.remainder(of: path, after: child) else { continue }
                if s.replaceLeaf(rest, with: layer) { layers[index] = .sequential(s); return true }
            case .residual(var r):
                guard let rest = Self.remainder(of: path, after: child) else { continue }
                if r.main.replaceLeaf(rest, with: layer) { layers[index] = .residual(r); return true }
                if r.shortcut?.replaceLeaf(rest, with: layer) == true { layers[index] = .residual(r); return true }
            default:
                if child == path { layers[index] = layer; return true }
            }
        }
        return false
    }

    /// A parameter or buffer by dotted name (nil when there is none).
    public func parameter(_ name: String) -> Tensor? {
        for (index, layer) in layers.enumerated() {
            guard let rest = Self.remainder(of: name, after: self.name(of: index)) else { continue }
            switch layer {
            case .sequential(let s): if let t = s.parameter(rest) { return t }
            case .residual(let r): if let t = r.main.parameter(rest) ?? r.shortcut?.parameter(rest) { return t }
            default: if let t = (layer.parameters + layer.buffers).first(where: { $0.name == rest })?.value { return t }
            }
        }
        return nil
    }

    /// Replaces a parameter or buffer by dotted name. The name must exist and the shape must match.
    public mutating func setParameter(_ name: String, _ value: Tensor) {
        guard let old = parameter(name) else { preconditionFailure("no parameter named \(name)") }
        precondition(old.shape == value.shape, "shape of \(name) is \(old.shape), got \(value.shape)")
        _ = replace(name, value)
    }

    private mutating func replace(_ name: String, _ value: Tensor) -> Bool {
        for index in layers.indices {
            guard let rest = Self.remainder(of: name, after: self.name(of: index)) else { continue }
            switch layers[index] {
            case .sequential(var s):
                if s.replace(rest, value) { layers[index] = .sequential(s); return true }
            case .residual(var r):
                if r.main.replace(rest, value) || (r.shortcut?.replace(rest, value) ?? false) { layers[index] = .residual(r); return true }
            default:
                if (layers[index].parameters + layers[index].buffers).contains(where: { $0.name == rest }) {
                    layers[index].setParameter(rest, value)
                    return true
                }
            }
        }
        return false
    }

    /// Applies `update` to every parameter in place.
    /// The layer is taken out of the array while it is updated, so each parameter's storage is
    /// uniquely referenced and updated without a copy.
    public mutating func updateParameters(_ update: (String, inout Tensor) -> Void) {
        updateParameters(prefix: "", update)
    }

    private mutating func updateParameters(prefix: String, _ update: (String, inout Tensor) -> Void) {
        for index in layers.indices {
            let name = Sequential.join(prefix, self.name(of: index))
            func visit(_ local: String, _ t: inout Tensor) { update(Sequential.join(name, local), &t) }
            switch layers[index].kind {
            case .linear:
                updateInPlace(index, { if case .linear(let l) = $0 { l } else { nil } }, Layer.linear) { $0.updateParameters(visit) }
            case .conv2d:
                updateInPlace(index, { if case .conv2d(let c) = $0 { c } else { nil } }, Layer.conv2d) { $0.updateParameters(visit) }
            case .batchNorm:
                updateInPlace(index, { if case .batchNorm(let b) = $0 { b } else { nil } }, Layer.batchNorm) { b in
                    visit("weight", &b.weight)
                    visit("bias", &b.bias)
                }
            case .layerNorm:
                updateInPlace(index, { if case .layerNorm(let l) = $0 { l } else { nil } }, Layer.layerNorm) { l in
                    visit("weight", &l.weight)
                    visit("bias", &l.bias)
                }
            case .attention:
                updateInPlace(index, { if case .attention(let a) = $0 { a } else { nil } }, Layer.attention) { a in
                    visit("qkv.weight", &a.qkv.weight)
                    if a.qkv.bias != nil { visit("qkv.bias", &a.qkv.bias!) }
                    visit("proj.weight", &a.proj.weight)
                    if a.proj.bias != nil { visit("proj.bias", &a.proj.bias!) }
                }
            case .tokens:
                updateInPlace(index, { if case .tokens(let t) = $0 { t } else { nil } }, Layer.tokens) { t in
                    visit("cls_token", &t.classToken)
                    visit("pos_embed", &t.positions)
                }
            case .spiking:
                updateInPlace(index, { if case .spiking(let s) = $0 { s } else { nil } }, Layer.spiking) { s in
                    s.updateParameters(visit)
                }
            case .sequential:
                updateInPlace(index, { if case .sequential(let s) = $0 { s } else { nil } }, Layer.sequential) { s in
                    s.updateParameters(prefix: name, update)
                }
            case .residual:
                updateInPlace(index, { if case .residual(let r) = $0 { r } else { nil } }, Layer.residual) { r in
                    r.main.updateParameters(prefix: name, update)
                    r.shortcut?.updateParameters(prefix: name, update)
                }
            default:
                continue
            }
        }
    }

    /// Runs `body` on the payload of layer `index` with the layer taken out of the model, so that
    /// each tensor in it is uniquely referenced and updated without a copy. The payload is taken
    /// by a function (not bound in a `switch` case, whose copy of the enum stayed alive through
    /// the update and made every step copy every parameter: measured, 8 % of an MLP step).
    private mutating func updateInPlace<Payload>(_ index: Int, _ extract: (Layer) -> Payload?, _ wrap: (Payload) -> Layer,
                                                 _ body: (inout Payload) -> Void) {
        guard var payload = extract(layers[index]) else { return }
        layers[index] = .flatten
        body(&payload)
        layers[index] = wrap(payload)
    }

    /// Index of the first layer with parameters: signals below it are never needed for training.
    public var firstParameterLayer: Int? { layers.firstIndex(where: \.hasParameters) }

    /// Evaluation-mode forward pass (dropout inactive, BatchNorm on its running statistics).
    public func callAsFunction(_ input: Tensor) -> Tensor {
        var rng = SeededRandom(seed: 0)
        return trace(input, training: false, rng: &rng).output
    }

    /// The output of a spiking network unrolled over `timeSteps` steps (evaluation mode): the
    /// last layer's spikes stacked `[T * N, ...]` (see ``Spiking/unstacked(_:steps:)``).
    public func callAsFunction(_ input: Tensor, timeSteps: Int) -> Tensor {
        var rng = SeededRandom(seed: 0)
        return trace(input, training: false, rng: &rng, timeSteps: timeSteps).output
    }

    /// Runs the model and records each layer's input and output.
    /// - Parameters:
    ///   - training: enables dropout (masks drawn from `rng`) and makes BatchNorm normalise
    ///     with the batch's statistics (the running statistics move only in
    ///     `absorbStatistics(from:)`).
    ///   - timeSteps: the number of steps `T` spiking layers are unrolled over (the static input
    ///     is fed at every step; tensors after the first spiking layer are stacked `[T * N, ...]`).
    ///     Without spiking layers it changes nothing.
    public func trace(_ input: Tensor, training: Bool, rng: inout SeededRandom, timeSteps: Int = 1) -> Trace {
        var time = TimeContext(steps: timeSteps)
        var result = trace(input, training: training, rng: &rng, time: &time)
        // Without a spiking layer nothing was stacked: the output has one row per sample.
        if !time.stacked { result.timeSteps = 1 }
        return result
    }

    /// The forward pass in a time context (the spike function, whether the tensor is stacked yet).
    func trace(_ input: Tensor, training: Bool, rng: inout SeededRandom, time: inout TimeContext) -> Trace {
        var trace = Trace()
        trace.timeSteps = time.steps
        trace.inputs.reserveCapacity(layers.count)
        trace.outputs.reserveCapacity(layers.count)
        var x = input
        for (index, layer) in layers.enumerated() {
            trace.inputs.append(x)
            switch layer {
            case .linear(let l):
                x = l(x)
            case .conv2d(let c):
                x = c(x)
            case .maxPool2d(let p):
                let (y, argmax) = Pooling.maxForward(x, geometry: p.geometry(input: x.shape))
                trace.maxPoolArgmax[index] = argmax
                x = y
            case .avgPool2d(let p):
                x = Pooling.averageForward(x, geometry: p.geometry(input: x.shape), countIncludePad: p.countIncludePad)
            case .adaptiveAvgPool2d(let p):
                x = AdaptivePooling.averageForward(x, outHeight: p.outHeight, outWidth: p.outWidth)
            case .batchNorm(let b):
                let stats = b.statistics(x, training: training)
                trace.normalization[index] = stats
                x = b.forward(x, stats)
            case .sequential(let s):
                let inner = s.trace(x, training: training, rng: &rng, time: &time)
                trace.children[index] = [inner]
                x = inner.output
            case .residual(let r):
                var sideTime = time
                let main = r.main.trace(x, training: training, rng: &rng, time: &time)
                var sum = main.output
                if let shortcut = r.shortcut {
                    let side = shortcut.trace(x, training: training, rng: &rng, time: &sideTime)
                    trace.children[index] = [main, side]
                    sum += side.output
                } else {
                    trace.children[index] = [main]
                    sum += x
                }
                trace.residualSums[index] = sum
                x = r.activation.map { $0.applied(sum) } ?? sum
            case .layerNorm(let l):
                let stats = l.statistics(x)
                trace.layerNormalization[index] = stats
                x = l.forward(x, stats)
            case .attention(let a):
                let (y, record) = a.forward(x)
                trace.attention[index] = record
                x = y
            case .tokens(let t):
                x = t.forward(x)
            case .classToken:
                x = TokenEmbedding.firstToken(x)
            case .flatten:
                x.reshape([x.shape[0], -1])
            case .dropout(let p):
                if training && p > 0 {
                    var mask = [Float](repeating: 0, count: x.count)
                    let scale = 1 / (1 - p)
                    for i in mask.indices where rng.nextUnit() >= p { mask[i] = 1 }
                    x.storage.withUnsafeMutableBufferPointer { px in
                        for i in px.indices { px[i] *= mask[i] * scale }
                    }
                    trace.dropoutMasks[index] = mask
                }
            case .gaussianNoise(let std):
                if training && std > 0 {
                    x.storage.withUnsafeMutableBufferPointer { px in
                        for i in px.indices { px[i] += std * rng.normal() }
                    }
                }
            case .activation(let a):
                a.apply(to: &x)
            case .spiking(let s):
                let (spikes, record) = s.forward(x, time: &time)
                trace.spiking[index] = record
                x = spikes
            }
            trace.outputs.append(x)
        }
        return trace
    }

    /// Moves every BatchNorm's running statistics towards the batch statistics a training
    /// trace used (PyTorch does this inside its forward pass; here the forward pass is pure and
    /// the trainer calls this once per step).
    public mutating func absorbStatistics(from trace: Trace) {
        precondition(trace.inputs.count == layers.count, "trace does not belong to this model")
        for index in layers.indices {
            switch layers[index] {
            case .batchNorm(var b):
                guard let stats = trace.normalization[index], stats.fromBatch else { continue }
                let shape = trace.inputs[index].shape
                b.absorb(stats, count: shape.count >= 2 ? shape[0] * shape.dropFirst(2).reduce(1, *) : 1)
                layers[index] = .batchNorm(b)
            case .sequential(var s):
                guard let inner = trace.children[index]?.first else { continue }
                s.absorbStatistics(from: inner)
                layers[index] = .sequential(s)
            case .residual(var r):
                guard let children = trace.children[index] else { continue }
                r.main.absorbStatistics(from: children[0])
                if children.count > 1 { r.shortcut?.absorbStatistics(from: children[1]) }
                layers[index] = .residual(r)
            default:
                continue
            }
        }
    }

    /// The output shape for a given input shape (batch dimension included), or a
    /// description of the first layer that does not fit.
    public func outputShape(input shape: [Int]) throws(ModelError) -> [Int] {
        var s = shape
        for (index, layer) in layers.enumerated() {
            switch layer {
            case .linear(let l):
                guard s.count >= 2, s.last == l.inFeatures else {
                    throw .shapeMismatch(layer: index, description: "\(layer) expects [N, \(l.inFeatures)] (or [N, T, \(l.inFeatures)]), got \(s)")
                }
                s = s.dropLast() + [l.outFeatures]
            case .conv2d(let c):
                guard s.count == 4, s[1] == c.inChannels else {
                    throw .shapeMismatch(layer: index, description: "\(layer) expects [N, \(c.inChannels), H, W], got \(s)")
                }
                let g = c.geometry(input: s)
                guard g.outHeight > 0, g.outWidth > 0 else {
                    throw .shapeMismatch(layer: index, description: "\(layer) gives an empty output for input \(s)")
                }
                s = [s[0], c.outChannels, g.outHeight, g.outWidth]
            case .maxPool2d(let p):
                guard s.count == 4 else { throw .shapeMismatch(layer: index, description: "\(layer) expects [N, C, H, W], got \(s)") }
                let g = p.geometry(input: s)
                guard g.outHeight > 0, g.outWidth > 0 else { throw .shapeMismatch(layer: index, description: "\(layer) gives an empty output for \(s)") }
                s = [s[0], s[1], g.outHeight, g.outWidth]
            case .avgPool2d(let p):
                guard s.count == 4 else { throw .shapeMismatch(layer: index, description: "\(layer) expects [N, C, H, W], got \(s)") }
                let g = p.geometry(input: s)
                guard g.outHeight > 0, g.outWidth > 0 else { throw .shapeMismatch(layer: index, description: "\(layer) gives an empty output for \(s)") }
                s = [s[0], s[1], g.outHeight, g.outWidth]
            case .adaptiveAvgPool2d(let p):
                guard s.count == 4 else { throw .shapeMismatch(layer: index, description: "\(layer) expects [N, C, H, W], got \(s)") }
                s = [s[0], s[1], p.outHeight, p.outWidth]
            case .batchNorm(let b):
                guard s.count >= 2, s[1] == b.features else {
                    throw .shapeMismatch(layer: index, description: "\(layer) expects [N, \(b.features), ...], got \(s)")
                }
            case .sequential(let inner):
                do { s = try inner.outputShape(input: s) } catch {
                    throw .shapeMismatch(layer: index, description: "\(name(of: index)): \(error)")
                }
            case .residual(let r):
                let main: [Int], side: [Int]
                do {
                    main = try r.main.outputShape(input: s)
                    side = try r.shortcut?.outputShape(input: s) ?? s
                } catch {
                    throw .shapeMismatch(layer: index, description: "\(name(of: index)): \(error)")
                }
                guard main == side else {
                    throw .shapeMismatch(layer: index, description: "\(name(of: index)): the main branch gives \(main) but the shortcut \(side)")
                }
                s = main
            case .layerNorm(let l):
                guard s.count >= 2, s.last == l.features else {
                    throw .shapeMismatch(layer: index, description: "\(layer) expects [..., \(l.features)], got \(s)")
                }
            case .attention(let a):
                guard s.count == 3, s[2] == a.dimension else {
                    throw .shapeMismatch(layer: index, description: "\(layer) expects [N, T, \(a.dimension)], got \(s)")
                }
            case .tokens(let t):
                guard s.count == 4, s[1] == t.dimension, s[2] * s[3] + 1 == t.tokens else {
                    throw .shapeMismatch(layer: index, description: "\(layer) expects [N, \(t.dimension), h, w] with h*w = \(t.tokens - 1) patches, got \(s)")
                }
                s = [s[0], t.tokens, t.dimension]
            case .classToken:
                guard s.count == 3, s[1] >= 1 else { throw .shapeMismatch(layer: index, description: "\(layer) expects [N, T, D], got \(s)") }
                s = [s[0], s[2]]
            case .flatten:
                s = [s[0], s.dropFirst().reduce(1, *)]
            case .spiking(let spiking):
                do { s = try Sequential([spiking.synapse.layer]).outputShape(input: s) } catch {
                    guard case .shapeMismatch(_, let description) = error else { throw error }
                    throw .shapeMismatch(layer: index, description: "spiking layer: \(description)")
                }
            case .dropout, .gaussianNoise, .activation:
                break
            }
        }
        return s
    }
}

/// Errors about a model's structure or its inputs.
public enum ModelError: Error, Equatable, CustomStringConvertible {
    case shapeMismatch(layer: Int, description: String)
    case unknownParameter(String)
    case invalidConfiguration(String)

    public var description: String {
        switch self {
        case .shapeMismatch(let layer, let d): "layer \(layer): \(d)"
        case .unknownParameter(let n): "unknown parameter \(n)"
        case .invalidConfiguration(let d): d
        }
    }
}
