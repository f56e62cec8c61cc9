// q8.h: what the 8-bit activation matmuls share: matmul_q8.c (the job, the quantization of
// the activations, the VNNI / AVX2 / scalar kernels) and matmul_amx.c (the AMX tile kernels and
// the VNNI kernel on the same repacked weights). Nothing outside these two files includes it.
#pragma once

#include "kernels/cpu/cpu.h"

// The SIMD paths are compiled under `#pragma GCC target`, which clang ignores (and its
// __builtin_cpu_supports lacks "f16c" and "avxvnni"): a clang build (the fuzz harnesses, `make
// fuzz`) gets the scalar path only, whatever its -march.
#if defined(__x86_64__) && !defined(__clang__)
#define Q8_SIMD 1
#else
#define Q8_SIMD 0
#endif

#define Q8_PREFETCH_BYTES 12288 // as matmul_q.c: decode streams the weights; the tiles ask this far ahead

typedef struct Q8Job {
    QType type;
    const uint8_t *w;     // first weight row
    size_t row_bytes;
    int nb, nbp;          // blocks per row, and padded to a multiple of 4 (the padding is zeros)
    const int8_t *xq;     // row t at xq + t * nbp * 32, in the path's order (q8_quant_row)
    const float *xd;      // row t at xd + t * nbp: block scales d_x (0 past the last block)
    const int32_t *xc;    // same shape: the integer offset term per block (−8 Σq_x, −128 Σq_x or 0)
    const float *xs;      // same shape: d_x Σq_x, Q4_1's min term
    float *out;
    int ldo;              // out row stride (= weight rows)
    int rows;             // weight rows
    const uint8_t *pack;  // KCPU_I8_AMX: the repacked weights (matmul_amx.c), else NULL
    int path;             // KcpuI8Path
    void (*run)(const struct Q8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *m);
} Q8Job;

static inline int q8_block_bytes(QType t) {
    return t == QTYPE_Q4_0 || t == QTYPE_IQ4_NL ? 18
           : t == QTYPE_Q4_1                    ? 20
           : t == QTYPE_Q5_0                    ? 22
           : t == QTYPE_Q5_1                    ? 24
                                                : 34;
}

// Signed weights (Q8_0, IQ4_NL's table values): u8 for vpdpbusd by adding 128, or |w| and
// sign(x, w) on plain AVX2.
static inline bool q8_signed(QType t) {
    return t == QTYPE_Q8_0 || t == QTYPE_IQ4_NL;
}

// Q4_1 and Q5_1 carry a min (fp16 after d), added in float.
static inline bool q8_has_min(QType t) {
    return t == QTYPE_Q4_1 || t == QTYPE_Q5_1;
}

// Where a block's low nibbles start; Q5_0 / Q5_1 keep the fifth bits in a u32 before them.
static inline int q8_qs_offset(QType t) {
    return t == QTYPE_Q4_0 || t == QTYPE_IQ4_NL ? 2 : t == QTYPE_Q4_1 ? 4 : t == QTYPE_Q5_0 ? 6 : 8;
}

static inline bool q8_is_q5(QType t) {
    return t == QTYPE_Q5_0 || t == QTYPE_Q5_1;
}

static inline uint32_t q8_qh(QType t, const uint8_t *blk) {
    uint32_t qh;
    memcpy(&qh, blk + q8_qs_offset(t) - 4, 4);
    return qh;
}

// matmul_amx.c. The CPU has AMX-TILE and AMX-INT8 and the kernel granted this process the tile
// data (asked once, on the first call).
bool kcpu_amx_available(void);
// Rows r_lo..r_hi (multiples of 16, but r_hi may be the matrix's last row) x token rows
// t_lo..t_hi of a job on repacked weights.
// Bytes per block of 16 rows in the repacked layout.
size_t kcpu_amx_record_bytes(QType t);
void kcpu_amx_run(const Q8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *m);
