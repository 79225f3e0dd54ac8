import Foundation
import Testing
@testable import LFPCommands
@testable import LFPExperiments
import LFP
import LFPData
import LFPTensor

/// Runs `lfp experiment <arguments>` in-process.
private func runExperiment(_ arguments: [String]) throws {
    let command = try ExperimentCommand.parse(arguments)
    try command.run()
}

/// Splits one CSV line, honouring double quotes.
private func csvFields(_ line: String) -> [String] {
    var fields: [String] = [], current = "", quoted = false
    var chars = Array(line)[...]
    while let ch = chars.popFirst() {
        if quoted {
            if ch == "\"" {
                if chars.first == "\"" { current.append("\""); chars.removeFirst() } else { quoted = false }
            } else { current.append(ch) }
        } else if ch == "\"" {
            quoted = true
        } else if ch == "," {
            fields.append(current); current = ""
        } else { current.append(ch) }
    }
    fields.append(current)
    return fields
}

/// The rows of a CSV file as column -> value dictionaries.
private func readCSV(_ url: URL) throws -> [[String: String]] {
    let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map(String.init)
    let header = csvFields(lines[0])
    return lines.dropFirst().map { line in
        var row: [String: String] = [:]
        for (k, v) in zip(header, csvFields(line)) { row[k] = v }
        return row
    }
}

/// Checks the files every experiment writes and returns the CSV rows.
private func checkOutputs(_ dir: URL, plots: [String], reportMentions: [String]) throws -> [[String: String]] {
    let rows = try readCSV(dir.appendingPathComponent("results.csv"))
    #expect(!rows.isEmpty)
    for plot in plots {
        let svg = try String(contentsOf: dir.appendingPathComponent(plot), encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("</svg>"), "\(plot) is not an SVG")
        #expect(svg.contains("polyline") || svg.contains("circle"), "\(plot) draws no data")
        #expect(!svg.contains("nan,") && !svg.contains("inf,"), "\(plot) has non-finite coordinates")
    }
    let report = try String(contentsOf: dir.appendingPathComponent("report.md"), encoding: .utf8)
    #expect(report.hasPrefix("# "))
    #expect(report.contains("Paper vs. this run"))
    #expect(report.contains("| paper's claim | what we measured | verdict |"))
    for text in reportMentions { #expect(report.contains(text), "report.md does not mention \(text)") }
    for plot in plots { #expect(report.contains("](\(plot))"), "report.md does not link \(plot)") }
    return rows
}

private func accuracies(_ rows: [[String: String]], _ column: String = "test_accuracy") -> [Double] {
    rows.compactMap { $0[column].flatMap(Double.init) }
}

private let fashionMNISTAvailable = FileManager.default.fileExists(atPath: DatasetCatalog.fashionMNISTDefault)

@Suite struct ExperimentUnitTests {
    @Test func autocorrelationMatchesHandComputedValues() {
        // x = 1, 2, 3, 4: mean 2.5, deviations -1.5 -0.5 0.5 1.5, sum of squares 5.
        // lag 1: (0.75 - 0.25 + 0.75) / 5 = 0.25; lag 2: (-0.75 - 0.75) / 5 = -0.3; lag 0: 1.
        #expect(abs(Statistics.autocorrelation([1, 2, 3, 4], lag: 1) - 0.25) < 1e-12)
        #expect(abs(Statistics.autocorrelation([1, 2, 3, 4], lag: 2) + 0.3) < 1e-12)
        #expect(abs(Statistics.autocorrelation([1, 2, 3, 4], lag: 0) - 1) < 1e-12)
        // Alternating signs: mean 0, sum of squares 4, lag-1 products -1 three times: -0.75.
        #expect(abs(Statistics.autocorrelation([1, -1, 1, -1], lag: 1) + 0.75) < 1e-12)
        #expect(Statistics.autocorrelation([2, 2, 2], lag: 1).isNaN)  // constant: undefined
        #expect(Statistics.autocorrelation([1, 2], lag: 2).isNaN)
        // A smooth series is close to 1, white noise close to 0.
        let smooth = (0..<200).map { sin(Double($0) / 20) }
        #expect(Statistics.autocorrelation(smooth, lag: 1) > 0.95)
        var rng = SeededRandom(seed: 3)
        let noise = (0..<2000).map { _ in Double(rng.nextUnit()) - 0.5 }
        #expect(abs(Statistics.autocorrelation(noise, lag: 1)) < 0.1)
    }

    @Test func globalMagnitudePruningZeroesTheSmallestWeightsOfTheWholeModel() throws {
        let model = Sequential([
            .linear(Linear(weight: Tensor(shape: [2, 2], storage: [0.1, -0.5, 0.3, -0.05]), bias: Tensor(shape: [2], storage: [0.01, -0.02]))),
            .activation(.relu),
            .linear(Linear(weight: Tensor(shape: [1, 2], storage: [-0.2, 0.4]), bias: Tensor(shape: [1], storage: [0.001]))),
        ])
        // Six weights; |w| sorted: 0.05, 0.1, 0.2, 0.3, 0.4, 0.5. Biases are never pruned.
        let none = Pruning.globalMagnitude(model, fraction: 0)
        #expect(none == model)
        let half = Pruning.globalMagnitude(model, fraction: 0.5)
        #expect(half.parameter("layers.0.weight")!.storage == [0, -0.5, 0.3, 0])
        #expect(half.parameter("layers.2.weight")!.storage == [0, 0.4])
        #expect(half.parameter("layers.0.bias")!.storage == [0.01, -0.02])
        #expect(half.parameter("layers.2.bias")!.storage == [0.001])
        // floor(0.4 * 6) = 2 weights.
        let some = Pruning.globalMagnitude(model, fraction: 0.4)
        #expect(some.parameter("layers.0.weight")!.storage == [0, -0.5, 0.3, 0])
        #expect(some.parameter("layers.2.weight")!.storage == [-0.2, 0.4])
        let all = Pruning.globalMagnitude(model, fraction: 1)
        #expect(all.namedParameters.filter { $0.name.hasSuffix("weight") }.allSatisfy { $0.value.storage.allSatisfy { $0 == 0 } })
        // Ties are broken by parameter order: exactly k weights are pruned.
        let tied = Sequential([.linear(Linear(weight: Tensor(shape: [1, 4], storage: [0.1, -0.1, 0.1, 0.2]), bias: nil))])
        #expect(Pruning.globalMagnitude(tied, fraction: 0.5).parameter("layers.0.weight")!.storage == [0, 0, 0.1, 0.2])
    }

    @Test func robustPruningFractionIsTheLastLevelWithinTolerance() {
        let fractions = [0.0, 0.25, 0.5, 0.75]
        #expect(FinetunePruning.robustFraction([0.9, 0.89, 0.86, 0.5], fractions: fractions) == 0.5)
        #expect(FinetunePruning.robustFraction([0.9, 0.8, 0.88, 0.88], fractions: fractions) == 0)
        #expect(FinetunePruning.robustFraction([0.9, 0.9, 0.9, 0.9], fractions: fractions) == 0.75)
    }

    @Test func linePlotSupportsLogAxesBandsScatterAndGrids() {
        let plot = LinePlot(title: "t", xLabel: "x", yLabel: "y", series: [
            .init(name: "a", points: [(1, 1), (10, 0.1), (100, .nan), (1000, 0.001)], dashed: true,
                  band: [(1, 0.5, 2), (10, 0.05, 0.2)]),
            .init(name: "b", points: [(1, 1), (10, 2)], markersOnly: true),
        ], logX: true, logY: true, note: "n")
        let svg = plot.svg()
        #expect(svg.contains("stroke-dasharray") && svg.contains("<polygon") && svg.contains("(log scale)"))
        #expect(!svg.contains("nan") && !svg.contains("inf"))
        let grid = PlotGrid(title: "g", panels: [plot, plot, plot], columns: 2).svg()
        #expect(grid.components(separatedBy: "<g transform").count == 4)
        #expect(grid.hasPrefix("<svg") && grid.hasSuffix("</svg>\n"))
    }

    @Test func shatteringSignalsHaveTheGridsLength() throws {
        let grid = try ExperimentData.signGrid(step: 0.02)
        #expect(grid.count == 101)
        #expect(grid.features.first == -1 && abs(grid.features.last! - 1) < 1e-6)
        let net = try Shattering.model(depth: 3, width: 16, seed: 1)
        for sig in Shattering.signals {
            let v = try Shattering.inputSignal(sig.key, model: net, grid: grid)
            #expect(v.count == 101)
            #expect(v.allSatisfy { $0.isFinite })
        }
        // With backward normalisation the gradient signal equals the plain input gradient up to a positive scale.
        var rng = SeededRandom(seed: 0)
        let x = Tensor(shape: [101, 1], storage: grid.features)
        let trace = net.trace(x, training: false, rng: &rng)
        let plain = Backpropagation.gradients(model: net, trace: trace,
                                              outputGradient: Loss.sigmoidBinaryCrossEntropy.evaluate(logits: trace.output, labels: grid.labels, reduction: .sum).gradient,
                                              computeInputGradient: true).input!
        let normalized = Shattering.normalizedInputGradient(net, trace: trace, labels: grid.labels)
        #expect(abs(Statistics.correlation(plain.storage.map(Double.init), normalized.storage.map(Double.init)) - 1) < 1e-4)
    }

    @Test func classSubsetRelabels() throws {
        let data = try Dataset(features: [0, 1, 2, 3, 4, 5], labels: [0, 5, 7, 5, 2, 9], sampleShape: [1], classCount: 10, name: "t")
        let s = try ExperimentData.classSubset(data, classes: [5, 6, 7, 8, 9])
        #expect(s.labels == [0, 2, 0, 4] && s.features == [1, 2, 3, 5] && s.classCount == 5)
    }

    @Test func unknownExperimentIsRejected() {
        #expect(throws: (any Error).self) { try ExperimentCommand.parse(["nope", "--output", "/tmp/x"]) }
        #expect(throws: (any Error).self) { try ExperimentCommand.parse(["rules", "--quick", "--full", "--output", "/tmp/x"]) }
    }
}

/// End-to-end runs at the hidden `smoke` scale (tiny data, one epoch): the files exist and hold sane values.
@Suite(.serialized) struct ExperimentEndToEndTests {
    @Test(.enabled(if: fashionMNISTAvailable)) func proofOfConcept() throws {
        let dir = temporaryDirectory("poc")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runExperiment(["proof-of-concept", "--scale", "smoke", "--output", dir.path, "--quiet"])
        let rows = try checkOutputs(dir, plots: ["accuracy.svg"], reportMentions: ["LFP-epsilon", "fashion-mnist"])
        #expect(rows.count == 2 * 2 * 3)  // models x methods x learning rates, one epoch, one seed
        #expect(Set(rows.compactMap { $0["method"] }) == ["lfp-epsilon", "gradient"])
        #expect(accuracies(rows).allSatisfy { $0 >= 0 && $0 <= 1 })
    }

    @Test(.enabled(if: fashionMNISTAvailable)) func rules() throws {
        let dir = temporaryDirectory("rules")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runExperiment(["rules", "--scale", "smoke", "--output", dir.path, "--quiet"])
        let rows = try checkOutputs(dir, plots: ["rules.svg"], reportMentions: ["alpha-beta", "pretrain"])
        #expect(Set(rows.compactMap { $0["init"] }) == ["pretraining", "pretrained", "random"])
        #expect(rows.filter { $0["init"] == "random" }.count == RulesExperiment.methods.count)
        for row in rows {
            let signs = try #require(row["sign_change_fraction"].flatMap(Double.init))
            #expect(signs >= 0 && signs <= 1)
            #expect(try #require(row["mean_squared_change"].flatMap(Double.init)) >= 0)
        }
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("pretrained-seed1.safetensors").path))
        // Real pretrained weights load through --pretrained (the head is replaced).
        let dir2 = temporaryDirectory("rules-pretrained")
        defer { try? FileManager.default.removeItem(at: dir2) }
        let net = try RulesExperiment.loadPretrained(dir.appendingPathComponent("pretrained-seed1.safetensors").path, modelName: "vgg-like",
                                                     config: .init(inputShape: [1, 28, 28], classes: 5, width: 0.125), classes: 3, seed: 1)
        #expect(try net.outputShape(input: [2, 1, 28, 28]) == [2, 3])
    }

    @Test(.enabled(if: fashionMNISTAvailable)) func finetunePruning() throws {
        let dir = temporaryDirectory("prune")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runExperiment(["finetune-pruning", "--scale", "smoke", "--output", dir.path, "--quiet"])
        let rows = try checkOutputs(dir, plots: ["finetune-pruning.svg", "sign-changes-from-init.svg"], reportMentions: ["pruning", "LFP-z+z-"])
        let pruning = rows.filter { $0["kind"] == "pruning" }
        #expect(pruning.count == 5 * 20)  // methods x pruned fractions
        #expect(accuracies(pruning).allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(rows.contains { $0["kind"] == "probe" })
    }

    @Test(.enabled(if: fashionMNISTAvailable)) func transfer() throws {
        let dir = temporaryDirectory("transfer")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runExperiment(["transfer", "--scale", "smoke", "--output", dir.path, "--quiet"])
        let rows = try checkOutputs(dir, plots: ["transfer.svg"], reportMentions: ["signs changed", "forgetting", "LFP-epsilon"])
        #expect(rows.filter { $0["kind"] == "pruning" }.count == 2 * 20)  // methods x pruned fractions
        #expect(rows.filter { $0["kind"] == "forgetting" }.count == 2)
        #expect(rows.contains { $0["kind"] == "pretrain" })
        let signs = rows.compactMap { $0["sign_change_from_pretrained"].flatMap(Double.init) }
        #expect(!signs.isEmpty && signs.allSatisfy { $0 >= 0 && $0 <= 1 })
    }

    @Test func simpleReward() throws {
        let dir = temporaryDirectory("reward")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runExperiment(["simple-reward", "--scale", "smoke", "--output", dir.path, "--quiet"])
        let rows = try checkOutputs(dir, plots: ["simple-reward.svg"], reportMentions: ["reward"])
        let lrs = Set(rows.filter { $0["variant"] == "reward-step" }.compactMap { $0["learning_rate"].flatMap(Double.init) })
        #expect(lrs.contains(1) && lrs.contains { abs($0 - 0.1) < 1e-6 })  // decayed after 40 steps
        #expect(accuracies(rows).allSatisfy { $0 >= 0 && $0 <= 1 })
    }

    @Test func shattering() throws {
        let dir = temporaryDirectory("shatter")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runExperiment(["shattering", "--scale", "smoke", "--output", dir.path, "--quiet"])
        let rows = try checkOutputs(dir, plots: ["shattering.svg", "signals.svg", "accuracy-vs-depth.svg"], reportMentions: ["autocorrelation", "He-init"])
        let corr = rows.filter { $0["part"] == "signal" }.compactMap { $0["lag1_autocorrelation"].flatMap(Double.init) }
        #expect(!corr.isEmpty && corr.allSatisfy { $0 >= -1 && $0 <= 1 })
        #expect(rows.filter { $0["part"] == "signal-values" }.count == 2 * 2 * 4 * 101)  // inits x depths x signals x grid
        #expect(rows.contains { $0["part"] == "training" })
    }

    @Test(.enabled(if: fashionMNISTAvailable)) func activations() throws {
        let dir = temporaryDirectory("act")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runExperiment(["activations", "--scale", "smoke", "--output", dir.path, "--quiet"])
        let rows = try checkOutputs(dir, plots: ["activations.svg"], reportMentions: ["step"])
        #expect(Set(rows.compactMap { $0["activation"] }) == Set(ActivationsExperiment.activations.map(\.key)))
        // Feedback growth at initialisation: plain LFP-epsilon amplifies the step network's feedback
        // far more than the centred scaled and threshold stabilisers; ReLU is unaffected by centring.
        let growth = try String(contentsOf: dir.appendingPathComponent("feedback-growth.csv"), encoding: .utf8)
            .split(separator: "\n").dropFirst().map { $0.split(separator: ",").map(String.init) }
        func value(_ activation: String, _ variant: String, layer: Int) throws -> Double {
            try #require(growth.first { $0[0] == activation && $0[1] == variant && $0[2] == "\(layer)" }
                .flatMap { Double($0[3]) })
        }
        #expect(try value("step", "epsilon", layer: 1) > 10 * value("step", "scaled-epsilon:0.25+centred", layer: 1))
        #expect(try value("step", "epsilon", layer: 1) > 10 * value("step", "threshold-epsilon:0.5+centred", layer: 1))
        #expect(try value("relu", "epsilon", layer: 1) == value("relu", "epsilon+centred", layer: 1))
    }

    @Test(.enabled(if: fashionMNISTAvailable)) func spiking() throws {
        let dir = temporaryDirectory("snn")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runExperiment(["snn", "--scale", "smoke", "--output", dir.path, "--quiet"])
        let rows = try checkOutputs(dir, plots: ["snn.svg"], reportMentions: ["surrogate"])
        #expect(rows.count == SpikingExperiment.methods.count)
        for row in rows {
            let rate = try #require(row["hidden_firing_rate"].flatMap(Double.init))
            #expect(rate >= 0 && rate <= 1)
        }
    }

    @Test(.enabled(if: fashionMNISTAvailable)) func explainWritesHeatmapsAndLayerStatistics() throws {
        let dir = temporaryDirectory("explain")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runLFP(["train", "--model", "lenet", "--epochs", "1", "--train-limit", "256", "--test-limit", "64",
                    "--output", dir.path, "--quiet"])
        let out = dir.appendingPathComponent("explain")
        let command = try Explain.parse(["--checkpoint", dir.appendingPathComponent("model.safetensors").path, "--count", "3",
                                         "--output", out.path])
        try command.run()
        let svg = try String(contentsOf: out.appendingPathComponent("heatmaps.svg"), encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("#ff") && svg.contains("predicted"))
        let layers = try readCSV(out.appendingPathComponent("layers.csv"))
        #expect(Set(layers.compactMap { $0["sample"] }) == ["0", "1", "2"])
        for row in layers {
            let pos = try #require(row["fraction_positive"].flatMap(Double.init))
            #expect(pos >= 0 && pos <= 1)
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("explanations.json"))) as! [[String: Any]]
        #expect(json.count == 3)
        #expect((json[0]["relevance"] as! [Double]).count == 784)
        // The explained logit is conserved approximately: relevance at the logits = the logit itself.
        let sample0 = layers.filter { $0["sample"] == "0" }
        let logitRow = try #require(sample0.max { Int($0["layer"]!)! < Int($1["layer"]!)! })
        let sum = try #require(logitRow["sum"].flatMap(Double.init)), logit = try #require(logitRow["logit"].flatMap(Double.init))
        #expect(abs(sum - logit) < 1e-4 * max(1, abs(logit)))
    }

    @Test(.enabled(if: fashionMNISTAvailable)) func explanations() throws {
        let dir = temporaryDirectory("explanations")
        defer { try? FileManager.default.removeItem(at: dir) }
        try runExperiment(["explanations", "--scale", "smoke", "--output", dir.path, "--quiet"])
        let rows = try readCSV(dir.appendingPathComponent("results.csv"))
        #expect(Set(rows.compactMap { $0["rule"] }) == ["epsilon", "zplus-zminus"])
        let report = try String(contentsOf: dir.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(report.contains("Paper vs. this run") && report.contains("heatmaps-lfp-epsilon-epsilon.svg"))
        let svg = try String(contentsOf: dir.appendingPathComponent("heatmaps-gradient-zplus-zminus.svg"), encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("<rect"))
        // The checkpoints it writes are readable by `lfp explain`.
        let command = try Explain.parse(["--checkpoint", dir.appendingPathComponent("lenet-lfp-epsilon.safetensors").path, "--count", "2",
                                         "--rule", "zplus-zminus", "--target", "true", "--output", dir.appendingPathComponent("cli").path])
        try command.run()
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("cli/heatmaps.svg").path))
    }

    @Test(.enabled(if: fashionMNISTAvailable)) func allWritesAnIndex() throws {
        // `all` runs every experiment; here only the index writer is checked on two fast outcomes.
        let dir = temporaryDirectory("index")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = ExperimentConfiguration(scale: .smoke, output: dir)
        let outcomes = [ExperimentOutcome(name: "a", title: "A", directory: dir, plots: ["a.svg"], headline: ["x 0.5"], seconds: 1)]
        try Experiments.writeIndex(outcomes, failures: [("b", "boom")], config)
        let index = try String(contentsOf: dir.appendingPathComponent("index.md"), encoding: .utf8)
        #expect(index.contains("[a/report.md](a/report.md)") && index.contains("a/a.svg") && index.contains("boom"))
    }
}

