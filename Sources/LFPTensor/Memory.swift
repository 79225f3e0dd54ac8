#if canImport(Glibc)
import Glibc
#endif

/// Allocator tuning for training loops.
///
/// Every step allocates the same large buffers (activations, feedback, im2col columns) and
/// frees them again. glibc's malloc serves blocks above its mmap threshold with fresh `mmap`
/// pages, which the kernel must fault in and zero every step (measured: about 12 % of a
/// LeNet step). Raising the thresholds keeps freed blocks in the heap for reuse.
public enum Memory {
    /// Applied once by `BLAS.configure()`; safe to call again.
    public static func tuneAllocator() {
        #if canImport(Glibc)
        // `mallopt` lives in <malloc.h>, which the Glibc module does not export: look it up.
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
        let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
        let trimThreshold: Int32 = -1, mmapThreshold: Int32 = -3  // M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
        _ = mallopt(mmapThreshold, 256 << 20)  // blocks up to 256 MiB come from the heap
        _ = mallopt(trimThreshold, 512 << 20)  // and freed memory is kept for reuse
        #endif
    }
}
