/// Reductions of contiguous floats in 32 lanes (two 16-float vectors), the lanes added at the
/// end. A plain `for` loop accumulating into one `Float` is a single chain of dependent
/// additions, which the compiler may not reorder (it would change the rounding), so it runs at
/// one addition per add latency; the lanes run at the vector units' rate. Results differ from
/// the plain loop's in the last bits (another summation order), deterministically.
enum LaneSums {
    /// `sum of p[0 ..< count]`.
    @inline(__always) static func sum(_ p: UnsafePointer<Float>, count: Int) -> Float {
        let raw = UnsafeRawPointer(p)
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>()
        var i = 0
        while i + 32 <= count {
            a0 += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            a1 += raw.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD16<Float>.self)
            i += 32
        }
        var total = (a0 + a1).sum()
        while i < count { total += p[i]; i += 1 }
        return total
    }

    /// `sum of a[i] * b[i]` for `i < count`.
    @inline(__always) static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>()
        var i = 0
        while i + 32 <= count {
            a0 += ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) * rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            a1 += ra.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD16<Float>.self)
                * rb.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD16<Float>.self)
            i += 32
        }
        var total = (a0 + a1).sum()
        while i < count { total += a[i] * b[i]; i += 1 }
        return total
    }

    /// `sum of (p[i] - mean)^2` for `i < count`.
    @inline(__always) static func squaredDeviation(_ p: UnsafePointer<Float>, count: Int, from mean: Float) -> Float {
        let raw = UnsafeRawPointer(p), m = SIMD16<Float>(repeating: mean)
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>()
        var i = 0
        while i + 32 <= count {
            let d0 = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) - m
            let d1 = raw.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD16<Float>.self) - m
            a0 += d0 * d0
            a1 += d1 * d1
            i += 32
        }
        var total = (a0 + a1).sum()
        while i < count { let d = p[i] - mean; total += d * d; i += 1 }
        return total
    }
}
