// The dense weight-feedback kernel, compiled once per instruction set (kernels.c includes this
// file with LFP_SUFFIX set). See lfp_dense_weight_feedback in lfp_kernels.h.
//
// Loop order: blocks of 16 rows (4 tiles of 4), in each every 32 columns, in each the 4 tiles.
// The 32 columns of x, packed contiguous by the caller (xp [N/32][K][32]: read straight from x,
// each k is another page, and the page walks stalled the loop), stay in L1 while the block's
// tiles pass over them; w and out are read and written along their rows (16 streams: walking
// down whole columns of tiles instead measured 1.5x slower). The tiles' s values are packed
// contiguous too ([tile][k][4]).

static int LFP_SUFFIX(dense_weight_feedback)(const float *s, const float *x, const float *xp, const float *w, float *out,
                                             int K, int M, int N, int m0, int m1, float scale) {
    typedef int v16i __attribute__((ext_vector_type(16)));
    typedef int v16iu __attribute__((ext_vector_type(16), aligned(4)));
    const v16i exponent = 0x7F800000, magnitude = 0x7FFFFFFF;
    v16i bad = 0;
    unsigned badScalar = 0;
    const int rows = m1 - m0, tiles = rows / 4, vn = N / 32 * 32;
    float *packed = malloc(sizeof(float) * (size_t)(tiles > 0 ? tiles : 1) * (size_t)K * 4);
    if (!packed) return -1;
    for (int t = 0; t < tiles; t++)
        for (int k = 0; k < K; k++)
            for (int r = 0; r < 4; r++) packed[((long)t * K + k) * 4 + r] = s[(long)k * M + m0 + 4 * t + r];
    for (int t0 = 0; t0 < tiles; t0 += 4)
    for (int n = 0; n < vn; n += 32) {
        // Tiles of 4 rows x 32 columns: 8 accumulators; per k, 2 loads of x and 4 broadcasts of s.
        for (int t = t0; t < tiles && t < t0 + 4; t++) {
            const float *st = packed + (long)t * K * 4;
            v16 a00 = 0, a01 = 0, a10 = 0, a11 = 0, a20 = 0, a21 = 0, a30 = 0, a31 = 0;
            const float *xn = xp + (long)n * K;
            for (int k = 0; k < K; k++) {
                const float *xk = xn + 32 * k, *sk = st + 4 * k;
                const v16 x0 = lfp_load(xk), x1 = lfp_load(xk + 16);
                const v16 s0 = sk[0], s1 = sk[1], s2 = sk[2], s3 = sk[3];
                a00 += s0 * x0; a01 += s0 * x1;
                a10 += s1 * x0; a11 += s1 * x1;
                a20 += s2 * x0; a21 += s2 * x1;
                a30 += s3 * x0; a31 += s3 * x1;
            }
            const int m = m0 + 4 * t;
            v16 acc[8] = {a00, a01, a10, a11, a20, a21, a30, a31};
            for (int i = 0; i < 8; i++) {
                const long at = (long)(m + i / 2) * N + n + (i % 2) * 16;
                const v16 v = acc[i] * (v16)(*(const v16iu *)(w + at) & magnitude) * scale;
                lfp_store(out + at, v);
                bad |= ((v16i)v & exponent) == exponent;
            }
        }
    }
    for (int n = 0; n < vn; n += 32) {
        // The rows after the last tile, one at a time.
        for (int m = m0 + 4 * tiles; m < m1; m++) {
            v16 a0 = 0, a1 = 0;
            const float *xn = xp + (long)n * K;
            for (int k = 0; k < K; k++) {
                const float *xk = xn + 32 * k;
                const v16 sk = s[(long)k * M + m];
                a0 += sk * lfp_load(xk); a1 += sk * lfp_load(xk + 16);
            }
            const long at = (long)m * N + n;
            const v16 v0 = a0 * (v16)(*(const v16iu *)(w + at) & magnitude) * scale;
            const v16 v1 = a1 * (v16)(*(const v16iu *)(w + at + 16) & magnitude) * scale;
            lfp_store(out + at, v0);
            lfp_store(out + at + 16, v1);
            bad |= ((v16i)v0 & exponent) == exponent;
            bad |= ((v16i)v1 & exponent) == exponent;
        }
    }
    free(packed);
    // Columns after the last 32, scalar.
    for (int m = m0; m < m1; m++)
        for (int n = vn; n < N; n++) {
            float acc = 0;
            for (int k = 0; k < K; k++) acc += s[(long)k * M + m] * x[(long)k * N + n];
            const float v = acc * __builtin_fabsf(w[(long)m * N + n]) * scale;
            out[(long)m * N + n] = v;
            badScalar |= !__builtin_isfinite(v);
        }
    for (int i = 0; i < 16; i++) badScalar |= bad[i] != 0;
    return badScalar == 0;
}
