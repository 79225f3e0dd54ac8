import LFPTensor

/// Dense-layer kernels shared by the forward pass, back-propagation and LFP.
enum Kernels {
    /// `Z = A W^T + b`: A `[..., I]`, W `[O, I]` -> `[..., O]` (every leading dimension is a row:
    /// `[N, I]`, or the tokens of a transformer `[N, T, I]`).
    static func linearForward(_ a: Tensor, weight w: Tensor, bias: Tensor?) -> Tensor {
        let o = w.shape[0], i = w.shape[1]
        precondition(a.rank >= 2 && a.shape.last == i, "Linear expects [N, ..., \(i)], got \(a.shape)")
        let n = a.count / max(1, i)
        let shape = a.shape.dropLast() + [o]
        // A short batch through a large layer: BLAS would copy all of W into its packed layout
        // first, which takes longer than the product (DenseKernels).
        if n <= DenseKernels.maximumBatch && o * i >= 1 << 16,
           let z = DenseKernels.forward(a.reshaped([n, i]), weight: w, bias: bias) {
            return z.reshaped(Array(shape))
        }
        // Every element is written: by the bias fill below, or by the GEMM with beta = 0.
        var z = bias != nil || i > 0 ? Tensor(uninitializedShape: Array(shape)) : Tensor(shape: Array(shape))
        if let bias {
            z.storage.withUnsafeMutableBufferPointer { pz in
                bias.storage.withUnsafeBufferPointer { pb in
                    let (dst, b) = (pz.baseAddress, pb.baseAddress)
                    Parallel.chunks(n, costPerItem: o) { _, rows in
                        guard let dst, let b else { return }
                        for r in rows { (dst + r * o).update(from: b, count: o) }
                    }
                }
            }
        }
        if n == 0 || o == 0 { return z }
        a.storage.withUnsafeBufferPointer { pa in
            w.storage.withUnsafeBufferPointer { pw in
                z.storage.withUnsafeMutableBufferPointer { pz in
                    BLAS.gemm(transposeA: false, transposeB: true, m: n, n: o, k: i, alpha: 1,
                              a: pa.baseAddress!, lda: i, b: pw.baseAddress!, ldb: i,
                              beta: bias == nil ? 0 : 1, c: pz.baseAddress!, ldc: o)
                }
            }
        }
        return z
    }

    /// `S W`: S `[..., O]`, W `[O, I]` -> `[..., I]` (the input map of a Linear layer).
    static func linearBackwardInput(_ s: Tensor, weight w: Tensor) -> Tensor {
        if s.rank == 2 { return Tensor.matmul(s, w) }
        let o = w.shape[0]
        return Tensor.matmul(s.reshaped([s.count / max(1, o), o]), w).reshaped(Array(s.shape.dropLast()) + [w.shape[1]])
    }

    /// `S^T A`: S `[..., O]`, A `[..., I]` -> `[O, I]`, summed over every leading dimension
    /// (the weight map of a Linear layer).
    static func linearBackwardWeight(_ s: Tensor, input a: Tensor) -> Tensor {
        if s.rank == 2 { return Tensor.matmul(s, transposeA: true, a) }
        let o = s.shape.last!, i = a.shape.last!
        return Tensor.matmul(s.reshaped([s.count / max(1, o), o]), transposeA: true, a.reshaped([a.count / max(1, i), i]))
    }

    /// The parameter feedback `scale * |W| ⊙ (S^T A)` of a Linear layer (`linearBackwardWeight`
    /// followed by the rules' magnitude epilogue) in one pass, for a product large enough for
    /// the library's sgemm (`BLAS.gemmTimesMagnitude`); nil where that does not run.
    static func linearWeightFeedback(_ s: Tensor, input a: Tensor, weight w: Tensor, scale: Float) -> (feedback: Tensor, isFinite: Bool)? {
        let o = w.shape[0], i = w.shape[1], n = s.count / max(1, o)
        precondition(s.shape.last == o && a.shape.last == i && a.count == n * i, "weight feedback: S \(s.shape), A \(a.shape), W \(w.shape)")
        guard BLAS.fusesMagnitude(m: o, n: i, k: n) else { return nil }
        var out = Tensor(uninitializedShape: [o, i])
        let finite = s.storage.withUnsafeBufferPointer { ps in
            a.storage.withUnsafeBufferPointer { pa in
                w.storage.withUnsafeBufferPointer { pw in
                    out.storage.withUnsafeMutableBufferPointer { po in
                        BLAS.gemmTimesMagnitude(transposeA: true, transposeB: false, m: o, n: i, k: n, a: ps.baseAddress!, lda: o,
                                                b: pa.baseAddress!, ldb: i, c: po.baseAddress!, ldc: i, w: pw.baseAddress!, ldw: i, scale: scale)
                    }
                }
            }
        }
        return finite.map { (out, $0) }
    }

    /// Sum over every leading dimension of `[..., O]` -> `[O]` (the bias map of a Linear layer).
    static func rowSum(_ s: Tensor) -> Tensor {
        let o = s.shape.last ?? 0, n = s.count / max(1, o)
        return s.storage.withUnsafeBufferPointer { Tensor(shape: [o], storage: Tensor.columnSums($0, rows: n, cols: o)) }
    }

    /// Sum over the batch of `[N, O]` -> `[O]`.
    static func biasSum(_ s: Tensor) -> Tensor {
        if s.rank == 4 { return Convolution.backwardBias(s) }
        let n = s.shape[0], o = s.count / max(1, n)
        return s.storage.withUnsafeBufferPointer { Tensor(shape: [o], storage: Tensor.columnSums($0, rows: n, cols: o)) }
    }
}
