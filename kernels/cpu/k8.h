// k8.h: what the K-quant 8-bit matmuls share: matmul_k8.c (the job, the activations' Q8_K
// quantization, the VNNI / AVX2 / scalar kernels) and matmul_k8_amx.c (the AMX tile kernels and
// the VNNI kernel on repacked weights). Nothing outside these two files and matmul_amx.c (which
// hands k_pack on) includes it.
#pragma once
#include "kernels/cpu/cpu.h"

typedef struct {
    QType type;
    bool sym;             // the offset is an integer multiple of the scale (Q3_K, Q6_K)
    const uint8_t *w;
    size_t row_bytes;
    int nb, cols;         // super-blocks per row, cols = 256 nb
    const int8_t *xq;     // row t at xq + t * cols
    const float *xd;      // row t at xd + t * nb
    const int16_t *xbs;   // row t at xbs + t * nb * 16
    float *out;
    int ldo, path;
    int rows;             // weight rows
    const uint8_t *pack;  // the AMX path: the repacked weights (matmul_k8_amx.c), else NULL
} K8Job;

// Super-block b of a K-quant row as the scalar kernel sees it: its 256 quants (0..63, element
// order), and per 16 elements the integer scale sc and offset mn (matmul_k8.c).
void kcpu_k8_block(QType t, const uint8_t *b, uint8_t q[256], int sc[16], int mn[16]);

// matmul_k8_amx.c: the types it repacks, the bytes of one record (16 rows x one super-block),
// the repacking, and rows r_lo..r_hi (multiples of 16, but r_hi may be the matrix's last row) x
// token rows t_lo..t_hi of a job on the repacked weights.
bool kcpu_k8_amx_packable(QType t);
size_t kcpu_k8_amx_record_bytes(QType t);
void kcpu_k8_amx_pack(const QMatrix *w, uint8_t *dst);
void kcpu_k8_amx_run(const K8Job *j, int r_lo, int r_hi, int t_lo, int t_hi, float *buf);
