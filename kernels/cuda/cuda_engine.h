// cuda_engine.h: what the GPU runner (engine/gpu_runner.c) needs beside the ops of cuda_ops.h:
// the device's memory, one arena carved by the memory plan, the weight upload, and CUDA graphs
// of a stream's work. Plain C types and opaque handles (engine.cu holds the CUDA side).
//
// Errors follow cuda_ops.h: a failing CUDA call aborts with file and line (DIE), except where a
// function says it returns NULL (the arena's one big allocation, which the memory plan reports
// as a user error).
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/cuda/cuda_ops.h"
#include "kernels/kernels.h"

// ---- device memory
// Free and total memory of device 0 (cudaMemGetInfo). kcuda_available() must be true.
void kcuda_mem_info(size_t *free_bytes, size_t *total_bytes);

// ---- the arena: one cudaMalloc, handed out front to back in KARENA_ALIGN pieces
#define KARENA_ALIGN 256
typedef struct KArena KArena;
// NULL when the device cannot give bytes (the error is cleared; the caller reports it).
KArena *karena_create(size_t bytes);
// The next piece of bytes (rounded up to KARENA_ALIGN); aborts past the end (a wrong plan).
void *karena_take(KArena *a, size_t bytes);
size_t karena_used(const KArena *a);
void karena_free(KArena *a); // accepts NULL
// What karena_take consumes for a request of bytes (the plan's arithmetic uses it).
static inline size_t karena_round(size_t bytes) {
    return (bytes + KARENA_ALIGN - 1) / KARENA_ALIGN * KARENA_ALIGN;
}

// ---- weight upload: host tensors through two pinned staging buffers (the copy of one chunk
// overlaps the host's filling of the next), then dequantized or converted to bf16 on the
// device by quant.cu's kernels. dev_staging: device scratch of staging_bytes (>= 2 MiB), free
// until kupload_finish (the runner lends it the activations' memory).
typedef struct KUpload KUpload;
KUpload *kupload_create(void *dev_staging, size_t staging_bytes, KStream *s);
// dst: w->rows * w->cols bf16 on the device (16-byte aligned). Any type dequant_row reads.
void kupload_matrix(KUpload *u, uint16_t *dst, const QMatrix *w);
// dst: n floats on the device.
void kupload_f32(KUpload *u, float *dst, const float *src, size_t n);
// Waits for every upload; then frees the pinned buffers. Returns the bytes read from the host.
size_t kupload_finish(KUpload *u);

// ---- CUDA graphs: the work queued on s between begin and end, replayed as one launch.
// Nothing outside s may run on the device meanwhile (no copy on the default stream).
typedef struct KGraph KGraph;
void kgraph_capture_begin(KStream *s);
KGraph *kgraph_capture_end(KStream *s); // instantiated and uploaded, ready to launch
void kgraph_launch(KGraph *g, KStream *s);
void kgraph_free(KGraph *g); // accepts NULL

#ifdef __cplusplus
}
#endif
