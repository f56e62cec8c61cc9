// cli_run.c: build/sluice-run, prompt in, text out, through the same engine as the daemon.
//
//   sluice-run --model m.gguf --prompt "The capital of France is" --max-tokens 32
//   echo "What is 2+2?" | sluice-run --chat --temperature 0.7 --seed 1 --verbose
//
// The prompt (from --prompt, else stdin less one trailing newline) is tokenized as the model
// asks (BOS or not), or with --chat wrapped in ChatML (<|im_start|>user ... <|im_start|>assistant).
// It goes to the engine (engine/engine.h) as one request, exactly as the daemon submits one:
// chunked prefill by --max-num-batched-tokens, then one token per step, and the text is printed
// as it arrives until an end-of-generation token or --max-tokens. Every engine flag applies
// (--tensor-parallel-size, --device, --kv-cache-memory, ...). --verbose prints timings and peak
// RSS to stderr (what bench/ reads).
//
// Exit status: 0 done; 1 the model failed to load or the prompt does not fit; 2 a bad flag or a
// setting the model or memory cannot satisfy.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "config/config.h"
#include "engine/engine.h"

static const char *USAGE =
    "usage: sluice-run [flags] [--prompt TEXT | < prompt.txt]\n"
    "Generates a continuation of one prompt through sluice's engine and prints it as it arrives.";

typedef struct {
    char *prompt;
    bool chat;
    int max_tokens;
    float temperature;
    bool ignore_eos;
    bool verbose;
} RunArgs;

// stdin to the end, NUL-terminated
static char *read_stdin(void) {
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, stdin)) > 0) {
        n += got;
        if (cap - n - 1 == 0) buf = xrealloc(buf, cap *= 2);
    }
    // the newline a shell or an editor ends the text with is not part of the prompt
    if (n > 0 && buf[n - 1] == '\n') n--;
    buf[n] = 0;
    return buf;
}

// Appends the tokens of text to ids[*n..]; special tokens only where the wrapper has them.
static void encode_append(const Tokenizer *tok, const char *text, bool add_bos, bool special, int **ids, int *n,
                          int *cap) {
    int *part = NULL, part_cap = 0;
    int k = tok_encode(tok, text, strlen(text), add_bos, special, &part, &part_cap);
    if (*n + k > *cap) {
        *cap = MAX(*n + k, 2 * *cap);
        *ids = xrealloc(*ids, sizeof(int) * *cap);
    }
    memcpy(*ids + *n, part, sizeof(int) * k);
    *n += k;
    free(part);
}

// The prompt's ids. With chat the user's text is encoded without special-token parsing, so a
// "<|im_end|>" typed by the user stays text, as in a chat template's rendering.
static int *prompt_encode(const Tokenizer *tok, const char *text, bool chat, int *n_out) {
    int *ids = NULL, n = 0, cap = 0;
    if (chat) {
        encode_append(tok, "<|im_start|>user\n", tok_add_bos(tok), true, &ids, &n, &cap);
        encode_append(tok, text, false, false, &ids, &n, &cap);
        encode_append(tok, "<|im_end|>\n<|im_start|>assistant\n", false, true, &ids, &n, &cap);
    } else {
        encode_append(tok, text, tok_add_bos(tok), false, &ids, &n, &cap);
    }
    *n_out = n;
    return ids;
}

// Prints what the request produced since the last take; true once it has finished.
static bool print_new(EngineRequest *r, EngineOutput *out) {
    if (!engine_request_take(r, out)) return out->finished;
    const EngineChoice *c = &out->choices[0];
    if (c->text_len > 0) {
        fwrite(c->text, 1, c->text_len, stdout);
        fflush(stdout);
    }
    return out->finished;
}

int main(int argc, char **argv) {
    double t_start = time_now_s();
    char err[ERR_MAX];
    Config cfg;
    config_defaults(&cfg);
    cfg.log_level = LOG_WARN; // stdout is the text; only problems go to stderr
    RunArgs a = {.max_tokens = 256, .temperature = 0.0f};
    Flag extra[] = {
        {"--prompt", NULL, FLAG_STR, &a.prompt, 0, 0, "the prompt (default: read stdin)", ""},
        {"--chat", NULL, FLAG_BOOL, &a.chat, 0, 0, "wrap the prompt as a ChatML user turn", ""},
        {"--max-tokens", NULL, FLAG_INT, &a.max_tokens, 1, 1 << 24, "tokens to generate at most", ""},
        {"--temperature", NULL, FLAG_FLOAT, &a.temperature, 0, SAMPLER_MAX_TEMPERATURE,
         "sampling temperature (0 = greedy)", ""},
        {"--ignore-eos", NULL, FLAG_BOOL, &a.ignore_eos, 0, 0, "keep going past end-of-generation tokens", ""},
        {"--verbose", NULL, FLAG_BOOL, &a.verbose, 0, 0, "print timings and peak RSS to stderr", ""},
    };
    int rc = config_parse(&cfg, extra, (int)ARRAY_LEN(extra), argc, argv, USAGE, err);
    if (rc != SL_OK) {
        config_free(&cfg);
        free(a.prompt);
        if (rc == CONFIG_HELP) return 0;
        fprintf(stderr, "sluice-run: %s\n", err);
        return 2;
    }
    log_level = cfg.log_level;

    int status = 1;
    Engine *e = NULL;
    EngineRequest *req = NULL;
    int *prompt = NULL;
    char *stdin_text = NULL;

    // ---- load: the daemon's engine, with the daemon's flags
    double t0 = time_now_s();
    EngineConfig ec = engine_config_from(&cfg);
    if (engine_create(&e, &ec, cfg.model, err) != SL_OK) {
        fprintf(stderr, "sluice-run: %s\n", err);
        status = strstr(err, "--") ? 2 : 1; // the engine names a flag when a setting is what cannot work
        goto done;
    }
    double load_ms = time_ms_since(t0);
    const EngineInfo *info = engine_info(e);

    // ---- the prompt
    if (!a.prompt) stdin_text = read_stdin();
    int n_prompt;
    prompt = prompt_encode(engine_tokenizer(e), a.prompt ? a.prompt : stdin_text, a.chat, &n_prompt);
    if (n_prompt == 0) {
        fprintf(stderr, "sluice-run: the prompt is empty\n");
        goto done;
    }
    if (n_prompt >= info->max_model_len) {
        fprintf(stderr, "sluice-run: the prompt has %d tokens, the context limit is %d (--max-model-len)\n", n_prompt,
                info->max_model_len);
        goto done;
    }

    // ---- one request, greedy or sampled with --seed
    EngineParams p;
    engine_params_defaults(&p);
    p.sampling.temperature = a.temperature;
    p.sampling.seed = cfg.seed;
    p.sampling.has_seed = true;
    p.max_tokens = MIN(a.max_tokens, info->max_model_len - n_prompt);
    p.ignore_eos = a.ignore_eos;
    if (engine_submit(e, prompt, n_prompt, &p, NULL, NULL, &req, err) != SL_OK) {
        fprintf(stderr, "sluice-run: %s\n", err);
        status = 2;
        goto done;
    }

    // ---- the text, as it arrives
    EngineOutput out;
    while (!print_new(req, &out)) engine_request_wait(req, -1);
    fputc('\n', stdout);
    fflush(stdout);

    if (a.verbose) {
        // prefill: from the first step that ran the request to its first token (the last prompt
        // chunk's step samples it); decode: one step per token after that
        int n_gen = out.completion_tokens, n_steps = MAX(0, n_gen - 1);
        double prefill_ms = (out.t_first_token - out.t_scheduled) * 1000.0;
        double decode_ms = (out.t_finished - out.t_first_token) * 1000.0;
        char rss[32];
        fprintf(stderr, "sluice-run: load %.1f ms (%d threads)\n", load_ms, info->threads);
        fprintf(stderr, "sluice-run: prompt %d tokens in %.1f ms (%.1f tok/s)\n", n_prompt, prefill_ms,
                n_prompt / (prefill_ms / 1000.0));
        fprintf(stderr, "sluice-run: generated %d tokens, %d decode steps in %.1f ms (%.1f tok/s)\n", n_gen, n_steps,
                decode_ms, n_steps > 0 ? n_steps / (decode_ms / 1000.0) : 0.0);
        fprintf(stderr, "sluice-run: total %.1f ms, peak RSS %s\n", time_ms_since(t_start),
                fmt_bytes(mem_peak_rss(), rss, sizeof rss));
    }
    status = 0;
done:
    if (req) engine_request_release(req);
    if (e) engine_destroy(e);
    free(prompt);
    free(stdin_text);
    config_free(&cfg);
    free(a.prompt);
    return status;
}
