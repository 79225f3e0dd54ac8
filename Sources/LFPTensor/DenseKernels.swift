import CLFPKernels

/// Dense-layer products for short batches (at most `maximumBatch` samples), where BLAS spends
/// more time copying and re-reading the weights than multiplying (CLFPKernels, `lfp_dense_*`:
/// a tile of the product stays in registers over the whole depth, the weights are read once).
///
/// - `weightFeedback`: the parameter feedback of an LFP rule, `F(W) = scale * |W| ⊙ (S^T A)`
///   (LFP-MATH.md section 3), in one pass over `W` and the result. Through BLAS it is a pass
///   that zeroes the result, the product reading and writing it, and the `|W|` epilogue reading
///   the result and `W` and writing the result again. A Linear layer takes it for products
///   that the library's sgemm does not run with the same epilogue fused
///   (`BLAS.fusesMagnitude`: below 16 M multiply-adds, without AVX-512, with `LFP_GEMM=blas`,
///   or with Accelerate); where that sgemm
///   runs, it measured faster, short batches included (`AffineMap.weightFeedback`).
/// - `forward`: `A W^T + b` without BLAS's copy of all of `W` into its packed layout.
///
/// Larger batches return nil: BLAS's blocking wins there.
public enum DenseKernels {
    /// The largest batch (the short side) these kernels take.
    public static let maximumBatch = 64

    /// `scale * |weight| ⊙ (s^T a)` for `s [K, M]`, `a [K, N]`, `weight [M, N]`, and whether every
    /// value is finite; nil when `K` is above `maximumBatch`.
    public static func weightFeedback(_ s: Tensor, input a: Tensor, weight: Tensor, scale: Float) -> (feedback: Tensor, isFinite: Bool)? {
        weightFeedback(s, input: a, weight: weight, scale: scale, kernelSet: Convolution.Direct.bestKernelSet)
    }

    /// `a w^T + bias` for `a [N, K]`, `w [M, K]`; nil when `N` is above `maximumBatch`.
    public static func forward(_ a: Tensor, weight w: Tensor, bias: Tensor?) -> Tensor? {
        forward(a, weight: w, bias: bias, kernelSet: Convolution.Direct.bestKernelSet)
    }

    static func weightFeedback(_ s: Tensor, input a: Tensor, weight: Tensor, scale: Float, kernelSet: Int32) -> (feedback: Tensor, isFinite: Bool)? {
        precondition(s.rank == 2 && a.rank == 2 && weight.rank == 2, "dense feedback needs [K, M], [K, N] and [M, N]")
        let k = s.shape[0], m = s.shape[1], n = a.shape[1]
        precondition(a.shape[0] == k && weight.shape == [m, n], "shapes \(s.shape), \(a.shape), \(weight.shape) do not fit")
        guard k <= maximumBatch else { return nil }
        var out = Tensor(uninitializedShape: [m, n])
        if out.count == 0 { return (out, true) }
        var packed = [Float](repeating: 0, count: (n + 31) / 32 * 32 * max(1, k))
        a.storage.withUnsafeBufferPointer { pa in
            packed.withUnsafeMutableBufferPointer { lfp_dense_pack_columns(pa.baseAddress!, Int32(k), Int32(n), $0.baseAddress!) }
        }
        // Rows split over the workers; each reads all of the packed input and its own rows of `weight`.
        var finite = [Bool](repeating: true, count: Parallel.chunkCount(m, costPerItem: n * k))
        s.storage.withUnsafeBufferPointer { ps in
            weight.storage.withUnsafeBufferPointer { pw in
                out.storage.withUnsafeMutableBufferPointer { po in
                    packed.withUnsafeBufferPointer { pp in
                        finite.withUnsafeMutableBufferPointer { flags in
                            let (sp, xp, wp, op) = (ps.baseAddress!, pp.baseAddress!, pw.baseAddress!, po.baseAddress!)
                            Parallel.chunks(m, costPerItem: n * k) { chunk, rows in
                                flags[chunk] = lfp_dense_weight_feedback(kernelSet, sp, xp, wp, op, Int32(k), Int32(m), Int32(n),
                                                                         Int32(rows.lowerBound), Int32(rows.upperBound), scale) != 0
                            }
                        }
                    }
                }
            }
        }
        return (out, !finite.contains(false))
    }

    static func forward(_ a: Tensor, weight w: Tensor, bias: Tensor?, kernelSet: Int32) -> Tensor? {
        precondition(a.rank == 2 && w.rank == 2 && a.shape[1] == w.shape[1], "dense forward needs [N, K] and [M, K], got \(a.shape), \(w.shape)")
        let n = a.shape[0], k = a.shape[1], m = w.shape[0]
        guard n <= maximumBatch else { return nil }
        var y = Tensor(uninitializedShape: [n, m])
        if y.count == 0 { return y }
        let packed = [Float](unsafeUninitializedCapacity: (n + 31) / 32 * 32 * max(1, k)) { buffer, initialized in
            // Every element is written: the rows of `a` or the zero padding past them.
            let xp = buffer.baseAddress!
            a.storage.withUnsafeBufferPointer { pa in
                let ap = pa.baseAddress!
                Parallel.chunks(k, costPerItem: n) { _, columns in
                    lfp_dense_pack_rows(ap, Int32(n), Int32(k), Int32(columns.lowerBound), Int32(columns.upperBound), xp)
                }
            }
            initialized = buffer.count
        }
        w.storage.withUnsafeBufferPointer { pw in
            y.storage.withUnsafeMutableBufferPointer { py in
                packed.withUnsafeBufferPointer { pp in
                    let (xp, wp, yp) = (pp.baseAddress!, pw.baseAddress!, py.baseAddress!)
                    let run = { (pb: UnsafePointer<Float>?) in
                        Parallel.chunks(m, costPerItem: n * k) { _, rows in
                            lfp_dense_forward(kernelSet, xp, wp, pb, yp, Int32(k), Int32(m), Int32(n),
                                              Int32(rows.lowerBound), Int32(rows.upperBound))
                        }
                    }
                    if let bias { bias.storage.withUnsafeBufferPointer { run($0.baseAddress) } } else { run(nil) }
                }
            }
        }
        return y
    }
}
