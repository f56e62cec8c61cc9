// test_matmul_q8.c: the 8-bit activation matmuls (--cpu-activations int8, kernels/cpu/matmul_q8.c
// for Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL, matmul_k8.c for the K-quants Q2_K..Q6_K and IQ4_XS) on every
// instruction-set path this CPU has (the others say SKIP; IQ4_XS has kernels on scalar and amx only).
//
// 1. Integer dots are exact: with power-of-two scales, small integer sub-scales and activations
//    that are small integers times a power of two (constant over each 256) with ±127 · 2^k in
//    every 32, the activation quantization (per 32 or per 256) is lossless and every float
//    operation of the epilogue is exact, so the result must equal the plain reference Σ_e w_e x_e
//    bit for bit, w_e the stored value (dequant_row, itself checked against gguf-py) and the sum
//    exact in double: that is the integer sum Σ_b d_w d_x (Σ_e sc q_w q_x − mn Σ q_x).
// 2. Against the float reference (the stored weights dequantized by dequant_row, x in double):
//    the integer sums are exact, so the only error beyond float rounding is the activations'
//    rounding to the 8-bit grid, |x̂ − x| <= d / 2 = amax(block) / 254 per element, a block being
//    the activation quantization's (32 elements, or 256 for the K-quants). Hence
//       |out − ref| <= Σ_blocks Σ|w| · amax / 254  (· 1.01 for the rounding of d, 1/d and x/d)
//                    + 2e-5 · Σ|w·x| (float accumulation, as test_kernels.c allows)
//    and against a reference fed the same 8-bit activations (quantized here, textbook way) only
//    the float term is left.
// 3. Batch invariance: every row of a 53-row batch equals itself computed alone, in an 8-row and
//    a 16-row sub-batch starting mid-way, and with one thread instead of two, bit for bit.
#include <stdlib.h>

#include "common/common.h"
#include "kernels/kernels.h"
#include "tests/unit/test.h"

static uint64_t seed = 88172645463325252ull;
static uint32_t rnd(void) { // xorshift64
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return (uint32_t)(seed >> 32);
}
static float rnd_float(float lo, float hi) {
    return lo + (hi - lo) * (float)(rnd() >> 8) / (float)(1 << 24);
}

static const QType TYPES[] = {QTYPE_Q4_0, QTYPE_Q4_1, QTYPE_Q5_0, QTYPE_Q5_1, QTYPE_Q8_0, QTYPE_IQ4_NL,
                             QTYPE_Q2_K, QTYPE_Q3_K, QTYPE_Q4_K, QTYPE_Q5_K, QTYPE_Q6_K, QTYPE_IQ4_XS};

// IQ4_XS has 8-bit kernels on the scalar and amx paths only (the others dequantize it).
static bool has_int8_kernel(const char *path, QType t) {
    return t != QTYPE_IQ4_XS || !strcmp(path, "scalar") || !strcmp(path, "amx");
}

// Elements per activation quantization block.
static int act_block(QType t) {
    return qtype_block(t) == QK_K ? QK_K : 32;
}

// Byte offsets of a block's fp16 scales (d, then dmin where there is one; -1 for none).
static void half_fields(QType t, int *d, int *dmin) {
    *dmin = -1;
    switch (t) {
    case QTYPE_Q2_K: *d = 80, *dmin = 82; break;
    case QTYPE_Q3_K: *d = 108; break;
    case QTYPE_Q6_K: *d = 208; break;
    case QTYPE_Q4_K:
    case QTYPE_Q5_K:
    case QTYPE_Q4_1:
    case QTYPE_Q5_1: *d = 0, *dmin = 2; break;
    default: *d = 0; break;
    }
}

static void put_half(uint8_t *p, float v) {
    uint16_t h = f32_to_fp16(v);
    memcpy(p, &h, 2);
}

// Random quants and sub-scales; scales 1 or 0.5 when exact (Q4_1 / Q5_1 mins integers in [-4, 3],
// K-quant dmin 1 or 0.5, Q6_K's int8 sub-scales in [-32, 31]), else small floats.
static uint8_t *make_w(QType t, int rows, int cols, bool exact) {
    size_t rb = qtype_row_size(t, cols), bb = qtype_block_bytes(t);
    uint8_t *w = xmalloc((size_t)rows * rb);
    for (size_t i = 0; i < (size_t)rows * rb; i++) w[i] = (uint8_t)rnd();
    int od, om;
    half_fields(t, &od, &om);
    for (int r = 0; r < rows; r++)
        for (size_t b = 0; b < rb / bb; b++) {
            uint8_t *blk = w + (size_t)r * rb + b * bb;
            put_half(blk + od, exact ? (rnd() & 1 ? 1.0f : 0.5f) : rnd_float(0.002f, 0.03f));
            if (t == QTYPE_Q4_1 || t == QTYPE_Q5_1) put_half(blk + 2, exact ? (float)((int)(rnd() % 8) - 4) : rnd_float(-0.2f, 0.0f));
            else if (om >= 0) put_half(blk + om, exact ? (rnd() & 1 ? 1.0f : 0.5f) : rnd_float(0.001f, 0.02f));
            if (t == QTYPE_Q6_K && exact)
                for (int g = 0; g < 16; g++) blk[192 + g] = (uint8_t)((int)(rnd() % 64) - 32);
            if (t == QTYPE_IQ4_XS && exact) // scales' high bits 1 or 2: ls - 32 in [-16, 15]
                for (int ib = 0; ib < 8; ib++) {
                    const int sh = 2 * (ib % 4);
                    blk[2 + ib / 4] = (uint8_t)((blk[2 + ib / 4] & ~(3 << sh)) | (1 + rnd() % 2) << sh);
                }
        }
    return w;
}

// exact: integers in [-15, 15] times s = 0.5 or 1 (one s per 256, or per row when shorter),
// each 32 holding ±127 s (small values keep the K-quants' sums exact in float).
static float *make_x(int n, int cols, bool exact) {
    float *x = xmalloc(sizeof(float) * (size_t)n * cols);
    float s = 1.0f;
    for (int i = 0; i < n * cols; i += 32) {
        if ((i % cols) % QK_K == 0) s = rnd() & 1 ? 1.0f : 0.5f;
        float spread = (i / 32) % 3 == 0 ? 4.0f : 0.5f;
        // every fifth block of the float rows is all rounding ties (k + 1/2 at d = s): each
        // path must round them to even as the textbook nearbyintf does
        bool ties = !exact && (i / 32) % 5 == 4;
        for (int e = 0; e < 32; e++)
            x[i + e] = exact  ? s * (float)((int)(rnd() % 31) - 15)
                       : ties ? s * ((float)((int)(rnd() % 254) - 127) + 0.5f)
                              : rnd_float(-1.0f, 1.0f) * spread;
        if (exact || ties) x[i + rnd() % 32] = rnd() & 1 ? 127.0f * s : -127.0f * s;
    }
    return x;
}

static int paths_tested;

// On the "amx" path a matrix is read from its repacked copy (k_pack), as the model loader makes
// it; the copy to free after, or NULL (the other paths read the stored blocks).
static void *pack_for_path(QMatrix *m) {
    size_t n = k_pack_bytes(m);
    if (!n) return NULL;
    void *p = xmalloc_aligned(n);
    k_pack(m, p);
    return p;
}

// Runs fn once per path the CPU supports, with int8 activations; restores the defaults after.
static void each_path(void (*fn)(const char *path)) {
    const char *best = k_int8_path();
    k_set_activations(K_ACT_INT8);
    for (int i = 0; k_int8_path_name(i); i++) {
        const char *p = k_int8_path_name(i);
        if (!k_int8_path_set(p)) {
            printf("SKIP %s: this CPU lacks it\n", p);
            continue;
        }
        paths_tested++;
        fn(p);
    }
    EXPECT(k_int8_path_set(best), "%s", best);
    k_set_activations(K_ACT_INT16);
}

typedef struct {
    int rows, cols, n;
} Shape;
// n >= 16 reaches the AMX tiles (16 token rows each), the rest their VNNI kernel
static const Shape SHAPES[] = {{37, 96, 7}, {5, 32, 1}, {67, 160, 4}, {64, 576, 9}, {9, 224, 13}, {20, 1536, 3}, {35, 224, 37},
                               {33, 160, 6}};

// The K-quants take each shape's columns rounded up to whole 256s.
static void each_case(const char *path, void (*fn)(const char *path, QType t, int R, int C, int N)) {
    for (size_t ti = 0; ti < ARRAY_LEN(TYPES); ti++)
        for (size_t si = 0; si < ARRAY_LEN(SHAPES) && has_int8_kernel(path, TYPES[ti]); si++) {
            int blk = qtype_block(TYPES[ti]), C = (SHAPES[si].cols + blk - 1) / blk * blk;
            fn(path, TYPES[ti], SHAPES[si].rows, C, SHAPES[si].n);
        }
}

static void int_exact_case(const char *path, QType t, int R, int C, int N) {
    uint8_t *w = make_w(t, R, C, true);
    float *x = make_x(N, C, true), *out = xmalloc(sizeof(float) * (size_t)N * R);
    QMatrix m = {t, R, C, w, NULL};
    void *pack = pack_for_path(&m);
    k_matmul(out, x, &m, N);
    size_t rb = qtype_row_size(t, C);
    float *wr = xmalloc(sizeof(float) * C);
    int bad = 0;
    for (int r = 0; r < R; r++) {
        dequant_row(t, w + (size_t)r * rb, wr, C);
        for (int tok = 0; tok < N; tok++) {
            double want = 0; // products of <= 24 + 8 bits, multiples of 2^-8 below 2^40: exact
            for (int c = 0; c < C; c++) want += (double)wr[c] * x[(size_t)tok * C + c];
            float got = out[(size_t)tok * R + r];
            if ((double)got != want && bad++ < 3)
                TEST_FAIL_("%s %s %dx%d n=%d row %d tok %d: %.9g, integer reference %.9g", path,
                           qtype_name(t), R, C, N, r, tok, got, want);
        }
    }
    free(wr), free(w), free(x), free(out), free(pack);
}

static void int_exact(const char *path) {
    each_case(path, int_exact_case);
}

static void test_int_exact(void) {
    each_path(int_exact);
}

static void vs_float_case(const char *path, QType t, int R, int C, int N) {
    uint8_t *w = make_w(t, R, C, false);
    float *x = make_x(N, C, false), *out = xmalloc(sizeof(float) * (size_t)N * R);
    QMatrix m = {t, R, C, w, NULL};
    void *pack = pack_for_path(&m);
    k_matmul(out, x, &m, N);
    float *wr = xmalloc(sizeof(float) * C), *xq = xmalloc(sizeof(float) * C);
    size_t rb = qtype_row_size(t, C);
    int bad = 0;
    const int ab = act_block(t);
    for (int tok = 0; tok < N; tok++) {
        const float *xt = x + (size_t)tok * C;
        for (int b = 0; b < C; b += ab) { // the textbook 8-bit quantization
            float amax = 0;
            for (int e = 0; e < ab; e++) amax = fmaxf(amax, fabsf(xt[b + e]));
            float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0;
            for (int e = 0; e < ab; e++) xq[b + e] = nearbyintf(xt[b + e] * id) * d;
        }
        for (int r = 0; r < R; r++) {
            dequant_row(t, w + (size_t)r * rb, wr, C);
            double ref = 0, refq = 0, mag = 0, bound = 0;
            for (int c = 0; c < C; c++)
                ref += (double)wr[c] * xt[c], refq += (double)wr[c] * xq[c], mag += fabs((double)wr[c] * xt[c]);
            for (int b = 0; b < C; b += ab) {
                double amax = 0, wsum = 0;
                for (int e = 0; e < ab; e++) amax = fmax(amax, fabs(xt[b + e])), wsum += fabs(wr[b + e]);
                bound += wsum * amax / 254.0;
            }
            double got = out[(size_t)tok * R + r], tol = 2e-5 * mag + 1e-6;
            if (fabs(got - refq) > tol && bad++ < 3)
                TEST_FAIL_("%s %s %dx%d row %d tok %d: %.7g vs same-quant reference %.7g (tol %.3g)", path,
                           qtype_name(t), R, C, r, tok, got, refq, tol);
            if (fabs(got - ref) > bound * 1.01 + tol && bad++ < 3)
                TEST_FAIL_("%s %s %dx%d row %d tok %d: %.7g vs float %.7g beyond the 8-bit bound %.3g", path,
                           qtype_name(t), R, C, r, tok, got, ref, bound);
        }
    }
    free(wr), free(xq), free(w), free(x), free(out), free(pack);
}

static void vs_float(const char *path) {
    each_case(path, vs_float_case);
}

static void test_vs_float(void) {
    each_path(vs_float);
}

static void batch_invariance(const char *path) {
    for (size_t ti = 0; ti < ARRAY_LEN(TYPES); ti++) {
        QType t = TYPES[ti];
        // N crosses the 48-row token chunk; 5 blocks, odd (2 for the K-quants)
        int R = 75, C = qtype_block(t) == QK_K ? 512 : 160, N = 53;
        uint8_t *w = make_w(t, R, C, false);
        QMatrix m = {t, R, C, w, NULL};
        void *pack = pack_for_path(&m);
        float *x = make_x(N, C, false), *batch = xmalloc(sizeof(float) * (size_t)N * R);
        float *part = xmalloc(sizeof(float) * (size_t)N * R);
        k_init(2, 64, 2048);
        k_matmul(batch, x, &m, N);
        int mism = 0;
        for (int tok = 0; tok < N; tok++) {
            k_matmul(part, x + (size_t)tok * C, &m, 1);
            mism += memcmp(part, batch + (size_t)tok * R, sizeof(float) * R) != 0;
        }
        static const int sub[][2] = {{8, 3}, {16, 11}, {16, 37}}; // rows, first row
        for (size_t i = 0; i < ARRAY_LEN(sub); i++) {
            k_matmul(part, x + (size_t)sub[i][1] * C, &m, sub[i][0]);
            mism += memcmp(part, batch + (size_t)sub[i][1] * R, sizeof(float) * sub[i][0] * R) != 0;
        }
        k_init(1, 64, 2048);
        k_matmul(part, x, &m, N);
        mism += memcmp(part, batch, sizeof(float) * (size_t)N * R) != 0;
        EXPECT(mism == 0, "%s %s: %d comparisons differ", path, qtype_name(t), mism);
        free(w), free(x), free(batch), free(part), free(pack);
    }
    k_init(2, 64, 2048);
}

static void test_batch_invariance(void) {
    each_path(batch_invariance);
}

// "amx" is the scalar kernel bit for bit (matmul_amx.c: the same exact int32 block sums, the same
// float epilogue order), in its tiles (16 token rows) and in its VNNI kernel (the rest, and a
// row alone), with two threads or one. Shapes: rows past the last whole 16 (weight rows
// padded in the repacked layout, token rows through the VNNI kernel), K = 32 and K not a
// multiple of 64.
static void test_amx_is_scalar(void) {
    k_set_activations(K_ACT_INT8);
    if (!k_int8_path_set("amx")) {
        printf("SKIP amx vs scalar: this CPU lacks AMX-INT8 or the kernel refused the tile state\n");
        k_set_activations(K_ACT_INT16);
        return;
    }
    static const Shape AMX_SHAPES[] = {{5, 32, 16}, {37, 96, 17}, {67, 160, 53}, {64, 576, 64}, {33, 1536, 35}, {16, 224, 48},
                                         {37, 96, 2}, {64, 576, 3}, {33, 1536, 5}, {67, 160, 7}, {16, 224, 15}};
    // the K-quants' (matmul_k8_amx.c): K a multiple of 256; tiles of K = 32 (Q4_K, Q5_K, IQ4_XS) or 16
    static const Shape K_SHAPES[] = {{5, 256, 16}, {37, 512, 17}, {33, 1536, 35}, {16, 768, 48}, {67, 256, 53},
                                     {37, 256, 2}, {64, 512, 3}, {33, 1536, 5}, {67, 256, 7}, {16, 768, 15}, {20, 256, 1}};
    // the types k_pack repacks; the others take the avx512-vnni kernels on the amx path (each_path)
    static const QType AMX_TYPES[] = {QTYPE_Q4_0, QTYPE_Q4_1, QTYPE_Q5_0, QTYPE_Q5_1, QTYPE_Q8_0, QTYPE_IQ4_NL,
                                      QTYPE_Q2_K, QTYPE_Q3_K, QTYPE_Q4_K, QTYPE_Q5_K, QTYPE_Q6_K, QTYPE_IQ4_XS};
    for (size_t ti = 0; ti < ARRAY_LEN(AMX_TYPES); ti++)
        for (size_t si = 0; si < ARRAY_LEN(AMX_SHAPES); si++) {
            QType t = AMX_TYPES[ti];
            const bool kq = qtype_block(t) == QK_K;
            if (kq && si >= ARRAY_LEN(K_SHAPES)) continue;
            const Shape sh = kq ? K_SHAPES[si] : AMX_SHAPES[si];
            int R = sh.rows, C = sh.cols, N = sh.n;
            uint8_t *w = make_w(t, R, C, false);
            float *x = make_x(N, C, false), *ref = xmalloc(sizeof(float) * (size_t)N * R);
            float *got = xmalloc(sizeof(float) * (size_t)N * R);
            QMatrix m = {t, R, C, w, NULL};
            EXPECT(k_int8_path_set("scalar"), "scalar");
            k_matmul(ref, x, &m, N);
            EXPECT(k_int8_path_set("amx"), "amx");
            void *pack = pack_for_path(&m);
            EXPECT(pack != NULL, "no repacked copy on the amx path");
            k_matmul(got, x, &m, N);
            int mism = 0;
            for (size_t i = 0; i < (size_t)N * R; i++)
                if (memcmp(&got[i], &ref[i], sizeof(float)) && mism++ < 3)
                    TEST_FAIL_("amx %s %dx%d n=%d: row %zu tok %zu: %.9g, scalar %.9g", qtype_name(t), R, C, N,
                               i % R, i / R, got[i], ref[i]);
            for (int tok = 0; tok < N; tok += 7) { // alone: the VNNI kernel
                k_matmul(got, x + (size_t)tok * C, &m, 1);
                mism += memcmp(got, ref + (size_t)tok * R, sizeof(float) * R) != 0;
            }
            k_init(1, 64, 2048);
            k_matmul(got, x, &m, N);
            mism += memcmp(got, ref, sizeof(float) * (size_t)N * R) != 0;
            k_init(2, 64, 2048);
            EXPECT(mism == 0, "amx %s %dx%d n=%d: %d mismatches against scalar", qtype_name(t), R, C, N, mism);
            free(w), free(x), free(ref), free(got), free(pack);
        }
    k_set_activations(K_ACT_INT16);
}

// The default stays the 16-bit path, whose result differs from the 8-bit one.
static void test_default_int16(void) {
    EXPECT(k_activations() == K_ACT_INT16, "default %d", (int)k_activations());
    int R = 16, C = 576;
    uint8_t *w = make_w(QTYPE_Q4_1, R, C, false);
    QMatrix m = {QTYPE_Q4_1, R, C, w, NULL};
    float *x = make_x(1, C, false), a[16], b[16];
    k_matmul(a, x, &m, 1);
    k_set_activations(K_ACT_INT8);
    k_matmul(b, x, &m, 1);
    k_set_activations(K_ACT_INT16);
    EXPECT(memcmp(a, b, sizeof a) != 0, "int8 and int16 agree bit for bit: is the int8 path reached?");
    free(w), free(x);
}

// auto: Q4_0/Q4_1/Q8_0 take the int16 kernels (the int8 ones on the amx path), every other
// quantized type the int8 ones, bit for bit what the explicit setting gives.
static void test_auto_per_type(void) {
    bool amx = strcmp(k_int8_path(), "amx") == 0;
    for (size_t ti = 0; ti < ARRAY_LEN(TYPES); ti++) {
        QType t = TYPES[ti];
        int R = 16, C = 512, q16 = (t == QTYPE_Q4_0 || t == QTYPE_Q4_1 || t == QTYPE_Q8_0) && !amx;
        uint8_t *w = make_w(t, R, C, false);
        QMatrix m = {t, R, C, w, NULL};
        float *x = make_x(3, C, false), want[48], got[48];
        k_set_activations(q16 ? K_ACT_INT16 : K_ACT_INT8);
        k_matmul(want, x, &m, 3);
        k_set_activations(K_ACT_AUTO);
        EXPECT(k_act_int8(t) == !q16, "k_act_int8(%s)", qtype_name(t));
        k_matmul(got, x, &m, 3);
        EXPECT(memcmp(want, got, sizeof want) == 0, "auto on %s is not the %s path", qtype_name(t), q16 ? "int16" : "int8");
        free(w), free(x);
    }
    k_set_activations(K_ACT_INT16);
}

int main(void) {
    k_init(2, 64, 2048);
    printf("int8 path picked for this CPU: %s\n", k_int8_path());
    TEST_RUN(test_default_int16);
    TEST_RUN(test_int_exact);
    TEST_RUN(test_vs_float);
    TEST_RUN(test_batch_invariance);
    TEST_RUN(test_amx_is_scalar);
    TEST_RUN(test_auto_per_type);
    printf("%d path runs\n", paths_tested);
    k_free();
    return test_summary();
}
