// The library's own single-precision GEMM for AVX-512 (lfp_kernels.h, lfp_sgemm): a packed,
// cache-blocked product in the layout of BLIS / GotoBLAS, written for the large dense products
// of a training step (e.g. 256 x 3072 x 512), where it measured 0.99-1.20x the speed of
// OpenBLAS 0.3.21's Cooperlake kernels on the same blocks (`lfp bench gemm`, medians of
// alternating pairs; README, fix 20).
//
// Blocking (row-major C = op(A) op(B)):
//   for jc in steps of NC columns:            B block  [KC x NC]  packed, 1 MiB, for L2 (2 MiB here)
//     for pc in steps of KC (the depth):
//       pack op(B)[pc.., jc..]
//       for ic in steps of MC rows:           A block  [MC x KC]  packed
//         pack op(A)[ic.., pc..]
//         for ir in steps of MR rows:         A panel  [KC x MR]  12 KiB, stays in L1
//           for jr in steps of NR columns:    B panel  [KC x NR]  streams from L2
//             micro-kernel: C[MR x NR] (+)= A panel x B panel in 24 registers
// The A panel (whose elements are broadcast) is the one kept in L1 while the B panels (loaded
// as vectors) stream past it, as in BLIS (the opposite order measured no different here).
// Operands whose rows run along the depth (X and W in X W^T) are packed with 16x16 register
// transposes: with scalar copies there, an earlier version ran X W^T at 0.82x OpenBLAS.
#include "lfp_kernels.h"
#include <stdint.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define GEMM_MR 12    // rows of the micro-tile: 12 x 2 accumulators of 16 floats
#define GEMM_NR 32    // columns of the micro-tile: two vectors
#define GEMM_KC 256   // depth of a packed block
#define GEMM_MC 240   // rows of a packed A block (a multiple of MR)
#define GEMM_NC 1024  // columns of a packed B block (a multiple of NR)

#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))), apply_to = function)

/// The mask of the first `n` of 16 lanes (n may exceed 16 or be negative).
static inline __mmask16 lanes(int n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/// Transposes the 16 x 16 block held in r (r[i] = row i): afterwards r[j] holds column j.
/// (The convolution kernels' transpose16 in conv_body.h, generic vector shuffles, measured
/// slower here: `lfp bench gemm`'s X W^T at 0.96-0.98x OpenBLAS with it, 1.07-1.10x with
/// this one, three alternating runs each.)
static inline __attribute__((always_inline)) void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {  // interleave pairs of rows: 2 x 2 blocks
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {  // 4 x 4 blocks within each 128-bit lane
        const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int i = 0; i < 4; i++) {  // then the 128-bit lanes across rows 4 and 8 apart
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
}

/// dst[k * width + offset + i] = src[i * ld + k] for i < rows (<= 16) and k < depth, zero for
/// rows <= i < width - offset (at most 16 lanes written per k): `rows` rows of length `depth`,
/// k-contiguous in src, become a k-major panel.
static void pack_transposed(const float *src, long ld, int rows, int depth, float *dst, int width, int offset) {
    const __mmask16 valid = lanes(rows), written = lanes(width - offset);
    int k = 0;
    for (; k + 16 <= depth; k += 16) {
        __m512 r[16];
        for (int i = 0; i < 16; i++) r[i] = i < rows ? _mm512_loadu_ps(src + i * ld + k) : _mm512_setzero_ps();
        transpose16(r);
        for (int j = 0; j < 16; j++) _mm512_mask_storeu_ps(dst + (long)(k + j) * width + offset, written, _mm512_maskz_mov_ps(valid, r[j]));
    }
    for (; k < depth; k++) {
        float column[16] = {0};
        for (int i = 0; i < rows; i++) column[i] = src[i * ld + k];
        _mm512_mask_storeu_ps(dst + (long)k * width + offset, written, _mm512_loadu_ps(column));
    }
}

/// Packs rows [i0, i0 + mc) and depth [k0, k0 + kc) of op(A) as panels of MR rows:
/// ap[panel][k][r] = op(A)[i0 + panel * MR + r][k0 + k], zero past row i0 + mc.
static void pack_a(int ta, const float *a, int lda, int i0, int mc, int k0, int kc, float *ap) {
    for (int ip = 0; ip < mc; ip += GEMM_MR) {
        const int mr = mc - ip < GEMM_MR ? mc - ip : GEMM_MR;
        float *dst = ap + (long)ip * kc;
        if (!ta) {
            pack_transposed(a + (long)(i0 + ip) * lda + k0, lda, mr, kc, dst, GEMM_MR, 0);
        } else {  // op(A) = A^T: the MR rows of a panel are contiguous in each row of A
            const __mmask16 valid = lanes(mr);
            for (int k = 0; k < kc; k++)
                _mm512_mask_storeu_ps(dst + k * GEMM_MR, lanes(GEMM_MR), _mm512_maskz_loadu_ps(valid, a + (long)(k0 + k) * lda + i0 + ip));
        }
    }
}

/// Packs depth [k0, k0 + kc) and columns [j0, j0 + nc) of op(B) as panels of NR columns:
/// bp[panel][k][c] = op(B)[k0 + k][j0 + panel * NR + c], zero past column j0 + nc.
static void pack_b(int tb, const float *b, int ldb, int k0, int kc, int j0, int nc, float *bp) {
    for (int jp = 0; jp < nc; jp += GEMM_NR) {
        const int nr = nc - jp < GEMM_NR ? nc - jp : GEMM_NR;
        float *dst = bp + (long)jp * kc;
        if (!tb) {
            const __mmask16 m0 = lanes(nr), m1 = lanes(nr - 16);
            for (int k = 0; k < kc; k++) {
                const float *s = b + (long)(k0 + k) * ldb + j0 + jp;
                _mm512_store_ps(dst + k * GEMM_NR, _mm512_maskz_loadu_ps(m0, s));
                _mm512_store_ps(dst + k * GEMM_NR + 16, _mm512_maskz_loadu_ps(m1, s + 16));
            }
        } else {  // op(B) = B^T: the columns of a panel are rows of B, k-contiguous
            const float *s = b + (long)(j0 + jp) * ldb + k0;
            pack_transposed(s, ldb, nr < 16 ? nr : 16, kc, dst, GEMM_NR, 0);
            if (nr > 16) pack_transposed(s + 16L * ldb, ldb, nr - 16, kc, dst, GEMM_NR, 16);
            else for (int k = 0; k < kc; k++) _mm512_store_ps(dst + k * GEMM_NR + 16, _mm512_setzero_ps());
        }
    }
}

/// The magnitude epilogue of `lfp_sgemm_magnitude`: the weight tile, its leading dimension and
/// the scale (w == NULL: none), and the lanes that turned out non-finite.
typedef struct {
    const float *w;
    long ldw;
    float scale;
    __mmask16 nonfinite;
} magnitude_epilogue;

/// C[mr x nr] = alpha * (A panel x B panel) + beta * C (`first`, the first depth block), or
/// C += alpha * (A panel x B panel) (later blocks). beta == 0 never reads C (BLAS semantics:
/// NaN in C is overwritten). After the last depth block (`last`), with an epilogue, C is
/// multiplied by scale * |W| and non-finite results are noted.
static inline __attribute__((always_inline)) void micro_kernel(int kc, const float *restrict a, const float *restrict b,
                                                               float *c, long ldc, int mr, int nr,
                                                               float alpha, float beta, int first, int last, int next,
                                                               magnitude_epilogue *epilogue, const float *w) {
    __m512 c0[GEMM_MR], c1[GEMM_MR];
    for (int r = 0; r < GEMM_MR; r++) { c0[r] = _mm512_setzero_ps(); c1[r] = _mm512_setzero_ps(); }
    // The next tile of this block along the row (`next`: NR columns on) stores into C, and after
    // the last depth block reads W, in rows ldc and ldw apart: the hardware prefetchers follow
    // MR streams like these poorly, so ask for those lines now, a tile's multiply-adds ahead
    // (read prefetches: the target has no PREFETCHW). AMD Zen 4, 2 threads, alternating in
    // one process: the magnitude product 512 x 3072 x 32 1.12-1.15x faster, 512 x 3072 x 256
    // 1.08x, the plain one 1.02x and 1.08x.
    if (next)
        for (int r = 0; r < mr; r++) {
            _mm_prefetch((const char *)(c + r * ldc + GEMM_NR), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + r * ldc + GEMM_NR + 16), _MM_HINT_T0);
            if (last && w) {
                _mm_prefetch((const char *)(w + r * epilogue->ldw + GEMM_NR), _MM_HINT_T0);
                _mm_prefetch((const char *)(w + r * epilogue->ldw + GEMM_NR + 16), _MM_HINT_T0);
            }
        }
#pragma clang loop unroll_count(4)
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(b + k * GEMM_NR), b1 = _mm512_load_ps(b + k * GEMM_NR + 16);
        // The B panel streams from L2: ask for the rows 8 steps ahead.
        _mm_prefetch((const char *)(b + (k + 8) * GEMM_NR), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + (k + 8) * GEMM_NR + 16), _MM_HINT_T0);
#pragma clang loop unroll(full)
        for (int r = 0; r < GEMM_MR; r++) {
            const __m512 ar = _mm512_set1_ps(a[k * GEMM_MR + r]);
            c0[r] = _mm512_fmadd_ps(ar, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(ar, b1, c1[r]);
        }
    }
    const __mmask16 m0 = lanes(nr), m1 = lanes(nr - 16);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const int scaled = alpha != 1.0f, reads = !first || beta != 0.0f, magnitude = last && w != NULL;
    const __m512 vs = _mm512_set1_ps(epilogue->scale), zero = _mm512_setzero_ps();
    __mmask16 nonfinite = 0;
    for (int r = 0; r < mr; r++) {
        float *row = c + r * ldc;
        __m512 v0 = scaled ? _mm512_mul_ps(va, c0[r]) : c0[r], v1 = scaled ? _mm512_mul_ps(va, c1[r]) : c1[r];
        if (reads) {
            __m512 old0 = _mm512_maskz_loadu_ps(m0, row), old1 = _mm512_maskz_loadu_ps(m1, row + 16);
            if (first && beta != 1.0f) { old0 = _mm512_mul_ps(vb, old0); old1 = _mm512_mul_ps(vb, old1); }
            v0 = _mm512_add_ps(v0, old0);
            v1 = _mm512_add_ps(v1, old1);
        }
        if (magnitude) {  // scale * |W| * v, in the order of Tensor.multiplyByMagnitude (v * |W| * scale)
            const float *wr = w + r * epilogue->ldw;
            v0 = _mm512_mul_ps(_mm512_mul_ps(v0, _mm512_abs_ps(_mm512_maskz_loadu_ps(m0, wr))), vs);
            v1 = _mm512_mul_ps(_mm512_mul_ps(v1, _mm512_abs_ps(_mm512_maskz_loadu_ps(m1, wr + 16))), vs);
            // x * 0 is NaN exactly when x is NaN or infinite.
            nonfinite |= _mm512_mask_cmp_ps_mask(m0, _mm512_mul_ps(v0, zero), zero, _CMP_UNORD_Q)
                       | _mm512_mask_cmp_ps_mask(m1, _mm512_mul_ps(v1, zero), zero, _CMP_UNORD_Q);
        }
        _mm512_mask_storeu_ps(row, m0, v0);
        _mm512_mask_storeu_ps(row + 16, m1, v1);
    }
    epilogue->nonfinite |= nonfinite;
}

static void sgemm_avx512(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc, float *scratch,
                         magnitude_epilogue *epilogue) {
    // 64-byte aligned packed blocks (the micro-kernel loads the B panel with aligned loads).
    float *ap = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *bp = ap + (long)GEMM_MC * GEMM_KC;
    for (int jc = 0; jc < n; jc += GEMM_NC) {
        const int nc = n - jc < GEMM_NC ? n - jc : GEMM_NC;
        for (int pc = 0; pc < k; pc += GEMM_KC) {
            const int kc = k - pc < GEMM_KC ? k - pc : GEMM_KC;
            pack_b(tb, b, ldb, pc, kc, jc, nc, bp);
            for (int ic = 0; ic < m; ic += GEMM_MC) {
                const int mc = m - ic < GEMM_MC ? m - ic : GEMM_MC;
                pack_a(ta, a, lda, ic, mc, pc, kc, ap);
                for (int ir = 0; ir < mc; ir += GEMM_MR) {
                    const int mr = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
                    for (int jr = 0; jr < nc; jr += GEMM_NR) {
                        const int nr = nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
                        const float *w = epilogue->w ? epilogue->w + (long)(ic + ir) * epilogue->ldw + jc + jr : NULL;
                        micro_kernel(kc, ap + (long)ir * kc, bp + (long)jr * kc, c + (long)(ic + ir) * ldc + jc + jr, ldc,
                                     mr, nr, alpha, beta, pc == 0, pc + kc >= k, jr + GEMM_NR < nc, epilogue, w);
                    }
                }
            }
        }
    }
}

#pragma clang attribute pop
#endif

long lfp_sgemm_scratch_floats(void) {
#if defined(__x86_64__)
    return (long)GEMM_MC * GEMM_KC + (long)GEMM_NC * GEMM_KC + 16;
#else
    return 0;
#endif
}

int lfp_sgemm(int isa, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc, float *scratch) {
#if defined(__x86_64__)
    if (isa == 2 && m > 0 && n > 0 && k > 0 && alpha != 0.0f) {
        magnitude_epilogue none = {NULL, 0, 1.0f, 0};
        sgemm_avx512(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, scratch, &none);
        return 1;
    }
#endif
    (void)isa; (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)lda;
    (void)b; (void)ldb; (void)beta; (void)c; (void)ldc; (void)scratch;
    return 0;
}

int lfp_sgemm_magnitude(int isa, int ta, int tb, int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                        float *c, int ldc, const float *w, int ldw, float scale, float *scratch, int *finite) {
#if defined(__x86_64__)
    if (isa == 2 && m > 0 && n > 0 && k > 0 && w != NULL) {
        magnitude_epilogue epilogue = {w, ldw, scale, 0};
        sgemm_avx512(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc, scratch, &epilogue);
        *finite = epilogue.nonfinite == 0;
        return 1;
    }
#endif
    (void)isa; (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b; (void)ldb;
    (void)c; (void)ldc; (void)w; (void)ldw; (void)scale; (void)scratch; (void)finite;
    return 0;
}
