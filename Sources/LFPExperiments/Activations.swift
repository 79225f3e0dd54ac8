import Foundation
import LFP

/// Beyond the paper: LFP-epsilon vs gradient descent on LeNet with activations other than ReLU,
/// including the Heaviside step, whose derivative is zero almost everywhere.
public enum ActivationsExperiment {
    public static let name = "activations"
    public static let title = "LFP vs gradient descent with other activation functions (beyond the paper)"

    public static let activations: [(key: String, activation: Activation)] = [
        ("relu", .relu), ("step", .step), ("sigmoid", .sigmoid), ("tanh", .tanh), ("silu", .silu), ("elu", .elu(alpha: 1)),
    ]

    public static func run(_ c: ExperimentConfiguration) throws -> ExperimentOutcome {
        let start = Date()
        try FileManager.default.createDirectory(at: c.output, withIntermediateDirectories: true)
        let s = c.scale
        let trainLimit: Int? = s.pick(smoke: 32, quick: 6_000, standard: nil, full: nil)
        let testLimit: Int? = s.pick(smoke: 32, quick: 2_000, standard: nil, full: nil)
        let epochs = s.pick(smoke: 1, quick: 3, standard: 3, full: 10)
        let seeds = c.seedCount(standard: 1, full: 3)
        let data = try ExperimentData.images(c, trainLimit: trainLimit, testLimit: testLimit)
        let batch = 32
        // Two learning rates per method: the library's ReLU defaults and one a decade away (LFP
        // lower: its steps scale with |w| and summed feedback; gradient higher: saturating
        // activations have small derivatives). The better one is reported per activation.
        let methods: [(key: String, label: String, method: TrainingMethod, lrs: [Float])] = [
            ("lfp-epsilon", "LFP-epsilon", .lfp, [0.0003, 0.003]), ("gradient", "gradient", .gradient(.softmaxCrossEntropy), [0.01, 0.1]),
        ]
        let stepsTotal = (data.train.count + batch - 1) / batch * epochs
        c.log("\(name): lenet on \(data.name) (\(data.train.count) train / \(data.test.count) test), \(epochs) epochs, \(seeds) seed(s)")
        var table = ResultsTable(columns: ["activation", "method", "learning_rate", "seed", "dataset", "train_samples"] + Runs.epochColumns)
        // curves[activation][method][lr]
        var curves: [String: [String: [Float: [[Double]]]]] = [:]
        for a in activations {
            for m in methods {
              for lr in m.lrs {
                for seed in 1...seeds {
                    let net = try ModelZoo.make("lenet", .init(inputShape: data.train.sampleShape, classes: data.train.classCount,
                                                               activation: a.activation), seed: UInt64(seed))
                    let settings = RunSettings(method: m.method, feedback: .sigmoid, optimizer: .sgd(learningRate: lr, momentum: 0.9),
                                               schedule: .cosine(totalSteps: stepsTotal, minimum: 0), epochs: epochs, batchSize: batch, seed: UInt64(seed))
                    let result = try Runs.train(net, settings, train: data.train, test: data.test)
                    for e in result.epochs {
                        var row = Runs.epochRow(e)
                        row.merge(["activation": a.key, "method": m.key, "learning_rate": lr, "seed": seed, "dataset": data.name,
                                   "train_samples": data.train.count]) { $1 }
                        table.append(row)
                    }
                    curves[a.key, default: [:]][m.key, default: [:]][lr, default: []].append([result.initialTestAccuracy] + result.epochs.map(\.testAccuracy))
                    c.log("\(a.key) \(m.key) lr \(lr) seed \(seed): \(result.epochs.map { fmt($0.testAccuracy) }.joined(separator: " ")) (\(Int(result.seconds)) s)\(result.diverged ? " diverged" : "")")
                }
              }
            }
        }
        try table.write(to: c.file("results.csv"))

        func final(_ a: String, _ m: String, _ lr: Float) -> Double { Statistics.mean(curves[a]![m]![lr]!.map { $0.last! }) }
        func bestLR(_ a: String, _ m: String) -> Float { methods.first { $0.key == m }!.lrs.max { final(a, m, $0) < final(a, m, $1) }! }
        func final(_ a: String, _ m: String) -> Double { final(a, m, bestLR(a, m)) }
        let panels = methods.map { m in
            LinePlot(title: "\(m.label) (best of lr \(m.lrs.map { "\($0)" }.joined(separator: " / ")), cosine)", xLabel: "epoch", yLabel: "test accuracy",
                     series: activations.enumerated().map { i, a in meanSeries("\(a.key) (lr \(bestLR(a.key, m.key)))", curves[a.key]![m.key]![bestLR(a.key, m.key)]!, x0: 0, color: LinePlot.color(i)) },
                     yRange: 0...1)
        }
        var bars = LinePlot(title: "Final test accuracy by activation", xLabel: "activation (1 relu, 2 step, 3 sigmoid, 4 tanh, 5 silu, 6 elu)",
                            yLabel: "test accuracy", series: [], yRange: 0...1)
        bars.series = methods.enumerated().map { i, m in
            // the best learning rate per activation
            LinePlot.Series(name: m.label, points: activations.enumerated().map { (Double($0.offset + 1), final($0.element.key, m.key)) },
                            markersOnly: true, color: LinePlot.color(i))
        }
        let plot = try writePlot(PlotGrid(title: "LeNet on \(data.name) with different activations", panels: panels + [bars], columns: 3,
                                          panelWidth: 500, panelHeight: 340).svg(), "activations.svg", c)

        var report = Report(title: title)
        report.paragraph("""
            Setup: LeNet (no dropout) on \(data.name) (\(data.train.count) training / \(data.test.count) test images), the \
            activation after every hidden layer replaced; batch \(batch), SGD momentum 0.9 with a cosine schedule over the run, \
            \(epochs) epoch(s), \(seeds) seed(s). LFP-epsilon with sigmoid feedback (summed over the batch) at lr 0.0003 and \
            0.003 (0.003 is the library's default for ReLU), gradient descent (cross-entropy) at lr 0.01 (its default) and 0.1; \
            the better learning rate per activation and method is reported. Under LFP every \
            activation passes feedback through unchanged; gradient descent multiplies by the activation's derivative (0 for the \
            step function). Scale: `\(s)`.
            """)
        report.table(["activation"] + methods.flatMap { m in m.lrs.map { "\(m.label) lr \($0)" } } + ["best LFP - best gradient"],
                     activations.map { a in [a.key] + methods.flatMap { m in m.lrs.map { fmt(final(a.key, m.key, $0)) } }
                                             + [String(format: "%+.1f points", (final(a.key, "lfp-epsilon") - final(a.key, "gradient")) * 100)] })
        let dcol = table.columns.firstIndex(of: "diverged")!
        let diverged = Set(table.rows.filter { $0[dcol] == "1" }.map { "\($0[0]) \($0[1]) lr \($0[2])" }).sorted()
        if !diverged.isEmpty { report.paragraph("Runs that left the finite numbers (chance accuracy from then on): \(diverged.joined(separator: "; ")).") }
        // Why some activations fail under LFP-epsilon: the first epoch's mean squared parameter change.
        func firstEpochChange(_ a: String) -> Double {
            let lr = bestLR(a, "lfp-epsilon")
            let v = table.values("mean_squared_change", where: ["activation": a, "method": "lfp-epsilon", "learning_rate": ResultsTable.format(lr), "epoch": "1"])
            return Statistics.mean(v.compactMap(Double.init))
        }
        report.paragraph("""
            Under LFP-epsilon a layer's parameter feedback is |w| * a * f / stab(z), where f is the feedback arriving at the \
            pre-activation z. For ReLU, tanh, SiLU and ELU the activation is about proportional to z near 0, so the feedback a \
            unit passes on (proportional to its activation) shrinks with z and f / z stays bounded. The step function and the \
            sigmoid are not zero at z = 0 (H(0+) = 1, sigmoid(0) = 0.5): a unit with z near 0 still passes on feedback, and \
            f / stab(z) explodes. Mean squared parameter change in the first epoch (LFP-epsilon, best lr): \
            \(activations.map { "\($0.key) \(sci(firstEpochChange($0.key)))" }.joined(separator: ", ")).
            """)
        let chance = 1 / Double(data.train.classCount)
        let stepL = final("step", "lfp-epsilon"), stepG = final("step", "gradient")
        var claims: [Claim] = []
        claims.append(Claim("LFP trains networks whose activation has no useful derivative (step functions); gradient descent cannot (paper 2.1, 3.1)",
                            "step activation: LFP-epsilon \(fmt(stepL)), gradient \(fmt(stepG)) (the step's derivative is 0, so gradient descent trains only the output layer on fixed random features), chance \(fmt(chance)); criterion: LFP at least 5 points above gradient",
                            stepL > stepG + 0.05 ? .agree : .disagree))
        claims.append(Claim("(reference implementation) step-activated nets reach 70-76 % on MNIST with LFP only with noise injected before each layer",
                            "no noise injection here; LFP-epsilon with step activations: \(fmt(stepL)) on \(data.name)", .inconclusive))
        let smooth = ["sigmoid", "tanh", "silu", "elu"]
        let gaps = smooth.map { final($0, "lfp-epsilon") - final($0, "gradient") }
        claims.append(Claim("(no claim in the paper) LFP does not consider the activation explicitly (2.4); how close is it to gradient descent for smooth activations?",
                            smooth.enumerated().map { "\($0.element) \(String(format: "%+.1f", gaps[$0.offset] * 100))" }.joined(separator: ", ") + " points (LFP - gradient)",
                            .inconclusive))
        report.heading("Paper vs. this run")
        report.claims(claims)
        report.heading("Plot")
        report.image(plot, "accuracy per epoch for each activation")
        report.paragraph("Raw data: `results.csv` (one row per activation, method, seed and epoch).")
        try report.write(to: c.file("report.md"))
        return ExperimentOutcome(name: name, title: title, directory: c.output, plots: [plot],
                                 headline: ["step: LFP \(fmt(stepL)) vs gradient \(fmt(stepG)); " + smooth.map { "\($0): \(fmt(final($0, "lfp-epsilon")))/\(fmt(final($0, "gradient")))" }.joined(separator: ", ") + " (LFP/gradient)"],
                                 seconds: Date().timeIntervalSince(start))
    }
}
