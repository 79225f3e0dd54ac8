import ArgumentParser
import Foundation
import LFPDistributed
import LFPTensor

/// Measured sgemm throughput.
public struct SgemmMeasurement: Codable, Sendable {
    public var n: Int
    public var gflops: Double
}

/// `lfp doctor`: what BLAS runs, on which kernels, how fast.
public enum DoctorReport {
    /// Median GFLOP/s of `n x n x n` sgemm over `repeats` runs (after a warm-up).
    public static func sgemmGFLOPS(n: Int, repeats: Int = 7) -> Double {
        let product = RooflineProduct(n: n)
        product.run()
        // Enough inner repetitions that one timing lasts a few milliseconds.
        let inner = max(1, 20_000_000 / (n * n * n / 10 + 1))
        var rates: [Double] = []
        for _ in 0..<repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<inner { product.run() }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            rates.append(2 * Double(n * n * n) * Double(inner) / seconds / 1e9)
        }
        rates.sort()
        return rates[rates.count / 2]
    }
}

/// One n x n x n sgemm on all threads: the roofline product of `lfp doctor` and `lfp bench conv`.
final class RooflineProduct {
    let n: Int
    let a: Tensor, b: Tensor
    var c: [Float]

    init(n: Int) {
        self.n = n
        var rng = SeededRandom(seed: UInt64(n))
        a = Tensor.uniform([n, n], bound: 1, rng: &rng)
        b = Tensor.uniform([n, n], bound: 1, rng: &rng)
        c = [Float](repeating: 0, count: n * n)
    }

    func run() {
        let n = n
        a.storage.withUnsafeBufferPointer { pa in
            b.storage.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    BLAS.gemm(transposeA: false, transposeB: false, m: n, n: n, k: n, alpha: 1, a: pa.baseAddress!, lda: n,
                              b: pb.baseAddress!, ldb: n, beta: 0, c: pc.baseAddress!, ldc: n)
                }
            }
        }
    }

    /// GFLOP/s of one run.
    func timedGFLOPS() -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        run()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return 2 * Double(n * n * n) / seconds / 1e9
    }
}

struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the BLAS backend, its kernels and threads, and measure sgemm speed.")

    @Option(help: "BLAS threads (default: all cores).") var threads: Int?
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Matrix sizes to measure.") var sizes: [Int] = [128, 512, 1024]

    mutating func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
        if sizes.contains(where: { $0 < 1 || $0 > 8192 }) { throw ValidationError("--sizes must be between 1 and 8192") }
    }

    /// Which routine runs the large products of `BLAS.gemm`, and how to change it.
    static func gemmLine(_ config: BLAS.Configuration) -> String {
        let large = "products of >= \(BLAS.parallelGEMMWork >> 20) M multiply-adds split into one block per thread"
        if config.ownGEMM { return "\(large), each on the library's AVX-512 sgemm (gemm.c); smaller ones on \(config.backend) (LFP_GEMM=blas: \(config.backend) for all)" }
        if BLAS.libraryGEMMAvailable { return "\(large), each on single-threaded \(config.backend) (LFP_GEMM=blas; unset it for the library's AVX-512 sgemm)" }
        return config.backend == "OpenBLAS" ? "\(large), each on single-threaded OpenBLAS (the library's sgemm needs AVX-512)" : "\(config.backend), threaded by itself"
    }

    func run() throws {
        if let threads { BLAS.setThreads(threads) }
        let config = BLAS.configure()
        var measurements: [SgemmMeasurement] = []
        if !json {
            print("backend: \(config.backend)")
            print("core:    \(config.core)\(config.detectedCore.map { " (OpenBLAS detected \($0); switched to the kernels this CPU supports)" } ?? "")")
            print("threads: \(config.threads)")
            if let timeout = config.idleThreadTimeout {
                print("idle:    OpenBLAS threads spin 2^\(timeout == 0 ? 28 : timeout) cycles before they sleep (OPENBLAS_THREAD_TIMEOUT; lfp sets 4 when it is unset)")
            }
            print("gemm:    \(Self.gemmLine(config))")
            print("conv:    direct kernels (\(Convolution.directKernelSet)) for up to 64 output channels, im2col + sgemm above")
            print("MPI:     \(Distributed.isAvailable ? "built in (run under mpirun for data-parallel training)" : "not built in (swift build --traits MPI)")")
        }
        for n in sizes {
            let g = DoctorReport.sgemmGFLOPS(n: n)
            measurements.append(SgemmMeasurement(n: n, gflops: (g * 10).rounded() / 10))
            if !json { print("sgemm n=\(n): \(String(format: "%.1f", g)) GFLOP/s") }
        }
        if json {
            struct Report: Codable {
                var backend: String
                var core: String
                var detected_core: String?
                /// What runs products of at least 16 M multiply-adds: "library" (gemm.c) or "blas".
                var large_products: String
                var conv_kernels: String
                var threads: Int
                var openblas_thread_timeout: Int?
                var mpi: Bool
                var sgemm: [SgemmMeasurement]
            }
            let report = Report(backend: config.backend, core: config.core, detected_core: config.detectedCore,
                                large_products: config.ownGEMM ? "library" : "blas", conv_kernels: Convolution.directKernelSet, threads: config.threads,
                                openblas_thread_timeout: config.idleThreadTimeout, mpi: Distributed.isAvailable, sgemm: measurements)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        }
    }
}
