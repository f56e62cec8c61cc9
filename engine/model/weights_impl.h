// weights_impl.h: what the weight sources share inside engine/model/ (weights.c, weights_dummy.c,
// model_hf.c) and the unit tests; not part of the interface in weights.h.
#pragma once

#include <stddef.h>

#include "engine/model/safetensors.h"
#include "engine/model/weights.h"

typedef struct {
    SafeTensors st;    // LOAD_SAFETENSORS: the mapped files
    void *slab;        // LOAD_DUMMY: every generated tensor, one allocation
    float *rope_freqs; // config.json sources with llama3 RoPE scaling: rope_freqs.weight's data
    float *converted;  // safetensors Gemma (norms as 1 + w) and Phi-3 (LongRoPE factors), f32
    int cap;           // slots allocated in ws->tensors
} WsrcImpl;

// The GGUF name of a Hugging Face tensor name of a model of arch (ModelConfig.arch) into out (cap bytes):
// 1 when mapped, 0 for a tensor that carries nothing to load (rotary_emb.inv_freq), -1 for a
// name this mapping does not know (then out is untouched).
int model_hf_tensor_name(const char *arch, const char *hf_name, char *out, size_t cap);

// Appends an empty tensor slot named name (ws->tensors grows as needed); its fields are the
// caller's to fill.
WTensor *wsrc_push(WeightSource *ws, const char *name);
// With llama3 RoPE scaling (cfg.rope_scaling_factor > 0), appends rope_freqs.weight (F32,
// rope_dim / 2) computed by model_rope_freq_factors, as a llama.cpp GGUF of the model carries.
void wsrc_push_rope_freqs(WeightSource *ws);

// LOAD_DUMMY: every tensor ws->cfg implies, generated (weights_dummy.c).
void wsrc_dummy_generate(WeightSource *ws);
