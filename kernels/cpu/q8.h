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

// Q8_AMX: the AMX tiles for each 16 token rows of a matrix repacked at load (k_pack), the VNNI
// kernel on the repacked layout for the rest; an unpacked matrix takes the Q8_AVX512 kernels.
typedef enum { Q8_SCALAR = 0, Q8_AVX2, Q8_AVXVNNI, Q8_AVX512, Q8_AMX, Q8_NPATHS } Q8Path;

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
    const uint8_t *pack;  // Q8_AMX: the repacked weights (matmul_amx.c), else NULL
    int path;             // Q8Path
    void (*run)(const struct Q8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *m);
} Q8Job;

static inline int q8_block_bytes(QType t) {
    return t == QTYPE_Q4_0 ? 18 : t == QTYPE_Q4_1 ? 20 : 34;
}

// matmul_amx.c. The CPU has AMX-TILE and AMX-INT8 and the kernel granted this process the tile
// data (asked once, on the first call).
bool kcpu_amx_available(void);
// Rows r_lo..r_hi (multiples of 16, but r_hi may be the matrix's last row) x token rows
// t_lo..t_hi of a job on repacked weights.
// Bytes per block of 16 rows in the repacked layout.
size_t kcpu_amx_record_bytes(QType t);
void kcpu_amx_run(const Q8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *m);
