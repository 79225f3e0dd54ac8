import Foundation

/// Small synthetic classification datasets, each a pure function of its arguments and seed
/// (generated with ``SeededGenerator``, so identical on every platform and toolchain).
///
/// Labels are interleaved (`sample i` has class `i % classes`, except for ``signData(count:seed:)``),
/// so classes are balanced and every prefix is balanced too.
public enum ToyData {
    /// The names accepted by ``named(_:count:seed:)``.
    public static let names = ["sign", "blobs", "circles", "spirals"]

    /// The one-dimensional two-class "sign" data (appendix A.1): `x` uniform in `[-1, 1]`,
    /// label 1 if `x > 0`, else 0. `sampleShape == [1]`, `classCount == 2`.
    ///
    /// - Throws: ``DataError/invalidArgument(reason:)`` if `count` is negative.
    public static func signData(count: Int, seed: UInt64) throws(DataError) -> Dataset {
        try checkCount(count)
        var generator = SeededGenerator(seed: seed)
        var features = [Float]()
        var labels = [Int]()
        features.reserveCapacity(count)
        labels.reserveCapacity(count)
        for _ in 0..<count {
            let x = Float(generator.nextDouble(in: -1, 1))
            features.append(x)
            labels.append(x > 0 ? 1 : 0)
        }
        return Dataset(unchecked: features, labels: labels, sampleShape: [1], classCount: 2, name: "sign")
    }

    /// Isotropic Gaussian blobs: one centre per class drawn uniformly from `[-10, 10]^dimensions`,
    /// samples are centre + `spread` * N(0, I). `sampleShape == [dimensions]`.
    ///
    /// - Throws: ``DataError/invalidArgument(reason:)`` for a negative `count`, fewer than 1 class or
    ///   dimension, or a negative or non-finite `spread`.
    public static func blobs(
        count: Int, classes: Int = 3, dimensions: Int = 2, spread: Float = 1, seed: UInt64
    ) throws(DataError) -> Dataset {
        try checkCount(count)
        guard classes >= 1, dimensions >= 1 else {
            throw .invalidArgument(reason: "blobs: need at least 1 class and 1 dimension, got \(classes) and \(dimensions)")
        }
        guard spread.isFinite, spread >= 0 else {
            throw .invalidArgument(reason: "blobs: spread must be finite and non-negative, got \(spread)")
        }
        var generator = SeededGenerator(seed: seed)
        var centres = [Double]()
        for _ in 0..<(classes * dimensions) {
            centres.append(generator.nextDouble(in: -10, 10))
        }
        var features = [Float]()
        var labels = [Int]()
        features.reserveCapacity(count * dimensions)
        labels.reserveCapacity(count)
        for i in 0..<count {
            let label = i % classes
            for d in 0..<dimensions {
                features.append(Float(centres[label * dimensions + d] + Double(spread) * generator.nextGaussian()))
            }
            labels.append(label)
        }
        return Dataset(unchecked: features, labels: labels, sampleShape: [dimensions], classCount: classes, name: "blobs")
    }

    /// Two concentric circles in 2-D (like scikit-learn's `make_circles`): class 0 on the unit
    /// circle, class 1 on a circle of radius `factor`, evenly spaced in angle, plus Gaussian
    /// noise of standard deviation `noise`. `sampleShape == [2]`, `classCount == 2`.
    ///
    /// - Throws: ``DataError/invalidArgument(reason:)`` for a negative `count`, negative or non-finite
    ///   `noise`, or `factor` outside `(0, 1)`.
    public static func circles(
        count: Int, noise: Float = 0.05, factor: Float = 0.5, seed: UInt64
    ) throws(DataError) -> Dataset {
        try checkCount(count)
        guard noise.isFinite, noise >= 0 else {
            throw .invalidArgument(reason: "circles: noise must be finite and non-negative, got \(noise)")
        }
        guard factor > 0, factor < 1 else {
            throw .invalidArgument(reason: "circles: factor must be in (0, 1), got \(factor)")
        }
        var generator = SeededGenerator(seed: seed)
        let perClass = [(count + 1) / 2, count / 2]
        var features = [Float]()
        var labels = [Int]()
        features.reserveCapacity(2 * count)
        labels.reserveCapacity(count)
        for i in 0..<count {
            let label = i % 2
            let k = i / 2
            let angle = 2 * Double.pi * Double(k) / Double(max(perClass[label], 1))
            let radius = label == 0 ? 1.0 : Double(factor)
            let x = radius * Foundation.cos(angle) + Double(noise) * generator.nextGaussian()
            let y = radius * Foundation.sin(angle) + Double(noise) * generator.nextGaussian()
            features.append(Float(x))
            features.append(Float(y))
            labels.append(label)
        }
        return Dataset(unchecked: features, labels: labels, sampleShape: [2], classCount: 2, name: "circles")
    }

    /// Interleaved spirals in 2-D: class `c` follows the arm `r * (cos t, sin t)` with radius
    /// `r` in `(0, 1]` and angle `t = 2πc / classes + 3πr` (one and a half turns), plus Gaussian
    /// noise of standard deviation `noise`. `sampleShape == [2]`, `classCount == classes`.
    ///
    /// - Throws: ``DataError/invalidArgument(reason:)`` for a negative `count`, fewer than 1 class,
    ///   or negative or non-finite `noise`.
    public static func spirals(
        count: Int, classes: Int = 2, noise: Float = 0.05, seed: UInt64
    ) throws(DataError) -> Dataset {
        try checkCount(count)
        guard classes >= 1 else {
            throw .invalidArgument(reason: "spirals: need at least 1 class, got \(classes)")
        }
        guard noise.isFinite, noise >= 0 else {
            throw .invalidArgument(reason: "spirals: noise must be finite and non-negative, got \(noise)")
        }
        var generator = SeededGenerator(seed: seed)
        var features = [Float]()
        var labels = [Int]()
        features.reserveCapacity(2 * count)
        labels.reserveCapacity(count)
        for i in 0..<count {
            let label = i % classes
            let k = i / classes
            let inClass = (count - label + classes - 1) / classes
            let r = Double(k + 1) / Double(max(inClass, 1))
            let t = 2 * Double.pi * Double(label) / Double(classes) + 3 * Double.pi * r
            let x = r * Foundation.cos(t) + Double(noise) * generator.nextGaussian()
            let y = r * Foundation.sin(t) + Double(noise) * generator.nextGaussian()
            features.append(Float(x))
            features.append(Float(y))
            labels.append(label)
        }
        return Dataset(unchecked: features, labels: labels, sampleShape: [2], classCount: classes, name: "spirals")
    }

    /// One of the toy sets by name (case-insensitive): `"sign"`, `"blobs"`, `"circles"` or
    /// `"spirals"`, with default parameters.
    ///
    /// - Throws: ``DataError/invalidArgument(reason:)`` for an unknown name (listing the valid ones)
    ///   or a negative `count`.
    public static func named(_ name: String, count: Int, seed: UInt64) throws(DataError) -> Dataset {
        switch name.lowercased().trimmingCharacters(in: .whitespaces) {
        case "sign": return try signData(count: count, seed: seed)
        case "blobs": return try blobs(count: count, seed: seed)
        case "circles": return try circles(count: count, seed: seed)
        case "spirals": return try spirals(count: count, seed: seed)
        default:
            throw .invalidArgument(
                reason: "unknown toy dataset '\(name)'; valid names are \(names.joined(separator: ", "))")
        }
    }

    private static func checkCount(_ count: Int) throws(DataError) {
        guard count >= 0 else {
            throw .invalidArgument(reason: "sample count must be non-negative, got \(count)")
        }
    }
}
