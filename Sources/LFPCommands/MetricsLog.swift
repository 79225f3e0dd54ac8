import Foundation
import LFP
import LFPExperiments

/// Writes `metrics.csv`, `metrics.jsonl` and `accuracy.svg` into a run directory.
struct MetricsLog {
    let directory: URL
    var csv: URL { directory.appendingPathComponent("metrics.csv") }
    var jsonl: URL { directory.appendingPathComponent("metrics.jsonl") }

    static let columns = ["epoch", "train_objective", "train_accuracy", "test_accuracy", "seconds", "samples_per_s",
                          "sign_change_fraction", "mean_squared_change", "median_abs_weight", "learning_rate", "firing_rates"]

    func start() throws {
        try (Self.columns.joined(separator: ",") + "\n").write(to: csv, atomically: true, encoding: .utf8)
        try "".write(to: jsonl, atomically: true, encoding: .utf8)
    }

    func append(_ m: EpochMetrics) throws {
        let row = [String(m.epoch), "\(m.trainObjective)", "\(m.trainAccuracy)", m.testAccuracy.map { "\($0)" } ?? "",
                   "\(m.seconds)", "\(m.samplesPerSecond)", "\(m.signChangeFraction)", "\(m.meanSquaredChange)",
                   "\(m.medianAbsWeight)", "\(m.learningRate)",
                   m.firingRates.map { $0.map { "\($0)" }.joined(separator: ";") } ?? ""].joined(separator: ",")
        try appendLine(row, to: csv)
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.keyEncodingStrategy = .convertToSnakeCase
        try appendLine(String(decoding: try e.encode(m), as: UTF8.self), to: jsonl)
    }

    private func appendLine(_ line: String, to url: URL) throws {
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data((line + "\n").utf8))
    }

    func plot(_ history: [EpochMetrics], title: String) throws {
        var series = [LinePlot.Series(name: "train", points: history.map { (Double($0.epoch), $0.trainAccuracy) })]
        let test = history.compactMap { m in m.testAccuracy.map { (Double(m.epoch), $0) } }
        if !test.isEmpty { series.append(.init(name: "test", points: test)) }
        let plot = LinePlot(title: title, xLabel: "epoch", yLabel: "accuracy", series: series)
        try plot.svg().write(to: directory.appendingPathComponent("accuracy.svg"), atomically: true, encoding: .utf8)
    }
}
