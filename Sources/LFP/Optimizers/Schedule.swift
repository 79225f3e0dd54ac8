import Foundation

/// Learning-rate schedules, stepped once per batch (PyTorch's formulas).
public enum LearningRateSchedule: Sendable, Equatable {
    case constant
    /// Multiply by `gamma` every `stepSize` steps.
    case step(stepSize: Int, gamma: Float)
    /// Multiply by `gamma` at each milestone step.
    case multiStep(milestones: [Int], gamma: Float)
    /// Cosine annealing from the base rate to `minimum` over `totalSteps`.
    case cosine(totalSteps: Int, minimum: Float)
    /// One-cycle (PyTorch OneCycleLR, cosine annealing, `pct_start` 0.3, `div_factor` 25,
    /// `final_div_factor` 1e4): the base rate is the peak.
    case oneCycle(totalSteps: Int)

    /// The learning rate at `step` (0-based) for a base rate.
    public func rate(base: Float, step: Int) -> Float {
        switch self {
        case .constant:
            return base
        case .step(let size, let gamma):
            return base * Float(pow(Double(gamma), Double(step / max(1, size))))
        case .multiStep(let milestones, let gamma):
            return base * Float(pow(Double(gamma), Double(milestones.filter { $0 <= step }.count)))
        case .cosine(let total, let minimum):
            let t = Double(min(step, total)) / Double(max(1, total))
            return minimum + (base - minimum) * Float((1 + cos(Double.pi * t)) / 2)
        case .oneCycle(let total):
            let initial = Double(base) / 25, final = initial / 1e4
            let up = 0.3 * Double(total) - 1
            let s = Double(step)
            func anneal(_ start: Double, _ end: Double, _ pct: Double) -> Double { end + (start - end) / 2 * (1 + cos(Double.pi * pct)) }
            if s <= up { return Float(anneal(initial, Double(base), s / max(up, 1))) }
            let down = Double(total) - 1 - up
            return Float(anneal(Double(base), final, min(1, (s - up) / max(down, 1))))
        }
    }

    /// The momentum (SGD) or beta1 (Adam) at `step`, for schedules that cycle it: one-cycle
    /// moves it from 0.95 down to 0.85 while the learning rate rises, then back up (PyTorch's
    /// `cycle_momentum` defaults). Nil for the other schedules.
    public func momentum(step: Int) -> Float? {
        guard case .oneCycle(let total) = self else { return nil }
        let (low, high) = (0.85, 0.95)
        let up = 0.3 * Double(total) - 1
        let s = Double(step)
        func anneal(_ start: Double, _ end: Double, _ pct: Double) -> Double { end + (start - end) / 2 * (1 + cos(Double.pi * pct)) }
        if s <= up { return Float(anneal(high, low, s / max(up, 1))) }
        let down = Double(total) - 1 - up
        return Float(anneal(low, high, min(1, (s - up) / max(down, 1))))
    }

    /// Parses `constant`, `step:N:gamma`, `multistep:m1,m2:gamma`, `cosine`, `onecycle`
    /// (`totalSteps` is the run's number of batches).
    public static func parse(_ text: String, totalSteps: Int) throws(LFPError) -> LearningRateSchedule {
        let parts = text.lowercased().split(separator: ":").map(String.init)
        func gamma(_ i: Int) throws(LFPError) -> Float {
            guard parts.count > i else { return 0.1 }
            guard let g = Float(parts[i]), g > 0 else { throw .invalidRule("bad gamma '\(parts[i])' in schedule '\(text)'") }
            return g
        }
        switch parts.first ?? "" {
        case "constant": return .constant
        case "step":
            guard parts.count >= 2, let n = Int(parts[1]), n > 0 else { throw .invalidRule("schedule step needs step:<steps>[:gamma], got '\(text)'") }
            return .step(stepSize: n, gamma: try gamma(2))
        case "multistep":
            guard parts.count >= 2 else { throw .invalidRule("schedule multistep needs multistep:<m1,m2,...>[:gamma]") }
            let ms = parts[1].split(separator: ",").compactMap { Int($0) }
            guard !ms.isEmpty else { throw .invalidRule("no milestones in '\(text)'") }
            return .multiStep(milestones: ms, gamma: try gamma(2))
        case "cosine": return .cosine(totalSteps: totalSteps, minimum: 0)
        case "onecycle", "one-cycle": return .oneCycle(totalSteps: totalSteps)
        default: throw .invalidRule("unknown schedule '\(text)'; valid: constant, step:N[:gamma], multistep:m1,m2[:gamma], cosine, onecycle")
        }
    }
}
