import Foundation

/// A seeded, reproducible pseudo-random generator (xoshiro256**, seeded through SplitMix64).
/// The same seed gives the same sequence on every platform.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var s0, s1, s2, s3: UInt64

    public init(seed: UInt64) {
        var sm = seed
        func splitMix() -> UInt64 {
            sm &+= 0x9E37_79B9_7F4A_7C15
            var z = sm
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitMix(); s1 = splitMix(); s2 = splitMix(); s3 = splitMix()
    }

    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// Uniform in `[0, 1)` with 24 bits of precision.
    public mutating func nextUnit() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Uniform in `[low, high)`.
    public mutating func uniform(_ low: Float, _ high: Float) -> Float { low + (high - low) * nextUnit() }

    /// Standard normal (Box-Muller).
    public mutating func normal() -> Float {
        let u1 = max(Double(next() >> 11) * 0x1p-53, Double.leastNonzeroMagnitude)
        let u2 = Double(next() >> 11) * 0x1p-53
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// A generator for a sub-stream (e.g. per layer), independent of how much this one was used.
    public func derived(_ stream: UInt64) -> SeededRandom {
        var copy = SeededRandom(seed: s0 ^ (stream &* 0x9E37_79B9_7F4A_7C15))
        _ = copy.next()
        return copy
    }
}

extension Tensor {
    /// Uniform in `[-bound, bound)`.
    public static func uniform(_ shape: [Int], bound: Float, rng: inout SeededRandom) -> Tensor {
        var t = Tensor(shape: shape)
        for i in 0..<t.count { t.storage[i] = rng.uniform(-bound, bound) }
        return t
    }

    /// Standard-normal samples scaled by `std`.
    public static func normal(_ shape: [Int], std: Float = 1, rng: inout SeededRandom) -> Tensor {
        var t = Tensor(shape: shape)
        for i in 0..<t.count { t.storage[i] = rng.normal() * std }
        return t
    }
}

/// PyTorch's default initialisation of Linear and Conv2d (LFP-MATH.md section 3):
/// Kaiming-uniform with `a = sqrt(5)`, i.e. weights and biases uniform in `±1/sqrt(fan_in)`.
public enum DefaultInitialization {
    /// The bound `1/sqrt(fan_in)` shared by weights and biases.
    public static func bound(fanIn: Int) -> Float { fanIn > 0 ? 1 / Float(fanIn).squareRoot() : 0 }
}
