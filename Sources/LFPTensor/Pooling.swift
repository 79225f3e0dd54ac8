/// The geometry of a 2-D pooling window over `[N, C, H, W]` (PyTorch semantics, floor mode).
public struct PoolGeometry: Sendable, Equatable {
    public var channels, inHeight, inWidth: Int
    public var kernelHeight, kernelWidth: Int
    public var strideHeight, strideWidth: Int
    public var paddingHeight, paddingWidth: Int

    public init(channels: Int, inHeight: Int, inWidth: Int, kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int) = (0, 0)) {
        self.channels = channels; self.inHeight = inHeight; self.inWidth = inWidth
        (kernelHeight, kernelWidth) = kernel
        (strideHeight, strideWidth) = stride
        (paddingHeight, paddingWidth) = padding
    }

    public var outHeight: Int { (inHeight + 2 * paddingHeight - kernelHeight) / strideHeight + 1 }
    public var outWidth: Int { (inWidth + 2 * paddingWidth - kernelWidth) / strideWidth + 1 }
}

/// Max and average pooling, forward and backward.
public enum Pooling {
    /// Max pooling. Returns the output and, for every output element, the flat index of the
    /// winning input element within its `[H, W]` plane (padding never wins; ties go to the first).
    public static func maxForward(_ x: Tensor, geometry g: PoolGeometry) -> (output: Tensor, argmax: [Int32]) {
        let n = x.shape[0]
        let oh = g.outHeight, ow = g.outWidth
        var y = Tensor(uninitializedShape: [n, g.channels, oh, ow])  // every element is written
        var argmax = [Int32](unsafeUninitializedCapacity: y.count) { _, c in c = y.count }
        // Geometry in locals: the compiler keeps them in registers across the stores below.
        let (ih, iw, kh, kw) = (g.inHeight, g.inWidth, g.kernelHeight, g.kernelWidth)
        let (sh, sw, ph, pw) = (g.strideHeight, g.strideWidth, g.paddingHeight, g.paddingWidth)
        x.storage.withUnsafeBufferPointer { px0 in
            y.storage.withUnsafeMutableBufferPointer { py0 in
                argmax.withUnsafeMutableBufferPointer { pa0 in
                    let (px, py, pa) = (px0.baseAddress!, py0.baseAddress!, pa0.baseAddress!)
                    Parallel.chunks(n * g.channels, costPerItem: oh * ow * kh * kw) { _, planes in
                        for plane in planes {
                            let src = px + plane * ih * iw
                            let dst = py + plane * oh * ow, arg = pa + plane * oh * ow
                            if kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 {
                                // The common 2x2/2 window, branch-free (selects instead of jumps:
                                // argmax branches on random data mispredict half the time).
                                for oy in 0..<oh {
                                    let top = 2 * oy * iw
                                    for ox in 0..<ow {
                                        let i00 = top + 2 * ox, i01 = i00 + 1, i10 = i00 + iw, i11 = i10 + 1
                                        var best = src[i00], index = i00
                                        let v01 = src[i01], v10 = src[i10], v11 = src[i11]
                                        index = v01 > best ? i01 : index; best = v01 > best ? v01 : best
                                        index = v10 > best ? i10 : index; best = v10 > best ? v10 : best
                                        index = v11 > best ? i11 : index; best = v11 > best ? v11 : best
                                        dst[oy * ow + ox] = best
                                        arg[oy * ow + ox] = Int32(truncatingIfNeeded: index)
                                    }
                                }
                                continue
                            }
                            for oy in 0..<oh {
                                let y0 = oy * sh - ph
                                let i0 = max(0, y0), i1 = min(ih, y0 + kh)
                                for ox in 0..<ow {
                                    let x0 = ox * sw - pw
                                    let j0 = max(0, x0), j1 = min(iw, x0 + kw)
                                    // The first element of the (clipped) window starts the search;
                                    // ties keep the first; NaN wins (it propagates, as in PyTorch).
                                    var bestIndex = i0 * iw + j0
                                    var best = src[bestIndex]
                                    for i in i0..<i1 {
                                        let row = i * iw
                                        for j in j0..<j1 {
                                            let v = src[row + j]
                                            if v > best || (v != v && best == best) { best = v; bestIndex = row + j }
                                        }
                                    }
                                    dst[oy * ow + ox] = best
                                    arg[oy * ow + ox] = Int32(truncatingIfNeeded: bestIndex)
                                }
                            }
                        }
                    }
                }
            }
        }
        return (y, argmax)
    }

    /// Routes `dy` to the winners recorded by `maxForward`: the result has the input's shape.
    public static func maxBackward(_ dy: Tensor, argmax: [Int32], inputShape: [Int], geometry g: PoolGeometry) -> Tensor {
        var dx = Tensor(uninitializedShape: inputShape)
        let planeIn = g.inHeight * g.inWidth, planeOut = g.outHeight * g.outWidth
        let planes = dy.count / max(1, planeOut)
        precondition(dx.count == planes * planeIn, "max-pool backward: \(dy.shape) does not fit input \(inputShape)")
        dy.storage.withUnsafeBufferPointer { pdy0 in
            dx.storage.withUnsafeMutableBufferPointer { pdx0 in
                argmax.withUnsafeBufferPointer { pa0 in
                    let (pdy, pdx, pa) = (pdy0.baseAddress, pdx0.baseAddress, pa0.baseAddress)
                    // Each plane of dx is zeroed and filled by one worker.
                    Parallel.chunks(planes, costPerItem: planeIn + planeOut) { _, range in
                        let (pdx, pdy, pa) = (pdx!, pdy!, pa!)
                        for plane in range {
                            let out = pdx + plane * planeIn
                            out.update(repeating: 0, count: planeIn)
                            for k in 0..<planeOut {
                                let i = plane * planeOut + k
                                out[Int(pa[i])] += pdy[i]
                            }
                        }
                    }
                }
            }
        }
        return dx
    }

    /// Divisor of output position (oy, ox): `kh*kw` when padding counts, else the number of
    /// window elements inside the input.
    @inline(__always)
    static func divisor(_ g: PoolGeometry, _ oy: Int, _ ox: Int, countIncludePad: Bool) -> Float {
        if countIncludePad {
            // PyTorch clips the window to the padded input before counting.
            let y0 = oy * g.strideHeight - g.paddingHeight, x0 = ox * g.strideWidth - g.paddingWidth
            let y1 = min(y0 + g.kernelHeight, g.inHeight + g.paddingHeight)
            let x1 = min(x0 + g.kernelWidth, g.inWidth + g.paddingWidth)
            return Float((y1 - y0) * (x1 - x0))
        }
        let y0 = oy * g.strideHeight - g.paddingHeight, x0 = ox * g.strideWidth - g.paddingWidth
        let h = min(g.inHeight, y0 + g.kernelHeight) - max(0, y0)
        let w = min(g.inWidth, x0 + g.kernelWidth) - max(0, x0)
        return Float(max(1, h * w))
    }

    /// Average pooling forward: `y = sum(window) / divisor`.
    public static func averageForward(_ x: Tensor, geometry g: PoolGeometry, countIncludePad: Bool = true) -> Tensor {
        let n = x.shape[0]
        let oh = g.outHeight, ow = g.outWidth
        var y = Tensor(shape: [n, g.channels, oh, ow])
        x.storage.withUnsafeBufferPointer { px in
            y.storage.withUnsafeMutableBufferPointer { py in
                for plane in 0..<(n * g.channels) {
                    let src = px.baseAddress! + plane * g.inHeight * g.inWidth
                    for oy in 0..<oh {
                        let y0 = oy * g.strideHeight - g.paddingHeight
                        for ox in 0..<ow {
                            let x0 = ox * g.strideWidth - g.paddingWidth
                            var acc: Float = 0
                            for i in max(0, y0)..<min(g.inHeight, y0 + g.kernelHeight) {
                                for j in max(0, x0)..<min(g.inWidth, x0 + g.kernelWidth) { acc += src[i * g.inWidth + j] }
                            }
                            py[(plane * oh + oy) * ow + ox] = acc / divisor(g, oy, ox, countIncludePad: countIncludePad)
                        }
                    }
                }
            }
        }
        return y
    }

    /// Average pooling backward (the transposed map): spreads `dy / divisor` over each window.
    public static func averageBackward(_ dy: Tensor, inputShape: [Int], geometry g: PoolGeometry, countIncludePad: Bool = true) -> Tensor {
        var dx = Tensor(shape: inputShape)
        let oh = g.outHeight, ow = g.outWidth
        let planes = dy.count / max(1, oh * ow)
        dy.storage.withUnsafeBufferPointer { pdy in
            dx.storage.withUnsafeMutableBufferPointer { pdx in
                for plane in 0..<planes {
                    let dst = pdx.baseAddress! + plane * g.inHeight * g.inWidth
                    for oy in 0..<oh {
                        let y0 = oy * g.strideHeight - g.paddingHeight
                        for ox in 0..<ow {
                            let x0 = ox * g.strideWidth - g.paddingWidth
                            let v = pdy[(plane * oh + oy) * ow + ox] / divisor(g, oy, ox, countIncludePad: countIncludePad)
                            for i in max(0, y0)..<min(g.inHeight, y0 + g.kernelHeight) {
                                for j in max(0, x0)..<min(g.inWidth, x0 + g.kernelWidth) { dst[i * g.inWidth + j] += v }
                            }
                        }
                    }
                }
            }
        }
        return dx
    }
}

/// Adaptive average pooling (PyTorch's `AdaptiveAvgPool2d`): output cell `(i, j)` averages input
/// rows `floor(i*H/oh) ..< ceil((i+1)*H/oh)` and the same for columns.
public enum AdaptivePooling {
    @inline(__always) static func window(_ i: Int, _ inSize: Int, _ outSize: Int) -> Range<Int> {
        (i * inSize / outSize)..<(((i + 1) * inSize + outSize - 1) / outSize)
    }

    /// `[N, C, H, W] -> [N, C, oh, ow]`.
    public static func averageForward(_ x: Tensor, outHeight oh: Int, outWidth ow: Int) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var y = Tensor(uninitializedShape: [n, c, oh, ow])
        x.storage.withUnsafeBufferPointer { px0 in
            y.storage.withUnsafeMutableBufferPointer { py0 in
                let (px, py) = (px0.baseAddress, py0.baseAddress)
                Parallel.chunks(n * c, costPerItem: h * w) { _, planes in
                    let (px, py) = (px!, py!)
                    for plane in planes {
                        let src = px + plane * h * w, dst = py + plane * oh * ow
                        for oy in 0..<oh {
                            let rows = window(oy, h, oh)
                            for ox in 0..<ow {
                                let cols = window(ox, w, ow)
                                var acc: Float = 0
                                for i in rows { for j in cols { acc += src[i * w + j] } }
                                dst[oy * ow + ox] = acc / Float(rows.count * cols.count)
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// The transposed map: spreads `dy / window size` over each window; input-shaped.
    public static func averageBackward(_ dy: Tensor, inputShape: [Int]) -> Tensor {
        let (n, c, h, w) = (inputShape[0], inputShape[1], inputShape[2], inputShape[3])
        let (oh, ow) = (dy.shape[2], dy.shape[3])
        var dx = Tensor(shape: inputShape)
        dy.storage.withUnsafeBufferPointer { pdy0 in
            dx.storage.withUnsafeMutableBufferPointer { pdx0 in
                let (pdy, pdx) = (pdy0.baseAddress, pdx0.baseAddress)
                Parallel.chunks(n * c, costPerItem: h * w) { _, planes in
                    let (pdy, pdx) = (pdy!, pdx!)
                    for plane in planes {
                        let src = pdy + plane * oh * ow, dst = pdx + plane * h * w
                        for oy in 0..<oh {
                            let rows = window(oy, h, oh)
                            for ox in 0..<ow {
                                let cols = window(ox, w, ow)
                                let v = src[oy * ow + ox] / Float(rows.count * cols.count)
                                for i in rows { for j in cols { dst[i * w + j] += v } }
                            }
                        }
                    }
                }
            }
        }
        return dx
    }
}
