import CLFPKernels

/// The parameter feedback of an LFP rule on a dense (Linear) layer, `F(W) = scale * |W| ⊙ (S^T A)`
/// (LFP-MATH.md section 3), in one pass over `W` and the result.
///
/// For a short batch the product `S^T A` is bound by memory, not arithmetic: through BLAS it is
/// a pass that zeroes the result, the product reading and writing it, and the `|W|` epilogue
/// reading the result and `W` and writing the result again. The kernel (CLFPKernels,
/// `lfp_dense_weight_feedback`) keeps a tile of the product in registers over the whole batch and
/// writes `scale * |W| * product` once. Large batches keep BLAS, whose blocking wins there.
public enum DenseFeedback {
    /// The largest batch (product depth) the fused kernel takes; above it BLAS + epilogue.
    public static let maximumDepth = 64

    /// `scale * |weight| ⊙ (s^T a)` for `s [K, M]`, `a [K, N]`, `weight [M, N]`, and whether every
    /// value is finite; nil when `K` is above `maximumDepth` (or the kernel found no memory for
    /// its scratch): the caller then takes the BLAS path.
    public static func weightFeedback(_ s: Tensor, input a: Tensor, weight: Tensor, scale: Float) -> (feedback: Tensor, isFinite: Bool)? {
        weightFeedback(s, input: a, weight: weight, scale: scale, kernelSet: Convolution.Direct.bestKernelSet)
    }

    /// The same with a given kernel set (tests run every set the CPU supports).
    static func weightFeedback(_ s: Tensor, input a: Tensor, weight: Tensor, scale: Float, kernelSet: Int32) -> (feedback: Tensor, isFinite: Bool)? {
        precondition(s.rank == 2 && a.rank == 2 && weight.rank == 2, "dense feedback needs [K, M], [K, N] and [M, N]")
        let k = s.shape[0], m = s.shape[1], n = a.shape[1]
        precondition(a.shape[0] == k && weight.shape == [m, n], "shapes \(s.shape), \(a.shape), \(weight.shape) do not fit")
        guard k <= maximumDepth else { return nil }
        var out = Tensor(uninitializedShape: [m, n])
        if out.count == 0 { return (out, true) }
        var packed = [Float](repeating: 0, count: max(1, k * (n / 32 * 32)))
        a.storage.withUnsafeBufferPointer { pa in
            packed.withUnsafeMutableBufferPointer { lfp_dense_pack_columns(pa.baseAddress!, Int32(k), Int32(n), $0.baseAddress!) }
        }
        // Rows split over the workers; each reads all of `a` and its own rows of `weight`.
        // Per worker: 1 all finite, 0 not, -1 no scratch.
        var status = [Int32](repeating: 1, count: Parallel.chunkCount(m, costPerItem: n * k))
        s.storage.withUnsafeBufferPointer { ps in
            a.storage.withUnsafeBufferPointer { pa in
                weight.storage.withUnsafeBufferPointer { pw in
                    out.storage.withUnsafeMutableBufferPointer { po in
                        status.withUnsafeMutableBufferPointer { flags in
                          packed.withUnsafeBufferPointer { pp in
                            let (sp, ap, xp, wp, op) = (ps.baseAddress!, pa.baseAddress!, pp.baseAddress!, pw.baseAddress!, po.baseAddress!)
                            Parallel.chunks(m, costPerItem: n * k) { chunk, rows in
                                flags[chunk] = lfp_dense_weight_feedback(kernelSet, sp, ap, xp, wp, op, Int32(k), Int32(m), Int32(n),
                                                                         Int32(rows.lowerBound), Int32(rows.upperBound), scale)
                            }
                          }
                        }
                    }
                }
            }
        }
        if status.contains(-1) { return nil }
        return (out, !status.contains(0))
    }
}
