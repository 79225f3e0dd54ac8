import Foundation
import LFP

/// LRP explanations from the LFP engine: the feedback of one logit propagated to the input
/// (`computeInputFeedback`), with per-layer statistics (`recordLayerFeedback`), and heatmap SVGs.
public enum Explanations {
    /// Which logit is explained.
    public enum Target: String, Sendable, CaseIterable {
        case predicted, `true`
    }

    /// Statistics of the feedback arriving at one layer's output (or at the input).
    public struct LayerStatistics: Sendable, Codable {
        public var layer: Int
        public var name: String
        public var sum: Double
        public var maxAbs: Double
        public var fractionPositive: Double
        public var fractionNegative: Double
    }

    /// The explanation of one sample.
    public struct Explanation: Sendable, Codable {
        public var index: Int
        public var label: Int
        public var predicted: Int
        public var target: Int
        public var logit: Double
        public var sampleShape: [Int]
        /// The (normalised) input as the model saw it.
        public var input: [Float]
        /// The feedback at the input (the relevance of every input value).
        public var relevance: [Float]
        /// Per layer, from the input (layer -1) to the logits.
        public var layers: [LayerStatistics]
        public var relevanceSum: Double { relevance.reduce(0) { $0 + Double($1) } }
    }

    static func statistics(_ values: ArraySlice<Float>, layer: Int, name: String) -> LayerStatistics {
        var sum = 0.0, m = 0.0, pos = 0, neg = 0
        for v in values {
            sum += Double(v)
            m = max(m, Double(abs(v)))
            if v > 0 { pos += 1 } else if v < 0 { neg += 1 }
        }
        let n = Double(max(1, values.count))
        return LayerStatistics(layer: layer, name: name, sum: sum, maxAbs: m, fractionPositive: Double(pos) / n, fractionNegative: Double(neg) / n)
    }

    /// Explains the samples at `indices` of `data` (already normalised as the model expects):
    /// the feedback is the chosen logit itself at that logit and zero elsewhere.
    public static func explain(model: Sequential, data: Dataset, indices: [Int], composite: Composite,
                               target: Target = .predicted) throws -> [Explanation] {
        guard !indices.isEmpty else { return [] }
        var features: [Float] = [], labels: [Int] = []
        data.batch(indices: indices[...], into: &features, labels: &labels)
        let n = indices.count
        let x = Tensor(shape: [n] + data.sampleShape, storage: features)
        var rng = SeededRandom(seed: 0)
        let trace = model.trace(x, training: false, rng: &rng)
        let logits = trace.output
        let classes = logits.shape[1]
        let predicted = logits.argmaxRows()
        var feedback = Tensor(shape: logits.shape)
        var targets: [Int] = []
        for i in 0..<n {
            let t = target == .predicted ? predicted[i] : labels[i]
            guard t < classes else { throw ExperimentError("label \(t) outside the model's \(classes) classes") }
            targets.append(t)
            feedback.storage[i * classes + t] = logits.storage[i * classes + t]
        }
        let propagator = try FeedbackPropagator(model: model, composite: composite,
                                                options: .init(computeInputFeedback: true, recordLayerFeedback: true))
        let signals = propagator.propagate(model: model, trace: trace, feedback: feedback)
        let input = signals.input!
        let perSample = input.count / n
        var result: [Explanation] = []
        for i in 0..<n {
            var layers = [statistics(input.storage[(i * perSample)..<((i + 1) * perSample)], layer: -1, name: "input")]
            for (l, f) in (signals.layerOutputs ?? []).enumerated() where f.count > 0 {
                let size = f.count / n
                layers.append(statistics(f.storage[(i * size)..<((i + 1) * size)], layer: l, name: "\(l): \(model.layers[l])"))
            }
            result.append(Explanation(index: indices[i], label: labels[i], predicted: predicted[i], target: targets[i],
                                      logit: Double(logits.storage[i * classes + targets[i]]), sampleShape: data.sampleShape,
                                      input: Array(features[(i * perSample)..<((i + 1) * perSample)]),
                                      relevance: Array(input.storage[(i * perSample)..<((i + 1) * perSample)]), layers: layers))
        }
        return result
    }

    /// A colour for `v` in [-1, 1]: white at 0, red for positive, blue for negative.
    static func heatColor(_ v: Double) -> String {
        let a = min(1, abs(v))
        let fade = Int((1 - a) * 255)
        return v >= 0 ? String(format: "#ff%02x%02x", fade, fade) : String(format: "#%02x%02xff", fade, fade)
    }

    /// A `width` x `height` grid of square cells at (`x`, `y`): one `<path>` per colour, so a
    /// picture with few distinct colours stays small.
    static func cells(x: Double, y: Double, cell: Double, width: Int, height: Int, color: (Int, Int) -> String) -> String {
        var byColor: [String: String] = [:]
        var order: [String] = []
        for row in 0..<height {
            for col in 0..<width {
                let k = color(col, row)
                if byColor[k] == nil { byColor[k] = ""; order.append(k) }
                byColor[k]! += "M\(col) \(row)h1v1h-1z"
            }
        }
        var s = "<g transform=\"translate(\(x) \(y)) scale(\(cell))\" shape-rendering=\"crispEdges\">"
        for k in order { s += "<path fill=\"\(k)\" d=\"\(byColor[k]!)\"/>" }
        return s + "</g>\n"
    }

    /// `[C, H, W]` (or `[features]`, shown as one row) as height, width and channels.
    static func geometry(_ shape: [Int]) -> (c: Int, h: Int, w: Int) {
        shape.count == 3 ? (shape[0], shape[1], shape[2]) : (1, 1, shape.reduce(1, *))
    }

    /// An SVG grid: per sample the input image (un-normalised with `mean`/`std`) next to its
    /// heatmap (relevance summed over channels, scaled by its max-abs: red positive, blue negative).
    public static func heatmapSVG(_ explanations: [Explanation], mean: [Float], std: [Float], title: String,
                                  classNames: [String]? = nil) -> String {
        guard let first = explanations.first else { return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>\n" }
        let (c, h, w) = geometry(first.sampleShape)
        let cell = max(2.0, min(8.0, 200.0 / Double(max(h, w))))
        let imageW = Double(w) * cell, imageH = Double(h) * cell
        let rowH = imageH + 46, colW = 2 * imageW + 60
        let perRow = max(1, min(4, Int(1200 / colW)))
        let rows = (explanations.count + perRow - 1) / perRow
        let width = Double(perRow) * colW + 20, height = 70 + Double(rows) * rowH + 40
        func name(_ k: Int) -> String { classNames.flatMap { $0.indices.contains(k) ? $0[k] : nil } ?? "\(k)" }
        var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="11">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(width / 2)" y="22" text-anchor="middle" font-size="15">\(LinePlot.escape(title))</text>
        <text x="\(width / 2)" y="40" text-anchor="middle" font-size="11" fill="#555">left: input; right: relevance of the explained logit (red positive, blue negative, scaled to each sample's max |relevance|)</text>

        """
        for (k, e) in explanations.enumerated() {
            let ox = 10 + Double(k % perRow) * colW, oy = 60 + Double(k / perRow) * rowH
            // Input image (colours quantised to 32 levels per channel) and heatmap (41 levels).
            s += cells(x: ox, y: oy, cell: cell, width: w, height: h) { x, y in
                var rgb = [Int](repeating: 0, count: 3)
                for ch in 0..<3 {
                    let cc = min(ch, c - 1)
                    let v = Double(e.input[(cc * h + y) * w + x]) * Double(std.indices.contains(cc) ? std[cc] : 1)
                        + Double(mean.indices.contains(cc) ? mean[cc] : 0)
                    rgb[ch] = Int((min(1, max(0, v)) * 31).rounded()) * 255 / 31
                }
                return String(format: "#%02x%02x%02x", rgb[0], rgb[1], rgb[2])
            }
            // Heatmap: relevance summed over channels.
            var r = [Double](repeating: 0, count: h * w)
            for ch in 0..<c { for p in 0..<(h * w) { r[p] += Double(e.relevance[ch * h * w + p]) } }
            let m = r.map(abs).max() ?? 0
            let hx = ox + imageW + 8
            s += cells(x: hx, y: oy, cell: cell, width: w, height: h) { x, y in
                heatColor(m > 0 ? (r[y * w + x] / m * 20).rounded() / 20 : 0)
            }
            s += "<rect x=\"\(hx)\" y=\"\(oy)\" width=\"\(imageW)\" height=\"\(imageH)\" fill=\"none\" stroke=\"#999\"/>\n"
            s += "<text x=\"\(ox)\" y=\"\(oy + imageH + 14)\">#\(e.index): true \(LinePlot.escape(name(e.label))), predicted \(LinePlot.escape(name(e.predicted)))</text>\n"
            s += "<text x=\"\(ox)\" y=\"\(oy + imageH + 28)\" fill=\"#555\">logit \(LinePlot.escape(name(e.target))) = \(String(format: "%.3g", e.logit)), sum of relevance \(String(format: "%.3g", e.relevanceSum))</text>\n"
        }
        // Colour bar.
        let by = height - 30
        for i in 0..<41 {
            let v = Double(i - 20) / 20
            s += "<rect x=\"\(20 + Double(i) * 6)\" y=\"\(by)\" width=\"6\" height=\"10\" fill=\"\(heatColor(v))\"/>"
        }
        s += "\n<text x=\"20\" y=\"\(by + 22)\">-max</text><text x=\"\(20 + 20 * 6)\" y=\"\(by + 22)\" text-anchor=\"middle\">0</text><text x=\"\(20 + 41 * 6)\" y=\"\(by + 22)\" text-anchor=\"end\">+max</text>\n"
        s += "</svg>\n"
        return s
    }

    /// Per-layer statistics as CSV: one row per sample and layer.
    public static func layerCSV(_ explanations: [Explanation]) -> ResultsTable {
        var t = ResultsTable(columns: ["sample", "label", "predicted", "target", "logit", "layer", "layer_name", "sum", "max_abs",
                                       "fraction_positive", "fraction_negative"])
        for e in explanations {
            for l in e.layers {
                t.append(["sample": e.index, "label": e.label, "predicted": e.predicted, "target": e.target, "logit": e.logit,
                          "layer": l.layer, "layer_name": l.name, "sum": l.sum, "max_abs": l.maxAbs,
                          "fraction_positive": l.fractionPositive, "fraction_negative": l.fractionNegative])
            }
        }
        return t
    }

    /// Class names of the known data sets.
    public static func classNames(dataset: String) -> [String]? {
        switch dataset.lowercased() {
        case "fashion-mnist", "fashionmnist", "fmnist":
            ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
        case "cifar10", "cifar-10":
            ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        default: nil
        }
    }
}
