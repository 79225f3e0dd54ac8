/// Which part of a dataset with a standard train/test split to load.
public enum Split: String, Sendable, CaseIterable, CustomStringConvertible {
    /// The training split (MNIST `train-*`, CIFAR-10 `data_batch_1…5.bin`).
    case train
    /// The test split (MNIST `t10k-*`, CIFAR-10 `test_batch.bin`).
    case test

    /// `"train"` or `"test"`.
    public var description: String { rawValue }
}

/// An in-memory labelled classification dataset.
///
/// Features are stored flat, sample-major and row-major: sample `i` occupies
/// `features[i * featuresPerSample ..< (i + 1) * featuresPerSample]`, laid out in the
/// order of ``sampleShape`` (e.g. channel, row, column for `[3, 32, 32]`).
///
/// The initializer validates all invariants, so every `Dataset` value is consistent:
/// `features.count == count * featuresPerSample`, every dimension of `sampleShape` is
/// positive, and every label lies in `0 ..< classCount`.
public struct Dataset: Sendable {
    /// All feature values, flat, sample-major, row-major.
    public let features: [Float]
    /// One integer class id per sample, each in `0 ..< classCount`.
    public let labels: [Int]
    /// The shape of one sample, e.g. `[1, 28, 28]`, `[3, 32, 32]` or `[d]`.
    public let sampleShape: [Int]
    /// The number of classes; labels lie in `0 ..< classCount`.
    public let classCount: Int
    /// A human-readable name, e.g. `"fashion-mnist-test"`.
    public var name: String

    /// The number of samples.
    public var count: Int { labels.count }

    /// The number of feature values per sample (the product of ``sampleShape``).
    public var featuresPerSample: Int { sampleShape.reduce(1, *) }

    /// Creates a dataset after validating its invariants.
    ///
    /// - Throws: ``DataError/invalidArgument(reason:)`` when `sampleShape` is empty or has a
    ///   non-positive dimension, when `features.count != labels.count * product(sampleShape)`,
    ///   when `classCount` is negative (or zero with labels present), or when a label is outside
    ///   `0 ..< classCount`.
    public init(
        features: [Float], labels: [Int], sampleShape: [Int], classCount: Int, name: String
    ) throws(DataError) {
        guard !sampleShape.isEmpty, sampleShape.allSatisfy({ $0 > 0 }),
              let perSample = checkedProduct(sampleShape)
        else {
            throw .invalidArgument(
                reason: "dataset '\(name)': sample shape \(shapeText(sampleShape)) must be non-empty with positive dimensions")
        }
        let (expected, overflow) = labels.count.multipliedReportingOverflow(by: perSample)
        guard !overflow, expected == features.count else {
            throw .invalidArgument(
                reason: "dataset '\(name)': \(features.count) feature values do not match \(labels.count) samples of shape \(shapeText(sampleShape))")
        }
        guard classCount >= 0, labels.isEmpty || classCount > 0 else {
            throw .invalidArgument(reason: "dataset '\(name)': class count \(classCount) is invalid")
        }
        if let bad = labels.firstIndex(where: { $0 < 0 || $0 >= classCount }) {
            throw .invalidArgument(
                reason: "dataset '\(name)': label \(labels[bad]) of sample \(bad) is outside 0..<\(classCount)")
        }
        self.init(unchecked: features, labels: labels, sampleShape: sampleShape, classCount: classCount, name: name)
    }

    /// Creates a dataset whose invariants the caller has already established (internal).
    init(unchecked features: [Float], labels: [Int], sampleShape: [Int], classCount: Int, name: String) {
        self.features = features
        self.labels = labels
        self.sampleShape = sampleShape
        self.classCount = classCount
        self.name = name
    }

    // MARK: - Statistics and normalisation

    /// The number of channels used by ``channelStatistics()`` and ``normalized(mean:std:)``:
    /// the first dimension of ``sampleShape`` (so `[d]`-shaped tabular data has one channel per feature).
    public var channelCount: Int { sampleShape[0] }

    /// Per-channel mean and population standard deviation over all samples.
    ///
    /// A channel is the first dimension of ``sampleShape``: 1 for `[1, 28, 28]`, 3 for
    /// `[3, 32, 32]`, and `d` (one per feature) for `[d]`. Computed in `Double` with two passes.
    /// An empty dataset yields zero means and zero deviations.
    public func channelStatistics() -> (mean: [Float], std: [Float]) {
        let channels = channelCount
        let plane = featuresPerSample / channels
        let n = count
        guard n > 0 else {
            return ([Float](repeating: 0, count: channels), [Float](repeating: 0, count: channels))
        }
        var sums = [Double](repeating: 0, count: channels)
        var squares = [Double](repeating: 0, count: channels)
        let perSample = featuresPerSample
        features.withUnsafeBufferPointer { values in
            for c in 0..<channels {
                var sum = 0.0
                for i in 0..<n {
                    let base = i * perSample + c * plane
                    for j in 0..<plane { sum += Double(values[base + j]) }
                }
                let mean = sum / Double(n * plane)
                sums[c] = mean
                var sq = 0.0
                for i in 0..<n {
                    let base = i * perSample + c * plane
                    for j in 0..<plane {
                        let d = Double(values[base + j]) - mean
                        sq += d * d
                    }
                }
                squares[c] = (sq / Double(n * plane)).squareRoot()
            }
        }
        return (sums.map { Float($0) }, squares.map { Float($0) })
    }

    /// Returns a copy with each channel transformed as `(x - mean[c]) / std[c]`.
    ///
    /// Channels whose `std` is zero, negative or not finite are only centred (divided by 1),
    /// so constant channels never produce NaN or infinity.
    ///
    /// - Throws: ``DataError/invalidArgument(reason:)`` when `mean` or `std` does not have
    ///   exactly ``channelCount`` entries.
    public func normalized(mean: [Float], std: [Float]) throws(DataError) -> Dataset {
        let channels = channelCount
        guard mean.count == channels, std.count == channels else {
            throw .invalidArgument(
                reason: "dataset '\(name)': normalisation needs \(channels) means and deviations, got \(mean.count) and \(std.count)")
        }
        let plane = featuresPerSample / channels
        let scale = std.map { $0.isFinite && $0 > 0 ? 1 / $0 : 1 }
        let n = features.count
        let samples = count
        let output = [Float](unsafeUninitializedCapacity: n) { buffer, initialized in
            features.withUnsafeBufferPointer { values in
                guard n > 0, let source = values.baseAddress, let target = buffer.baseAddress else { return }
                var offset = 0
                for _ in 0..<samples {
                    for c in 0..<channels {
                        let m = mean[c], s = scale[c]
                        let src = source + offset, dst = target + offset
                        for j in 0..<plane { dst[j] = (src[j] - m) * s }
                        offset += plane
                    }
                }
            }
            initialized = n
        }
        return Dataset(unchecked: output, labels: labels, sampleShape: sampleShape, classCount: classCount, name: name)
    }

    /// Returns a copy normalised with this dataset's own ``channelStatistics()``.
    public func normalized() -> Dataset {
        let stats = channelStatistics()
        // Cannot throw: the statistics have exactly `channelCount` entries.
        return (try? normalized(mean: stats.mean, std: stats.std)) ?? self
    }

    // MARK: - Selection

    /// Returns the samples at `indices`, in that order (indices may repeat).
    ///
    /// - Throws: ``DataError/invalidArgument(reason:)`` if an index is outside `0 ..< count`.
    public func subset(_ indices: [Int]) throws(DataError) -> Dataset {
        if let bad = indices.first(where: { $0 < 0 || $0 >= count }) {
            throw .invalidArgument(reason: "dataset '\(name)': index \(bad) is outside 0..<\(count)")
        }
        var newFeatures = [Float]()
        var newLabels = [Int]()
        batch(indices: indices[...], into: &newFeatures, labels: &newLabels)
        return Dataset(unchecked: newFeatures, labels: newLabels, sampleShape: sampleShape, classCount: classCount, name: name)
    }

    /// Returns the first `n` samples (all of them if `n >= count`, none if `n <= 0`).
    public func prefix(_ n: Int) -> Dataset {
        let k = min(max(n, 0), count)
        if k == count { return self }
        return Dataset(
            unchecked: Array(features[0..<(k * featuresPerSample)]), labels: Array(labels[0..<k]),
            sampleShape: sampleShape, classCount: classCount, name: name)
    }

    /// Copies the samples at `indices` into caller-owned buffers, for mini-batch training
    /// without copying the whole dataset each epoch.
    ///
    /// `features` is resized to `indices.count * featuresPerSample` values and `labels` to
    /// `indices.count` entries; existing capacity is reused, so passing the same buffers every
    /// step allocates only when a batch grows.
    ///
    /// - Precondition: every index lies in `0 ..< count` (indices produced by ``BatchOrder`` always do).
    public func batch(indices: ArraySlice<Int>, into features: inout [Float], labels: inout [Int]) {
        let perSample = featuresPerSample
        let rows = indices.count
        let needed = rows * perSample
        Dataset.resize(&features, to: needed, fill: 0)
        Dataset.resize(&labels, to: rows, fill: 0)
        let total = count
        self.features.withUnsafeBufferPointer { source in
            features.withUnsafeMutableBufferPointer { destination in
                var row = 0
                for index in indices {
                    precondition(index >= 0 && index < total, "batch index \(index) is outside 0..<\(total)")
                    (destination.baseAddress! + row * perSample)
                        .update(from: source.baseAddress! + index * perSample, count: perSample)
                    row += 1
                }
            }
        }
        var row = 0
        for index in indices {
            labels[row] = self.labels[index]
            row += 1
        }
    }

    private static func resize<T>(_ array: inout [T], to count: Int, fill: T) {
        if array.count > count {
            array.removeLast(array.count - count)
        } else if array.count < count {
            array.append(contentsOf: repeatElement(fill, count: count - array.count))
        }
    }

    // MARK: - Description

    /// The number of samples of each class, indexed by class id.
    public func classCounts() -> [Int] {
        var counts = [Int](repeating: 0, count: classCount)
        for label in labels { counts[label] += 1 }
        return counts
    }

    /// A short multi-line summary: name, sample count, shape, class count, per-class counts
    /// and the feature value range, for an `lfp data` command.
    public func describe() -> String {
        var lines = ["dataset:   \(name)"]
        lines.append("samples:   \(count)")
        lines.append("shape:     \(shapeText(sampleShape)) (\(featuresPerSample) features per sample)")
        lines.append("classes:   \(classCount)")
        let counts = classCounts()
        let shown = counts.prefix(32).enumerated().map { "\($0.offset): \($0.element)" }
        var perClass = shown.joined(separator: ", ")
        if counts.count > 32 { perClass += ", … (\(counts.count - 32) more)" }
        lines.append("per class: \(perClass.isEmpty ? "-" : perClass)")
        if let low = features.min(), let high = features.max() {
            let mean = features.reduce(0.0) { $0 + Double($1) } / Double(features.count)
            lines.append("features:  min \(low), max \(high), mean \(formatted(mean))")
        }
        return lines.joined(separator: "\n")
    }

    private func formatted(_ value: Double) -> String {
        let scaled = (value * 10_000).rounded() / 10_000
        return String(scaled)
    }
}
