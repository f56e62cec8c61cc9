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
