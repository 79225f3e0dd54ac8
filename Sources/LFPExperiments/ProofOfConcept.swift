import Foundation
import LFP

/// Paper section 2.3, figure 2: an MLP and a LeNet trained with LFP-epsilon and with gradient
/// descent, SGD with momentum 0.9, three learning rates, several seeds.
public enum ProofOfConcept {
    public static let name = "proof-of-concept"
    public static let title = "Proof of concept: LFP-epsilon vs gradient descent (paper 2.3, fig. 2)"

    /// The learning rates tried for both methods. The paper's values were lost in extraction;
    /// a decade grid is our choice.
    public static let learningRates: [Float] = [0.001, 0.01, 0.1]

    public static func run(_ c: ExperimentConfiguration) throws -> ExperimentOutcome {
        let start = Date()
        try FileManager.default.createDirectory(at: c.output, withIntermediateDirectories: true)
        let s = c.scale
        let trainLimit: Int? = s.pick(smoke: 96, quick: 20_000, standard: nil, full: nil)
        let testLimit: Int? = s.pick(smoke: 64, quick: 2_000, standard: nil, full: nil)
        let epochs = s.pick(smoke: 1, quick: 2, standard: 5, full: 20)
        let seeds = c.seedCount(standard: 2, full: 5)
        let data = try ExperimentData.images(c, trainLimit: trainLimit, testLimit: testLimit)
        let models = ["mlp", "lenet"]
        let methods: [(key: String, label: String, method: TrainingMethod)] = [
            ("lfp-epsilon", "LFP-epsilon", .lfp), ("gradient", "gradient", .gradient(.softmaxCrossEntropy)),
        ]
        c.log("\(name): \(data.name), \(data.train.count) train / \(data.test.count) test, \(epochs) epochs, \(seeds) seed(s), "
              + "\(models.count * methods.count * learningRates.count * seeds) runs")

        var table = ResultsTable(columns: ["model", "method", "learning_rate", "seed", "dataset", "train_samples", "batch_size"] + Runs.epochColumns)
        // curves[model][method][lr] = per-seed test-accuracy curves (epoch 0 = before training)
        var curves: [String: [String: [Float: [[Double]]]]] = [:]
        for model in models {
            for m in methods {
                for lr in learningRates {
                    for seed in 1...seeds {
                        let net = try ModelZoo.make(model, .init(inputShape: data.train.sampleShape, classes: data.train.classCount,
                                                                 dropout: 0.5), seed: UInt64(seed))
                        let settings = RunSettings(method: m.method, feedback: .sigmoid, optimizer: .sgd(learningRate: lr, momentum: 0.9),
                                                   epochs: epochs, batchSize: 32, seed: UInt64(seed))
                        let result = try Runs.train(net, settings, train: data.train, test: data.test)
                        for e in result.epochs {
                            var row = Runs.epochRow(e)
                            row.merge(["model": model, "method": m.key, "learning_rate": lr, "seed": seed, "dataset": data.name,
                                       "train_samples": data.train.count, "batch_size": 32]) { $1 }
                            table.append(row)
                        }
                        curves[model, default: [:]][m.key, default: [:]][lr, default: []]
                            .append([result.initialTestAccuracy] + result.epochs.map(\.testAccuracy))
                        c.log(String(format: "%@ %@ lr %g seed %d: test accuracy %@ (%.0f s)%@", model, m.key, lr, seed,
                                     result.epochs.map { fmt($0.testAccuracy) }.joined(separator: " "), result.seconds,
                                     result.diverged ? " diverged" : ""))
                    }
                }
            }
        }
        try table.write(to: c.file("results.csv"))

        // Plot: one panel per model, LFP solid, gradient dashed, one colour per learning rate.
        var panels: [LinePlot] = []
        for model in models {
            var series: [LinePlot.Series] = []
            for m in methods {
                for (i, lr) in learningRates.enumerated() {
                    series.append(meanSeries("\(m.label) lr \(lr)", curves[model]![m.key]![lr]!, x0: 0,
                                             dashed: m.key == "gradient", color: LinePlot.color(i)))
                }
            }
            panels.append(LinePlot(title: "\(model == "mlp" ? "MLP" : "LeNet") on \(data.name)", xLabel: "epoch",
                                   yLabel: "test accuracy", series: series, yRange: 0...1,
                                   note: seeds > 1 ? "mean over \(seeds) seeds;\nband: min..max" : nil))
        }
        let plot = try writePlot(PlotGrid(title: "LFP-epsilon (solid) vs gradient descent (dashed), SGD momentum 0.9",
                                          panels: panels).svg(), "accuracy.svg", c)

        // Findings.
        func final(_ model: String, _ method: String, _ lr: Float) -> Double {
            Statistics.mean(curves[model]![method]![lr]!.map { $0.last! })
        }
        var report = Report(title: title)
        report.paragraph("""
            Setup: \(data.name) (\(data.train.count) training / \(data.test.count) test images, normalised per channel), \
            the paper's MLP (512-256-128-C) and LeNet (two 5x5 convolutions with 16 channels, dense 120-84-C), ReLU, \
            dropout 0.5 between the dense layers, batch 32, SGD momentum 0.9, constant learning rate, \(epochs) epoch(s), \
            \(seeds) seed(s) (mean reported). LFP: LFP-epsilon (eps 1e-6), sigmoid feedback (paper eq. 7), parameter \
            feedback summed over the batch. Gradient: softmax cross-entropy, averaged over the batch. Scale: `\(s)`.
            """)
        if data.name != "cifar10" {
            report.paragraph("**Deviation from the paper:** the paper trains on CIFAR-10 for 20 epochs with 5 seeds. No CIFAR-10 files were given (`--data-dir`), so this run uses \(data.name).")
        }
        report.paragraph("The paper's three learning rates were lost in extraction; we use \(learningRates.map { "\($0)" }.joined(separator: ", ")) for both methods.")
        report.heading("Final test accuracy (mean over seeds)")
        var rows: [[String]] = []
        for model in models {
            for m in methods {
                rows.append([model, m.label] + learningRates.map { fmt(final(model, m.key, $0)) })
            }
        }
        report.table(["model", "method"] + learningRates.map { "lr \($0)" }, rows)
        var claims: [Claim] = []
        var headline: [String] = []
        for model in models {
            let bestLFP = learningRates.max { final(model, "lfp-epsilon", $0) < final(model, "lfp-epsilon", $1) }!
            let bestGrad = learningRates.max { final(model, "gradient", $0) < final(model, "gradient", $1) }!
            let a = final(model, "lfp-epsilon", bestLFP), g = final(model, "gradient", bestGrad)
            let gap = (g - a) * 100
            let verdict: Claim.Verdict = abs(gap) <= 2 ? .agree : (gap <= 5 ? .partly : .disagree)
            claims.append(Claim("\(model): with the right learning rate LFP reaches accuracy comparable to gradient descent",
                                "best LFP \(fmt(a)) (lr \(bestLFP)) vs best gradient \(fmt(g)) (lr \(bestGrad)): gap \(String(format: "%+.1f", -gap)) points (criterion: within 2 points = agree, within 5 = partly)",
                                verdict))
            claims.append(Claim("\(model): the best learning rates of the two methods differ",
                                "best LFP lr \(bestLFP), best gradient lr \(bestGrad)", bestLFP != bestGrad ? .agree : .disagree))
            headline.append("\(model): best LFP \(fmt(a)) (lr \(bestLFP)) vs best gradient \(fmt(g)) (lr \(bestGrad))")
        }
        report.heading("Paper vs. this run")
        report.claims(claims)
        let dcol = table.columns.firstIndex(of: "diverged")!
        let diverged = Set(table.rows.filter { $0[dcol] == "1" }.map { "\($0[0]) \($0[1]) lr \($0[2])" }).sorted()
        if !diverged.isEmpty {
            report.paragraph("Runs that left the finite numbers (recorded at chance accuracy from then on): \(diverged.joined(separator: "; ")).")
        }
        report.heading("Plot")
        report.image(plot, "test accuracy per epoch")
        report.paragraph("Raw data: `results.csv` (one row per model, method, learning rate, seed and epoch).")
        try report.write(to: c.file("report.md"))
        return ExperimentOutcome(name: name, title: title, directory: c.output, plots: [plot], headline: headline,
                                 seconds: Date().timeIntervalSince(start))
    }
}
