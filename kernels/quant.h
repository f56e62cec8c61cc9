// quant.h: ggml's tensor types, their block layouts, and row dequantization to float32.
//
// Type ids and block layouts are ggml's (they are what GGUF files store). A row of n elements
// of type t occupies qtype_row_size(t, n) bytes; n must be a multiple of qtype_block(t).
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    QTYPE_F32 = 0,
    QTYPE_F16 = 1,
    QTYPE_Q4_0 = 2,
    QTYPE_Q4_1 = 3,
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
    QTYPE_BF16 = 30,
    QTYPE_COUNT = 40 // ids below this may appear in files; unknown ones are rejected
} QType;

// Known to the reader (size and block known) — a superset of what can be dequantized.
bool qtype_known(int t);
// Dequantization implemented: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K.
bool qtype_dequant_supported(QType t);
const char *qtype_name(QType t);
int qtype_block(QType t);        // elements per block
size_t qtype_block_bytes(QType t); // bytes per block
size_t qtype_row_size(QType t, int64_t n);

// dst[0..n) = the n values stored at src (n a multiple of the block size).
void dequant_row(QType t, const void *src, float *dst, int64_t n);

// fp16 / bf16 scalar conversions (IEEE half; bf16 = top 16 bits of fp32, round to nearest even).
float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
