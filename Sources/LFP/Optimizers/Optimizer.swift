import Foundation
import LFPTensor

/// An optimizer updates parameters given a *descent direction* per parameter (a gradient,
/// or `-feedback` under LFP: LFP-MATH.md section 3). It does not own the model; its
/// per-parameter state is keyed by parameter name.
public protocol Optimizer: Sendable {
    /// The current learning rate (schedules set it before each step).
    var learningRate: Float { get set }
    /// Applies one update: `directions[name]` is the gradient-like direction of that parameter.
    /// Parameters absent from `directions` are left untouched.
    /// - Returns: the names of the updated parameters that now hold NaN or an infinity, found in
    ///   the update's own pass (the trainer stops on them without reading the parameters again).
    @discardableResult
    mutating func step(_ model: inout Sequential, directions: [String: Tensor]) -> Set<String>
    /// The per-parameter state as named tensors (for checkpoints that resume exactly).
    func stateTensors() -> [String: Tensor]
    /// Restores state written by `stateTensors()`.
    mutating func loadState(_ tensors: [String: Tensor])
    /// The momentum (SGD) or beta1 (Adam), for schedules that cycle it.
    var momentumValue: Float { get set }
}

/// Stochastic gradient descent with PyTorch's semantics (momentum, dampening, Nesterov,
/// L2 weight decay): `g += wd * p; v = mu * v + (1 - dampening) * g (v = g at the first step);
/// p -= lr * (nesterov ? g + mu * v : v)`.
public struct SGD: Optimizer {
    public var learningRate: Float
    public var momentum: Float
    public var dampening: Float
    public var nesterov: Bool
    public var weightDecay: Float
    /// Momentum buffers by parameter name.
    public var velocity: [String: Tensor] = [:]

    public init(learningRate: Float, momentum: Float = 0, dampening: Float = 0, nesterov: Bool = false, weightDecay: Float = 0) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov
        self.weightDecay = weightDecay
    }

    public var momentumValue: Float {
        get { momentum }
        set { momentum = newValue }
    }

    public func stateTensors() -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: velocity.map { ("velocity/\($0.key)", $0.value) })
    }

    public mutating func loadState(_ tensors: [String: Tensor]) {
        velocity = [:]
        for (key, value) in tensors where key.hasPrefix("velocity/") { velocity[String(key.dropFirst(9))] = value }
    }

    @discardableResult
    public mutating func step(_ model: inout Sequential, directions: [String: Tensor]) -> Set<String> {
        let lr = learningRate, mu = momentum, damp = dampening, wd = weightDecay, nesterov = nesterov
        var nonFinite: Set<String> = []
        model.updateParameters { name, p in
            guard let g = directions[name] else { return }
            precondition(g.shape == p.shape, "direction for \(name) has shape \(g.shape), parameter \(p.shape)")
            if p.count == 0 { return }
            // One fused pass over parameter, direction and velocity, split over the cores, which
            // also checks the new values (`Float.nonFiniteFlag`).
            let previous = mu != 0 ? velocity.removeValue(forKey: name) : nil
            var v = previous ?? Tensor(uninitializedShape: mu != 0 ? p.shape : [0])
            let first = previous == nil
            let finite = p.storage.withUnsafeMutableBufferPointer { pp in
                g.storage.withUnsafeBufferPointer { pg in
                    v.storage.withUnsafeMutableBufferPointer { pv in
                        let (pw, gw, vw) = (pp.baseAddress!, pg.baseAddress!, pv.baseAddress)
                        return Parallel.all(pp.count) { range in
                            var flags: UInt32 = 0
                            if let vw, mu != 0 && !first && !nesterov && wd == 0 {
                                // The common case, branch-free so that it vectorises; the new values
                                // are checked in blocks still in L1 (with the check inside the
                                // update loop the compiler no longer vectorised it).
                                let c = 1 - damp
                                var lo = range.lowerBound
                                while lo < range.upperBound {
                                    let hi = min(lo + 4096, range.upperBound)
                                    for i in lo..<hi {
                                        let vi = mu * vw[i] + c * gw[i]
                                        vw[i] = vi
                                        pw[i] -= lr * vi
                                    }
                                    for i in lo..<hi { flags |= pw[i].nonFiniteFlag }
                                    lo = hi
                                }
                                return Float.allFinite(flags)
                            }
                            for i in range {
                                let gi = wd != 0 ? gw[i] + wd * pw[i] : gw[i]
                                if mu == 0 {
                                    pw[i] -= lr * gi
                                } else {
                                    // v = g at the first step, mu v + (1 - dampening) g after.
                                    let vi = first ? gi : mu * vw![i] + (1 - damp) * gi
                                    vw![i] = vi
                                    pw[i] -= lr * (nesterov ? gi + mu * vi : vi)
                                }
                                flags |= pw[i].nonFiniteFlag
                            }
                            return Float.allFinite(flags)
                        }
                    }
                }
            }
            if !finite { nonFinite.insert(name) }
            if mu != 0 { velocity[name] = v }
        }
        return nonFinite
    }
}

/// Adam (Kingma & Ba) with PyTorch's semantics; `decoupledWeightDecay` gives AdamW.
public struct Adam: Optimizer {
    public var learningRate: Float
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
    public var decoupledWeightDecay: Bool
    public var firstMoment: [String: Tensor] = [:]
    public var secondMoment: [String: Tensor] = [:]
    public var steps: [String: Int] = [:]

    public init(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8,
                weightDecay: Float = 0, decoupledWeightDecay: Bool = false) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        self.decoupledWeightDecay = decoupledWeightDecay
    }

    /// AdamW: Adam with decoupled weight decay (PyTorch's default decay 0.01).
    public static func adamW(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                             epsilon: Float = 1e-8, weightDecay: Float = 0.01) -> Adam {
        Adam(learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
             weightDecay: weightDecay, decoupledWeightDecay: true)
    }

    public var momentumValue: Float {
        get { beta1 }
        set { beta1 = newValue }
    }

    public func stateTensors() -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (k, v) in firstMoment { out["m/\(k)"] = v }
        for (k, v) in secondMoment { out["v/\(k)"] = v }
        for (k, t) in steps { out["step/\(k)"] = Tensor(shape: [1], storage: [Float(t)]) }
        return out
    }

    public mutating func loadState(_ tensors: [String: Tensor]) {
        firstMoment = [:]; secondMoment = [:]; steps = [:]
        for (key, value) in tensors {
            if key.hasPrefix("m/") { firstMoment[String(key.dropFirst(2))] = value }
            if key.hasPrefix("v/") { secondMoment[String(key.dropFirst(2))] = value }
            if key.hasPrefix("step/") { steps[String(key.dropFirst(5))] = Int(value.storage.first ?? 0) }
        }
    }

    @discardableResult
    public mutating func step(_ model: inout Sequential, directions: [String: Tensor]) -> Set<String> {
        let lr = learningRate, b1 = beta1, b2 = beta2, eps = epsilon, wd = weightDecay, decoupled = decoupledWeightDecay
        var nonFinite: Set<String> = []
        model.updateParameters { name, p in
            guard var g = directions[name] else { return }
            if wd != 0 {
                if decoupled { p = p * (1 - lr * wd) } else { g.add(p, scaledBy: wd) }
            }
            let t = (steps[name] ?? 0) + 1
            steps[name] = t
            var m = firstMoment.removeValue(forKey: name) ?? Tensor(shape: p.shape)
            var v = secondMoment.removeValue(forKey: name) ?? Tensor(shape: p.shape)
            let c1 = 1 - Float(pow(Double(b1), Double(t)))
            let c2 = (1 - Float(pow(Double(b2), Double(t)))).squareRoot()
            let stepSize = lr / c1
            // Both moments and the parameter in one pass, split over the cores, checking the new values.
            let finite = p.storage.withUnsafeMutableBufferPointer { pp in
                g.storage.withUnsafeBufferPointer { pg in
                    m.storage.withUnsafeMutableBufferPointer { pm in
                        v.storage.withUnsafeMutableBufferPointer { pv in
                            let (pw, gw, mw, vw) = (pp.baseAddress!, pg.baseAddress!, pm.baseAddress!, pv.baseAddress!)
                            return Parallel.all(pp.count) { range in
                                var flags: UInt32 = 0
                                for i in range {
                                    let gi = gw[i]
                                    let mi = b1 * mw[i] + (1 - b1) * gi
                                    let vi = b2 * vw[i] + (1 - b2) * gi * gi
                                    mw[i] = mi
                                    vw[i] = vi
                                    let wi = pw[i] - stepSize * mi / (vi.squareRoot() / c2 + eps)
                                    pw[i] = wi
                                    flags |= wi.nonFiniteFlag
                                }
                                return Float.allFinite(flags)
                            }
                        }
                    }
                }
            }
            if !finite { nonFinite.insert(name) }
            firstMoment[name] = m
            secondMoment[name] = v
        }
        return nonFinite
    }
}

/// A type-erased optimizer, so a trainer's optimizer can be chosen at run time.
public struct ErasedOptimizer: Optimizer {
    var base: any Optimizer
    public init(_ base: any Optimizer) { self.base = base }
    public var learningRate: Float {
        get { base.learningRate }
        set { base.learningRate = newValue }
    }
    @discardableResult
    public mutating func step(_ model: inout Sequential, directions: [String: Tensor]) -> Set<String> {
        base.step(&model, directions: directions)
    }
    public func stateTensors() -> [String: Tensor] { base.stateTensors() }
    public mutating func loadState(_ tensors: [String: Tensor]) { base.loadState(tensors) }
    public var momentumValue: Float {
        get { base.momentumValue }
        set { base.momentumValue = newValue }
    }
}
