import Foundation

/// Progress of long work: a redrawn bar with rate and ETA on a terminal, plain lines
/// (at most every few seconds) otherwise. Writes to standard error.
struct ProgressReporter {
    let label: String
    let total: Int
    let unit: String
    let isTerminal = isatty(STDERR_FILENO) != 0
    private let start = Date()
    private var lastPrint = Date.distantPast
    var quiet = false

    init(label: String, total: Int, unit: String = "batch") {
        self.label = label
        self.total = total
        self.unit = unit
    }

    mutating func update(_ done: Int, suffix: String = "") {
        guard !quiet else { return }
        let now = Date()
        let finished = done >= total
        let interval: TimeInterval = isTerminal ? 0.1 : 10
        guard finished || now.timeIntervalSince(lastPrint) >= interval else { return }
        lastPrint = now
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        let stats = String(format: "%d/%d %@ %.1f %@/s ETA %@", done, total, label, rate, unit, Self.format(eta))
        if isTerminal {
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            FileHandle.standardError.write(Data("\r\(bar) \(stats) \(suffix)\u{1B}[K".utf8))
            if finished { FileHandle.standardError.write(Data("\n".utf8)) }
        } else {
            FileHandle.standardError.write(Data("\(String(format: "%3.0f%%", fraction * 100)) \(stats) \(suffix)\n".utf8))
        }
    }

    static func format(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
