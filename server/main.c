// main.c: the sluice daemon (build/sluice).
//
// Parses the Config and the server's own flags (defaults, SLUICE_* variables, flags; one --help
// lists both), then hands over to server_run (server/http.c): listen, create the engine (it
// logs the memory plan), log the address and the time from exec to ready, serve until SIGTERM
// or SIGINT, drain, stop.
//
// --model is a .gguf file, a Hugging Face model directory (config.json + safetensors, its
// tokenizer.json), or with --load-format dummy a config.json (or its directory) with random
// weights; --tokenizer gives the tokenizer and chat template of a model that has none.
// --tensor-parallel-size N splits the model over N CPU rank threads; --device cuda runs it on
// the GPU (a build with CUDA; one device).
//
// Exit status: 0 after a clean shutdown; 1 the model or the machine failed (unreadable file,
// unsupported model); 2 a bad flag or value, including a combination the model or memory
// cannot satisfy (a tensor-parallel size that does not divide the heads, no tokenizer, no GPU).
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "config/config.h"
#include "engine/engine.h"
#include "server/http.h"

static const char *USAGE =
    "usage: sluice [flags]\n"
    "An OpenAI-compatible LLM server: POST /v1/chat/completions, /v1/completions and more.";

static EngineConfig engine_config_from(const Config *c) {
    EngineConfig e;
    engine_config_defaults(&e);
    e.max_num_batched_tokens = c->max_num_batched_tokens;
    e.max_num_seqs = c->max_num_seqs;
    e.block_size = c->block_size;
    e.enable_prefix_caching = c->enable_prefix_caching;
    e.long_prefill_token_threshold = c->long_prefill_token_threshold;
    e.max_model_len = c->max_model_len;
    e.kv_cache_memory = c->kv_cache_memory;
    e.threads = config_threads(c);
    e.seed = c->seed;
    e.tensor_parallel_size = c->tensor_parallel_size;
    int f = load_format_parse(c->load_format); // config_validate checked the name
    CHECK(f >= 0, "--load-format %s", c->load_format);
    e.load_format = (LoadFormat)f;
    e.tokenizer = c->tokenizer; // read by engine_create only
    e.device = !strcmp(c->device, "cuda") ? ENGINE_DEVICE_CUDA : !strcmp(c->device, "cpu") ? ENGINE_DEVICE_CPU
                                                                                          : ENGINE_DEVICE_AUTO;
    e.gpu_memory_utilization = c->gpu_memory_utilization;
    e.enforce_eager = c->enforce_eager;
    return e;
}

int main(int argc, char **argv) {
    char err[ERR_MAX];
    Config cfg;
    config_defaults(&cfg);
    ServerOptions so;
    server_options_defaults(&so);
    Flag extra[SERVER_MAX_FLAGS];
    int n_extra = server_flags(&so, extra);
    int rc = config_parse(&cfg, extra, n_extra, argc, argv, USAGE, err);
    if (rc != SL_OK) {
        server_options_free(&so);
        config_free(&cfg);
        if (rc == CONFIG_HELP) return 0;
        fprintf(stderr, "sluice: %s\n", err);
        return 2;
    }
    log_level = cfg.log_level;
    config_log(&cfg);

    EngineConfig ecfg = engine_config_from(&cfg);
    int status = server_run(&so, &ecfg, cfg.model);
    server_options_free(&so);
    config_free(&cfg);
    return status;
}
