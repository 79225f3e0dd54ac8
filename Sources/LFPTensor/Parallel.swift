import Foundation

/// Data parallelism for the library's own kernels and for large BLAS products (`BLAS.gemm`
/// splits them over these workers; OpenBLAS itself runs single-threaded).
///
/// Work is split into at most `BLAS.threads` contiguous chunks, the same way for the same
/// thread count, so results are bit-identical run to run at a fixed thread count.
public enum Parallel {
    /// Calls `body(chunk, range)` for contiguous ranges covering `0..<count`, concurrently.
    /// Small jobs (`count * costPerItem` below `minimumWork`) run on the calling thread.
    public static func chunks(_ count: Int, costPerItem: Int = 1, minimumWork: Int = 1 << 15,
                              _ body: (_ chunk: Int, _ range: Range<Int>) -> Void) {
        let workers = min(BLAS.threads, count)
        if workers <= 1 || count * costPerItem < minimumWork {
            if count > 0 { body(0, 0..<count) }
            return
        }
        // The chunks touch disjoint data (the caller's contract), so sharing `body` is safe.
        func chunk(_ w: Int) {
            let lo = count * w / workers, hi = count * (w + 1) / workers
            if hi > lo { body(w, lo..<hi) }
        }
        if !WorkerPool.shared.run(workers, chunk) {
            // Another job holds the workers (a nested or concurrent call): the same chunks, here.
            for w in 0..<workers { chunk(w) }
        }
    }

    /// Elementwise work over `0..<count`, split over the cores from 64 Ki elements on (below
    /// that the hand-off to a second thread is not worth it).
    public static func elementwise(_ count: Int, _ body: (_ range: Range<Int>) -> Void) {
        chunks(count, minimumWork: elementwiseMinimum) { _, range in body(range) }
    }

    /// Runs `test` on every range of an elementwise split of `0..<count` (each on its own
    /// worker, touching only its range, as `elementwise`) and returns whether it held for all.
    public static func all(_ count: Int, _ test: (_ range: Range<Int>) -> Bool) -> Bool {
        var results = [Bool](repeating: true, count: chunkCount(count, minimumWork: elementwiseMinimum))
        results.withUnsafeMutableBufferPointer { flags in
            chunks(count, minimumWork: elementwiseMinimum) { chunk, range in flags[chunk] = test(range) }
        }
        return !results.contains(false)
    }

    static let elementwiseMinimum = 1 << 16

    /// How many chunks `chunks(count, ...)` will use (for per-chunk scratch buffers).
    public static func chunkCount(_ count: Int, costPerItem: Int = 1, minimumWork: Int = 1 << 15) -> Int {
        let workers = min(BLAS.threads, count)
        return (workers <= 1 || count * costPerItem < minimumWork) ? 1 : workers
    }
}

