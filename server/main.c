// main.c: the sluice daemon (build/sluice).
//
// Today it brings the engine up and stops: parse the Config (defaults, SLUICE_* variables,
// flags), create the engine (model, tokenizer, kernels, KV cache, scheduler; it logs the memory
// plan), log the config and the time to ready, then shut down and exit 0. The HTTP server joins
// here in a later issue. As DESIGN.md §2 asks, server/ sees the engine only through engine.h.
//
// Exit status: 0 ready; 1 the model or the machine failed (unreadable file, unsupported model);
// 2 a bad flag or value, including a combination the model or memory cannot satisfy.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "config/config.h"
#include "engine/engine.h"

static const char *USAGE =
    "usage: sluice [flags]\n"
    "An OpenAI-compatible LLM server (today: starts the engine, logs the memory plan and exits).";

static EngineConfig engine_config_from(const Config *c) {
    EngineConfig e;
    engine_config_defaults(&e);
    e.max_num_batched_tokens = c->max_num_batched_tokens;
    e.max_num_seqs = c->max_num_seqs;
    e.block_size = c->block_size;
    e.enable_prefix_caching = c->enable_prefix_caching;
    e.max_model_len = c->max_model_len;
    e.kv_cache_memory = c->kv_cache_memory;
    e.threads = config_threads(c);
    e.seed = c->seed;
    return e;
}

int main(int argc, char **argv) {
    double t_start = time_now_s();
    char err[ERR_MAX];
    Config cfg;
    config_defaults(&cfg);
    int rc = config_parse(&cfg, NULL, 0, argc, argv, USAGE, err);
    if (rc != SL_OK) {
        config_free(&cfg);
        if (rc == CONFIG_HELP) return 0;
        fprintf(stderr, "sluice: %s\n", err);
        return 2;
    }
    log_level = cfg.log_level;
    config_log(&cfg);

    EngineConfig ecfg = engine_config_from(&cfg);
    Engine *engine = NULL;
    if (engine_create(&engine, &ecfg, cfg.model, err) != SL_OK) {
        log_error("%s", err);
        config_free(&cfg);
        // the engine names a flag when a setting, not the file, is what cannot work
        return strstr(err, "--") ? 2 : 1;
    }
    const EngineInfo *info = engine_info(engine);
    char rss[32];
    log_info("ready in %.1f ms: %s, vocab %d, max_model_len %d, %d KV blocks, %d threads, CPU backend; peak RSS %s",
             time_ms_since(t_start), info->arch, info->vocab, info->max_model_len, info->num_blocks, info->threads,
             fmt_bytes(mem_peak_rss(), rss, sizeof rss));
    engine_destroy(engine);
    config_free(&cfg);
    return 0;
}
