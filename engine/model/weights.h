// weights.h: where a model's weights and hyperparameters come from. One interface over three
// sources, so that llama.c binds tensors one way whatever the file format:
//
//   gguf         a .gguf file (llama.cpp's format): its metadata and tensors as stored
//   safetensors  a Hugging Face model directory: config.json + model.safetensors, or shards
//                listed by model.safetensors.index.json (bf16 / fp16 / fp32 tensors)
//   dummy        config.json alone: random weights at its shapes (vLLM's --load-format dummy),
//                for serving and benchmarking a model shape without its weights
//
// Every source presents its tensors under GGUF names in ggml order, so the binder never sees
// a format: "token_embd.weight", "blk.N.attn_q.weight", "blk.N.attn_q.bias" (Qwen2),
// "blk.N.attn_q_norm.weight" (Qwen3), "output_norm.weight", "output.weight", "rope_freqs.weight";
// ne[0] is the contiguous dimension (a matrix's input features: HF's shape [out, in] becomes
// ne = {in, out}). A safetensors Llama keeps HF's rotary layout (rotate_half): its config says
// ROPE_NEOX and the Q/K rows are used as stored, not permuted.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/model/gguf.h"
#include "engine/model/model_config.h"
#include "kernels/quant.h"

typedef enum { LOAD_AUTO = 0, LOAD_GGUF, LOAD_SAFETENSORS, LOAD_DUMMY } LoadFormat;
// "auto" | "gguf" | "safetensors" | "dummy" -> LoadFormat; -1 for anything else.
int load_format_parse(const char *s);
const char *load_format_name(LoadFormat f);

typedef struct {
    char name[64];         // GGUF name (see above)
    QType type;            // QTYPE_F32 / F16 / BF16 for safetensors and dummy; any GGUF type
    int n_dims;            // 1 or 2 (GGUF may have more; the binder checks)
    int64_t ne[4];         // ggml order, ne[0] contiguous; unused dims are 1
    const void *data;      // into a mapping or the source's own buffer; valid until wsrc_close
    size_t nbytes;
} WTensor;

typedef struct {
    LoadFormat format;     // what was opened (never LOAD_AUTO)
    ModelConfig cfg;       // hyperparameters (GGUF metadata, or config.json)
    WTensor *tensors;      // [n_tensors]
    int n_tensors;
    char path[512];        // the file or directory opened
    char dir[512];         // the directory holding it (tokenizer.json, tokenizer_config.json)
    GGUF gguf;             // format == LOAD_GGUF: the open file (the tokenizer is read from it)
    void *impl;            // the source's own state (mappings, generated buffers)
    size_t bytes;          // bytes of tensor data
} WeightSource;

// Opens path with format f. LOAD_AUTO: a file ending in .gguf (or starting with the GGUF magic)
// is gguf; a directory (or a config.json path) with *.safetensors is safetensors; anything else
// is an error naming what was looked for. LOAD_DUMMY reads config.json (path is the directory
// or the file) and generates every tensor, deterministic for a given config (seeded from each
// tensor's name), scaled so that the forward is well conditioned (logits spread over several
// units, so greedy decoding is not decided by float rounding). SL_ERR + a one-line err naming
// the file and the problem; *ws is then zeroed (wsrc_close on it is a no-op).
int wsrc_open(WeightSource *ws, const char *path, LoadFormat f, char *err);
void wsrc_close(WeightSource *ws);
const WTensor *wsrc_find(const WeightSource *ws, const char *name); // NULL when absent
