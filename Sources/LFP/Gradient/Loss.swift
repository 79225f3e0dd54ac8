import Foundation
import LFPTensor

/// How a loss or a parameter feedback is reduced over the batch.
public enum Reduction: String, Sendable, CaseIterable {
    case sum, mean
}

/// The losses of the gradient baseline.
public enum Loss: String, Sendable, CaseIterable {
    /// Softmax cross-entropy of the logits against the class labels.
    case softmaxCrossEntropy = "cross-entropy"
    /// Sum over classes of binary cross-entropy of `sigmoid(logit)` against the one-hot target.
    case sigmoidBinaryCrossEntropy = "bce"

    /// The loss value and its gradient with respect to the logits `[N, C]`.
    public func evaluate(logits: Tensor, labels: [Int], reduction: Reduction = .mean) -> (value: Float, gradient: Tensor) {
        precondition(logits.rank == 2 && logits.shape[0] == labels.count, "logits \(logits.shape) vs \(labels.count) labels")
        let n = logits.shape[0], c = logits.shape[1]
        var grad = Tensor(shape: logits.shape)
        var total = 0.0
        logits.storage.withUnsafeBufferPointer { y in
            grad.storage.withUnsafeMutableBufferPointer { g in
                for i in 0..<n {
                    let row = i * c
                    switch self {
                    case .softmaxCrossEntropy:
                        var m = -Float.infinity
                        for k in 0..<c { m = max(m, y[row + k]) }
                        var z = 0.0
                        for k in 0..<c { z += Foundation.exp(Double(y[row + k] - m)) }
                        let logZ = Double(m) + Foundation.log(z)
                        total += logZ - Double(y[row + labels[i]])
                        for k in 0..<c {
                            g[row + k] = Float(Foundation.exp(Double(y[row + k]) - logZ)) - (k == labels[i] ? 1 : 0)
                        }
                    case .sigmoidBinaryCrossEntropy:
                        for k in 0..<c {
                            let x = Double(y[row + k]), t = k == labels[i] ? 1.0 : 0.0
                            // BCE-with-logits, stable form: max(x,0) - x t + log(1 + exp(-|x|))
                            total += max(x, 0) - x * t + Foundation.log1p(Foundation.exp(-abs(x)))
                            g[row + k] = Float(1 / (1 + Foundation.exp(-x)) - t)
                        }
                    }
                }
            }
        }
        if reduction == .mean && n > 0 {
            total /= Double(n)
            grad = grad * (1 / Float(n))
        }
        return (Float(total), grad)
    }
}
