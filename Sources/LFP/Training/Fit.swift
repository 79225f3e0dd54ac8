import Foundation
import LFPTensor

/// A labelled dataset the training loop can draw batches from.
public protocol BatchSource {
    /// Number of samples.
    var count: Int { get }
    /// Shape of one sample (`[C, H, W]` or `[features]`).
    var sampleShape: [Int] { get }
    /// Number of classes.
    var classCount: Int { get }
    /// Copies the samples at `indices` into caller-owned buffers (resized as needed).
    func fill(indices: ArraySlice<Int>, features: inout [Float], labels: inout [Int])
}

/// Metrics of one epoch.
public struct EpochMetrics: Sendable, Codable {
    public var epoch: Int
    /// Mean feedback at the true class (LFP) or mean loss (gradient) over the epoch's batches.
    public var trainObjective: Double
    public var trainAccuracy: Double
    public var testAccuracy: Double?
    public var seconds: Double
    public var samplesPerSecond: Double
    /// Fraction of weights whose sign changed during the epoch.
    public var signChangeFraction: Double
    /// Mean squared change of the parameters during the epoch.
    public var meanSquaredChange: Double
    /// Median |w| over all weights after the epoch.
    public var medianAbsWeight: Double
    public var learningRate: Double
    /// Spiking networks: mean spikes per neuron per step of each spiking layer (on a test batch).
    public var firingRates: [Double]?

    public init(epoch: Int, trainObjective: Double, trainAccuracy: Double, testAccuracy: Double?, seconds: Double,
                samplesPerSecond: Double, signChangeFraction: Double, meanSquaredChange: Double, medianAbsWeight: Double,
                learningRate: Double, firingRates: [Double]? = nil) {
        self.epoch = epoch
        self.trainObjective = trainObjective
        self.trainAccuracy = trainAccuracy
        self.testAccuracy = testAccuracy
        self.seconds = seconds
        self.samplesPerSecond = samplesPerSecond
        self.signChangeFraction = signChangeFraction
        self.meanSquaredChange = meanSquaredChange
        self.medianAbsWeight = medianAbsWeight
        self.learningRate = learningRate
        self.firingRates = firingRates
    }
}

/// The training loop: seeded shuffling, batches, steps, evaluation, metrics.
public enum Fit {
    /// Deterministic permutation of `0..<count` for an epoch.
    public static func permutation(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var rng = SeededRandom(seed: seed &+ 0x5EED &* UInt64(epoch + 1))
        var order = Array(0..<count)
        order.shuffle(using: &rng)
        return order
    }

    /// Accuracy of `model` on a source, evaluated in batches (dropout inactive).
    public static func accuracy(_ model: Sequential, on source: some BatchSource, batchSize: Int = 256) -> Double {
        accuracy(on: source, batchSize: batchSize) { model($0).argmaxRows() }
    }

    /// Accuracy of any classifier on a source: `predict` maps a batch `[n, sample...]` to classes.
    public static func accuracy(on source: some BatchSource, batchSize: Int = 256, predict: (Tensor) -> [Int]) -> Double {
        guard source.count > 0 else { return 0 }
        var features: [Float] = [], labels: [Int] = []
        var correct = 0
        let indices = Array(0..<source.count)
        var start = 0
        while start < source.count {
            let end = min(source.count, start + max(1, batchSize))
            source.fill(indices: indices[start..<end], features: &features, labels: &labels)
            let x = Tensor(shape: [end - start] + source.sampleShape, storage: features)
            correct += zip(predict(x), labels).filter { $0 == $1 }.count
            start = end
        }
        return Double(correct) / Double(source.count)
    }

    /// Statistics of how the weights moved between two snapshots of the same model: the
    /// fraction of connection weights (`Sequential.connectionWeightNames`) whose sign changed,
    /// the mean squared change of every parameter, the median |w| of the connection weights.
    public static func parameterMovement(from before: Sequential, to after: Sequential) -> (signChanges: Double, meanSquaredChange: Double, medianAbsWeight: Double) {
        var changed = 0, weights = 0
        var squared = 0.0, total = 0
        var magnitudes: [Float] = []
        let connections = Set(before.connectionWeightNames)
        for ((name, a), (_, b)) in zip(before.namedParameters, after.namedParameters) {
            for i in 0..<a.count {
                let d = Double(b.storage[i] - a.storage[i])
                squared += d * d
            }
            total += a.count
            if connections.contains(name) {
                for i in 0..<a.count where (a.storage[i] > 0) != (b.storage[i] > 0) && a.storage[i] != 0 { changed += 1 }
                weights += a.count
                magnitudes += b.storage.map(abs)
            }
        }
        magnitudes.sort()
        let median = magnitudes.isEmpty ? 0 : Double(magnitudes[magnitudes.count / 2])
        return (weights == 0 ? 0 : Double(changed) / Double(weights), total == 0 ? 0 : squared / Double(total), median)
    }

    /// Where a (possibly interrupted) epoch stands: the next batch and the running sums.
    public struct EpochProgress: Sendable, Codable, Equatable {
        public var nextBatch = 0
        public var objectiveSum = 0.0
        public var correct = 0
        public var seen = 0
        public init() {}
        public var objective: Double { seen == 0 ? 0 : objectiveSum / Double(seen) }
        public var accuracy: Double { seen == 0 ? 0 : Double(correct) / Double(seen) }
    }

    /// The batches of an epoch: a seeded permutation cut into slices.
    public static func batches(count: Int, batchSize: Int, seed: UInt64, epoch: Int) -> [ArraySlice<Int>] {
        let order = permutation(count: count, seed: seed, epoch: epoch)
        return stride(from: 0, to: order.count, by: batchSize).map { order[$0..<min(order.count, $0 + batchSize)] }
    }

    /// Trains one epoch, or its remainder from `progress.nextBatch`.
    /// - Parameters:
    ///   - firstStep: the global step number of this epoch's batch 0 (for the schedule).
    ///   - afterStep: called after every step with (batch, batches, result, progress, trainer); return
    ///     false to stop early (the progress then says where to resume).
    /// - Returns: true when the epoch completed.
    public static func epoch<T: StepTrainer>(_ trainer: inout T, data: some BatchSource, epoch: Int, batchSize: Int, seed: UInt64,
                                            progress: inout EpochProgress, firstStep: Int = 0,
                                            parallel: DataParallelism? = nil,
                                            schedule: ((Int) -> Float)? = nil,
                                            beforeStep: (Int, inout T) -> Void = { _, _ in },
                                            afterStep: (Int, Int, StepResult, EpochProgress, inout T) throws -> Bool = { _, _, _, _, _ in true }) throws -> Bool {
        let batches = batches(count: data.count, batchSize: batchSize, seed: seed, epoch: epoch)
        var features: [Float] = [], labels: [Int] = []
        let shapes = trainer.parameterModel.namedParameters.map { ($0.name, $0.value.shape) }
        while progress.nextBatch < batches.count {
            let b = progress.nextBatch
            let slice = batches[b]
            if let schedule { trainer.optimizer.learningRate = schedule(firstStep + b) }
            beforeStep(firstStep + b, &trainer)
            let local = parallel?.shard(of: slice) ?? slice
            // Dropout masks depend only on (seed, epoch, batch): runs are reproducible and resumable.
            var rng = SeededRandom(seed: seed ^ (UInt64(epoch) << 32) ^ UInt64(b) &* 0x9E37_79B9)
            func located(_ error: NumericalFault) -> NumericalFault {
                NumericalFault(location: "\(error.location) at epoch \(epoch), batch \(b + 1) (step \(firstStep + b + 1))", value: error.value)
            }
            var directions: [String: Tensor] = [:]
            var result = StepResult(objective: 0, correct: 0, count: 0)
            var fault: NumericalFault? = nil
            if !local.isEmpty {
                data.fill(indices: local, features: &features, labels: &labels)
                let x = Tensor(shape: [local.count] + data.sampleShape, storage: features)
                do { (directions, result) = try trainer.directions(input: x, labels: labels, rng: &rng) } catch { fault = located(error) }
            }
            // BatchNorm running statistics stay each rank's own (as PyTorch without SyncBatchNorm).
            let buffers = result.buffers
            if let parallel {
                // One fused sum: every parameter's direction (weighted by the shard's share when
                // directions are batch means), the statistics, the stop flag, one failure flag per rank.
                let weight: Float = trainer.directionsAreBatchMeans ? Float(local.count) / Float(slice.count) : 1
                var buffer: [Float] = []
                buffer.reserveCapacity(shapes.reduce(0) { $0 + $1.1.reduce(1, *) } + 4 + parallel.size)
                for (name, shape) in shapes {
                    if fault == nil, let d = directions[name] {
                        buffer += weight == 1 ? d.storage : d.storage.map { $0 * weight }
                    } else {
                        buffer += [Float](repeating: 0, count: shape.reduce(1, *))
                    }
                }
                let stats = buffer.count
                buffer += [result.objective * Float(result.count), Float(result.correct), Float(result.count),
                           parallel.stopRequested() ? 1 : 0]
                buffer += (0..<parallel.size).map { $0 == parallel.rank && fault != nil ? 1 : 0 }
                try parallel.allreduceSum(&buffer)
                if let failing = (0..<parallel.size).first(where: { buffer[stats + 4 + $0] > 0 }) {
                    if failing == parallel.rank {
                        try parallel.announce("\(fault!)")
                        throw fault!
                    }
                    throw try parallel.failure(failing)
                }
                var offset = 0
                for (name, shape) in shapes {
                    let n = shape.reduce(1, *)
                    directions[name] = Tensor(shape: shape, storage: Array(buffer[offset..<(offset + n)]))
                    offset += n
                }
                let count = Int(buffer[stats + 2])
                result = StepResult(objective: count == 0 ? 0 : buffer[stats] / Float(count), correct: Int(buffer[stats + 1]), count: count)
                result.stopRequested = buffer[stats + 3] > 0
            } else if let fault {
                throw fault
            }
            do { try trainer.apply(directions) } catch { throw located(error) }
            trainer.setBuffers(buffers)
            progress.objectiveSum += Double(result.objective) * Double(result.count)
            progress.correct += result.correct
            progress.seen += result.count
            progress.nextBatch = b + 1
            if try !afterStep(b, batches.count, result, progress, &trainer) { return progress.nextBatch >= batches.count }
        }
        return true
    }

    /// Trains one whole epoch; returns the mean objective and the training accuracy.
    @discardableResult
    public static func epoch<T: StepTrainer>(_ trainer: inout T, data: some BatchSource, epoch: Int, batchSize: Int,
                                            seed: UInt64) throws -> (objective: Double, accuracy: Double) {
        var progress = EpochProgress()
        _ = try Self.epoch(&trainer, data: data, epoch: epoch, batchSize: batchSize, seed: seed, progress: &progress)
        return (progress.objective, progress.accuracy)
    }
}
