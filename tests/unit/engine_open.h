// engine_open.h: an engine on the default model (or another file) for the engine tests, on the
// CPU with a small configuration: cfg_make, engine_open_path, engine_open.
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/common.h"
#include "engine/engine.h"
#include "tests/unit/test.h"

#define BS 16 // tokens per KV block in the engine tests

static EngineConfig cfg_make(int budget, int max_seqs, bool prefix_caching, size_t kv_mem) {
    EngineConfig c;
    engine_config_defaults(&c);
    c.max_num_batched_tokens = budget;
    c.max_num_seqs = max_seqs;
    c.block_size = BS;
    c.enable_prefix_caching = prefix_caching;
    c.max_model_len = 256;
    c.kv_cache_memory = kv_mem;
    c.threads = 2;
    c.device = ENGINE_DEVICE_CPU;
    // the exact path, whatever the host: auto would take int8 where the CPU has AMX, and these
    // tests compare against exact references and across tensor-parallel sizes (int8's own engine
    // tests set it: test_engine.c's test_batch_invariance_int8, test_spec.c's drafts)
    c.cpu_activations = K_ACT_INT16;
    return c;
}

static Engine *engine_open_path(const EngineConfig *c, const char *path) {
    char err[ERR_MAX];
    Engine *e = NULL;
    if (engine_create(&e, c, path, err) != SL_OK) {
        TEST_FAIL_("engine_create %s: %s", path, err);
        return NULL;
    }
    return e;
}

static Engine *engine_open(const EngineConfig *c) { return engine_open_path(c, TEST_MODEL_PATH); }
