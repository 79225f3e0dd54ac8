import LFPTensor

/// Which view of a layer's weights a map uses: LFP's alpha-beta and z+z- rules need the
/// positive part, the negative part or the magnitude of the weights.
enum WeightView {
    case plain, positive, negative, magnitude
}

/// An affine layer (Linear, Conv2d, the average pools) seen as `z = A ⋅ W + b`, with the maps both
/// back-propagation and LFP are written against (LFP-MATH.md section 3): the forward map,
/// its transpose (input map) and the weight map.
struct AffineMap {
    enum Kind {
        case linear(Linear)
        case conv(Conv2d, ConvGeometry)
        case avgPool(AvgPool2d, PoolGeometry)
        case adaptiveAvgPool(AdaptiveAvgPool2d)
    }

    let kind: Kind
    let inputShape: [Int]

    init?(_ layer: Layer, inputShape: [Int]) {
        self.inputShape = inputShape
        switch layer {
        case .linear(let l): kind = .linear(l)
        case .conv2d(let c): kind = .conv(c, c.geometry(input: inputShape))
        case .avgPool2d(let p): kind = .avgPool(p, p.geometry(input: inputShape))
        case .adaptiveAvgPool2d(let p): kind = .adaptiveAvgPool(p)
        default: return nil
        }
    }


    var weight: Tensor? {
        switch kind {
        case .linear(let l): l.weight
        case .conv(let c, _): c.weight
        case .avgPool, .adaptiveAvgPool: nil
        }
    }

    var bias: Tensor? {
        switch kind {
        case .linear(let l): l.bias
        case .conv(let c, _): c.bias
        case .avgPool, .adaptiveAvgPool: nil
        }
    }

    private func viewed(_ w: Tensor, _ view: WeightView) -> Tensor {
        switch view {
        case .plain: w
        case .positive: w.positivePart
        case .negative: w.negativePart
        case .magnitude: w.magnitude
        }
    }

    /// `A ⋅ view(W)` without bias.
    func forward(_ a: Tensor, _ view: WeightView) -> Tensor {
        switch kind {
        case .linear(let l):
            return Kernels.linearForward(a, weight: viewed(l.weight, view), bias: nil)
        case .conv(let c, let g):
            return Convolution.forward(a, weight: viewed(c.weight, view), bias: nil, geometry: g)
        case .avgPool(let p, let g):
            // Pooling weights are all positive: the negative part is the zero map.
            if view == .negative { return Tensor(shape: [a.shape[0], g.channels, g.outHeight, g.outWidth]) }
            return Pooling.averageForward(a, geometry: g, countIncludePad: p.countIncludePad)
        case .adaptiveAvgPool(let p):
            if view == .negative { return Tensor(shape: [a.shape[0], a.shape[1], p.outHeight, p.outWidth]) }
            return AdaptivePooling.averageForward(a, outHeight: p.outHeight, outWidth: p.outWidth)
        }
    }

    /// The input map `S ⋅ view(W)^T`: input-shaped.
    func transpose(_ s: Tensor, _ view: WeightView) -> Tensor {
        switch kind {
        case .linear(let l):
            return Kernels.linearBackwardInput(s, weight: viewed(l.weight, view))
        case .conv(let c, let g):
            return Convolution.backwardInput(s, weight: viewed(c.weight, view), geometry: g)
        case .avgPool(let p, let g):
            if view == .negative { return Tensor(shape: inputShape) }
            return Pooling.averageBackward(s, inputShape: inputShape, geometry: g, countIncludePad: p.countIncludePad)
        case .adaptiveAvgPool:
            if view == .negative { return Tensor(shape: inputShape) }
            return AdaptivePooling.averageBackward(s, inputShape: inputShape)
        }
    }

    /// The weight map `sum over batch (and positions) of S ⊗ A`: weight-shaped (nil for pooling).
    func weightMap(_ s: Tensor, input a: Tensor) -> Tensor? {
        switch kind {
        case .linear: Kernels.linearBackwardWeight(s, input: a)
        case .conv(_, let g): Convolution.backwardWeight(s, input: a, geometry: g)
        case .avgPool, .adaptiveAvgPool: nil
        }
    }

    /// The parameter feedback of a rule whose weight map is plain: `scale * |W| ⊙ weightMap(S, A)`,
    /// and whether every value is finite (nil for pooling). A Linear layer runs it as one fused
    /// pass with a short batch (`DenseKernels`) and with a product large enough for the
    /// library's sgemm (`Kernels.linearWeightFeedback`); the others take the weight map, then
    /// the magnitude epilogue.
    func weightFeedback(_ s: Tensor, input a: Tensor, scale: Float) -> (feedback: Tensor, isFinite: Bool)? {
        guard let w = weight else { return nil }
        if case .linear = kind {
            // A large product: the library's sgemm with the epilogue fused (nil where it does not
            // run). It also beat DenseKernels at short batches: 512 x 3072 x 16, 32 and 64 (an
            // MLP's first layer at those batches) 1.09x, 1.2-1.4x and 1.2x, 2 threads on AMD Zen 4,
            // alternating in one process.
            if let fused = Kernels.linearWeightFeedback(s, input: a, weight: w, scale: scale) { return fused }
            // Smaller products of short batches (nil above DenseKernels.maximumBatch rows).
            let o = s.shape.last!, i = a.shape.last!
            if let fused = DenseKernels.weightFeedback(s.reshaped([s.count / max(1, o), o]), input: a.reshaped([a.count / max(1, i), i]),
                                                       weight: w, scale: scale) {
                return fused
            }
        }
        guard var fw = weightMap(s, input: a) else { return nil }
        let finite = fw.multiplyByMagnitude(of: w, scale: scale)
        return (fw, finite)
    }

    /// Sum of `S` over the batch (and positions): bias-shaped.
    func biasMap(_ s: Tensor) -> Tensor {
        if case .linear = kind { return Kernels.rowSum(s) }
        return Kernels.biasSum(s)
    }
}
