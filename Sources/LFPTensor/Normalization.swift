/// Per-channel kernels of batch normalisation over `[N, C]` or `[N, C, H, W]` tensors: the
/// channel is dimension 1, every other dimension is summed over (`N * H * W` values per channel).
public enum ChannelKernels {
    /// `(batch, channels, positions)` of a `[N, C, ...]` tensor.
    @inlinable public static func layout(_ shape: [Int]) -> (n: Int, c: Int, positions: Int) {
        precondition(shape.count >= 2, "per-channel kernels need [N, C, ...], got \(shape)")
        return (shape[0], shape[1], shape.dropFirst(2).reduce(1, *))
    }

    /// Mean and biased variance of every channel (two passes, each plane summed in 32 lanes
    /// (`LaneSums`) and the planes accumulated in Double; channels split over the cores).
    public static func statistics(_ x: Tensor) -> (mean: [Float], variance: [Float]) {
        let (n, c, p) = layout(x.shape)
        var mean = [Float](repeating: 0, count: c), variance = [Float](repeating: 0, count: c)
        let count = Double(max(1, n * p))
        x.storage.withUnsafeBufferPointer { px0 in
            mean.withUnsafeMutableBufferPointer { pm0 in
                variance.withUnsafeMutableBufferPointer { pv0 in
                    let (px, pm, pv) = (px0.baseAddress, pm0.baseAddress!, pv0.baseAddress!)
                    Parallel.chunks(c, costPerItem: 2 * n * p) { _, channels in
                        guard let px else { return }
                        for ch in channels {
                            var s = 0.0
                            for i in 0..<n {
                                s += Double(LaneSums.sum(px + (i * c + ch) * p, count: p))
                            }
                            let m = Float(s / count)
                            var q = 0.0
                            for i in 0..<n {
                                q += Double(LaneSums.squaredDeviation(px + (i * c + ch) * p, count: p, from: m))
                            }
                            pm[ch] = m
                            pv[ch] = Float(q / count)
                        }
                    }
                }
            }
        }
        return (mean, variance)
    }

    /// `y = x * scale[c] + shift[c]` (shift may be nil).
    public static func affine(_ x: Tensor, scale: [Float], shift: [Float]?) -> Tensor {
        let (n, c, p) = layout(x.shape)
        precondition(scale.count == c && (shift == nil || shift!.count == c), "per-channel affine: \(c) channels, \(scale.count) scales")
        var y = Tensor(uninitializedShape: x.shape)
        x.storage.withUnsafeBufferPointer { px0 in
            y.storage.withUnsafeMutableBufferPointer { py0 in
                let (px, py) = (px0.baseAddress, py0.baseAddress)
                Parallel.chunks(n * c, costPerItem: p) { _, planes in
                    let (px, py) = (px!, py!)
                    for plane in planes {
                        let ch = plane % c, base = plane * p
                        let a = scale[ch], b = shift?[ch] ?? 0
                        for k in 0..<p { py[base + k] = px[base + k] * a + b }
                    }
                }
            }
        }
        return y
    }

    /// `a * scaleA[c] + b * scaleB[c] + shift[c]` in one pass (BatchNorm's input gradient
    /// through the batch statistics), times `times` elementwise where given (LFP's "gradient
    /// times input").
    public static func combine(_ a: Tensor, scale sa: [Float], _ b: Tensor, scale sb: [Float], shift: [Float],
                               times m: Tensor? = nil) -> Tensor {
        let (n, c, p) = layout(a.shape)
        precondition(b.shape == a.shape && sa.count == c && sb.count == c && shift.count == c && (m == nil || m!.shape == a.shape),
                     "per-channel combine: shapes differ")
        var y = Tensor(uninitializedShape: a.shape)
        let factor = m ?? a  // read only where `m` is given
        a.storage.withUnsafeBufferPointer { pa0 in
            b.storage.withUnsafeBufferPointer { pb0 in
                factor.storage.withUnsafeBufferPointer { pm0 in
                    y.storage.withUnsafeMutableBufferPointer { py0 in
                        let (pa, pb, pm, py) = (pa0.baseAddress, pb0.baseAddress, pm0.baseAddress, py0.baseAddress)
                        let multiplies = m != nil
                        Parallel.chunks(n * c, costPerItem: 2 * p) { _, planes in
                            let (pa, pb, pm, py) = (pa!, pb!, pm!, py!)
                            for plane in planes {
                                let ch = plane % c, base = plane * p
                                let (u, v, w) = (sa[ch], sb[ch], shift[ch])
                                if multiplies {
                                    for k in 0..<p { py[base + k] = (pa[base + k] * u + pb[base + k] * v + w) * pm[base + k] }
                                } else {
                                    for k in 0..<p { py[base + k] = pa[base + k] * u + pb[base + k] * v + w }
                                }
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// `sum over batch and positions of x * y`, per channel (`y` nil: of `x`); channels split
    /// over the cores, each plane summed in 32 lanes (`LaneSums`), the planes in Double.
    public static func channelSums(_ x: Tensor, times y: Tensor? = nil) -> [Float] {
        let (n, c, p) = layout(x.shape)
        precondition(y == nil || y!.shape == x.shape, "channel sums: \(x.shape) and \(y!.shape) differ")
        var sums = [Float](repeating: 0, count: c)
        let other = y ?? x
        x.storage.withUnsafeBufferPointer { px0 in
            other.storage.withUnsafeBufferPointer { py0 in
                sums.withUnsafeMutableBufferPointer { ps0 in
                    let (px, py, ps) = (px0.baseAddress, py0.baseAddress, ps0.baseAddress!)
                    let product = y != nil
                    Parallel.chunks(c, costPerItem: n * p) { _, channels in
                        guard let px, let py else { return }
                        for ch in channels {
                            var total = 0.0
                            for i in 0..<n {
                                let a = px + (i * c + ch) * p, b = py + (i * c + ch) * p
                                total += Double(product ? LaneSums.dot(a, b, count: p) : LaneSums.sum(a, count: p))
                            }
                            ps[ch] = Float(total)
                        }
                    }
                }
            }
        }
        return sums
    }
}
