import Testing
@testable import LFP
import LFPTensor

/// LFP-MATH.md section 7: for ReLU networks of Linear/Conv/AvgPool/MaxPool layers, LFP-0
/// parameter feedback equals |w| * (-dL/dw) from the gradient engine.
@Suite struct IdentityTests {
    static let pairs: [(FeedbackFunction, Loss)] = [(.sigmoid, .sigmoidBinaryCrossEntropy), (.softmax, .softmaxCrossEntropy)]

    @Test(arguments: 0..<2, [UInt64(1), 2, 3])
    func lfpZeroEqualsMagnitudeTimesNegativeGradient(pair: Int, seed: UInt64) {
        let (feedbackFunction, loss) = Self.pairs[pair]
        for model in [TestNets.convNet(seed: seed), TestNets.mlp([7, 6, 5, 4], seed: seed)] {
            var rng = SeededRandom(seed: seed + 50)
            let isConv = model.layers.first?.kind == .conv2d
            let x = Tensor.normal(isConv ? [3, 2, 8, 8] : [5, 7], rng: &rng)
            let labels = (0..<x.shape[0]).map { $0 % (isConv ? 3 : 4) }
            let trace = model.trace(x, training: false, rng: &rng)
            let feedback = feedbackFunction(logits: trace.output, labels: labels)
            let lfp = try! FeedbackPropagator(model: model, composite: .uniform(.zero), options: .init(computeInputFeedback: true))
                .propagate(model: model, trace: trace, feedback: feedback)
            let (_, g) = loss.evaluate(logits: trace.output, labels: labels, reduction: .sum)
            let grads = Backpropagation.gradients(model: model, trace: trace, outputGradient: g, computeInputGradient: true)
            #expect(Set(lfp.parameters.keys) == Set(model.parameterNames))
            for (name, w) in model.namedParameters {
                let expected = zip(w.storage, grads.parameters[name]!.storage).map { Double(abs($0)) * -Double($1) }
                expectClose(lfp.parameters[name]!.storage, expected, tolerance: 1e-4, "\(feedbackFunction) \(name)")
            }
            // At the input: f = x * (-dL/dx).
            let expectedInput = zip(x.storage, grads.input!.storage).map { Double($0) * -Double($1) }
            expectClose(lfp.input!.storage, expectedInput, tolerance: 1e-4, "\(feedbackFunction) input")
        }
    }

    @Test func epsilonApproximatesTheIdentity() {
        let model = TestNets.mlp([6, 8, 3], seed: 4)
        var rng = SeededRandom(seed: 4)
        let x = Tensor.normal([4, 6], rng: &rng)
        let labels = [0, 1, 2, 0]
        let trace = model.trace(x, training: false, rng: &rng)
        let f = FeedbackFunction.sigmoid(logits: trace.output, labels: labels)
        let lfp = try! FeedbackPropagator(model: model).propagate(model: model, trace: trace, feedback: f)
        let g = Backpropagation.gradients(model: model, trace: trace,
                                          outputGradient: Loss.sigmoidBinaryCrossEntropy.evaluate(logits: trace.output, labels: labels, reduction: .sum).gradient)
        for (name, w) in model.namedParameters {
            let expected = zip(w.storage, g.parameters[name]!.storage).map { Double(abs($0)) * -Double($1) }
            expectClose(lfp.parameters[name]!.storage, expected, tolerance: 1e-3, name)
        }
    }
}
