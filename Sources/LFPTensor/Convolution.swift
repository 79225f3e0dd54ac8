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
    /// Unfolds one input sample `[C, H, W]` into `col [C*kh*kw, OH*OW]` (zero padding).
    public static func im2col(_ x: UnsafePointer<Float>, _ g: ConvGeometry, _ col: UnsafeMutablePointer<Float>) {
        let oh = g.outHeight, ow = g.outWidth
        var row = 0
        for c in 0..<g.inChannels {
            let plane = x + c * g.inHeight * g.inWidth
            for ki in 0..<g.kernelHeight {
                for kj in 0..<g.kernelWidth {
                    let dst = col + row * oh * ow
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

    /// Folds `col [C*kh*kw, OH*OW]` back onto one sample `[C, H, W]`, accumulating (adjoint of im2col).
    public static func col2im(_ col: UnsafePointer<Float>, _ g: ConvGeometry, _ x: UnsafeMutablePointer<Float>) {
        let oh = g.outHeight, ow = g.outWidth
        var row = 0
        for c in 0..<g.inChannels {
            let plane = x + c * g.inHeight * g.inWidth
            for ki in 0..<g.kernelHeight {
                for kj in 0..<g.kernelWidth {
                    let src = col + row * oh * ow
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

    /// `y = conv2d(x, w) + bias`: x `[N, C, H, W]`, w `[O, C, kh, kw]`, bias `[O]` -> `[N, O, OH, OW]`.
    /// Samples are processed in parallel chunks, each with its own im2col buffer.
    public static func forward(_ x: Tensor, weight w: Tensor, bias: Tensor?, geometry g: ConvGeometry) -> Tensor {
        let n = x.shape[0]
        precondition(x.count == n * g.inputSize, "conv input \(x.shape) does not match geometry")
        var y = Tensor(shape: [n, g.outChannels, g.outHeight, g.outWidth])
        let positions = g.positions
        let cost = g.patchSize * positions * g.outChannels
        x.storage.withUnsafeBufferPointer { px in
            w.storage.withUnsafeBufferPointer { pw in
                y.storage.withUnsafeMutableBufferPointer { py in
                    let (xs, ws, ys) = (px.baseAddress!, pw.baseAddress!, py.baseAddress!)
                    Parallel.chunks(n, costPerItem: cost) { _, range in
                        var col = [Float](repeating: 0, count: g.patchSize * positions)
                        col.withUnsafeMutableBufferPointer { pc in
                            for s in range {
                                im2col(xs + s * g.inputSize, g, pc.baseAddress!)
                                let out = ys + s * g.outputSize
                                if let bias {
                                    for o in 0..<g.outChannels {
                                        (out + o * positions).update(repeating: bias.storage[o], count: positions)
                                    }
                                }
                                BLAS.gemm(transposeA: false, transposeB: false, m: g.outChannels, n: positions, k: g.patchSize,
                                          alpha: 1, a: ws, lda: g.patchSize, b: pc.baseAddress!, ldb: positions,
                                          beta: bias == nil ? 0 : 1, c: out, ldc: positions)
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// Input map (the transposed convolution): `dx = conv2d_input_grad(dy, w)`, `[N, C, H, W]`.
    public static func backwardInput(_ dy: Tensor, weight w: Tensor, geometry g: ConvGeometry) -> Tensor {
        let n = dy.shape[0]
        var dx = Tensor(shape: [n, g.inChannels, g.inHeight, g.inWidth])
        let positions = g.positions
        let cost = g.patchSize * positions * g.outChannels
        dy.storage.withUnsafeBufferPointer { pdy in
            w.storage.withUnsafeBufferPointer { pw in
                dx.storage.withUnsafeMutableBufferPointer { pdx in
                    let (dys, ws, dxs) = (pdy.baseAddress!, pw.baseAddress!, pdx.baseAddress!)
                    Parallel.chunks(n, costPerItem: cost) { _, range in
                        var col = [Float](repeating: 0, count: g.patchSize * positions)
                        col.withUnsafeMutableBufferPointer { pc in
                            for s in range {
                                // col = W^T [CKK, O] x dy_s [O, P]
                                BLAS.gemm(transposeA: true, transposeB: false, m: g.patchSize, n: positions, k: g.outChannels,
                                          alpha: 1, a: ws, lda: g.patchSize, b: dys + s * g.outputSize, ldb: positions,
                                          beta: 0, c: pc.baseAddress!, ldc: positions)
                                col2im(pc.baseAddress!, g, dxs + s * g.inputSize)
                            }
                        }
                    }
                }
            }
        }
        return dx
    }

    /// Weight map: `dW = sum_n dy_n [O, P] x col(x_n)^T [P, CKK]`, shape `[O, C, kh, kw]`.
    /// Each parallel chunk accumulates its own partial sum; partials are added in chunk order.
    public static func backwardWeight(_ dy: Tensor, input x: Tensor, geometry g: ConvGeometry) -> Tensor {
        let n = dy.shape[0]
        let positions = g.positions
        let weightCount = g.outChannels * g.patchSize
        let cost = g.patchSize * positions * g.outChannels
        let chunks = Parallel.chunkCount(n, costPerItem: cost)
        var partials = [Float](repeating: 0, count: chunks * weightCount)
        dy.storage.withUnsafeBufferPointer { pdy in
            x.storage.withUnsafeBufferPointer { px in
                partials.withUnsafeMutableBufferPointer { pp in
                    let (dys, xs, ps) = (pdy.baseAddress!, px.baseAddress!, pp.baseAddress!)
                    Parallel.chunks(n, costPerItem: cost) { chunk, range in
                        var col = [Float](repeating: 0, count: g.patchSize * positions)
                        col.withUnsafeMutableBufferPointer { pc in
                            for s in range {
                                im2col(xs + s * g.inputSize, g, pc.baseAddress!)
                                BLAS.gemm(transposeA: false, transposeB: true, m: g.outChannels, n: g.patchSize, k: positions,
                                          alpha: 1, a: dys + s * g.outputSize, lda: positions,
                                          b: pc.baseAddress!, ldb: positions,
                                          beta: s == range.lowerBound ? 0 : 1, c: ps + chunk * weightCount, ldc: g.patchSize)
                            }
                        }
                    }
                }
            }
        }
        var dw = Tensor(shape: [g.outChannels, g.inChannels, g.kernelHeight, g.kernelWidth])
        dw.storage.withUnsafeMutableBufferPointer { d in
            partials.withUnsafeBufferPointer { p in
                for c in 0..<chunks {
                    for i in 0..<weightCount { d[i] += p[c * weightCount + i] }
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
