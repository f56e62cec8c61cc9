// gpu_runner.h: the model on one CUDA device (--device cuda, issue 7). The CPU runner's
// counterpart below the scheduler: the engine hands it the same Batch (host arrays) and gets
// the sampling rows' logits back; the weights, activations, KV cache and the whole forward live
// on the device (kernels/cuda through cuda_ops.h and cuda_engine.h: this file and
// gpu_runner.c see no CUDA header).
//
// Memory plan (DESIGN.md §5), made once in gpu_runner_create and logged as one table: weights
// (GGUF quants dequantized to bf16; safetensors bf16/fp16 as stored), activations for
// max_num_batched_tokens rows, the cuBLAS workspace, the CUDA graph pools, then KV blocks up to
// gpu_memory_utilization of the device's memory. The step never calls cudaMalloc.
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "engine/model/weights.h"
#include "kernels/kernels.h"

typedef struct GpuRunner GpuRunner;

typedef struct {
    int max_num_batched_tokens; // rows per step at most
    int max_num_seqs;           // sequences per step at most (the largest decode graph)
    int max_model_len;          // sizes the block-table rows
    int block_size;             // tokens per KV block
    double gpu_memory_utilization; // --gpu-memory-utilization: share of the device's memory (0.9)
    bool enforce_eager;         // --enforce-eager: no CUDA graphs
} GpuRunnerConfig;

typedef struct {
    double load_s, alloc_s, graph_s; // start-up: weights up, memory plan + allocation, graph capture
    size_t weight_bytes, act_bytes, workspace_bytes, graph_bytes, kv_bytes;
    int num_blocks;
    int n_graphs;                    // decode batch sizes captured (0 with enforce_eager)
} GpuRunnerStats;

// True when this build has CUDA and a device is visible; otherwise false with the reason
// ("this build has no CUDA support (built with CUDA=0 or without nvcc)", "no CUDA device: ...").
bool gpu_runner_available(char *why);
// True when the GPU runner implements c's forward (the Llama family: Llama, Mistral without a
// window, Qwen2, Qwen3); otherwise false with one line naming what it lacks, e.g. "the GPU
// runner does not implement gemma2's forward (post-norms, GeGLU, soft-capping) yet". --device
// auto then runs on the CPU; --device cuda fails with it.
bool gpu_runner_supports(const ModelConfig *c, char *why);
// Uploads src's weights, makes the memory plan and captures the decode graphs. SL_ERR + err when
// the model does not fit (the message suggests a smaller --max-model-len / --max-num-seqs /
// --max-num-batched-tokens) or the device fails.
int gpu_runner_create(GpuRunner **out, const WeightSource *src, const GpuRunnerConfig *cfg, char *err);
void gpu_runner_destroy(GpuRunner *g);
const GpuRunnerStats *gpu_runner_stats(const GpuRunner *g);
// Copies KV block src to dst in every layer (copy-on-write).
void gpu_runner_copy_block(GpuRunner *g, int src, int dst);
// One step: b's arrays go up, logits [b->n_sample, vocab] come back to the host.
void gpu_runner_forward(GpuRunner *g, const Batch *b, float *logits);

// ---- host-side arithmetic of the plan, the graph ladder and padding. Compiled in every
// build, CUDA or not, so tests/unit/test_gpu_plan.c checks it on a machine without a GPU.

// The decode batch sizes CUDA graphs are captured for (vLLM's ladder): 1, 2, 4, 8, then every
// multiple of 8 below max_num_seqs, and max_num_seqs itself last. Returns how many (<= cap).
#define GPU_LADDER_MAX 1024
int gpu_graph_ladder(int max_num_seqs, int *sizes, int cap);
// Index of the smallest ladder size >= rows; -1 when rows is past the largest (run eagerly).
int gpu_graph_pick(const int *sizes, int n, int rows);
// True when every sequence of b has exactly one query row and samples it (a decode-only step,
// the kind a graph replays).
bool gpu_batch_is_decode(const Batch *b);
// b's per-row host arrays padded to rows (>= b->n_tokens) for a graph of that size: padding
// rows read token 0 at position 0 and write no K/V (slot -1, see k_rope_kv_write); logits rows
// past b->n_sample point at row 0 (computed, never copied back). Attention sees only b's rows.
void gpu_batch_pad(const Batch *b, int rows, int *token_ids, int *positions, int *slot_mapping, int *logits_rows);

// The memory plan's inputs (bytes) and result. The KV cache takes what is left of
// utilization * total after what was in use before the runner started (CUDA context, other
// processes) and the runner's fixed parts; every part is rounded as the arena rounds it.
typedef struct {
    size_t total;          // the device's memory
    size_t in_use;         // in use before the runner's own allocations
    double utilization;    // --gpu-memory-utilization
    size_t weight_bytes;   // weights on the device (bf16 matrices, f32 vectors)
    size_t act_bytes;      // activations for max_num_batched_tokens rows
    size_t act_row_bytes;  // of which one row (for the suggestion)
    size_t io_bytes;       // the step's arrays and logits rows
    size_t io_seq_bytes;   // of which one sequence's share (block-table row, logits row)
    size_t workspace_bytes; // cuBLAS workspace and staging, attention work lists (measured)
    size_t graph_bytes;    // CUDA graph pools, reserved (enforce_eager: 0)
    size_t block_bytes;    // one KV block, every layer, K and V
    int block_size, max_model_len, max_num_seqs, max_num_batched_tokens;
} GpuPlanInput;

typedef struct {
    size_t budget;         // utilization * total
    size_t kv_bytes;       // num_blocks * block_bytes
    int num_blocks;
} GpuPlan;

// SL_ERR + a one-line err when the weights do not fit, or the KV cache cannot hold one
// sequence of max_model_len tokens; the message names the largest --max-model-len that fits and
// the --max-num-batched-tokens / --max-num-seqs that would make room for the requested one.
int gpu_plan_make(GpuPlan *p, const GpuPlanInput *in, char *err);
// The plan as one logged table (device: its name, for the title).
void gpu_plan_log(const GpuPlanInput *in, const GpuPlan *p, const char *device);
