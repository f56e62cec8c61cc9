// test_quant.c: the type table, fp16/bf16 conversions and dequant_row of every supported type,
// checked bit for bit against gguf-py's numpy decoder (tests/data/quant/, made by
// scripts/make-quant-data.py) and, for fp16, against an exhaustive independent reference.
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "kernels/quant.h"
#include "test.h"

// Reads TEST_DATA_DIR/quant/<name>; NULL (and a test failure) when missing.
static void *data_read(const char *name, size_t *len) {
    char path[512], err[ERR_MAX];
    snprintf(path, sizeof path, "%s/quant/%s", TEST_DATA_DIR, name);
    void *buf = file_read_all(path, len, err);
    if (!buf) TEST_FAIL_("%s", err);
    return buf;
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// ---- the type table

static void test_type_table(void) {
    static const struct { QType t; int64_t n; size_t bytes; int block; const char *name; bool deq; } cases[] = {
        {QTYPE_F32, 7, 28, 1, "F32", true},
        {QTYPE_F16, 3, 6, 1, "F16", true},
        {QTYPE_BF16, 576, 1152, 1, "BF16", true},
        {QTYPE_Q4_0, 64, 36, 32, "Q4_0", true},
        {QTYPE_Q4_1, 576, 360, 32, "Q4_1", true},
        {QTYPE_Q5_0, 32, 22, 32, "Q5_0", true},
        {QTYPE_Q5_1, 32, 24, 32, "Q5_1", true},
        {QTYPE_Q8_0, 576, 612, 32, "Q8_0", true},
        {QTYPE_Q8_1, 32, 36, 32, "Q8_1", false},
        {QTYPE_Q2_K, 256, 84, 256, "Q2_K", true},
        {QTYPE_Q3_K, 256, 110, 256, "Q3_K", true},
        {QTYPE_Q4_K, 512, 288, 256, "Q4_K", true},
        {QTYPE_Q5_K, 256, 176, 256, "Q5_K", true},
        {QTYPE_Q6_K, 768, 630, 256, "Q6_K", true},
        {QTYPE_Q8_K, 256, 292, 256, "Q8_K", false},
        {QTYPE_IQ4_NL, 32, 18, 32, "IQ4_NL", true},
        {QTYPE_IQ4_XS, 256, 136, 256, "IQ4_XS", true},
        {QTYPE_F64, 2, 16, 1, "F64", false},
        {QTYPE_TQ2_0, 256, 66, 256, "TQ2_0", false},
        {QTYPE_Q4_0, 0, 0, 32, "Q4_0", true},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        EXPECT(qtype_known((int)cases[i].t), "%s", cases[i].name);
        EXPECT_EQ_INT(qtype_row_size(cases[i].t, cases[i].n), cases[i].bytes);
        EXPECT_EQ_INT(qtype_block(cases[i].t), cases[i].block);
        EXPECT_STR_EQ(qtype_name(cases[i].t), cases[i].name);
        EXPECT_EQ_INT(qtype_dequant_supported(cases[i].t), cases[i].deq);
    }
    // ids ggml never used or has retired, and ones out of range, are unknown
    static const int unknown[] = {-1, 4, 5, 31, 32, 33, 36, 37, 38, 40, 1000};
    for (size_t i = 0; i < ARRAY_LEN(unknown); i++) {
        EXPECT(!qtype_known(unknown[i]), "id %d", unknown[i]);
        EXPECT_STR_EQ(qtype_name((QType)unknown[i]), "unknown");
    }
    int n_known = 0;
    for (int t = 0; t < QTYPE_COUNT; t++) n_known += qtype_known(t);
    EXPECT_EQ_INT(n_known, 32);
}

// ---- dequantization against gguf-py

static const QType DEQUANT_TYPES[] = {
    QTYPE_F32, QTYPE_F16, QTYPE_BF16, QTYPE_Q4_0, QTYPE_Q4_1, QTYPE_Q5_0,
    QTYPE_Q5_1, QTYPE_Q8_0, QTYPE_Q2_K, QTYPE_Q3_K, QTYPE_Q4_K, QTYPE_Q5_K, QTYPE_Q6_K, QTYPE_IQ4_NL, QTYPE_IQ4_XS,
};

// Compares n floats bit for bit; reports the first difference.
static int compare_bits(const char *what, const float *got, const float *want, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        if (bits_of(got[i]) != bits_of(want[i])) {
            TEST_FAIL_("%s: element %lld is %.9g (%08x), expected %.9g (%08x)", what, (long long)i,
                       got[i], bits_of(got[i]), want[i], bits_of(want[i]));
            return 1;
        }
    }
    return 0;
}

static void test_dequant_reference(void) {
    for (size_t k = 0; k < ARRAY_LEN(DEQUANT_TYPES); k++) {
        QType t = DEQUANT_TYPES[k];
        char name[64];
        size_t raw_len = 0, ref_len = 0;
        snprintf(name, sizeof name, "%s.raw", qtype_name(t));
        uint8_t *raw = data_read(name, &raw_len);
        snprintf(name, sizeof name, "%s.f32", qtype_name(t));
        float *ref = data_read(name, &ref_len);
        if (!raw || !ref) { free(raw); free(ref); continue; }
        int64_t n = (int64_t)(ref_len / sizeof(float));
        int block = qtype_block(t);
        size_t bb = qtype_block_bytes(t);
        bool whole = n > 0 && n % block == 0;
        EXPECT(whole, "%s: %lld values", qtype_name(t), (long long)n);
        if (!whole) { free(raw); free(ref); continue; }
        EXPECT_EQ_INT(raw_len, qtype_row_size(t, n));
        if (raw_len != qtype_row_size(t, n)) { free(raw); free(ref); continue; }

        // the whole file as one row, from a copy at an odd address (the reads must not assume
        // any alignment: the blocks of a GGUF tensor have none)
        uint8_t *odd = malloc(raw_len + 1);
        memcpy(odd + 1, raw, raw_len);
        float *out = malloc((size_t)n * sizeof(float));
        dequant_row(t, odd + 1, out, n);
        compare_bits(qtype_name(t), out, ref, n);

        // and as rows of 1, 2, 3, ... blocks, as a matrix's rows are
        memset(out, 0xff, (size_t)n * sizeof(float));
        int64_t nb = n / block, b = 0;
        for (int64_t rows = 1; b < nb; rows++) {
            int64_t take = MIN(rows, nb - b);
            dequant_row(t, odd + 1 + b * bb, out + b * block, take * block);
            b += take;
        }
        char what[64];
        snprintf(what, sizeof what, "%s in short rows", qtype_name(t));
        compare_bits(what, out, ref, n);
        free(odd);
        free(out);
        free(raw);
        free(ref);
    }
}

// Hand-made blocks whose values are known without any decoder: a check on the layout that does
// not depend on the generated data.
static void test_dequant_handmade(void) {
    // Q8_0: d = 0.5 (fp16 0x3800), q = -16..15
    uint8_t q8[34] = {0x00, 0x38};
    for (int j = 0; j < 32; j++) q8[2 + j] = (uint8_t)(int8_t)(j - 16);
    float y[256];
    dequant_row(QTYPE_Q8_0, q8, y, 32);
    for (int j = 0; j < 32; j++) EXPECT_EQ_INT(bits_of(y[j]), bits_of((float)(j - 16) * 0.5f));

    // Q4_1: d = 2, m = -1; element j < 16 is the low nibble of byte j, j >= 16 the high one
    uint8_t q41[20] = {0x00, 0x40, 0x00, 0xbc};
    for (int j = 0; j < 16; j++) q41[4 + j] = (uint8_t)(j | (15 - j) << 4);
    dequant_row(QTYPE_Q4_1, q41, y, 32);
    for (int j = 0; j < 16; j++) {
        EXPECT_EQ_INT((int)y[j], 2 * j - 1);
        EXPECT_EQ_INT((int)y[j + 16], 2 * (15 - j) - 1);
    }

    // Q5_0: d = 1; qh bit j is element j's fifth bit; value q - 16
    uint8_t q50[22] = {0x00, 0x3c, 0x01, 0x00, 0x00, 0x80}; // bits 0 and 31 set
    dequant_row(QTYPE_Q5_0, q50, y, 32);
    EXPECT_EQ_INT((int)y[0], 0);    // 16 - 16
    EXPECT_EQ_INT((int)y[1], -16);  // 0 - 16
    EXPECT_EQ_INT((int)y[31], 0);

    // Q6_K: d = 1, all scales 1, ql = qh = 0 -> every value (0 - 32) * 1
    uint8_t q6[210] = {0};
    memset(q6 + 192, 1, 16);
    q6[208] = 0x00; q6[209] = 0x3c;
    dequant_row(QTYPE_Q6_K, q6, y, 256);
    for (int j = 0; j < 256; j++) EXPECT_EQ_INT((int)y[j], -32);
}

// ---- fp16

// The value of half h computed in double from the IEEE definition (finite h only).
static double fp16_value(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return h & 0x8000 ? -v : v;
}

static void test_fp16_exhaustive(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536 && bad < 5; h++) {
        float f = fp16_to_f32((uint16_t)h);
        bool is_nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff) != 0;
        bool is_inf = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff) == 0;
        if (is_nan) {
            if (!isnan(f)) { TEST_FAIL_("half %04x should be NaN", h); bad++; }
            if (!isnan(fp16_to_f32(f32_to_fp16(f)))) { TEST_FAIL_("NaN %04x lost in a round trip", h); bad++; }
            continue;
        }
        double want = is_inf ? (h & 0x8000 ? -INFINITY : INFINITY) : fp16_value((uint16_t)h);
        if ((double)f != want || !signbit(f) != !signbit(want)) {
            TEST_FAIL_("half %04x -> %.9g, expected %.9g", h, f, want);
            bad++;
        }
        if (f32_to_fp16(f) != h) {
            TEST_FAIL_("half %04x round trip gives %04x", h, f32_to_fp16(f));
            bad++;
        }
    }
}

// f32 -> fp16 against numpy (tests/data/quant/convert_fp16.*): exact, except that for NaN
// inputs only NaN-ness and sign must survive (payload handling differs between
// implementations).
static void test_fp16_from_f32_numpy(void) {
    size_t nin = 0, nout = 0;
    float *in = data_read("convert_fp16.f32", &nin);
    uint16_t *want = data_read("convert_fp16.u16", &nout);
    if (in && want) {
        EXPECT_EQ_INT(nin / 4, nout / 2);
        int bad = 0;
        for (size_t i = 0; i < nin / 4 && i < nout / 2 && bad < 5; i++) {
            uint16_t got = f32_to_fp16(in[i]);
            bool ok = isnan(in[i]) ? (got & 0x7fff) > 0x7c00 && (got & 0x8000) == (want[i] & 0x8000)
                                   : got == want[i];
            if (!ok) {
                TEST_FAIL_("f32 %.9g (%08x) -> fp16 %04x, numpy says %04x", in[i], bits_of(in[i]), got, want[i]);
                bad++;
            }
        }
    }
    free(in);
    free(want);
}

// f32 -> fp16 against the nearest half found by search over every finite half, for floats
// spread over the whole range (ties to the even mantissa; beyond 65520 inf).
static void test_fp16_from_f32_search(void) {
    static float halves[31744]; // the non-negative finite halves, ascending
    for (int h = 0; h < 31744; h++) halves[h] = (float)fp16_value((uint16_t)h);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    int bad = 0;
    for (int i = 0; i < 200000 && bad < 5; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        // magnitudes from 2^-30 to 2^17, every mantissa pattern
        uint32_t u = (uint32_t)(97 + (s >> 40) % 48) << 23 | (uint32_t)(s & 0x7fffff);
        float x = float_of(u);
        uint16_t want;
        if ((double)x >= 65520.0) {
            want = 0x7c00;
        } else {
            int lo = 0, hi = 31743; // largest half <= x
            while (lo < hi) { int mid = (lo + hi + 1) / 2; if (halves[mid] <= x) lo = mid; else hi = mid - 1; }
            want = (uint16_t)lo;
            if (lo < 31743) {
                double dl = (double)x - halves[lo], dh = (double)halves[lo + 1] - x;
                if (dh < dl || (dh == dl && (lo & 1))) want = (uint16_t)(lo + 1);
            }
        }
        uint16_t got = f32_to_fp16(x), got_neg = f32_to_fp16(-x);
        if (got != want || got_neg != (want | 0x8000)) {
            TEST_FAIL_("f32 %.9g (%08x) -> %04x / %04x, expected %04x", x, u, got, got_neg, want);
            bad++;
        }
    }
    EXPECT_EQ_INT(f32_to_fp16(INFINITY), 0x7c00);
    EXPECT_EQ_INT(f32_to_fp16(-INFINITY), 0xfc00);
    EXPECT((f32_to_fp16(NAN) & 0x7fff) > 0x7c00);
    EXPECT_EQ_INT(f32_to_fp16(-0.0f), 0x8000);
    EXPECT_EQ_INT(f32_to_fp16(1e-30f), 0);
}

// ---- bf16

static void test_bf16(void) {
    size_t nin = 0, nout = 0;
    float *in = data_read("convert_bf16.f32", &nin);
    uint16_t *want = data_read("convert_bf16.u16", &nout);
    if (in && want) {
        EXPECT_EQ_INT(nin / 4, nout / 2);
        int bad = 0;
        for (size_t i = 0; i < nin / 4 && i < nout / 2 && bad < 5; i++) {
            uint16_t got = f32_to_bf16(in[i]);
            if (got != want[i]) {
                TEST_FAIL_("f32 %.9g (%08x) -> bf16 %04x, gguf-py says %04x", in[i], bits_of(in[i]), got, want[i]);
                bad++;
            }
        }
    }
    free(in);
    free(want);
    // every bf16 survives a round trip through f32 (NaNs stay NaN)
    int bad = 0;
    for (uint32_t h = 0; h < 65536 && bad < 5; h++) {
        float f = bf16_to_f32((uint16_t)h);
        EXPECT_EQ_INT(bits_of(f), h << 16);
        uint16_t back = f32_to_bf16(f);
        if (isnan(f) ? !isnan(bf16_to_f32(back)) : back != h) {
            TEST_FAIL_("bf16 %04x round trip gives %04x", h, back);
            bad++;
        }
    }
    EXPECT_EQ_INT(f32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ_INT(f32_to_bf16(float_of(0x3f808000)), 0x3f80); // tie, to even
    EXPECT_EQ_INT(f32_to_bf16(float_of(0x3f818000)), 0x3f82); // tie, to even (up)
    EXPECT_EQ_INT(f32_to_bf16(float_of(0x7f7fffff)), 0x7f80); // rounds to inf
}

int main(void) {
    TEST_RUN(test_type_table);
    TEST_RUN(test_dequant_reference);
    TEST_RUN(test_dequant_handmade);
    TEST_RUN(test_fp16_exhaustive);
    TEST_RUN(test_fp16_from_f32_numpy);
    TEST_RUN(test_fp16_from_f32_search);
    TEST_RUN(test_bf16);
    return test_summary();
}
