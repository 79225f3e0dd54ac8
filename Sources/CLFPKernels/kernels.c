// Direct convolution kernels (conv_body.h) and the dense weight-feedback kernel (dense_body.h):
// one source each, compiled for AVX-512, AVX2+FMA and the baseline instruction set, chosen at
// run time (lfp_kernels.h says why this is C).
#include "lfp_kernels.h"
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((ext_vector_type(16)));
typedef float v16u __attribute__((ext_vector_type(16), aligned(4)));
typedef float v8 __attribute__((ext_vector_type(8)));
typedef float v8u __attribute__((ext_vector_type(8), aligned(4)));

// LFP_DENSE_ROWS is the rows of a dense tile (2 of them in 16-float accumulators; dense_body.h).
// LFP_FORWARD_TILE, set per instruction set below, is the most output columns one forward
// tile holds in accumulator registers: 16 with AVX-512's 32 registers (measured: tiles of 24
// and 28 columns ran at a half to a third of the speed, most likely spilling), fewer where each
// 16-float vector takes 2 (AVX2) or 4 (baseline) of 16 registers.
// Vectors live only inside always-inlined code: no function takes or returns one (their ABI
// differs between the instruction sets).
#define lfp_load(p) (*(const v16u *)(p))
#define lfp_store(p, v) (*(v16u *)(p) = (v))

int lfp_conv_padded_channels(int channels) { return (channels + 15) / 16 * 16; }

/// Stride and dilation 1 and output rows of 16-32 columns: the geometry the row tiles
/// (conv_body.h) cover with two 16-column vectors per row.
static int lfp_row_geometry(const lfp_conv_geometry *g) {
    return g->SH == 1 && g->SW == 1 && g->DH == 1 && g->DW == 1 && g->OW >= 16 && g->OW <= 32;
}

/// Whether the AVX-512 `forward` takes the row tiles for this geometry (conv_body.h, row_tile):
/// row geometry, at least 4 output rows, and few channels on one side: 2-8 output channels, or
/// at most 2 input channels. (One output channel, the input map of a 1-channel first layer,
/// measured slower than im2col + sgemm with these tiles, an input vector loaded per FMA: it
/// takes the lane tiles where they apply, checked first.)
__attribute__((unused)) static int lfp_row_tiles_apply(const lfp_conv_geometry *g) {
    return lfp_row_geometry(g) && g->OH >= 4 && ((g->O >= 2 && g->O <= 8) || g->C <= 2);
}

/// Whether the AVX-512 `forward` takes the lane tiles (conv_body.h, lane_tile): one output
/// channel, stride and dilation 1, kernels 3 or 5 wide, output rows of at least 8 columns, at
/// least 16 floats per sample in and out, and samples small enough (64 Ki floats) that 16 of
/// them transposed stay in scratch.
__attribute__((unused)) static int lfp_lane_tiles_apply(const lfp_conv_geometry *g) {
    const long in = (long)g->C * g->H * g->W, out = (long)g->OH * g->OW;
    return g->O == 1 && g->SH == 1 && g->SW == 1 && g->DH == 1 && g->DW == 1 && (g->KW == 3 || g->KW == 5)
        && g->OW >= 8 && in >= 16 && out >= 16 && in <= 65536;
}

/// Floats of scratch the lane tiles need: 16 samples transposed and their 16 outputs, plus 64
/// bytes to align them.
__attribute__((unused)) static long lfp_lane_scratch_floats(const lfp_conv_geometry *g) {
    return ((long)g->C * g->H * g->W + (long)g->OH * g->OW) * 16 + 16;
}

/// Whether the AVX-512 `weight_map` takes the row tiles (conv_body.h, weight_row_tile): row
/// geometry, 1 or 2 input channels, kernels 3 or 5 wide.
__attribute__((unused)) static int lfp_row_weight_map_applies(const lfp_conv_geometry *g) {
    return lfp_row_geometry(g) && g->C <= 2 && (g->KW == 3 || g->KW == 5);
}

/// Scratch of `lfp_conv_forward` with kernel set `isa`: the lane tiles' transposed block, or
/// the zero-padded sample that the other tiles read.
static long lfp_forward_scratch_floats(int isa, const lfp_conv_geometry *g) {
#if defined(__x86_64__)
    if (isa == 2 && lfp_lane_tiles_apply(g)) return lfp_lane_scratch_floats(g);
#endif
    (void)isa;
    return (long)g->C * (g->H + 2 * g->PH) * (g->W + 2 * g->PW);
}

long lfp_conv_scratch_floats(int isa, int map, const lfp_conv_geometry *g) {
    switch (map) {
        case LFP_CONV_FORWARD: return lfp_forward_scratch_floats(isa, g);
        // The input map runs the forward kernel on the output signal padded by K-1-P.
        case LFP_CONV_INPUT_MAP: {
            const lfp_conv_geometry t = lfp_conv_input_map_geometry(g);
            return lfp_forward_scratch_floats(isa, &t);
        }
        default: {
            // The padded sample, then the row tiles' 16-lane sum per (c, ki, o, kj) (AVX-512) or
            // the output signal reordered to [P][Opad].
            const long padded = (long)g->C * (g->H + 2 * g->PH) * (g->W + 2 * g->PW), Opad = lfp_conv_padded_channels(g->O);
#if defined(__x86_64__)
            if (isa == 2 && lfp_row_weight_map_applies(g)) return padded + (long)g->C * g->KH * Opad * g->KW * 16;
#endif
            return padded + (long)g->OH * g->OW * Opad;
        }
    }
}

/// The sample itself, or (with padding) a zero-padded copy of it in `scratch`.
static const float *lfp_padded_sample(const float *x, int C, int H, int W, int PH, int PW, float *scratch) {
    if (PH == 0 && PW == 0) return x;
    const int Hp = H + 2 * PH, Wp = W + 2 * PW;
    memset(scratch, 0, sizeof(float) * (size_t)C * Hp * Wp);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < H; i++)
            memcpy(scratch + ((long)c * Hp + i + PH) * Wp + PW, x + ((long)c * H + i) * W, sizeof(float) * (size_t)W);
    return scratch;
}

void lfp_conv_pack_weights(const float *w, const lfp_conv_geometry *g, float *wp) {
    const int Opad = lfp_conv_padded_channels(g->O);
    const long K = (long)g->C * g->KH * g->KW;
    memset(wp, 0, sizeof(float) * (size_t)(K * Opad));
    for (int o = 0; o < g->O; o++)
        for (long r = 0; r < K; r++) wp[r * Opad + o] = w[o * K + r];
}

void lfp_conv_pack_weights_flipped(const float *w, const lfp_conv_geometry *g, float *wt) {
    const int Cpad = lfp_conv_padded_channels(g->C);
    const long taps = (long)g->KH * g->KW;
    memset(wt, 0, sizeof(float) * (size_t)(g->O * taps * Cpad));
    for (int o = 0; o < g->O; o++)
        for (int c = 0; c < g->C; c++)
            for (int ki = 0; ki < g->KH; ki++)
                for (int kj = 0; kj < g->KW; kj++) {
                    const long row = (long)o * taps + (long)(g->KH - 1 - ki) * g->KW + (g->KW - 1 - kj);
                    wt[row * Cpad + c] = w[(((long)o * g->C + c) * g->KH + ki) * g->KW + kj];
                }
}

#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))), apply_to = function)
#define LFP_SUFFIX(name) name##_avx512
#define LFP_FORWARD_TILE 16
#define LFP_DENSE_ROWS 8
#define LFP_ROW_KERNELS 1
#include "conv_body.h"
#include "dense_body.h"
#undef LFP_SUFFIX
#undef LFP_FORWARD_TILE
#undef LFP_DENSE_ROWS
#undef LFP_ROW_KERNELS
#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define LFP_SUFFIX(name) name##_avx2
#define LFP_FORWARD_TILE 6
#define LFP_DENSE_ROWS 2
#include "conv_body.h"
#include "dense_body.h"
#undef LFP_SUFFIX
#undef LFP_FORWARD_TILE
#undef LFP_DENSE_ROWS
#pragma clang attribute pop
#endif

#define LFP_SUFFIX(name) name##_baseline
#define LFP_FORWARD_TILE 3
#define LFP_DENSE_ROWS 1
#include "conv_body.h"
#include "dense_body.h"
#undef LFP_SUFFIX
#undef LFP_FORWARD_TILE
#undef LFP_DENSE_ROWS

int lfp_kernels_best_isa(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512bw")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

void lfp_conv_forward(int isa, const float *x, const float *wp, const float *bias, float *y,
                      int n0, int n1, const lfp_conv_geometry *g, float *scratch) {
    switch (isa) {
#if defined(__x86_64__)
        case 2: forward_avx512(x, wp, bias, y, n0, n1, g, scratch); return;
        case 1: forward_avx2(x, wp, bias, y, n0, n1, g, scratch); return;
#endif
        default: forward_baseline(x, wp, bias, y, n0, n1, g, scratch); return;
    }
}

int lfp_conv_forward_few_channel_tiles(int isa, const lfp_conv_geometry *g) {
#if defined(__x86_64__)
    if (isa == 2) return lfp_lane_tiles_apply(g) || lfp_row_tiles_apply(g);
#endif
    (void)isa; (void)g;
    return 0;
}

lfp_conv_geometry lfp_conv_input_map_geometry(const lfp_conv_geometry *g) {
    // dx = the forward convolution of dy, padded by K-1-P, with the flipped kernel (stride 1, dilation 1).
    lfp_conv_geometry t = {
        .C = g->O, .H = g->OH, .W = g->OW, .O = g->C, .OH = g->H, .OW = g->W, .KH = g->KH, .KW = g->KW,
        .SH = 1, .SW = 1, .PH = g->KH - 1 - g->PH, .PW = g->KW - 1 - g->PW, .DH = 1, .DW = 1,
    };
    return t;
}

void lfp_conv_input_map(int isa, const float *dy, const float *wt, float *dx,
                        int n0, int n1, const lfp_conv_geometry *g, float *scratch) {
    const lfp_conv_geometry t = lfp_conv_input_map_geometry(g);
    lfp_conv_forward(isa, dy, wt, NULL, dx, n0, n1, &t, scratch);
}

void lfp_conv_weight_map(int isa, const float *x, const float *dy, float *acc,
                         int n0, int n1, const lfp_conv_geometry *g, float *scratch) {
    switch (isa) {
#if defined(__x86_64__)
        case 2: weight_map_avx512(x, dy, acc, n0, n1, g, scratch); return;
        case 1: weight_map_avx2(x, dy, acc, n0, n1, g, scratch); return;
#endif
        default: weight_map_baseline(x, dy, acc, n0, n1, g, scratch); return;
    }
}

void lfp_dense_pack_columns(const float *x, int K, int N, float *xp) {
    for (long n = 0; n < N; n += 32) {
        const long columns = N - n < 32 ? N - n : 32;
        for (long k = 0; k < K; k++) {
            float *to = xp + n * K + 32 * k;
            memcpy(to, x + k * N + n, sizeof(float) * (size_t)columns);
            memset(to + columns, 0, sizeof(float) * (size_t)(32 - columns));
        }
    }
}

void lfp_dense_pack_rows(const float *x, int N, int K, int k0, int k1, float *xp) {
    const long padded = (N + 31) / 32 * 32;
    // 16 columns of x at a time: each row of x gives one cache line, written to 16 rows of xp
    // that stay in L1 while the 32 rows of a block pass.
    for (long k = k0; k < k1; k += 16) {
        const long width = k1 - k < 16 ? k1 - k : 16;
        for (long n = 0; n < padded; n++) {
            float *to = xp + (n / 32) * 32 * K + 32 * k + n % 32;
            if (n < N) {
                const float *from = x + n * K + k;
                for (long j = 0; j < width; j++) to[32 * j] = from[j];
            } else {
                for (long j = 0; j < width; j++) to[32 * j] = 0;
            }
        }
    }
}

int lfp_dense_weight_feedback(int isa, const float *s, const float *xp, const float *w, float *out,
                              int K, int M, int N, int m0, int m1, float scale) {
    switch (isa) {
#if defined(__x86_64__)
        case 2: return dense_weight_feedback_avx512(s, xp, w, out, K, M, N, m0, m1, scale);
        case 1: return dense_weight_feedback_avx2(s, xp, w, out, K, M, N, m0, m1, scale);
#endif
        default: return dense_weight_feedback_baseline(s, xp, w, out, K, M, N, m0, m1, scale);
    }
}

void lfp_dense_forward(int isa, const float *xp, const float *w, const float *bias, float *y,
                       int K, int M, int N, int m0, int m1) {
    switch (isa) {
#if defined(__x86_64__)
        case 2: dense_forward_avx512(xp, w, bias, y, K, M, N, m0, m1); return;
        case 1: dense_forward_avx2(xp, w, bias, y, K, M, N, m0, m1); return;
#endif
        default: dense_forward_baseline(xp, w, bias, y, K, M, N, m0, m1); return;
    }
}
