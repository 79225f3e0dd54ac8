// The dense kernels for short batches, compiled once per instruction set (kernels.c includes
// this file with LFP_SUFFIX set): lfp_dense_weight_feedback and lfp_dense_forward in
// lfp_kernels.h.
//
// Both are C = A B with a short side of at most 64: tiles of R = LFP_DENSE_ROWS rows of A by 32
// columns of B in 2R accumulators over the whole depth K (R = 8 with AVX-512: 16 independent
// accumulators hide the FMA latency; with 4 the loop waited on it), B packed by the caller 32 columns at a time
// ([blocks][K][32], zero past the last column: read in place, every k was another page and the
// page walks stalled the loop). Row tiles walk down A along its rows (4 streams): walking down
// whole columns of tiles measured 1.5x slower.

/// acc[2r + j] = sum_k a[r * sr + k * sk] * bp[32 k + 16 j .. +16] for r < R, j < 2.
static inline __attribute__((always_inline)) void LFP_SUFFIX(dense_tile)(const float *a, long sr, long sk,
                                                                       const float *bp, int K, v16 *acc) {
    v16 c[2 * LFP_DENSE_ROWS];
    for (int i = 0; i < 2 * LFP_DENSE_ROWS; i++) c[i] = 0;
    for (int k = 0; k < K; k++) {
        const v16 x0 = lfp_load(bp + 32 * k), x1 = lfp_load(bp + 32 * k + 16);
        const float *ak = a + k * sk;
        for (int r = 0; r < LFP_DENSE_ROWS; r++) {
            const v16 sa = ak[r * sr];
            c[2 * r] += sa * x0;
            c[2 * r + 1] += sa * x1;
        }
    }
    for (int i = 0; i < 2 * LFP_DENSE_ROWS; i++) acc[i] = c[i];
}

/// One row: acc[j] = sum_k a[k * sk] * bp[32 k + 16 j .. +16] for j < 2.
static inline __attribute__((always_inline)) void LFP_SUFFIX(dense_row)(const float *a, long sk, const float *bp, int K, v16 *acc) {
    v16 a0 = 0, a1 = 0;
    for (int k = 0; k < K; k++) {
        const v16 s = a[k * sk];
        a0 += s * lfp_load(bp + 32 * k); a1 += s * lfp_load(bp + 32 * k + 16);
    }
    acc[0] = a0; acc[1] = a1;
}

static int LFP_SUFFIX(dense_weight_feedback)(const float *s, const float *xp, const float *w, float *out,
                                             int K, int M, int N, int m0, int m1, float scale) {
    typedef int v16i __attribute__((ext_vector_type(16)));
    typedef int v16iu __attribute__((ext_vector_type(16), aligned(4)));
    const v16i exponent = 0x7F800000, magnitude = 0x7FFFFFFF;
    v16i bad = 0;
    unsigned badScalar = 0;
    const int R = LFP_DENSE_ROWS, tiles = (m1 - m0) / R, perBlock = (16 + R - 1) / R;
    // Blocks of 16 rows, in each every 32 columns, in each the block's tiles: the 32 packed columns
    // stay in L1 while the tiles pass over them, and w and out are read and written along their rows.
    for (int t0 = 0; t0 < tiles; t0 += perBlock)
        for (int n = 0; n < N; n += 32) {
            const float *bp = xp + (long)n * K;
            for (int t = t0; t < tiles && t < t0 + perBlock; t++) {
                const int m = m0 + R * t;
                v16 acc[2 * LFP_DENSE_ROWS];
                LFP_SUFFIX(dense_tile)(s + m, 1, M, bp, K, acc);
                if (n + 32 <= N) {
                    for (int i = 0; i < 2 * R; i++) {
                        const long at = (long)(m + i / 2) * N + n + (i % 2) * 16;
                        const v16 v = acc[i] * (v16)(*(const v16iu *)(w + at) & magnitude) * scale;
                        lfp_store(out + at, v);
                        bad |= ((v16i)v & exponent) == exponent;
                    }
                } else {
                    for (int r = 0; r < R; r++)
                        for (int c = 0; n + c < N; c++) {
                            const long at = (long)(m + r) * N + n + c;
                            const float v = acc[2 * r + c / 16][c % 16] * __builtin_fabsf(w[at]) * scale;
                            out[at] = v;
                            badScalar |= !__builtin_isfinite(v);
                        }
                }
            }
        }
    for (int m = m0 + R * tiles; m < m1; m++)
        for (int n = 0; n < N; n += 32) {
            v16 acc[2];
            LFP_SUFFIX(dense_row)(s + m, M, xp + (long)n * K, K, acc);
            for (int c = 0; c < 32 && n + c < N; c++) {
                const long at = (long)m * N + n + c;
                const float v = acc[c / 16][c % 16] * __builtin_fabsf(w[at]) * scale;
                out[at] = v;
                badScalar |= !__builtin_isfinite(v);
            }
        }
    for (int i = 0; i < 16; i++) badScalar |= bad[i] != 0;
    return badScalar == 0;
}

static void LFP_SUFFIX(dense_forward)(const float *xp, const float *w, const float *bias, float *y,
                                      int K, int M, int N, int m0, int m1) {
    const int R = LFP_DENSE_ROWS, tiles = (m1 - m0) / R;
    for (int n = 0; n < N; n += 32) {
        const float *bp = xp + (long)n * K;
        const int columns = N - n < 32 ? N - n : 32;
        for (int t = 0; t < tiles; t++) {
            const int m = m0 + R * t;
            v16 acc[2 * LFP_DENSE_ROWS];
            LFP_SUFFIX(dense_tile)(w + (long)m * K, K, 1, bp, K, acc);
            for (int r = 0; r < R; r++) {
                const float b = bias ? bias[m + r] : 0;
                for (int c = 0; c < columns; c++) y[(long)(n + c) * M + m + r] = acc[2 * r + c / 16][c % 16] + b;
            }
        }
        for (int m = m0 + R * tiles; m < m1; m++) {
            v16 acc[2];
            LFP_SUFFIX(dense_row)(w + (long)m * K, 1, bp, K, acc);
            const float b = bias ? bias[m] : 0;
            for (int c = 0; c < columns; c++) y[(long)(n + c) * M + m] = acc[c / 16][c % 16] + b;
        }
    }
}
