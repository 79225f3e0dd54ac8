import Foundation
import LFPTensor

/// An elementwise activation. Under LFP every activation passes feedback through unchanged
/// (LFP-MATH.md section 5); under gradient descent it multiplies by its derivative.
public enum Activation: Sendable, Equatable, CustomStringConvertible {
    case relu
    case leakyReLU(slope: Float)
    case sigmoid
    case tanh
    case silu
    case elu(alpha: Float)
    /// Heaviside step `H(x) = 1 if x > 0 else 0`; its derivative is 0 (as in PyTorch).
    case step
    /// GELU `x Phi(x)` with the exact normal CDF (PyTorch's default, `approximate='none'`).
    case gelu

    public var description: String {
        switch self {
        case .relu: "ReLU"
        case .leakyReLU(let s): "LeakyReLU(\(s))"
        case .sigmoid: "Sigmoid"
        case .tanh: "Tanh"
        case .silu: "SiLU"
        case .elu(let a): "ELU(\(a))"
        case .step: "Step"
        case .gelu: "GELU"
        }
    }

    /// The activation's centre: the midpoint of its values on either side of 0,
    /// `(g(0-) + g(0+)) / 2` (0.5 for the step and the sigmoid, 0 for the others). With
    /// `PropagationOptions.centredInputs` LFP measures contributions from this point
    /// (docs/MATH-ACTIVATIONS.md).
    public var centre: Float {
        switch self {
        case .step, .sigmoid: 0.5
        case .relu, .leakyReLU, .tanh, .silu, .elu, .gelu: 0
        }
    }

    /// Applies the activation to one value.
    @inlinable public func apply(_ x: Float) -> Float {
        switch self {
        case .relu: return max(x, 0)
        case .leakyReLU(let s): return x > 0 ? x : s * x
        case .sigmoid: return 1 / (1 + _exp(-x))
        case .tanh: return _tanh(x)
        case .silu: return x / (1 + _exp(-x))
        case .elu(let a): return x > 0 ? x : a * (_exp(x) - 1)
        case .step: return x > 0 ? 1 : 0
        case .gelu: return 0.5 * x * (1 + _erf(x * 0.70710678118654752))
        }
    }

    /// Applies the activation to every element in place, with one loop per activation kind
    /// (the kind is switched on once, not per element).
    public func apply(to x: inout Tensor) { x = applied(x) }

    /// The activation of every element, in a new tensor (one pass, on all cores for large
    /// tensors; the forward trace keeps the input, so an in-place update would copy it first).
    public func applied(_ x: Tensor) -> Tensor {
        var y = Tensor(uninitializedShape: x.shape)
        x.storage.withUnsafeBufferPointer { px in
            y.storage.withUnsafeMutableBufferPointer { py in
                let (src, dst) = (px.baseAddress, py.baseAddress)
                Parallel.elementwise(px.count) { range in
                    // One loop per kind, written out (pointers unwrapped once) so that it vectorises.
                    let (src, dst) = (src!, dst!)
                    switch self {
                    case .relu: for i in range { dst[i] = max(src[i], 0) }
                    case .step: for i in range { dst[i] = src[i] > 0 ? 1 : 0 }
                    case .leakyReLU(let s): for i in range { dst[i] = src[i] > 0 ? src[i] : s * src[i] }
                    default: for i in range { dst[i] = apply(src[i]) }
                    }
                }
            }
        }
        return y
    }

    /// `g *= derivative(x, y)` elementwise (the activation's backward pass), on all cores for
    /// large tensors, with one written-out loop per kind so that it vectorises.
    public func multiplyByDerivative(_ g: inout Tensor, input x: Tensor, output y: Tensor) {
        precondition(g.count == x.count && x.count == y.count, "activation backward: \(g.shape), \(x.shape), \(y.shape) differ")
        g.storage.withUnsafeMutableBufferPointer { pg in
            x.storage.withUnsafeBufferPointer { px in
                y.storage.withUnsafeBufferPointer { py in
                    let (gs, xs, ys) = (pg.baseAddress, px.baseAddress, py.baseAddress)
                    Parallel.elementwise(pg.count) { range in
                        let (gs, xs, ys) = (gs!, xs!, ys!)
                        // Multiplications (as `derivative` gives), not selects: a conditional
                        // load of g compiled to a scalar loop with branches.
                        switch self {
                        case .relu: for i in range { gs[i] *= xs[i] > 0 ? 1 : 0 }
                        case .step: for i in range { gs[i] *= 0 }
                        case .leakyReLU(let s): for i in range { gs[i] *= xs[i] > 0 ? 1 : s }
                        default: for i in range { gs[i] *= derivative(x: xs[i], y: ys[i]) }
                        }
                    }
                }
            }
        }
    }

    /// The derivative at pre-activation `x` with output `y = apply(x)`.
    @inlinable public func derivative(x: Float, y: Float) -> Float {
        switch self {
        case .relu: return x > 0 ? 1 : 0
        case .leakyReLU(let s): return x > 0 ? 1 : s
        case .sigmoid: return y * (1 - y)
        case .tanh: return 1 - y * y
        case .silu:
            let s = 1 / (1 + _exp(-x))
            return s * (1 + x * (1 - s))
        case .elu(let a): return x > 0 ? 1 : y + a
        case .step: return 0
        case .gelu:
            // Phi(x) + x phi(x)
            return 0.5 * (1 + _erf(x * 0.70710678118654752)) + x * 0.39894228040143268 * _exp(-0.5 * x * x)
        }
    }
}

@usableFromInline func _exp(_ x: Float) -> Float { Foundation.exp(x) }
@usableFromInline func _tanh(_ x: Float) -> Float { Foundation.tanh(x) }
@usableFromInline func _erf(_ x: Float) -> Float { Foundation.erf(x) }

/// A fully connected layer `z = a W^T + b`, weight `[out, in]` (PyTorch layout).
public struct Linear: Sendable, Equatable {
    public var weight: Tensor
    public var bias: Tensor?
    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }

    /// A layer with PyTorch's default initialisation (uniform in ±1/sqrt(in)).
    public init(inFeatures: Int, outFeatures: Int, bias: Bool = true, rng: inout SeededRandom) {
        let bound = DefaultInitialization.bound(fanIn: inFeatures)
        weight = .uniform([outFeatures, inFeatures], bound: bound, rng: &rng)
        self.bias = bias ? .uniform([outFeatures], bound: bound, rng: &rng) : nil
    }

    /// A layer with the given parameters.
    public init(weight: Tensor, bias: Tensor?) {
        precondition(weight.rank == 2, "Linear weight must be [out, in], got \(weight.shape)")
        precondition(bias == nil || bias!.shape == [weight.shape[0]], "Linear bias must be [out]")
        self.weight = weight
        self.bias = bias
    }

    /// `x W^T + b` for `x [..., in]`.
    func callAsFunction(_ x: Tensor) -> Tensor { Kernels.linearForward(x, weight: weight, bias: bias) }

    /// Applies `visit` to `weight` and `bias` in place.
    mutating func updateParameters(_ visit: (String, inout Tensor) -> Void) {
        visit("weight", &weight)
        if bias != nil { visit("bias", &bias!) }
    }
}

/// A 2-D convolution, weight `[out, in, kh, kw]` (PyTorch layout), NCHW input.
public struct Conv2d: Sendable, Equatable {
    public var weight: Tensor
    public var bias: Tensor?
    public var stride: (Int, Int) { (strideH, strideW) }
    public var padding: (Int, Int) { (paddingH, paddingW) }
    public var dilation: (Int, Int) { (dilationH, dilationW) }
    var strideH, strideW, paddingH, paddingW, dilationH, dilationW: Int

    public var inChannels: Int { weight.shape[1] }
    public var outChannels: Int { weight.shape[0] }
    public var kernelSize: (Int, Int) { (weight.shape[2], weight.shape[3]) }

    /// A layer with PyTorch's default initialisation (uniform in ±1/sqrt(in*kh*kw)).
    public init(inChannels: Int, outChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), bias: Bool = true, rng: inout SeededRandom) {
        let bound = DefaultInitialization.bound(fanIn: inChannels * kernelSize.0 * kernelSize.1)
        let weight = Tensor.uniform([outChannels, inChannels, kernelSize.0, kernelSize.1], bound: bound, rng: &rng)
        let bias: Tensor? = bias ? .uniform([outChannels], bound: bound, rng: &rng) : nil
        self.init(weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation)
    }

    /// A layer with the given parameters.
    public init(weight: Tensor, bias: Tensor?, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1)) {
        precondition(weight.rank == 4, "Conv2d weight must be [out, in, kh, kw], got \(weight.shape)")
        precondition(bias == nil || bias!.shape == [weight.shape[0]], "Conv2d bias must be [out]")
        self.weight = weight
        self.bias = bias
        (strideH, strideW) = stride
        (paddingH, paddingW) = padding
        (dilationH, dilationW) = dilation
    }

    /// The convolution geometry for an input of shape `[N, C, H, W]`.
    public func geometry(input shape: [Int]) -> ConvGeometry {
        ConvGeometry(inChannels: shape[1], inHeight: shape[2], inWidth: shape[3], outChannels: outChannels,
                     kernel: kernelSize, stride: stride, padding: padding, dilation: dilation)
    }

    /// The convolution of `x [N, C, H, W]`, plus the bias.
    func callAsFunction(_ x: Tensor) -> Tensor {
        Convolution.forward(x, weight: weight, bias: bias, geometry: geometry(input: x.shape))
    }

    /// Applies `visit` to `weight` and `bias` in place.
    mutating func updateParameters(_ visit: (String, inout Tensor) -> Void) {
        visit("weight", &weight)
        if bias != nil { visit("bias", &bias!) }
    }
}

/// Max pooling over 2-D windows.
public struct MaxPool2d: Sendable, Equatable {
    public var kernel: Int, stride: Int, padding: Int
    public init(kernel: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernel = kernel; self.stride = stride ?? kernel; self.padding = padding
    }
    public func geometry(input shape: [Int]) -> PoolGeometry {
        PoolGeometry(channels: shape[1], inHeight: shape[2], inWidth: shape[3], kernel: (kernel, kernel),
                     stride: (stride, stride), padding: (padding, padding))
    }
}

/// Average pooling over 2-D windows: a linear map with fixed weights `1/k²` and no bias.
public struct AvgPool2d: Sendable, Equatable {
    public var kernel: Int, stride: Int, padding: Int
    public var countIncludePad: Bool
    public init(kernel: Int, stride: Int? = nil, padding: Int = 0, countIncludePad: Bool = true) {
        self.kernel = kernel; self.stride = stride ?? kernel; self.padding = padding
        self.countIncludePad = countIncludePad
    }
    public func geometry(input shape: [Int]) -> PoolGeometry {
        PoolGeometry(channels: shape[1], inHeight: shape[2], inWidth: shape[3], kernel: (kernel, kernel),
                     stride: (stride, stride), padding: (padding, padding))
    }
}

/// Adaptive average pooling to a fixed output size (PyTorch's `AdaptiveAvgPool2d`); `(1, 1)` is
/// global average pooling. A linear map with fixed positive weights and no bias.
public struct AdaptiveAvgPool2d: Sendable, Equatable {
    public var outHeight: Int, outWidth: Int
    public init(outputSize: (Int, Int) = (1, 1)) { (outHeight, outWidth) = outputSize }
}

/// One layer of a model: a leaf operation, or a container of layers (`sequential`, `residual`).
public enum Layer: Sendable, Equatable, CustomStringConvertible {
    case linear(Linear)
    case conv2d(Conv2d)
    case maxPool2d(MaxPool2d)
    case avgPool2d(AvgPool2d)
    case adaptiveAvgPool2d(AdaptiveAvgPool2d)
    /// Batch normalisation over dimension 1 of `[N, C]` or `[N, C, H, W]` (BatchNorm1d/2d).
    case batchNorm(BatchNorm)
    /// A nested sequence of layers (PyTorch's `nn.Sequential` as a child, e.g. `layer1`).
    case sequential(Sequential)
    /// A residual block: `activation(main(x) + shortcut(x))` (ResNet's BasicBlock, Bottleneck,
    /// a transformer block's two halves).
    case residual(Residual)
    /// Layer normalisation over the last dimension.
    case layerNorm(LayerNorm)
    /// Multi-head self-attention on `[N, T, D]`.
    case attention(MultiheadAttention)
    /// A Vision Transformer's tokens: patch grid `[N, D, h, w]` to `[N, 1 + h*w, D]` with a class
    /// token and position embeddings.
    case tokens(TokenEmbedding)
    /// The class token `[N, T, D] -> [N, D]` (token 0, as timm's `global_pool='token'`).
    case classToken
    /// Flattens every dimension after the batch dimension.
    case flatten
    /// Zeroes each unit with probability `p` in training and scales the kept ones by `1/(1-p)`.
    case dropout(p: Float)
    /// Adds Gaussian noise of standard deviation `std` in training (identity in inference).
    /// Under LFP and back-propagation the signal passes unchanged. The paper trains step
    /// networks with noise (std 0.1) before each layer, so that units near the threshold vary.
    case gaussianNoise(std: Float)
    case activation(Activation)
    /// A synapse (Linear or Conv2d) driving LIF neurons, unrolled over the forward pass's time
    /// steps (LFP-MATH.md section 6).
    case spiking(SpikingLayer)

    /// What the layer is, for rule selection and messages.
    public var kind: LayerKind {
        switch self {
        case .linear: .linear
        case .conv2d: .conv2d
        case .maxPool2d: .maxPool2d
        case .avgPool2d: .avgPool2d
        case .adaptiveAvgPool2d: .adaptiveAvgPool2d
        case .batchNorm: .batchNorm
        case .sequential: .sequential
        case .residual: .residual
        case .layerNorm: .layerNorm
        case .attention: .attention
        case .tokens: .tokens
        case .classToken: .classToken
        case .flatten: .flatten
        case .dropout: .dropout
        case .gaussianNoise: .gaussianNoise
        case .activation: .activation
        case .spiking: .spiking
        }
    }

    public var description: String {
        switch self {
        case .linear(let l): "Linear(\(l.inFeatures), \(l.outFeatures)\(l.bias == nil ? ", bias: false" : ""))"
        case .conv2d(let c): "Conv2d(\(c.inChannels), \(c.outChannels), kernel: \(c.kernelSize.0)x\(c.kernelSize.1), stride: \(c.strideH), padding: \(c.paddingH))"
        case .maxPool2d(let p): "MaxPool2d(\(p.kernel), stride: \(p.stride))"
        case .avgPool2d(let p): "AvgPool2d(\(p.kernel), stride: \(p.stride))"
        case .adaptiveAvgPool2d(let p): "AdaptiveAvgPool2d((\(p.outHeight), \(p.outWidth)))"
        case .batchNorm(let b): "BatchNorm(\(b.features))"
        case .sequential(let s): "Sequential(\(s.layers.count) layers)"
        case .residual(let r): "Residual(\(r.main.layers.count) layers\(r.shortcut == nil ? "" : ", projection shortcut"))"
        case .layerNorm(let l): "LayerNorm(\(l.features))"
        case .attention(let a): "MultiheadAttention(\(a.dimension), heads: \(a.heads))"
        case .tokens(let t): "TokenEmbedding(\(t.tokens) tokens of \(t.dimension))"
        case .classToken: "ClassToken"
        case .flatten: "Flatten"
        case .dropout(let p): "Dropout(\(p))"
        case .gaussianNoise(let s): "GaussianNoise(\(s))"
        case .activation(let a): a.description
        case .spiking(let s): s.description
        }
    }

    /// True for the layers LFP rules apply to: affine maps of their input (Linear, Conv2d, the
    /// average pools), the normalisations (BatchNorm, LayerNorm: the rule's quotient, then
    /// gradient times input), attention (the rule on its two projections) and spiking layers
    /// (the rule through time on the membrane, then the synapse's maps).
    public var isAffine: Bool {
        switch kind {
        case .linear, .conv2d, .avgPool2d, .adaptiveAvgPool2d, .batchNorm, .layerNorm, .attention, .spiking: true
        default: false
        }
    }

    /// True for containers (`sequential`, `residual`), whose parameters live in their children.
    public var isContainer: Bool { kind == .sequential || kind == .residual }

    /// A leaf layer's trainable parameters by local name ("weight", "bias"); empty for containers
    /// (see `Sequential.namedParameters`).
    public var parameters: [(name: String, value: Tensor)] {
        switch self {
        case .linear(let l): return [("weight", l.weight)] + (l.bias.map { [("bias", $0)] } ?? [])
        case .conv2d(let c): return [("weight", c.weight)] + (c.bias.map { [("bias", $0)] } ?? [])
        case .batchNorm(let b): return [("weight", b.weight), ("bias", b.bias)]
        case .layerNorm(let l): return [("weight", l.weight), ("bias", l.bias)]
        case .attention(let a):
            return [("qkv.weight", a.qkv.weight)] + (a.qkv.bias.map { [("qkv.bias", $0)] } ?? [])
                + [("proj.weight", a.proj.weight)] + (a.proj.bias.map { [("proj.bias", $0)] } ?? [])
        case .tokens(let t): return [("cls_token", t.classToken), ("pos_embed", t.positions)]
        case .spiking(let s): return s.parameters
        default: return []
        }
    }

    /// Whether the layer, or any layer inside it (containers), has trainable parameters.
    public var hasParameters: Bool {
        switch self {
        case .sequential(let s): s.layers.contains(where: \.hasParameters)
        case .residual(let r): r.main.layers.contains(where: \.hasParameters) || (r.shortcut?.layers.contains(where: \.hasParameters) ?? false)
        default: !parameters.isEmpty
        }
    }

    /// A leaf layer's buffers (state that is not trained: BatchNorm's running statistics).
    public var buffers: [(name: String, value: Tensor)] {
        if case .batchNorm(let b) = self {
            return [("running_mean", b.runningMean), ("running_var", b.runningVariance),
                    ("num_batches_tracked", Tensor(shape: [], storage: [Float(b.batchesTracked)]))]
        }
        return []
    }

    /// Replaces a parameter or buffer of a leaf layer by local name; the shape must match.
    mutating func setParameter(_ local: String, _ value: Tensor) {
        switch (self, local) {
        case (.linear(var l), "weight"): l.weight = value; self = .linear(l)
        case (.linear(var l), "bias"): l.bias = value; self = .linear(l)
        case (.conv2d(var c), "weight"): c.weight = value; self = .conv2d(c)
        case (.conv2d(var c), "bias"): c.bias = value; self = .conv2d(c)
        case (.batchNorm(var b), "weight"): b.weight = value; self = .batchNorm(b)
        case (.batchNorm(var b), "bias"): b.bias = value; self = .batchNorm(b)
        case (.batchNorm(var b), "running_mean"): b.runningMean = value; self = .batchNorm(b)
        case (.batchNorm(var b), "running_var"): b.runningVariance = value; self = .batchNorm(b)
        case (.batchNorm(var b), "num_batches_tracked"): b.batchesTracked = Int(value.storage.first ?? 0); self = .batchNorm(b)
        case (.layerNorm(var l), "weight"): l.weight = value; self = .layerNorm(l)
        case (.layerNorm(var l), "bias"): l.bias = value; self = .layerNorm(l)
        case (.attention(var a), "qkv.weight"): a.qkv.weight = value; self = .attention(a)
        case (.attention(var a), "qkv.bias"): a.qkv.bias = value; self = .attention(a)
        case (.attention(var a), "proj.weight"): a.proj.weight = value; self = .attention(a)
        case (.attention(var a), "proj.bias"): a.proj.bias = value; self = .attention(a)
        case (.tokens(var t), "cls_token"): t.classToken = value; self = .tokens(t)
        case (.tokens(var t), "pos_embed"): t.positions = value; self = .tokens(t)
        case (.spiking(var s), _): s.setParameter(local, value); self = .spiking(s)
        default: preconditionFailure("layer \(self) has no parameter \(local)")
        }
    }
}

/// The kinds of layer, used by composites to select rules.
public enum LayerKind: String, Sendable, CaseIterable, CustomStringConvertible {
    case linear, conv2d, maxPool2d, avgPool2d, adaptiveAvgPool2d, batchNorm, sequential, residual
    case layerNorm, attention, tokens, classToken
    case flatten, dropout, gaussianNoise, activation, spiking
    public var description: String { rawValue }
}
