#ifndef LFP_KERNELS_H
#define LFP_KERNELS_H

/// Direct convolution kernels (no im2col), vectorised over 16 output channels, and the fused
/// dense weight-feedback kernel.
///
/// Written in C because a C function can carry a CPU target attribute: each kernel is compiled
/// three times (AVX-512, AVX2+FMA, baseline) and the best one the CPU supports is chosen at run
/// time. Swift has no per-function target selection, and building the whole package for a newer
/// CPU would make binaries that crash on older ones. The Swift side (LFPTensor.Convolution)
/// splits the batch over its workers and calls these on sample ranges.

/// Geometry of a 2-D convolution, PyTorch semantics (NCHW input, OIHW weight).
typedef struct {
    int C, H, W;      // input channels and size
    int O, OH, OW;    // output channels and size
    int KH, KW;       // kernel
    int SH, SW;       // stride
    int PH, PW;       // zero padding
    int DH, DW;       // dilation
} lfp_conv_geometry;

/// Largest kernel area the weight-map kernel keeps in registers (5x5).
#define LFP_DIRECT_MAX_TAPS 25

/// Output channels rounded up to a multiple of 16 (the width of the packed weight rows).
int lfp_conv_padded_channels(int channels);

/// The maps of a convolution layer, for `lfp_conv_scratch_floats`.
enum { LFP_CONV_FORWARD = 0, LFP_CONV_INPUT_MAP = 1, LFP_CONV_WEIGHT_MAP = 2 };

/// Floats of scratch one worker needs for `map` of layer `g` with kernel set `isa`
/// (`lfp_conv_forward`, `lfp_conv_input_map` or `lfp_conv_weight_map`).
long lfp_conv_scratch_floats(int isa, int map, const lfp_conv_geometry *g);

/// Packs w [O, C, KH, KW] into wp [C*KH*KW][Opad] (zero in the padding channels).
void lfp_conv_pack_weights(const float *w, const lfp_conv_geometry *g, float *wp);

/// Packs w for the input map, seen as a forward convolution from O to C channels with the
/// kernel flipped: wt [O*KH*KW][Cpad], wt[(o, KH-1-ki, KW-1-kj)][c] = w[o, c, ki, kj].
void lfp_conv_pack_weights_flipped(const float *w, const lfp_conv_geometry *g, float *wt);

/// The kernel sets (the `isa` argument of the kernels): 2 = AVX-512, 1 = AVX2 + FMA,
/// 0 = baseline (any CPU). A set above `lfp_kernels_best_isa()` must not be used.
int lfp_kernels_best_isa(void);

/// y[n] = conv(x[n], w) + bias for n in [n0, n1). wp from lfp_conv_pack_weights; bias may be NULL.
void lfp_conv_forward(int isa, const float *x, const float *wp, const float *bias, float *y,
                      int n0, int n1, const lfp_conv_geometry *g, float *scratch);

/// Whether `lfp_conv_forward` with kernel set `isa` runs a tile built for few channels on one
/// side instead of the 16-output-channel vectors: the row tiles (vectors along output rows;
/// 2-8 output or at most 2 input channels, stride and dilation 1, output rows of 16-32 columns,
/// at least 4 rows) or the lane tiles (vectors across 16 samples; one output channel, stride
/// and dilation 1, kernels 3 or 5 wide). AVX-512 only (they need 32 vector registers).
int lfp_conv_forward_few_channel_tiles(int isa, const lfp_conv_geometry *g);

/// The geometry of the forward convolution that `lfp_conv_input_map` runs for layer `g`:
/// from g's O output channels to its C input channels, on the output signal padded by K-1-P.
lfp_conv_geometry lfp_conv_input_map_geometry(const lfp_conv_geometry *g);

/// dx[n] = the input map (transposed convolution) of dy[n] for n in [n0, n1), wt from
/// lfp_conv_pack_weights_flipped. Needs stride 1, dilation 1 and PH < KH, PW < KW.
void lfp_conv_input_map(int isa, const float *dy, const float *wt, float *dx,
                        int n0, int n1, const lfp_conv_geometry *g, float *scratch);

/// acc[(c, ki, kj)][o] += sum over n in [n0, n1) and output positions of dy[n, o, p] x[n, c, p + (ki, kj)]
/// (acc is [C*KH*KW][Opad]). Needs KH*KW <= LFP_DIRECT_MAX_TAPS.
void lfp_conv_weight_map(int isa, const float *x, const float *dy, float *acc,
                         int n0, int n1, const lfp_conv_geometry *g, float *scratch);

/// Dense kernels for short batches (at most 64 samples): C = A B with tiles of 4 rows x 32
/// columns held in registers over the whole depth. The 32-column operand is packed first
/// (lfp_dense_pack_columns / lfp_dense_pack_rows: [blocks of 32][K][32], zero past the end).
/// Each call computes rows [m0, m1) of its output; callers split the rows over their workers.

/// The parameter feedback of an LFP rule on a dense layer, in one pass:
/// out[m, n] = scale * |w[m, n]| * sum_k s[k, m] x[k, n], with s [K, M] the rule's quotient
/// (batch x outputs), x [K, N] the layer input packed by lfp_dense_pack_columns into xp, and
/// w, out [M, N] (row-major). With a short K (the batch) the product is bound by the passes
/// over w and out, which this makes one: no separate zeroing, product and magnitude epilogue.
/// Returns 1 when every result is finite, 0 when one is not.
int lfp_dense_weight_feedback(int isa, const float *s, const float *xp, const float *w, float *out,
                              int K, int M, int N, int m0, int m1, float scale);

/// The forward map of a dense layer for a short batch: y[n, m] = sum_k x[n, k] w[m, k] + bias[m]
/// for n < N (the batch, at most 64), with x [N, K] packed by lfp_dense_pack_rows into xp and
/// w [M, K] read in place (BLAS would copy all of w into its packed layout first); bias may be NULL.
void lfp_dense_forward(int isa, const float *xp, const float *w, const float *bias, float *y,
                       int K, int M, int N, int m0, int m1);

/// Packs x [K, N] by 32 columns: xp [(N + 31) / 32][K][32] (zero past column N).
void lfp_dense_pack_columns(const float *x, int K, int N, float *xp);

/// Packs the transpose of x [N, K] by 32 columns (of the transpose: rows of x):
/// xp [(N + 31) / 32][K][32], xp[n / 32][k][n % 32] = x[n, k] (zero past row N), for the
/// columns k in [k0, k1) (callers split K over their workers).
void lfp_dense_pack_rows(const float *x, int N, int K, int k0, int k1, float *xp);

/// The library's own sgemm (gemm.c), for the large products of `BLAS.gemm`: row-major
/// C = alpha op(A) op(B) + beta C with C [m, n], op(A) [m, k] (A^T when ta), op(B) [k, n]
/// (B^T when tb), on the calling thread (callers split C over their workers). beta == 0 never
/// reads C's prior contents. Runs only with kernel set 2 (AVX-512), m, n, k > 0 and alpha != 0
/// (BLAS ignores A and B when alpha is 0, NaN included), and returns 1; returns 0 without
/// touching C otherwise (the caller uses BLAS). `scratch` holds lfp_sgemm_scratch_floats()
/// floats (the packed blocks; any alignment).
int lfp_sgemm(int isa, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc, float *scratch);

/// The parameter feedback of an LFP rule on a large dense layer (`lfp_sgemm` with the magnitude
/// epilogue of the rules fused into its last store): C = scale * |W| * (op(A) op(B)), elementwise
/// with w [m, n] (leading dimension ldw, not NULL), C's prior contents never read; *finite = 0
/// when a result is NaN or infinite, 1 otherwise. Runs and returns 1 under the same conditions
/// as `lfp_sgemm` (alpha being 1) and a non-NULL w, else returns 0.
int lfp_sgemm_magnitude(int isa, int ta, int tb, int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                        float *c, int ldc, const float *w, int ldw, float scale, float *scratch, int *finite);

/// Floats of scratch one `lfp_sgemm` call needs (0 where it never runs).
long lfp_sgemm_scratch_floats(void);

#endif
