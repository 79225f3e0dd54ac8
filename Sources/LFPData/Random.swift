import Foundation

/// The SplitMix64 generator (Steele, Lea & Flood), used to expand seeds.
///
/// Fully deterministic: the output sequence depends only on `seed`, on every platform
/// and Swift version.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The internal 64-bit state.
    public private(set) var state: UInt64

    /// Creates a generator whose sequence is a pure function of `seed`.
    public init(seed: UInt64) {
        state = seed
    }

    /// Returns the next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return SplitMix64.mix(state)
    }

    /// The SplitMix64 output function: a bijective avalanche mix of 64 bits.
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A deterministic xoshiro256** generator (Blackman & Vigna) seeded through SplitMix64.
///
/// All data shuffling and synthetic data in `LFPData` use this generator, so results
/// are reproducible from a `UInt64` seed independently of the Swift standard library's
/// (unspecified) shuffling algorithms. Use the helpers (``nextInt(below:)``,
/// ``nextDouble()``, ``nextGaussian()``, ``shuffle(_:)``) rather than the standard
/// library's `shuffled(using:)` when reproducibility across toolchains matters.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s0: UInt64
    private var s1: UInt64
    private var s2: UInt64
    private var s3: UInt64

    /// Creates a generator whose sequence is a pure function of `seed`.
    public init(seed: UInt64) {
        var expander = SplitMix64(seed: seed)
        s0 = expander.next()
        s1 = expander.next()
        s2 = expander.next()
        s3 = expander.next()
        if s0 | s1 | s2 | s3 == 0 { s0 = 0x9E37_79B9_7F4A_7C15 }  // the all-zero state is a fixed point
    }

    /// Creates an independent generator for sub-stream `stream` of `seed`
    /// (e.g. one stream per epoch); a pure function of both values.
    public init(seed: UInt64, stream: UInt64) {
        let key = SplitMix64.mix(seed &+ 0x6A09_E667_F3BC_C909)
        self.init(seed: SplitMix64.mix(key ^ SplitMix64.mix(stream ^ 0xBB67_AE85_84CA_A73B)))
    }

    @inline(__always)
    private static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 {
        (x << k) | (x >> (64 - k))
    }

    /// Returns the next 64 random bits.
    public mutating func next() -> UInt64 {
        let result = SeededGenerator.rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = SeededGenerator.rotl(s3, 45)
        return result
    }

    /// A uniform `Double` in `[0, 1)` with 53 random bits.
    public mutating func nextDouble() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// A uniform `Float` in `[0, 1)` with 24 random bits.
    public mutating func nextFloat() -> Float {
        Float(next() >> 40) * 0x1.0p-24
    }

    /// A uniform `Double` in `[low, high)`.
    public mutating func nextDouble(in low: Double, _ high: Double) -> Double {
        low + (high - low) * nextDouble()
    }

    /// An unbiased uniform integer in `0 ..< bound` (Lemire's method); returns 0 when `bound <= 1`.
    public mutating func nextInt(below bound: Int) -> Int {
        guard bound > 1 else { return 0 }
        let n = UInt64(bound)
        var m = next().multipliedFullWidth(by: n)
        if m.low < n {
            let threshold = (0 &- n) % n
            while m.low < threshold {
                m = next().multipliedFullWidth(by: n)
            }
        }
        return Int(m.high)
    }

    /// A standard normal sample (mean 0, standard deviation 1) via the Box–Muller transform.
    public mutating func nextGaussian() -> Double {
        let u1 = 1.0 - nextDouble()  // (0, 1], so log is finite
        let u2 = nextDouble()
        return (-2.0 * Foundation.log(u1)).squareRoot() * Foundation.cos(2.0 * Double.pi * u2)
    }

    /// Shuffles `array` in place with the Fisher–Yates algorithm, deterministically.
    public mutating func shuffle<T>(_ array: inout [T]) {
        var i = array.count - 1
        while i > 0 {
            let j = nextInt(below: i + 1)
            array.swapAt(i, j)
            i -= 1
        }
    }
}
