import Foundation
import LFP

/// Beyond the paper: LFP vs gradient descent on LeNet with activations other than ReLU, including
/// the Heaviside step, whose derivative is zero almost everywhere. Measures how feedback grows
/// through the layers at initialisation under each rule variant, then trains every activation
/// with its LFP recipe (``ActivationRecipe``, the command line's defaults), with plain
/// LFP-epsilon where the recipe differs, and with gradient descent at its defaults.
public enum ActivationsExperiment {
    public static let name = "activations"
    public static let title = "LFP vs gradient descent with other activation functions (beyond the paper)"

    public static let activations: [(key: String, activation: Activation)] = [
        ("relu", .relu), ("step", .step), ("sigmoid", .sigmoid), ("tanh", .tanh), ("silu", .silu), ("elu", .elu(alpha: 1)),
        ("leaky-relu", .leakyReLU(slope: 0.01)),
    ]

    /// The rule variants whose feedback growth is measured at initialisation.
    static let growthVariants: [(key: String, composite: Composite, centred: Bool)] = [
        ("epsilon", .uniform(.epsilon), false),
        ("epsilon+centred", .uniform(.epsilon), true),
        ("scaled-epsilon:0.25", .uniform(.scaledEpsilon(0.25)), false),
        ("scaled-epsilon:0.25+centred", .uniform(.scaledEpsilon(0.25)), true),
        ("threshold-epsilon:0.5+centred", .uniform(.thresholdEpsilon(0.5)), true),
    ]

    /// The total absolute feedback arriving at each affine layer's output (sum of |f| over the
    /// batch), divided by the total at the logits, for one batch (softmax feedback, no noise):
    /// how much of the feedback a rule conserves (1), absorbs (< 1) or amplifies (> 1) on its
    /// way down.
    static func feedbackGrowth(_ model: Sequential, _ composite: Composite, centred: Bool, x: Tensor, labels: [Int]) throws -> [Double] {
        var rng = SeededRandom(seed: 0)
        let trace = model.trace(x, training: false, rng: &rng)
        let f = FeedbackFunction.softmax(logits: trace.output, labels: labels)
        let propagator = try FeedbackPropagator(model: model, composite: composite,
                                                options: .init(recordLayerFeedback: true, centredInputs: centred))
        let layers = propagator.propagate(model: model, trace: trace, feedback: f).layerOutputs ?? []
        func total(_ t: Tensor) -> Double { t.storage.reduce(0.0) { $0 + abs(Double($1)) } }
        let top = max(total(f), .leastNormalMagnitude)
        return model.layers.indices.filter { model.layers[$0].kind == .linear || model.layers[$0].kind == .conv2d }.map { total(layers[$0]) / top }
    }

    struct Method {
        var key: String
        var label: String
        var settings: (Activation) -> (recipe: ActivationRecipe, method: TrainingMethod)
        /// Run only for activations whose LFP recipe is not the standard one.
        var onlyWhereRecipeDiffers = false
    }

    public static func run(_ c: ExperimentConfiguration) throws -> ExperimentOutcome {
        let start = Date()
        try FileManager.default.createDirectory(at: c.output, withIntermediateDirectories: true)
        let s = c.scale
        let trainLimit: Int? = s.pick(smoke: 32, quick: 6_000, standard: nil, full: nil)
        let testLimit: Int? = s.pick(smoke: 32, quick: 2_000, standard: nil, full: nil)
        let epochs = s.pick(smoke: 1, quick: 3, standard: 5, full: 5)
        let seeds = c.seedCount(standard: 1, full: 2)
        let data = try ExperimentData.images(c, trainLimit: trainLimit, testLimit: testLimit)
        let methods: [Method] = [
            Method(key: "lfp-recipe", label: "LFP, the activation's recipe", settings: { (.lfp(for: $0), .lfp) }),
            Method(key: "lfp-epsilon", label: "LFP-epsilon, standard settings", settings: { _ in (.standard, .lfp) }, onlyWhereRecipeDiffers: true),
            Method(key: "gradient", label: "gradient descent, standard settings (SGD lr 0.01)", settings: { _ in
                var r = ActivationRecipe.standard
                r.learningRate = 0.01
                return (r, .gradient(.softmaxCrossEntropy))
            }),
        ]
        c.log("\(name): lenet on \(data.name) (\(data.train.count) train / \(data.test.count) test), \(epochs) epochs, \(seeds) seed(s)")

        // 1. Feedback growth at initialisation (seed 1, the first 256 training images).
        let probeCount = min(256, data.train.count)
        var features: [Float] = [], probeLabels: [Int] = []
        data.train.fill(indices: Array(0..<probeCount)[...], features: &features, labels: &probeLabels)
        let probe = Tensor(shape: [probeCount] + data.train.sampleShape, storage: features)
        var growthTable = ResultsTable(columns: ["activation", "variant", "layer", "total_feedback_over_logits"])
        var growth: [String: [String: [Double]]] = [:]
        for a in activations {
            let net = try ModelZoo.make("lenet", .init(inputShape: data.train.sampleShape, classes: data.train.classCount, activation: a.activation), seed: 1)
            for v in growthVariants {
                let g = try feedbackGrowth(net, v.composite, centred: v.centred, x: probe, labels: probeLabels)
                growth[a.key, default: [:]][v.key] = g
                for (l, value) in g.enumerated() { growthTable.append(["activation": a.key, "variant": v.key, "layer": l + 1, "total_feedback_over_logits": value]) }
            }
        }
        try growthTable.write(to: c.file("feedback-growth.csv"))

        // 2. Training.
        var table = ResultsTable(columns: ["activation", "method", "settings", "seed", "dataset", "train_samples"] + Runs.epochColumns)
        var curves: [String: [String: [[Double]]]] = [:]   // curves[activation][method]
        for a in activations {
            for m in methods {
                if m.onlyWhereRecipeDiffers && ActivationRecipe.lfp(for: a.activation) == .standard { continue }
                let (recipe, method) = m.settings(a.activation)
                for seed in 1...seeds {
                    let noise: Float = { if case .gradient = method { return 0 }; return recipe.noise }()
                    let net = try ModelZoo.make("lenet", .init(inputShape: data.train.sampleShape, classes: data.train.classCount,
                                                               activation: a.activation, noise: noise), seed: UInt64(seed))
                    let stepsTotal = (data.train.count + recipe.batchSize - 1) / recipe.batchSize * epochs
                    var settings = RunSettings(method: method, composite: try Composite.preset(named: recipe.composite),
                                               feedback: try FeedbackFunction.named(recipe.feedback),
                                               options: .init(centredInputs: recipe.centredInputs),
                                               optimizer: recipe.optimizer == "adam" ? .adam(learningRate: recipe.learningRate)
                                                                                     : .sgd(learningRate: recipe.learningRate, momentum: 0.9),
                                               schedule: .cosine(totalSteps: stepsTotal, minimum: 0), epochs: epochs,
                                               batchSize: recipe.batchSize, seed: UInt64(seed))
                    settings.clipNorm = recipe.clip
                    let result = try Runs.train(net, settings, train: data.train, test: data.test)
                    // The command line that reproduces the run (with --activation and --epochs).
                    let described = { if case .gradient = method {
                        return "--method gradient --optimizer \(recipe.optimizer) --lr \(recipe.learningRate) --batch-size \(recipe.batchSize)" }
                        return recipe.summary }()
                    for e in result.epochs {
                        var row = Runs.epochRow(e)
                        row.merge(["activation": a.key, "method": m.key, "settings": described, "seed": seed, "dataset": data.name,
                                   "train_samples": data.train.count]) { $1 }
                        table.append(row)
                    }
                    curves[a.key, default: [:]][m.key, default: []].append([result.initialTestAccuracy] + result.epochs.map(\.testAccuracy))
                    c.log("\(a.key) \(m.key) seed \(seed): \(result.epochs.map { fmt($0.testAccuracy) }.joined(separator: " ")) (\(Int(result.seconds)) s)\(result.diverged ? " diverged" : "") | \(described)")
                }
            }
        }
        try table.write(to: c.file("results.csv"))

        func final(_ a: String, _ m: String) -> Double? { curves[a]?[m].map { Statistics.mean($0.map { $0.last! }) } }
        func finals(_ a: String, _ m: String) -> String { curves[a]?[m].map { $0.map { fmt($0.last!) }.joined(separator: ", ") } ?? "" }
        let panels = methods.map { m in
            LinePlot(title: m.label, xLabel: "epoch", yLabel: "test accuracy",
                     series: activations.enumerated().compactMap { i, a in curves[a.key]?[m.key].map { meanSeries(a.key, $0, x0: 0, color: LinePlot.color(i)) } },
                     yRange: 0...1)
        }
        let plot = try writePlot(PlotGrid(title: "LeNet on \(data.name) with different activations", panels: panels, columns: 3,
                                          panelWidth: 500, panelHeight: 340).svg(), "activations.svg", c)

        var report = Report(title: title)
        report.paragraph("""
            Setup: LeNet (no dropout) on \(data.name) (\(data.train.count) training / \(data.test.count) test images), the \
            activation after every hidden layer replaced; \(epochs) epoch(s), cosine schedule over the run, \(seeds) seed(s). \
            Each activation is trained with LFP using its recipe (`ActivationRecipe.lfp(for:)`, what `lfp train --activation X` \
            uses), with plain LFP-epsilon at the standard settings where the recipe differs (step, sigmoid), and with gradient \
            descent (cross-entropy, SGD lr 0.01 momentum 0.9, batch 32: the command line's defaults). Under LFP every activation \
            passes feedback through unchanged; gradient descent multiplies by the activation's derivative (0 for the step \
            function). The reasoning and formulas: `docs/MATH-ACTIVATIONS.md`. Scale: `\(s)`.
            """)
        report.table(["activation", "LFP recipe", "LFP recipe (per seed)", "LFP-epsilon, standard", "gradient", "LFP recipe - gradient", "recipe"],
                     activations.map { a in
                         let r = final(a.key, "lfp-recipe"), g = final(a.key, "gradient")
                         return [a.key, r.map { fmt($0) } ?? "", finals(a.key, "lfp-recipe"), final(a.key, "lfp-epsilon").map { fmt($0) } ?? "(same as recipe)",
                                 g.map { fmt($0) } ?? "", (r != nil && g != nil) ? String(format: "%+.1f points", (r! - g!) * 100) : "",
                                 "`" + ActivationRecipe.lfp(for: a.activation).summary + "`"]
                     })
        report.heading("Feedback growth at initialisation")
        report.paragraph("""
            Total absolute feedback (sum of |f|) arriving at each parameter layer's output (conv1, conv2, fc1, fc2, fc3 = \
            logits), divided by the total at the logits, for \(probeCount) training images and the softmax feedback, at \
            initialisation (`feedback-growth.csv`): 1 means conserved, below 1 absorbed by biases, stabilisers and references, \
            above 1 amplified. Under \
            LFP-epsilon a unit passes on f_i = g(z_i) (W S)_i and the layer below divides by stab(z_i): the factor g(z)/z is \
            bounded for ReLU, tanh, SiLU, ELU and leaky ReLU, but not for the step (1/z) and the sigmoid (0.5/z near 0), so their \
            feedback explodes on its way down. Centred inputs make the sigmoid's factor bounded ((sigmoid(z) - 0.5)/z <= 1/4), \
            but then the fixed reference (0.5 times the weight sums) carries most of each output and absorbs most of the \
            feedback, which shrinks towards the input; the scaled stabiliser cuts the step's and the sigmoid's amplification \
            from about 10^6 to about 60, and to about 16 for the step with centred inputs; the threshold stabiliser of the \
            step's recipe, which also absorbs the feedback of outputs far from 0, keeps the step's feedback about conserved \
            (about 1 at every layer).
            """)
        let layerCount = growth["relu"]?["epsilon"]?.count ?? 0
        report.table(["activation", "variant"] + (1...max(1, layerCount)).map { "layer \($0)" },
                     activations.flatMap { a in growthVariants.map { v in [a.key, v.key] + (growth[a.key]?[v.key] ?? []).map { sci($0) } } })
        let chance = 1 / Double(data.train.classCount)
        let stepL = final("step", "lfp-recipe") ?? .nan, stepG = final("step", "gradient") ?? .nan
        let stepPlain = final("step", "lfp-epsilon") ?? .nan
        var claims: [Claim] = []
        claims.append(Claim("LFP trains networks whose activation has no useful derivative (step functions); gradient descent cannot (paper 2.1, 3.1)",
                            "step activation: LFP with its recipe \(fmt(stepL)), plain LFP-epsilon \(fmt(stepPlain)), gradient \(fmt(stepG)) (the step's derivative is 0, so gradient descent trains only the output layer on fixed random features), chance \(fmt(chance)); criterion: LFP at least 5 points above gradient",
                            stepL > stepG + 0.05 ? .agree : .disagree))
        claims.append(Claim("(reference implementation) step-activated nets reach 70-76 % on MNIST with LFP after 400 epochs, with noise injected before each layer",
                            "step LeNet on \(data.name) after \(epochs) epoch(s): \(fmt(stepL)) with the recipe (centred inputs, threshold-epsilon)",
                            stepL > 0.7 ? .agree : .inconclusive))
        let smooth = ["sigmoid", "tanh", "silu", "elu", "leaky-relu"]
        let gaps = smooth.map { (final($0, "lfp-recipe") ?? .nan) - (final($0, "gradient") ?? .nan) }
        claims.append(Claim("(no claim in the paper) LFP does not consider the activation explicitly (2.4); how close is it to gradient descent for other activations?",
                            smooth.enumerated().map { "\($0.element) \(String(format: "%+.1f", gaps[$0.offset] * 100))" }.joined(separator: ", ") + " points (LFP recipe - gradient)",
                            .inconclusive))
        report.heading("Paper vs. this run")
        report.claims(claims)
        report.heading("Plot")
        report.image(plot, "accuracy per epoch for each activation")
        report.paragraph("Raw data: `results.csv` (one row per activation, method, seed and epoch), `feedback-growth.csv`.")
        try report.write(to: c.file("report.md"))
        return ExperimentOutcome(name: name, title: title, directory: c.output, plots: [plot],
                                 headline: ["step: LFP recipe \(fmt(stepL)) (plain epsilon \(fmt(stepPlain))) vs gradient \(fmt(stepG)); "
                                            + (["sigmoid"] + smooth.dropFirst()).map { "\($0): \(fmt(final($0, "lfp-recipe") ?? .nan))/\(fmt(final($0, "gradient") ?? .nan))" }.joined(separator: ", ") + " (LFP/gradient)"],
                                 seconds: Date().timeIntervalSince(start))
    }
}
