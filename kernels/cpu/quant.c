// quant.c: ggml's type table, fp16/bf16 conversions and row dequantization (see quant.h).
//
// Block layouts follow ggml's ggml-common.h; the arithmetic follows ggml's reference
// dequantize_row_* in ggml-quants.c operation for operation, so results are bit-identical to
// ggml and to gguf-py's numpy decoder (tests/data/quant/ holds that decoder's output).
// The compiler may fuse `q * d - m` into an fma (gnu11 allows contraction) without changing a
// bit: every product that is then added is exact in float (an fp16 scale has 11 significant
// bits, a 6-bit sub-scale and a 5-bit quant add at most 11 more), so there is nothing to round.

#include "kernels/quant.h"

#include <string.h>

#include "common/common.h"
#include "kernels/cpu/cpu.h"

// ---- the type table

typedef struct {
    const char *name;
    int block;     // elements per block
    int bytes;     // bytes per block
    bool dequant;  // dequant_row implemented
} QTypeInfo;

static const QTypeInfo QTYPE_INFO[QTYPE_COUNT] = {
    [QTYPE_F32] = {"F32", 1, 4, true},
    [QTYPE_F16] = {"F16", 1, 2, true},
    [QTYPE_Q4_0] = {"Q4_0", 32, 18, true},
    [QTYPE_Q4_1] = {"Q4_1", 32, 20, true},
    [QTYPE_Q5_0] = {"Q5_0", 32, 22, true},
    [QTYPE_Q5_1] = {"Q5_1", 32, 24, true},
    [QTYPE_Q8_0] = {"Q8_0", 32, 34, true},
    [QTYPE_Q8_1] = {"Q8_1", 32, 36, false},
    [QTYPE_Q2_K] = {"Q2_K", QK_K, 84, true},
    [QTYPE_Q3_K] = {"Q3_K", QK_K, 110, true},
    [QTYPE_Q4_K] = {"Q4_K", QK_K, 144, true},
    [QTYPE_Q5_K] = {"Q5_K", QK_K, 176, true},
    [QTYPE_Q6_K] = {"Q6_K", QK_K, 210, true},
    [QTYPE_Q8_K] = {"Q8_K", QK_K, 292, false},
    [QTYPE_IQ2_XXS] = {"IQ2_XXS", QK_K, 66, false},
    [QTYPE_IQ2_XS] = {"IQ2_XS", QK_K, 74, false},
    [QTYPE_IQ3_XXS] = {"IQ3_XXS", QK_K, 98, false},
    [QTYPE_IQ1_S] = {"IQ1_S", QK_K, 50, false},
    [QTYPE_IQ4_NL] = {"IQ4_NL", 32, 18, true},
    [QTYPE_IQ3_S] = {"IQ3_S", QK_K, 110, false},
    [QTYPE_IQ2_S] = {"IQ2_S", QK_K, 82, false},
    [QTYPE_IQ4_XS] = {"IQ4_XS", QK_K, 136, true},
    [QTYPE_I8] = {"I8", 1, 1, false},
    [QTYPE_I16] = {"I16", 1, 2, false},
    [QTYPE_I32] = {"I32", 1, 4, false},
    [QTYPE_I64] = {"I64", 1, 8, false},
    [QTYPE_F64] = {"F64", 1, 8, false},
    [QTYPE_IQ1_M] = {"IQ1_M", QK_K, 56, false},
    [QTYPE_BF16] = {"BF16", 1, 2, true},
    [QTYPE_TQ1_0] = {"TQ1_0", QK_K, 54, false},
    [QTYPE_TQ2_0] = {"TQ2_0", QK_K, 66, false},
    [QTYPE_MXFP4] = {"MXFP4", 32, 17, false},
};

bool qtype_known(int t) {
    return t >= 0 && t < QTYPE_COUNT && QTYPE_INFO[t].name != NULL;
}

bool qtype_dequant_supported(QType t) {
    return qtype_known((int)t) && QTYPE_INFO[t].dequant;
}

const char *qtype_name(QType t) {
    return qtype_known((int)t) ? QTYPE_INFO[t].name : "unknown";
}

int qtype_block(QType t) {
    CHECK(qtype_known((int)t), "type id %d", (int)t);
    return QTYPE_INFO[t].block;
}

size_t qtype_block_bytes(QType t) {
    CHECK(qtype_known((int)t), "type id %d", (int)t);
    return (size_t)QTYPE_INFO[t].bytes;
}

size_t qtype_row_size(QType t, int64_t n) {
    CHECK(qtype_known((int)t), "type id %d", (int)t);
    const QTypeInfo *info = &QTYPE_INFO[t];
    // computed outside CHECK: its condition is pasted into the format string, so no '%' there
    bool whole_blocks = n >= 0 && n % info->block == 0;
    CHECK(whole_blocks, "row of %lld %s elements", (long long)n, info->name);
    return (size_t)(n / info->block) * (size_t)info->bytes;
}

// ---- fp16 and bf16

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000 | mant << 13); // inf, NaN (payload kept)
    if (exp != 0) return f32_from_bits(sign | (exp + 127 - 15) << 23 | mant << 13);
    // zero or subnormal: mant * 2^-24, exact in float (mant < 2^10)
    float f = (float)mant * 0x1p-24f;
    return f32_from_bits(sign | f32_bits(f));
}

uint16_t f32_to_fp16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffff;
    if (x > 0x7f800000) return sign | 0x7e00 | (uint16_t)((x >> 13) & 0x3ff); // NaN, made quiet
    if (x >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds past 65504 to inf
    if (x < 0x38800000) {
        // below 2^-14, the smallest normal half: the result is a multiple of 2^-24. Adding 0.5
        // puts the value's units-of-2^-24 in the low mantissa bits of a float whose exponent
        // is fixed, so the float adder does the round-to-nearest-even for us.
        float r = f32_from_bits(x) + 0.5f;
        return sign | (uint16_t)(f32_bits(r) - f32_bits(0.5f));
    }
    // normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even; a
    // carry out of the mantissa correctly bumps the exponent (up to inf at the top).
    uint32_t odd = (x >> 13) & 1;
    x += ((uint32_t)(15 - 127) << 23) + 0xfff + odd;
    return sign | (uint16_t)(x >> 13);
}

float bf16_to_f32(uint16_t h) {
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); // NaN, made quiet
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

// ---- little-endian scalar reads: the mapping gives no alignment, so never cast

static inline float read_fp16(const uint8_t *p) {
    return fp16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

static inline uint32_t read_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// ---- the 32-element block types
// Q4_0 {fp16 d; u8 qs[16]}: element j < 16 is the low nibble of qs[j], j >= 16 the high
// nibble of qs[j-16]; value (q - 8) * d. Q4_1 adds fp16 m after d: value q * d + m.
// Q5_0/Q5_1 add a u32 qh after the scales whose bit j is the fifth bit of element j.

static void dequant_q4_0(const uint8_t *b, float *y) {
    float d = read_fp16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0x0f) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

static void dequant_q4_1(const uint8_t *b, float *y) {
    float d = read_fp16(b), m = read_fp16(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(qs[j] & 0x0f) * d + m;
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
}

static void dequant_q5_0(const uint8_t *b, float *y) {
    float d = read_fp16(b);
    uint32_t qh = read_u32(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
        y[j] = (float)(((qs[j] & 0x0f) | h0 << 4) - 16) * d;
        y[j + 16] = (float)(((qs[j] >> 4) | h1 << 4) - 16) * d;
    }
}

static void dequant_q5_1(const uint8_t *b, float *y) {
    float d = read_fp16(b), m = read_fp16(b + 2);
    uint32_t qh = read_u32(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
        y[j] = (float)((qs[j] & 0x0f) | h0 << 4) * d + m;
        y[j + 16] = (float)((qs[j] >> 4) | h1 << 4) * d + m;
    }
}

// Q8_0 {fp16 d; i8 qs[32]}: value q * d.
static void dequant_q8_0(const uint8_t *b, float *y) {
    float d = read_fp16(b);
    const int8_t *qs = (const int8_t *)(b + 2);
    for (int j = 0; j < 32; j++) y[j] = (float)qs[j] * d;
}

// ---- the K-quants: 256-element super-blocks

// Q4_K and Q5_K pack 8 six-bit scales and 8 six-bit mins into 12 bytes: bytes 0-3 hold scales
// 0-3 (low 6 bits) and the top 2 bits of scales 4-7; bytes 4-7 the same for the mins; bytes
// 8-11 the low 4 bits of scale (low nibble) and min (high nibble) 4-7.

// Q4_K {fp16 d, dmin; u8 scales[12]; u8 qs[128]}: each 64 elements are two sub-blocks of 32
// sharing 32 bytes of qs (low nibbles, then high); value d*sc * q - dmin*m.
static void dequant_q4_K(const uint8_t *b, float *y) {
    float d = read_fp16(b), dmin = read_fp16(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
        int sc, m;
        kcpu_k_scale_min(is, scales, &sc, &m);
        float d1 = d * (float)sc, m1 = dmin * (float)m;
        kcpu_k_scale_min(is + 1, scales, &sc, &m);
        float d2 = d * (float)sc, m2 = dmin * (float)m;
        for (int l = 0; l < 32; l++) y[j + l] = d1 * (float)(q[l] & 0x0f) - m1;
        for (int l = 0; l < 32; l++) y[j + 32 + l] = d2 * (float)(q[l] >> 4) - m2;
    }
}

// Q5_K {fp16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: Q4_K plus a fifth bit per element,
// element j + l (l < 32) of 64-element group g taking bit 2g of qh[l], the upper half bit 2g+1.
static void dequant_q5_K(const uint8_t *b, float *y) {
    float d = read_fp16(b), dmin = read_fp16(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
        int sc, m;
        kcpu_k_scale_min(is, scales, &sc, &m);
        float d1 = d * (float)sc, m1 = dmin * (float)m;
        kcpu_k_scale_min(is + 1, scales, &sc, &m);
        float d2 = d * (float)sc, m2 = dmin * (float)m;
        for (int l = 0; l < 32; l++)
            y[j + l] = d1 * (float)((ql[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            y[j + 32 + l] = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
}

// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; fp16 d}: each 128 elements take 64 bytes of ql
// (low 4 bits) and 32 of qh (2 bits each), one int8 scale per 16 elements; value
// d*scale * (q - 32).
static void dequant_q6_K(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = read_fp16(b + 208);
    for (int n = 0; n < QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
            int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
            int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
            int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

// Q2_K {u8 scales[16]; u8 qs[64]; fp16 d, dmin}: 2-bit quants, one byte per 16 elements holding
// the scale (low nibble) and min (high nibble); each 128 elements take 32 bytes of qs, element
// group j (of 4) the bits 2j..2j+1; value d*sc * q - dmin*m.
static void dequant_q2_K(const uint8_t *b, float *y) {
    const uint8_t *sc = b, *q = b + 16;
    float d = read_fp16(b + 80), dmin = read_fp16(b + 82);
    for (int n = 0, is = 0; n < QK_K; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2)
            for (int h = 0; h < 32; h += 16, is++) {
                float dl = d * (float)(sc[is] & 0x0f), ml = dmin * (float)(sc[is] >> 4);
                for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[h + l] >> shift) & 3) - ml;
            }
}

// Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; fp16 d}: 2 low bits as Q2_K, the third bit of
// element group j (of 8) in bit j of hmask (clear means -4), and 16 six-bit scales packed as
// low nibbles in bytes 0-7 then 2-bit tops in bytes 8-11; value d*(sc - 32) * q.
static void dequant_q3_K(const uint8_t *b, float *y) {
    const uint8_t *hm = b, *q = b + 32, *s = b + 96;
    float d = read_fp16(b + 108);
    int sc[16];
    kcpu_q3k_scales(s, sc);
    uint8_t m = 1;
    for (int n = 0, is = 0; n < QK_K; n += 128, q += 32)
        for (int shift = 0; shift < 8; shift += 2, m <<= 1)
            for (int h = 0; h < 32; h += 16, is++) {
                float dl = d * (float)sc[is];
                for (int l = 0; l < 16; l++)
                    *y++ = dl * (float)(((q[h + l] >> shift) & 3) - (hm[h + l] & m ? 0 : 4));
            }
}

// ---- the non-linear 4-bit types: indices into a fixed table of 16 values

// IQ4_NL {fp16 d; u8 qs[16]}: nibbles as Q4_0; value d * KCPU_IQ4_VALUES[q].
static void dequant_iq4_nl(const uint8_t *b, float *y) {
    float d = read_fp16(b);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)KCPU_IQ4_VALUES[b[2 + j] & 0x0f];
        y[j + 16] = d * (float)KCPU_IQ4_VALUES[b[2 + j] >> 4];
    }
}

// IQ4_XS {fp16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]}: eight IQ4_NL-like sub-blocks of 32
// whose 6-bit scales are a nibble of scales_l and 2 bits of scales_h; value d*(ls - 32) * table.
static void dequant_iq4_xs(const uint8_t *b, float *y) {
    float d = read_fp16(b);
    int sh = b[2] | b[3] << 8;
    for (int ib = 0; ib < 8; ib++, y += 32) {
        int ls = ((b[4 + ib / 2] >> 4 * (ib % 2)) & 0x0f) | ((sh >> 2 * ib) & 3) << 4;
        float dl = d * (float)(ls - 32);
        const uint8_t *qs = b + 8 + 16 * ib;
        for (int j = 0; j < 16; j++) {
            y[j] = dl * (float)KCPU_IQ4_VALUES[qs[j] & 0x0f];
            y[j + 16] = dl * (float)KCPU_IQ4_VALUES[qs[j] >> 4];
        }
    }
}

// ---- rows

typedef void (*BlockDequant)(const uint8_t *block, float *out);

void dequant_row(QType t, const void *src, float *dst, int64_t n) {
    CHECK(qtype_dequant_supported(t), "dequantizing type %s (%d)", qtype_name(t), (int)t);
    bool whole_blocks = n >= 0 && n % QTYPE_INFO[t].block == 0;
    CHECK(whole_blocks, "row of %lld %s", (long long)n, qtype_name(t));
    const uint8_t *s = src;
    switch (t) {
    case QTYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    case QTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = read_fp16(s + 2 * i);
        return;
    case QTYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32((uint16_t)(s[2 * i] | s[2 * i + 1] << 8));
        return;
    default:
        break;
    }
    BlockDequant fn = NULL;
    switch (t) {
    case QTYPE_Q4_0: fn = dequant_q4_0; break;
    case QTYPE_Q4_1: fn = dequant_q4_1; break;
    case QTYPE_Q5_0: fn = dequant_q5_0; break;
    case QTYPE_Q5_1: fn = dequant_q5_1; break;
    case QTYPE_Q8_0: fn = dequant_q8_0; break;
    case QTYPE_Q2_K: fn = dequant_q2_K; break;
    case QTYPE_Q3_K: fn = dequant_q3_K; break;
    case QTYPE_Q4_K: fn = dequant_q4_K; break;
    case QTYPE_Q5_K: fn = dequant_q5_K; break;
    case QTYPE_Q6_K: fn = dequant_q6_K; break;
    case QTYPE_IQ4_NL: fn = dequant_iq4_nl; break;
    case QTYPE_IQ4_XS: fn = dequant_iq4_xs; break;
    default: DIE("no dequantizer for %s", qtype_name(t));
    }
    int qk = QTYPE_INFO[t].block, bytes = QTYPE_INFO[t].bytes;
    for (int64_t i = 0; i < n / qk; i++) fn(s + i * bytes, dst + i * qk);
}
