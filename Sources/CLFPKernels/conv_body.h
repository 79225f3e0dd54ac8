// The direct convolution kernels, included once per instruction set by conv.c with
// LFP_SUFFIX(name) naming the copy (conv.c wraps the include in a target attribute).
// v16 is 16 floats: one zmm register with AVX-512, two ymm with AVX2, four xmm otherwise.

#define LFP_INLINE static inline __attribute__((always_inline))

// Transposes the 16x16 matrix in r[0..15] in place: four stages, each swapping the off-diagonal
// blocks of size 8, 4, 2 and 1 between rows i and i + s (64 shuffles instead of 256 scalar moves).
LFP_INLINE void LFP_SUFFIX(transpose16_after_halves)(v16 *r);
LFP_INLINE void LFP_SUFFIX(transpose16)(v16 *r) {
    for (int i = 0; i < 16; i++) {
        if (i & 8) continue;
        const v16 a = r[i], b = r[i + 8];
        r[i] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
        r[i + 8] = __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    }
    LFP_SUFFIX(transpose16_after_halves)(r);
}

// Transposes the 16x16 block whose rows start at p + l * stride (l < 16) into r. The first
// stage (swapping halves) is done by the loads: each register is assembled from two 8-float
// halves of two rows (a load and an insert from memory, which can issue beside the FMA and
// shuffle units' other work instead of one more shuffle).
LFP_INLINE void LFP_SUFFIX(transpose16_rows)(const float *p, long stride, v16 *r) {
    for (int i = 0; i < 8; i++) {
        const v8u *a = (const v8u *)(p + i * stride), *b = (const v8u *)(p + (i + 8) * stride);
        r[i] = __builtin_shufflevector((v8)a[0], (v8)b[0], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        r[i + 8] = __builtin_shufflevector((v8)a[1], (v8)b[1], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    }
    LFP_SUFFIX(transpose16_after_halves)(r);
}

// The three stages of transpose16 after the first.
LFP_INLINE void LFP_SUFFIX(transpose16_after_halves)(v16 *r) {
    for (int i = 0; i < 16; i++) {
        if (i & 4) continue;
        const v16 a = r[i], b = r[i + 4];
        r[i] = __builtin_shufflevector(a, b, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
        r[i + 4] = __builtin_shufflevector(a, b, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    }
    for (int i = 0; i < 16; i++) {
        if (i & 2) continue;
        const v16 a = r[i], b = r[i + 2];
        r[i] = __builtin_shufflevector(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
        r[i + 2] = __builtin_shufflevector(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    }
    for (int i = 0; i < 16; i++) {
        if (i & 1) continue;
        const v16 a = r[i], b = r[i + 1];
        r[i] = __builtin_shufflevector(a, b, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
        r[i + 1] = __builtin_shufflevector(a, b, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    }
}

// Forward tile: T consecutive output columns of one output row, 16 output channels, kept in
// T accumulators while the loop runs over every (c, ki, kj) of the kernel: per step one
// vector of packed weights and T broadcast inputs (LFP-MATH.md's Z = A W^T, written per tap).
//
// With KWc > 0 the tile is a whole output row of a stride-1 convolution whose kernel is KWc
// wide with PWc columns of zero padding on each side (KWc, PWc, T compile-time constants):
// then which (t, kj) read a padding column is known at compile time and those multiply-adds
// are left out. Input maps of unpadded 5x5 layers (padding 4) multiplied zeros in a third of
// theirs: for LeNet's second layers 8 of 12 (or 10 of 14) columns of each tap are the image.
LFP_INLINE void LFP_SUFFIX(forward_tile)(const float *xb, const float *wr, const float *bias, float *out,
                                         const lfp_conv_geometry *g, int Hp, int Wp, int Opad,
                                         int channels, int kiLo, int kiHi, int T, int unitStride, int KWc, int PWc) {
    v16 acc[LFP_FORWARD_TILE];
    const v16 b = lfp_load(bias);
    for (int t = 0; t < T; t++) acc[t] = b;
    // With a constant stride the T inputs of a tap sit at constant offsets from one pointer;
    // with a run-time stride each needs its own register, and they spill.
    const int sw = unitStride ? 1 : g->SW;
    // Kernel rows kiLo..<kiHi see image rows; the others see padding (zeros) and are skipped.
    for (int c = 0; c < g->C; c++) {
        const float *xc = xb + (long)c * Hp * Wp;
        for (int ki = kiLo; ki < kiHi; ki++) {
            const float *xk = xc + (long)ki * g->DH * Wp;
            const float *wk = wr + ((long)c * g->KH + ki) * g->KW * Opad;
            if (KWc) {
                // Image columns of the padded row: PWc ..< PWc + W, W = T + KWc - 1 - 2 PWc.
#pragma clang loop unroll(full)
                for (int kj = 0; kj < KWc; kj++) {
                    const v16 w = lfp_load(wk + (long)kj * Opad);
#pragma clang loop unroll(full)
                    for (int t = 0; t < T; t++)
                        if (t + kj >= PWc && t + kj < T + KWc - 1 - PWc) acc[t] += w * xk[t + kj];
                }
                continue;
            }
            for (int kj = 0; kj < g->KW; kj++) {
                const float *xr = xk + kj * g->DW;
                v16 w = lfp_load(wk);
                wk += Opad;
                for (int t = 0; t < T; t++) acc[t] += w * xr[t * sw];
            }
        }
    }
    // out points at y[n, ob, oy, ox0]; channel o of the tile lives OH*OW floats further.
    // Transpose [position][channel] to [channel][position], 16 positions at a time, and store.
    const long plane = (long)g->OH * g->OW;
    for (int t0 = 0; t0 < T; t0 += 16) {
        const int count = T - t0 < 16 ? T - t0 : 16;
        v16 rows[16];
        for (int t = 0; t < 16; t++) rows[t] = t < count ? acc[t0 + t] : (v16)0;
        LFP_SUFFIX(transpose16)(rows);
        for (int o = 0; o < channels; o++) memcpy(out + o * plane + t0, &rows[o], sizeof(float) * count);
    }
}

#if LFP_ROW_KERNELS
// Row tile, for layers with few channels on one side (a first layer's forward map with 1 or 2
// input channels, or its input map to 2-8 channels), where the tile above wastes lanes or
// transposes more than it multiplies: vectors run along an output row instead of across
// channels. G output channels x NR output rows x NC vectors of 16 output columns starting at
// columns 0 and OW - 16 (two vectors cover a row of 17-32; where they overlap both compute
// the same sums in the same order, so the second store rewrites equal values). Per tap one
// unaligned input vector per row and column start and G broadcast weights, G*NR*NC <= 16
// accumulators. Stride 1, dilation 1; xs is the (padded) sample, whose padding rows are
// skipped where every row of the tile would read them.
//
// With `paired` (rows of 17-24 columns, where the two vectors overlap in 8-15 columns: a
// quarter of the multiply-adds computed twice for rows of 24), NR is even and each pair of
// rows takes three vectors: one at column 0 of each row and one holding the last 8 columns
// of both (two 8-float halves), G * 3 * NR / 2 <= 24 accumulators. Columns below 16 in the
// halves get the same sums, in the same order, as in the full vectors.
LFP_INLINE void LFP_SUFFIX(row_tile)(const float *xs, const float *wp, const float *b, float *y,
                                     const lfp_conv_geometry *g, int Hp, int Wp, int Opad, int channels,
                                     int oy, int G, int NR, int NC, int paired) {
    const int NV = paired ? 3 * NR / 2 : NR * NC, col1 = g->OW - 16, col2 = g->OW - 8;
    v16 acc[24];
    for (int gi = 0; gi < G; gi++)
        for (int v = 0; v < NV; v++) acc[gi * NV + v] = b[gi];
    const long plane = (long)Hp * Wp;
    // Kernel rows that read only padding rows for all NR output rows are left out (input maps
    // of unpadded layers have padding K - 1: 4 of the 5 kernel rows at the first output row).
    const int kiFirst = g->PH - oy - (NR - 1) > 0 ? g->PH - oy - (NR - 1) : 0;
    const int kiEnd = g->PH + g->H - oy < g->KH ? g->PH + g->H - oy : g->KH;
    for (int c = 0; c < g->C; c++)
        for (int ki = kiFirst; ki < kiEnd; ki++) {
            const float *row = xs + c * plane + (long)(oy + ki) * Wp;
            const float *wk = wp + (long)(c * g->KH + ki) * g->KW * Opad;
            for (int kj = 0; kj < g->KW; kj++) {
                v16 xv[16];
                if (paired)
                    for (int p = 0; p < NR / 2; p++) {
                        const float *r0 = row + (long)(2 * p) * Wp + kj, *r1 = r0 + Wp;
                        xv[3 * p] = lfp_load(r0);
                        xv[3 * p + 1] = lfp_load(r1);
                        xv[3 * p + 2] = __builtin_shufflevector((v8)(*(const v8u *)(r0 + col2)), (v8)(*(const v8u *)(r1 + col2)),
                                                                0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
                    }
                else
                    for (int a = 0; a < NR; a++)
                        for (int cc = 0; cc < NC; cc++) xv[a * NC + cc] = lfp_load(row + (long)a * Wp + (cc ? col1 : 0) + kj);
                for (int gi = 0; gi < G; gi++) {
                    const v16 w = wk[(long)kj * Opad + gi];
                    for (int v = 0; v < NV; v++) acc[gi * NV + v] += xv[v] * w;
                }
            }
        }
    const long outPlane = (long)g->OH * g->OW;
    for (int gi = 0; gi < G && gi < channels; gi++) {
        float *out = y + gi * outPlane + (long)oy * g->OW;
        const v16 *r = acc + gi * NV;
        if (paired)
            for (int p = 0; p < NR / 2; p++) {
                float *y0 = out + (long)(2 * p) * g->OW, *y1 = y0 + g->OW;
                lfp_store(y0, r[3 * p]);
                lfp_store(y1, r[3 * p + 1]);
                *(v8u *)(y0 + col2) = __builtin_shufflevector(r[3 * p + 2], r[3 * p + 2], 0, 1, 2, 3, 4, 5, 6, 7);
                *(v8u *)(y1 + col2) = __builtin_shufflevector(r[3 * p + 2], r[3 * p + 2], 8, 9, 10, 11, 12, 13, 14, 15);
            }
        else
            for (int a = 0; a < NR; a++)
                for (int cc = 0; cc < NC; cc++) lfp_store(out + (long)a * g->OW + (cc ? col1 : 0), r[a * NC + cc]);
    }
}

static void LFP_SUFFIX(forward_rows)(const float *x, const float *wp, const float *bias, float *y,
                                     int n0, int n1, const lfp_conv_geometry *g, float *scratch) {
    const int Hp = g->H + 2 * g->PH, Wp = g->W + 2 * g->PW, Opad = lfp_conv_padded_channels(g->O);
    const long inSize = (long)g->C * g->H * g->W, outSize = (long)g->O * g->OH * g->OW, outPlane = (long)g->OH * g->OW;
    const int twoColumns = g->OW > 16, pairedTails = g->OW > 16 && g->OW <= 24;
    for (int n = n0; n < n1; n++) {
        const float *xs = lfp_padded_sample(x + n * inSize, g->C, g->H, g->W, g->PH, g->PW, scratch);
        for (int ob = 0; ob < g->O;) {
            // Channel groups of 8, 4, 3, 2 and 1 (a group of 5-7 runs as 8 with the packed
            // weights' zero columns) x 1, 2 or 4 rows: 8-16 accumulators; with paired tails
            // 2, 4 or 8 rows: 12-24.
            const int left = g->O - ob, G = left >= 5 ? 8 : left, rows = G >= 8 ? 1 : G >= 3 ? 2 : 4;
            const int paired = pairedTails && g->OH >= 2 * rows, NR = paired ? 2 * rows : rows;
            float b[8] = {0};
            if (bias) for (int o = 0; o < G && o < left; o++) b[o] = bias[ob + o];
            float *out = y + n * outSize + ob * outPlane;
            for (int r = 0; r < g->OH; r += NR) {
                // The last tile moves up to end at the last row (rows computed twice are equal).
                const int oy = r + NR <= g->OH ? r : g->OH - NR;
                switch ((G * 16 + NR) * 2 + paired) {
#define LFP_ROWS(GG, RR)                                                                                              \
    case (GG * 16 + RR) * 2:                                                                                          \
        if (twoColumns) LFP_SUFFIX(row_tile)(xs, wp + ob, b, out, g, Hp, Wp, Opad, left, oy, GG, RR, 2, 0);          \
        else LFP_SUFFIX(row_tile)(xs, wp + ob, b, out, g, Hp, Wp, Opad, left, oy, GG, RR, 1, 0);                     \
        break;                                                                                                        \
    case (GG * 16 + 2 * RR) * 2 + 1:                                                                                  \
        LFP_SUFFIX(row_tile)(xs, wp + ob, b, out, g, Hp, Wp, Opad, left, oy, GG, 2 * RR, 2, 1);                      \
        break;
                    LFP_ROWS(8, 1) LFP_ROWS(4, 2) LFP_ROWS(3, 2) LFP_ROWS(2, 4) LFP_ROWS(1, 4)
#undef LFP_ROWS
                    default: break;
                }
            }
            ob += G;
        }
    }
}

// Lane tiles, for one output channel (the input map of a first layer with one input channel):
// vectors run across 16 samples instead, so that every lane is a real output whatever the
// channel counts and row widths. Vectors along rows (the tiles above) with one output channel
// loaded an input vector per multiply-add (slower than im2col + sgemm); sharing each load
// between the kernel rows they still spent a fifth of their lanes on the row ends and the
// column padding, and were 15 % slower than these tiles on one core.
// A block of 16 samples is transposed into xT [C][H][W][16] (16x16 transposes in registers),
// the tiles write yT [OH][OW][16], which is transposed back.
//
// Transposing is bound by moving the data (a plain copy in the same order took 90 % of its
// time). Transposing each input row inside the first tile that reads it, to overlap those
// moves with the tile's multiply-adds, ran slower (the transpose's 16 registers, the tile's
// up to 16 accumulators and its 5 weights do not fit in 32).

// Tile: T consecutive output columns from ox0 of output row oy in T accumulators. Per
// (channel, kernel row) the KW weights are broadcast once and each of the T + KW - 1 input
// vectors of the row is loaded once (aligned) and serves every kernel column that meets it:
// T * KW multiply-adds for T + KW - 1 loads. Input columns in the padding (m outside mlo ..<
// mhi) are skipped with their multiply-adds, as are kernel rows in the padding. T and KW are
// compile-time.
LFP_INLINE void LFP_SUFFIX(lane_tile)(const float *xT, const float *wp, float bias, float *yT,
                                      const lfp_conv_geometry *g, int Opad, int oy, int ox0, int T, int KW) {
    v16 acc[16];
#pragma clang loop unroll(full)
    for (int t = 0; t < T; t++) acc[t] = bias;
    const long W = g->W;
    // Input column ox0 - PW + m is an image column for mlo <= m < mhi.
    const int mlo = g->PW - ox0 > 0 ? g->PW - ox0 : 0;
    const int mhi = g->W + g->PW - ox0 < T + KW - 1 ? g->W + g->PW - ox0 : T + KW - 1;
    for (int c = 0; c < g->C; c++)
        for (int ki = 0; ki < g->KH; ki++) {
            const int iy = oy + ki - g->PH;
            if (iy < 0 || iy >= g->H) continue;
            const float *row = xT + (((long)c * g->H + iy) * W + ox0 - g->PW) * 16;
            const float *wk = wp + ((long)c * g->KH + ki) * KW * Opad;
            v16 w[5];
#pragma clang loop unroll(full)
            for (int kj = 0; kj < KW; kj++) w[kj] = wk[(long)kj * Opad];
#pragma clang loop unroll(full)
            for (int m = 0; m < T + KW - 1; m++) {
                if (m < mlo || m >= mhi) continue;
                const v16 v = *(const v16 *)(row + (long)m * 16);
#pragma clang loop unroll(full)
                for (int kj = 0; kj < KW; kj++)
                    if (m - kj >= 0 && m - kj < T) acc[m - kj] += v * w[kj];
            }
        }
#pragma clang loop unroll(full)
    for (int t = 0; t < T; t++) *(v16 *)(yT + ((long)oy * g->OW + ox0 + t) * 16) = acc[t];
}

static void LFP_SUFFIX(forward_lanes)(const float *x, const float *wp, const float *bias, float *y,
                                      int n0, int n1, const lfp_conv_geometry *g, float *scratch) {
    const long inSize = (long)g->C * g->H * g->W, outSize = (long)g->OH * g->OW;
    const int OW = g->OW, Opad = lfp_conv_padded_channels(g->O);
    // xT and yT, 64-byte aligned (the tiles' loads and stores are aligned).
    float *xT = (float *)(((unsigned long)scratch + 63) & ~63ul), *yT = xT + inSize * 16;
    const float b = bias ? bias[0] : 0;
    // Output rows in tiles of T <= 16 columns, the last moved left to end at the row's end.
    const int tiles = (OW + 15) / 16, T = (OW + tiles - 1) / tiles;
    for (int n = n0; n < n1; n += 16) {
        const int lanes = n1 - n < 16 ? n1 - n : 16;
        // In: [C][H][W][16] is each sample's floats in order with the 16 samples side by side,
        // so 16 consecutive floats of the samples are transposed at a time (the last block
        // moved back).
        for (long i = 0; i < inSize; i += 16) {
            const long j = i + 16 <= inSize ? i : inSize - 16;
            v16 block[16];
            if (lanes == 16) {
                LFP_SUFFIX(transpose16_rows)(x + n * inSize + j, inSize, block);
            } else {
                for (int l = 0; l < 16; l++) block[l] = l < lanes ? lfp_load(x + (n + l) * inSize + j) : (v16)0;
                LFP_SUFFIX(transpose16)(block);
            }
            for (int q = 0; q < 16; q++) *(v16 *)(xT + (j + q) * 16) = block[q];
        }
        for (int oy = 0; oy < g->OH; oy++)
            for (int k = 0; k < tiles; k++) {
                const int ox0 = k * T + T <= OW ? k * T : OW - T;
                switch (T * 8 + g->KW) {
#define LFP_LANES(TT)                                                                                                 \
    case TT * 8 + 3: LFP_SUFFIX(lane_tile)(xT, wp, b, yT, g, Opad, oy, ox0, TT, 3); break;                            \
    case TT * 8 + 5: LFP_SUFFIX(lane_tile)(xT, wp, b, yT, g, Opad, oy, ox0, TT, 5); break;
                    LFP_LANES(8) LFP_LANES(9) LFP_LANES(10) LFP_LANES(11) LFP_LANES(12) LFP_LANES(13) LFP_LANES(14)
                    LFP_LANES(15) LFP_LANES(16)
#undef LFP_LANES
                    default: break;
                }
            }
        // Out: [OH][OW][16] is each sample's outputs in order with the samples side by side, so
        // 16 consecutive outputs at a time are transposed back (the last block moved back).
        for (long i = 0; i < outSize; i += 16) {
            const long j = i + 16 <= outSize ? i : outSize - 16;
            v16 block[16];
            for (int q = 0; q < 16; q++) block[q] = *(const v16 *)(yT + (j + q) * 16);
            LFP_SUFFIX(transpose16)(block);
            if (lanes == 16)
                for (int l = 0; l < 16; l++) lfp_store(y + (n + l) * outSize + j, block[l]);
            else
                for (int l = 0; l < lanes; l++) lfp_store(y + (n + l) * outSize + j, block[l]);
        }
    }
}
#endif

static void LFP_SUFFIX(forward)(const float *x, const float *wp, const float *bias, float *y,
                                int n0, int n1, const lfp_conv_geometry *g, float *scratch) {
#if LFP_ROW_KERNELS
    if (lfp_lane_tiles_apply(g)) {
        LFP_SUFFIX(forward_lanes)(x, wp, bias, y, n0, n1, g, scratch);
        return;
    }
    if (lfp_row_tiles_apply(g)) {
        LFP_SUFFIX(forward_rows)(x, wp, bias, y, n0, n1, g, scratch);
        return;
    }
#endif
    const int Hp = g->H + 2 * g->PH, Wp = g->W + 2 * g->PW, Opad = lfp_conv_padded_channels(g->O);
    const long inSize = (long)g->C * g->H * g->W, outSize = (long)g->O * g->OH * g->OW;
    const int tiles = (g->OW + LFP_FORWARD_TILE - 1) / LFP_FORWARD_TILE;
    const int width = (g->OW + tiles - 1) / tiles;
    for (int n = n0; n < n1; n++) {
        const float *xs = lfp_padded_sample(x + n * inSize, g->C, g->H, g->W, g->PH, g->PW, scratch);
        for (int ob = 0; ob < g->O; ob += 16) {
            const int channels = g->O - ob < 16 ? g->O - ob : 16;
            float b[16] = {0};
            if (bias) for (int o = 0; o < channels; o++) b[o] = bias[ob + o];
            for (int oy = 0; oy < g->OH; oy++) {
                // Padded row oy*SH + ki*DH is an image row for PH <= it < PH + H.
                int kiLo = 0, kiHi = g->KH;
                while (kiLo < kiHi && oy * g->SH + kiLo * g->DH < g->PH) kiLo++;
                while (kiHi > kiLo && oy * g->SH + (kiHi - 1) * g->DH >= g->PH + g->H) kiHi--;
                for (int ox0 = 0; ox0 < g->OW; ox0 += width) {
                    const int T = g->OW - ox0 < width ? g->OW - ox0 : width;
                    const float *xb = xs + (long)oy * g->SH * Wp + (long)ox0 * g->SW;
                    float *out = y + n * outSize + (long)ob * g->OH * g->OW + (long)oy * g->OW + ox0;
                    // A constant T per call, so that the accumulators are registers.
                    const int unit = g->SW == 1;
                    // A whole padded row, unit stride and dilation, kernel 5 wide with padding 4
                    // or 2, or 3 wide with padding 2 or 1: the padding columns are skipped (see
                    // forward_tile); other geometries take the general tile below.
                    if (unit && g->DW == 1 && T == g->OW && T >= 8 && g->PW > 0) {
                        int done = 0;
                        switch (T * 64 + g->KW * 8 + g->PW) {
#define LFP_WHOLE(k, kw, pw)                                                                                          \
    case k * 64 + kw * 8 + pw:                                                                                        \
        LFP_SUFFIX(forward_tile)(xb, wp + ob, b, out, g, Hp, Wp, Opad, channels, kiLo, kiHi, k, 1, kw, pw);          \
        done = 1;                                                                                                     \
        break;
#define LFP_WHOLE_ROW(k) LFP_WHOLE(k, 5, 4) LFP_WHOLE(k, 5, 2) LFP_WHOLE(k, 3, 2) LFP_WHOLE(k, 3, 1)
#if LFP_FORWARD_TILE > 7
                            LFP_WHOLE_ROW(8) LFP_WHOLE_ROW(9) LFP_WHOLE_ROW(10) LFP_WHOLE_ROW(11) LFP_WHOLE_ROW(12)
                            LFP_WHOLE_ROW(13) LFP_WHOLE_ROW(14) LFP_WHOLE_ROW(15) LFP_WHOLE_ROW(16)
#endif
#undef LFP_WHOLE_ROW
#undef LFP_WHOLE
                            default: break;
                        }
                        if (done) continue;
                    }
                    switch (T) {
#define LFP_CASE(k)                                                                                                   \
    case k:                                                                                                           \
        if (unit) LFP_SUFFIX(forward_tile)(xb, wp + ob, b, out, g, Hp, Wp, Opad, channels, kiLo, kiHi, k, 1, 0, 0); \
        else LFP_SUFFIX(forward_tile)(xb, wp + ob, b, out, g, Hp, Wp, Opad, channels, kiLo, kiHi, k, 0, 0, 0);      \
        break;
                        LFP_CASE(1) LFP_CASE(2) LFP_CASE(3) LFP_CASE(4) LFP_CASE(5) LFP_CASE(6) LFP_CASE(7)
#if LFP_FORWARD_TILE > 7
                        LFP_CASE(8) LFP_CASE(9) LFP_CASE(10) LFP_CASE(11) LFP_CASE(12) LFP_CASE(13) LFP_CASE(14)
                        LFP_CASE(15) LFP_CASE(16)
#endif
#undef LFP_CASE
                        default: break;
                    }
                }
            }
        }
    }
}

// Weight-map tile: the KH x KW taps of one input channel and 16 output channels, in KH*KW
// accumulators, over every output position of one sample: per position one vector of the
// output signal and KH*KW broadcast inputs (the weight map S^T A, written per tap).
LFP_INLINE void LFP_SUFFIX(weight_tile)(const float *xc, const float *dyT, float *accRow,
                                        const lfp_conv_geometry *g, int Wp, int Opad, int KH, int KW, int unitDilation) {
    v16 a[LFP_DIRECT_MAX_TAPS];
    for (int r = 0; r < KH * KW; r++) a[r] = lfp_load(accRow + (long)r * Opad);
    const int sh = g->SH, sw = g->SW, dh = unitDilation ? 1 : g->DH, dw = unitDilation ? 1 : g->DW;
    for (int oy = 0; oy < g->OH; oy++) {
        const float *xrow = xc + (long)oy * sh * Wp;
        const float *d = dyT + (long)oy * g->OW * Opad;
        for (int ox = 0; ox < g->OW; ox++) {
            const v16 s = lfp_load(d + (long)ox * Opad);
            const float *xp = xrow + ox * sw;
            for (int ki = 0; ki < KH; ki++)
                for (int kj = 0; kj < KW; kj++) a[ki * KW + kj] += s * xp[ki * dh * Wp + kj * dw];
        }
    }
    for (int r = 0; r < KH * KW; r++) lfp_store(accRow + (long)r * Opad, a[r]);
}

#if LFP_ROW_KERNELS
// Weight-map row tile, for 1-2 input channels (a first layer): the tile below reads the output
// signal channel-minor, and reordering it per sample (16x16 transposes) took more than half
// the time when each sample has a single input channel to multiply it with (without the
// transposes the kernel ran 2.3x faster). Here
// vectors run along output rows and the output signal is read as it lies: 4 output channels x
// the KW taps of kernel row ki of one input channel in 4*KW accumulators, over every output
// row of one sample; per row and column vector, 4 output-signal vectors and KW input vectors
// give 4*KW multiply-adds. NC = 2 column vectors start at 0 and OW - 16; in the second, the
// lanes the first already covered are zeroed in the output signal. The 16-lane sums are added
// to sums[(o * KW + kj) * 16] (reduced once per range of samples). KW and NC are compile-time.
//
// With `paired` (rows of 17-24 columns, where the second vector leaves 8-15 of its 16 lanes
// masked: a quarter of the multiply-adds for rows of 24), rows go in pairs: the vector at
// column 0 of each, and one vector holding the last 8 columns of both (two 8-float halves,
// lanes of columns below 16 masked); an odd last row takes the two vectors.

/// One output row's vector at column `col` (output-signal lanes zeroed by `mask` if `masked`).
LFP_INLINE void LFP_SUFFIX(weight_row_vector)(const float *xr, const float *const *d, long at, int col, v16 mask,
                                              int masked, v16 *a, int KW) {
    v16 xv[5];
#pragma clang loop unroll(full)
    for (int kj = 0; kj < KW; kj++) xv[kj] = lfp_load(xr + col + kj);
#pragma clang loop unroll(full)
    for (int o = 0; o < 4; o++) {
        v16 dv = lfp_load(d[o] + at + col);
        if (masked) dv *= mask;
#pragma clang loop unroll(full)
        for (int kj = 0; kj < KW; kj++) a[o * KW + kj] += dv * xv[kj];
    }
}

LFP_INLINE void LFP_SUFFIX(weight_row_tile)(const float *xc, const float *dyo, float *sums,
                                            const lfp_conv_geometry *g, int Wp, int ki, int channels, int KW, int NC,
                                            int paired) {
    const int col1 = g->OW - 16, col2 = g->OW - 8;
    const long P = (long)g->OH * g->OW;
    v16 mask, halfMask;
    for (int l = 0; l < 16; l++) {
        mask[l] = l >= 16 - col1 ? 1.0f : 0.0f;
        halfMask[l] = l % 8 >= 16 - col2 ? 1.0f : 0.0f;
    }
    const float *d[4];
    for (int o = 0; o < 4; o++) d[o] = dyo + (o < channels ? o : 0) * P;
    const v16 keep[4] = {1, channels > 1 ? 1 : 0, channels > 2 ? 1 : 0, channels > 3 ? 1 : 0};
    v16 a[4 * 5];
#pragma clang loop unroll(full)
    for (int i = 0; i < 4 * KW; i++) a[i] = 0;
    int oy = 0;
    if (paired)
        for (; oy + 1 < g->OH; oy += 2) {
            const float *xr = xc + (long)(oy + ki) * Wp;
            const long at = (long)oy * g->OW;
            LFP_SUFFIX(weight_row_vector)(xr, d, at, 0, mask, 0, a, KW);
            LFP_SUFFIX(weight_row_vector)(xr + Wp, d, at + g->OW, 0, mask, 0, a, KW);
            v16 xv[5];
#pragma clang loop unroll(full)
            for (int kj = 0; kj < KW; kj++)
                xv[kj] = __builtin_shufflevector((v8)(*(const v8u *)(xr + col2 + kj)), (v8)(*(const v8u *)(xr + Wp + col2 + kj)),
                                                 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#pragma clang loop unroll(full)
            for (int o = 0; o < 4; o++) {
                v16 dv = __builtin_shufflevector((v8)(*(const v8u *)(d[o] + at + col2)), (v8)(*(const v8u *)(d[o] + at + g->OW + col2)),
                                                 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
                if (col2 < 16) dv *= halfMask;
#pragma clang loop unroll(full)
                for (int kj = 0; kj < KW; kj++) a[o * KW + kj] += dv * xv[kj];
            }
        }
    for (; oy < g->OH; oy++) {
        const float *xr = xc + (long)(oy + ki) * Wp;
        const long at = (long)oy * g->OW;
#pragma clang loop unroll(full)
        for (int cc = 0; cc < NC; cc++) LFP_SUFFIX(weight_row_vector)(xr, d, at, cc ? col1 : 0, mask, cc, a, KW);
    }
#pragma clang loop unroll(full)
    for (int o = 0; o < 4; o++)
#pragma clang loop unroll(full)
        for (int kj = 0; kj < KW; kj++)
            lfp_store(sums + 16 * (o * KW + kj), lfp_load(sums + 16 * (o * KW + kj)) + a[o * KW + kj] * keep[o]);
}

static void LFP_SUFFIX(weight_map_rows)(const float *x, const float *dy, float *acc,
                                        int n0, int n1, const lfp_conv_geometry *g, float *scratch) {
    const int Hp = g->H + 2 * g->PH, Wp = g->W + 2 * g->PW, Opad = lfp_conv_padded_channels(g->O);
    const long inSize = (long)g->C * g->H * g->W, outSize = (long)g->O * g->OH * g->OW, P = (long)g->OH * g->OW;
    const int KH = g->KH, KW = g->KW, twoColumns = g->OW > 16, pairedTails = g->OW > 16 && g->OW <= 24;
    // Per (c, ki, o, kj) one 16-lane partial sum, after the padded sample in scratch.
    float *sums = scratch + (long)g->C * Hp * Wp;
    memset(sums, 0, sizeof(float) * (size_t)((long)g->C * KH * Opad * KW * 16));
    for (int n = n0; n < n1; n++) {
        const float *xs = lfp_padded_sample(x + n * inSize, g->C, g->H, g->W, g->PH, g->PW, scratch);
        const float *dn = dy + n * outSize;
        for (int c = 0; c < g->C; c++)
            for (int ki = 0; ki < KH; ki++)
                for (int ob = 0; ob < g->O; ob += 4) {
                    const float *xc = xs + (long)c * Hp * Wp;
                    float *s = sums + (((long)c * KH + ki) * Opad + ob) * KW * 16;
                    const int channels = g->O - ob;
                    if (KW == 5 && pairedTails) LFP_SUFFIX(weight_row_tile)(xc, dn + ob * P, s, g, Wp, ki, channels, 5, 2, 1);
                    else if (KW == 3 && pairedTails) LFP_SUFFIX(weight_row_tile)(xc, dn + ob * P, s, g, Wp, ki, channels, 3, 2, 1);
                    else if (KW == 5 && twoColumns) LFP_SUFFIX(weight_row_tile)(xc, dn + ob * P, s, g, Wp, ki, channels, 5, 2, 0);
                    else if (KW == 5) LFP_SUFFIX(weight_row_tile)(xc, dn + ob * P, s, g, Wp, ki, channels, 5, 1, 0);
                    else if (twoColumns) LFP_SUFFIX(weight_row_tile)(xc, dn + ob * P, s, g, Wp, ki, channels, 3, 2, 0);
                    else LFP_SUFFIX(weight_row_tile)(xc, dn + ob * P, s, g, Wp, ki, channels, 3, 1, 0);
                }
    }
    for (int c = 0; c < g->C; c++)
        for (int ki = 0; ki < KH; ki++)
            for (int o = 0; o < g->O; o++)
                for (int kj = 0; kj < KW; kj++) {
                    const float *v = sums + ((((long)c * KH + ki) * Opad + o) * KW + kj) * 16;
                    float total = 0;
                    for (int l = 0; l < 16; l++) total += v[l];
                    acc[(((long)c * KH + ki) * KW + kj) * Opad + o] += total;
                }
}
#endif

static void LFP_SUFFIX(weight_map)(const float *x, const float *dy, float *acc,
                                   int n0, int n1, const lfp_conv_geometry *g, float *scratch) {
#if LFP_ROW_KERNELS
    if (lfp_row_weight_map_applies(g)) {
        LFP_SUFFIX(weight_map_rows)(x, dy, acc, n0, n1, g, scratch);
        return;
    }
#endif
    const int Hp = g->H + 2 * g->PH, Wp = g->W + 2 * g->PW, Opad = lfp_conv_padded_channels(g->O);
    const long inSize = (long)g->C * g->H * g->W, outSize = (long)g->O * g->OH * g->OW;
    const long P = (long)g->OH * g->OW, taps = (long)g->KH * g->KW;
    float *dyT = scratch + (long)g->C * Hp * Wp;  // [P][Opad]
    for (int n = n0; n < n1; n++) {
        const float *xs = lfp_padded_sample(x + n * inSize, g->C, g->H, g->W, g->PH, g->PW, scratch);
        // dy[n] [O, P] -> dyT [P][Opad], zero in the padding channels: 16x16 blocks transposed
        // in registers, the last positions one by one.
        const float *dn = dy + n * outSize;
        for (int ob = 0; ob < Opad; ob += 16) {
            const int channels = g->O - ob < 16 ? g->O - ob : 16;
            long p = 0;
            for (; p + 16 <= P; p += 16) {
                v16 block[16];
                for (int o = 0; o < 16; o++) block[o] = o < channels ? lfp_load(dn + (ob + o) * P + p) : (v16)0;
                LFP_SUFFIX(transpose16)(block);
                for (int q = 0; q < 16; q++) lfp_store(dyT + (p + q) * Opad + ob, block[q]);
            }
            for (; p < P; p++) {
                float *row = dyT + p * Opad + ob;
                for (int o = 0; o < 16; o++) row[o] = o < channels ? dn[(ob + o) * P + p] : 0;
            }
        }
        for (int ob = 0; ob < Opad; ob += 16) {
            for (int c = 0; c < g->C; c++) {
                const float *xc = xs + (long)c * Hp * Wp;
                float *accRow = acc + (long)c * taps * Opad + ob;
                // Constant kernel sizes (and dilation), so that the accumulators are registers and
                // the taps' inputs sit at constant offsets from a few row pointers.
                const int unit = g->DH == 1 && g->DW == 1;
                if (unit && g->KH == 5 && g->KW == 5) LFP_SUFFIX(weight_tile)(xc, dyT + ob, accRow, g, Wp, Opad, 5, 5, 1);
                else if (unit && g->KH == 3 && g->KW == 3) LFP_SUFFIX(weight_tile)(xc, dyT + ob, accRow, g, Wp, Opad, 3, 3, 1);
                else if (unit && g->KH == 1 && g->KW == 1) LFP_SUFFIX(weight_tile)(xc, dyT + ob, accRow, g, Wp, Opad, 1, 1, 1);
                else LFP_SUFFIX(weight_tile)(xc, dyT + ob, accRow, g, Wp, Opad, g->KH, g->KW, 0);
            }
        }
    }
}

#undef LFP_INLINE
