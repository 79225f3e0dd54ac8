import CLFPKernels
import Foundation

/// The geometry of a 2-D convolution (NCHW input, OIHW weight), PyTorch semantics.
public struct ConvGeometry: Sendable, Equatable {
    public var inChannels, inHeight, inWidth: Int
    public var outChannels: Int
    public var kernelHeight, kernelWidth: Int
    public var strideHeight, strideWidth: Int
    public var paddingHeight, paddingWidth: Int
    public var dilationHeight, dilationWidth: Int

    public init(inChannels: Int, inHeight: Int, inWidth: Int, outChannels: Int,
                kernel: (Int, Int), stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                dilation: (Int, Int) = (1, 1)) {
        self.inChannels = inChannels; self.inHeight = inHeight; self.inWidth = inWidth
        self.outChannels = outChannels
        (kernelHeight, kernelWidth) = kernel
        (strideHeight, strideWidth) = stride
        (paddingHeight, paddingWidth) = padding
        (dilationHeight, dilationWidth) = dilation
    }

    /// Output height: `floor((H + 2p - d(k-1) - 1) / s) + 1`.
    public var outHeight: Int { (inHeight + 2 * paddingHeight - dilationHeight * (kernelHeight - 1) - 1) / strideHeight + 1 }
    /// Output width.
    public var outWidth: Int { (inWidth + 2 * paddingWidth - dilationWidth * (kernelWidth - 1) - 1) / strideWidth + 1 }
    /// Rows of the im2col matrix: `C * kh * kw`.
    public var patchSize: Int { inChannels * kernelHeight * kernelWidth }
    /// Columns of the im2col matrix: output positions per sample.
    public var positions: Int { outHeight * outWidth }
    /// Elements of one input sample.
    public var inputSize: Int { inChannels * inHeight * inWidth }
    /// Elements of one output sample.
    public var outputSize: Int { outChannels * positions }
}

/// Convolution kernels, forward and the two backward maps: the direct kernels of CLFPKernels
/// for layers with few channels (`Direct`), im2col + GEMM per sample otherwise; either way the
/// samples are split over the cores.
public enum Convolution {
    /// The output rows `oy` whose input row `oy * sh - ph + ki * dh` lies inside the image.
    @inline(__always)
    static func validRows(_ g: ConvGeometry, ki: Int) -> Range<Int> {
        let shift = ki * g.dilationHeight - g.paddingHeight  // iy = oy * sh + shift
        let lo = shift >= 0 ? 0 : (-shift + g.strideHeight - 1) / g.strideHeight
        let hi = g.inHeight - shift <= 0 ? 0 : min(g.outHeight, (g.inHeight - shift - 1) / g.strideHeight + 1)
        return lo..<max(lo, hi)
    }

    /// The output columns `ox` whose input column `ox + offset` lies inside the image (stride 1).
    @inline(__always)
    static func validColumns(_ g: ConvGeometry, offset: Int) -> Range<Int> {
        let lo = min(g.outWidth, max(0, -offset)), hi = max(lo, min(g.outWidth, g.inWidth - offset))
        return lo..<hi
    }

    /// Unfolds one input sample `[C, H, W]` into `col [C*kh*kw, OH*OW]` (zero padding), rows
    /// `rowStride` apart (default `OH*OW`; wider to place several samples side by side).
    /// The valid rows and columns of each kernel offset are computed once, so the inner loop
    /// is a plain copy of one output row (the common case, stride 1, has no per-element test).
    public static func im2col(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ col: UnsafeMutablePointer<Float>, rowStride: Int? = nil) {
        let oh = g.outHeight, ow = g.outWidth, p = rowStride ?? oh * ow
        var row = 0
        for c in 0..<g.inChannels {
            let plane = x + c * g.inHeight * g.inWidth
            for ki in 0..<g.kernelHeight {
                let rows = validRows(g, ki: ki)
                let shift = ki * g.dilationHeight - g.paddingHeight
                for kj in 0..<g.kernelWidth {
                    let dst = col + row * p
                    row += 1
                    let offset = kj * g.dilationWidth - g.paddingWidth
                    dst.update(repeating: 0, count: rows.lowerBound * ow)
                    (dst + rows.upperBound * ow).update(repeating: 0, count: (oh - rows.upperBound) * ow)
                    if g.strideWidth == 1 {
                        let cols = validColumns(g, offset: offset)
                        for oy in rows {
                            let line = dst + oy * ow, src = plane + (oy * g.strideHeight + shift) * g.inWidth + offset
                            for ox in 0..<cols.lowerBound { line[ox] = 0 }
                            copyRun(src + cols.lowerBound, line + cols.lowerBound, cols.count)
                            for ox in cols.upperBound..<ow { line[ox] = 0 }
                        }
                    } else {
                        for oy in rows {
                            let line = dst + oy * ow, src = plane + (oy * g.strideHeight + shift) * g.inWidth
                            for ox in 0..<ow {
                                let ix = ox * g.strideWidth + offset
                                line[ox] = (ix >= 0 && ix < g.inWidth) ? src[ix] : 0
                            }
                        }
                    }
                }
            }
        }
    }

    /// Folds `col [C*kh*kw, OH*OW]` (rows `rowStride` apart) back onto one sample `[C, H, W]`,
    /// accumulating (adjoint of im2col).
    public static func col2im(_ col: UnsafePointer<Float>, _ g: ConvGeometry, _ x: UnsafeMutablePointer<Float>, rowStride: Int? = nil) {
        let oh = g.outHeight, ow = g.outWidth, p = rowStride ?? oh * ow
        var row = 0
        for c in 0..<g.inChannels {
            let plane = x + c * g.inHeight * g.inWidth
            for ki in 0..<g.kernelHeight {
                let rows = validRows(g, ki: ki)
                let shift = ki * g.dilationHeight - g.paddingHeight
                for kj in 0..<g.kernelWidth {
                    let src = col + row * p
                    row += 1
                    let offset = kj * g.dilationWidth - g.paddingWidth
                    if g.strideWidth == 1 {
                        let cols = validColumns(g, offset: offset)
                        for oy in rows {
                            let dst = plane + (oy * g.strideHeight + shift) * g.inWidth + offset
                            addRun(src + oy * ow + cols.lowerBound, dst + cols.lowerBound, cols.count)
                        }
                    } else {
                        for oy in rows {
                            let dst = plane + (oy * g.strideHeight + shift) * g.inWidth, line = src + oy * ow
                            for ox in 0..<ow {
                                let ix = ox * g.strideWidth + offset
                                if ix >= 0 && ix < g.inWidth { dst[ix] += line[ox] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `dst[0..<count] += src[0..<count]` with vector operations (short runs, as `copyRun`).
    @inline(__always)
    static func addRun(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
        var i = 0
        let s = UnsafeRawPointer(src), d = UnsafeMutableRawPointer(dst)
        while i + 8 <= count {
            let sum = d.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) + s.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            d.storeBytes(of: sum, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count { dst[i] += src[i]; i += 1 }
    }

    /// Copies `count` floats with vector moves. im2col copies many short runs (one output row,
    /// 8 to 32 floats); a `memmove` call per run cost more than the copy (measured: 18 % of a
    /// LeNet step).
    @inline(__always)
    static func copyRun(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
        var i = 0
        let s = UnsafeRawPointer(src), d = UnsafeMutableRawPointer(dst)
        while i + 8 <= count {
            d.storeBytes(of: s.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self), toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count { dst[i] = src[i]; i += 1 }
    }

    /// True when the im2col matrix of a sample is the sample itself (1x1 kernel, stride 1, no
    /// padding): the GEMMs then read the input directly.
    static func isPointwise(_ g: ConvGeometry) -> Bool {
        g.kernelHeight == 1 && g.kernelWidth == 1 && g.strideHeight == 1 && g.strideWidth == 1
            && g.paddingHeight == 0 && g.paddingWidth == 0
    }

    /// Runs `body(worker, scratch, samples)` over contiguous ranges of the batch, one range
    /// per worker, each with `scratchPerWorker` floats of its own. The workers are the
    /// parallelism (they call `BLAS.serialGEMM` or a direct kernel), so every phase of every
    /// sample runs on all cores. The split depends only on the batch, the work per sample and
    /// the thread count, so results are bit-identical run to run at a fixed thread count.
    static func forEachWorker(_ n: Int, work: Int, scratchPerWorker: Int,
                              _ body: (_ worker: Int, _ scratch: UnsafeMutablePointer<Float>, _ samples: Range<Int>) -> Void) {
        let size = max(1, scratchPerWorker), workers = workerCount(n, work: work)
        var scratch = [Float](unsafeUninitializedCapacity: workers * size) { _, c in c = workers * size }
        scratch.withUnsafeMutableBufferPointer { ps in
            let base = ps.baseAddress!
            Parallel.chunks(n, costPerItem: work) { worker, samples in body(worker, base + worker * size, samples) }
        }
    }

    /// How many workers `forEachWorker` uses (for per-worker partial sums).
    static func workerCount(_ n: Int, work: Int) -> Int { Parallel.chunkCount(n, costPerItem: work) }

    /// Multiply-adds of one sample's forward map (the work measure `forEachWorker` splits by).
    static func workPerSample(_ g: ConvGeometry) -> Int { g.outChannels * g.patchSize * g.positions }

    /// `y = conv2d(x, w) + bias`: x `[N, C, H, W]`, w `[O, C, kh, kw]`, bias `[O]` -> `[N, O, OH, OW]`.
    public static func forward(_ x: Tensor, weight w: Tensor, bias: Tensor?, geometry g: ConvGeometry) -> Tensor {
        precondition(x.count == x.shape[0] * g.inputSize, "conv input \(x.shape) does not match geometry")
        return Direct.applies(g) ? Direct.forward(x, weight: w, bias: bias, geometry: g) : im2colForward(x, weight: w, bias: bias, geometry: g)
    }

    /// Input map (the transposed convolution): `dx = conv2d_input_grad(dy, w)`, `[N, C, H, W]`.
    public static func backwardInput(_ dy: Tensor, weight w: Tensor, geometry g: ConvGeometry) -> Tensor {
        precondition(dy.count == dy.shape[0] * g.outputSize, "conv output feedback \(dy.shape) does not match geometry")
        return Direct.appliesToInputMap(g) ? Direct.backwardInput(dy, weight: w, geometry: g) : im2colBackwardInput(dy, weight: w, geometry: g)
    }

    /// Weight map: `dW = sum over samples and positions of dy ⊗ patches of x`, shape `[O, C, kh, kw]`.
    public static func backwardWeight(_ dy: Tensor, input x: Tensor, geometry g: ConvGeometry) -> Tensor {
        let n = dy.shape[0]
        precondition(dy.count == n * g.outputSize && x.count == n * g.inputSize, "conv weight map: shapes do not match geometry")
        return Direct.appliesToWeightMap(g) ? Direct.backwardWeight(dy, input: x, geometry: g) : im2colBackwardWeight(dy, input: x, geometry: g)
    }

    /// How many samples the im2col maps put side by side in one GEMM: enough for about 1024
    /// columns, so that small feature maps (deep ResNet layers: 1-196 positions) make one
    /// product per group, the weights packed once, instead of one thin product per sample.
    static func groupSize(_ g: ConvGeometry) -> Int { max(1, 1024 / max(1, g.positions)) }

    /// Runs `body(worker, scratch, samples, first, count)` over groups of up to `groupSize(g)`
    /// consecutive samples, each worker over its own range `samples` of the batch, with scratch
    /// for one group's columns and its gathered signal.
    static func forEachGroup(_ n: Int, _ g: ConvGeometry,
                             _ body: (_ worker: Int, _ scratch: UnsafeMutablePointer<Float>, _ samples: Range<Int>, _ first: Int, _ count: Int) -> Void) {
        let (p, o, k) = (g.positions, g.outChannels, g.patchSize)
        let group = groupSize(g)
        let scratch = group == 1 ? (isPointwise(g) ? 0 : k * p) : (k + o) * group * p
        forEachWorker(n, work: workPerSample(g), scratchPerWorker: scratch) { worker, buffer, samples in
            for first in stride(from: samples.lowerBound, to: samples.upperBound, by: group) {
                body(worker, buffer, samples, first, min(group, samples.upperBound - first))
            }
        }
    }

    /// The columns `[CKK, count * P]` of `count` consecutive samples starting at `input`, unfolded
    /// side by side into `buffer`; a single pointwise sample is its own columns.
    static func columns(_ input: UnsafePointer<Float>, count: Int, _ g: ConvGeometry, _ buffer: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        if count == 1 && isPointwise(g) { return input }
        for j in 0..<count { im2col(input + j * g.inputSize, g, buffer + j * g.positions, rowStride: count * g.positions) }
        return UnsafePointer(buffer)
    }

    /// Copies rows `[rows, p]` of `count` consecutive samples (each `rows * p` floats) side by
    /// side into `[rows, count * p]`.
    static func gather(_ src: UnsafePointer<Float>, rows: Int, p: Int, count: Int, into dst: UnsafeMutablePointer<Float>) {
        for j in 0..<count {
            for r in 0..<rows { (dst + r * count * p + j * p).update(from: src + (j * rows + r) * p, count: p) }
        }
    }

    /// The im2col forward map. Per group of samples: im2col side by side, then
    /// `y [O, G*P] = W [O, CKK] x col [CKK, G*P]` (straight into the output for one sample).
    static func im2colForward(_ x: Tensor, weight w: Tensor, bias: Tensor?, geometry g: ConvGeometry) -> Tensor {
        let n = x.shape[0]
        precondition(x.count == n * g.inputSize, "conv input \(x.shape) does not match geometry")
        var y = Tensor(uninitializedShape: [n, g.outChannels, g.outHeight, g.outWidth])
        let (p, o, k) = (g.positions, g.outChannels, g.patchSize)
        let biasValues = bias?.storage
        x.storage.withUnsafeBufferPointer { px in
            w.storage.withUnsafeBufferPointer { pw in
                y.storage.withUnsafeMutableBufferPointer { py in
                    let (xs, ws, ys) = (px.baseAddress!, pw.baseAddress!, py.baseAddress!)
                    forEachGroup(n, g) { _, buffer, _, first, count in
                        let columns = count * p
                        let col = Self.columns(xs + first * g.inputSize, count: count, g, buffer)
                        // One sample: into the output; a group: into scratch, then scattered.
                        let out = count > 1 ? buffer + k * columns : ys + first * g.outputSize
                        if let biasValues {
                            for c in 0..<o { (out + c * columns).update(repeating: biasValues[c], count: columns) }
                        }
                        BLAS.serialGEMM(transposeA: false, transposeB: false, m: o, n: columns, k: k, alpha: 1, a: ws, lda: k,
                                        b: col, ldb: columns, beta: biasValues == nil ? 0 : 1, c: out, ldc: columns)
                        if count > 1 {
                            for j in 0..<count {
                                let dst = ys + (first + j) * g.outputSize
                                for c in 0..<o { (dst + c * p).update(from: out + c * columns + j * p, count: p) }
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// The im2col input map. Per group: `col [CKK, G*P] = W^T x dy [O, G*P]` (dy gathered side by
    /// side), folded back onto each sample by col2im.
    static func im2colBackwardInput(_ dy: Tensor, weight w: Tensor, geometry g: ConvGeometry) -> Tensor {
        let n = dy.shape[0]
        precondition(dy.count == n * g.outputSize, "conv output feedback \(dy.shape) does not match geometry")
        var dx = Tensor(uninitializedShape: [n, g.inChannels, g.inHeight, g.inWidth])
        let (p, o, k) = (g.positions, g.outChannels, g.patchSize)
        let pointwise = isPointwise(g)
        dy.storage.withUnsafeBufferPointer { pdy in
            w.storage.withUnsafeBufferPointer { pw in
                dx.storage.withUnsafeMutableBufferPointer { pdx in
                    let (dys, ws, dxs) = (pdy.baseAddress!, pw.baseAddress!, pdx.baseAddress!)
                    forEachGroup(n, g) { _, col, _, first, count in
                        let columns = count * p
                        let out = dxs + first * g.inputSize
                        if count == 1 {
                            // Pointwise: the columns are the input itself.
                            BLAS.serialGEMM(transposeA: true, transposeB: false, m: k, n: p, k: o, alpha: 1, a: ws, lda: k,
                                            b: dys + first * g.outputSize, ldb: p, beta: 0, c: pointwise ? out : col, ldc: p)
                            if pointwise { return }
                            out.update(repeating: 0, count: g.inputSize)
                            col2im(col, g, out)
                            return
                        }
                        let gathered = col + k * columns
                        gather(dys + first * g.outputSize, rows: o, p: p, count: count, into: gathered)
                        BLAS.serialGEMM(transposeA: true, transposeB: false, m: k, n: columns, k: o, alpha: 1, a: ws, lda: k,
                                        b: gathered, ldb: columns, beta: 0, c: col, ldc: columns)
                        out.update(repeating: 0, count: count * g.inputSize)
                        for j in 0..<count { col2im(col + j * p, g, out + j * g.inputSize, rowStride: columns) }
                    }
                }
            }
        }
        return dx
    }

    /// The im2col weight map: `dW = sum over groups of dy [O, G*P] x col(x)^T [G*P, CKK]`. Each
    /// worker accumulates its groups in order into its own `[O, CKK]`; the partial sums are
    /// added in worker order.
    static func im2colBackwardWeight(_ dy: Tensor, input x: Tensor, geometry g: ConvGeometry) -> Tensor {
        let n = dy.shape[0]
        precondition(dy.count == n * g.outputSize && x.count == n * g.inputSize, "conv weight map: shapes do not match geometry")
        let (p, o, k) = (g.positions, g.outChannels, g.patchSize)
        let shape = [o, g.inChannels, g.kernelHeight, g.kernelWidth]
        if n == 0 { return Tensor(shape: shape) }
        let workers = workerCount(n, work: workPerSample(g))
        // Worker 0 accumulates into dw itself, the others into partial sums. Neither is zeroed:
        // every worker has at least one sample, and its first product writes with beta = 0
        // (zeroing them was 1.5 % of a ResNet-18 LFP step: 9.4 MB per 512-channel 3x3 layer each).
        var dw = Tensor(uninitializedShape: shape)
        var partials = [Float](unsafeUninitializedCapacity: (workers - 1) * o * k) { _, count in count = (workers - 1) * o * k }
        dy.storage.withUnsafeBufferPointer { pdy in
            x.storage.withUnsafeBufferPointer { px in
                dw.storage.withUnsafeMutableBufferPointer { pdw in
                    partials.withUnsafeMutableBufferPointer { pp in
                        let (dys, xs, dws, ps) = (pdy.baseAddress!, px.baseAddress!, pdw.baseAddress!, pp.baseAddress)
                        forEachGroup(n, g) { worker, buffer, samples, first, count in
                            let acc = worker == 0 ? dws : ps! + (worker - 1) * o * k
                            let columns = count * p
                            let col = Self.columns(xs + first * g.inputSize, count: count, g, buffer)
                            var signal = dys + first * g.outputSize
                            if count > 1 {
                                gather(signal, rows: o, p: p, count: count, into: buffer + k * columns)
                                signal = UnsafePointer(buffer + k * columns)
                            }
                            BLAS.serialGEMM(transposeA: false, transposeB: true, m: o, n: k, k: columns, alpha: 1, a: signal, lda: columns,
                                            b: col, ldb: columns, beta: first == samples.lowerBound ? 0 : 1, c: acc, ldc: k)
                        }
                        // The partial sums added in worker order, each element's additions in the
                        // same order as one loop would (the same bits), split over the cores.
                        if workers > 1 {
                            Parallel.elementwise(o * k) { range in
                                for worker in 1..<workers {
                                    let partial = ps! + (worker - 1) * o * k
                                    for i in range { dws[i] += partial[i] }
                                }
                            }
                        }
                    }
                }
            }
        }
        return dw
    }

    /// Bias map: `db[o] = sum over batch and positions of dy[n, o, :, :]`; each worker sums
    /// its own channels, over the samples in order, each sample's positions in 32 lanes
    /// (`LaneSums`; the plain loop took 6-9 % of a LeNet step at batch 32).
    public static func backwardBias(_ dy: Tensor) -> Tensor {
        let n = dy.shape[0], o = dy.shape[1]
        let positions = dy.count / max(1, n * o)
        var db = Tensor(uninitializedShape: [o])
        dy.storage.withUnsafeBufferPointer { p in
            db.storage.withUnsafeMutableBufferPointer { out in
                let (src, dst) = (p.baseAddress, out.baseAddress)
                Parallel.chunks(o, costPerItem: n * positions) { _, channels in
                    let (src, dst) = (src!, dst!)
                    for c in channels {
                        var total: Float = 0
                        for s in 0..<n { total += LaneSums.sum(src + (s * o + c) * positions, count: positions) }
                        dst[c] = total
                    }
                }
            }
        }
        return db
    }
}

extension Convolution {
    /// The instruction set of the direct convolution kernels on this CPU: "avx512", "avx2" or
    /// "baseline" (for `lfp doctor`).
    public static var directKernelSet: String { Direct.name(ofKernelSet: Direct.bestKernelSet) }

    /// The direct kernels (CLFPKernels: no im2col, 16 output channels per vector, compiled for
    /// AVX-512, AVX2 and the baseline and picked at run time). Each worker runs a kernel on its
    /// contiguous range of the batch with its own scratch; the weight map's per-worker partial
    /// sums are added in worker order, so results are bit-identical at a fixed thread count.
    enum Direct {
        /// The best kernel set this CPU runs (2 = AVX-512, 1 = AVX2, 0 = baseline).
        static let bestKernelSet = lfp_kernels_best_isa()

        /// The kernel set's name, for `lfp doctor`.
        static func name(ofKernelSet set: Int32) -> String { ["baseline", "avx2", "avx512"][Int(set)] }

        /// Where the direct kernels are used: small channel counts, where im2col + GEMM spends
        /// its time unfolding and packing rather than multiplying (measured with `lfp bench
        /// conv`: the LeNet maps 1.2-3.5x, the VGG-like 32-64-channel maps 1.1-2.3x faster).
        static func applies(_ g: ConvGeometry) -> Bool {
            g.outChannels <= 64 && g.patchSize <= 1600
        }

        /// The input map runs the forward kernel on the padded output signal: stride 1, no
        /// dilation, and either at least 16 input channels (its output channels) or the
        /// few-channel tiles, which vectorise along output rows or across samples (with 1 or 3
        /// channels most of each 16-wide channel vector would be padding: `lenet3x32.conv1`'s
        /// input map ran at 21 GFLOP/s on one core with channel vectors, 68 with row tiles).
        static func appliesToInputMap(_ g: ConvGeometry, kernelSet: Int32 = bestKernelSet) -> Bool {
            guard applies(ConvGeometry(inChannels: g.outChannels, inHeight: g.outHeight, inWidth: g.outWidth, outChannels: g.inChannels,
                                       kernel: (g.kernelHeight, g.kernelWidth)))
                && g.strideHeight == 1 && g.strideWidth == 1 && g.dilationHeight == 1 && g.dilationWidth == 1
                && g.paddingHeight < g.kernelHeight && g.paddingWidth < g.kernelWidth else { return false }
            if g.inChannels >= 16 { return true }
            var layer = geometry(g)
            var map = lfp_conv_input_map_geometry(&layer)
            return lfp_conv_forward_few_channel_tiles(kernelSet, &map) != 0
        }

        /// The weight map keeps a kernel's taps in registers: at most 5x5.
        static func appliesToWeightMap(_ g: ConvGeometry) -> Bool {
            applies(g) && g.kernelHeight * g.kernelWidth <= Int(LFP_DIRECT_MAX_TAPS)
        }

        static func geometry(_ g: ConvGeometry) -> lfp_conv_geometry {
            lfp_conv_geometry(C: Int32(g.inChannels), H: Int32(g.inHeight), W: Int32(g.inWidth),
                              O: Int32(g.outChannels), OH: Int32(g.outHeight), OW: Int32(g.outWidth),
                              KH: Int32(g.kernelHeight), KW: Int32(g.kernelWidth), SH: Int32(g.strideHeight), SW: Int32(g.strideWidth),
                              PH: Int32(g.paddingHeight), PW: Int32(g.paddingWidth), DH: Int32(g.dilationHeight), DW: Int32(g.dilationWidth))
        }

        /// Runs `body(geometry, worker, scratch, samples)` over the workers' ranges of the batch,
        /// with the scratch the direct kernel of `map` (`LFP_CONV_FORWARD`, `LFP_CONV_INPUT_MAP`,
        /// `LFP_CONV_WEIGHT_MAP`) needs for this geometry and kernel set.
        static func forEachWorker(_ n: Int, _ g: ConvGeometry, map: Int32, kernelSet: Int32,
                                  _ body: (UnsafePointer<lfp_conv_geometry>, Int, UnsafeMutablePointer<Float>, Range<Int>) -> Void) {
            withUnsafePointer(to: geometry(g)) { cg in
                let scratch = Int(lfp_conv_scratch_floats(kernelSet, map, cg))
                Convolution.forEachWorker(n, work: workPerSample(g), scratchPerWorker: scratch) { worker, scratch, samples in
                    body(cg, worker, scratch, samples)
                }
            }
        }

        /// The weights packed for the kernels: `[C*kh*kw][Opad]`, or with `flipped` (the input
        /// map's) `[O*kh*kw][Cpad]` with the kernel flipped.
        static func packed(_ w: Tensor, _ g: ConvGeometry, flipped: Bool) -> [Float] {
            let rows = flipped ? g.outChannels * g.kernelHeight * g.kernelWidth : g.patchSize
            let width = Int(lfp_conv_padded_channels(Int32(flipped ? g.inChannels : g.outChannels)))
            var cg = geometry(g)
            return [Float](unsafeUninitializedCapacity: rows * width) { buffer, count in
                w.storage.withUnsafeBufferPointer { pw in
                    if flipped { lfp_conv_pack_weights_flipped(pw.baseAddress!, &cg, buffer.baseAddress!) }
                    else { lfp_conv_pack_weights(pw.baseAddress!, &cg, buffer.baseAddress!) }
                }
                count = rows * width
            }
        }

        static func forward(_ x: Tensor, weight w: Tensor, bias: Tensor?, geometry g: ConvGeometry, kernelSet: Int32 = bestKernelSet) -> Tensor {
            let n = x.shape[0]
            var y = Tensor(uninitializedShape: [n, g.outChannels, g.outHeight, g.outWidth])
            let weights = packed(w, g, flipped: false)
            x.storage.withUnsafeBufferPointer { px in
                y.storage.withUnsafeMutableBufferPointer { py in
                    weights.withUnsafeBufferPointer { pw in
                        withBias(bias) { pb in
                            forEachWorker(n, g, map: Int32(LFP_CONV_FORWARD), kernelSet: kernelSet) { cg, _, scratch, samples in
                                lfp_conv_forward(kernelSet, px.baseAddress!, pw.baseAddress!, pb, py.baseAddress!,
                                                 Int32(samples.lowerBound), Int32(samples.upperBound), cg, scratch)
                            }
                        }
                    }
                }
            }
            return y
        }

        static func backwardInput(_ dy: Tensor, weight w: Tensor, geometry g: ConvGeometry, kernelSet: Int32 = bestKernelSet) -> Tensor {
            let n = dy.shape[0]
            var dx = Tensor(uninitializedShape: [n, g.inChannels, g.inHeight, g.inWidth])
            let weights = packed(w, g, flipped: true)
            dy.storage.withUnsafeBufferPointer { pdy in
                dx.storage.withUnsafeMutableBufferPointer { pdx in
                    weights.withUnsafeBufferPointer { pw in
                        forEachWorker(n, g, map: Int32(LFP_CONV_INPUT_MAP), kernelSet: kernelSet) { cg, _, scratch, samples in
                            lfp_conv_input_map(kernelSet, pdy.baseAddress!, pw.baseAddress!, pdx.baseAddress!,
                                               Int32(samples.lowerBound), Int32(samples.upperBound), cg, scratch)
                        }
                    }
                }
            }
            return dx
        }

        static func backwardWeight(_ dy: Tensor, input x: Tensor, geometry g: ConvGeometry, kernelSet: Int32 = bestKernelSet) -> Tensor {
            let n = dy.shape[0]
            let opad = Int(lfp_conv_padded_channels(Int32(g.outChannels))), k = g.patchSize
            let workers = max(1, workerCount(n, work: workPerSample(g)))
            // Per worker a packed [C*kh*kw][Opad] sum, added in worker order, then unpacked.
            var partials = [Float](repeating: 0, count: workers * k * opad)
            dy.storage.withUnsafeBufferPointer { pdy in
                x.storage.withUnsafeBufferPointer { px in
                    partials.withUnsafeMutableBufferPointer { pp in
                        let base = pp.baseAddress!
                        forEachWorker(n, g, map: Int32(LFP_CONV_WEIGHT_MAP), kernelSet: kernelSet) { cg, worker, scratch, samples in
                            lfp_conv_weight_map(kernelSet, px.baseAddress!, pdy.baseAddress!, base + worker * k * opad,
                                                Int32(samples.lowerBound), Int32(samples.upperBound), cg, scratch)
                        }
                    }
                }
            }
            var dw = Tensor(uninitializedShape: [g.outChannels, g.inChannels, g.kernelHeight, g.kernelWidth])
            dw.storage.withUnsafeMutableBufferPointer { pdw in
                partials.withUnsafeBufferPointer { pp in
                    for o in 0..<g.outChannels {
                        for r in 0..<k {
                            var sum: Float = 0
                            for worker in 0..<workers { sum += pp[(worker * k + r) * opad + o] }
                            pdw[o * k + r] = sum
                        }
                    }
                }
            }
            return dw
        }

        /// Calls `body` with the bias values (nil without bias).
        static func withBias<R>(_ bias: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
            guard let bias else { return body(nil) }
            return bias.storage.withUnsafeBufferPointer { body($0.baseAddress) }
        }
    }
}
