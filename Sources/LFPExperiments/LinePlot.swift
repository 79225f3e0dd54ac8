import Foundation

/// A minimal line-chart writer: titled, labelled axes with ticks, a legend, one polyline per series.
/// Optional: logarithmic axes, dashed or marker-only (scatter) series, shaded bands (e.g. the
/// spread over seeds), and several charts side by side in one SVG (``PlotGrid``).
public struct LinePlot: Sendable {
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        /// Draw a dashed line.
        public var dashed: Bool
        /// Draw markers only, no connecting line (a scatter plot).
        public var markersOnly: Bool
        /// A colour such as `#1f77b4` (nil: the next colour of the palette).
        public var color: String?
        /// A shaded band `(x, low, high)` drawn under the line (e.g. min..max over seeds).
        public var band: [(x: Double, low: Double, high: Double)]

        public init(name: String, points: [(x: Double, y: Double)], dashed: Bool = false, markersOnly: Bool = false,
                    color: String? = nil, band: [(x: Double, low: Double, high: Double)] = []) {
            self.name = name; self.points = points; self.dashed = dashed; self.markersOnly = markersOnly
            self.color = color; self.band = band
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    public var yRange: ClosedRange<Double>?
    /// Logarithmic x axis (non-positive x values are dropped).
    public var logX: Bool
    /// Logarithmic y axis (non-positive y values are dropped).
    public var logY: Bool
    /// Optional notes drawn in small type under the legend.
    public var note: String?

    public init(title: String, xLabel: String, yLabel: String, series: [Series], yRange: ClosedRange<Double>? = nil,
                logX: Bool = false, logY: Bool = false, note: String? = nil) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel; self.series = series; self.yRange = yRange
        self.logX = logX; self.logY = logY; self.note = note
    }

    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                         "#7f7f7f", "#bcbd22"]

    /// The palette colour of the `i`-th series.
    public static func color(_ i: Int) -> String { colors[((i % colors.count) + colors.count) % colors.count] }

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
        while t <= hi + step * 1e-9 { result.append(abs(t) < step * 1e-9 ? 0 : t); t += step }
        return result
    }

    /// Tick positions (in log10 units) for a log axis spanning `lo...hi` (log10 units).
    static func logTicks(_ lo: Double, _ hi: Double) -> [Double] {
        let first = Int(ceil(lo - 1e-9)), last = Int(floor(hi + 1e-9))
        guard last >= first else { return [lo] }
        let decades = Array(first...last).map(Double.init)
        if decades.count >= 2 {
            let stride = max(1, decades.count / 6)
            return decades.enumerated().filter { $0.offset % stride == 0 }.map(\.element)
        }
        // Less than two decades: add 2x and 5x ticks.
        var t: [Double] = []
        for d in (first - 1)...(last + 1) {
            for m in [1.0, 2.0, 5.0] {
                let v = Double(d) + log10(m)
                if v >= lo - 1e-9 && v <= hi + 1e-9 { t.append(v) }
            }
        }
        return t
    }

    /// Width of the legend column for the longest series name.
    var legendWidth: Double {
        let longest = series.map(\.name.count).max() ?? 0
        return min(300, max(110, Double(longest) * 6.8 + 50))
    }

    /// The SVG document.
    public func svg(width: Double = 640, height: Double = 400) -> String {
        """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        \(body(width: width, height: height))</svg>

        """
    }

    /// The chart's elements (no enclosing `<svg>`), laid out in a `width` x `height` box at the origin.
    public func body(width: Double, height: Double) -> String {
        let left = 70.0, right = legendWidth, top = 40.0, bottom = 55.0
        func tx(_ x: Double) -> Double? { logX ? (x > 0 ? log10(x) : nil) : x }
        func ty(_ y: Double) -> Double? { logY ? (y > 0 ? log10(y) : nil) : y }
        let all = series.flatMap(\.points).compactMap { p -> (Double, Double)? in
            guard p.x.isFinite, p.y.isFinite, let x = tx(p.x), let y = ty(p.y) else { return nil }
            return (x, y)
        }
        let bands = series.flatMap(\.band).compactMap { b -> (Double, Double, Double)? in
            guard b.x.isFinite, b.low.isFinite, b.high.isFinite, let x = tx(b.x), let lo = ty(b.low), let hi = ty(b.high) else { return nil }
            return (x, lo, hi)
        }
        var xLo = all.map(\.0).min() ?? 0, xHi = all.map(\.0).max() ?? 1
        if xHi <= xLo { xHi = xLo + 1 }
        var yLo: Double, yHi: Double
        if let r = yRange, let lo = ty(r.lowerBound), let hi = ty(r.upperBound) {
            yLo = lo; yHi = hi
        } else {
            yLo = min(all.map(\.1).min() ?? 0, bands.map(\.1).min() ?? .infinity)
            yHi = max(all.map(\.1).max() ?? 1, bands.map(\.2).max() ?? -.infinity)
            if !yLo.isFinite || !yHi.isFinite { yLo = 0; yHi = 1 }
            if yHi <= yLo { yHi = yLo + (logY ? 1 : max(1e-9, abs(yLo) * 0.1 + 1e-9)) }
            let pad = (yHi - yLo) * 0.05; yLo -= pad; yHi += pad
        }
        let pw = width - left - right, ph = height - top - bottom
        func px(_ x: Double) -> Double { left + (x - xLo) / (xHi - xLo) * pw }
        func py(_ y: Double) -> Double { top + (1 - (min(max(y, yLo), yHi) - yLo) / (yHi - yLo)) * ph }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        var s = """
        <text x="\(f(left + pw / 2))" y="22" text-anchor="middle" font-size="14">\(Self.escape(title))</text>
        <rect x="\(f(left))" y="\(f(top))" width="\(f(pw))" height="\(f(ph))" fill="none" stroke="#333"/>

        """
        // Integer x data (epochs, steps, depths) get integer ticks only.
        let integerX = !logX && !all.isEmpty && all.allSatisfy { $0.0 == $0.0.rounded() }
        var xTicks = logX ? Self.logTicks(xLo, xHi) : Self.ticks(xLo, xHi)
        if integerX {
            xTicks = xTicks.filter { $0 == $0.rounded() }
            if xTicks.count < 2 { xTicks = Array(Int(ceil(xLo))...max(Int(ceil(xLo)), Int(floor(xHi)))).map(Double.init) }
        }
        for t in xTicks {
            s += "<line x1=\"\(f(px(t)))\" y1=\"\(f(top + ph))\" x2=\"\(f(px(t)))\" y2=\"\(f(top + ph + 5))\" stroke=\"#333\"/>"
            s += "<text x=\"\(f(px(t)))\" y=\"\(f(top + ph + 18))\" text-anchor=\"middle\">\(Self.label(logX ? pow(10, t) : t))</text>\n"
        }
        for t in logY ? Self.logTicks(yLo, yHi) : Self.ticks(yLo, yHi) {
            s += "<line x1=\"\(f(left))\" y1=\"\(f(py(t)))\" x2=\"\(f(left + pw))\" y2=\"\(f(py(t)))\" stroke=\"#ddd\"/>"
            s += "<text x=\"\(f(left - 8))\" y=\"\(f(py(t) + 4))\" text-anchor=\"end\">\(Self.label(logY ? pow(10, t) : t))</text>\n"
        }
        s += "<text x=\"\(f(left + pw / 2))\" y=\"\(f(height - 12))\" text-anchor=\"middle\">\(Self.escape(xLabel + (logX ? " (log scale)" : "")))</text>\n"
        s += "<text transform=\"translate(16 \(f(top + ph / 2))) rotate(-90)\" text-anchor=\"middle\">\(Self.escape(yLabel + (logY ? " (log scale)" : "")))</text>\n"
        for (i, serie) in series.enumerated() {
            let color = serie.color ?? Self.color(i)
            // Band first, so lines stay on top.
            let band = serie.band.compactMap { b -> (Double, Double, Double)? in
                guard b.x.isFinite, b.low.isFinite, b.high.isFinite, let x = tx(b.x), let lo = ty(b.low), let hi = ty(b.high) else { return nil }
                return (x, lo, hi)
            }.sorted { $0.0 < $1.0 }
            if band.count >= 2 {
                let upper = band.map { "\(f(px($0.0))),\(f(py($0.2)))" }
                let lower = band.reversed().map { "\(f(px($0.0))),\(f(py($0.1)))" }
                s += "<polygon fill=\"\(color)\" fill-opacity=\"0.15\" stroke=\"none\" points=\"\((upper + lower).joined(separator: " "))\"/>\n"
            }
            // Split the line where a point is missing (NaN, or non-positive on a log axis).
            var segments: [[(Double, Double)]] = [[]]
            for p in serie.points {
                if p.x.isFinite, p.y.isFinite, let x = tx(p.x), let y = ty(p.y) {
                    segments[segments.count - 1].append((px(x), py(y)))
                } else if !segments[segments.count - 1].isEmpty {
                    segments.append([])
                }
            }
            let dash = serie.dashed ? " stroke-dasharray=\"6 4\"" : ""
            if !serie.markersOnly {
                for seg in segments where seg.count >= 2 {
                    let pts = seg.map { "\(f($0.0)),\(f($0.1))" }.joined(separator: " ")
                    s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"\(dash) points=\"\(pts)\"/>\n"
                }
            }
            let radius = serie.markersOnly ? 3.5 : (serie.points.count > 60 ? 0 : 2.5)
            if radius > 0 {
                for seg in segments {
                    for p in seg { s += "<circle cx=\"\(f(p.0))\" cy=\"\(f(p.1))\" r=\"\(radius)\" fill=\"\(color)\"/>" }
                }
                s += "\n"
            }
            let ly = top + 10 + Double(i) * 18
            if serie.markersOnly {
                s += "<circle cx=\"\(f(left + pw + 22))\" cy=\"\(f(ly))\" r=\"4\" fill=\"\(color)\"/>"
            } else {
                s += "<line x1=\"\(f(left + pw + 12))\" y1=\"\(f(ly))\" x2=\"\(f(left + pw + 32))\" y2=\"\(f(ly))\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>"
            }
            s += "<text x=\"\(f(left + pw + 38))\" y=\"\(f(ly + 4))\" font-size=\"11\">\(Self.escape(serie.name))</text>\n"
        }
        if let note {
            var y = top + 10 + Double(series.count) * 18 + 12
            for line in note.split(separator: "\n") {
                s += "<text x=\"\(f(left + pw + 12))\" y=\"\(f(y))\" font-size=\"10\" fill=\"#555\">\(Self.escape(String(line)))</text>\n"
                y += 13
            }
        }
        return s
    }

    static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e6 { return String(Int(v)) }
        if abs(v) >= 1e6 || abs(v) < 1e-3 { return String(format: "%.0e", v) }
        return String(format: abs(v) < 0.01 ? "%.2g" : "%.3g", v)
    }
}

/// Several charts in one SVG, laid out in rows of `columns` panels, under an overall title.
public struct PlotGrid: Sendable {
    public var title: String
    public var panels: [LinePlot]
    public var columns: Int
    public var panelWidth: Double
    public var panelHeight: Double

    public init(title: String, panels: [LinePlot], columns: Int = 2, panelWidth: Double = 560, panelHeight: Double = 360) {
        self.title = title; self.panels = panels; self.columns = max(1, columns)
        self.panelWidth = panelWidth; self.panelHeight = panelHeight
    }

    public func svg() -> String {
        let cols = min(columns, max(1, panels.count))
        let rows = (panels.count + cols - 1) / cols
        let header = 34.0
        let width = Double(cols) * panelWidth, height = header + Double(rows) * panelHeight
        var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(width / 2)" y="24" text-anchor="middle" font-size="17" font-weight="bold">\(LinePlot.escape(title))</text>

        """
        for (i, panel) in panels.enumerated() {
            let x = Double(i % cols) * panelWidth, y = header + Double(i / cols) * panelHeight
            s += "<g transform=\"translate(\(x) \(y))\">\n"
            s += panel.body(width: panelWidth, height: panelHeight)
            s += "</g>\n"
        }
        s += "</svg>\n"
        return s
    }
}
