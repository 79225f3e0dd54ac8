import LFPTensor

/// Dense-layer kernels shared by the forward pass, back-propagation and LFP.
enum Kernels {
    /// `Z = A W^T + b`: A `[N, I]`, W `[O, I]` -> `[N, O]`.
    static func linearForward(_ a: Tensor, weight w: Tensor, bias: Tensor?) -> Tensor {
        let n = a.shape[0], o = w.shape[0], i = w.shape[1]
        precondition(a.rank == 2 && a.shape[1] == i, "Linear expects [N, \(i)], got \(a.shape)")
        // Every element is written: by the bias fill below, or by the GEMM with beta = 0.
        var z = bias != nil || i > 0 ? Tensor(uninitializedShape: [n, o]) : Tensor(shape: [n, o])
        if let bias {
            z.storage.withUnsafeMutableBufferPointer { pz in
                for r in 0..<n { for c in 0..<o { pz[r * o + c] = bias.storage[c] } }
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

    /// `S W`: S `[N, O]`, W `[O, I]` -> `[N, I]` (the input map of a Linear layer).
    static func linearBackwardInput(_ s: Tensor, weight w: Tensor) -> Tensor {
        Tensor.matmul(s, w)
    }

    /// `S^T A`: S `[N, O]`, A `[N, I]` -> `[O, I]` (the weight map of a Linear layer).
    static func linearBackwardWeight(_ s: Tensor, input a: Tensor) -> Tensor {
        Tensor.matmul(s, transposeA: true, a)
    }

    /// Sum over the batch of `[N, O]` -> `[O]`.
    static func biasSum(_ s: Tensor) -> Tensor {
        if s.rank == 4 { return Convolution.backwardBias(s) }
        let n = s.shape[0], o = s.count / max(1, n)
        return s.storage.withUnsafeBufferPointer { Tensor(shape: [o], storage: Tensor.columnSums($0, rows: n, cols: o)) }
    }
}
