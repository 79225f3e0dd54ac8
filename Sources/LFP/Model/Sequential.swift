import LFPTensor

/// What a forward pass recorded for the backward passes: every layer's input and output,
/// plus the routing a layer chose (max-pool winners, dropout masks).
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

    /// The model's output (the logits).
    public var output: Tensor { outputs.last ?? inputs.first ?? Tensor(shape: [0]) }
}

/// A sequential model: layers applied in order, parameters named `layers.<index>.weight`
/// and `layers.<index>.bias` (PyTorch's `nn.Sequential` names under a `layers` attribute).
public struct Sequential: Sendable, Equatable {
    public var layers: [Layer]

    public init(_ layers: [Layer]) { self.layers = layers }

    /// The dotted name of a layer's parameter.
    public static func parameterName(layer: Int, _ local: String) -> String { "layers.\(layer).\(local)" }

    /// Every parameter with its stable dotted name, in layer order.
    public var namedParameters: [(name: String, value: Tensor)] {
        layers.enumerated().flatMap { index, layer in
            layer.parameters.map { (Self.parameterName(layer: index, $0.name), $0.value) }
        }
    }

    /// Names of every parameter, in layer order.
    public var parameterNames: [String] { namedParameters.map(\.name) }

    /// Total number of scalar parameters.
    public var parameterCount: Int { namedParameters.reduce(0) { $0 + $1.value.count } }

    /// Splits `layers.3.weight` into (3, "weight").
    static func parse(_ name: String) -> (layer: Int, local: String)? {
        let parts = name.split(separator: ".")
        guard parts.count == 3, parts[0] == "layers", let index = Int(parts[1]) else { return nil }
        return (index, String(parts[2]))
    }

    /// A parameter by dotted name (nil when there is none).
    public func parameter(_ name: String) -> Tensor? {
        guard let (index, local) = Self.parse(name), layers.indices.contains(index) else { return nil }
        return layers[index].parameters.first { $0.name == local }?.value
    }

    /// Replaces a parameter by dotted name. The name must exist and the shape must match.
    public mutating func setParameter(_ name: String, _ value: Tensor) {
        guard let (index, local) = Self.parse(name), layers.indices.contains(index),
              let old = layers[index].parameters.first(where: { $0.name == local })?.value else {
            preconditionFailure("no parameter named \(name)")
        }
        precondition(old.shape == value.shape, "shape of \(name) is \(old.shape), got \(value.shape)")
        layers[index].setParameter(local, value)
    }

    /// Applies `update` to every parameter in place.
    /// The layer is taken out of the array while it is updated, so each parameter's storage is
    /// uniquely referenced and updated without a copy.
    public mutating func updateParameters(_ update: (String, inout Tensor) -> Void) {
        for index in layers.indices {
            // Take the layer's parameters out of the model so that each tensor is uniquely
            // referenced and `update` mutates it in place. The payload is bound in an `if case`
            // whose copy of the enum ends with the statement; binding it in a `switch` case kept
            // that copy alive through the update, and every step copied every parameter
            // (measured: 8 % of an MLP step).
            switch layers[index].kind {
            case .linear:
                var l: Linear
                if case .linear(let payload) = layers[index] { l = payload } else { continue }
                layers[index] = .flatten
                update(Self.parameterName(layer: index, "weight"), &l.weight)
                if l.bias != nil { update(Self.parameterName(layer: index, "bias"), &l.bias!) }
                layers[index] = .linear(l)
            case .conv2d:
                var c: Conv2d
                if case .conv2d(let payload) = layers[index] { c = payload } else { continue }
                layers[index] = .flatten
                update(Self.parameterName(layer: index, "weight"), &c.weight)
                if c.bias != nil { update(Self.parameterName(layer: index, "bias"), &c.bias!) }
                layers[index] = .conv2d(c)
            default:
                continue
            }
        }
    }

    /// Index of the first layer with parameters: signals below it are never needed for training.
    public var firstParameterLayer: Int? { layers.firstIndex { !$0.parameters.isEmpty } }

    /// Evaluation-mode forward pass (dropout inactive).
    public func callAsFunction(_ input: Tensor) -> Tensor {
        var rng = SeededRandom(seed: 0)
        return trace(input, training: false, rng: &rng).output
    }

    /// Runs the model and records each layer's input and output.
    /// - Parameters:
    ///   - training: enables dropout (masks drawn from `rng`).
    public func trace(_ input: Tensor, training: Bool, rng: inout SeededRandom) -> Trace {
        var trace = Trace()
        trace.inputs.reserveCapacity(layers.count)
        trace.outputs.reserveCapacity(layers.count)
        var x = input
        for (index, layer) in layers.enumerated() {
            trace.inputs.append(x)
            switch layer {
            case .linear(let l):
                x = Kernels.linearForward(x, weight: l.weight, bias: l.bias)
            case .conv2d(let c):
                x = Convolution.forward(x, weight: c.weight, bias: c.bias, geometry: c.geometry(input: x.shape))
            case .maxPool2d(let p):
                let (y, argmax) = Pooling.maxForward(x, geometry: p.geometry(input: x.shape))
                trace.maxPoolArgmax[index] = argmax
                x = y
            case .avgPool2d(let p):
                x = Pooling.averageForward(x, geometry: p.geometry(input: x.shape), countIncludePad: p.countIncludePad)
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
            }
            trace.outputs.append(x)
        }
        return trace
    }

    /// The output shape for a given input shape (batch dimension included), or a
    /// description of the first layer that does not fit.
    public func outputShape(input shape: [Int]) throws(ModelError) -> [Int] {
        var s = shape
        for (index, layer) in layers.enumerated() {
            switch layer {
            case .linear(let l):
                guard s.count == 2, s[1] == l.inFeatures else {
                    throw .shapeMismatch(layer: index, description: "\(layer) expects [N, \(l.inFeatures)], got \(s)")
                }
                s = [s[0], l.outFeatures]
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
            case .flatten:
                s = [s[0], s.dropFirst().reduce(1, *)]
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
