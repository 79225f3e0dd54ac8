import Foundation

/// Data parallelism for the library's own kernels (BLAS threads itself).
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
        withoutActuallyEscaping(body) { body in
            let shared = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let lo = count * w / workers, hi = count * (w + 1) / workers
                if hi > lo { shared.value(w, lo..<hi) }
            }
        }
    }

    /// Elementwise work over `0..<count`, split over the cores when there are enough elements
    /// to pay for the hand-off (64 Ki elements: about 20 µs of a streaming loop).
    public static func elementwise(_ count: Int, _ body: (_ range: Range<Int>) -> Void) {
        chunks(count, minimumWork: 1 << 16) { _, range in body(range) }
    }

    /// How many chunks `chunks(count, ...)` will use (for per-chunk scratch buffers).
    public static func chunkCount(_ count: Int, costPerItem: Int = 1, minimumWork: Int = 1 << 15) -> Int {
        let workers = min(BLAS.threads, count)
        return (workers <= 1 || count * costPerItem < minimumWork) ? 1 : workers
    }
}

/// Wraps a value that is shared across the workers of `Parallel.chunks`.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

