// spec_config.h: --speculative-config, vLLM's JSON object for speculative decoding.
//
//   {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2,
//    "disable_by_batch_size": 8}
//   {"model": PATH, "num_speculative_tokens": 4}        (method "draft_model", implied by "model")
//
// parsed once at start-up (config_validate), so a bad key or value stops the program with one
// line that names it. Whether the draft model opens and its tokenizer matches the target's is
// checked when the engine loads it (engine/engine_spec.c).
#pragma once

#include <stdbool.h>

#define SPEC_MAX_TOKENS 16 // num_speculative_tokens at most (proposal buffers are sized for it)

typedef enum {
    SPEC_NONE = 0,
    SPEC_NGRAM = 1, // prompt lookup: proposals copied from the sequence's own prompt + output
    SPEC_DRAFT = 2, // a smaller model with the same tokenizer proposes them, greedily
} SpecMethod;

typedef struct {
    SpecMethod method;
    int num_speculative_tokens; // k: proposals per step, 1..SPEC_MAX_TOKENS
    int prompt_lookup_max;      // longest suffix n-gram matched
    int prompt_lookup_min;      // shortest suffix n-gram matched
    int disable_by_batch_size;  // no speculation while this many sequences run (0 = never off)
    char model[1024];           // SPEC_DRAFT: the draft model (a GGUF file or an HF directory)
} SpecConfig;

// json NULL or "" is SPEC_NONE. SL_ERR with "--speculative-config: ..." on malformed JSON, an
// unknown key or method, or a value out of range.
int spec_config_parse(const char *json, SpecConfig *out, char *err);
