import Testing
import Foundation
@testable import LFPTensor
import CLFPKernels

/// Naive reference loops (the oracles) in Double.
enum Naive {
    static func matmul(_ a: Tensor, _ ta: Bool, _ b: Tensor, _ tb: Bool) -> [Double] {
        let m = ta ? a.shape[1] : a.shape[0], k = ta ? a.shape[0] : a.shape[1]
        let n = tb ? b.shape[0] : b.shape[1]
        var c = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { for p in 0..<k {
            let av = ta ? a[p, i] : a[i, p]
            let bv = tb ? b[j, p] : b[p, j]
            c[i * n + j] += Double(av) * Double(bv)
        } } }
        return c
    }

    static func conv(_ x: Tensor, _ w: Tensor, _ b: Tensor?, _ g: ConvGeometry) -> [Double] {
        let n = x.shape[0]
        var y = [Double](repeating: 0, count: n * g.outputSize)
        for s in 0..<n { for o in 0..<g.outChannels { for oy in 0..<g.outHeight { for ox in 0..<g.outWidth {
            var acc = Double(b?.storage[o] ?? 0)
            for c in 0..<g.inChannels { for ki in 0..<g.kernelHeight { for kj in 0..<g.kernelWidth {
                let iy = oy * g.strideHeight - g.paddingHeight + ki * g.dilationHeight
                let ix = ox * g.strideWidth - g.paddingWidth + kj * g.dilationWidth
                if iy >= 0 && iy < g.inHeight && ix >= 0 && ix < g.inWidth {
                    acc += Double(x.storage[((s * g.inChannels + c) * g.inHeight + iy) * g.inWidth + ix])
                        * Double(w.storage[((o * g.inChannels + c) * g.kernelHeight + ki) * g.kernelWidth + kj])
                }
            } } }
            y[((s * g.outChannels + o) * g.outHeight + oy) * g.outWidth + ox] = acc
        } } } }
        return y
    }
}

extension Naive {
    /// The input and weight maps of a convolution by explicit loops: d/dx and d/dw of <conv(x, w), r>.
    static func convMaps(_ x: Tensor, _ w: Tensor, _ r: Tensor, _ g: ConvGeometry) -> (dx: [Double], dw: [Double]) {
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: w.count)
        let (c, h, wd, kh, kw) = (g.inChannels, g.inHeight, g.inWidth, g.kernelHeight, g.kernelWidth)
        for s in 0..<x.shape[0] { for o in 0..<g.outChannels { for oy in 0..<g.outHeight { for ox in 0..<g.outWidth {
            let rv = Double(r.storage[((s * g.outChannels + o) * g.outHeight + oy) * g.outWidth + ox])
            for ci in 0..<c { for ki in 0..<kh { for kj in 0..<kw {
                let iy = oy * g.strideHeight - g.paddingHeight + ki * g.dilationHeight
                let ix = ox * g.strideWidth - g.paddingWidth + kj * g.dilationWidth
                if iy >= 0 && iy < h && ix >= 0 && ix < wd {
                    let xi = ((s * c + ci) * h + iy) * wd + ix, wi = ((o * c + ci) * kh + ki) * kw + kj
                    dx[xi] += rv * Double(w.storage[wi])
                    dw[wi] += rv * Double(x.storage[xi])
                }
            } } }
        } } } }
        return (dx, dw)
    }
}

func expectClose(_ a: [Float], _ b: [Double], tolerance: Double = 1e-4, _ what: String = "",
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.count == b.count, "\(what): count \(a.count) vs \(b.count)", sourceLocation: sourceLocation)
    let scale = max(1, b.map(abs).max() ?? 0)
    var worst = 0.0, worstIndex = 0
    for i in 0..<min(a.count, b.count) where abs(Double(a[i]) - b[i]) > worst {
        worst = abs(Double(a[i]) - b[i]); worstIndex = i
    }
    #expect(worst <= tolerance * scale, "\(what): max error \(worst) at \(worstIndex) (scale \(scale))", sourceLocation: sourceLocation)
}

@Suite struct GEMMTests {
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func matmulMatchesNaiveLoops(ta: Bool, tb: Bool) {
        var rng = SeededRandom(seed: 7)
        let (m, k, n) = (13, 29, 7)
        let a = Tensor.normal(ta ? [k, m] : [m, k], rng: &rng)
        let b = Tensor.normal(tb ? [n, k] : [k, n], rng: &rng)
        let c = Tensor.matmul(a, transposeA: ta, b, transposeB: tb)
        #expect(c.shape == [m, n])
        expectClose(c.storage, Naive.matmul(a, ta, b, tb), "gemm")
    }

    @Test func largeMatmulMatchesNaive() {
        var rng = SeededRandom(seed: 8)
        let a = Tensor.normal([70, 130], rng: &rng), b = Tensor.normal([130, 90], rng: &rng)
        expectClose(Tensor.matmul(a, b).storage, Naive.matmul(a, false, b, false), "gemm 70x130x90")
    }

    /// Products big enough to be split over the workers (`BLAS.gemm`: by columns when n >= m,
    /// by rows otherwise; block edges rounded to 16, so 1000 splits at 496, 400 at 208), with
    /// every combination of transposes, against flat naive loops.
    @Test(arguments: [(130, 400, 330), (400, 130, 330), (97, 1000, 180)], [(false, false), (true, false), (false, true), (true, true)])
    func threadedMatmulMatchesNaive(size: (Int, Int, Int), transpose: (Bool, Bool)) {
        var rng = SeededRandom(seed: 9)
        let (m, n, k) = size, (ta, tb) = transpose
        #expect(m * n * k >= BLAS.parallelGEMMWork)
        let a = Tensor.normal(ta ? [k, m] : [m, k], rng: &rng)
        let b = Tensor.normal(tb ? [n, k] : [k, n], rng: &rng)
        var expected = [Double](repeating: 0, count: m * n)
        a.storage.withUnsafeBufferPointer { pa in
            b.storage.withUnsafeBufferPointer { pb in
                for i in 0..<m { for p in 0..<k {
                    let av = Double(ta ? pa[p * m + i] : pa[i * k + p])
                    for j in 0..<n { expected[i * n + j] += av * Double(tb ? pb[j * k + p] : pb[p * n + j]) }
                } }
            }
        }
        expectClose(Tensor.matmul(a, transposeA: ta, b, transposeB: tb).storage, expected, "gemm \(size) \(transpose)")
    }

    /// OpenBLAS's bits depend on its (process-wide) thread count: serial products must give
    /// the bits they give alone while another thread runs large products on all workers (two
    /// trainings in one process, e.g. the command tests). Failed when `BLAS.gemm` raised
    /// OpenBLAS's thread count for large products.
    @Test func serialProductsKeepTheirBitsWhileAnotherThreadRunsLargeOnes() {
        guard BLAS.threads > 1 else { return }  // one core: no product is split
        var rng = SeededRandom(seed: 10)
        // Shapes whose result changed with the thread count on OpenBLAS 0.3.21 (the first and
        // last on the Cooperlake kernels, the middle two on Haswell's): (m, n, k, transposeA,
        // transposeB).
        let shapes = [(16, 150, 400, false, true), (64, 64, 200, false, false), (500, 300, 40, true, false), (32, 1000, 1000, false, false)]
        let operands = shapes.map { (m, n, k, ta, tb) in
            (Tensor.normal(ta ? [k, m] : [m, k], rng: &rng), Tensor.normal(tb ? [n, k] : [k, n], rng: &rng))
        }
        func serial(_ i: Int) -> [Float] {
            let (m, n, k, ta, tb) = shapes[i], (a, b) = operands[i]
            var c = [Float](repeating: 0, count: m * n)
            a.storage.withUnsafeBufferPointer { pa in b.storage.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                BLAS.serialGEMM(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 1, a: pa.baseAddress!, lda: ta ? m : k,
                                b: pb.baseAddress!, ldb: tb ? k : n, beta: 0, c: pc.baseAddress!, ldc: n)
            } } }
            return c
        }
        let alone = shapes.indices.map(serial)
        let big = Tensor.normal([256, 512], rng: &rng), weights = Tensor.normal([512, 512], rng: &rng)
        final class Flag: @unchecked Sendable {
            let lock = NSLock()
            var raised = false
            var isRaised: Bool { lock.withLock { raised } }
            func raise() { lock.withLock { raised = true } }
        }
        let stop = Flag(), stopped = DispatchSemaphore(value: 0)
        Thread {
            while !stop.isRaised { _ = Tensor.matmul(big, weights) }
            stopped.signal()
        }.start()
        var mismatches = 0
        for round in 0..<200 { if serial(round % shapes.count) != alone[round % shapes.count] { mismatches += 1 } }
        stop.raise()
        stopped.wait()
        #expect(mismatches == 0, "\(mismatches) of 200 serial products changed while large products ran")
    }

    /// The library's own sgemm (gemm.c) against naive loops: shapes that end inside a
    /// micro-tile (12 x 32) and a transpose block (16), cross the packed blocks (240 rows,
    /// 1024 columns, depth 256: one, two and three depth blocks), depth 1, every transpose
    /// pair, leading dimensions wider than the matrices (the padding must stay untouched),
    /// and alpha / beta (beta 0 must overwrite NaN in C; beta 1 and 0.5 must read it).
    @Test(arguments: [(1, 1, 1), (12, 32, 16), (13, 33, 17), (5, 100, 1), (241, 40, 40), (20, 1030, 30), (20, 40, 520), (37, 70, 257)],
          [(false, false), (true, false), (false, true), (true, true)])
    func librarySGEMMMatchesNaive(size: (Int, Int, Int), transpose: (Bool, Bool)) {
        var rng = SeededRandom(seed: 11)
        let (m, n, k) = size, (ta, tb) = transpose
        // Row-major with 3 extra columns in every leading dimension.
        let (aRows, aCols) = ta ? (k, m) : (m, k), (bRows, bCols) = tb ? (n, k) : (k, n)
        let (lda, ldb, ldc) = (aCols + 3, bCols + 3, n + 3)
        let a = (0..<(aRows * lda)).map { _ in rng.normal() }, b = (0..<(bRows * ldb)).map { _ in rng.normal() }
        let c0 = (0..<(m * ldc)).map { _ in rng.normal() }
        var product = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for p in 0..<k {
            let av = Double(ta ? a[p * lda + i] : a[i * lda + p])
            for j in 0..<n { product[i * n + j] += av * Double(tb ? b[j * ldb + p] : b[p * ldb + j]) }
        } }
        var scratch = [Float](repeating: 0, count: Int(lfp_sgemm_scratch_floats()))
        for (alpha, beta) in [(Float(1), Float(0)), (1, 1), (-2, 0.5)] {
            var c = c0
            if beta == 0 { for i in 0..<m { for j in 0..<n { c[i * ldc + j] = .nan } } }
            let ran = lfp_sgemm(lfp_kernels_best_isa(), ta ? 1 : 0, tb ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb),
                                beta, &c, Int32(ldc), &scratch)
            guard lfp_kernels_best_isa() == 2 else {
                // Without AVX-512 the kernel does not run (BLAS.gemm then uses BLAS) and leaves C alone.
                #expect(ran == 0)
                continue
            }
            #expect(ran == 1)
            var got: [Float] = [], want: [Double] = []
            for i in 0..<m {
                for j in 0..<n {
                    got.append(c[i * ldc + j])
                    want.append(Double(alpha) * product[i * n + j] + (beta == 0 ? 0 : Double(beta) * Double(c0[i * ldc + j])))
                }
                for j in n..<ldc { #expect(c[i * ldc + j] == c0[i * ldc + j], "padding column \(j) of row \(i) written") }
            }
            expectClose(got, want, "lfp_sgemm \(size) \(transpose) alpha \(alpha) beta \(beta)")
        }
        // Depth 0 or alpha 0: the kernel declines and leaves C alone (BLAS.gemm then has BLAS
        // scale C by beta, ignoring A and B).
        var c = c0
        #expect(lfp_sgemm(lfp_kernels_best_isa(), 0, 0, Int32(m), Int32(n), 0, 1, a, Int32(lda), b, Int32(ldb), 0, &c, Int32(ldc), &scratch) == 0)
        #expect(lfp_sgemm(lfp_kernels_best_isa(), ta ? 1 : 0, tb ? 1 : 0, Int32(m), Int32(n), Int32(k), 0, a, Int32(lda), b, Int32(ldb), 0,
                          &c, Int32(ldc), &scratch) == 0)
        #expect(c == c0)
    }

    /// The library's sgemm with the rules' magnitude epilogue fused (`lfp_sgemm_magnitude`):
    /// `scale * |W| * op(A) op(B)` against naive loops, applied once after the last of one to
    /// three depth blocks and over two column blocks (1030 > 1024), with W and C wider than the
    /// product (their padding untouched), and
    /// non-finite results reported (NaN in A, infinity in W).
    @Test(arguments: [(13, 33, 17), (241, 40, 40), (20, 1030, 30), (20, 40, 520), (37, 70, 257)], [(false, false), (true, false), (false, true), (true, true)])
    func librarySGEMMWithMagnitudeMatchesNaive(size: (Int, Int, Int), transpose: (Bool, Bool)) {
        guard lfp_kernels_best_isa() == 2 else { return }  // the kernel runs only with AVX-512 (its refusal: the test above)
        var rng = SeededRandom(seed: 13)
        let (m, n, k) = size, (ta, tb) = transpose
        let (aRows, aCols) = ta ? (k, m) : (m, k), (bRows, bCols) = tb ? (n, k) : (k, n)
        let (lda, ldb, ldc, ldw) = (aCols, bCols, n + 3, n + 2)
        var a = (0..<(aRows * lda)).map { _ in rng.normal() }
        let b = (0..<(bRows * ldb)).map { _ in rng.normal() }
        var w = (0..<(m * ldw)).map { _ in rng.normal() }
        let c0 = (0..<(m * ldc)).map { _ in rng.normal() }
        let scale: Float = -0.75
        var scratch = [Float](repeating: 0, count: Int(lfp_sgemm_scratch_floats()))
        func run(_ a: [Float], _ w: [Float]) -> (c: [Float], finite: Bool) {
            var c = c0, finite: Int32 = -1
            let ran = lfp_sgemm_magnitude(2, ta ? 1 : 0, tb ? 1 : 0, Int32(m), Int32(n), Int32(k), a, Int32(lda), b, Int32(ldb),
                                          &c, Int32(ldc), w, Int32(ldw), scale, &scratch, &finite)
            #expect(ran == 1)
            return (c, finite == 1)
        }
        let (c, finite) = run(a, w)
        #expect(finite)
        var got: [Float] = [], want: [Double] = []
        for i in 0..<m {
            for j in 0..<n {
                var product = 0.0
                for p in 0..<k { product += Double(ta ? a[p * lda + i] : a[i * lda + p]) * Double(tb ? b[j * ldb + p] : b[p * ldb + j]) }
                got.append(c[i * ldc + j])
                want.append(Double(scale) * Double(abs(w[i * ldw + j])) * product)
            }
            for j in n..<ldc { #expect(c[i * ldc + j] == c0[i * ldc + j], "padding column \(j) of row \(i) written") }
        }
        expectClose(got, want, "lfp_sgemm_magnitude \(size) \(transpose)")
        w[(m - 1) * ldw + n - 1] = .infinity
        #expect(!run(a, w).finite, "infinity in W not reported")
        w[(m - 1) * ldw + n - 1] = 1
        a[a.count - 1] = .nan
        #expect(!run(a, w).finite, "NaN in A not reported")
    }

    /// `BLAS.gemmTimesMagnitude` (the fused feedback of a large Linear layer) against the two
    /// passes it replaces (`gemm`, then `multiplyByMagnitude`); nil for a small product, and
    /// wherever the library's sgemm is not configured.
    @Test(arguments: [(256, 300, 260), (600, 200, 160)])  // split by columns (o < i), by rows (o > i)
    func fusedMagnitudeProductMatchesTheSeparatePasses(shape: (Int, Int, Int)) {
        var rng = SeededRandom(seed: 14)
        let (o, i, n) = shape  // S [n, o], A [n, i]: the weight map S^T A is [o, i]
        let s = Tensor.normal([n, o], rng: &rng), a = Tensor.normal([n, i], rng: &rng), w = Tensor.normal([o, i], rng: &rng)
        var separate = Tensor.matmul(s, transposeA: true, a)
        let separateFinite = separate.multiplyByMagnitude(of: w, scale: 0.5)
        #expect(separateFinite)
        func fused(_ n: Int, weights: Tensor? = nil) -> ([Float], Bool?) {
            var c = [Float](repeating: .nan, count: o * i)
            let finite = s.storage.withUnsafeBufferPointer { ps in a.storage.withUnsafeBufferPointer { pa in
                (weights ?? w).storage.withUnsafeBufferPointer { pw in c.withUnsafeMutableBufferPointer { pc in
                    BLAS.gemmTimesMagnitude(transposeA: true, transposeB: false, m: o, n: i, k: n, a: ps.baseAddress!, lda: o,
                                            b: pa.baseAddress!, ldb: i, c: pc.baseAddress!, ldc: i, w: pw.baseAddress!, ldw: i, scale: 0.5)
                } }
            } }
            return (c, finite)
        }
        let (c, finite) = fused(n)
        guard BLAS.configuration.ownGEMM else {
            #expect(finite == nil && c.allSatisfy(\.isNaN))
            return
        }
        #expect(finite == true)
        expectClose(c, separate.storage.map(Double.init), tolerance: 1e-5, "fused against separate")
        let (small, smallFinite) = fused(8)  // o x i x 8: below BLAS.parallelGEMMWork
        #expect(smallFinite == nil && small.allSatisfy(\.isNaN))
        // An infinity in the last weight: its feedback is not finite, whichever worker's block holds it.
        var infinite = w
        infinite.storage[o * i - 1] = .infinity
        let (withInfinity, finiteWithInfinity) = fused(n, weights: infinite)
        #expect(finiteWithInfinity == false && withInfinity[o * i - 1].isInfinite)
    }

    /// `BLAS.gemm` with each kernel on products large enough to be split, against naive loops.
    @Test(arguments: BLAS.GEMMKernel.allCases)
    func largeProductsMatchNaiveWithEitherKernel(kernel: BLAS.GEMMKernel) {
        var rng = SeededRandom(seed: 12)
        for (m, n, k, ta, tb) in [(256, 300, 260, false, true), (300, 250, 250, true, false)] {
            #expect(m * n * k >= BLAS.parallelGEMMWork)
            let a = Tensor.normal(ta ? [k, m] : [m, k], rng: &rng), b = Tensor.normal(tb ? [n, k] : [k, n], rng: &rng)
            var c = [Float](repeating: .nan, count: m * n)
            a.storage.withUnsafeBufferPointer { pa in b.storage.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                BLAS.gemm(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 1, a: pa.baseAddress!, lda: ta ? m : k,
                          b: pb.baseAddress!, ldb: tb ? k : n, beta: 0, c: pc.baseAddress!, ldc: n, kernel: kernel)
            } } }
            var expected = [Double](repeating: 0, count: m * n)  // flat loops: Naive.matmul is slow at this size
            a.storage.withUnsafeBufferPointer { pa in b.storage.withUnsafeBufferPointer { pb in
                for i in 0..<m { for p in 0..<k {
                    let av = Double(ta ? pa[p * m + i] : pa[i * k + p])
                    for j in 0..<n { expected[i * n + j] += av * Double(tb ? pb[j * k + p] : pb[p * n + j]) }
                } }
            } }
            expectClose(c, expected, "\(kernel) \(m)x\(n)x\(k)")
            // alpha -2, beta 0.5, into a C 5 columns wider than the product (the padding kept).
            let ldc = n + 5
            let c0 = (0..<(m * ldc)).map { _ in rng.normal() }
            var wide = c0
            a.storage.withUnsafeBufferPointer { pa in b.storage.withUnsafeBufferPointer { pb in wide.withUnsafeMutableBufferPointer { pc in
                BLAS.gemm(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: -2, a: pa.baseAddress!, lda: ta ? m : k,
                          b: pb.baseAddress!, ldb: tb ? k : n, beta: 0.5, c: pc.baseAddress!, ldc: ldc, kernel: kernel)
            } } }
            var got: [Float] = [], want: [Double] = []
            for i in 0..<m {
                for j in 0..<n { got.append(wide[i * ldc + j]); want.append(-2 * expected[i * n + j] + 0.5 * Double(c0[i * ldc + j])) }
                #expect(wide[(i * ldc + n)..<(i * ldc + ldc)] == c0[(i * ldc + n)..<(i * ldc + ldc)], "padding of row \(i) written")
            }
            expectClose(got, want, "\(kernel) \(m)x\(n)x\(k) alpha -2 beta 0.5 ldc \(ldc)")
        }
    }

    @Test func emptyMatmulIsZero() {
        let c = Tensor.matmul(Tensor(shape: [3, 0]), Tensor(shape: [0, 4]))
        #expect(c.shape == [3, 4] && c.storage.allSatisfy { $0 == 0 })
    }
}

@Suite struct DenseKernelTests {
    /// `scale * |w| ⊙ (s^T x)` by explicit loops.
    static func naive(_ s: Tensor, _ x: Tensor, _ w: Tensor, _ scale: Float) -> [Double] {
        let k = s.shape[0], m = s.shape[1], n = x.shape[1]
        var out = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n {
            var acc = 0.0
            for p in 0..<k { acc += Double(s[p, i]) * Double(x[p, j]) }
            out[i * n + j] = acc * Double(abs(w[i, j])) * Double(scale)
        } }
        return out
    }

    /// Shapes with whole tiles, row and column tails, one row, one column, a batch of one and
    /// the deepest batch the kernel takes; every kernel set the CPU supports.
    @Test(arguments: [(32, 40, 96), (7, 13, 70), (1, 1, 1), (64, 9, 33), (5, 4, 32), (3, 70, 64), (16, 2, 31)])
    func matchesNaive(_ shape: (Int, Int, Int)) throws {
        let (k, m, n) = shape
        var rng = SeededRandom(seed: UInt64(k * 1000 + m * 10 + n))
        let s = Tensor.uniform([k, m], bound: 1, rng: &rng), x = Tensor.uniform([k, n], bound: 2, rng: &rng)
        let w = Tensor.uniform([m, n], bound: 1, rng: &rng)
        let expected = Self.naive(s, x, w, -0.5)
        for set in 0...Convolution.Direct.bestKernelSet {
            let (out, finite) = try #require(DenseKernels.weightFeedback(s, input: x, weight: w, scale: -0.5, kernelSet: set))
            #expect(finite)
            expectClose(out.storage, expected, tolerance: 1e-5, "dense feedback \(shape) set \(set)")
        }
    }

    /// The forward map `a w^T + b` against naive loops: batches of 1 to 64 (the packed 32-sample
    /// blocks, full and partial), row tails, with and without bias, on every kernel set.
    @Test(arguments: [(32, 700, 40), (7, 13, 70), (1, 1, 1), (64, 9, 33), (33, 4, 32), (5, 70, 6)])
    func forwardMatchesNaive(_ shape: (Int, Int, Int)) throws {
        let (n, k, m) = shape
        var rng = SeededRandom(seed: UInt64(n * 1000 + k * 10 + m))
        let a = Tensor.uniform([n, k], bound: 1, rng: &rng), w = Tensor.uniform([m, k], bound: 1, rng: &rng)
        let b = Tensor.uniform([m], bound: 1, rng: &rng)
        let product = Naive.matmul(a, false, w, true)
        for set in 0...Convolution.Direct.bestKernelSet {
            let plain = try #require(DenseKernels.forward(a, weight: w, bias: nil, kernelSet: set))
            expectClose(plain.storage, product, tolerance: 1e-5, "dense forward \(shape) set \(set)")
            let biased = try #require(DenseKernels.forward(a, weight: w, bias: b, kernelSet: set))
            #expect(biased.shape == [n, m])
            expectClose(biased.storage, product.indices.map { product[$0] + Double(b.storage[$0 % m]) }, tolerance: 1e-5, "with bias \(shape)")
        }
        #expect(DenseKernels.forward(.uniform([65, 4], bound: 1, rng: &rng), weight: .uniform([3, 4], bound: 1, rng: &rng), bias: nil) == nil)
    }

    @Test func reportsNonFiniteValuesAndDefersDeepBatches() throws {
        for (row, column) in [(0, 0), (5, 40), (10, 70)] {  // a tile, a single row, the scalar column tail
            var rng = SeededRandom(seed: 2)
            var x = Tensor.uniform([8, 71], bound: 1, rng: &rng)
            let s = Tensor.uniform([8, 11], bound: 1, rng: &rng), w = Tensor.uniform([11, 71], bound: 1, rng: &rng)
            x.storage[3 * 71 + column] = .infinity  // sample 3, column `column`: every row of that column
            for set in 0...Convolution.Direct.bestKernelSet {
                let (out, finite) = try #require(DenseKernels.weightFeedback(s, input: x, weight: w, scale: 1, kernelSet: set))
                #expect(!finite, "set \(set), column \(column)")
                #expect(!out[row, column].isFinite)
            }
        }
        var rng = SeededRandom(seed: 3)
        let deep = DenseKernels.maximumBatch + 1
        #expect(DenseKernels.weightFeedback(.uniform([deep, 4], bound: 1, rng: &rng), input: .uniform([deep, 4], bound: 1, rng: &rng),
                                             weight: .uniform([4, 4], bound: 1, rng: &rng), scale: 1) == nil)
    }
}

@Suite struct ConvolutionTests {
    struct Case: Sendable, CustomStringConvertible {
        var n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw: Int
        var description: String { "N\(n) C\(c) \(h)x\(w) O\(o) k\(kh)x\(kw) s\(sh),\(sw) p\(ph),\(pw) d\(dh),\(dw)" }
        var geometry: ConvGeometry {
            ConvGeometry(inChannels: c, inHeight: h, inWidth: w, outChannels: o, kernel: (kh, kw), stride: (sh, sw),
                         padding: (ph, pw), dilation: (dh, dw))
        }
    }

    static let cases: [Case] = [
        Case(n: 2, c: 3, h: 8, w: 8, o: 4, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1),
        Case(n: 1, c: 2, h: 9, w: 7, o: 3, kh: 3, kw: 2, sh: 2, sw: 1, ph: 0, pw: 1, dh: 1, dw: 1),
        Case(n: 2, c: 1, h: 8, w: 8, o: 2, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1, dh: 1, dw: 1),
        Case(n: 3, c: 2, h: 10, w: 6, o: 5, kh: 5, kw: 3, sh: 1, sw: 2, ph: 2, pw: 0, dh: 1, dw: 1),
        Case(n: 1, c: 2, h: 9, w: 9, o: 2, kh: 3, kw: 3, sh: 1, sw: 1, ph: 2, pw: 2, dh: 2, dw: 2),
        Case(n: 2, c: 3, h: 5, w: 5, o: 2, kh: 5, kw: 5, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1),
        // 1x1 (the GEMMs read the input itself), padding wider than the kernel (whole rows and
        // columns of zeros), stride 3 with padding, and the LeNet shape with an odd batch.
        Case(n: 3, c: 4, h: 5, w: 6, o: 3, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1),
        Case(n: 2, c: 2, h: 3, w: 4, o: 2, kh: 3, kw: 2, sh: 1, sw: 1, ph: 3, pw: 3, dh: 1, dw: 1),
        Case(n: 2, c: 2, h: 11, w: 10, o: 3, kh: 3, kw: 3, sh: 3, sw: 3, ph: 2, pw: 1, dh: 1, dw: 1),
        Case(n: 5, c: 3, h: 12, w: 12, o: 16, kh: 5, kw: 5, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1),
        // Direct-kernel edges: 17 output channels (a partial 16-wide block), 18 input channels
        // (the direct input map), rows wider than one 14-column tile, 3x3 with padding 1.
        Case(n: 3, c: 18, h: 9, w: 33, o: 17, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1),
        Case(n: 2, c: 16, h: 14, w: 14, o: 16, kh: 5, kw: 5, sh: 1, sw: 1, ph: 2, pw: 2, dh: 1, dw: 1),
        // im2col groups: 400 positions put 2 samples per product, so 7 samples make groups of
        // 2, 2, 2 and 1; a strided 1x1 projection (ResNet's downsample), 4 positions, 5 samples in one group.
        Case(n: 7, c: 3, h: 20, w: 20, o: 4, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1),
        Case(n: 5, c: 6, h: 4, w: 4, o: 70, kh: 1, kw: 1, sh: 2, sw: 2, ph: 0, pw: 0, dh: 1, dw: 1),
        Case(n: 4, c: 5, h: 3, w: 3, o: 3, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1),
        // Row tiles (AVX-512; vectors along output rows for few channels on one side): 1 input
        // channel with two overlapping column vectors per row (19 rows); 17 output channels
        // from 2 (groups of 8, 8 and 1, the last in tiles of 4 rows) on 16-column rows, and
        // its input map to 2 channels (18 rows in tiles of 4: the last tile moved up); an
        // input map to 5 channels (a group of 8 with 3 padding channels) with padding; 3
        // output channels in tiles of 2 rows. The weight maps of the 1- and 2-channel cases
        // take the weight-map row tiles.
        Case(n: 3, c: 1, h: 23, w: 22, o: 16, kh: 5, kw: 5, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1),
        Case(n: 2, c: 2, h: 18, w: 18, o: 17, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1),
        Case(n: 2, c: 5, h: 21, w: 21, o: 12, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1),
        Case(n: 2, c: 4, h: 16, w: 24, o: 3, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1),
        // Whole-row tiles that skip the padding columns (AVX-512): the input map of an unpadded
        // 3x3 layer (padding 2, rows of 10). The 5x5 ones (padding 4 and 2) and 3x3 with padding
        // 1 are the LeNet, 16-channel 14x14 and 8x8 cases above.
        Case(n: 2, c: 16, h: 10, w: 10, o: 8, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1),
        // Lane tiles (AVX-512; one output channel, vectors across 16 samples): the input map of
        // a 1-channel layer with padding (4 channels, rows of 30 in two tiles of 15) over 18
        // samples; a 3x3 forward map to 1 channel over 35 samples (full blocks of 16 and a
        // partial one in each worker's range); one with output rows of 9 (a single tile, the
        // last 16-float block of each sample moved back).
        Case(n: 18, c: 1, h: 17, w: 30, o: 4, kh: 5, kw: 5, sh: 1, sw: 1, ph: 2, pw: 2, dh: 1, dw: 1),
        Case(n: 35, c: 3, h: 12, w: 20, o: 1, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1),
        Case(n: 20, c: 2, h: 10, w: 9, o: 1, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1),
        // Row tiles with paired tails (AVX-512; rows of 17-24 columns: the last 8 columns of two
        // rows in one vector), forward and weight map: the 1-channel LeNet layer (rows of 24;
        // 6 output channels: forward as a group of 8, weight map as groups of 4 and 2); 2 input
        // channels, 3x3, rows of 21 (weight map: 3 lanes of each half masked) and 7 rows (the
        // odd last row: forward tile moved up, weight map's row alone), its input map to 2
        // channels (4 pairs of rows); 4 output channels (2 pairs of rows). The 23x22 case above
        // has rows of 18 and 19 rows, the 16x24 one 3 channels on rows of 22.
        Case(n: 3, c: 1, h: 28, w: 28, o: 6, kh: 5, kw: 5, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1),
        Case(n: 2, c: 2, h: 9, w: 23, o: 5, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1),
        Case(n: 2, c: 1, h: 20, w: 20, o: 4, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1),
    ]

    @Test(arguments: cases)
    func forwardMatchesNaive(_ t: Case) {
        var rng = SeededRandom(seed: 11)
        let g = t.geometry
        let x = Tensor.normal([t.n, t.c, t.h, t.w], rng: &rng)
        let w = Tensor.normal([t.o, t.c, t.kh, t.kw], rng: &rng)
        let b = Tensor.normal([t.o], rng: &rng)
        let y = Convolution.forward(x, weight: w, bias: b, geometry: g)
        #expect(y.shape == [t.n, t.o, g.outHeight, g.outWidth])
        expectClose(y.storage, Naive.conv(x, w, b, g), "conv forward \(t)")
    }

    /// The input and weight maps are the adjoints of the forward map:
    /// <conv(x, w), r> = <x, backwardInput(r, w)> = <w, backwardWeight(r, x)>.
    @Test(arguments: cases)
    func backwardMapsAreAdjoints(_ t: Case) {
        var rng = SeededRandom(seed: 12)
        let g = t.geometry
        let x = Tensor.normal([t.n, t.c, t.h, t.w], rng: &rng)
        let w = Tensor.normal([t.o, t.c, t.kh, t.kw], rng: &rng)
        let r = Tensor.normal([t.n, t.o, g.outHeight, g.outWidth], rng: &rng)
        let y = Naive.conv(x, w, nil, g)
        let lhs = zip(y, r.storage).reduce(0.0) { $0 + $1.0 * Double($1.1) }
        let (dx, dw) = Naive.convMaps(x, w, r, g)
        expectClose(Convolution.backwardInput(r, weight: w, geometry: g).storage, dx, "conv input map \(t)")
        expectClose(Convolution.backwardWeight(r, input: x, geometry: g).storage, dw, "conv weight map \(t)")
        let rhs = zip(dx, x.storage).reduce(0.0) { $0 + $1.0 * Double($1.1) }
        #expect(abs(lhs - rhs) <= 1e-6 * max(1, abs(lhs)))
    }

    /// Both implementations (im2col + GEMM, and the direct kernels in every kernel set this CPU
    /// runs) against the naive loops, on every case each of them supports.
    @Test(arguments: cases)
    func everyImplementationMatchesNaive(_ t: Case) {
        var rng = SeededRandom(seed: 13)
        let g = t.geometry
        let x = Tensor.normal([t.n, t.c, t.h, t.w], rng: &rng)
        let w = Tensor.normal([t.o, t.c, t.kh, t.kw], rng: &rng)
        let b = Tensor.normal([t.o], rng: &rng)
        let r = Tensor.normal([t.n, t.o, g.outHeight, g.outWidth], rng: &rng)
        let y = Naive.conv(x, w, b, g)
        let (dx, dw) = Naive.convMaps(x, w, r, g)
        expectClose(Convolution.im2colForward(x, weight: w, bias: b, geometry: g).storage, y, "im2col forward \(t)")
        expectClose(Convolution.im2colBackwardInput(r, weight: w, geometry: g).storage, dx, "im2col input map \(t)")
        expectClose(Convolution.im2colBackwardWeight(r, input: x, geometry: g).storage, dw, "im2col weight map \(t)")
        for set in 0...Convolution.Direct.bestKernelSet {
            let name = Convolution.Direct.name(ofKernelSet: set)
            expectClose(Convolution.Direct.forward(x, weight: w, bias: b, geometry: g, kernelSet: set).storage, y, "\(name) forward \(t)")
            if t.sh == 1 && t.sw == 1 && t.dh == 1 && t.dw == 1 && t.ph < t.kh && t.pw < t.kw {
                expectClose(Convolution.Direct.backwardInput(r, weight: w, geometry: g, kernelSet: set).storage, dx, "\(name) input map \(t)")
            }
            if t.kh * t.kw <= 25 {
                expectClose(Convolution.Direct.backwardWeight(r, input: x, geometry: g, kernelSet: set).storage, dw, "\(name) weight map \(t)")
            }
        }
    }

    /// Which layers take the few-channel tiles (AVX-512 only): the LeNet first layers' forward
    /// map (1 input channel, row tiles) and input maps (to 3 channels: row tiles; to 1 channel:
    /// lane tiles), not their 16-channel layers. (The kernel sets are x86's.)
    @Test func fewChannelTilesTakeTheFirstLayers() {
        #if arch(x86_64)
        let lenet1 = ConvGeometry(inChannels: 1, inHeight: 28, inWidth: 28, outChannels: 16, kernel: (5, 5))
        let lenet3 = ConvGeometry(inChannels: 3, inHeight: 32, inWidth: 32, outChannels: 16, kernel: (5, 5))
        let conv2 = ConvGeometry(inChannels: 16, inHeight: 12, inWidth: 12, outChannels: 16, kernel: (5, 5))
        var g1 = Convolution.Direct.geometry(lenet1), g3 = Convolution.Direct.geometry(lenet3), g2 = Convolution.Direct.geometry(conv2)
        #expect(lfp_conv_forward_few_channel_tiles(2, &g1) != 0)
        #expect(lfp_conv_forward_few_channel_tiles(2, &g3) == 0 && lfp_conv_forward_few_channel_tiles(2, &g2) == 0)
        #expect(lfp_conv_forward_few_channel_tiles(1, &g1) == 0 && lfp_conv_forward_few_channel_tiles(0, &g1) == 0)
        #expect(Convolution.Direct.appliesToInputMap(lenet3, kernelSet: 2))
        #expect(!Convolution.Direct.appliesToInputMap(lenet3, kernelSet: 1))
        #expect(Convolution.Direct.appliesToInputMap(lenet1, kernelSet: 2))
        #expect(!Convolution.Direct.appliesToInputMap(lenet1, kernelSet: 1))
        #expect(Convolution.Direct.appliesToInputMap(conv2, kernelSet: 0))
        #endif
    }

    /// A batch split over the workers (an odd size, so the ranges differ in length) gives what
    /// the same maps give sample by sample.
    @Test func batchesSplitOverWorkersMatchSampleBySample() {
        var rng = SeededRandom(seed: 21)
        let g = ConvGeometry(inChannels: 8, inHeight: 32, inWidth: 32, outChannels: 3, kernel: (5, 5), stride: (1, 1), padding: (1, 1))
        let n = 13
        #expect(Convolution.workerCount(n, work: g.outChannels * g.patchSize * g.positions) == min(BLAS.threads, n))
        let x = Tensor.normal([n, 8, 32, 32], rng: &rng)
        let w = Tensor.normal([3, 8, 5, 5], rng: &rng)
        let b = Tensor.normal([3], rng: &rng)
        let y = Convolution.forward(x, weight: w, bias: b, geometry: g)
        let r = Tensor.normal(y.shape, rng: &rng)
        let dx = Convolution.backwardInput(r, weight: w, geometry: g)
        let dw = Convolution.backwardWeight(r, input: x, geometry: g)
        var dwSum = [Double](repeating: 0, count: w.count)
        for s in [0, n / 2, n - 1] {
            let xs = Tensor(shape: [1, 8, 32, 32], storage: Array(x.storage[(s * g.inputSize)..<((s + 1) * g.inputSize)]))
            let rs = Tensor(shape: [1, 3, g.outHeight, g.outWidth], storage: Array(r.storage[(s * g.outputSize)..<((s + 1) * g.outputSize)]))
            expectClose(Array(y.storage[(s * g.outputSize)..<((s + 1) * g.outputSize)]),
                        Convolution.forward(xs, weight: w, bias: b, geometry: g).storage.map(Double.init), "forward sample \(s)")
            expectClose(Array(dx.storage[(s * g.inputSize)..<((s + 1) * g.inputSize)]),
                        Convolution.backwardInput(rs, weight: w, geometry: g).storage.map(Double.init), "input map sample \(s)")
        }
        for s in 0..<n {
            let xs = Tensor(shape: [1, 8, 32, 32], storage: Array(x.storage[(s * g.inputSize)..<((s + 1) * g.inputSize)]))
            let rs = Tensor(shape: [1, 3, g.outHeight, g.outWidth], storage: Array(r.storage[(s * g.outputSize)..<((s + 1) * g.outputSize)]))
            for (i, v) in Convolution.backwardWeight(rs, input: xs, geometry: g).storage.enumerated() { dwSum[i] += Double(v) }
        }
        expectClose(dw.storage, dwSum, "weight map summed over chunks")
    }

    /// The 32-lane reductions against sums in Double, for lengths below one step, whole steps
    /// and steps with a tail; and the per-channel statistics built on them.
    @Test(arguments: [0, 1, 20, 32, 35, 64, 100, 1000])
    func laneSumsMatchDoubleSums(count: Int) throws {
        var rng = SeededRandom(seed: UInt64(count) + 1)
        let a = Tensor.normal([max(1, count)], rng: &rng).storage, b = Tensor.normal([max(1, count)], rng: &rng).storage
        let mean: Float = 0.25
        var sum = 0.0, dot = 0.0, deviation = 0.0
        for i in 0..<count {
            sum += Double(a[i]); dot += Double(a[i]) * Double(b[i])
            deviation += (Double(a[i]) - Double(mean)) * (Double(a[i]) - Double(mean))
        }
        let tolerance = 1e-5 * Double(max(1, count))
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                #expect(abs(Double(LaneSums.sum(pa.baseAddress!, count: count)) - sum) < tolerance)
                #expect(abs(Double(LaneSums.dot(pa.baseAddress!, pb.baseAddress!, count: count)) - dot) < tolerance)
                #expect(abs(Double(LaneSums.squaredDeviation(pa.baseAddress!, count: count, from: mean)) - deviation) < tolerance)
            }
        }
        guard count > 0 else { return }
        // [2, 3, count]: every plane one call of each reduction.
        let x = Tensor.normal([2, 3, count], rng: &rng), y = Tensor.normal([2, 3, count], rng: &rng)
        let (means, variances) = ChannelKernels.statistics(x)
        let sums = ChannelKernels.channelSums(x), products = ChannelKernels.channelSums(x, times: y)
        for ch in 0..<3 {
            let values = (0..<2).flatMap { n in (0..<count).map { Double(x.storage[(n * 3 + ch) * count + $0]) } }
            let others = (0..<2).flatMap { n in (0..<count).map { Double(y.storage[(n * 3 + ch) * count + $0]) } }
            let m = values.reduce(0, +) / Double(values.count)
            let v = values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(values.count)
            #expect(abs(Double(means[ch]) - m) < 1e-5 && abs(Double(variances[ch]) - v) < 1e-4 * max(1, v), "channel \(ch)")
            #expect(abs(Double(sums[ch]) - values.reduce(0, +)) < 2 * tolerance)
            #expect(abs(Double(products[ch]) - zip(values, others).map { $0 * $1 }.reduce(0, +)) < 2 * tolerance)
        }
    }

    /// BatchNorm's one-pass input gradient against per-element loops, with and without the
    /// factor LFP multiplies in (`times`); [300, 4, 7x9] splits its planes over the cores.
    @Test(arguments: [[2, 3, 5], [300, 4, 63], [6, 5]])
    func channelCombineMatchesNaive(shape: [Int]) {
        var rng = SeededRandom(seed: 41)
        let a = Tensor.normal(shape, rng: &rng), b = Tensor.normal(shape, rng: &rng), m = Tensor.normal(shape, rng: &rng)
        let c = shape[1], p = shape.count > 2 ? shape[2] : 1
        let sa = (0..<c).map { Float($0) - 1.5 }, sb = (0..<c).map { 0.5 / Float($0 + 1) }, shift = (0..<c).map { Float($0) * 0.1 }
        let plain = ChannelKernels.combine(a, scale: sa, b, scale: sb, shift: shift)
        let times = ChannelKernels.combine(a, scale: sa, b, scale: sb, shift: shift, times: m)
        var worst: Float = 0
        for i in 0..<a.count {
            let ch = (i / p) % c
            let expected = a.storage[i] * sa[ch] + b.storage[i] * sb[ch] + shift[ch]
            worst = max(worst, abs(plain.storage[i] - expected), abs(times.storage[i] - expected * m.storage[i]))
        }
        #expect(worst < 1e-5, "\(shape): largest difference \(worst)")
    }

    /// Against a sum in Double: positions below one 32-lane step (4x5), whole steps (8x8, 24x24)
    /// and steps with a tail (5x7 = 35, 7x9 = 63).
    @Test(arguments: [(4, 5), (8, 8), (24, 24), (5, 7), (7, 9)])
    func biasMapSumsBatchAndPositions(height: Int, width: Int) {
        var rng = SeededRandom(seed: 3)
        let dy = Tensor.normal([2, 3, height, width], rng: &rng)
        let db = Convolution.backwardBias(dy)
        for o in 0..<3 {
            var s = 0.0
            for n in 0..<2 { for i in 0..<height { for j in 0..<width { s += Double(dy[n, o, i, j]) } } }
            #expect(abs(Double(db.storage[o]) - s) < 1e-5 * Double(2 * height * width), "\(height)x\(width) channel \(o)")
        }
    }
}

@Suite struct PoolingTests {
    @Test(arguments: [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)])
    func maxPoolMatchesNaive(kernel: Int, stride: Int, padding: Int) {
        var rng = SeededRandom(seed: 5)
        let x = Tensor.normal([2, 3, 7, 6], rng: &rng)
        let g = PoolGeometry(channels: 3, inHeight: 7, inWidth: 6, kernel: (kernel, kernel), stride: (stride, stride), padding: (padding, padding))
        let (y, argmax) = Pooling.maxForward(x, geometry: g)
        var expected: [Double] = []
        var dxExpected = [Double](repeating: 0, count: x.count)
        let dy = Tensor.normal(y.shape, rng: &rng)
        var k = 0
        for n in 0..<2 { for c in 0..<3 { for oy in 0..<g.outHeight { for ox in 0..<g.outWidth {
            var best = -Double.infinity, bi = 0, bj = 0
            for i in 0..<kernel { for j in 0..<kernel {
                let iy = oy * stride - padding + i, ix = ox * stride - padding + j
                if iy >= 0 && iy < 7 && ix >= 0 && ix < 6 && Double(x[n, c, iy, ix]) > best {
                    best = Double(x[n, c, iy, ix]); bi = iy; bj = ix
                }
            } }
            expected.append(best)
            dxExpected[((n * 3 + c) * 7 + bi) * 6 + bj] += Double(dy.storage[k])
            k += 1
        } } } }
        expectClose(y.storage, expected, "maxpool")
        let dx = Pooling.maxBackward(dy, argmax: argmax, inputShape: x.shape, geometry: g)
        expectClose(dx.storage, dxExpected, "maxpool backward")
    }

    @Test(arguments: [(2, 2, 0, true), (3, 2, 1, true), (3, 2, 1, false), (3, 1, 1, false)])
    func avgPoolMatchesNaive(kernel: Int, stride: Int, padding: Int, includePad: Bool) {
        var rng = SeededRandom(seed: 6)
        let x = Tensor.normal([2, 2, 7, 6], rng: &rng)
        let g = PoolGeometry(channels: 2, inHeight: 7, inWidth: 6, kernel: (kernel, kernel), stride: (stride, stride), padding: (padding, padding))
        let y = Pooling.averageForward(x, geometry: g, countIncludePad: includePad)
        let dy = Tensor.normal(y.shape, rng: &rng)
        var expected: [Double] = []
        var dx = [Double](repeating: 0, count: x.count)
        var k = 0
        for n in 0..<2 { for c in 0..<2 { for oy in 0..<g.outHeight { for ox in 0..<g.outWidth {
            var s = 0.0, inside = 0
            var cells: [Int] = []
            for i in 0..<kernel { for j in 0..<kernel {
                let iy = oy * stride - padding + i, ix = ox * stride - padding + j
                if iy >= 0 && iy < 7 && ix >= 0 && ix < 6 {
                    s += Double(x[n, c, iy, ix]); inside += 1
                    cells.append(((n * 2 + c) * 7 + iy) * 6 + ix)
                }
            } }
            let divisor = includePad ? Double(kernel * kernel) : Double(inside)
            expected.append(s / divisor)
            for cell in cells { dx[cell] += Double(dy.storage[k]) / divisor }
            k += 1
        } } } }
        expectClose(y.storage, expected, "avgpool")
        expectClose(Pooling.averageBackward(dy, inputShape: x.shape, geometry: g, countIncludePad: includePad).storage, dx, "avgpool backward")
    }
}

@Suite struct RandomTests {
    @Test func sameSeedSameSequence() {
        var a = SeededRandom(seed: 42), b = SeededRandom(seed: 42), c = SeededRandom(seed: 43)
        let xa = (0..<100).map { _ in a.next() }, xb = (0..<100).map { _ in b.next() }, xc = (0..<100).map { _ in c.next() }
        #expect(xa == xb)
        #expect(xa != xc)
    }

    @Test func uniformStaysInBoundsAndCoversThem() {
        var rng = SeededRandom(seed: 1)
        let fanIn = 400
        let bound = DefaultInitialization.bound(fanIn: fanIn)
        #expect(abs(bound - 0.05) < 1e-7)
        let t = Tensor.uniform([20000], bound: bound, rng: &rng)
        #expect(t.storage.allSatisfy { $0 >= -bound && $0 < bound })
        #expect(t.storage.max()! > 0.98 * bound && t.storage.min()! < -0.98 * bound)
        // Uniform(-b, b): mean 0, variance b^2 / 3.
        let mean = Double(t.mean())
        let variance = t.squaredNorm() / Double(t.count) - mean * mean
        #expect(abs(mean) < 0.01 * Double(bound))
        #expect(abs(variance / (Double(bound * bound) / 3) - 1) < 0.03)
    }

    @Test func normalHasUnitVariance() {
        var rng = SeededRandom(seed: 2)
        let t = Tensor.normal([50000], rng: &rng)
        #expect(abs(t.mean()) < 0.02)
        #expect(abs(t.squaredNorm() / 50000 - 1) < 0.03)
    }
}

@Suite struct BLASSelectionTests {
    @Test func legacyCoreOnModernCPUIsReplaced() {
        let avx512: Set<String> = ["avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"]
        #expect(BLAS.preferredCore(detected: "Prescott", cpuFlags: avx512) == "SkylakeX")
        #expect(BLAS.preferredCore(detected: "Prescott", cpuFlags: avx512.union(["avx512_bf16"])) == "Cooperlake")
        #expect(BLAS.preferredCore(detected: "Prescott", cpuFlags: ["avx", "avx2", "fma"]) == "Haswell")
        #expect(BLAS.preferredCore(detected: "Prescott", cpuFlags: ["sse3"]) == nil)
        #expect(BLAS.preferredCore(detected: "SkylakeX", cpuFlags: avx512) == nil)
        #expect(BLAS.preferredCore(detected: "Haswell", cpuFlags: avx512) == nil)
    }

    @Test func configurationReportsBackend() {
        let config = BLAS.configure()
        #expect(config.threads >= 1)
        #expect(!config.core.isEmpty)
        // The in-process core switch itself is exercised in a subprocess by the command tests
        // (switching kernels while other tests run GEMMs would race).
    }

    /// OpenBLAS's idle threads sleep at once (they spun ~0.1 s after each threaded product,
    /// competing with the library's workers) unless the user set OPENBLAS_THREAD_TIMEOUT; a
    /// threaded product after the threads were restarted is still right.
    @Test func openBLASIdleThreadsSleep() {
        let config = BLAS.configure()
        guard config.backend == "OpenBLAS", let timeout = config.idleThreadTimeout else { return }
        if ProcessInfo.processInfo.environment["OPENBLAS_THREAD_TIMEOUT"] == nil {
            #expect(timeout == 4)
        }
        let n = 300
        var rng = SeededRandom(seed: 5)
        let a = Tensor.uniform([n, n], bound: 1, rng: &rng), b = Tensor.uniform([n, n], bound: 1, rng: &rng)
        let product = Tensor.matmul(a, b)
        #expect(n * n * n >= BLAS.parallelGEMMWork)
        var naive = [Double](repeating: 0, count: n)
        for j in 0..<n { for k in 0..<n { naive[j] += Double(a.storage[7 * n + k]) * Double(b.storage[k * n + j]) } }
        for j in 0..<n { #expect(abs(Double(product.storage[7 * n + j]) - naive[j]) < 1e-3) }
    }
}

@Suite struct ElementwiseTests {
    /// The |W| epilogue multiplies and reports finiteness in the same pass, in every chunk.
    @Test(arguments: [10, 300_000])
    func multiplyByMagnitudeReportsNonFiniteResults(count: Int) {
        var rng = SeededRandom(seed: 17)
        let w = Tensor.normal([count], rng: &rng)
        let s = Tensor.normal([count], rng: &rng)
        var product = s
        let finite = product.multiplyByMagnitude(of: w, scale: -2)
        #expect(finite)
        for i in [0, count / 2, count - 1] {
            #expect(product.storage[i] == s.storage[i] * abs(w.storage[i]) * -2)
        }
        for bad in [Float.nan, .infinity] {
            for position in [0, count - 1] {
                var withBad = s
                withBad.storage[position] = bad
                let finite = withBad.multiplyByMagnitude(of: w, scale: 1)
                #expect(!finite, "\(bad) at \(position)")
            }
        }
        // Overflow to infinity is caught too.
        var huge = Tensor(shape: [count], repeating: 3e38)
        let overflowed = !huge.multiplyByMagnitude(of: Tensor(shape: [count], repeating: 2), scale: 1)
        #expect(overflowed)
    }
}

@Suite struct ParallelTests {
    /// Every element is visited once, by the chunk `Parallel.chunkCount` promises, also when calls
    /// nest (the inner call runs its chunks on the calling worker) and when several threads submit
    /// at once (one job holds the workers, the others run their chunks themselves).
    @Test func chunksCoverTheRangeOnceUnderNestingAndConcurrentCallers() async {
        func check(_ count: Int) -> Bool {
            let chunks = Parallel.chunkCount(count, minimumWork: 1)
            var owner = [Int](repeating: -1, count: count)
            var inner = [Int](repeating: 0, count: count)
            owner.withUnsafeMutableBufferPointer { o in
                inner.withUnsafeMutableBufferPointer { n in
                    Parallel.chunks(count, minimumWork: 1) { chunk, range in
                        for i in range { o[i] = o[i] == -1 ? chunk : -2 }
                        // A nested call over this chunk's own range.
                        Parallel.chunks(range.count, minimumWork: 1) { _, sub in
                            for i in sub { n[range.lowerBound + i] += 1 }
                        }
                    }
                }
            }
            let expected = (0..<count).map { i in (0..<chunks).first { w in i < count * (w + 1) / chunks }! }
            return owner == expected && inner.allSatisfy { $0 == 1 }
        }
        #expect(check(1) && check(7) && check(100_003))
        let results = await withTaskGroup(of: Bool.self) { group in
            for t in 0..<8 { group.addTask { (0..<20).allSatisfy { check(1_000 + 37 * t + $0) } } }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.count == 8 && results.allSatisfy { $0 })
    }
}
