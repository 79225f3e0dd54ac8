import Foundation
import LFPTensor

/// The initial feedback at the output spikes of a spiking network (LFP-MATH.md section 4).
public enum SpikingFeedbackFunction: Sendable, CustomStringConvertible {
    /// The spiking rate-coded feedback (appendix A.6.3, as the reference implements it): for
    /// output spikes `S[t, n, k]` over `T` steps, `n+ = sum_t S`, `n- = T - n+`,
    /// `kappa = floor(T / 2)`. The true class gets `1 - sigmoid(n+ - kappa)` at every step
    /// (also where it did not spike); every other class gets `-S[t, k] (1 - sigmoid(n- - kappa))`.
    case rateCoded
    /// Any function of (output spikes `[T, N, C]`, labels) to feedback of the same shape.
    case custom(name: String, @Sendable (Tensor, [Int]) -> Tensor)

    public var description: String {
        switch self {
        case .rateCoded: "rate-coded"
        case .custom(let name, _): name
        }
    }

    /// The feedback for output spikes `[T, N, C]` and their labels. Output spikes of a
    /// convolutional last layer (`[T, N, C, H, W]`) are seen as `[T, N, C*H*W]`.
    public func callAsFunction(spikes: Tensor, labels: [Int]) -> Tensor {
        let flat = SpikingLoss.flattened(spikes, labels: labels)
        switch self {
        case .rateCoded:
            return Self.rateCodedFeedback(spikes: flat, labels: labels).reshaped(spikes.shape)
        case .custom(let name, let function):
            let f = function(flat, labels)
            precondition(f.shape == flat.shape, "feedback function \(name) returned \(f.shape) for spikes \(flat.shape)")
            return f.reshaped(spikes.shape)
        }
    }

    static func rateCodedFeedback(spikes: Tensor, labels: [Int]) -> Tensor {
        let steps = spikes.shape[0], n = spikes.shape[1], c = spikes.shape[2]
        let kappa = Float(steps / 2)
        let counts = Spiking.spikeCounts(spikes)
        func sigmoid(_ x: Float) -> Float { 1 / (1 + Foundation.exp(-x)) }
        var f = Tensor(shape: spikes.shape)
        for i in 0..<n {
            for k in 0..<c {
                let positive = counts.storage[i * c + k]
                if k == labels[i] {
                    let reward = 1 - sigmoid(positive - kappa)
                    for t in 0..<steps { f.storage[(t * n + i) * c + k] = reward }
                } else {
                    let negative = Float(steps) - positive
                    let decay = 1 - sigmoid(negative - kappa)
                    for t in 0..<steps {
                        let index = (t * n + i) * c + k
                        f.storage[index] = -spikes.storage[index] * decay
                    }
                }
            }
        }
        return f
    }
}

/// The losses of the gradient baseline for spiking networks.
public enum SpikingLoss: String, Sendable, CaseIterable {
    /// Softmax cross-entropy of each step's output spikes, averaged over steps and the batch
    /// (snnTorch's `ce_rate_loss`): `L = 1/(T N) sum_t sum_n CE(S[t, n, :], y_n)`.
    case rateCrossEntropy = "ce-rate"
    /// Softmax cross-entropy of the spike counts `sum_t S[t]`, averaged over the batch
    /// (snnTorch's `ce_count_loss`, the paper's appendix A.6.3).
    case countCrossEntropy = "ce-count"

    /// Output spikes `[T, N, ...]` as `[T, N, C]`, checked against the labels.
    static func flattened(_ spikes: Tensor, labels: [Int]) -> Tensor {
        precondition(spikes.rank >= 3 && spikes.shape[1] == labels.count,
                     "output spikes must be [T, N, C] with N = \(labels.count) labels, got \(spikes.shape)")
        return spikes.rank == 3 ? spikes : spikes.reshaped([spikes.shape[0], spikes.shape[1], -1])
    }

    /// The loss and its gradient with respect to the output spikes `[T, N, C]` (a convolutional
    /// output `[T, N, C, H, W]` is seen as `[T, N, C*H*W]`; the gradient has the input's shape).
    public func evaluate(spikes output: Tensor, labels: [Int]) -> (value: Float, gradient: Tensor) {
        let spikes = Self.flattened(output, labels: labels)
        let steps = spikes.shape[0], n = spikes.shape[1], c = spikes.shape[2]
        switch self {
        case .rateCrossEntropy:
            // Each step is a batch of logits; the mean over T*N rows is the mean over steps of
            // the batch mean.
            let rows = spikes.reshaped([steps * n, c])
            let repeatedLabels = Array((0..<steps).map { _ in labels }.joined())
            var (value, g) = Loss.softmaxCrossEntropy.evaluate(logits: rows, labels: repeatedLabels, reduction: .mean)
            g.reshape(output.shape)
            return (value, g)
        case .countCrossEntropy:
            let counts = Spiking.spikeCounts(spikes)
            let (value, gc) = Loss.softmaxCrossEntropy.evaluate(logits: counts, labels: labels, reduction: .mean)
            // d count / d S[t] = 1 at every step.
            return (value, Spiking.repeated(gc, steps).reshaped(output.shape))
        }
    }
}
