import LFPTensor

/// Batch normalisation over the channel dimension (PyTorch's `BatchNorm1d`/`BatchNorm2d` with
/// `affine=True, track_running_stats=True`):
/// `y = gamma * (x - mu) / sigma + beta`, `sigma = sqrt(var + eps)`.
///
/// In training the statistics are the batch's (biased variance) and the running statistics move
/// towards them with `momentum` (the running variance takes the unbiased batch variance, as in
/// PyTorch); in evaluation the running statistics are used. Either way the layer is, for the
/// batch at hand, the per-channel affine map `scale * x + shift` with `scale = gamma / sigma` and
/// `shift = beta - gamma * mu / sigma`: LFP applies the layer's rule to that map
/// (docs/MATH-MODELS.md).
public struct BatchNorm: Sendable, Equatable {
    /// gamma `[C]`.
    public var weight: Tensor
    /// beta `[C]`.
    public var bias: Tensor
    public var runningMean: Tensor
    public var runningVariance: Tensor
    /// PyTorch's `num_batches_tracked`.
    public var batchesTracked: Int
    public var epsilon: Float
    public var momentum: Float

    public var features: Int { weight.count }

    /// PyTorch's initialisation: gamma 1, beta 0, running mean 0, running variance 1.
    public init(features: Int, epsilon: Float = 1e-5, momentum: Float = 0.1) {
        weight = Tensor(shape: [features], storage: [Float](repeating: 1, count: features))
        bias = Tensor(shape: [features])
        runningMean = Tensor(shape: [features])
        runningVariance = Tensor(shape: [features], storage: [Float](repeating: 1, count: features))
        batchesTracked = 0
        self.epsilon = epsilon
        self.momentum = momentum
    }

    /// The statistics a forward pass normalised with.
    public struct Statistics: Sendable, Equatable {
        public var mean: [Float]
        /// Biased variance (the batch's in training; the running one in evaluation).
        public var variance: [Float]
        /// True when these are the batch's statistics (the gradient then flows through them).
        public var fromBatch: Bool
    }

    /// The statistics to normalise `x` with in the given mode.
    public func statistics(_ x: Tensor, training: Bool) -> Statistics {
        if training {
            let (m, v) = ChannelKernels.statistics(x)
            return Statistics(mean: m, variance: v, fromBatch: true)
        }
        return Statistics(mean: runningMean.storage, variance: runningVariance.storage, fromBatch: false)
    }

    /// The per-channel affine map `scale * x + shift` the layer applies under `stats`.
    public func affine(_ stats: Statistics) -> (scale: [Float], shift: [Float]) {
        var scale = [Float](repeating: 0, count: features), shift = scale
        for c in 0..<features {
            let inverseSigma = 1 / (stats.variance[c] + epsilon).squareRoot()
            scale[c] = weight.storage[c] * inverseSigma
            shift[c] = bias.storage[c] - stats.mean[c] * scale[c]
        }
        return (scale, shift)
    }

    /// `y = scale * x + shift`.
    public func forward(_ x: Tensor, _ stats: Statistics) -> Tensor {
        let (scale, shift) = affine(stats)
        return ChannelKernels.affine(x, scale: scale, shift: shift)
    }

    /// The running statistics after a training batch of `count` values per channel with batch
    /// statistics `stats` (PyTorch: `running = (1 - momentum) running + momentum batch`, the
    /// variance unbiased by `count / (count - 1)`).
    public mutating func absorb(_ stats: Statistics, count: Int) {
        let unbias: Float = count > 1 ? Float(count) / Float(count - 1) : 1
        for c in 0..<features {
            runningMean.storage[c] = (1 - momentum) * runningMean.storage[c] + momentum * stats.mean[c]
            runningVariance.storage[c] = (1 - momentum) * runningVariance.storage[c] + momentum * stats.variance[c] * unbias
        }
        batchesTracked += 1
    }

    /// Gradient backward: `dL/dx`, `dL/dgamma`, `dL/dbeta` for output gradient `dy`.
    /// With batch statistics the gradient also flows through the mean and variance:
    /// `dx = gamma/sigma * (dy - mean(dy) - xhat * mean(dy * xhat))` per channel.
    /// `timesInput`: the first result is `dx ⊙ x` instead (LFP's "gradient times input" at a
    /// BatchNorm layer, docs/MATH-MODELS.md section 2), multiplied in `dx`'s own pass with
    /// batch statistics (in a second pass with running ones).
    public func backward(_ dy: Tensor, input x: Tensor, _ stats: Statistics, needInput: Bool,
                         timesInput: Bool = false) -> (input: Tensor?, weight: Tensor, bias: Tensor) {
        let c = features
        var inverseSigma = [Float](repeating: 0, count: c), negativeMeanScaled = inverseSigma
        for ch in 0..<c {
            inverseSigma[ch] = 1 / (stats.variance[ch] + epsilon).squareRoot()
            negativeMeanScaled[ch] = -stats.mean[ch] * inverseSigma[ch]
        }
        let xhat = ChannelKernels.affine(x, scale: inverseSigma, shift: negativeMeanScaled)
        let dBeta = ChannelKernels.channelSums(dy)
        let dGamma = ChannelKernels.channelSums(dy, times: xhat)
        var dx: Tensor?
        if needInput {
            let (_, _, p) = ChannelKernels.layout(x.shape)
            let m = Float(x.shape[0] * p)
            let scale = (0..<c).map { weight.storage[$0] * inverseSigma[$0] }
            if stats.fromBatch {
                // scale * (dy - mean(dy) - xhat * mean(dy * xhat)) per channel, in one pass
                let shift = (0..<c).map { -scale[$0] * dBeta[$0] / m }
                let slope = (0..<c).map { -scale[$0] * dGamma[$0] / m }
                dx = ChannelKernels.combine(dy, scale: scale, xhat, scale: slope, shift: shift, times: timesInput ? x : nil)
            } else {
                dx = ChannelKernels.affine(dy, scale: scale, shift: nil)
                if timesInput { dx!.multiplyElementwise(by: x) }
            }
        }
        return (dx, Tensor(shape: [c], storage: dGamma), Tensor(shape: [c], storage: dBeta))
    }
}
