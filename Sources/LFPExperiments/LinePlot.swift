import Foundation

/// A minimal line-chart writer: titled, labelled axes with ticks, a legend, one polyline per series.
public struct LinePlot: Sendable {
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public init(name: String, points: [(x: Double, y: Double)]) { self.name = name; self.points = points }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    public var yRange: ClosedRange<Double>?

    public init(title: String, xLabel: String, yLabel: String, series: [Series], yRange: ClosedRange<Double>? = nil) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel; self.series = series; self.yRange = yRange
    }

    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    static func ticks(_ lo: Double, _ hi: Double, count: Int = 5) -> [Double] {
        guard hi > lo else { return [lo] }
        let raw = (hi - lo) / Double(count)
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var t = ceil(lo / step) * step
        var result: [Double] = []
        while t <= hi + step * 1e-9 { result.append(t); t += step }
        return result
    }

    /// The SVG document.
    public func svg(width: Double = 640, height: Double = 400) -> String {
        let left = 70.0, right = 170.0, top = 40.0, bottom = 55.0
        let all = series.flatMap(\.points)
        var xLo = all.map(\.x).min() ?? 0, xHi = all.map(\.x).max() ?? 1
        if xHi <= xLo { xHi = xLo + 1 }
        var yLo = yRange?.lowerBound ?? (all.map(\.y).min() ?? 0), yHi = yRange?.upperBound ?? (all.map(\.y).max() ?? 1)
        if yHi <= yLo { yHi = yLo + 1; yLo -= 0 }
        if yRange == nil { let pad = (yHi - yLo) * 0.05; yLo -= pad; yHi += pad }
        let pw = width - left - right, ph = height - top - bottom
        func px(_ x: Double) -> Double { left + (x - xLo) / (xHi - xLo) * pw }
        func py(_ y: Double) -> Double { top + (1 - (y - yLo) / (yHi - yLo)) * ph }
        var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left + pw / 2)" y="22" text-anchor="middle" font-size="15">\(Self.escape(title))</text>
        <rect x="\(left)" y="\(top)" width="\(pw)" height="\(ph)" fill="none" stroke="#333"/>

        """
        for t in Self.ticks(xLo, xHi) {
            s += "<line x1=\"\(px(t))\" y1=\"\(top + ph)\" x2=\"\(px(t))\" y2=\"\(top + ph + 5)\" stroke=\"#333\"/>"
            s += "<text x=\"\(px(t))\" y=\"\(top + ph + 18)\" text-anchor=\"middle\">\(Self.label(t))</text>\n"
        }
        for t in Self.ticks(yLo, yHi) {
            s += "<line x1=\"\(left)\" y1=\"\(py(t))\" x2=\"\(left + pw)\" y2=\"\(py(t))\" stroke=\"#ddd\"/>"
            s += "<text x=\"\(left - 8)\" y=\"\(py(t) + 4)\" text-anchor=\"end\">\(Self.label(t))</text>\n"
        }
        s += "<text x=\"\(left + pw / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>\n"
        s += "<text transform=\"translate(18 \(top + ph / 2)) rotate(-90)\" text-anchor=\"middle\">\(Self.escape(yLabel))</text>\n"
        for (i, serie) in series.enumerated() {
            let color = Self.colors[i % Self.colors.count]
            let pts = serie.points.map { "\(px($0.x)),\(py($0.y))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(pts)\"/>\n"
            for p in serie.points { s += "<circle cx=\"\(px(p.x))\" cy=\"\(py(p.y))\" r=\"3\" fill=\"\(color)\"/>" }
            let ly = top + 10 + Double(i) * 20
            s += "\n<line x1=\"\(left + pw + 12)\" y1=\"\(ly)\" x2=\"\(left + pw + 32)\" y2=\"\(ly)\" stroke=\"\(color)\" stroke-width=\"2\"/>"
            s += "<text x=\"\(left + pw + 38)\" y=\"\(ly + 4)\">\(Self.escape(serie.name))</text>\n"
        }
        s += "</svg>\n"
        return s
    }

    static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e6 { return String(Int(v)) }
        return String(format: abs(v) < 0.01 ? "%.2g" : "%.3g", v)
    }
}
