// quant.h: ggml's tensor types, their block layouts, and row dequantization to float32.
//
// Type ids and block layouts are ggml's (they are what GGUF files store). A row of n elements
// of type t occupies qtype_row_size(t, n) bytes; n must be a multiple of qtype_block(t).
// Every type ggml has ever written to a file is "known" (its block size and bytes are in the
// table, so a reader can bound-check and skip it); only some can be dequantized.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    QTYPE_F32 = 0,
    QTYPE_F16 = 1,
    QTYPE_Q4_0 = 2,
    QTYPE_Q4_1 = 3,
    // 4 and 5 were Q4_2 and Q4_3, removed from ggml long ago
    QTYPE_Q5_0 = 6,
    QTYPE_Q5_1 = 7,
    QTYPE_Q8_0 = 8,
    QTYPE_Q8_1 = 9,
    QTYPE_Q2_K = 10,
    QTYPE_Q3_K = 11,
    QTYPE_Q4_K = 12,
    QTYPE_Q5_K = 13,
    QTYPE_Q6_K = 14,
    QTYPE_Q8_K = 15,
    QTYPE_IQ2_XXS = 16,
    QTYPE_IQ2_XS = 17,
    QTYPE_IQ3_XXS = 18,
    QTYPE_IQ1_S = 19,
    QTYPE_IQ4_NL = 20,
    QTYPE_IQ3_S = 21,
    QTYPE_IQ2_S = 22,
    QTYPE_IQ4_XS = 23,
    QTYPE_I8 = 24,
    QTYPE_I16 = 25,
    QTYPE_I32 = 26,
    QTYPE_I64 = 27,
    QTYPE_F64 = 28,
    QTYPE_IQ1_M = 29,
    QTYPE_BF16 = 30,
    // 31..33 and 36..38 were the repacked Q4_0_x_x / IQ4_NL_x_x types, removed from ggml
    QTYPE_TQ1_0 = 34,
    QTYPE_TQ2_0 = 35,
    QTYPE_MXFP4 = 39,
    QTYPE_COUNT = 40 // ids below this may appear in files; unknown ones are rejected
} QType;

// The K-quants' super-block: 256 elements in 8 (Q4_K, Q5_K) or 16 (Q6_K) sub-blocks.
#define QK_K 256

// Known to the reader (size and block known) — a superset of what can be dequantized.
// Takes an int so a raw id from a file can be asked about before it is trusted as a QType.
bool qtype_known(int t);
// Dequantization implemented: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K
// IQ4_NL IQ4_XS.
bool qtype_dequant_supported(QType t);
const char *qtype_name(QType t);   // "Q4_1"; "unknown" for an unknown id
int qtype_block(QType t);          // elements per block (t must be known)
size_t qtype_block_bytes(QType t); // bytes per block (t must be known)
size_t qtype_row_size(QType t, int64_t n);

// dst[0..n) = the n values stored at src (n a multiple of the block size; t supported).
// src needs no alignment: scalars are read with memcpy.
void dequant_row(QType t, const void *src, float *dst, int64_t n);

// fp16 / bf16 scalar conversions (IEEE half; bf16 = top 16 bits of fp32, round to nearest even).
// Both directions are exact where the value is representable and round to nearest even
// otherwise; fp16 overflow gives inf, NaN stays NaN (quieted), subnormals are handled.
float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
