import Foundation

/// A surrogate derivative of the Heaviside spike function for the gradient baseline
/// (back-propagation through time, LFP-MATH.md section 6). The forward pass always spikes
/// with `H`; only the backward pass uses the surrogate, evaluated at `x = U - theta`.
public enum Surrogate: Sendable, Equatable, CustomStringConvertible {
    /// snnTorch's `surrogate.atan(alpha)`: `(alpha/2) / (1 + (pi alpha x / 2)^2)`, the derivative
    /// of `atan(pi alpha x / 2) / pi + 1/2`. With the default `alpha = 2` this is
    /// `1 / (1 + (pi x)^2)`, the form quoted in LFP-MATH.md section 6.
    case atan(alpha: Float = 2)
    /// snnTorch's `surrogate.fast_sigmoid(slope)`: `1 / (1 + slope |x|)^2`, the derivative of
    /// `x / (1 + slope |x|)`; default slope 25.
    case fastSigmoid(slope: Float = 25)
    /// The true derivative of `H`: zero everywhere (so gradient descent cannot learn).
    case heaviside

    public var description: String {
        switch self {
        case .atan(let a): "atan(\(a))"
        case .fastSigmoid(let k): "fast-sigmoid(\(k))"
        case .heaviside: "heaviside"
        }
    }

    /// Names accepted by `parse(_:)`.
    public static let names = ["atan", "fast-sigmoid", "heaviside"]

    /// Parses `atan`, `atan:2`, `fast-sigmoid`, `fast-sigmoid:25`, `heaviside`.
    public static func parse(_ text: String) throws(LFPError) -> Surrogate {
        let parts = text.lowercased().split(separator: ":").map(String.init)
        func number(_ fallback: Float) throws(LFPError) -> Float {
            guard parts.count > 1 else { return fallback }
            guard let v = Float(parts[1]), v.isFinite, v > 0 else {
                throw .invalidRule("'\(parts[1])' is not a positive number in surrogate '\(text)'")
            }
            return v
        }
        switch parts.first ?? "" {
        case "atan", "arctan": return .atan(alpha: try number(2))
        case "fast-sigmoid", "fastsigmoid", "fast_sigmoid": return .fastSigmoid(slope: try number(25))
        case "heaviside", "step", "none": return .heaviside
        default: throw .invalidRule("unknown surrogate '\(text)'; valid: \(names.joined(separator: ", "))")
        }
    }

    /// The surrogate derivative at `x = U - theta`.
    @inlinable public func derivative(_ x: Float) -> Float {
        switch self {
        case .atan(let alpha):
            let y = Float.pi * alpha * x / 2
            return (alpha / 2) / (1 + y * y)
        case .fastSigmoid(let slope):
            let d = 1 + slope * abs(x)
            return 1 / (d * d)
        case .heaviside:
            return 0
        }
    }

    /// The surrogate derivative in double precision (for tests against finite differences).
    public func derivative(_ x: Double) -> Double {
        switch self {
        case .atan(let alpha):
            let a = Double(alpha), y = Double.pi * a * x / 2
            return (a / 2) / (1 + y * y)
        case .fastSigmoid(let slope):
            let d = 1 + Double(slope) * abs(x)
            return 1 / (d * d)
        case .heaviside:
            return 0
        }
    }

    /// An antiderivative of the surrogate: the smooth spike function whose true derivative the
    /// surrogate is (`H` itself for `.heaviside`).
    public func smoothStep(_ x: Double) -> Double {
        switch self {
        case .atan(let alpha): return Foundation.atan(Double.pi * Double(alpha) * x / 2) / Double.pi + 0.5
        case .fastSigmoid(let slope): return 0.5 + x / (1 + Double(slope) * abs(x))
        case .heaviside: return x > 0 ? 1 : 0
        }
    }
}
