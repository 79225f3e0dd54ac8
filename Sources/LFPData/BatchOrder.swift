/// Deterministic mini-batch ordering.
///
/// The order of epoch `e` is a pure function of `(seed, e)`: it does not depend on how many
/// epochs ran before, so training can resume at any epoch and reproduce the same batches.
///
/// ```swift
/// let order = BatchOrder(count: data.count, batchSize: 64, seed: 42)
/// var x = [Float](), y = [Int]()
/// for epoch in 0..<10 {
///     for indices in order.batches(epoch: epoch) {
///         data.batch(indices: indices, into: &x, labels: &y)
///         // train on x, y
///     }
/// }
/// ```
public struct BatchOrder: Sendable, Equatable {
    /// The number of samples being ordered.
    public var count: Int
    /// The number of samples per batch (values below 1 are treated as 1).
    public var batchSize: Int
    /// The seed from which every epoch's permutation is derived.
    public var seed: UInt64
    /// Whether to shuffle; when `false`, batches follow `0 ..< count` in order every epoch.
    public var shuffle: Bool
    /// Whether to omit a final batch smaller than `batchSize`.
    public var dropLast: Bool

    /// Creates a batch order for `count` samples.
    public init(count: Int, batchSize: Int, seed: UInt64, shuffle: Bool = true, dropLast: Bool = false) {
        self.count = count
        self.batchSize = batchSize
        self.seed = seed
        self.shuffle = shuffle
        self.dropLast = dropLast
    }

    /// The number of batches per epoch.
    public var batchesPerEpoch: Int {
        let n = max(count, 0)
        let size = max(batchSize, 1)
        return dropLast ? n / size : (n + size - 1) / size
    }

    /// The batches of `epoch`; each is a slice of one shared index array.
    public func batches(epoch: Int) -> [ArraySlice<Int>] {
        BatchOrder.batches(
            count: count, batchSize: batchSize, seed: seed, epoch: epoch, shuffle: shuffle, dropLast: dropLast)
    }

    /// A permutation of `0 ..< count` that is a pure function of `(seed, epoch)`
    /// (Fisher–Yates driven by ``SeededGenerator``). Returns `[]` when `count <= 0`.
    public static func permutation(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        guard count > 0 else { return [] }
        var generator = SeededGenerator(seed: seed, stream: UInt64(bitPattern: Int64(epoch)))
        var order = Array(0..<count)
        generator.shuffle(&order)
        return order
    }

    /// Splits the (optionally shuffled) indices of `epoch` into batches of `batchSize`
    /// (values below 1 are treated as 1). The last batch may be smaller unless `dropLast` is set.
    public static func batches(
        count: Int, batchSize: Int, seed: UInt64, epoch: Int, shuffle: Bool = true, dropLast: Bool = false
    ) -> [ArraySlice<Int>] {
        guard count > 0 else { return [] }
        let size = max(batchSize, 1)
        let order = shuffle ? permutation(count: count, seed: seed, epoch: epoch) : Array(0..<count)
        var result = [ArraySlice<Int>]()
        result.reserveCapacity((count + size - 1) / size)
        var start = 0
        while start < count {
            let end = min(start + size, count)
            if dropLast && end - start < size { break }
            result.append(order[start..<end])
            start = end
        }
        return result
    }
}
