import Foundation
import LFP

/// Transfer of a pretrained BatchNorm ResNet to new classes with LFP-epsilon and with gradient
/// descent, as the reference's ImageNet-transfer notebooks measure it: accuracy on the new task,
/// how many weight signs fine-tuning changes, accuracy under magnitude pruning, and forgetting
/// of the original task. The model is pretrained here by gradient descent on one half of the
/// classes (task A) and fine-tuned on the other half (task B) with a fresh head; with
/// `--pretrained FILE` the given weights are fine-tuned instead (the original task is then
/// unknown, so forgetting is not measured).
public enum TransferExperiment {
    public static let name = "transfer"
    public static let title = "Fine-tuning a pretrained ResNet with LFP: transfer, sign changes, pruning, forgetting"

    struct Method {
        var key: String
        var label: String
        var method: TrainingMethod
        var optimizer: OptimizerChoice
    }

    public static func run(_ c: ExperimentConfiguration) throws -> ExperimentOutcome {
        let start = Date()
        try FileManager.default.createDirectory(at: c.output, withIntermediateDirectories: true)
        let s = c.scale
        let trainLimit: Int? = s.pick(smoke: 256, quick: 20_000, standard: nil, full: nil)
        let testLimit: Int? = s.pick(smoke: 128, quick: 2_000, standard: nil, full: nil)
        let pretrainEpochs = s.pick(smoke: 1, quick: 3, standard: 5, full: 10)
        let epochs = s.pick(smoke: 1, quick: 3, standard: 5, full: 10)
        let width: Float = s.pick(smoke: 0.25, quick: 0.5, standard: 1, full: 1)
        let seeds = c.seedCount(standard: 2, full: 3)
        let batch = 32
        let data = try ExperimentData.images(c, trainLimit: trainLimit, testLimit: testLimit)
        let classes = data.train.classCount
        let half = classes / 2
        let (classesA, classesB) = (Array(0..<half), Array(half..<classes))
        let trainA = try ExperimentData.classSubset(data.train, classes: classesA), testA = try ExperimentData.classSubset(data.test, classes: classesA)
        let trainB = try ExperimentData.classSubset(data.train, classes: classesB), testB = try ExperimentData.classSubset(data.test, classes: classesB)
        let config = ModelZoo.Configuration(inputShape: data.train.sampleShape, classes: classesA.count, width: width)
        let methods = [
            Method(key: "gradient", label: "gradient descent", method: .gradient(.softmaxCrossEntropy), optimizer: .sgd(learningRate: 0.01, momentum: 0.9)),
            Method(key: "lfp-epsilon", label: "LFP-epsilon", method: .lfp, optimizer: .sgd(learningRate: 0.003, momentum: 0.9)),
        ]
        c.log("\(name): cifar-resnet (width \(width)) on \(data.name); task A classes \(classesA), task B classes \(classesB); \(seeds) seed(s)")

        var table = ResultsTable(columns: ["kind", "method", "seed", "epoch", "test_accuracy_b", "test_accuracy_a", "sign_change_from_pretrained",
                                           "pruned_fraction", "dataset"])
        var accuracy: [String: [[Double]]] = [:], pruning: [String: [[Double]]] = [:]
        var signs: [String: [Double]] = [:], forgetting: [String: [Double]] = [:]
        var pretrainedA: [Double] = []
        for seed in 1...seeds {
            // The pretrained model: given, or trained here on task A by gradient descent.
            var pretrained: Sequential
            var headA: [(String, Tensor)] = []
            if let path = c.pretrained {
                pretrained = try ModelZoo.make("cifar-resnet", config, seed: UInt64(seed))
                try Checkpoint.initialize(&pretrained, from: path, replaceHead: true)
            } else {
                let initial = try ModelZoo.make("cifar-resnet", config, seed: UInt64(seed))
                let settings = RunSettings(method: .gradient(.softmaxCrossEntropy), optimizer: .sgd(learningRate: 0.01, momentum: 0.9),
                                           epochs: pretrainEpochs, batchSize: batch, seed: UInt64(seed))
                let result = try Runs.train(initial, settings, train: trainA, test: testA)
                pretrained = result.model
                pretrainedA.append(result.finalTestAccuracy)
                headA = Checkpoint.headParameterNames(of: pretrained).map { ($0, pretrained.parameter($0)!) }
                table.append(["kind": "pretrain", "method": "gradient", "seed": seed, "epoch": pretrainEpochs,
                              "test_accuracy_a": result.finalTestAccuracy, "dataset": data.name])
                c.log("pretrained on task A: accuracy \(fmt(result.finalTestAccuracy)) (\(Int(result.seconds)) s)")
            }
            guard let start = pretrained.withNewHead(classes: classesB.count, seed: UInt64(seed) &+ 77) else {
                throw ExperimentError("cifar-resnet has no classifier head")
            }
            for m in methods {
                let settings = RunSettings(method: m.method, composite: .uniform(.epsilon), feedback: .softmax, optimizer: m.optimizer,
                                           schedule: .cosine(totalSteps: epochs * ((trainB.count + batch - 1) / batch), minimum: 0),
                                           epochs: epochs, batchSize: batch, seed: UInt64(seed))
                let result = try Runs.train(start, settings, train: trainB, test: testB)
                let common: [String: CustomStringConvertible] = ["method": m.key, "seed": seed, "dataset": data.name]
                table.append(common.merging(["kind": "epoch", "epoch": 0, "test_accuracy_b": result.initialTestAccuracy]) { $1 })
                for e in result.epochs {
                    table.append(common.merging(["kind": "epoch", "epoch": e.epoch, "test_accuracy_b": e.testAccuracy,
                                                 "sign_change_from_pretrained": e.signChangesFromStart]) { $1 })
                }
                // Forgetting: the fine-tuned body with the original head, on task A.
                var forgot = Double.nan
                if !headA.isEmpty {
                    guard var back = result.model.withNewHead(classes: classesA.count, seed: 0) else { throw ExperimentError("no head") }
                    for (name, value) in headA { back.setParameter(name, value) }
                    forgot = Fit.accuracy(back, on: testA)
                    table.append(common.merging(["kind": "forgetting", "test_accuracy_a": forgot]) { $1 })
                }
                let curve = result.diverged ? FinetunePruning.pruneFractions.map { _ in 1 / Double(classesB.count) }
                                            : FinetunePruning.pruningCurve(result.model, test: testB)
                for (f, a) in zip(FinetunePruning.pruneFractions, curve) {
                    table.append(common.merging(["kind": "pruning", "pruned_fraction": f, "test_accuracy_b": a]) { $1 })
                }
                accuracy[m.key, default: []].append([result.initialTestAccuracy] + result.epochs.map { $0.testAccuracy })
                pruning[m.key, default: []].append(curve)
                signs[m.key, default: []].append(result.epochs.last?.signChangesFromStart ?? .nan)
                forgetting[m.key, default: []].append(forgot)
                c.log("\(m.key) seed \(seed): task B \(result.epochs.map { fmt($0.testAccuracy) }.joined(separator: " ")); "
                      + "signs changed \(pct(signs[m.key]!.last!, 3)); task A after fine-tuning \(fmt(forgot)) (\(Int(result.seconds)) s)")
            }
        }
        try table.write(to: c.file("results.csv"))

        let accuracyPlot = LinePlot(title: "Task B test accuracy while fine-tuning", xLabel: "epoch", yLabel: "test accuracy",
                                    series: methods.enumerated().map { i, m in meanSeries(m.label, accuracy[m.key]!, x0: 0, color: LinePlot.color(i)) })
        let pruningPlot = LinePlot(title: "Task B accuracy under global magnitude pruning", xLabel: "weights pruned (%)", yLabel: "test accuracy",
                                   series: methods.enumerated().map { i, m in
                                       var sr = meanSeries(m.label, pruning[m.key]!, x0: 0, color: LinePlot.color(i))
                                       sr.points = sr.points.map { (x: $0.x * 5, y: $0.y) }
                                       sr.band = sr.band.map { (x: $0.x * 5, low: $0.low, high: $0.high) }
                                       return sr
                                   }, yRange: 0...1)
        let plot = try writePlot(PlotGrid(title: "cifar-resnet pretrained on classes \(classesA.first!)-\(classesA.last!), fine-tuned on \(classesB.first!)-\(classesB.last!) (\(data.name))",
                                          panels: [accuracyPlot, pruningPlot], columns: 2).svg(), "transfer.svg", c)

        func mean(_ v: [Double]) -> Double { Statistics.mean(v.filter { $0.isFinite }) }
        func final(_ k: String) -> Double { mean(accuracy[k]!.map { $0.last! }) }
        func robust(_ k: String) -> Double { mean(pruning[k]!.map { FinetunePruning.robustFraction($0) }) }
        var report = Report(title: title)
        report.paragraph("""
            Setup: `cifar-resnet` (torchvision's ResNet-18 layout, widths \(Int(16 * width))-\(Int(128 * width)), BatchNorm) on \(data.name) \
            (\(data.train.count) training / \(data.test.count) test images). \(c.pretrained == nil ? "Pretrained here by gradient descent (SGD lr 0.01, momentum 0.9, \(pretrainEpochs) epoch(s)) on task A, classes \(classesA)" : "Pretrained weights from `\(c.pretrained!)`"); \
            fine-tuned on task B, classes \(classesB) (relabelled from 0), with a fresh head, for \(epochs) epoch(s), batch \(batch), \
            cosine schedule: gradient descent with cross-entropy (SGD lr 0.01) and LFP-epsilon with softmax feedback (SGD lr 0.003), \
            every parameter trained, BatchNorm in training mode. Sign changes count the connection weights (convolutions, Linear) \
            whose sign differs from the pretrained one at the end; pruning removes the smallest |w| of those globally; forgetting \
            puts the original head back on the fine-tuned body and measures task A. Scale: `\(s)`, \(seeds) seed(s).
            """)
        report.heading("Results (mean over seeds)")
        report.table(["method", "task B accuracy (start -> end)", "weight signs changed", "task A accuracy after fine-tuning (pretrained: \(fmt(mean(pretrainedA))))",
                      "task B accuracy at 50 / 70 / 90 % pruned", "robust up to (within 5 points)"],
                     methods.map { m in
                         let curves = pruning[m.key]!
                         func at(_ f: Double) -> Double { mean(curves.map { $0[FinetunePruning.pruneFractions.firstIndex { abs($0 - f) < 1e-9 }!] }) }
                         return [m.label, "\(fmt(mean(accuracy[m.key]!.map { $0[0] }))) -> \(fmt(final(m.key)))", pct(mean(signs[m.key]!), 3),
                                 fmt(mean(forgetting[m.key]!)), "\(fmt(at(0.5))) / \(fmt(at(0.7))) / \(fmt(at(0.9)))", pct(robust(m.key), 0)]
                     })
        var claims: [Claim] = []
        let (sg, sl) = (mean(signs["gradient"]!), mean(signs["lfp-epsilon"]!))
        claims.append(Claim("LFP fine-tuning changes far fewer weight signs than gradient descent",
                            "signs changed: gradient \(pct(sg, 3)), LFP-epsilon \(pct(sl, 3)) (criterion: LFP at most half of gradient's)",
                            sl <= sg / 2 ? .agree : (sl < sg ? .partly : .disagree)))
        let (fg, fl) = (mean(forgetting["gradient"]!), mean(forgetting["lfp-epsilon"]!))
        if fg.isFinite && fl.isFinite {
            claims.append(Claim("LFP forgets less of the original task", "task A accuracy after fine-tuning: gradient \(fmt(fg)), LFP-epsilon \(fmt(fl)) (pretrained \(fmt(mean(pretrainedA))))",
                                fl > fg + 0.02 ? .agree : (fl >= fg ? .partly : .disagree)))
        }
        let (ag, al) = (final("gradient"), final("lfp-epsilon"))
        claims.append(Claim("LFP fine-tuning reaches an accuracy on the new task comparable to gradient descent",
                            "task B: gradient \(fmt(ag)), LFP-epsilon \(fmt(al)) (criterion: within 3 points)", abs(al - ag) <= 0.03 ? .agree : (al >= ag - 0.1 ? .partly : .disagree)))
        let (rg, rl) = (robust("gradient"), robust("lfp-epsilon"))
        claims.append(Claim("LFP-fine-tuned models are more robust to magnitude pruning",
                            "robust up to: gradient \(pct(rg, 0)), LFP-epsilon \(pct(rl, 0))", rl > rg ? .agree : (rl == rg ? .inconclusive : .disagree)))
        report.heading("Paper vs. this run")
        report.paragraph("The claims are those of the paper's fine-tuning section and of the reference's ImageNet-transfer notebooks.")
        report.claims(claims)
        report.heading("Plots")
        report.image(plot, "task B accuracy per epoch and under pruning")
        report.paragraph("Raw data: `results.csv` (`kind` = pretrain, epoch, forgetting, pruning).")
        try report.write(to: c.file("report.md"))
        return ExperimentOutcome(name: name, title: title, directory: c.output, plots: [plot],
                                 headline: ["task B: gradient \(fmt(ag)), LFP-epsilon \(fmt(al)); signs changed: gradient \(pct(sg, 3)), LFP \(pct(sl, 3))",
                                            "task A after fine-tuning: gradient \(fmt(fg)), LFP \(fmt(fl))"],
                                 seconds: Date().timeIntervalSince(start))
    }
}
