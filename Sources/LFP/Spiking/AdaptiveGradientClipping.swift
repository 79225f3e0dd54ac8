import LFPTensor

/// Unit-wise adaptive gradient clipping (AGC, Brock et al. 2021, "High-Performance Large-Scale
/// Image Recognition Without Normalization"), which the paper uses for its spiking networks
/// (appendix A.6.3).
///
/// For every unit of a parameter, with `g` its direction (gradient, or `-feedback` under LFP)
/// and `w` its value: if `||g_unit|| > clipping * max(||w_unit||, epsilon)`, `g_unit` is scaled
/// down to that norm. A unit is one output unit: a row of a Linear weight `[out, in]`, one
/// output channel of a Conv2d weight `[out, in, kh, kw]`. **(choice, as in timm and the NFNet
/// reference code)** A bias (rank 1) is a single unit.
public struct AdaptiveGradientClipping: Sendable, Equatable {
    /// The clipping factor `lambda` (default 0.01).
    public var clipping: Float
    /// The floor on a unit's parameter norm (default 1e-3), so zero-initialised units can move.
    public var epsilon: Float

    public init(clipping: Float = 0.01, epsilon: Float = 1e-3) {
        self.clipping = clipping
        self.epsilon = epsilon
    }

    /// `direction` clipped unit-wise against `parameter` (same shape).
    public func clip(_ direction: Tensor, parameter: Tensor) -> Tensor {
        precondition(direction.shape == parameter.shape, "direction \(direction.shape) vs parameter \(parameter.shape)")
        let units = parameter.rank <= 1 ? 1 : parameter.shape[0]
        let size = units == 0 ? 0 : parameter.count / units
        var g = direction
        g.storage.withUnsafeMutableBufferPointer { pg in
            parameter.storage.withUnsafeBufferPointer { pw in
                for u in 0..<units {
                    let range = (u * size)..<((u + 1) * size)
                    var gNorm = 0.0, wNorm = 0.0
                    for i in range {
                        gNorm += Double(pg[i]) * Double(pg[i])
                        wNorm += Double(pw[i]) * Double(pw[i])
                    }
                    gNorm = gNorm.squareRoot()
                    let limit = Double(clipping) * max(wNorm.squareRoot(), Double(epsilon))
                    guard gNorm > limit, gNorm > 0 else { continue }
                    let scale = Float(limit / gNorm)
                    for i in range { pg[i] *= scale }
                }
            }
        }
        return g
    }

    /// Clips every direction against the parameter of the same name in `model`.
    public func apply(to directions: inout [String: Tensor], parameters model: Sequential) {
        for (name, d) in directions {
            guard let w = model.parameter(name) else { continue }
            directions[name] = clip(d, parameter: w)
        }
    }
}
