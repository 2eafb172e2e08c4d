/**
 * The C target's runtime: the kernels an emitted `<model>.c` carries, as C99
 * source. Only the kernels a model uses are emitted (each lists the helpers
 * it needs), all `static`, so the file is self-contained.
 *
 * The integer kernels transliterate the lowered-layer plan (`ir/bfp/plan.ts`,
 * rule in `ir/bfp/format.ts`) with integers only: float32 inputs are split
 * into sign, 24-bit significand and exponent; every right shift rounds with
 * the format's mode through `cnnc_round_shift` (nearest-even by default);
 * block products are exact in `int32_t` (the product width W <= 31; `int64_t`
 * otherwise); the accumulator is `int64_t`, saturated once; the output
 * `float32(acc * 2^u)` is built from the bits with one nearest-even rounding,
 * subnormals included. So results equal the interpreter's bit for bit on any
 * C99 compiler without needing the FPU's rounding.
 *
 * The float kernels repeat the interpreter's order of operations where it is
 * exactly reproducible (pools, BatchNormalization and global pooling sum and
 * scale in `double`, as the interpreter's float64 numbers do); Conv, Gemm and
 * MatMul accumulate in `float` and agree to rounding.
 * @module
 */

/** One kernel: its C text and the kernels it calls. */
interface Kernel {
  readonly needs: readonly string[];
  /** Needs `<math.h>`. */
  readonly math?: boolean;
  readonly text: string;
}

const KERNELS: Readonly<Record<string, Kernel>> = {
  status: {
    needs: [],
    text: `
#define CNNC_OK 0
#define CNNC_ERR_NULL (-1)
#define CNNC_ERR_ALIGN (-2)
#define CNNC_ERR_NONFINITE (-3)

#define CNNC_NEAREST_EVEN 0
#define CNNC_TOWARD_ZERO 1
#define CNNC_TOWARD_POSITIVE 2
#define CNNC_TOWARD_NEGATIVE 3`,
  },
  round_shift: {
    needs: ["status"],
    text: `
/* v * 2^-s rounded to an integer with one of the four modes (s >= 1; |v| < 2^62). */
static int64_t cnnc_round_shift(int64_t v, int32_t s, int32_t mode)
{
    int neg = v < 0;
    uint64_t u = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    uint64_t q, r, half;
    if (s > 62) {
        q = 0;
        r = u;
        half = (uint64_t)1 << 62; /* above every |v| */
    } else {
        q = u >> s;
        r = u & (((uint64_t)1 << s) - 1);
        half = (uint64_t)1 << (s - 1);
    }
    switch (mode) {
    case CNNC_NEAREST_EVEN:
        if (r > half || (r == half && (q & 1) != 0)) q++;
        break;
    case CNNC_TOWARD_POSITIVE:
        if (!neg && r != 0) q++;
        break;
    case CNNC_TOWARD_NEGATIVE:
        if (neg && r != 0) q++;
        break;
    default:
        break;
    }
    return neg ? -(int64_t)q : (int64_t)q;
}

/* v * 2^s (s of either sign), rounded with mode; saturates to [lo, hi]. */
static int64_t cnnc_align(int64_t v, int32_t s, int32_t mode, int64_t lo, int64_t hi)
{
    if (v == 0) return 0;
    if (s < 0) v = cnnc_round_shift(v, -s, mode);
    else if (s > 0) {
        int64_t limit = (v < 0 ? -lo : hi) >> s;
        if ((v < 0 ? -v : v) > limit) return v < 0 ? lo : hi;
        v *= (int64_t)1 << s;
    }
    return v < lo ? lo : v > hi ? hi : v;
}`,
  },
  to_float: {
    needs: ["round_shift"],
    text: `
static int32_t cnnc_bit_length(uint64_t u)
{
    int32_t n = 0;
    while (u != 0) {
        u >>= 1;
        n++;
    }
    return n;
}

/* float32(a * 2^unit) rounded to nearest even (subnormals, overflow to infinity), from the bits. */
static float cnnc_to_float(int64_t a, int32_t unit)
{
    int neg = a < 0;
    uint64_t u = neg ? (uint64_t)0 - (uint64_t)a : (uint64_t)a;
    int32_t e, lsb;
    uint64_t q;
    uint32_t bits;
    float f;
    if (u == 0) return 0.0f;
    e = cnnc_bit_length(u) - 1 + unit; /* exponent of the leading one */
    if (e > 128) {
        bits = 0x7f800000u;
    } else {
        lsb = e - 23 < -149 ? -149 : e - 23;
        q = lsb > unit ? (uint64_t)cnnc_round_shift((int64_t)u, lsb - unit, CNNC_NEAREST_EVEN) : u << (unit - lsb);
        if (e < -126) bits = (uint32_t)q; /* subnormal, or rounded up to the smallest normal */
        else bits = ((uint32_t)(e + 127) << 23) + (uint32_t)(q - 0x800000u);
        if (bits > 0x7f800000u) bits = 0x7f800000u;
    }
    bits |= (uint32_t)neg << 31;
    memcpy(&f, &bits, sizeof f);
    return f;
}`,
  },
  bfp_quantize: {
    needs: ["round_shift"],
    text: `
/* One Quantize: blocks of "block" channels at each position (0: one block per sample), or a static exponent. */
typedef struct {
    int32_t channels, spatial, group, block, blocks_per_group;
    int32_t mantissa_bits, exponent_min, exponent_max, never_clamp, rounding;
    int32_t fixed, static_exponent;
} cnnc_quantize_t;

static uint32_t cnnc_magnitude_bits(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits & 0x7fffffffu;
}

/* floor(log2(m)) of a finite non-zero float32 magnitude given by its bits. */
static int32_t cnnc_floor_log2(uint32_t m)
{
    int32_t n = -1;
    if (m >= 0x800000u) return (int32_t)(m >> 23) - 127;
    while (m != 0) {
        m >>= 1;
        n++;
    }
    return n - 149;
}

/* round(x * 2^k) saturated to +-maxm. */
static int32_t cnnc_quantize_value(float x, int32_t k, int32_t maxm, int32_t mode)
{
    uint32_t bits;
    int32_t field, shift;
    int64_t v;
    memcpy(&bits, &x, sizeof bits);
    field = (int32_t)((bits >> 23) & 0xffu);
    v = (int64_t)(bits & 0x7fffffu);
    if (field == 0) field = 1;
    else v |= 0x800000;
    if (v == 0) return 0;
    if (bits >> 31) v = -v;
    shift = field - 150 + k; /* |x| * 2^k = significand * 2^shift */
    if (shift < 0) v = cnnc_round_shift(v, -shift, mode);
    else if (shift > 30) v = v < 0 ? -(int64_t)maxm : maxm;
    else v *= (int64_t)1 << shift;
    return (int32_t)(v < -maxm ? -maxm : v > maxm ? maxm : v);
}

/* The shared exponent of a block whose largest magnitude has the bits amax. */
static int32_t cnnc_block_exponent(uint32_t amax, const cnnc_quantize_t *q)
{
    int32_t e;
    if (q->fixed) return q->static_exponent;
    if (amax == 0) return q->exponent_min;
    e = cnnc_floor_log2(amax);
    if (q->never_clamp && e >= q->exponent_min - 1 && e <= q->exponent_max) {
        /* amax * 2^(L-2-e) > maxm, exactly: significand * 2^shift > maxm */
        int32_t field = (int32_t)(amax >> 23), shift;
        int64_t sig = (int64_t)(amax & 0x7fffffu), maxm = ((int64_t)1 << (q->mantissa_bits - 1)) - 1;
        if (field == 0) field = 1;
        else sig |= 0x800000;
        shift = field - 150 + q->mantissa_bits - 2 - e;
        if (shift >= 0 ? sig > (maxm >> shift) || (sig << shift) > maxm : sig > (maxm << -shift)) e++;
    }
    return e < q->exponent_min ? q->exponent_min : e > q->exponent_max ? q->exponent_max : e;
}`,
  },
  bfp_quantize_i8: {
    needs: ["bfp_quantize"],
    text: quantizeKernel("i8", "int8_t"),
  },
  bfp_quantize_i16: {
    needs: ["bfp_quantize"],
    text: quantizeKernel("i16", "int16_t"),
  },
  bfp_layer: {
    needs: ["round_shift", "to_float", "range"],
    text: `
/* One lowered Conv or Gemm (a Gemm is a 1x1 Conv on a 1x1 input). Weight and exponent strides give the layout. */
typedef struct {
    int32_t in_channels, in_h, in_w, out_channels, out_h, out_w;
    int32_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w;
    int32_t group, block, blocks_per_group;
    int32_t x_e_g;                  /* block 0: input exponent stride per group (0: one per sample, 1: one per group) */
    int32_t mantissa_bits, exponent_min, guard, rounding;
    int64_t acc_min, acc_max;
    int32_t w_o, w_c, w_y, w_x;     /* mantissa strides: output channel, input channel, kernel row, kernel column */
    int32_t e_o, e_j, e_y, e_x;     /* exponent strides: output channel, block, kernel row, kernel column */
    const int32_t *bias_significand; /* NULL: no bias; bias = significand * 2^exponent */
    const int16_t *bias_exponent;
    const int32_t *bias_unit;        /* u_b per output channel; NULL without a bias */
} cnnc_layer_t;`,
  },
  bfp_layer_i8: {
    needs: ["bfp_layer"],
    text: layerKernel("i8", "int8_t"),
  },
  bfp_layer_i16: {
    needs: ["bfp_layer"],
    text: layerKernel("i16", "int16_t"),
  },
  range: {
    needs: [],
    text: `
/* The indices i in [0, n) with 0 <= start + i * step < size, as [*lo, *hi) (empty when *lo >= *hi); step > 0. */
static void cnnc_range(int32_t start, int32_t step, int32_t size, int32_t n, int32_t *lo, int32_t *hi)
{
    int32_t b = size - start <= 0 ? 0 : (size - start + step - 1) / step;
    *lo = start >= 0 ? 0 : (step - 1 - start) / step;
    *hi = b < n ? b : n;
}`,
  },
  window: {
    needs: [],
    text: `
/* A 2-D window (Conv, pools): sizes, strides, dilations and the leading pads. */
typedef struct {
    int32_t channels, in_h, in_w, out_channels, out_h, out_w;
    int32_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w;
    int32_t group, w_o, w_c, w_y, w_x; /* Conv only: group and weight strides */
} cnnc_window_t;`,
  },
  conv_f32: {
    needs: ["window", "range"],
    text: `
static void cnnc_conv_f32(const float *x, const float *w, const float *bias, float *y, const cnnc_window_t *p)
{
    /* Each output plane starts at the bias and adds one tap at a time over its valid output columns, so every output
     * sums bias, then c, ky, kx in order, as the direct form does, with no test in the inner loop. */
    int32_t og = p->out_channels / p->group, cg = p->channels / p->group, plane = p->out_h * p->out_w;
    int32_t gi, oi, oy, ox, c, ky, kx, i;
    for (gi = 0; gi < p->group; gi++) {
        for (oi = 0; oi < og; oi++) {
            int32_t o = gi * og + oi;
            float *yo = y + o * plane, b = bias != NULL ? bias[o] : 0.0f;
            for (i = 0; i < plane; i++) yo[i] = b;
            for (c = 0; c < cg; c++) {
                const float *xc = x + (gi * cg + c) * p->in_h * p->in_w;
                for (ky = 0; ky < p->kernel_h; ky++) {
                    for (kx = 0; kx < p->kernel_w; kx++) {
                        float wv = w[o * p->w_o + c * p->w_c + ky * p->w_y + kx * p->w_x];
                        int32_t off = kx * p->dilation_w - p->pad_w, ox0, ox1;
                        cnnc_range(off, p->stride_w, p->in_w, p->out_w, &ox0, &ox1);
                        for (oy = 0; oy < p->out_h; oy++) {
                            int32_t iy = oy * p->stride_h - p->pad_h + ky * p->dilation_h, base;
                            float *yr = yo + oy * p->out_w;
                            if (iy < 0 || iy >= p->in_h) continue;
                            base = iy * p->in_w + off;
                            for (ox = ox0; ox < ox1; ox++) yr[ox] += wv * xc[base + ox * p->stride_w];
                        }
                    }
                }
            }
        }
    }
}`,
  },
  dense_f32: {
    needs: [],
    text: `
/* y[r, o] = bias[o] + sum_k w[o, k] x[r, k] (Gemm and MatMul, weights [O, K]). */
static void cnnc_dense_f32(const float *x, const float *w, const float *bias, float *y, int32_t rows, int32_t k,
                           int32_t o)
{
    int32_t r, j, i;
    for (r = 0; r < rows; r++) {
        for (j = 0; j < o; j++) {
            float sum = bias != NULL ? bias[j] : 0.0f;
            for (i = 0; i < k; i++) sum += w[j * k + i] * x[r * k + i];
            y[r * o + j] = sum;
        }
    }
}`,
  },
  dense_csr_f32: {
    needs: [],
    text: `
/* Weights [O, K] in CSR: the non-zero values row by row, their columns, and row_ptr[O + 1] (start of each row). */
typedef struct {
    const float *values;
    const void *columns;  /* uint8_t, uint16_t or uint32_t: column_bits */
    const void *row_ptr;  /* uint8_t, uint16_t or uint32_t: pointer_bits */
    int32_t column_bits;
    int32_t pointer_bits;
} cnnc_csr_t;

static int32_t cnnc_csr_at(const void *a, int32_t bits, int32_t i)
{
    if (bits == 8) return (int32_t)((const uint8_t *)a)[i];
    if (bits == 16) return (int32_t)((const uint16_t *)a)[i];
    return (int32_t)((const uint32_t *)a)[i];
}

/* cnnc_dense_f32 with CSR weights: the same sum in the same order over the non-zero weights. */
static void cnnc_dense_csr_f32(const float *x, const cnnc_csr_t *w, const float *bias, float *y, int32_t rows,
                               int32_t k, int32_t o)
{
    int32_t r, j, n;
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * k;
        for (j = 0; j < o; j++) {
            float sum = bias != NULL ? bias[j] : 0.0f;
            int32_t begin = cnnc_csr_at(w->row_ptr, w->pointer_bits, j);
            int32_t end = cnnc_csr_at(w->row_ptr, w->pointer_bits, j + 1);
            if (w->column_bits == 8) {
                const uint8_t *c = (const uint8_t *)w->columns;
                for (n = begin; n < end; n++) sum += w->values[n] * xr[c[n]];
            } else if (w->column_bits == 16) {
                const uint16_t *c = (const uint16_t *)w->columns;
                for (n = begin; n < end; n++) sum += w->values[n] * xr[c[n]];
            } else {
                const uint32_t *c = (const uint32_t *)w->columns;
                for (n = begin; n < end; n++) sum += w->values[n] * xr[c[n]];
            }
            y[r * o + j] = sum;
        }
    }
}`,
  },
  max_pool: {
    needs: ["window"],
    text: `
static void cnnc_max_pool(const float *x, float *y, const cnnc_window_t *p)
{
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < p->channels; c++) {
        const float *xc = x + c * p->in_h * p->in_w;
        for (oy = 0; oy < p->out_h; oy++) {
            for (ox = 0; ox < p->out_w; ox++) {
                float best = 0.0f;
                int any = 0;
                for (ky = 0; ky < p->kernel_h; ky++) {
                    int32_t iy = oy * p->stride_h - p->pad_h + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (kx = 0; kx < p->kernel_w; kx++) {
                        int32_t ix = ox * p->stride_w - p->pad_w + kx * p->dilation_w;
                        float v;
                        if (ix < 0 || ix >= p->in_w) continue;
                        v = xc[iy * p->in_w + ix];
                        if (v > best || !any) best = v;
                        any = 1;
                    }
                }
                y[(c * p->out_h + oy) * p->out_w + ox] = best;
            }
        }
    }
}`,
  },
  average_pool: {
    needs: ["window"],
    text: `
/* count_h/count_w: the taps counted per output row and column (with or without the pads). */
static void cnnc_average_pool(const float *x, float *y, const cnnc_window_t *p, const int32_t *count_h,
                              const int32_t *count_w)
{
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < p->channels; c++) {
        const float *xc = x + c * p->in_h * p->in_w;
        for (oy = 0; oy < p->out_h; oy++) {
            for (ox = 0; ox < p->out_w; ox++) {
                double sum = 0.0;
                for (ky = 0; ky < p->kernel_h; ky++) {
                    int32_t iy = oy * p->stride_h - p->pad_h + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (kx = 0; kx < p->kernel_w; kx++) {
                        int32_t ix = ox * p->stride_w - p->pad_w + kx * p->dilation_w;
                        if (ix >= 0 && ix < p->in_w) sum += xc[iy * p->in_w + ix];
                    }
                }
                y[(c * p->out_h + oy) * p->out_w + ox] = (float)(sum / (double)(count_h[oy] * count_w[ox]));
            }
        }
    }
}`,
  },
  global_average_pool: {
    needs: [],
    text: `
static void cnnc_global_average_pool(const float *x, float *y, int32_t planes, int32_t plane)
{
    int32_t c, i;
    for (c = 0; c < planes; c++) {
        double sum = 0.0;
        for (i = 0; i < plane; i++) sum += x[c * plane + i];
        y[c] = (float)(sum / (double)plane);
    }
}`,
  },
  global_max_pool: {
    needs: [],
    text: `
static void cnnc_global_max_pool(const float *x, float *y, int32_t planes, int32_t plane)
{
    int32_t c, i;
    for (c = 0; c < planes; c++) {
        float best = x[c * plane];
        for (i = 1; i < plane; i++) {
            float v = x[c * plane + i];
            if (v > best || v != v) best = v;
        }
        y[c] = best;
    }
}`,
  },
  affine: {
    needs: [],
    text: `
/* BatchNormalization in inference: y = float(x * a[c] + b[c]) in double, a and b folded per channel. */
static void cnnc_affine(const float *x, float *y, const double *a, const double *b, int32_t channels, int32_t plane)
{
    int32_t c, i;
    for (c = 0; c < channels; c++) {
        for (i = 0; i < plane; i++) y[c * plane + i] = (float)((double)x[c * plane + i] * a[c] + b[c]);
    }
}`,
  },
  binary: {
    needs: [],
    text: `
#define CNNC_ADD 0
#define CNNC_SUB 1
#define CNNC_MUL 2
#define CNNC_DIV 3
#define CNNC_MAX 4
#define CNNC_MIN 5
#define CNNC_MAX_RANK 8

/* Elementwise a op b broadcast to y's shape; a_stride/b_stride are 0 on broadcast axes. */
static void cnnc_binary(const float *a, const float *b, float *y, int32_t op, int32_t rank, const int32_t *shape,
                        const int32_t *a_stride, const int32_t *b_stride)
{
    int32_t index[CNNC_MAX_RANK] = {0};
    int32_t total = 1, n, d, ia = 0, ib = 0;
    for (d = 0; d < rank; d++) total *= shape[d];
    for (n = 0; n < total; n++) {
        float u = a[ia], v = b[ib], r;
        switch (op) {
        case CNNC_ADD: r = u + v; break;
        case CNNC_SUB: r = u - v; break;
        case CNNC_MUL: r = u * v; break;
        case CNNC_DIV: r = u / v; break;
        case CNNC_MAX: r = (u > v || u != u) ? u : v; break;
        default: r = (u < v || u != u) ? u : v; break;
        }
        y[n] = r;
        for (d = rank - 1; d >= 0; d--) {
            ia += a_stride[d];
            ib += b_stride[d];
            if (++index[d] < shape[d]) break;
            ia -= a_stride[d] * shape[d];
            ib -= b_stride[d] * shape[d];
            index[d] = 0;
        }
    }
}`,
  },
  unary: {
    needs: [],
    math: true,
    text: `
#define CNNC_RELU 0
#define CNNC_LEAKY_RELU 1
#define CNNC_CLIP 2
#define CNNC_SIGMOID 3
#define CNNC_TANH 4
#define CNNC_ABS 5
#define CNNC_NEG 6
#define CNNC_SQRT 7
#define CNNC_EXP 8
#define CNNC_HARD_SIGMOID 9
#define CNNC_HARD_SWISH 10

/* Elementwise functions; alpha/beta: LeakyRelu's slope, Clip's bounds, HardSigmoid's alpha and beta. */
static void cnnc_unary(const float *x, float *y, int32_t n, int32_t op, float alpha, float beta)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        float v = x[i], r;
        switch (op) {
        case CNNC_RELU: r = v < 0.0f ? 0.0f : v; break;
        case CNNC_LEAKY_RELU: r = v < 0.0f ? alpha * v : v; break;
        case CNNC_CLIP: r = v < alpha ? alpha : v > beta ? beta : v; break;
        case CNNC_SIGMOID: r = (float)(1.0 / (1.0 + exp(-(double)v))); break;
        case CNNC_TANH: r = (float)tanh((double)v); break;
        case CNNC_ABS: r = v < 0.0f ? -v : v; break;
        case CNNC_NEG: r = -v; break;
        case CNNC_SQRT: r = (float)sqrt((double)v); break;
        case CNNC_EXP: r = (float)exp((double)v); break;
        case CNNC_HARD_SIGMOID: {
            double h = (double)alpha * v + beta;
            r = (float)(h < 0.0 ? 0.0 : h > 1.0 ? 1.0 : h);
            break;
        }
        default: {
            double h = v / 6.0 + 0.5;
            r = (float)(v * (h < 0.0 ? 0.0 : h > 1.0 ? 1.0 : h));
            break;
        }
        }
        y[i] = r;
    }
}`,
  },
  softmax: {
    needs: [],
    math: true,
    text: `
/* Softmax over rows of length n: exp(x - max) / sum, in double. */
static void cnnc_softmax(const float *x, float *y, int32_t rows, int32_t n)
{
    int32_t r, i;
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        double max = xr[0], sum = 0.0;
        for (i = 1; i < n; i++) if (xr[i] > max) max = xr[i];
        for (i = 0; i < n; i++) sum += exp((double)xr[i] - max);
        for (i = 0; i < n; i++) y[r * n + i] = (float)(exp((double)xr[i] - max) / sum);
    }
}`,
  },
  concat: {
    needs: [],
    text: `
/* Append one operand of a Concat: outer blocks of chunk elements, placed at offset within rows of row elements. */
static void cnnc_concat_part(const float *x, float *y, int32_t outer, int32_t chunk, int32_t row, int32_t offset)
{
    int32_t o;
    for (o = 0; o < outer; o++) memcpy(y + o * row + offset, x + o * chunk, (size_t)chunk * sizeof(float));
}`,
  },
};

/** The C kernels `names` need, in dependency order, and whether they need `<math.h>`. */
export function runtimeFor(names: Iterable<string>): { text: string; math: boolean } {
  const order: string[] = [];
  const visit = (name: string): void => {
    const kernel = KERNELS[name];
    if (kernel === undefined) throw new Error(`C runtime: no kernel "${name}"`);
    if (order.includes(name)) return;
    for (const n of kernel.needs) visit(n);
    order.push(name);
  };
  for (const n of [...names].sort()) visit(n);
  return {
    text: order.map((n) => KERNELS[n].text.trimStart()).join("\n\n"),
    math: order.some((n) => KERNELS[n].math === true),
  };
}

/** The kernel names the runtime has (for tests and listings). */
export const RUNTIME_KERNELS: readonly string[] = Object.keys(KERNELS);

function quantizeKernel(suffix: string, type: string): string {
  return `
/* Quantize float32 [C, spatial] (one sample) to mantissas (same layout) and exponents [G * nb, spatial], or [G] with
   block 0 (one block per group: its channels at every position). */
static int cnnc_quantize_${suffix}(const float *x, ${type} *xm, int8_t *xe, const cnnc_quantize_t *q)
{
    int32_t maxm = (1 << (q->mantissa_bits - 1)) - 1, c, s, j, gi, e;
    int32_t cg = q->channels / q->group, n = cg * q->spatial, i;
    if (q->block == 0) {
        for (gi = 0; gi < q->group; gi++) {
            const float *xg = x + gi * n;
            ${type} *mg = xm + gi * n;
            uint32_t amax = 0;
            for (i = 0; i < n; i++) {
                uint32_t m = cnnc_magnitude_bits(xg[i]);
                if (m > amax) amax = m;
            }
            if (amax >= 0x7f800000u) return CNNC_ERR_NONFINITE;
            e = cnnc_block_exponent(amax, q);
            xe[gi] = (int8_t)e;
            for (i = 0; i < n; i++) mg[i] = (${type})cnnc_quantize_value(xg[i], q->mantissa_bits - 2 - e, maxm, q->rounding);
        }
        return CNNC_OK;
    }
    for (s = 0; s < q->spatial; s++) {
        for (gi = 0; gi < q->group; gi++) {
            for (j = 0; j < q->blocks_per_group; j++) {
                int32_t c0 = gi * cg + j * q->block, c1 = c0 + q->block;
                uint32_t amax = 0;
                if (c1 > (gi + 1) * cg) c1 = (gi + 1) * cg;
                for (c = c0; c < c1; c++) {
                    uint32_t m = cnnc_magnitude_bits(x[c * q->spatial + s]);
                    if (m > amax) amax = m;
                }
                if (amax >= 0x7f800000u) return CNNC_ERR_NONFINITE;
                e = cnnc_block_exponent(amax, q);
                xe[(gi * q->blocks_per_group + j) * q->spatial + s] = (int8_t)e;
                for (c = c0; c < c1; c++) {
                    xm[c * q->spatial + s] =
                        (${type})cnnc_quantize_value(x[c * q->spatial + s], q->mantissa_bits - 2 - e, maxm, q->rounding);
                }
            }
        }
    }
    return CNNC_OK;
}`;
}

function layerKernel(suffix: string, type: string): string {
  return `
/* The layer rule of ir/bfp/plan.ts for one sample: block units, aligned exact products, bias, one saturation. */
static void cnnc_layer_${suffix}(const ${type} *xm, const int8_t *xe, const ${type} *wm, const int8_t *we, float *y,
                           const cnnc_layer_t *p)
{
    int32_t og = p->out_channels / p->group, cg = p->in_channels / p->group, gi, oi, oy, ox, c, ky, kx, j;
    int32_t plane = p->in_h * p->in_w, step = p->mantissa_bits - 2;
    for (gi = 0; gi < p->group; gi++) {
        for (oi = 0; oi < og; oi++) {
            int32_t o = gi * og + oi;
            for (oy = 0; oy < p->out_h; oy++) {
                for (ox = 0; ox < p->out_w; ox++) {
                    int32_t top = p->bias_unit != NULL ? p->bias_unit[o] : -0x7fffffff, unit, iy, ix, inside;
                    int64_t acc = 0, bias = 0;
                    /* Pass 1: the largest block unit (padding taps read blocks with the smallest exponent). */
                    if (p->block == 0) {
                        int32_t u = we[o * p->e_o] - step + xe[gi * p->x_e_g] - step;
                        if (u > top) top = u;
                    } else {
                        for (ky = 0; ky < p->kernel_h; ky++) {
                            iy = oy * p->stride_h - p->pad_h + ky * p->dilation_h;
                            for (kx = 0; kx < p->kernel_w; kx++) {
                                ix = ox * p->stride_w - p->pad_w + kx * p->dilation_w;
                                inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
                                for (j = 0; j < p->blocks_per_group; j++) {
                                    int32_t ex = inside ? xe[(gi * p->blocks_per_group + j) * plane + iy * p->in_w + ix]
                                                        : p->exponent_min;
                                    int32_t u = we[o * p->e_o + j * p->e_j + ky * p->e_y + kx * p->e_x] - step + ex - step;
                                    if (u > top) top = u;
                                }
                            }
                        }
                    }
                    unit = top - p->guard;
                    /* Pass 2: exact block products, each aligned to the accumulator's unit. */
                    if (p->block == 0) {
                        /* One exponent per operand: the products sum exactly in any order. */
                        int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
                        int32_t ky0, ky1, kx0, kx1;
                        int64_t sum = 0;
                        cnnc_range(y0, p->dilation_h, p->in_h, p->kernel_h, &ky0, &ky1);
                        cnnc_range(x0, p->dilation_w, p->in_w, p->kernel_w, &kx0, &kx1);
                        for (c = 0; c < cg; c++) {
                            const ${type} *xc = xm + (gi * cg + c) * plane;
                            const ${type} *wc = wm + o * p->w_o + c * p->w_c;
                            for (ky = ky0; ky < ky1; ky++) {
                                const ${type} *xr = xc + (y0 + ky * p->dilation_h) * p->in_w;
                                const ${type} *wr = wc + ky * p->w_y;
                                for (kx = kx0; kx < kx1; kx++) {
                                    sum += (int32_t)wr[kx * p->w_x] * (int32_t)xr[x0 + kx * p->dilation_w];
                                }
                            }
                        }
                        acc = cnnc_align(sum, we[o * p->e_o] - step + xe[gi * p->x_e_g] - step - unit, p->rounding,
                                         p->acc_min, p->acc_max);
                    } else {
                        for (ky = 0; ky < p->kernel_h; ky++) {
                            iy = oy * p->stride_h - p->pad_h + ky * p->dilation_h;
                            if (iy < 0 || iy >= p->in_h) continue;
                            for (kx = 0; kx < p->kernel_w; kx++) {
                                ix = ox * p->stride_w - p->pad_w + kx * p->dilation_w;
                                if (ix < 0 || ix >= p->in_w) continue;
                                for (j = 0; j < p->blocks_per_group; j++) {
                                    int32_t c0 = j * p->block, c1 = c0 + p->block;
                                    int32_t ex = xe[(gi * p->blocks_per_group + j) * plane + iy * p->in_w + ix];
                                    int32_t ew = we[o * p->e_o + j * p->e_j + ky * p->e_y + kx * p->e_x];
                                    int64_t sum = 0;
                                    if (c1 > cg) c1 = cg;
                                    for (c = c0; c < c1; c++) {
                                        sum += (int32_t)wm[o * p->w_o + c * p->w_c + ky * p->w_y + kx * p->w_x] *
                                               (int32_t)xm[(gi * cg + c) * plane + iy * p->in_w + ix];
                                    }
                                    acc += cnnc_align(sum, ew - step + ex - step - unit, p->rounding, p->acc_min,
                                                      p->acc_max);
                                }
                            }
                        }
                    }
                    if (p->bias_significand != NULL) {
                        bias = cnnc_align(p->bias_significand[o], p->bias_exponent[o] - unit, p->rounding, p->acc_min,
                                          p->acc_max);
                    }
                    acc += bias;
                    if (acc > p->acc_max) acc = p->acc_max;
                    if (acc < p->acc_min) acc = p->acc_min;
                    y[(o * p->out_h + oy) * p->out_w + ox] = cnnc_to_float(acc, unit);
                }
            }
        }
    }
}`;
}
