import Foundation
import LFP

/// Appendix A.4: shattering of the back-propagated signal. (a) A 1-D grid of inputs through
/// ReLU networks of growing depth (200 units per layer): the signal at the input, for gradients
/// and for each LFP rule, and how correlated it is between neighbouring grid points (lag-1
/// autocorrelation along the grid). (b) Accuracy vs depth (1-20 hidden layers, widths 8-64) on
/// the sign data.
public enum Shattering {
    public static let name = "shattering"
    public static let title = "Shattering of gradients vs LFP signals with depth (appendix A.4)"

    public static let signals: [(key: String, label: String)] = [
        ("gradient", "gradient"), ("epsilon", "LFP-epsilon"), ("alpha-beta", "LFP-alpha2-beta1"), ("zplus-zminus", "LFP-z+z-"),
    ]

    /// The model of A.4: 1 input, `depth` hidden ReLU layers of `width` units, 2 outputs.
    public static func model(depth: Int, width: Int, seed: UInt64) throws -> Sequential {
        try ModelZoo.make("toy", .init(inputShape: [1], classes: 2, hidden: Array(repeating: width, count: max(1, depth))), seed: seed)
    }

    /// The initialisations compared in (a): PyTorch's default (weights and biases uniform in
    /// +-1/sqrt(fan_in), the library's), under which the activations shrink with depth until the
    /// biases dominate; and He's weights (N(0, 2/fan_in), as in Balduzzi et al.), which keep the
    /// activations' scale, with the default biases (zero biases would make a ReLU net of a 1-D
    /// input linear on each side of 0, so it could not shatter).
    public static let inits: [(key: String, label: String)] = [("pytorch-default", "PyTorch default init"), ("he", "He-init weights")]

    /// `model` with the weights of every Linear layer re-drawn from N(0, 2/fan_in) (biases kept).
    public static func heInitialized(_ model: Sequential, seed: UInt64) -> Sequential {
        var g = SeededGenerator(seed: seed &+ 0x4E)
        var m = model
        for (i, layer) in m.layers.enumerated() {
            guard case .linear(let l) = layer else { continue }
            let std = (2 / Double(l.inFeatures)).squareRoot()
            let w = Tensor(shape: l.weight.shape, storage: (0..<l.weight.count).map { _ in Float(g.nextGaussian() * std) })
            m.layers[i] = .linear(Linear(weight: w, bias: l.bias))
        }
        return m
    }

    /// The gradient at the input with the signal divided by its max-abs after every layer
    /// (as the LFP signals are with backward normalisation). Linear, activation and flatten
    /// layers only. The output gradient is that of the summed sigmoid binary cross-entropy, the
    /// loss whose negative gradient the sigmoid feedback function uses.
    public static func normalizedInputGradient(_ model: Sequential, trace: Trace, labels: [Int], normalize: Bool = true) -> Tensor {
        var g = Loss.sigmoidBinaryCrossEntropy.evaluate(logits: trace.output, labels: labels, reduction: .sum).gradient
        for index in model.layers.indices.reversed() {
            switch model.layers[index] {
            case .linear(let l):
                g = Tensor.matmul(g, l.weight)
                if normalize {
                    let m = g.maxAbs()
                    if m > 0 && m.isFinite { g.scale(by: 1 / m) }
                }
            case .activation(let a):
                let x = trace.inputs[index], y = trace.outputs[index]
                for i in 0..<g.count { g.storage[i] *= a.derivative(x: x.storage[i], y: y.storage[i]) }
            case .flatten:
                g.reshape(trace.inputs[index].shape)
            default:
                preconditionFailure("normalizedInputGradient handles dense ReLU networks only, not \(model.layers[index])")
            }
        }
        return g
    }

    /// The signal at the input for every grid point: gradient (`key == "gradient"`) or LFP with
    /// the composite preset `key`, with backward normalisation (or without, for the magnitude).
    public static func inputSignal(_ key: String, model: Sequential, grid: Dataset, normalize: Bool = true) throws -> [Double] {
        let x = Tensor(shape: [grid.count] + grid.sampleShape, storage: grid.features)
        var rng = SeededRandom(seed: 0)
        let trace = model.trace(x, training: false, rng: &rng)
        if key == "gradient" {
            return normalizedInputGradient(model, trace: trace, labels: grid.labels, normalize: normalize).storage.map(Double.init)
        }
        let propagator = try FeedbackPropagator(model: model, composite: try Composite.preset(named: key),
                                                options: .init(backwardNormalization: normalize, computeInputFeedback: true))
        let f = FeedbackFunction.sigmoid(logits: trace.output, labels: grid.labels)
        return propagator.propagate(model: model, trace: trace, feedback: f).input!.storage.map(Double.init)
    }

    public static func run(_ c: ExperimentConfiguration) throws -> ExperimentOutcome {
        let start = Date()
        try FileManager.default.createDirectory(at: c.output, withIntermediateDirectories: true)
        let s = c.scale
        let depths = s.pick(smoke: [1, 4], quick: [1, 2, 5, 10, 20, 50, 100], standard: [1, 2, 5, 10, 20, 50, 100, 200],
                            full: [1, 2, 5, 10, 20, 50, 100, 200, 500])
        let width = s == .smoke ? 32 : 200
        let seeds = c.seedCount(smoke: 1, quick: 3, standard: 5, full: 10)
        let grid = try ExperimentData.signGrid(step: 0.02)
        var table = ResultsTable(columns: ["part", "init", "reduction", "signal", "depth", "width", "seed", "x", "value", "lag1_autocorrelation",
                                           "nonzero_fraction", "log10_gain", "epochs", "test_accuracy", "learning_rate", "diverged"])

        // (a) Signals along the grid.
        // Keyed by "init/signal".
        var autocorr: [String: [Int: [Double]]] = [:]
        var nonzero: [String: [Int: [Double]]] = [:]
        var gain: [String: [Int: [Double]]] = [:]
        var examples: [String: [Int: [Double]]] = [:]
        for ini in inits {
          for depth in depths {
            for seed in 1...seeds {
                let base = try model(depth: depth, width: width, seed: UInt64(seed))
                let net = ini.key == "he" ? heInitialized(base, seed: UInt64(seed)) : base
                for sig0 in signals {
                    let sig = (key: sig0.key, label: sig0.label, id: "\(ini.key)/\(sig0.key)")
                    let v = try inputSignal(sig.key, model: net, grid: grid)
                    let r = Statistics.autocorrelation(v, lag: 1)
                    let m = v.map(abs).max() ?? 0
                    let nz = Double(v.filter { abs($0) > 1e-6 * m && m > 0 }.count) / Double(v.count)
                    // Unnormalised magnitude: how much the signal grows or shrinks from the logits to the input.
                    let raw = try inputSignal(sig.key, model: net, grid: grid, normalize: false)
                    let rawMax = raw.map(abs).max() ?? 0
                    var rng = SeededRandom(seed: 0)
                    let logits = net.trace(Tensor(shape: [grid.count, 1], storage: grid.features), training: false, rng: &rng).output
                    let top = sig.key == "gradient"
                        ? Loss.sigmoidBinaryCrossEntropy.evaluate(logits: logits, labels: grid.labels, reduction: .sum).gradient.maxAbs()
                        : FeedbackFunction.sigmoid(logits: logits, labels: grid.labels).maxAbs()
                    let g = rawMax.isFinite && rawMax > 0 && top > 0 ? log10(rawMax / Double(top)) : (rawMax == 0 ? -.infinity : .nan)
                    autocorr[sig.id, default: [:]][depth, default: []].append(r)
                    nonzero[sig.id, default: [:]][depth, default: []].append(nz)
                    gain[sig.id, default: [:]][depth, default: []].append(g)
                    table.append(["part": "signal", "init": ini.key, "signal": sig.key, "depth": depth, "width": width, "seed": seed,
                                  "lag1_autocorrelation": r, "nonzero_fraction": nz, "log10_gain": g])
                    if seed == 1 {
                        examples[sig.id, default: [:]][depth] = v
                        for (x, value) in zip(grid.features, v) {
                            table.append(["part": "signal-values", "init": ini.key, "signal": sig.key, "depth": depth, "width": width, "seed": seed,
                                          "x": Double(x), "value": value])
                        }
                    }
                }
            }
            c.log("\(ini.key) depth \(depth): lag-1 autocorrelation " + signals.map { "\($0.key) \(fmt(Statistics.mean(autocorr["\(ini.key)/\($0.key)"]![depth]!)))" }.joined(separator: ", "))
          }
        }

        // (b) Accuracy vs depth.
        let trainDepths = s.pick(smoke: [1, 3], quick: [1, 2, 3, 4, 6, 8, 12, 16, 20], standard: Array(1...20), full: Array(1...20))
        let widths = s.pick(smoke: [8], quick: [8, 32], standard: [8, 16, 32, 64], full: [8, 16, 32, 64])
        let trainSeeds = c.seedCount(smoke: 1, quick: 1, standard: 3, full: 3)
        let epochs = s == .smoke ? 1 : 5
        let lr: Float = 1
        let reductions: [Reduction] = [.sum, .mean]
        // Keyed by "reduction/signal".
        var accuracy: [String: [Int: [Double]]] = [:]
        var divergedRuns: [String: Int] = [:]
        for depth in trainDepths {
            for w in widths {
                for seed in 1...trainSeeds {
                    let all = try ToyData.signData(count: s == .smoke ? 300 : 2_000, seed: UInt64(seed))
                    let (train, test) = try ExperimentData.holdOut(all, testCount: 100, seed: UInt64(seed))
                    let net = try model(depth: depth, width: w, seed: UInt64(1000 * seed + depth))
                    for reduction in reductions {
                        for sig in signals {
                            // The gradient baseline always averages its loss over the batch.
                            if sig.key == "gradient" && reduction == .sum { continue }
                            let settings = RunSettings(method: sig.key == "gradient" ? .gradient(.softmaxCrossEntropy) : .lfp,
                                                       composite: sig.key == "gradient" ? .uniform(.epsilon) : try Composite.preset(named: sig.key),
                                                       feedback: .sigmoid, options: .init(reduction: reduction, backwardNormalization: true),
                                                       optimizer: .sgd(learningRate: lr, momentum: 0.9), epochs: epochs, batchSize: 32, seed: UInt64(seed))
                            let result = try Runs.train(net, settings, train: train, test: test)
                            let id = "\(reduction)/\(sig.key)"
                            accuracy[id, default: [:]][depth, default: []].append(result.finalTestAccuracy)
                            if result.diverged { divergedRuns[id, default: 0] += 1 }
                            table.append(["part": "training", "reduction": sig.key == "gradient" ? "mean" : reduction.rawValue, "signal": sig.key,
                                          "depth": depth, "width": w, "seed": seed, "epochs": epochs,
                                          "test_accuracy": result.finalTestAccuracy, "learning_rate": lr, "diverged": result.diverged ? 1 : 0])
                        }
                    }
                }
            }
            c.log("trained depth \(depth): accuracy (mean reduction) " + signals.map { "\($0.key) \(fmt(Statistics.mean(accuracy["mean/\($0.key)"]![depth]!)))" }.joined(separator: ", ")
                  + "; (sum) " + signals.dropFirst().map { "\($0.key) \(fmt(Statistics.mean(accuracy["sum/\($0.key)"]![depth]!)))" }.joined(separator: ", "))
        }
        try table.write(to: c.file("results.csv"))

        // Plots.
        func corrPanel(_ ini: (key: String, label: String)) -> LinePlot {
            LinePlot(title: "Neighbour correlation, \(ini.label)", xLabel: "hidden layers", yLabel: "lag-1 autocorrelation along the grid",
                     series: signals.enumerated().map { i, sig in
                         let a = autocorr["\(ini.key)/\(sig.key)"]!
                         return LinePlot.Series(name: sig.label, points: depths.map { (Double($0), Statistics.mean(a[$0]!)) }, color: LinePlot.color(i),
                                                band: seeds > 1 ? depths.map { d in (Double(d), a[d]!.filter(\.isFinite).min() ?? .nan, a[d]!.filter(\.isFinite).max() ?? .nan) } : [])
                     }, yRange: -0.2...1, logX: true, note: "mean over \(seeds) inits;\nband: min..max")
        }
        func gainPanel(_ ini: (key: String, label: String)) -> LinePlot {
            LinePlot(title: "Unnormalised magnitude, \(ini.label)", xLabel: "hidden layers", yLabel: "log10(max|input signal| / max|output signal|)",
                     series: signals.enumerated().map { i, sig in
                         LinePlot.Series(name: sig.label, points: depths.map { (Double($0), Statistics.median(gain["\(ini.key)/\(sig.key)"]![$0]!)) }, color: LinePlot.color(i))
                     }, logX: true, note: "median over inits;\nmissing: over/underflow")
        }
        func accPanel(_ reduction: Reduction) -> LinePlot {
            LinePlot(title: "Accuracy vs depth, LFP feedback \(reduction == .sum ? "summed" : "averaged") over the batch", xLabel: "hidden layers", yLabel: "test accuracy",
                     series: signals.enumerated().map { i, sig in
                         LinePlot.Series(name: sig.label, points: trainDepths.map { (Double($0), Statistics.mean(accuracy["\(sig.key == "gradient" ? "mean" : reduction.rawValue)/\(sig.key)"]![$0]!)) },
                                         dashed: sig.key == "gradient", color: LinePlot.color(i))
                     }, yRange: 0.3...1, note: "mean over widths \(widths.map(String.init).joined(separator: ", "))\nand \(trainSeeds) seed(s); gradient:\nmean cross-entropy")
        }
        let plot1 = try writePlot(PlotGrid(title: "Shattering: gradients vs LFP signals at the input of ReLU nets of width \(width)",
                                           panels: [corrPanel(inits[0]), corrPanel(inits[1]), gainPanel(inits[0]), gainPanel(inits[1])],
                                           columns: 2, panelWidth: 580, panelHeight: 360).svg(), "shattering.svg", c)
        let plot3 = try writePlot(PlotGrid(title: "Accuracy vs depth on the sign data (SGD lr \(lr), momentum 0.9, \(epochs) epochs)",
                                           panels: [accPanel(.sum), accPanel(.mean)], columns: 2, panelWidth: 580, panelHeight: 360).svg(),
                                  "accuracy-vs-depth.svg", c)
        let shown = depths.count <= 4 ? depths : [depths[0], depths[depths.count / 3], depths[2 * depths.count / 3], depths.last!]
        var signalPanels: [LinePlot] = []
        for ini in inits {
            for sig in signals {
                signalPanels.append(LinePlot(title: "\(sig.label), \(ini.label)", xLabel: "input x", yLabel: "signal / max|signal|",
                                             series: shown.enumerated().map { i, d in
                                                 let v = examples["\(ini.key)/\(sig.key)"]![d]!
                                                 let m = v.map(abs).max() ?? 1
                                                 return LinePlot.Series(name: "\(d) hidden layers", points: zip(grid.features, v).map { (Double($0), m > 0 ? $1 / m : 0) }, color: LinePlot.color(i))
                                             }, yRange: -1.05...1.05))
            }
        }
        let plot2 = try writePlot(PlotGrid(title: "The signal at the input along the grid x in [-1, 1] (step 0.02), one random init",
                                           panels: signalPanels, columns: 4, panelWidth: 470, panelHeight: 300).svg(), "signals.svg", c)

        // Findings.
        func r(_ ini: String, _ k: String, _ d: Int) -> Double { Statistics.mean(autocorr["\(ini)/\(k)"]![d]!) }
        func acc(_ red: String, _ k: String, _ ds: [Int]) -> Double { Statistics.mean(ds.flatMap { accuracy["\(k == "gradient" ? "mean" : red)/\(k)"]![$0]! }) }
        let deep = depths.last!, shallow = depths.first!
        var report = Report(title: title)
        report.paragraph("""
            Setup (a): inputs x on a grid from -1 to 1 with step 0.02 (\(grid.count) points, class = sign of x); ReLU networks \
            1-\(width)-...-\(width)-2 with 1 to \(deep) hidden layers of \(width) units, untrained, with two initialisations: \
            PyTorch's default (the library's: weights and biases uniform in +-1/sqrt(fan_in); the activations shrink layer by \
            layer until the biases dominate) and He's weights (N(0, 2/fan_in), as in Balduzzi et al., which keep the activations' \
            scale; biases as by default); \(seeds) random inits per depth. The signal at the input: the gradient of the \
            summed sigmoid binary cross-entropy (the loss whose negative gradient the sigmoid feedback uses), and LFP with the \
            sigmoid feedback under each rule, divided by its max-abs after every layer (as in the paper). Correlation between \
            neighbouring inputs = lag-1 autocorrelation of the signal along the grid (1 = smooth, about 0 = white noise). \
            Setup (b): the sign data (\(s == .smoke ? 200 : 1_900) training / 100 test points), widths \
            \(widths.map(String.init).joined(separator: ", ")), \(trainDepths.first!)-\(trainDepths.last!) hidden layers, SGD lr \(lr) \
            momentum 0.9, batch 32, \(epochs) epochs, sigmoid feedback with backward normalisation for LFP, cross-entropy for \
            gradient descent, \(trainSeeds) seed(s). Scale: `\(s)`.
            """)
        var deviations: [String] = []
        if deep < 500 { deviations.append("the paper goes to 500 hidden layers; this scale stops at \(deep) (`--full` goes to 500)") }
        deviations.append("the paper does not state the initialisation; we show both")
        deviations.append("the paper does not say whether LFP's parameter feedback is summed or averaged over the batch in (b); with the reference's sum, lr 1.0 diverges for every LFP rule here, so (b) is run both ways")
        report.paragraph("**Deviations and choices:** " + deviations.joined(separator: "; ") + ".")
        for ini in inits {
            report.heading("Lag-1 autocorrelation of the input signal, \(ini.label) (mean over inits)")
            report.table(["signal"] + depths.map { "\($0) layers" }, signals.map { sig in [sig.label] + depths.map { fmt(r(ini.key, sig.key, $0), 2) } })
        }
        report.heading("Fraction of grid points with a non-zero signal (He-init weights)")
        report.table(["signal"] + depths.map { "\($0) layers" }, signals.map { sig in [sig.label] + depths.map { fmt(Statistics.mean(nonzero["he/\(sig.key)"]![$0]!), 2) } })
        for ini in inits {
            report.heading("Unnormalised signal magnitude, \(ini.label): log10(max |input signal| / max |output signal|), median")
            report.table(["signal"] + depths.map { "\($0) layers" }, signals.map { sig in [sig.label] + depths.map { fmt(Statistics.median(gain["\(ini.key)/\(sig.key)"]![$0]!), 1) } })
        }
        report.heading("Accuracy vs depth (mean over widths and seeds)")
        let groups: [(String, [Int])] = [("1-3", trainDepths.filter { $0 <= 3 }), ("4-8", trainDepths.filter { $0 >= 4 && $0 <= 8 }),
                                         ("9-15", trainDepths.filter { $0 >= 9 && $0 <= 15 }), ("16-20", trainDepths.filter { $0 >= 16 })].filter { !$0.1.isEmpty }
        var accRows: [[String]] = []
        for red in ["sum", "mean"] {
            for sig in signals where !(sig.key == "gradient" && red == "sum") {
                let runs = trainDepths.count * widths.count * trainSeeds
                accRows.append([sig.label, sig.key == "gradient" ? "mean (loss)" : red] + groups.map { fmt(acc(red, sig.key, $0.1)) }
                               + ["\(divergedRuns["\(red)/\(sig.key)"] ?? 0) / \(runs)"])
            }
        }
        report.table(["signal", "batch reduction"] + groups.map { "\($0.0) hidden layers" } + ["diverged runs"], accRows)

        var claims: [Claim] = []
        for ini in inits {
            claims.append(Claim("Gradients become increasingly noise-like with depth (\(ini.label))",
                                "gradient lag-1 autocorrelation \(fmt(r(ini.key, "gradient", shallow), 2)) at \(shallow) layer(s) -> \(fmt(r(ini.key, "gradient", deep), 2)) at \(deep) (criterion: drops by more than 0.2)",
                                r(ini.key, "gradient", deep) < r(ini.key, "gradient", shallow) - 0.2 ? .agree : (r(ini.key, "gradient", deep) < r(ini.key, "gradient", shallow) - 0.05 ? .partly : .disagree)))
        }
        let he = "he"
        let epsDeep = r(he, "epsilon", deep)
        let epsNZ = Statistics.mean(nonzero["he/epsilon"]![deep]!), epsGain = Statistics.median(gain["he/epsilon"]![deep]!)
        let gradGain = Statistics.median(gain["he/gradient"]![deep]!)
        claims.append(Claim("LFP-epsilon shatters like the gradient and its signal also vanishes (He-init weights)",
                            "LFP-epsilon autocorrelation \(fmt(r(he, "epsilon", shallow), 2)) -> \(fmt(epsDeep, 2)); non-zero fraction at \(deep) layers \(fmt(epsNZ, 2)); log10 gain \(fmt(epsGain, 1)) (gradient: \(fmt(gradGain, 1)))",
                            epsDeep < r(he, "epsilon", shallow) - 0.2 ? (epsGain < gradGain - 1 || epsNZ < 0.5 ? .agree : .partly) : .disagree))
        let zDeep = r(he, "zplus-zminus", deep), abDeep = r(he, "alpha-beta", deep)
        claims.append(Claim("The rules that separate positive and negative contributions shatter less; LFP-z+z- stays stable even at 500 layers (He-init weights)",
                            "autocorrelation at \(deep) layers: z+z- \(fmt(zDeep, 2)), alpha-beta \(fmt(abDeep, 2)), epsilon \(fmt(epsDeep, 2)), gradient \(fmt(r(he, "gradient", deep), 2))",
                            zDeep > max(epsDeep, r(he, "gradient", deep)) + 0.2 && zDeep > 0.8 ? .agree
                                : (zDeep > max(epsDeep, r(he, "gradient", deep)) ? .partly : .disagree)))
        let deepGroup = groups.last!.1
        let beyondShallow = trainDepths.filter { $0 >= 4 }
        let ranked = signals.map { ($0, acc("mean", $0.key, beyondShallow)) }.sorted { $0.1 > $1.1 }
        let best = ranked[0], runnerUp = ranked.count > 1 ? ranked[1].1 : -1
        let contrastive = ["alpha-beta", "zplus-zminus"]
        let otherBest = ranked.filter { !contrastive.contains($0.0.key) }.map(\.1).max() ?? -1
        let deepChance = signals.allSatisfy { acc("mean", $0.key, deepGroup) < 0.65 }
        let verdict: Claim.Verdict = beyondShallow.isEmpty ? .inconclusive
            : (contrastive.contains(best.0.key) && best.1 >= otherBest + 0.03 ? (deepChance ? .agree : .partly)
               : (contrastive.contains(best.0.key) && best.1 > runnerUp ? .partly : .disagree))
        claims.append(Claim("In training, LFP-alpha-beta and LFP-z+z- are the most robust to depth (up to a point); at 20 hidden layers every method is at chance",
                            "feedback averaged over the batch, mean accuracy over \(beyondShallow.first ?? 0)-\(beyondShallow.last ?? 0) hidden layers: "
                                + ranked.map { "\($0.0.label) \(fmt($0.1))" }.joined(separator: ", ")
                                + "; at \(groups.last!.0) layers: " + signals.map { "\($0.label) \(fmt(acc("mean", $0.key, deepGroup)))" }.joined(separator: ", ")
                                + ". Summed over the batch (reference convention), lr \(lr): " + signals.dropFirst().map { "\($0.label) \(fmt(acc("sum", $0.key, trainDepths)))" }.joined(separator: ", ")
                                + " over all depths (criterion: a contrastive rule best by 3 points, every method below 0.65 at the deepest group)",
                            verdict))
        report.heading("Paper vs. this run")
        report.claims(claims)
        report.heading("Plots")
        report.image(plot1, "autocorrelation and magnitude vs depth")
        report.image(plot3, "accuracy vs depth")
        report.image(plot2, "input signals along the grid")
        report.paragraph("Raw data: `results.csv` — `part = signal` rows (per init, depth, seed and signal: autocorrelation, non-zero fraction, log10 gain), `part = signal-values` (the signal at every grid point, first init), `part = training` (final test accuracy per reduction, depth, width, seed).")
        try report.write(to: c.file("report.md"))
        return ExperimentOutcome(name: name, title: title, directory: c.output, plots: [plot1, plot3, plot2],
                                 headline: ["lag-1 autocorrelation at \(deep) layers (He-init weights): " + signals.map { "\($0.label) \(fmt(r(he, $0.key, deep), 2))" }.joined(separator: ", ")],
                                 seconds: Date().timeIntervalSince(start))
    }
}
