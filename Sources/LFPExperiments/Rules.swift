import Foundation
import LFP

/// Paper section 2.5, figure 3 (and A.6): a VGG-style network trained with gradient descent
/// and with every LFP composite, from a random initialisation and from a pretrained one; per
/// epoch the accuracy, the fraction of weight signs that changed and the mean squared change.
public enum RulesExperiment {
    public static let name = "rules"
    public static let title = "Effects of the LFP rules on a VGG-style network (paper 2.5, fig. 3)"

    /// Methods compared: gradient descent and the five composites of the paper.
    public static let methods: [(key: String, label: String)] = [
        ("gradient", "gradient"),
        ("epsilon", "LFP-epsilon"),
        ("alpha-beta", "LFP-alpha2-beta1"),
        ("zplus-zminus", "LFP-z+z-"),
        ("zplus-zminus-dense+epsilon-conv", "z+z- dense, epsilon conv"),
        ("zplus-zminus-dense+alpha-beta-conv", "z+z- dense, alpha-beta conv"),
    ]

    /// Replaces the last Linear layer by a freshly initialised one with `classes` outputs.
    public static func freshHead(_ model: Sequential, classes: Int, seed: UInt64) throws -> Sequential {
        guard let index = model.layers.lastIndex(where: { if case .linear = $0 { true } else { false } }),
              case .linear(let old) = model.layers[index] else { throw ExperimentError("the model has no dense output layer") }
        var rng = SeededRandom(seed: seed &+ 0xBEAD)
        var m = model
        m.layers[index] = .linear(Linear(inFeatures: old.inFeatures, outFeatures: classes, rng: &rng))
        return m
    }

    /// Loads real pretrained weights: the model is built with the checkpoint's number of output
    /// classes, restored with `Checkpoint.restore(…, allowUnexpected: true)`, then given a fresh head.
    public static func loadPretrained(_ path: String, modelName: String, config: ModelZoo.Configuration, classes: Int, seed: UInt64) throws -> Sequential {
        var probe = try ModelZoo.make(modelName, config, seed: seed)
        guard let headIndex = probe.layers.lastIndex(where: { if case .linear = $0 { true } else { false } }) else {
            throw ExperimentError("\(modelName) has no dense output layer")
        }
        let (tensors, _) = try SafeTensors.read(path)
        let headName = Sequential.parameterName(layer: headIndex, "weight")
        guard let head = tensors[headName] ?? tensors[String(headName.dropFirst("layers.".count))], head.shape.count == 2 else {
            throw ExperimentError("\(path): no tensor \(headName) (the output layer of \(modelName)); expected this library's parameter names")
        }
        var c = config
        c.classes = head.shape[0]
        probe = try ModelZoo.make(modelName, c, seed: seed)
        try Checkpoint.restore(&probe, from: path, allowUnexpected: true)
        return try freshHead(probe, classes: classes, seed: seed)
    }

    public static func run(_ c: ExperimentConfiguration) throws -> ExperimentOutcome {
        let start = Date()
        try FileManager.default.createDirectory(at: c.output, withIntermediateDirectories: true)
        let s = c.scale
        let modelName = s == .full ? "vgg16" : "vgg-like"
        let width: Float = s.pick(smoke: 0.125, quick: 0.5, standard: 1, full: 1)
        let perSplitTrain: Int? = s.pick(smoke: 64, quick: 2_500, standard: nil, full: nil)
        let perSplitTest: Int? = s.pick(smoke: 64, quick: 1_000, standard: nil, full: nil)
        let epochs = s.pick(smoke: 1, quick: 3, standard: 5, full: 20)
        let pretrainEpochs = s.pick(smoke: 1, quick: 2, standard: 3, full: 10)
        let seeds = c.seedCount(standard: 2, full: 3)
        let lr: Float = 1e-3
        let batch = 32

        // Classes 0-4 for the task, classes 5-9 for pretraining (disjoint).
        let data = try ExperimentData.images(c, trainLimit: nil, testLimit: nil)
        let half = data.train.classCount / 2
        let taskClasses = Array(0..<half), pretrainClasses = Array(half..<data.train.classCount)
        func split(_ classes: [Int]) throws -> (Dataset, Dataset) {
            var tr = try ExperimentData.classSubset(data.train, classes: classes)
            var te = try ExperimentData.classSubset(data.test, classes: classes)
            if let n = perSplitTrain { tr = tr.prefix(n) }
            if let n = perSplitTest { te = te.prefix(n) }
            return (tr, te)
        }
        let (taskTrain, taskTest) = try split(taskClasses)
        let (preTrain, preTest) = try split(pretrainClasses)
        let config = ModelZoo.Configuration(inputShape: data.train.sampleShape, classes: taskClasses.count, width: width)
        c.log("\(name): \(modelName) width \(width) on \(data.name) classes \(taskClasses.first!)-\(taskClasses.last!) "
              + "(\(taskTrain.count) train / \(taskTest.count) test), \(epochs) epochs, \(seeds) seed(s)")

        var table = ResultsTable(columns: ["init", "method", "seed", "model", "width", "dataset", "optimizer", "train_samples"] + Runs.epochColumns)
        var notes: [String] = []
        // Pretrained weights (per seed): real ones from --pretrained, else gradient descent on the other classes.
        var pretrained: [Int: Sequential] = [:]
        var pretrainAccuracy: [Double] = []
        for seed in 1...seeds {
            if let path = c.pretrained {
                pretrained[seed] = try loadPretrained(path, modelName: modelName, config: config, classes: taskClasses.count, seed: UInt64(seed))
                if seed == 1 { notes.append("Pretrained weights loaded from `\(path)` (output layer replaced by a fresh one).") }
            } else {
                let net = try ModelZoo.make(modelName, config, seed: UInt64(100 + seed))
                let settings = RunSettings(method: .gradient(.softmaxCrossEntropy), optimizer: .adam(learningRate: lr),
                                           epochs: pretrainEpochs, batchSize: batch, seed: UInt64(100 + seed))
                let result = try Runs.train(net, settings, train: preTrain, test: preTest)
                for e in result.epochs {
                    var row = Runs.epochRow(e)
                    row.merge(["init": "pretraining", "method": "gradient", "seed": seed, "model": modelName, "width": width,
                               "dataset": "\(data.name) classes \(pretrainClasses.first!)-\(pretrainClasses.last!)",
                               "optimizer": "Adam lr \(lr)", "train_samples": preTrain.count]) { $1 }
                    table.append(row)
                }
                pretrainAccuracy.append(result.finalTestAccuracy)
                c.log("pretraining seed \(seed) on classes \(pretrainClasses.first!)-\(pretrainClasses.last!): test accuracy \(fmt(result.finalTestAccuracy)) (\(Int(result.seconds)) s)")
                pretrained[seed] = try freshHead(result.model, classes: taskClasses.count, seed: UInt64(seed))
                if seed == 1 {
                    try Checkpoint.save(result.model, metadata: ["lfp.model": modelName, "lfp.width": "\(width)", "lfp.activation": "relu",
                                                                 "lfp.classes": "\(pretrainClasses.count)"],
                                        to: c.file("pretrained-seed1.safetensors").path)
                }
            }
        }

        // curves[init][method][metric] = per-seed curves
        struct Curves { var accuracy: [[Double]] = []; var signs: [[Double]] = []; var mse: [[Double]] = []; var signsFromInit: [[Double]] = [] }
        var curves: [String: [String: Curves]] = [:]
        for initName in ["pretrained", "random"] {
            for m in methods {
                for seed in 1...seeds {
                    let net = initName == "random" ? try ModelZoo.make(modelName, config, seed: UInt64(seed)) : pretrained[seed]!
                    let isGradient = m.key == "gradient"
                    let settings = RunSettings(method: isGradient ? .gradient(.softmaxCrossEntropy) : .lfp,
                                               composite: isGradient ? .uniform(.epsilon) : try Composite.preset(named: m.key),
                                               feedback: .sigmoid, optimizer: .adam(learningRate: lr),
                                               epochs: epochs, batchSize: batch, seed: UInt64(seed))
                    let result = try Runs.train(net, settings, train: taskTrain, test: taskTest)
                    for e in result.epochs {
                        var row = Runs.epochRow(e)
                        row.merge(["init": initName, "method": m.key, "seed": seed, "model": modelName, "width": width,
                                   "dataset": "\(data.name) classes \(taskClasses.first!)-\(taskClasses.last!)",
                                   "optimizer": "Adam lr \(lr)", "train_samples": taskTrain.count]) { $1 }
                        table.append(row)
                    }
                    curves[initName, default: [:]][m.key, default: Curves()].accuracy.append([result.initialTestAccuracy] + result.epochs.map(\.testAccuracy))
                    curves[initName]![m.key]!.signs.append(result.epochs.map(\.signChanges))
                    curves[initName]![m.key]!.signsFromInit.append(result.epochs.map(\.signChangesFromStart))
                    curves[initName]![m.key]!.mse.append(result.epochs.map(\.meanSquaredChange))
                    c.log("\(initName) \(m.key) seed \(seed): accuracy \(result.epochs.map { fmt($0.testAccuracy) }.joined(separator: " ")), "
                          + "sign changes \(result.epochs.map { pct($0.signChanges, 2) }.joined(separator: " ")) (\(Int(result.seconds)) s)")
                }
            }
        }
        try table.write(to: c.file("results.csv"))

        // Plots: rows = pretrained / random; columns = accuracy, sign changes, mean squared change.
        var panels: [LinePlot] = []
        for initName in ["pretrained", "random"] {
            let label = initName == "pretrained" ? "pretrained init" : "random init"
            panels.append(LinePlot(title: "Test accuracy, \(label)", xLabel: "epoch", yLabel: "test accuracy",
                                   series: methods.enumerated().map { i, m in meanSeries(m.label, curves[initName]![m.key]!.accuracy, x0: 0, dashed: m.key == "gradient", color: LinePlot.color(i)) },
                                   yRange: 0...1))
            panels.append(LinePlot(title: "Weight signs changed per epoch, \(label)", xLabel: "epoch", yLabel: "fraction of weights",
                                   series: methods.enumerated().map { i, m in meanSeries(m.label, curves[initName]![m.key]!.signs, dashed: m.key == "gradient", color: LinePlot.color(i)) }))
            panels.append(LinePlot(title: "Mean squared parameter change, \(label)", xLabel: "epoch", yLabel: "mean squared change per epoch",
                                   series: methods.enumerated().map { i, m in meanSeries(m.label, curves[initName]![m.key]!.mse, dashed: m.key == "gradient", color: LinePlot.color(i)) },
                                   logY: true))
        }
        let plot = try writePlot(PlotGrid(title: "\(modelName) on \(data.name): gradient vs LFP composites (Adam lr \(lr))",
                                          panels: panels, columns: 3, panelWidth: 520, panelHeight: 340).svg(), "rules.svg", c)

        // Findings.
        func final(_ i: String, _ m: String) -> Double { Statistics.mean(curves[i]![m]!.accuracy.map { $0.last! }) }
        func meanSigns(_ i: String, _ m: String) -> Double { Statistics.mean(curves[i]![m]!.signs.flatMap { $0 }) }
        func meanMSE(_ i: String, _ m: String) -> Double { Statistics.mean(curves[i]![m]!.mse.flatMap { $0 }) }
        let chance = 1 / Double(taskClasses.count)
        var report = Report(title: title)
        report.paragraph("""
            Setup: \(modelName) (width x\(width), ReLU, no dropout) on \(data.name): the task is classes \
            \(taskClasses.first!)-\(taskClasses.last!) (\(taskTrain.count) training / \(taskTest.count) test images); \
            pretraining is gradient descent on the disjoint classes \(pretrainClasses.first!)-\(pretrainClasses.last!) \
            (\(preTrain.count) images, \(pretrainEpochs) epoch(s)), after which the output layer is replaced by a fresh \
            one. Every method: Adam lr \(lr) (constant), batch \(batch), \(epochs) epoch(s), \(seeds) seed(s); LFP with \
            sigmoid feedback, gradient descent with cross-entropy. alpha-beta uses alpha 2, beta 1. Scale: `\(s)`.
            """)
        report.paragraph("**Deviation from the paper:** the paper fine-tunes VGG-16 on a 20-class ImageNet subset from torchvision's "
                         + "ImageNet weights (20 epochs, 3 seeds). No ImageNet is available here; the pretrained setting is emulated "
                         + "by pretraining on the other half of the classes (or with `--pretrained`). The paper's learning rate was lost "
                         + "in extraction; Adam lr \(lr) is our choice.")
        report.bullets(notes + (pretrainAccuracy.isEmpty ? [] : ["Pretraining test accuracy (classes \(pretrainClasses.first!)-\(pretrainClasses.last!)): \(pretrainAccuracy.map { fmt($0) }.joined(separator: ", "))"]))
        report.heading("Per method (mean over seeds)")
        var rows: [[String]] = []
        for m in methods {
            rows.append([m.label,
                         fmt(Statistics.mean(curves["pretrained"]![m.key]!.accuracy.map { $0[0] })), fmt(final("pretrained", m.key)),
                         pct(meanSigns("pretrained", m.key), 2), sci(meanMSE("pretrained", m.key)),
                         fmt(final("random", m.key)), pct(meanSigns("random", m.key), 2), sci(meanMSE("random", m.key))])
        }
        report.table(["method", "pretrained: acc. before", "pretrained: final acc.", "pretrained: signs changed / epoch",
                      "pretrained: mean sq. change / epoch", "random: final acc.", "random: signs changed / epoch", "random: mean sq. change / epoch"], rows)

        var claims: [Claim] = []
        let gR = final("random", "gradient"), eR = final("random", "epsilon")
        claims.append(Claim("Random init: LFP-epsilon is on par with gradient descent",
                            "LFP-epsilon \(fmt(eR)) vs gradient \(fmt(gR)) (criterion: within 3 points)",
                            abs(eR - gR) <= 0.03 ? .agree : (eR - gR > 0.03 ? .partly : .disagree)))
        let others = ["alpha-beta", "zplus-zminus", "zplus-zminus-dense+epsilon-conv", "zplus-zminus-dense+alpha-beta-conv"]
        let worse = others.filter { final("random", $0) < min(eR, gR) - 0.03 }
        claims.append(Claim("Random init: all other composites are significantly worse",
                            others.map { "\(label($0)) \(fmt(final("random", $0)))" }.joined(separator: ", ") + " (criterion: > 3 points below both)",
                            worse.count == others.count ? .agree : (worse.isEmpty ? .disagree : .partly)))
        let mixedBetter = ["zplus-zminus-dense+epsilon-conv", "zplus-zminus-dense+alpha-beta-conv"].filter { final("random", $0) > final("random", "zplus-zminus") }
        claims.append(Claim("Random init: the mixed composites beat uniform LFP-z+z-",
                            "mixed \(fmt(final("random", "zplus-zminus-dense+epsilon-conv"))) / \(fmt(final("random", "zplus-zminus-dense+alpha-beta-conv"))) vs z+z- \(fmt(final("random", "zplus-zminus")))",
                            mixedBetter.count == 2 ? .agree : (mixedBetter.isEmpty ? .disagree : .partly)))
        let abR = final("random", "alpha-beta")
        claims.append(Claim("Random init: LFP-alpha-beta only reaches chance accuracy",
                            "alpha-beta \(fmt(abR)), chance \(fmt(chance)) (criterion: within 5 points of chance)",
                            abR <= chance + 0.05 ? .agree : .disagree))
        let pretrainedFinals = methods.map { ($0.key, final("pretrained", $0.key)) }
        let abP = final("pretrained", "alpha-beta")
        let restP = pretrainedFinals.filter { $0.0 != "alpha-beta" }.map(\.1)
        let lowest = pretrainedFinals.min { $0.1 < $1.1 }!
        claims.append(Claim("Pretrained init: only LFP-alpha-beta performs significantly lower than the others",
                            "alpha-beta \(fmt(abP)); others \(fmt(restP.min()!))-\(fmt(restP.max()!)); lowest: \(label(lowest.0))",
                            lowest.0 == "alpha-beta" && abP < restP.min()! - 0.03 ? .agree : (lowest.0 == "alpha-beta" ? .partly : .disagree)))
        let largestMSE = methods.max { meanMSE("pretrained", $0.key) < meanMSE("pretrained", $1.key) }!
        claims.append(Claim("LFP-alpha-beta makes the largest updates (mean squared change, fig. A.6)",
                            "largest mean squared change (pretrained): \(largestMSE.label) (\(sci(meanMSE("pretrained", largestMSE.key)))); alpha-beta \(sci(meanMSE("pretrained", "alpha-beta")))",
                            largestMSE.key == "alpha-beta" ? .agree : .disagree))
        let signOrder = methods.sorted { meanSigns("pretrained", $0.key) > meanSigns("pretrained", $1.key) }
        claims.append(Claim("Gradient descent changes the most weight signs; LFP-z+z- the fewest",
                            "order (pretrained, most first): " + signOrder.map { "\($0.label) \(pct(meanSigns("pretrained", $0.key), 2))" }.joined(separator: ", "),
                            signOrder.first!.key == "gradient" && signOrder.last!.key == "zplus-zminus" ? .agree
                                : (signOrder.first!.key == "gradient" || signOrder.last!.key == "zplus-zminus" ? .partly : .disagree)))
        let zP = final("pretrained", "zplus-zminus"), gP = final("pretrained", "gradient")
        claims.append(Claim("Pretrained init: LFP-z+z- changes few signs and still performs as well as gradient descent",
                            "z+z- \(fmt(zP)) vs gradient \(fmt(gP)); signs changed/epoch \(pct(meanSigns("pretrained", "zplus-zminus"), 2)) vs \(pct(meanSigns("pretrained", "gradient"), 2))",
                            abs(zP - gP) <= 0.03 && meanSigns("pretrained", "zplus-zminus") < meanSigns("pretrained", "gradient") ? .agree : .disagree))
        report.heading("Paper vs. this run")
        report.claims(claims)
        report.heading("Plot")
        report.image(plot, "accuracy, sign changes and mean squared change per epoch")
        report.paragraph("Raw data: `results.csv` (one row per init, method, seed and epoch; `init = pretraining` rows are the pretraining runs).")
        try report.write(to: c.file("report.md"))
        return ExperimentOutcome(name: name, title: title, directory: c.output, plots: [plot],
                                 headline: ["random init: gradient \(fmt(gR)), LFP-epsilon \(fmt(eR)), alpha-beta \(fmt(abR))",
                                            "pretrained: gradient \(fmt(gP)), z+z- \(fmt(zP)), alpha-beta \(fmt(abP))"],
                                 seconds: Date().timeIntervalSince(start))
    }

    static func label(_ key: String) -> String { methods.first { $0.key == key }?.label ?? key }
}
