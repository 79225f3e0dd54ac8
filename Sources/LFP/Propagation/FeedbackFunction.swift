import Foundation
import LFPTensor

/// The initial feedback at the logits (LFP-MATH.md section 4).
public enum FeedbackFunction: Sendable, CustomStringConvertible {
    /// `f_k = y_k (t_k - sigmoid(y_k))`, the paper's eq. 6/7 (the default).
    case sigmoid
    /// `f_k = y_k (t_k - softmax(y)_k)`.
    case softmax
    /// Appendix A.1: the true class gets `+1` if predicted correctly, `-1` otherwise,
    /// times `sign(y_true)`; other classes get nothing.
    case simpleReward
    /// The reference's `CorrectclassificationReward` (appendix A.1): the true class gets
    /// `sign(y_true)` when it has the largest logit (ties count as correct), every other
    /// entry 0. `sign(0) = 0`, as in PyTorch.
    case correctClass
    /// The reference's `MisclassificationReward` (appendix A.1): every class whose logit is
    /// above the true class's gets `-sign(y_k)`, every other entry 0.
    case misclassification
    /// `correctClass + misclassification`: rewards a correct prediction and punishes every
    /// class that beats the true one.
    case correctClassAndMisclassification
    /// Any function of (logits `[N, C]`, labels) to feedback of the logits' shape.
    case custom(name: String, @Sendable (Tensor, [Int]) -> Tensor)

    public var description: String {
        switch self {
        case .sigmoid: "sigmoid"
        case .softmax: "softmax"
        case .simpleReward: "simple-reward"
        case .correctClass: "correct-class"
        case .misclassification: "misclassification"
        case .correctClassAndMisclassification: "correct-class+misclassification"
        case .custom(let name, _): name
        }
    }

    /// Names accepted by `named(_:)`.
    public static let names = ["sigmoid", "softmax", "simple-reward", "correct-class", "misclassification",
                               "correct-class+misclassification"]

    /// A built-in feedback function by name.
    public static func named(_ name: String) throws(LFPError) -> FeedbackFunction {
        switch name.lowercased() {
        case "sigmoid": return .sigmoid
        case "softmax": return .softmax
        case "simple-reward", "simple", "reward": return .simpleReward
        case "correct-class", "correctclass": return .correctClass
        case "misclassification": return .misclassification
        case "correct-class+misclassification", "misclassification+correct-class": return .correctClassAndMisclassification
        default: throw .invalidFeedback("unknown feedback function '\(name)'; valid: \(names.joined(separator: ", "))")
        }
    }

    /// The feedback for a batch of logits `[N, C]` and their labels.
    public func callAsFunction(logits y: Tensor, labels: [Int]) -> Tensor {
        precondition(y.rank == 2 && y.shape[0] == labels.count, "logits \(y.shape) vs \(labels.count) labels")
        let n = y.shape[0], c = y.shape[1]
        var f = Tensor(shape: y.shape)
        switch self {
        case .sigmoid:
            for i in 0..<n {
                for k in 0..<c {
                    let v = y.storage[i * c + k]
                    let t: Float = k == labels[i] ? 1 : 0
                    f.storage[i * c + k] = v * (t - 1 / (1 + Foundation.exp(-v)))
                }
            }
        case .softmax:
            for i in 0..<n {
                var m = -Float.infinity
                for k in 0..<c { m = max(m, y.storage[i * c + k]) }
                var z: Double = 0
                for k in 0..<c { z += Foundation.exp(Double(y.storage[i * c + k] - m)) }
                for k in 0..<c {
                    let v = y.storage[i * c + k]
                    let p = Float(Foundation.exp(Double(v - m)) / z)
                    let t: Float = k == labels[i] ? 1 : 0
                    f.storage[i * c + k] = v * (t - p)
                }
            }
        case .simpleReward:
            let predictions = y.argmaxRows()
            for i in 0..<n {
                let v = y.storage[i * c + labels[i]]
                let reward: Float = predictions[i] == labels[i] ? 1 : -1
                f.storage[i * c + labels[i]] = reward * (v >= 0 ? 1 : -1)
            }
        case .correctClass, .misclassification, .correctClassAndMisclassification:
            // PyTorch's sign: sign(0) = 0.
            func sign(_ v: Float) -> Float { v > 0 ? 1 : (v < 0 ? -1 : 0) }
            var rewardCorrect = true, punishAbove = true
            if case .misclassification = self { rewardCorrect = false }
            if case .correctClass = self { punishAbove = false }
            for i in 0..<n {
                let row = i * c, truth = y.storage[row + labels[i]]
                var largest = -Float.infinity
                for k in 0..<c { largest = max(largest, y.storage[row + k]) }
                if rewardCorrect && truth == largest { f.storage[row + labels[i]] += sign(truth) }
                if punishAbove {
                    for k in 0..<c where y.storage[row + k] > truth { f.storage[row + k] -= sign(y.storage[row + k]) }
                }
            }
        case .custom(let name, let function):
            f = function(y, labels)
            precondition(f.shape == y.shape, "feedback function \(name) returned \(f.shape) for logits \(y.shape)")
        }
        return f
    }
}
