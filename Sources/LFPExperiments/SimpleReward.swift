import Foundation
import LFP

/// Appendix A.1: LFP with a plain +1/-1 reward on the 1-D sign data, a 32-32-2 ReLU network,
/// SGD lr 1.0 momentum 0.9, backward normalisation, the learning rate multiplied by 0.1 every
/// 40 steps. Compared with the same reward at a constant learning rate and with the sigmoid
/// feedback function.
public enum SimpleReward {
    public static let name = "simple-reward"
    public static let title = "LFP with a simple +1/-1 reward (appendix A.1)"

    struct Variant {
        var key: String
        var label: String
        var feedback: FeedbackFunction
        var schedule: LearningRateSchedule
        var reduction: Reduction = .sum
    }

    /// Our alternative reading of the reward: the *predicted* class's logit gets +1 when the
    /// prediction is right and -1 when wrong (times the sign of that logit), so a wrong
    /// prediction is weakened (as in REINFORCE); every other logit gets nothing.
    public static let predictedClassReward = FeedbackFunction.custom(name: "predicted-class-reward") { y, labels in
        var f = Tensor(shape: y.shape)
        let c = y.shape[1]
        let p = y.argmaxRows()
        for i in labels.indices {
            let v = y.storage[i * c + p[i]]
            f.storage[i * c + p[i]] = (p[i] == labels[i] ? 1 : -1) * (v >= 0 ? 1 : -1)
        }
        return f
    }

    public static func run(_ c: ExperimentConfiguration) throws -> ExperimentOutcome {
        let start = Date()
        try FileManager.default.createDirectory(at: c.output, withIntermediateDirectories: true)
        let s = c.scale
        let count = s.pick(smoke: 1_450, quick: 2_000, standard: 2_000, full: 2_000)
        let epochs = s.pick(smoke: 1, quick: 5, standard: 10, full: 10)
        let seeds = c.seedCount(smoke: 1, quick: 3, standard: 5, full: 10)
        let batch = 32, lr: Float = 1
        let decay = LearningRateSchedule.step(stepSize: 40, gamma: 0.1)
        let variants = [
            Variant(key: "reward-step", label: "true-class reward, lr x0.1 / 40 steps", feedback: .simpleReward, schedule: decay),
            Variant(key: "reward-constant", label: "true-class reward, constant lr", feedback: .simpleReward, schedule: .constant),
            Variant(key: "predicted-reward-step", label: "predicted-class reward, lr x0.1 / 40 steps", feedback: predictedClassReward, schedule: decay),
            Variant(key: "predicted-reward-constant", label: "predicted-class reward, constant lr", feedback: predictedClassReward, schedule: .constant),
            Variant(key: "correct-class-step", label: "correct-class reward (reference), lr x0.1 / 40 steps", feedback: .correctClass, schedule: decay),
            Variant(key: "misclassification-step", label: "misclassification reward (reference), lr x0.1 / 40 steps", feedback: .misclassification, schedule: decay),
            Variant(key: "correct+misclassification-step", label: "correct-class + misclassification reward, lr x0.1 / 40 steps",
                    feedback: .correctClassAndMisclassification, schedule: decay),
            Variant(key: "sigmoid-constant", label: "sigmoid feedback, constant lr", feedback: .sigmoid, schedule: .constant),
            Variant(key: "sigmoid-constant-mean", label: "sigmoid feedback, constant lr, batch mean", feedback: .sigmoid, schedule: .constant, reduction: .mean),
        ]
        var table = ResultsTable(columns: ["variant", "feedback", "reduction", "seed", "step", "epoch", "learning_rate", "batch_reward", "batch_accuracy",
                                           "test_accuracy", "max_abs_weight", "train_samples", "test_samples", "diverged"])
        var curves: [String: [[Double]]] = [:]
        var rewards: [String: [[Double]]] = [:]
        var diverged: [String: Int] = [:]
        var sizes = (0, 0)
        for seed in 1...seeds {
            let all = try ToyData.signData(count: count, seed: UInt64(seed))
            let (train, test) = try ExperimentData.holdOut(all, testCount: 100, seed: UInt64(seed))
            sizes = (train.count, test.count)
            for v in variants {
                let model = try ModelZoo.make("toy", .init(inputShape: [1], classes: 2, hidden: [32, 32]), seed: UInt64(seed))
                var trainer = try Trainer(model: model, optimizer: SGD(learningRate: lr, momentum: 0.9), method: .lfp,
                                          composite: .uniform(.epsilon), feedback: v.feedback,
                                          options: .init(reduction: v.reduction, backwardNormalization: true))
                let perEpoch = (train.count + batch - 1) / batch
                var accuracy = [Fit.accuracy(model, on: test)]
                var reward: [Double] = []
                table.append(["variant": v.key, "feedback": v.feedback.description, "reduction": v.reduction.rawValue, "seed": seed, "step": 0, "epoch": 0, "test_accuracy": accuracy[0],
                              "train_samples": train.count, "test_samples": test.count, "diverged": 0])
                var failed = false
                for epoch in 1...epochs where !failed {
                    var progress = Fit.EpochProgress()
                    do {
                        _ = try Fit.epoch(&trainer, data: train, epoch: epoch, batchSize: batch, seed: UInt64(seed), progress: &progress,
                                          firstStep: (epoch - 1) * perEpoch, schedule: { v.schedule.rate(base: lr, step: $0) },
                                          afterStep: { b, _, result, _, t in
                                              let step = (epoch - 1) * perEpoch + b + 1
                                              let acc = Fit.accuracy(t.model, on: test)
                                              accuracy.append(acc)
                                              reward.append(Double(result.objective))
                                              let maxW = t.model.namedParameters.map { Double($0.value.maxAbs()) }.max() ?? 0
                                              table.append(["variant": v.key, "feedback": v.feedback.description, "reduction": v.reduction.rawValue,
                                                            "seed": seed, "step": step, "epoch": epoch,
                                                            "learning_rate": Double(t.optimizer.learningRate), "batch_reward": Double(result.objective),
                                                            "batch_accuracy": Double(result.correct) / Double(result.count), "test_accuracy": acc,
                                                            "max_abs_weight": maxW, "train_samples": train.count, "test_samples": test.count, "diverged": 0])
                                              return true
                                          })
                    } catch {
                        failed = true
                        diverged[v.key, default: 0] += 1
                        table.append(["variant": v.key, "seed": seed, "step": accuracy.count, "epoch": epoch, "diverged": 1])
                    }
                }
                // A diverged run stays at chance for the rest of the plot.
                while accuracy.count < epochs * perEpoch + 1 { accuracy.append(0.5) }
                curves[v.key, default: []].append(accuracy)
                rewards[v.key, default: []].append(reward)
                c.log("\(v.key) seed \(seed): test accuracy at steps 40/120/end \(fmt(accuracy[min(40, accuracy.count - 1)]))/\(fmt(accuracy[min(120, accuracy.count - 1)]))/\(fmt(accuracy.last!))\(failed ? " (diverged)" : "")")
            }
        }
        try table.write(to: c.file("results.csv"))

        let accPlot = LinePlot(title: "Test accuracy (100 held-out points)", xLabel: "training step", yLabel: "test accuracy",
                               series: variants.enumerated().map { i, v in meanSeries(v.label, curves[v.key]!, x0: 0, color: LinePlot.color(i)) },
                               yRange: 0...1, note: "mean over \(seeds) seed(s); band: min..max")
        let rewardPlot = LinePlot(title: "Mean feedback at the true class per batch", xLabel: "training step", yLabel: "feedback (reward: +1 right, -1 wrong)",
                                  series: variants.enumerated().map { i, v in meanSeries(v.label, rewards[v.key]!, x0: 1, color: LinePlot.color(i)) },
                                  yRange: -1.1...1.1, note: "clipped to [-1.1, 1.1]\n(diverging runs leave it)")
        let plot = try writePlot(PlotGrid(title: "32-32-2 ReLU net on the sign data: LFP-epsilon, SGD lr 1.0 momentum 0.9",
                                          panels: [accPlot, rewardPlot], columns: 2, panelWidth: 620).svg(), "simple-reward.svg", c)

        // Findings.
        func at(_ k: String, _ step: Int) -> Double { Statistics.mean(curves[k]!.map { $0[min(step, $0.count - 1)] }) }
        func lastStd(_ k: String) -> Double {
            // Fluctuation of the test accuracy over the last 40 steps (mean over seeds of the per-seed std).
            Statistics.mean(curves[k]!.map { Statistics.std(Array($0.suffix(40))) })
        }
        func minLate(_ k: String) -> Double { Statistics.mean(curves[k]!.map { Array($0.dropFirst(41)).min() ?? .nan }) }
        var report = Report(title: title)
        report.paragraph("""
            Setup: ToyData.signData (x uniform in [-1, 1], class = sign of x), \(sizes.0) training points and 100 held-out test points; \
            a 1-32-32-2 ReLU network; LFP-epsilon with backward normalisation (feedback divided by its max-abs after every layer); \
            SGD lr 1.0, momentum 0.9, batch \(batch), \(epochs) epoch(s) (\(curves.values.first![0].count - 1) steps); \(seeds) seed(s). \
            True-class reward (the paper's, `FeedbackFunction.simpleReward`): only the true-class logit gets feedback, +1 when the \
            prediction is right and -1 when wrong (times the sign of the logit). Predicted-class reward (our alternative reading, \
            see below): the same reward on the predicted class's logit. The paper multiplies the learning rate by 0.1 every 40 \
            steps; we also run each reward at a constant learning rate, and the sigmoid feedback function (paper eq. 7) with the \
            feedback summed (the reference's convention) and averaged over the batch. The reference implementation's own simple \
            rewards are run in the paper's setting (step decay): `CorrectclassificationReward` (`FeedbackFunction.correctClass`: \
            the true class gets sign(y_true) when it is predicted, nothing otherwise), `MisclassificationReward` \
            (`FeedbackFunction.misclassification`: every class whose logit is above the true class's gets -sign(y_k)) and their sum. \
            Scale: `\(s)`.
            """)
        report.paragraph("**Deviation from the paper:** the paper samples x on a regular grid (the step size was lost in extraction); ToyData.signData samples it uniformly at random. The paper's batch size is not given; 32 is our choice.")
        report.paragraph("""
            Why the true-class reward cannot correct mistakes: under LFP-epsilon, feedback f at a logit y moves y in the direction \
            of f / y (the update of a weight is a_i |w_ij| f_j / z_j, so z_j changes by sum_i a_i^2 |w_ij| f_j / z_j). With \
            f = reward * sign(y), f / y = reward / |y|: a correct prediction raises the true logit, a wrong one *lowers* it. \
            A network that predicts one class for every input is then a fixed point (its correct half is reinforced, and the true \
            logit of its wrong half pushed further down). Rewarding the predicted class instead lowers a wrongly predicted \
            logit, which can correct mistakes. The same argument applies to the reference's rewards: the correct-class reward \
            only reinforces what is already right (a one-class predictor stays a fixed point), while the misclassification \
            reward lowers every logit that beats the true one, so it (and the sum of both) can correct mistakes. With two \
            classes the sum of the reference's two rewards is exactly our predicted-class reward (a wrong prediction's class \
            is the one class above the true one), so those two rows agree step by step. Of the reference's rewards alone, the \
            misclassification reward learns only partly: it never reinforces what is right, so accuracy rises and falls.
            """)
        report.table(["variant", "acc. before training", "acc. step 10", "acc. step 40", "acc. step 120", "final acc.", "lowest acc. after step 40", "std of acc. over the last 40 steps", "diverged runs"],
                     variants.map { v in [v.label, fmt(at(v.key, 0)), fmt(at(v.key, 10)), fmt(at(v.key, 40)), fmt(at(v.key, 120)), fmt(at(v.key, Int.max)),
                                          fmt(minLate(v.key)), fmt(lastStd(v.key)), "\(diverged[v.key] ?? 0) / \(seeds)"] })
        var claims: [Claim] = []
        let early = at("reward-step", 40)
        claims.append(Claim("A plain +1/-1 reward (true class) yields a meaningful training signal",
                            "true-class reward with step decay: test accuracy \(fmt(at("reward-step", 0))) before training, \(fmt(early)) after 40 steps, \(fmt(at("reward-step", Int.max))) at the end (chance 0.5; criterion: above 0.9 at the end and not below the start)",
                            at("reward-step", Int.max) > 0.9 && at("reward-step", Int.max) >= at("reward-step", 0) - 0.01 ? .agree : (at("reward-step", Int.max) > 0.7 ? .partly : .disagree)))
        claims.append(Claim("(our alternative reading) a +1/-1 reward on the predicted class yields a meaningful training signal",
                            "predicted-class reward with step decay: \(fmt(at("predicted-reward-step", 0))) before, \(fmt(at("predicted-reward-step", 40))) after 40 steps, \(fmt(at("predicted-reward-step", Int.max))) at the end",
                            at("predicted-reward-step", Int.max) > 0.9 ? .agree : (at("predicted-reward-step", Int.max) > 0.7 ? .partly : .disagree)))
        for (k, decayed) in [("reward-constant", "reward-step"), ("predicted-reward-constant", "predicted-reward-step")] {
            let unstable = lastStd(k) > 2 * lastStd(decayed) + 0.01 || minLate(k) < minLate(decayed) - 0.05 || (diverged[k] ?? 0) > 0
            claims.append(Claim("Without a convergence mechanism (constant lr) training with the reward becomes unstable (\(k.hasPrefix("predicted") ? "predicted" : "true")-class reward)",
                                "constant lr: lowest accuracy after step 40 \(fmt(minLate(k))), fluctuation (std over the last 40 steps) \(fmt(lastStd(k))), final \(fmt(at(k, Int.max))); with step decay: \(fmt(minLate(decayed))), \(fmt(lastStd(decayed))), \(fmt(at(decayed, Int.max)))",
                                unstable ? .agree : .disagree))
        }
        for (k, label) in [("correct-class-step", "correct-class"), ("misclassification-step", "misclassification"),
                           ("correct+misclassification-step", "correct-class + misclassification")] {
            let final = at(k, Int.max)
            claims.append(Claim("The reference's \(label) reward yields a meaningful training signal (the paper's setting: backward normalisation, SGD lr 1.0 momentum 0.9, lr x0.1 every 40 steps)",
                                "test accuracy \(fmt(at(k, 0))) before training, \(fmt(at(k, 40))) after 40 steps, \(fmt(final)) at the end (criterion: above 0.9 at the end)",
                                final > 0.9 ? .agree : (final > 0.7 ? .partly : .disagree)))
        }
        report.heading("Paper vs. this run")
        report.claims(claims)
        report.heading("Plot")
        report.image(plot, "test accuracy and reward per step")
        report.paragraph("Raw data: `results.csv` (one row per variant, seed and step: learning rate, batch reward and accuracy, test accuracy, largest |w|).")
        try report.write(to: c.file("report.md"))
        return ExperimentOutcome(name: name, title: title, directory: c.output, plots: [plot],
                                 headline: ["true-class reward + step decay: \(fmt(at("reward-step", 0))) -> \(fmt(at("reward-step", Int.max))); predicted-class reward + step decay: \(fmt(at("predicted-reward-step", 0))) -> \(fmt(at("predicted-reward-step", Int.max)))",
                                            "reference rewards + step decay: correct-class \(fmt(at("correct-class-step", Int.max))), misclassification \(fmt(at("misclassification-step", Int.max))), both \(fmt(at("correct+misclassification-step", Int.max)))"],
                                 seconds: Date().timeIntervalSince(start))
    }
}
