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

/// Convolution kernels (im2col + GEMM), forward and the two backward maps.
public enum Convolution {
    /// Unfolds one input sample `[C, H, W]` into `col [C*kh*kw, OH*OW]` (zero padding); row r
    /// starts at `col + r * rowStride` (default: packed), so several samples can sit side by side.
    public static func im2col(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ col: UnsafeMutablePointer<Float>, rowStride: Int? = nil) {
        let oh = g.outHeight, ow = g.outWidth
        let stride = rowStride ?? oh * ow
        var row = 0
        for c in 0..<g.inChannels {
            let plane = x + c * g.inHeight * g.inWidth
            for ki in 0..<g.kernelHeight {
                for kj in 0..<g.kernelWidth {
                    let dst = col + row * stride
                    for oy in 0..<oh {
                        let iy = oy * g.strideHeight - g.paddingHeight + ki * g.dilationHeight
                        let line = dst + oy * ow
                        if iy < 0 || iy >= g.inHeight {
                            line.update(repeating: 0, count: ow)
                            continue
                        }
                        let src = plane + iy * g.inWidth
                        let offset = kj * g.dilationWidth - g.paddingWidth
                        if g.strideWidth == 1 {
                            // Contiguous run: copy the valid middle, zero the edges.
                            let lo = max(0, -offset), hi = min(ow, g.inWidth - offset)
                            if lo > 0 { line.update(repeating: 0, count: min(lo, ow)) }
                            if hi > lo { (line + lo).update(from: src + lo + offset, count: hi - lo) }
                            if hi < ow { (line + max(hi, 0)).update(repeating: 0, count: ow - max(hi, 0)) }
                        } else {
                            for ox in 0..<ow {
                                let ix = ox * g.strideWidth + offset
                                line[ox] = (ix >= 0 && ix < g.inWidth) ? src[ix] : 0
                            }
                        }
                    }
                    row += 1
                }
            }
        }
    }

    /// Folds `col [C*kh*kw, OH*OW]` back onto one sample `[C, H, W]`, accumulating (adjoint of
    /// im2col, with the same `rowStride`).
    public static func col2im(_ col: UnsafePointer<Float>, _ g: ConvGeometry, _ x: UnsafeMutablePointer<Float>, rowStride: Int? = nil) {
        let oh = g.outHeight, ow = g.outWidth
        let stride = rowStride ?? oh * ow
        var row = 0
        for c in 0..<g.inChannels {
            let plane = x + c * g.inHeight * g.inWidth
            for ki in 0..<g.kernelHeight {
                for kj in 0..<g.kernelWidth {
                    let src = col + row * stride
                    for oy in 0..<oh {
                        let iy = oy * g.strideHeight - g.paddingHeight + ki * g.dilationHeight
                        if iy < 0 || iy >= g.inHeight { continue }
                        let dst = plane + iy * g.inWidth
                        let line = src + oy * ow
                        let offset = kj * g.dilationWidth - g.paddingWidth
                        if g.strideWidth == 1 {
                            // Contiguous run: add the valid middle.
                            let lo = max(0, -offset), hi = min(ow, g.inWidth - offset)
                            if hi > lo {
                                let d = dst + offset, l = line
                                for ox in lo..<hi { d[ox] += l[ox] }
                            }
                        } else {
                            for ox in 0..<ow {
                                let ix = ox * g.strideWidth + offset
                                if ix >= 0 && ix < g.inWidth { dst[ix] += line[ox] }
                            }
                        }
                    }
                    row += 1
                }
            }
        }
    }

    /// Samples per GEMM: the im2col columns of a chunk of samples sit side by side, so one
    /// `[O, CKK] x [CKK, S*P]` product replaces S small ones (about 8 MB of columns per chunk;
    /// the chunking depends only on the geometry, not on the thread count).
    static func samplesPerChunk(_ g: ConvGeometry, batch: Int) -> Int {
        max(1, min(batch, (1 << 21) / max(1, g.patchSize * g.positions)))
    }

    /// Runs `body(firstSample, sampleCount)` over chunks of the batch.
    private static func forEachChunk(_ n: Int, _ g: ConvGeometry, _ body: (Int, Int) -> Void) {
        let size = samplesPerChunk(g, batch: n)
        var start = 0
        while start < n {
            body(start, min(size, n - start))
            start += size
        }
    }

    /// `y = conv2d(x, w) + bias`: x `[N, C, H, W]`, w `[O, C, kh, kw]`, bias `[O]` -> `[N, O, OH, OW]`.
    /// Per chunk of samples: im2col (threads over samples), one GEMM (BLAS threads), scatter.
    public static func forward(_ x: Tensor, weight w: Tensor, bias: Tensor?, geometry g: ConvGeometry) -> Tensor {
        let n = x.shape[0]
        precondition(x.count == n * g.inputSize, "conv input \(x.shape) does not match geometry")
        var y = Tensor(uninitializedShape: [n, g.outChannels, g.outHeight, g.outWidth])
        let (p, o, k) = (g.positions, g.outChannels, g.patchSize)
        let chunk = samplesPerChunk(g, batch: n)
        var col = [Float](unsafeUninitializedCapacity: k * chunk * p) { _, c in c = k * chunk * p }
        var out = [Float](unsafeUninitializedCapacity: o * chunk * p) { _, c in c = o * chunk * p }
        let biasValues = bias?.storage
        x.storage.withUnsafeBufferPointer { px in
            w.storage.withUnsafeBufferPointer { pw in
                y.storage.withUnsafeMutableBufferPointer { py in
                    col.withUnsafeMutableBufferPointer { pc in
                        out.withUnsafeMutableBufferPointer { po in
                            let (xs, ws, ys, cs, os) = (px.baseAddress!, pw.baseAddress!, py.baseAddress!, pc.baseAddress!, po.baseAddress!)
                            forEachChunk(n, g) { first, count in
                                let ld = count * p
                                Parallel.chunks(count, costPerItem: k * p) { _, range in
                                    for s in range { im2col(xs + (first + s) * g.inputSize, g, cs + s * p, rowStride: ld) }
                                }
                                BLAS.gemm(transposeA: false, transposeB: false, m: o, n: ld, k: k, alpha: 1, a: ws, lda: k,
                                          b: cs, ldb: ld, beta: 0, c: os, ldc: ld)
                                Parallel.chunks(count, costPerItem: o * p) { _, range in
                                    for s in range {
                                        let dst = ys + (first + s) * g.outputSize
                                        for c in 0..<o {
                                            let src = os + c * ld + s * p, line = dst + c * p
                                            let b = biasValues?[c] ?? 0
                                            for i in 0..<p { line[i] = src[i] + b }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// Copies `dy[first ..< first + count]` (`[S, O, P]`) into `dyT [O, S*P]`.
    private static func gatherOutput(_ dy: UnsafePointer<Float>, _ g: ConvGeometry, first: Int, count: Int, into t: UnsafeMutablePointer<Float>) {
        let (p, o) = (g.positions, g.outChannels)
        let ld = count * p
        Parallel.chunks(count, costPerItem: o * p) { _, range in
            for s in range {
                let src = dy + (first + s) * g.outputSize
                for c in 0..<o { (t + c * ld + s * p).update(from: src + c * p, count: p) }
            }
        }
    }

    /// Input map (the transposed convolution): `dx = conv2d_input_grad(dy, w)`, `[N, C, H, W]`.
    public static func backwardInput(_ dy: Tensor, weight w: Tensor, geometry g: ConvGeometry) -> Tensor {
        let n = dy.shape[0]
        var dx = Tensor(shape: [n, g.inChannels, g.inHeight, g.inWidth])
        let (p, o, k) = (g.positions, g.outChannels, g.patchSize)
        let chunk = samplesPerChunk(g, batch: n)
        var col = [Float](unsafeUninitializedCapacity: k * chunk * p) { _, c in c = k * chunk * p }
        var dyT = [Float](unsafeUninitializedCapacity: o * chunk * p) { _, c in c = o * chunk * p }
        dy.storage.withUnsafeBufferPointer { pdy in
            w.storage.withUnsafeBufferPointer { pw in
                dx.storage.withUnsafeMutableBufferPointer { pdx in
                    col.withUnsafeMutableBufferPointer { pc in
                        dyT.withUnsafeMutableBufferPointer { pt in
                            let (dys, ws, dxs, cs, ts) = (pdy.baseAddress!, pw.baseAddress!, pdx.baseAddress!, pc.baseAddress!, pt.baseAddress!)
                            forEachChunk(n, g) { first, count in
                                let ld = count * p
                                gatherOutput(dys, g, first: first, count: count, into: ts)
                                // col = W^T [CKK, O] x dyT [O, S*P]
                                BLAS.gemm(transposeA: true, transposeB: false, m: k, n: ld, k: o, alpha: 1, a: ws, lda: k,
                                          b: ts, ldb: ld, beta: 0, c: cs, ldc: ld)
                                Parallel.chunks(count, costPerItem: k * p) { _, range in
                                    for s in range { col2im(cs + s * p, g, dxs + (first + s) * g.inputSize, rowStride: ld) }
                                }
                            }
                        }
                    }
                }
            }
        }
        return dx
    }

    /// Weight map: `dW = sum_n dy_n [O, P] x col(x_n)^T [P, CKK]`, shape `[O, C, kh, kw]`:
    /// one GEMM per chunk, `dyT [O, S*P] x col^T [S*P, CKK]`, accumulated in chunk order.
    public static func backwardWeight(_ dy: Tensor, input x: Tensor, geometry g: ConvGeometry) -> Tensor {
        let n = dy.shape[0]
        var dw = Tensor(shape: [g.outChannels, g.inChannels, g.kernelHeight, g.kernelWidth])
        let (p, o, k) = (g.positions, g.outChannels, g.patchSize)
        let chunk = samplesPerChunk(g, batch: n)
        var col = [Float](unsafeUninitializedCapacity: k * chunk * p) { _, c in c = k * chunk * p }
        var dyT = [Float](unsafeUninitializedCapacity: o * chunk * p) { _, c in c = o * chunk * p }
        dy.storage.withUnsafeBufferPointer { pdy in
            x.storage.withUnsafeBufferPointer { px in
                dw.storage.withUnsafeMutableBufferPointer { pdw in
                    col.withUnsafeMutableBufferPointer { pc in
                        dyT.withUnsafeMutableBufferPointer { pt in
                            let (dys, xs, dws, cs, ts) = (pdy.baseAddress!, px.baseAddress!, pdw.baseAddress!, pc.baseAddress!, pt.baseAddress!)
                            forEachChunk(n, g) { first, count in
                                let ld = count * p
                                gatherOutput(dys, g, first: first, count: count, into: ts)
                                Parallel.chunks(count, costPerItem: k * p) { _, range in
                                    for s in range { im2col(xs + (first + s) * g.inputSize, g, cs + s * p, rowStride: ld) }
                                }
                                BLAS.gemm(transposeA: false, transposeB: true, m: o, n: k, k: ld, alpha: 1, a: ts, lda: ld,
                                          b: cs, ldb: ld, beta: first == 0 ? 0 : 1, c: dws, ldc: k)
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
