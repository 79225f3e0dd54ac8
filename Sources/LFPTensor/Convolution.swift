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

/// Convolution kernels (im2col + GEMM per sample, samples split over the cores), forward and
/// the two backward maps.
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

    /// Unfolds one input sample `[C, H, W]` into `col [C*kh*kw, OH*OW]` (zero padding).
    /// The valid rows and columns of each kernel offset are computed once, so the inner loop
    /// is a plain copy of one output row (the common case, stride 1, has no per-element test).
    public static func im2col(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ col: UnsafeMutablePointer<Float>) {
        let oh = g.outHeight, ow = g.outWidth, p = oh * ow
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

    /// Folds `col [C*kh*kw, OH*OW]` back onto one sample `[C, H, W]`, accumulating (adjoint of
    /// im2col).
    public static func col2im(_ col: UnsafePointer<Float>, _ g: ConvGeometry, _ x: UnsafeMutablePointer<Float>) {
        let oh = g.outHeight, ow = g.outWidth, p = oh * ow
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

    /// Runs `body(worker, samples)` over contiguous ranges of the batch, one range per worker;
    /// the workers call `BLAS.serialGEMM` (they are the parallelism: every phase of every
    /// sample, im2col, GEMM and col2im, runs on all cores, with no serial phase between). The split depends only on the batch and thread count, so
    /// results are bit-identical run to run at a fixed thread count.
    static func forEachSampleRange(_ n: Int, work: Int, _ body: (_ worker: Int, _ samples: Range<Int>) -> Void) {
        let workers = Parallel.chunkCount(n, costPerItem: work)
        if workers <= 1 {
            if n > 0 { body(0, 0..<n) }
            return
        }
        Parallel.chunks(n, costPerItem: work, body)
    }

    /// How many workers `forEachSampleRange` uses (for per-worker scratch).
    static func workerCount(_ n: Int, work: Int) -> Int { Parallel.chunkCount(n, costPerItem: work) }

    /// `y = conv2d(x, w) + bias`: x `[N, C, H, W]`, w `[O, C, kh, kw]`, bias `[O]` -> `[N, O, OH, OW]`.
    /// Per sample: im2col, then `y_n [O, P] = W [O, CKK] x col_n [CKK, P]` straight into the output.
    public static func forward(_ x: Tensor, weight w: Tensor, bias: Tensor?, geometry g: ConvGeometry) -> Tensor {
        let n = x.shape[0]
        precondition(x.count == n * g.inputSize, "conv input \(x.shape) does not match geometry")
        var y = Tensor(uninitializedShape: [n, g.outChannels, g.outHeight, g.outWidth])
        let (p, o, k) = (g.positions, g.outChannels, g.patchSize)
        let pointwise = isPointwise(g)
        let work = o * k * p
        let workers = workerCount(n, work: work)
        var scratch = [Float](unsafeUninitializedCapacity: pointwise ? 0 : workers * k * p) { _, c in c = pointwise ? 0 : workers * k * p }
        let biasValues = bias?.storage
        x.storage.withUnsafeBufferPointer { px in
            w.storage.withUnsafeBufferPointer { pw in
                y.storage.withUnsafeMutableBufferPointer { py in
                    scratch.withUnsafeMutableBufferPointer { pc in
                        let (xs, ws, ys, cs) = (px.baseAddress!, pw.baseAddress!, py.baseAddress!, pc.baseAddress)
                        forEachSampleRange(n, work: work) { worker, samples in
                            for s in samples {
                                let input = xs + s * g.inputSize, out = ys + s * g.outputSize
                                var col = UnsafePointer(input)
                                if !pointwise {
                                    let buffer = cs! + worker * k * p
                                    im2col(input, g, buffer)
                                    col = UnsafePointer(buffer)
                                }
                                if let biasValues {
                                    for c in 0..<o { (out + c * p).update(repeating: biasValues[c], count: p) }
                                }
                                BLAS.serialGEMM(transposeA: false, transposeB: false, m: o, n: p, k: k, alpha: 1, a: ws, lda: k,
                                          b: col, ldb: p, beta: biasValues == nil ? 0 : 1, c: out, ldc: p)
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// Input map (the transposed convolution): `dx = conv2d_input_grad(dy, w)`, `[N, C, H, W]`.
    /// Per sample: `col_n [CKK, P] = W^T x dy_n [O, P]`, folded back by col2im.
    public static func backwardInput(_ dy: Tensor, weight w: Tensor, geometry g: ConvGeometry) -> Tensor {
        let n = dy.shape[0]
        precondition(dy.count == n * g.outputSize, "conv output feedback \(dy.shape) does not match geometry")
        var dx = Tensor(uninitializedShape: [n, g.inChannels, g.inHeight, g.inWidth])
        let (p, o, k) = (g.positions, g.outChannels, g.patchSize)
        let pointwise = isPointwise(g)
        let work = o * k * p
        let workers = workerCount(n, work: work)
        var scratch = [Float](unsafeUninitializedCapacity: pointwise ? 0 : workers * k * p) { _, c in c = pointwise ? 0 : workers * k * p }
        dy.storage.withUnsafeBufferPointer { pdy in
            w.storage.withUnsafeBufferPointer { pw in
                dx.storage.withUnsafeMutableBufferPointer { pdx in
                    scratch.withUnsafeMutableBufferPointer { pc in
                        let (dys, ws, dxs, cs) = (pdy.baseAddress!, pw.baseAddress!, pdx.baseAddress!, pc.baseAddress)
                        forEachSampleRange(n, work: work) { worker, samples in
                            for s in samples {
                                let out = dxs + s * g.inputSize
                                if pointwise {
                                    BLAS.serialGEMM(transposeA: true, transposeB: false, m: k, n: p, k: o, alpha: 1, a: ws, lda: k,
                                              b: dys + s * g.outputSize, ldb: p, beta: 0, c: out, ldc: p)
                                    continue
                                }
                                let col = cs! + worker * k * p
                                BLAS.serialGEMM(transposeA: true, transposeB: false, m: k, n: p, k: o, alpha: 1, a: ws, lda: k,
                                          b: dys + s * g.outputSize, ldb: p, beta: 0, c: col, ldc: p)
                                out.update(repeating: 0, count: g.inputSize)
                                col2im(col, g, out)
                            }
                        }
                    }
                }
            }
        }
        return dx
    }

    /// Weight map: `dW = sum_n dy_n [O, P] x col(x_n)^T [P, CKK]`, shape `[O, C, kh, kw]`.
    /// Each worker accumulates its samples in order into its own `[O, CKK]`; the partial sums
    /// are added in worker order.
    public static func backwardWeight(_ dy: Tensor, input x: Tensor, geometry g: ConvGeometry) -> Tensor {
        let n = dy.shape[0]
        precondition(dy.count == n * g.outputSize && x.count == n * g.inputSize, "conv weight map: shapes do not match geometry")
        let (p, o, k) = (g.positions, g.outChannels, g.patchSize)
        var dw = Tensor(shape: [o, g.inChannels, g.kernelHeight, g.kernelWidth])
        if n == 0 { return dw }
        let pointwise = isPointwise(g)
        let work = o * k * p
        let workers = workerCount(n, work: work)
        let colSize = pointwise ? 0 : k * p
        var scratch = [Float](unsafeUninitializedCapacity: workers * colSize) { _, c in c = workers * colSize }
        // Worker 0 accumulates into dw itself, the others into partial sums.
        var partials = [Float](repeating: 0, count: (workers - 1) * o * k)
        dy.storage.withUnsafeBufferPointer { pdy in
            x.storage.withUnsafeBufferPointer { px in
                dw.storage.withUnsafeMutableBufferPointer { pdw in
                    scratch.withUnsafeMutableBufferPointer { pc in
                        partials.withUnsafeMutableBufferPointer { pp in
                            let (dys, xs, dws, cs, ps) = (pdy.baseAddress!, px.baseAddress!, pdw.baseAddress!, pc.baseAddress, pp.baseAddress)
                            forEachSampleRange(n, work: work) { worker, samples in
                                let acc = worker == 0 ? dws : ps! + (worker - 1) * o * k
                                for s in samples {
                                    let input = xs + s * g.inputSize
                                    var col = UnsafePointer(input)
                                    if !pointwise {
                                        let buffer = cs! + worker * colSize
                                        im2col(input, g, buffer)
                                        col = UnsafePointer(buffer)
                                    }
                                    BLAS.serialGEMM(transposeA: false, transposeB: true, m: o, n: k, k: p, alpha: 1, a: dys + s * g.outputSize, lda: p,
                                              b: col, ldb: p, beta: s == samples.lowerBound ? 0 : 1, c: acc, ldc: k)
                                }
                            }
                            for worker in 1..<max(1, workers) {
                                let partial = ps! + (worker - 1) * o * k
                                for i in 0..<(o * k) { dws[i] += partial[i] }
                            }
                        }
                    }
                }
            }
        }
        return dw
    }

    /// Bias map: `db[o] = sum over batch and positions of dy[n, o, :, :]`.
    public static func backwardBias(_ dy: Tensor) -> Tensor {
        let n = dy.shape[0], o = dy.shape[1]
        let positions = dy.count / max(1, n * o)
        var db = Tensor(shape: [o])
        dy.storage.withUnsafeBufferPointer { p in
            for s in 0..<n {
                for c in 0..<o {
                    let base = (s * o + c) * positions
                    var acc: Float = 0
                    for i in 0..<positions { acc += p[base + i] }
                    db.storage[c] += acc
                }
            }
        }
        return db
    }
}
