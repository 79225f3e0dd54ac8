// The dense kernels for short batches, compiled once per instruction set (kernels.c includes
// this file with LFP_SUFFIX set): lfp_dense_weight_feedback and lfp_dense_forward in
// lfp_kernels.h.
//
// Both are C = A B with a short side of at most 64: tiles of 4 rows of A by 32 columns of B in
// 8 accumulators over the whole depth K, B packed by the caller 32 columns at a time
// ([blocks][K][32], zero past the last column: read in place, every k was another page and the
// page walks stalled the loop). Row tiles walk down A along its rows (4 streams): walking down
// whole columns of tiles measured 1.5x slower.

/// acc[2r + j] = sum_k a[r * sr + k * sk] * bp[32 k + 16 j .. +16] for r < 4, j < 2.
static inline __attribute__((always_inline)) void LFP_SUFFIX(dense_tile)(const float *a, long sr, long sk,
                                                                       const float *bp, int K, v16 *acc) {
    v16 a00 = 0, a01 = 0, a10 = 0, a11 = 0, a20 = 0, a21 = 0, a30 = 0, a31 = 0;
    const float *a0 = a, *a1 = a + sr, *a2 = a + 2 * sr, *a3 = a + 3 * sr;
    for (int k = 0; k < K; k++) {
        const v16 x0 = lfp_load(bp + 32 * k), x1 = lfp_load(bp + 32 * k + 16);
        const long o = k * sk;
        const v16 s0 = a0[o], s1 = a1[o], s2 = a2[o], s3 = a3[o];
        a00 += s0 * x0; a01 += s0 * x1;
        a10 += s1 * x0; a11 += s1 * x1;
        a20 += s2 * x0; a21 += s2 * x1;
        a30 += s3 * x0; a31 += s3 * x1;
    }
    acc[0] = a00; acc[1] = a01; acc[2] = a10; acc[3] = a11; acc[4] = a20; acc[5] = a21; acc[6] = a30; acc[7] = a31;
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
    const int tiles = (m1 - m0) / 4;
    // Blocks of 16 rows, in each every 32 columns, in each the 4 tiles: the 32 packed columns stay
    // in L1 while the tiles pass over them, and w and out are read and written along their rows.
    for (int t0 = 0; t0 < tiles; t0 += 4)
        for (int n = 0; n < N; n += 32) {
            const float *bp = xp + (long)n * K;
            for (int t = t0; t < tiles && t < t0 + 4; t++) {
                const int m = m0 + 4 * t;
                v16 acc[8];
                LFP_SUFFIX(dense_tile)(s + m, 1, M, bp, K, acc);
                if (n + 32 <= N) {
                    for (int i = 0; i < 8; i++) {
                        const long at = (long)(m + i / 2) * N + n + (i % 2) * 16;
                        const v16 v = acc[i] * (v16)(*(const v16iu *)(w + at) & magnitude) * scale;
                        lfp_store(out + at, v);
                        bad |= ((v16i)v & exponent) == exponent;
                    }
                } else {
                    for (int r = 0; r < 4; r++)
                        for (int c = 0; n + c < N; c++) {
                            const long at = (long)(m + r) * N + n + c;
                            const float v = acc[2 * r + c / 16][c % 16] * __builtin_fabsf(w[at]) * scale;
                            out[at] = v;
                            badScalar |= !__builtin_isfinite(v);
                        }
                }
            }
        }
    for (int m = m0 + 4 * tiles; m < m1; m++)
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
    const int tiles = (m1 - m0) / 4;
    for (int n = 0; n < N; n += 32) {
        const float *bp = xp + (long)n * K;
        const int columns = N - n < 32 ? N - n : 32;
        for (int t = 0; t < tiles; t++) {
            const int m = m0 + 4 * t;
            v16 acc[8];
            LFP_SUFFIX(dense_tile)(w + (long)m * K, K, 1, bp, K, acc);
            for (int r = 0; r < 4; r++) {
                const float b = bias ? bias[m + r] : 0;
                for (int c = 0; c < columns; c++) y[(long)(n + c) * M + m + r] = acc[2 * r + c / 16][c % 16] + b;
            }
        }
        for (int m = m0 + 4 * tiles; m < m1; m++) {
            v16 acc[2];
            LFP_SUFFIX(dense_row)(w + (long)m * K, 1, bp, K, acc);
            const float b = bias ? bias[m] : 0;
            for (int c = 0; c < columns; c++) y[(long)(n + c) * M + m] = acc[c / 16][c % 16] + b;
        }
    }
}
