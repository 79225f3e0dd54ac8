import Foundation
import LFPTensor

/// Layer normalisation over the last dimension (PyTorch's `LayerNorm(D)`):
/// `y = gamma (x - mu) / sigma + beta` per row, `sigma = sqrt(var + eps)` (biased variance).
public struct LayerNorm: Sendable, Equatable {
    public var weight: Tensor
    public var bias: Tensor
    public var epsilon: Float

    public var features: Int { weight.count }

    /// gamma 1, beta 0 (PyTorch's initialisation); timm's ViTs use `eps = 1e-6`.
    public init(features: Int, epsilon: Float = 1e-6) {
        weight = Tensor(shape: [features], storage: [Float](repeating: 1, count: features))
        bias = Tensor(shape: [features])
        self.epsilon = epsilon
    }

    /// Mean and `1 / sigma` of every row.
    public struct Statistics: Sendable, Equatable {
        public var mean: [Float]
        public var inverseSigma: [Float]
    }

    public func statistics(_ x: Tensor) -> Statistics {
        let d = features, rows = x.count / max(1, d)
        var mean = [Float](repeating: 0, count: rows), inverse = mean
        let eps = epsilon
        x.storage.withUnsafeBufferPointer { px in
            mean.withUnsafeMutableBufferPointer { pm in
                inverse.withUnsafeMutableBufferPointer { pi in
                    let (src, means, inverses) = (px.baseAddress!, pm.baseAddress!, pi.baseAddress!)
                    Parallel.chunks(rows, costPerItem: 3 * d) { _, range in
                        for r in range {
                            let row = src + r * d
                            var s: Float = 0
                            for k in 0..<d { s += row[k] }
                            let m = s / Float(d)
                            var q: Float = 0
                            for k in 0..<d { let t = row[k] - m; q += t * t }
                            means[r] = m
                            inverses[r] = 1 / (q / Float(d) + eps).squareRoot()
                        }
                    }
                }
            }
        }
        return Statistics(mean: mean, inverseSigma: inverse)
    }

    /// `xhat = (x - mu) / sigma`.
    public func normalized(_ x: Tensor, _ stats: Statistics) -> Tensor {
        let d = features
        var y = Tensor(uninitializedShape: x.shape)
        x.storage.withUnsafeBufferPointer { px in
            y.storage.withUnsafeMutableBufferPointer { py in
                stats.mean.withUnsafeBufferPointer { pm in
                    stats.inverseSigma.withUnsafeBufferPointer { pi in
                        let (src, dst, means, inverses) = (px.baseAddress!, py.baseAddress!, pm.baseAddress!, pi.baseAddress!)
                        Parallel.chunks(pm.count, costPerItem: 2 * d) { _, rows in
                            for r in rows {
                                let m = means[r], s = inverses[r]
                                for k in 0..<d { dst[r * d + k] = (src[r * d + k] - m) * s }
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    public func forward(_ x: Tensor, _ stats: Statistics) -> Tensor {
        var y = normalized(x, stats)
        let d = features
        y.storage.withUnsafeMutableBufferPointer { py in
            weight.storage.withUnsafeBufferPointer { pw in
                bias.storage.withUnsafeBufferPointer { pb in
                    let (dst, w, b) = (py.baseAddress!, pw.baseAddress!, pb.baseAddress!)
                    Parallel.chunks(stats.mean.count, costPerItem: 2 * d) { _, rows in
                        for r in rows { for k in 0..<d { dst[r * d + k] = dst[r * d + k] * w[k] + b[k] } }
                    }
                }
            }
        }
        return y
    }

    /// Gradient backward through the row statistics:
    /// `dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sigma`, `dxhat = gamma dy`.
    public func backward(_ dy: Tensor, input x: Tensor, _ stats: Statistics, needInput: Bool) -> (input: Tensor?, weight: Tensor, bias: Tensor) {
        let d = features, rows = stats.mean.count
        let xhat = normalized(x, stats)
        var dGamma = [Float](repeating: 0, count: d), dBeta = dGamma
        var dx: Tensor? = needInput ? Tensor(uninitializedShape: x.shape) : nil
        dy.storage.withUnsafeBufferPointer { pg in
            xhat.storage.withUnsafeBufferPointer { ph in
                for r in 0..<rows {
                    for k in 0..<d {
                        dGamma[k] += pg[r * d + k] * ph[r * d + k]
                        dBeta[k] += pg[r * d + k]
                    }
                }
                guard needInput else { return }
                dx!.storage.withUnsafeMutableBufferPointer { px in
                    for r in 0..<rows {
                        var meanG: Float = 0, meanGH: Float = 0
                        for k in 0..<d {
                            let g = pg[r * d + k] * weight.storage[k]
                            meanG += g
                            meanGH += g * ph[r * d + k]
                        }
                        meanG /= Float(d); meanGH /= Float(d)
                        let s = stats.inverseSigma[r]
                        for k in 0..<d {
                            let g = pg[r * d + k] * weight.storage[k]
                            px[r * d + k] = s * (g - meanG - ph[r * d + k] * meanGH)
                        }
                    }
                }
            }
        }
        return (dx, Tensor(shape: [d], storage: dGamma), Tensor(shape: [d], storage: dBeta))
    }
}

/// Multi-head self-attention with a fused input projection (timm's `Attention`):
/// `qkv = x W_qkv^T + b` split into heads, `A = softmax(q k^T / sqrt(d_head))`,
/// `y = merge(A v) W_proj^T + b_proj`. Parameters `qkv.weight [3D, D]`, `qkv.bias`,
/// `proj.weight [D, D]`, `proj.bias`.
public struct MultiheadAttention: Sendable, Equatable {
    public var qkv: Linear
    public var proj: Linear
    public var heads: Int

    public var dimension: Int { proj.outFeatures }
    public var headDimension: Int { dimension / heads }
    public var scale: Float { 1 / Float(headDimension).squareRoot() }

    public init(dimension: Int, heads: Int, bias: Bool = true, rng: inout SeededRandom) {
        precondition(dimension % heads == 0, "dimension \(dimension) is not a multiple of \(heads) heads")
        qkv = Linear(inFeatures: dimension, outFeatures: 3 * dimension, bias: bias, rng: &rng)
        proj = Linear(inFeatures: dimension, outFeatures: dimension, rng: &rng)
        self.heads = heads
    }

    /// What the forward pass keeps for the backward passes.
    public struct Record: Sendable {
        /// `[N, T, 3D]`: q, k, v side by side.
        public var qkv: Tensor
        /// `q k^T * scale`, `[N, H, T, T]`.
        public var scores: Tensor
        /// The softmax of the scores, `[N, H, T, T]`.
        public var probabilities: Tensor
        /// `A v` with the heads merged, `[N, T, D]` (the input of `proj`).
        public var context: Tensor
    }

    /// Runs the attention on `x [N, T, D]`.
    public func forward(_ x: Tensor) -> (output: Tensor, record: Record) {
        let (n, t, d) = (x.shape[0], x.shape[1], dimension)
        let h = heads, dh = headDimension
        let qkvOut = Kernels.linearForward(x, weight: qkv.weight, bias: qkv.bias)
        var scores = Tensor(uninitializedShape: [n, h, t, t])
        qkvOut.storage.withUnsafeBufferPointer { pq in
            scores.storage.withUnsafeMutableBufferPointer { ps in
                Parallel.chunks(n * h, costPerItem: t * t * dh) { _, pairs in
                    for pair in pairs {
                        let (s, head) = (pair / h, pair % h)
                        let q = pq.baseAddress! + s * t * 3 * d + head * dh
                        BLAS.serialGEMM(transposeA: false, transposeB: true, m: t, n: t, k: dh, alpha: scale, a: q, lda: 3 * d,
                                        b: q + d, ldb: 3 * d, beta: 0, c: ps.baseAddress! + (s * h + head) * t * t, ldc: t)
                    }
                }
            }
        }
        let probabilities = Self.softmaxRows(scores, width: t)
        var context = Tensor(uninitializedShape: [n, t, d])
        qkvOut.storage.withUnsafeBufferPointer { pq in
            probabilities.storage.withUnsafeBufferPointer { pp in
                context.storage.withUnsafeMutableBufferPointer { pc in
                    Parallel.chunks(n * h, costPerItem: t * t * dh) { _, pairs in
                        for pair in pairs {
                            let (s, head) = (pair / h, pair % h)
                            let v = pq.baseAddress! + s * t * 3 * d + 2 * d + head * dh
                            BLAS.serialGEMM(transposeA: false, transposeB: false, m: t, n: dh, k: t, alpha: 1,
                                            a: pp.baseAddress! + (s * h + head) * t * t, lda: t, b: v, ldb: 3 * d,
                                            beta: 0, c: pc.baseAddress! + s * t * d + head * dh, ldc: d)
                        }
                    }
                }
            }
        }
        let y = Kernels.linearForward(context, weight: proj.weight, bias: proj.bias)
        return (y, Record(qkv: qkvOut, scores: scores, probabilities: probabilities, context: context))
    }

    /// Row-wise softmax of `[..., width]` (max subtracted).
    static func softmaxRows(_ x: Tensor, width: Int) -> Tensor {
        var y = Tensor(uninitializedShape: x.shape)
        x.storage.withUnsafeBufferPointer { px in
            y.storage.withUnsafeMutableBufferPointer { py in
                let (src, dst) = (px.baseAddress!, py.baseAddress!)
                Parallel.chunks(x.count / max(1, width), costPerItem: 8 * width) { _, rows in
                    for r in rows {
                        let row = src + r * width, out = dst + r * width
                        var m = -Float.infinity
                        for k in 0..<width { m = max(m, row[k]) }
                        var s: Float = 0
                        for k in 0..<width { out[k] = Foundation.exp(row[k] - m); s += out[k] }
                        for k in 0..<width { out[k] /= s }
                    }
                }
            }
        }
        return y
    }

    /// The two attention products run backwards given the signals at their outputs:
    /// from `dContext [N, T, D]` (at `A v`) to `dA [N, H, T, T]` and `dV` (into `dqkv`), and from
    /// `dScores` (at `q k^T * scale`) to `dq`, `dk` (into `dqkv`). The LFP rules reuse these
    /// products with their own signals.
    func contextBackward(_ dContext: Tensor, record: Record, into dqkv: inout Tensor) -> Tensor {
        let (n, t, d) = (record.context.shape[0], record.context.shape[1], dimension)
        let h = heads, dh = headDimension
        var dA = Tensor(uninitializedShape: [n, h, t, t])
        dContext.storage.withUnsafeBufferPointer { pc in
            record.qkv.storage.withUnsafeBufferPointer { pq in
                record.probabilities.storage.withUnsafeBufferPointer { pp in
                    dA.storage.withUnsafeMutableBufferPointer { pa in
                        dqkv.storage.withUnsafeMutableBufferPointer { pd in
                            Parallel.chunks(n * h, costPerItem: t * t * dh) { _, pairs in
                                for pair in pairs {
                                    let (s, head) = (pair / h, pair % h)
                                    let dc = pc.baseAddress! + s * t * d + head * dh
                                    let v = pq.baseAddress! + s * t * 3 * d + 2 * d + head * dh
                                    let a = pp.baseAddress! + (s * h + head) * t * t
                                    // dA = dC v^T;  dv = A^T dC
                                    BLAS.serialGEMM(transposeA: false, transposeB: true, m: t, n: t, k: dh, alpha: 1, a: dc, lda: d,
                                                    b: v, ldb: 3 * d, beta: 0, c: pa.baseAddress! + (s * h + head) * t * t, ldc: t)
                                    BLAS.serialGEMM(transposeA: true, transposeB: false, m: t, n: dh, k: t, alpha: 1, a: a, lda: t,
                                                    b: dc, ldb: d, beta: 0, c: pd.baseAddress! + s * t * 3 * d + 2 * d + head * dh, ldc: 3 * d)
                                }
                            }
                        }
                    }
                }
            }
        }
        return dA
    }

    /// `dq = dS k * scale`, `dk = dS^T q * scale` into the q and k columns of `dqkv`.
    func scoresBackward(_ dScores: Tensor, record: Record, into dqkv: inout Tensor) {
        let (n, t, d) = (record.context.shape[0], record.context.shape[1], dimension)
        let h = heads, dh = headDimension
        dScores.storage.withUnsafeBufferPointer { ps in
            record.qkv.storage.withUnsafeBufferPointer { pq in
                dqkv.storage.withUnsafeMutableBufferPointer { pd in
                    Parallel.chunks(n * h, costPerItem: t * t * dh) { _, pairs in
                        for pair in pairs {
                            let (s, head) = (pair / h, pair % h)
                            let ds = ps.baseAddress! + (s * h + head) * t * t
                            let q = pq.baseAddress! + s * t * 3 * d + head * dh, k = q + d
                            let dq = pd.baseAddress! + s * t * 3 * d + head * dh, dk = dq + d
                            BLAS.serialGEMM(transposeA: false, transposeB: false, m: t, n: dh, k: t, alpha: scale, a: ds, lda: t,
                                            b: k, ldb: 3 * d, beta: 0, c: dq, ldc: 3 * d)
                            BLAS.serialGEMM(transposeA: true, transposeB: false, m: t, n: dh, k: t, alpha: scale, a: ds, lda: t,
                                            b: q, ldb: 3 * d, beta: 0, c: dk, ldc: 3 * d)
                        }
                    }
                }
            }
        }
    }

    /// The signal at the context (`proj`'s input) carried back to `qkv`'s output `[N, T, 3D]`
    /// through the attention products and the softmax, as the gradient is. Both engines use it:
    /// the reference's LFP has no rule for these operations (they run as autograd, VIT-NOTES.md).
    func innerBackward(_ dContext: Tensor, record: Record) -> Tensor {
        var dqkv = Tensor(shape: record.qkv.shape)
        let dA = contextBackward(dContext, record: record, into: &dqkv)
        // softmax backward: dS = A (dA - rowsum(dA A))
        let t = record.context.shape[1]
        var dS = dA
        dS.storage.withUnsafeMutableBufferPointer { pd0 in
            record.probabilities.storage.withUnsafeBufferPointer { pa0 in
                let (pd, pa) = (pd0.baseAddress!, pa0.baseAddress!)
                Parallel.chunks(pd0.count / max(1, t), costPerItem: 4 * t) { _, rows in
                    for r in rows {
                        var dot: Float = 0
                        for k in 0..<t { dot += pd[r * t + k] * pa[r * t + k] }
                        for k in 0..<t { pd[r * t + k] = pa[r * t + k] * (pd[r * t + k] - dot) }
                    }
                }
            }
        }
        scoresBackward(dS, record: record, into: &dqkv)
        return dqkv
    }

    /// AttnLRP (lxt's function rules, ATTNLRP-NOTES.md) from the feedback at the context to
    /// `qkv`'s output: the epsilon rule on `A v` and on `(q * scale) k^T` with the feedback split
    /// evenly between the operands (`S = R / (2 z + 1e-8)`, `R_a = a (S b^T)`, `R_b = b (a^T S)`),
    /// the softmax rule `R_x = x (R - p sum_j R)`, and `q * scale` as the gradient (`R_q = scale R_qs`).
    func attnLRPBackward(_ rContext: Tensor, record: Record) -> Tensor {
        let eps: Float = 1e-8
        var dqkv = Tensor(shape: record.qkv.shape)
        var so = rContext
        so.formZipMap(record.context) { r, o in r / (2 * o + eps) }
        var rA = contextBackward(so, record: record, into: &dqkv)  // S_o v^T, and A^T S_o into the v columns
        rA.formZipMap(record.probabilities, *)
        // softmax: R_x = x (R - p sum_j R), x the scores
        let t = record.context.shape[1]
        var rScores = rA
        rScores.storage.withUnsafeMutableBufferPointer { pr in
            record.probabilities.storage.withUnsafeBufferPointer { pp in
                record.scores.storage.withUnsafeBufferPointer { px in
                    for row in 0..<(pr.count / max(1, t)) {
                        var sum: Float = 0
                        for k in 0..<t { sum += pr[row * t + k] }
                        for k in 0..<t { pr[row * t + k] = px[row * t + k] * (pr[row * t + k] - pp[row * t + k] * sum) }
                    }
                }
            }
        }
        var ss = rScores
        ss.formZipMap(record.scores) { r, z in r / (2 * z + eps) }
        scoresBackward(ss, record: record, into: &dqkv)  // scale S_s k (q columns), S_s^T (q scale) (k columns)
        // R_q = scale q (scale S_s k)/scale... = scale * q * dq; R_k = k * dk; R_v = v * dv.
        let d = dimension, s = scale
        dqkv.storage.withUnsafeMutableBufferPointer { pd in
            record.qkv.storage.withUnsafeBufferPointer { pq in
                for row in 0..<(pd.count / (3 * d)) {
                    let base = row * 3 * d
                    for c in 0..<d { pd[base + c] *= s * pq[base + c] }
                    for c in d..<(3 * d) { pd[base + c] *= pq[base + c] }
                }
            }
        }
        return dqkv
    }

    /// Gradient backward: parameter gradients (`qkv.weight`, ..., local names) and `dL/dx`.
    func backward(_ dy: Tensor, input x: Tensor, record: Record, needInput: Bool) -> (input: Tensor?, parameters: [(String, Tensor)]) {
        let projMap = AffineMap(.linear(proj), inputShape: record.context.shape)!
        var params: [(String, Tensor)] = [("proj.weight", projMap.weightMap(dy, input: record.context)!)]
        if proj.bias != nil { params.append(("proj.bias", projMap.biasMap(dy))) }
        let dqkv = innerBackward(projMap.transpose(dy, .plain), record: record)
        let qkvMap = AffineMap(.linear(qkv), inputShape: x.shape)!
        params.append(("qkv.weight", qkvMap.weightMap(dqkv, input: x)!))
        if qkv.bias != nil { params.append(("qkv.bias", qkvMap.biasMap(dqkv))) }
        return (needInput ? qkvMap.transpose(dqkv, .plain) : nil, params)
    }
}

/// The tokens of a Vision Transformer (timm's layout): the patch embedding's output
/// `[N, D, h, w]` becomes `[N, h*w, D]`, a learned class token is put first, and learned
/// position embeddings are added: `[N, 1 + h*w, D]`. Parameters `cls_token [1, 1, D]` and
/// `pos_embed [1, 1 + h*w, D]` (named at the model's top level, as in timm).
public struct TokenEmbedding: Sendable, Equatable {
    public var classToken: Tensor
    public var positions: Tensor

    public var dimension: Int { classToken.count }
    public var tokens: Int { positions.shape[1] }

    /// timm's initialisation: class token N(0, 1e-6), positions N(0, 0.02) (truncated in timm).
    public init(dimension: Int, patches: Int, rng: inout SeededRandom) {
        classToken = Tensor.normal([1, 1, dimension], std: 1e-6, rng: &rng)
        positions = Tensor.normal([1, 1 + patches, dimension], std: 0.02, rng: &rng)
    }

    /// `[N, D, h, w]` -> the patch tokens `[N, h*w, D]` (without class token and positions).
    func patchTokens(_ x: Tensor) -> Tensor {
        let (n, d) = (x.shape[0], x.shape[1]), p = x.count / max(1, n * d)
        var y = Tensor(uninitializedShape: [n, p, d])
        x.storage.withUnsafeBufferPointer { px in
            y.storage.withUnsafeMutableBufferPointer { py in
                for s in 0..<n { for c in 0..<d { for i in 0..<p { py[(s * p + i) * d + c] = px[(s * d + c) * p + i] } } }
            }
        }
        return y
    }

    /// The patch tokens' signal `[N, h*w, D]` back in the image layout `[N, D, h, w]`.
    func imageLayout(_ g: Tensor, like x: Tensor) -> Tensor {
        let (n, d) = (x.shape[0], x.shape[1]), p = x.count / max(1, n * d)
        var y = Tensor(uninitializedShape: x.shape)
        g.storage.withUnsafeBufferPointer { pg in
            y.storage.withUnsafeMutableBufferPointer { py in
                for s in 0..<n { for c in 0..<d { for i in 0..<p { py[(s * d + c) * p + i] = pg[(s * p + i) * d + c] } } }
            }
        }
        return y
    }

    /// The tokens before the positions are added: `[class token, patch tokens]`, `[N, 1 + h*w, D]`.
    func withClassToken(_ x: Tensor) -> Tensor {
        let patches = patchTokens(x)
        let n = x.shape[0], d = dimension, t = tokens
        var y = Tensor(uninitializedShape: [n, t, d])
        patches.storage.withUnsafeBufferPointer { pp in
            y.storage.withUnsafeMutableBufferPointer { py in
                for s in 0..<n {
                    for c in 0..<d { py[s * t * d + c] = classToken.storage[c] }
                    (py.baseAddress! + s * t * d + d).update(from: pp.baseAddress! + s * (t - 1) * d, count: (t - 1) * d)
                }
            }
        }
        return y
    }

    /// The position embeddings repeated for a batch: `[N, 1 + h*w, D]`.
    func positions(batch n: Int) -> Tensor {
        Tensor(shape: [n] + positions.shape.dropFirst(), storage: Array([[Float]](repeating: positions.storage, count: n).joined()))
    }

    /// `[class token, patch tokens] + positions`.
    public func forward(_ x: Tensor) -> Tensor {
        var y = withClassToken(x)
        let count = positions.count
        y.storage.withUnsafeMutableBufferPointer { py in
            for s in 0..<x.shape[0] { for i in 0..<count { py[s * count + i] += positions.storage[i] } }
        }
        return y
    }

    /// Gradient backward: `d cls = sum_n dY[n, 0]`, `d pos = sum_n dY[n]`, the input's signal.
    func backward(_ dy: Tensor, input x: Tensor, needInput: Bool) -> (input: Tensor?, classToken: Tensor, positions: Tensor) {
        let n = x.shape[0], d = dimension, t = tokens
        var dPos = Tensor(shape: positions.shape), dCls = Tensor(shape: classToken.shape)
        dy.storage.withUnsafeBufferPointer { pg in
            for s in 0..<n {
                for i in 0..<(t * d) { dPos.storage[i] += pg[s * t * d + i] }
                for c in 0..<d { dCls.storage[c] += pg[s * t * d + c] }
            }
        }
        guard needInput else { return (nil, dCls, dPos) }
        return (imageLayout(Self.dropClassToken(dy), like: x), dCls, dPos)
    }

    /// Token 0 of `[N, T, D]`: `[N, D]`.
    static func firstToken(_ x: Tensor) -> Tensor {
        let (n, t, d) = (x.shape[0], x.shape[1], x.shape[2])
        var y = Tensor(uninitializedShape: [n, d])
        x.storage.withUnsafeBufferPointer { px in
            y.storage.withUnsafeMutableBufferPointer { py in
                for s in 0..<n { (py.baseAddress! + s * d).update(from: px.baseAddress! + s * t * d, count: d) }
            }
        }
        return y
    }

    /// `[N, D]` placed at token 0 of `[N, T, D]`, zero elsewhere (the adjoint of `firstToken`).
    static func atFirstToken(_ g: Tensor, shape: [Int]) -> Tensor {
        var y = Tensor(shape: shape)
        let (n, t, d) = (shape[0], shape[1], shape[2])
        g.storage.withUnsafeBufferPointer { pg in
            y.storage.withUnsafeMutableBufferPointer { py in
                for s in 0..<n { (py.baseAddress! + s * t * d).update(from: pg.baseAddress! + s * d, count: d) }
            }
        }
        return y
    }

    /// `[N, T, D]` without token 0: `[N, T - 1, D]`.
    static func dropClassToken(_ g: Tensor) -> Tensor {
        let (n, t, d) = (g.shape[0], g.shape[1], g.shape[2])
        var y = Tensor(uninitializedShape: [n, t - 1, d])
        g.storage.withUnsafeBufferPointer { pg in
            y.storage.withUnsafeMutableBufferPointer { py in
                for s in 0..<n { (py.baseAddress! + s * (t - 1) * d).update(from: pg.baseAddress! + (s * t + 1) * d, count: (t - 1) * d) }
            }
        }
        return y
    }
}
