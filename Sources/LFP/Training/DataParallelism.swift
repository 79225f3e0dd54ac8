/// How `Fit.epoch` splits each global batch across processes and combines their directions
/// (data parallelism). The collectives are supplied by the caller (e.g. MPI, see
/// `LFPDistributed`), so the library itself does not depend on a transport.
///
/// Every step: each rank computes the directions of its shard of the global batch; one fused
/// sum (every parameter, the step's statistics, stop and failure flags) combines them; every
/// rank then applies the identical update.
public struct DataParallelism: Sendable {
    public var rank: Int
    public var size: Int
    /// In-place sum over all ranks.
    public var allreduceSum: @Sendable (inout [Float]) throws -> Void
    /// On ranks that did not fail: receives the failing rank's message and returns the error to throw.
    public var failure: @Sendable (_ failingRank: Int) throws -> any Error
    /// On the failing rank: sends its message to the others (pairs with `failure`).
    public var announce: @Sendable (_ message: String) throws -> Void
    /// Whether this rank was asked to stop (e.g. SIGINT); any rank's request stops all of them.
    public var stopRequested: @Sendable () -> Bool

    public init(rank: Int, size: Int, allreduceSum: @escaping @Sendable (inout [Float]) throws -> Void,
                failure: @escaping @Sendable (Int) throws -> any Error, announce: @escaping @Sendable (String) throws -> Void,
                stopRequested: @escaping @Sendable () -> Bool) {
        self.rank = rank
        self.size = size
        self.allreduceSum = allreduceSum
        self.failure = failure
        self.announce = announce
        self.stopRequested = stopRequested
    }

    /// This rank's contiguous part of a global batch.
    public func shard(of batch: ArraySlice<Int>) -> ArraySlice<Int> {
        let lo = batch.startIndex + batch.count * rank / size
        let hi = batch.startIndex + batch.count * (rank + 1) / size
        return batch[lo..<hi]
    }
}
