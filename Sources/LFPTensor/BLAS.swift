#if canImport(Accelerate)
import Accelerate
#elseif canImport(CBLAS)
import CBLAS
#endif
import CLFPKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// The one place that calls BLAS.
///
/// On Linux this is OpenBLAS. Debian's OpenBLAS 0.3.21 does not know some recent CPUs
/// (Sapphire Rapids is detected as "Prescott") and then runs sgemm about 7x slower.
/// `BLAS.configure()` (called lazily by every entry point) checks the core OpenBLAS chose
/// against the CPU's instruction set and, when the choice is a core far older than the
/// CPU, switches OpenBLAS to the best kernel set the CPU supports, before any BLAS work.
/// `LFP_BLAS_CORE` overrides: unset = correct a misdetection unless `OPENBLAS_CORETYPE` is set;
/// `auto` = correct a legacy core even when `OPENBLAS_CORETYPE` chose it; `keep` = never switch;
/// an OpenBLAS core name (e.g. `SkylakeX`) = use that core.
public enum BLAS {
    /// What BLAS runs and on which kernels.
    public struct Configuration: Sendable, Equatable {
        /// Library name: "OpenBLAS" or "Accelerate".
        public var backend: String
        /// The kernel set in use (OpenBLAS core name), or "system" for Accelerate.
        public var core: String
        /// The kernel set OpenBLAS detected on its own, when it was replaced.
        public var detectedCore: String?
        /// BLAS threads.
        public var threads: Int
        /// How long OpenBLAS's idle worker threads spin before they sleep, as log2 of cycles
        /// (`OPENBLAS_THREAD_TIMEOUT`; 0 = OpenBLAS's default, 2^28), or nil where BLAS does not say.
        public var idleThreadTimeout: Int? = nil
        /// Whether the large products of `gemm` run the library's own AVX-512 sgemm (gemm.c)
        /// instead of BLAS: on CPUs with AVX-512 under OpenBLAS, unless `LFP_GEMM=blas`.
        public var ownGEMM = false
    }

    private static let state = ConfigurationState()

    /// Configures BLAS once (kernel selection, threads = cores) and returns what is in use.
    @discardableResult
    public static func configure() -> Configuration {
        state.configureOnce()
    }

    /// The current configuration.
    public static var configuration: Configuration { state.configureOnce() }

    /// Sets the number of worker threads of the library's kernels (GEMMs included).
    public static func setThreads(_ n: Int) {
        precondition(n >= 1, "thread count must be positive")
        state.configureOnce()
        state.setThreads(n)
    }

    /// Number of threads in use.
    public static var threads: Int { state.configureOnce().threads }

    // MARK: Kernels

    /// `C = alpha * op(A) * op(B) + beta * C`, row-major, on all `threads` cores for products
    /// of at least `parallelGEMMWork` multiply-adds.
    ///
    /// With OpenBLAS, C of such a product is split into one block per worker (`Parallel`), and
    /// each worker computes its block on its own: blocks of columns where `n >= m` (every worker
    /// packs op(A), the smaller operand), of rows otherwise, with edges on multiples of 16.
    /// Measured against letting OpenBLAS thread each product (its threads share the packed
    /// operands but wait for each other inside every product, and were woken for each):
    /// `mlp3072` at batch 256, 8 alternating pairs of `lfp bench step --method lfp,gradient`,
    /// LFP step 9.6-12.0 ms (mean 10.4) against 10.1-14.0 ms (mean 11.7), faster in all 8 pairs.
    ///
    /// A block runs the library's own AVX-512 sgemm (`lfp_sgemm`, gemm.c) where the CPU has
    /// AVX-512 (`Configuration.ownGEMM`; `LFP_GEMM=blas` turns it off), single-threaded
    /// OpenBLAS otherwise. Products below the threshold run OpenBLAS on the calling thread.
    ///
    /// OpenBLAS's result depends on its thread count (0.3.21: 16x150x400 and 32x1000x1000
    /// products on the Cooperlake kernels, 64x64x200 and 500x300x40 ones on Haswell's, differ
    /// in the last bits between 1 and 2 threads), and the count is process-wide: OpenBLAS runs
    /// single-threaded throughout the process, so several trainings in one process cannot
    /// change each other's bits. Results depend on `threads` through the block edges.
    /// Accelerate threads its products itself.
    ///
    /// `kernel` chooses the routine of the large products (nil: as configured); benchmarks and
    /// tests compare the two with it. `.library` where the CPU lacks AVX-512 runs BLAS.
    public static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
                            alpha: Float, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, kernel: GEMMKernel? = nil) {
        if m == 0 || n == 0 { return }
        #if !canImport(Accelerate)
        if m * n * max(k, 1) >= parallelGEMMWork {
            let chosen = kernel ?? (configuration.ownGEMM ? .library : .blas)
            let workers = threads, own = chosen == .library && libraryGEMMAvailable && k > 0 && alpha != 0
            if workers > 1 || own {
                forEachBlock(m: m, n: n, workers: workers, scratchFloats: own ? Int(lfp_sgemm_scratch_floats()) : 0) { _, rows, columns, scratch in
                    // Rows of op(A) are columns of A when it is transposed; columns of op(B) rows of B.
                    serialGEMM(transposeA: transposeA, transposeB: transposeB, m: rows.count, n: columns.count, k: k, alpha: alpha,
                               a: transposeA ? a + rows.lowerBound : a + rows.lowerBound * lda, lda: lda,
                               b: transposeB ? b + columns.lowerBound * ldb : b + columns.lowerBound, ldb: ldb,
                               beta: beta, c: c + rows.lowerBound * ldc + columns.lowerBound, ldc: ldc,
                               kernel: chosen, scratch: own ? scratch : nil)
                }
                return
            }
        }
        #endif
        serialGEMM(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                   b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    /// `C = scale * |W| ⊙ (op(A) op(B))`, elementwise with `w` (`[m, n]`, leading dimension
    /// `ldw`): the parameter feedback of the LFP rules (LFP-MATH.md: the weight map times the
    /// weight's magnitude) in one pass, the magnitude epilogue fused into the library's sgemm,
    /// for products of at least `parallelGEMMWork` multiply-adds split as in `gemm`. Returns
    /// whether every value is finite, or nil, without touching C, where the library's sgemm
    /// does not run (a smaller product, no AVX-512, `LFP_GEMM=blas`, k = 0): the caller then
    /// takes `gemm` and the separate epilogue.
    public static func gemmTimesMagnitude(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
                                          a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                                          c: UnsafeMutablePointer<Float>, ldc: Int,
                                          w: UnsafePointer<Float>, ldw: Int, scale: Float) -> Bool? {
        guard fusesMagnitude(m: m, n: n, k: k) else { return nil }
        let workers = threads
        var finite = [Int32](repeating: 1, count: workers)
        finite.withUnsafeMutableBufferPointer { flags in
            forEachBlock(m: m, n: n, workers: workers, scratchFloats: Int(lfp_sgemm_scratch_floats())) { worker, rows, columns, scratch in
                let (i, j) = (rows.lowerBound, columns.lowerBound)
                var blockFinite: Int32 = 1
                let ran = lfp_sgemm_magnitude(2, transposeA ? 1 : 0, transposeB ? 1 : 0, Int32(rows.count), Int32(columns.count), Int32(k),
                                              transposeA ? a + i : a + i * lda, Int32(lda), transposeB ? b + j * ldb : b + j, Int32(ldb),
                                              c + i * ldc + j, Int32(ldc), w + i * ldw + j, Int32(ldw), scale, scratch, &blockFinite)
                precondition(ran == 1, "the library's sgemm declined a product it was configured for")
                flags[worker] = blockFinite  // each block's worker writes only its own flag
            }
        }
        return !finite.contains(0)
    }

    /// Whether `gemmTimesMagnitude` runs an `m x n x k` product (it returns nil otherwise).
    public static func fusesMagnitude(m: Int, n: Int, k: Int) -> Bool {
        configuration.ownGEMM && m > 0 && n > 0 && k > 0 && m * n * k >= parallelGEMMWork
    }

    /// Splits C `[m, n]` into one block per worker (columns where `n >= m`, so that every
    /// worker packs op(A), the smaller operand; rows otherwise; edges on multiples of 16, so
    /// the blocks depend only on the shape and `workers`) and runs `body` on each block
    /// concurrently, with its worker index and `scratchFloats` floats of scratch of its own.
    static func forEachBlock(m: Int, n: Int, workers: Int, scratchFloats: Int,
                             _ body: (_ worker: Int, _ rows: Range<Int>, _ columns: Range<Int>, _ scratch: UnsafeMutablePointer<Float>) -> Void) {
        var scratch = [Float](unsafeUninitializedCapacity: max(1, workers * scratchFloats)) { _, count in
            count = max(1, workers * scratchFloats)
        }
        scratch.withUnsafeMutableBufferPointer { ps in
            let base = ps.baseAddress!
            Parallel.chunks(workers, minimumWork: 1) { _, blocks in
                for w in blocks {
                    let (rows, columns) = block(w, m: m, n: n, workers: workers)
                    if !rows.isEmpty && !columns.isEmpty { body(w, rows, columns, base + w * scratchFloats) }
                }
            }
        }
    }

    /// Block `w` of `forEachBlock`.
    static func block(_ w: Int, m: Int, n: Int, workers: Int) -> (rows: Range<Int>, columns: Range<Int>) {
        let byColumns = n >= m, extent = byColumns ? n : m
        func edge(_ w: Int) -> Int { w == workers ? extent : min(extent, (extent * w / workers + 8) / 16 * 16) }
        let part = edge(w)..<max(edge(w), edge(w + 1))
        return byColumns ? (0..<m, part) : (part, 0..<n)
    }

    /// Whether this CPU and build can run the library's own sgemm (AVX-512, with OpenBLAS).
    public static let libraryGEMMAvailable: Bool = {
        #if canImport(Accelerate)
        return false
        #else
        return lfp_kernels_best_isa() == 2
        #endif
    }()

    /// The routine of the large products of `gemm`.
    public enum GEMMKernel: String, Sendable, CaseIterable {
        /// BLAS (single-threaded OpenBLAS on each worker's block; Accelerate on macOS).
        case blas
        /// The library's own AVX-512 sgemm (gemm.c) on each worker's block.
        case library
    }

    /// Below this many multiply-adds (16 M: about 0.3 ms on one core at 100 GFLOP/s) a product
    /// runs on the calling thread. (When OpenBLAS threaded products itself, LeNet's small dense
    /// layers threaded at 256 K spent 30 % of a step's samples in its spinning threads; with
    /// the split over the library's workers, 4 M and 1 M measured no different from 16 M on
    /// the MLP at batch 256, within this machine's noise.)
    public static let parallelGEMMWork = 1 << 24

    /// The same product as `gemm`, on the calling thread only: for kernels that are already
    /// parallel (each of their workers calls this on its own data), and for each worker's block
    /// of a large product. The one place that calls `cblas_sgemm`.
    ///
    /// `kernel` nil or `.blas`: BLAS. `.library`: the library's sgemm (BLAS where the CPU lacks
    /// AVX-512, k = 0, or alpha = 0, where BLAS ignores A and B, NaN included); `scratch`, when
    /// given, holds `lfp_sgemm_scratch_floats()` floats.
    /// (Sending the products of at least 1 M multiply-adds made on one thread, such as the
    /// convolutions' im2col products, to the library's sgemm measured no faster: 0.97x
    /// `lenet3x32` at batch 256, 0.96x `mlp3072` at 32, 1.00x `cifar-resnet` at 32, 6-8
    /// alternating rounds each.)
    public static func serialGEMM(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
                                  alpha: Float, a: UnsafePointer<Float>, lda: Int,
                                  b: UnsafePointer<Float>, ldb: Int,
                                  beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
                                  kernel: GEMMKernel? = nil, scratch: UnsafeMutablePointer<Float>? = nil) {
        if m == 0 || n == 0 { return }
        _ = configuration
        #if !canImport(Accelerate)
        if kernel == .library && libraryGEMMAvailable && k > 0 && alpha != 0 {
            func run(_ scratch: UnsafeMutablePointer<Float>) {
                let ran = lfp_sgemm(2, transposeA ? 1 : 0, transposeB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda),
                                    b, Int32(ldb), beta, c, Int32(ldc), scratch)
                precondition(ran == 1, "the library's sgemm declined a product on an AVX-512 CPU")
            }
            if let scratch { run(scratch) } else {
                withUnsafeTemporaryAllocation(of: Float.self, capacity: Int(lfp_sgemm_scratch_floats())) { run($0.baseAddress!) }
            }
            return
        }
        #endif
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// `y += alpha * x`.
    public static func axpy(alpha: Float, x: [Float], y: inout [Float]) {
        precondition(x.count == y.count, "axpy length mismatch")
        if x.isEmpty { return }
        _ = configuration
        x.withUnsafeBufferPointer { px in
            y.withUnsafeMutableBufferPointer { py in
                cblas_saxpy(Int32(x.count), alpha, px.baseAddress!, 1, py.baseAddress!, 1)
            }
        }
    }

    // MARK: Kernel selection (pure, testable)

    /// OpenBLAS cores that predate AVX2: when OpenBLAS picks one of these on a CPU with
    /// AVX2 or AVX-512, it has misdetected the CPU.
    public static let legacyCores: Set<String> = [
        "prescott", "katmai", "coppermine", "northwood", "banias", "core2", "penryn", "dunnington",
        "nehalem", "atom", "nano", "athlon", "opteron", "opteron_sse3", "barcelona", "bobcat", "unknown",
    ]

    /// The OpenBLAS core to switch to, or nil to keep `detected`.
    /// - Parameters:
    ///   - detected: the core OpenBLAS chose (`openblas_get_corename()`).
    ///   - cpuFlags: the CPU's feature flags (as in `/proc/cpuinfo`).
    public static func preferredCore(detected: String, cpuFlags: Set<String>) -> String? {
        guard legacyCores.contains(detected.lowercased()) else { return nil }
        let avx512 = ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(cpuFlags.contains)
        if avx512 { return cpuFlags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX" }
        if cpuFlags.contains("avx2") && cpuFlags.contains("fma") { return "Haswell" }
        if cpuFlags.contains("avx") { return "Sandybridge" }
        return nil
    }

    /// The CPU feature flags of the first processor in `/proc/cpuinfo` (empty elsewhere).
    public static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return [] }
        for line in text.split(separator: "\n") where line.hasPrefix("flags") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
        }
        return []
    }

    /// Switches OpenBLAS to another kernel set by name (an OpenBLAS core name such as
    /// "SkylakeX"). Returns the core in use afterwards. Only for OpenBLAS builds with
    /// dynamic architecture support; otherwise it changes nothing.
    @discardableResult
    public static func switchCore(to name: String) -> String {
        state.configureOnce()
        return state.switchCore(to: name)
    }

    /// Whether `LFP_GEMM` lets the large products run the library's own sgemm: unset, `auto`
    /// or `lfp` = yes (where the CPU has AVX-512), `blas` = no (BLAS for every product). Any
    /// other value is reported on standard error and taken as `auto`.
    static func ownGEMMRequested(_ value: String?) -> Bool {
        switch value?.lowercased() {
        case nil, "", "auto", "lfp": return true
        case "blas", "openblas": return false
        case let other?:
            FileHandle.standardError.write(Data("lfp: LFP_GEMM=\(other) is not one of auto, lfp, blas; using auto\n".utf8))
            return true
        }
    }

    /// Number of online processors.
    public static var processorCount: Int { ProcessInfo.processInfo.activeProcessorCount }
}

/// Lock-protected one-time configuration (Swift 6: no unprotected global mutable state).
private final class ConfigurationState: @unchecked Sendable {
    private let lock = NSLock()
    private var current: BLAS.Configuration?

    @discardableResult
    func configureOnce() -> BLAS.Configuration {
        lock.lock()
        defer { lock.unlock() }
        if let current { return current }
        let config = Self.initialConfiguration()
        current = config
        return config
    }

    func setThreads(_ n: Int) {
        lock.lock()
        defer { lock.unlock() }
        current?.threads = n
    }

    func switchCore(to name: String) -> String {
        lock.lock()
        defer { lock.unlock() }
        #if canImport(Accelerate)
        return "system"
        #else
        let core = Self.reinitialiseOpenBLAS(core: name) ?? Self.openBLASCore()
        current?.core = core
        return core
        #endif
    }

    private static func initialConfiguration() -> BLAS.Configuration {
        Memory.tuneAllocator()
        let threads = ProcessInfo.processInfo.environment["LFP_THREADS"].flatMap(Int.init)
            ?? ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"].flatMap(Int.init)
            ?? BLAS.processorCount
        #if canImport(Accelerate)
        _ = BLAS.ownGEMMRequested(ProcessInfo.processInfo.environment["LFP_GEMM"])  // reports a bad value; Accelerate runs every product
        return BLAS.Configuration(backend: "Accelerate", core: "system", detectedCore: nil, threads: threads)
        #else
        let env = ProcessInfo.processInfo.environment
        let detected = openBLASCore()
        var core = detected
        var replaced: String? = nil
        // Unset: correct a misdetection unless the user chose a core with OPENBLAS_CORETYPE.
        // "auto": correct a legacy core even if OPENBLAS_CORETYPE forced it. "keep": never switch.
        let request = env["LFP_BLAS_CORE"]
        let mode = request?.lowercased()
        let mayCorrect = mode == nil ? env["OPENBLAS_CORETYPE"] == nil : mode != "keep"
        if mayCorrect {
            let target = (mode == nil || mode == "auto")
                ? BLAS.preferredCore(detected: detected, cpuFlags: BLAS.cpuFlags()) : request
            if let target, target.lowercased() != detected.lowercased(),
               let switched = reinitialiseOpenBLAS(core: target) {
                core = switched
                replaced = detected
            }
        }
        // OpenBLAS always runs in the caller (`BLAS.gemm` splits large products over workers).
        openblas_set_num_threads(1)
        if env["OPENBLAS_THREAD_TIMEOUT"] == nil { parkIdleOpenBLASThreads() }
        return BLAS.Configuration(backend: "OpenBLAS", core: core, detectedCore: replaced, threads: max(1, threads),
                                  idleThreadTimeout: openBLASThreadTimeout(),
                                  ownGEMM: BLAS.ownGEMMRequested(env["LFP_GEMM"]) && BLAS.libraryGEMMAvailable)
        #endif
    }

    #if !canImport(Accelerate)
    static func openBLASCore() -> String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name).trimmingCharacters(in: .whitespaces)
    }

    /// Stops the worker threads OpenBLAS started when it was loaded, and makes any it starts
    /// later sleep as soon as a threaded product ends.
    ///
    /// The library never has OpenBLAS thread a product (`BLAS.gemm` splits them over its own
    /// workers), but OpenBLAS starts its threads when it is loaded, and by default idle ones
    /// spin in `sched_yield` for 2^28 cycles (about 0.1 s) after each threaded call. When
    /// `gemm` still let OpenBLAS thread, that spinning took 11 % of the samples of `lfp bench
    /// step --model mlp3072 --batch 256`. Should other code in the process run threaded
    /// OpenBLAS calls, the shortest timeout OpenBLAS allows (2^4 cycles) makes its threads
    /// sleep on a condition variable instead. The timeout is read from
    /// `OPENBLAS_THREAD_TIMEOUT` when OpenBLAS starts its threads: this sets the variable, has
    /// OpenBLAS read it, stops the threads (OpenBLAS starts them again, with the new timeout,
    /// at its next threaded call) and restores the environment. Skipped when the user set the
    /// variable. The symbols are looked up at run time so that other builds still link.
    static func parkIdleOpenBLASThreads() {
        guard let readEnvironment = openBLASFunction("openblas_read_env", as: (@convention(c) () -> Void).self),
              let stopThreads = openBLASFunction("blas_thread_shutdown_", as: (@convention(c) () -> Int32).self) else { return }
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1)
        readEnvironment()
        unsetenv("OPENBLAS_THREAD_TIMEOUT")
        _ = stopThreads()
    }

    /// The idle-thread timeout OpenBLAS uses (log2 of cycles; 0 = its default), or nil when
    /// this OpenBLAS does not say.
    static func openBLASThreadTimeout() -> Int? {
        openBLASFunction("openblas_thread_timeout", as: (@convention(c) () -> Int32).self).map { Int($0()) }
    }

    /// An OpenBLAS function looked up at run time (exported by Debian's DYNAMIC_ARCH builds;
    /// other builds still link without it), as the C function type `type`.
    static func openBLASFunction<F>(_ name: String, as type: F.Type) -> F? {
        let handle = dlopen(nil, RTLD_NOW)
        defer { if let handle { dlclose(handle) } }
        guard let symbol = dlsym(handle, name) else { return nil }
        return unsafeBitCast(symbol, to: type)
    }

    /// Re-runs OpenBLAS's dynamic-architecture initialisation with `OPENBLAS_CORETYPE = core`.
    /// `gotoblas_dynamic_quit`/`gotoblas_dynamic_init` are exported by DYNAMIC_ARCH builds
    /// (Debian's); they are looked up at run time so other builds still link.
    static func reinitialiseOpenBLAS(core: String) -> String? {
        typealias VoidFunction = @convention(c) () -> Void
        guard let quit = openBLASFunction("gotoblas_dynamic_quit", as: VoidFunction.self),
              let initialise = openBLASFunction("gotoblas_dynamic_init", as: VoidFunction.self) else { return nil }
        let previous = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
        setenv("OPENBLAS_CORETYPE", core, 1)
        quit()
        initialise()
        if let previous { setenv("OPENBLAS_CORETYPE", previous, 1) } else { unsetenv("OPENBLAS_CORETYPE") }
        return openBLASCore()
    }
    #endif
}
