/// A dense, row-major Float32 tensor with value semantics.
///
/// Storage is a Swift `Array`, so copies are copy-on-write and a `Tensor` is `Sendable`.
/// Kernels read and write through `withUnsafe(Mutable)BufferPointer` for speed.
public struct Tensor: Sendable, Equatable, CustomStringConvertible {
    /// The extent of every dimension, outermost first.
    public private(set) var shape: [Int]
    /// The elements in row-major (C) order.
    public var storage: [Float]

    /// A tensor of the given shape filled with `value`.
    public init(shape: [Int], repeating value: Float = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in shape \(shape)")
        self.shape = shape
        self.storage = [Float](repeating: value, count: shape.reduce(1, *))
    }

    /// A tensor wrapping `storage`; its count must match the shape.
    public init(shape: [Int], storage: [Float]) {
        precondition(shape.reduce(1, *) == storage.count,
                     "shape \(shape) needs \(shape.reduce(1, *)) elements, got \(storage.count)")
        self.shape = shape
        self.storage = storage
    }

    /// A tensor whose elements the caller overwrites before reading (no zero-fill): for
    /// kernel outputs such as a GEMM with `beta = 0`.
    public init(uninitializedShape shape: [Int]) {
        let count = shape.reduce(1, *)
        self.shape = shape
        self.storage = [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    }

    /// A tensor of zeros.
    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(shape: shape) }

    /// Number of elements.
    @inlinable public var count: Int { storage.count }
    /// Number of dimensions.
    public var rank: Int { shape.count }

    public var description: String {
        let head = storage.prefix(8).map { String(format: "%.4g", Double($0)) }.joined(separator: ", ")
        return "Tensor(\(shape), [\(head)\(count > 8 ? ", ..." : "")])"
    }

    /// The same elements under a new shape (one dimension may be -1 and is inferred).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var result = self
        result.reshape(newShape)
        return result
    }

    /// Changes the shape in place; the element count must not change.
    public mutating func reshape(_ newShape: [Int]) {
        var dims = newShape
        if let inferred = dims.firstIndex(of: -1) {
            let known = dims.enumerated().filter { $0.offset != inferred }.map(\.element).reduce(1, *)
            precondition(known > 0 && count % known == 0, "cannot infer dimension of \(newShape) for \(count) elements")
            dims[inferred] = count / known
        }
        precondition(dims.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        shape = dims
    }

    /// Element access by flat index.
    @inlinable public subscript(flat index: Int) -> Float {
        get { storage[index] }
        set { storage[index] = newValue }
    }

    /// Element access by multi-index (slow; for tests and small code paths).
    public subscript(_ indices: Int...) -> Float {
        get { storage[flatIndex(indices)] }
        set { storage[flatIndex(indices)] = newValue }
    }

    private func flatIndex(_ indices: [Int]) -> Int {
        precondition(indices.count == shape.count, "index rank \(indices.count) != tensor rank \(shape.count)")
        var flat = 0
        for (i, d) in zip(indices, shape) {
            precondition(i >= 0 && i < d, "index \(indices) out of bounds for shape \(shape)")
            flat = flat * d + i
        }
        return flat
    }
}

// MARK: - Elementwise operations

extension Tensor {
    /// Applies `f` to every element, in one pass into a new tensor. (Serial: a closure handed
    /// to the workers is called per element instead of inlined, which costs more than the
    /// second core gains; hot elementwise kernels are written out in `Parallel.elementwise`.)
    @inlinable public func map(_ f: (Float) -> Float) -> Tensor {
        var result = Tensor(uninitializedShape: shape)
        storage.withUnsafeBufferPointer { a in
            result.storage.withUnsafeMutableBufferPointer { r in
                for i in a.indices { r[i] = f(a[i]) }
            }
        }
        return result
    }

    /// Combines two tensors of equal shape elementwise, in one pass into a new tensor.
    @inlinable public func zipMap(_ other: Tensor, _ f: (Float, Float) -> Float) -> Tensor {
        precondition(shape == other.shape, "shape mismatch \(shape) vs \(other.shape)")
        var result = Tensor(uninitializedShape: shape)
        storage.withUnsafeBufferPointer { a in
            other.storage.withUnsafeBufferPointer { b in
                result.storage.withUnsafeMutableBufferPointer { r in
                    for i in a.indices { r[i] = f(a[i], b[i]) }
                }
            }
        }
        return result
    }

    /// In-place elementwise combination with a tensor of equal shape.
    @inlinable public mutating func formZipMap(_ other: Tensor, _ f: (Float, Float) -> Float) {
        precondition(shape == other.shape, "shape mismatch \(shape) vs \(other.shape)")
        storage.withUnsafeMutableBufferPointer { r in
            other.storage.withUnsafeBufferPointer { o in
                for i in r.indices { r[i] = f(r[i], o[i]) }
            }
        }
    }

    public static func + (a: Tensor, b: Tensor) -> Tensor { a.zipMap(b, +) }
    public static func - (a: Tensor, b: Tensor) -> Tensor { a.zipMap(b, -) }
    public static func * (a: Tensor, b: Tensor) -> Tensor { a.zipMap(b, *) }
    public static func * (a: Tensor, s: Float) -> Tensor { a.map { $0 * s } }
    public static func * (s: Float, a: Tensor) -> Tensor { a.map { $0 * s } }
    public static func += (a: inout Tensor, b: Tensor) { a.formZipMap(b, +) }
    public static func -= (a: inout Tensor, b: Tensor) { a.formZipMap(b, -) }
    public static prefix func - (a: Tensor) -> Tensor { a.map { -$0 } }

    /// `self += alpha * x` (axpy).
    public mutating func add(_ x: Tensor, scaledBy alpha: Float) {
        precondition(shape == x.shape, "shape mismatch \(shape) vs \(x.shape)")
        BLAS.axpy(alpha: alpha, x: x.storage, y: &storage)
    }

    /// Negates every element in place.
    public mutating func negate() {
        storage.withUnsafeMutableBufferPointer { p in
            for i in p.indices { p[i] = -p[i] }
        }
    }

    /// Multiplies every element by `s` in place.
    public mutating func scale(by s: Float) {
        storage.withUnsafeMutableBufferPointer { p in
            for i in p.indices { p[i] *= s }
        }
    }

    /// Elementwise absolute value.
    public var magnitude: Tensor { map { abs($0) } }
    /// Elementwise positive part `max(x, 0)`.
    public var positivePart: Tensor { map { max($0, 0) } }
    /// Elementwise negative part `min(x, 0)`.
    public var negativePart: Tensor { map { min($0, 0) } }
}

// MARK: - Reductions

extension Tensor {
    /// Sum of all elements (accumulated in Double).
    public func sum() -> Float {
        storage.withUnsafeBufferPointer { p in
            var s = 0.0
            for v in p { s += Double(v) }
            return Float(s)
        }
    }

    /// Mean of all elements.
    public func mean() -> Float { count == 0 ? 0 : sum() / Float(count) }

    /// Largest absolute value (0 for an empty tensor).
    public func maxAbs() -> Float {
        storage.withUnsafeBufferPointer { p in
            var m: Float = 0
            for v in p { m = max(m, abs(v)) }
            return m
        }
    }

    /// Squared L2 norm (accumulated in Double).
    public func squaredNorm() -> Double {
        storage.withUnsafeBufferPointer { p in
            var s = 0.0
            for v in p { s += Double(v) * Double(v) }
            return s
        }
    }

    /// True when every element is finite.
    /// One vectorisable pass, split over the cores: `x * 0` is 0 for finite x and NaN for NaN
    /// and infinities, so a sum is 0 exactly when every element is finite (and cannot overflow).
    public var isFinite: Bool {
        storage.withUnsafeBufferPointer { p in
            guard let base = p.baseAddress else { return true }
            return Parallel.all(p.count) { range in
                let raw = UnsafeRawPointer(base)
                var a0 = SIMD16<Float>(), a1 = SIMD16<Float>()
                var i = range.lowerBound
                while i + 32 <= range.upperBound {
                    a0 += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) * 0
                    a1 += raw.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD16<Float>.self) * 0
                    i += 32
                }
                var tail: Float = 0
                while i < range.upperBound { tail += base[i] * 0; i += 1 }
                return (a0 + a1).sum() + tail == 0
            }
        }
    }

    /// `self[i] *= other[i]`, split over the cores.
    public mutating func multiplyElementwise(by other: Tensor) {
        precondition(shape == other.shape, "shape mismatch \(shape) vs \(other.shape)")
        storage.withUnsafeMutableBufferPointer { r in
            other.storage.withUnsafeBufferPointer { o in
                let (rs, os) = (r.baseAddress, o.baseAddress)
                Parallel.elementwise(r.count) { range in
                    let (rs, os) = (rs!, os!)  // unwrapped once, so that the loop vectorises
                    for i in range { rs[i] *= os[i] }
                }
            }
        }
    }

    /// `self[i] *= |other[i]| * scale` (the parameter-feedback epilogue of the LFP rules), split
    /// over the cores. Returns whether every result is finite, found in the same pass (the
    /// trainer then need not read the feedback again to check it).
    @discardableResult
    public mutating func multiplyByMagnitude(of other: Tensor, scale: Float) -> Bool {
        precondition(shape == other.shape, "shape mismatch \(shape) vs \(other.shape)")
        return storage.withUnsafeMutableBufferPointer { r in
            other.storage.withUnsafeBufferPointer { o in
                let (rs, os) = (r.baseAddress, o.baseAddress)
                return Parallel.all(r.count) { range in
                    let (rs, os) = (rs!, os!)  // unwrapped once, so that the loop vectorises
                    var flags: UInt32 = 0
                    for i in range {
                        let v = rs[i] * abs(os[i]) * scale
                        rs[i] = v
                        flags |= v.nonFiniteFlag
                    }
                    return Float.allFinite(flags)
                }
            }
        }
    }

    /// Index of the first non-finite element, if any (a fast check first, then the search).
    public var firstNonFiniteIndex: Int? { isFinite ? nil : storage.firstIndex { !$0.isFinite } }

    /// Sums a `[rows, cols]` view over its rows: the result has `cols` elements.
    /// Used for bias gradients (rows = batch [x positions]).
    public static func columnSums(_ values: UnsafeBufferPointer<Float>, rows: Int, cols: Int) -> [Float] {
        var out = [Float](repeating: 0, count: cols)
        out.withUnsafeMutableBufferPointer { o in
            for r in 0..<rows {
                let base = r * cols
                for c in 0..<cols { o[c] += values[base + c] }
            }
        }
        return out
    }

    /// For a `[N, C]` tensor, the index of the largest element of every row.
    public func argmaxRows() -> [Int] {
        precondition(rank == 2, "argmaxRows needs a [N, C] tensor, got \(shape)")
        let n = shape[0], c = shape[1]
        var result = [Int](repeating: 0, count: n)
        storage.withUnsafeBufferPointer { p in
            for i in 0..<n {
                var best = 0
                var bestValue = -Float.infinity
                for j in 0..<c where p[i * c + j] > bestValue {
                    bestValue = p[i * c + j]
                    best = j
                }
                result[i] = best
            }
        }
        return result
    }
}

// MARK: - Matrix products

extension Tensor {
    /// Matrix product of two rank-2 tensors, optionally transposing either operand.
    /// `C = op(A) op(B)` computed by `BLAS.gemm`.
    public static func matmul(_ a: Tensor, transposeA: Bool = false, _ b: Tensor, transposeB: Bool = false) -> Tensor {
        precondition(a.rank == 2 && b.rank == 2, "matmul needs rank-2 tensors, got \(a.shape) and \(b.shape)")
        let m = transposeA ? a.shape[1] : a.shape[0]
        let k = transposeA ? a.shape[0] : a.shape[1]
        let kb = transposeB ? b.shape[1] : b.shape[0]
        let n = transposeB ? b.shape[0] : b.shape[1]
        precondition(k == kb, "matmul inner dimensions differ: \(a.shape)\(transposeA ? "ᵀ" : "") x \(b.shape)\(transposeB ? "ᵀ" : "")")
        if m == 0 || n == 0 || k == 0 { return Tensor(shape: [m, n]) }
        var c = Tensor(uninitializedShape: [m, n])  // beta = 0: fully overwritten
        a.storage.withUnsafeBufferPointer { pa in
            b.storage.withUnsafeBufferPointer { pb in
                c.storage.withUnsafeMutableBufferPointer { pc in
                    BLAS.gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                              alpha: 1, a: pa.baseAddress!, lda: a.shape[1],
                              b: pb.baseAddress!, ldb: b.shape[1],
                              beta: 0, c: pc.baseAddress!, ldc: n)
                }
            }
        }
        return c
    }
}

extension Float {
    /// A flag for finiteness checks fused into elementwise loops: OR it over the values written,
    /// then ask ``allFinite(_:)``. Non-finite floats have an all-ones exponent, and
    /// `(bits & 0x7F80_0000) + 0x0080_0000` carries into bit 31 exactly then. Only integer
    /// and/add/or, so the loop still vectorises (a comparison per element kept loops scalar).
    @inlinable public var nonFiniteFlag: UInt32 { (bitPattern & 0x7F80_0000) &+ 0x0080_0000 }

    /// Whether the OR of ``nonFiniteFlag`` over some values says they were all finite.
    @inlinable public static func allFinite(_ flags: UInt32) -> Bool { flags & 0x8000_0000 == 0 }
}
