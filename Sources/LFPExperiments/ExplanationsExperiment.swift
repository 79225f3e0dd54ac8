import Foundation
import LFP

/// Beyond the paper's experiments: the LRP explanations the LFP engine computes for free
/// (`lfp explain`), for a LeNet trained with LFP and one trained with gradient descent.
public enum ExplanationsExperiment {
    public static let name = "explanations"
    public static let title = "LRP explanations from the LFP engine (lfp explain)"

    public static func run(_ c: ExperimentConfiguration) throws -> ExperimentOutcome {
        let start = Date()
        try FileManager.default.createDirectory(at: c.output, withIntermediateDirectories: true)
        let s = c.scale
        let trainLimit: Int? = s.pick(smoke: 64, quick: 10_000, standard: nil, full: nil)
        let testLimit: Int? = s.pick(smoke: 64, quick: 2_000, standard: nil, full: nil)
        let epochs = s.pick(smoke: 1, quick: 1, standard: 3, full: 3)
        let count = s == .smoke ? 4 : 8
        let data = try ExperimentData.images(c, trainLimit: trainLimit, testLimit: testLimit)
        let batch = 32
        let steps = (data.train.count + batch - 1) / batch * epochs
        let trainings: [(key: String, label: String, method: TrainingMethod, lr: Float)] = [
            ("lfp-epsilon", "LFP-epsilon", .lfp, 0.003), ("gradient", "gradient", .gradient(.softmaxCrossEntropy), 0.01),
        ]
        let rules = ["epsilon", "zplus-zminus"]
        let names = Explanations.classNames(dataset: data.name)
        var table = ResultsTable(columns: ["trained_with", "rule", "sample", "label", "predicted", "logit", "layer", "layer_name", "sum",
                                           "max_abs", "fraction_positive", "fraction_negative"])
        var plots: [String] = []
        var conservation: [String: [Double]] = [:]
        var accuracy: [String: Double] = [:]
        for t in trainings {
            let net = try ModelZoo.make("lenet", .init(inputShape: data.train.sampleShape, classes: data.train.classCount), seed: 1)
            let result = try Runs.train(net, RunSettings(method: t.method, feedback: .sigmoid, optimizer: .sgd(learningRate: t.lr, momentum: 0.9),
                                                         schedule: .cosine(totalSteps: steps, minimum: 0), epochs: epochs, batchSize: batch, seed: 1),
                                        train: data.train, test: data.test)
            accuracy[t.key] = result.finalTestAccuracy
            c.log("lenet trained with \(t.key): test accuracy \(fmt(result.finalTestAccuracy))")
            // A checkpoint `lfp explain` can read.
            try Checkpoint.save(result.model, metadata: [
                "lfp.model": "lenet", "lfp.activation": "relu", "lfp.width": "1", "lfp.dropout": "0",
                "lfp.classes": "\(data.train.classCount)", "lfp.input_shape": data.train.sampleShape.map(String.init).joined(separator: ","),
                "lfp.normalization_mean": data.mean.map { "\($0)" }.joined(separator: ","),
                "lfp.normalization_std": data.std.map { "\($0)" }.joined(separator: ","),
            ], to: c.file("lenet-\(t.key).safetensors").path)
            for rule in rules {
                let ex = try Explanations.explain(model: result.model, data: data.test, indices: Array(0..<min(count, data.test.count)),
                                                  composite: try Composite.preset(named: rule))
                for e in ex {
                    conservation["\(t.key)/\(rule)", default: []].append(e.relevanceSum / e.logit)
                    for l in e.layers {
                        table.append(["trained_with": t.key, "rule": rule, "sample": e.index, "label": e.label, "predicted": e.predicted,
                                      "logit": e.logit, "layer": l.layer, "layer_name": l.name, "sum": l.sum, "max_abs": l.maxAbs,
                                      "fraction_positive": l.fractionPositive, "fraction_negative": l.fractionNegative])
                    }
                }
                plots.append(try writePlot(Explanations.heatmapSVG(ex, mean: data.mean, std: data.std,
                                                                   title: "LeNet trained with \(t.label): LRP-\(rule) of the predicted class",
                                                                   classNames: names), "heatmaps-\(t.key)-\(rule).svg", c))
            }
        }
        try table.write(to: c.file("results.csv"))

        var report = Report(title: title)
        report.paragraph("""
            Setup: LeNet (ReLU, no dropout) trained on \(data.name) (\(data.train.count) training images, \(epochs) epoch(s), batch \
            \(batch), SGD momentum 0.9 with a cosine schedule) once with LFP-epsilon (sigmoid feedback, lr 0.003) and once with \
            gradient descent (cross-entropy, lr 0.01). The first \(count) test images are explained with the LFP engine run as LRP: \
            the logit of the predicted class is the only feedback, propagated to the input (`computeInputFeedback`) with LRP-epsilon \
            and LRP-z+z-; every layer's incoming feedback is summarised (`recordLayerFeedback`). Scale: `\(s)`. The same from the \
            command line: `lfp explain --checkpoint lenet-lfp-epsilon.safetensors --count 8 --rule epsilon --output DIR`.
            """)
        report.table(["trained with", "test accuracy"] + rules.map { "input relevance / logit, \($0) (mean, min..max)" },
                     trainings.map { t in [t.label, fmt(accuracy[t.key]!)] + rules.map { r in
                         let v = conservation["\(t.key)/\(r)"]!
                         return "\(fmt(Statistics.mean(v), 2)) (\(fmt(v.min()!, 2))..\(fmt(v.max()!, 2)))"
                     } })
        let eps = conservation.filter { $0.key.hasSuffix("/epsilon") }.values.flatMap { $0 }
        report.heading("Paper vs. this run")
        report.claims([
            Claim("(LRP, Bach et al. 2015, which LFP builds on) LRP-epsilon approximately conserves the explained logit: the input relevance sums to about the logit, minus what the biases absorb",
                  "sum of input relevance / logit with LRP-epsilon: mean \(fmt(Statistics.mean(eps), 2)), range \(fmt(eps.min() ?? .nan, 2))..\(fmt(eps.max() ?? .nan, 2)) over \(eps.count) explanations",
                  eps.allSatisfy { $0 > 0 } ? (abs(Statistics.mean(eps) - 1) < 0.5 ? .agree : .partly) : .disagree),
            Claim("(no claim in the paper) z+z- never lets feedback grow from layer to layer, so its input relevance is a fraction of the logit",
                  "sum of input relevance / logit with z+z-: " + trainings.map { "\($0.label) \(fmt(Statistics.mean(conservation["\($0.key)/zplus-zminus"]!), 3))" }.joined(separator: ", "),
                  .inconclusive),
        ])
        report.heading("Heatmaps")
        for p in plots { report.image(p, p) }
        report.paragraph("Raw data: `results.csv` (per model, rule, sample and layer: sum, max |feedback|, fractions positive and negative; layer -1 is the input). Checkpoints: `lenet-*.safetensors`.")
        try report.write(to: c.file("report.md"))
        return ExperimentOutcome(name: name, title: title, directory: c.output, plots: plots,
                                 headline: ["input relevance / logit (LRP-epsilon): mean \(fmt(Statistics.mean(eps), 2))"],
                                 seconds: Date().timeIntervalSince(start))
    }
}
