// cli_run.c: build/sluice-run, prompt in, text out, on one sequence.
//
//   sluice-run --model m.gguf --prompt "The capital of France is" --max-tokens 32
//   echo "What is 2+2?" | sluice-run --chat --temperature 0.7 --seed 1 --verbose
//
// The prompt (from --prompt, else stdin less one trailing newline) is tokenized as the model
// asks (BOS or not), or with --chat wrapped in ChatML (<|im_start|>user ... <|im_start|>assistant;
// the template renderer replaces this fixed wrapper later). It is prefilled in chunks of --max-num-batched-tokens,
// then tokens are decoded one per step and streamed to stdout until an end-of-generation token
// or --max-tokens. --verbose prints timings and peak RSS to stderr (what bench/ reads).
//
// Exit status: 0 done; 1 the model failed to load or the prompt does not fit; 2 a bad flag.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "config/config.h"
#include "engine/engine.h"
#include "engine/kv_cache.h"
#include "engine/model/model.h"
#include "engine/sampling/sampler.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/kernels.h"

static const char *USAGE =
    "usage: sluice-run [flags] [--prompt TEXT | < prompt.txt]\n"
    "Generates a continuation of one prompt on the CPU and prints it.\n"
    "It runs one rank on the CPU: --tensor-parallel-size must be 1 and --device cpu or auto (the daemon, sluice,\n"
    "serves with tensor parallelism or on the GPU).";

typedef struct {
    char *prompt;
    bool chat;
    int max_tokens;
    float temperature;
    bool ignore_eos;
    bool verbose;
} RunArgs;

// stdin to the end, NUL-terminated
static char *read_stdin(size_t *len) {
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
    *len = n;
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

// One forward step over tokens[0..n) at positions pos0.. of the sequence; logits of the last row.
static void step(Model *m, KVCache *kv, KVSeq *seq, BatchBuf *bb, int pos0, const int *tokens, int n, bool sample,
                 float *logits) {
    batch_buf_clear(bb);
    batch_buf_add(bb, seq, kv->block_size, pos0, tokens, n, sample ? 1 : 0);
    model_forward(m, kv->layers, &bb->b, logits);
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
    WeightSource src = {0};
    Model model = {0};
    EngineText text = {0};
    Tokenizer *tok = NULL;
    KVCache kv = {0};
    KVSeq seq = {0};
    BatchBuf bb = {0};
    SamplerState sst = {0};
    SamplerScratch ssc = {0};
    int *prompt = NULL;
    float *logits = NULL;
    char *piece = NULL;
    char *stdin_text = NULL;

    if (cfg.tensor_parallel_size != 1 || !strcmp(cfg.device, "cuda")) {
        fprintf(stderr, "sluice-run: %s: sluice-run runs one rank on the CPU; serve the model with sluice for "
                "tensor parallelism or the GPU\n", cfg.tensor_parallel_size != 1 ? "--tensor-parallel-size" : "--device");
        status = 2;
        goto done;
    }

    // ---- load
    double t0 = time_now_s();
    int format = load_format_parse(cfg.load_format); // config_validate checked the name
    CHECK(format >= 0, "--load-format %s", cfg.load_format);
    if (wsrc_open(&src, cfg.model, (LoadFormat)format, err) != SL_OK ||
        model_load_shard(&model, &src, cfg.max_num_batched_tokens, 0, 1, NULL, err) != SL_OK) {
        fprintf(stderr, "sluice-run: %s\n", err);
        goto done;
    }
    if (engine_text_open(&text, &src, cfg.tokenizer, err) != SL_OK) {
        fprintf(stderr, "sluice-run: %s\n", err);
        status = strstr(err, "--") ? 2 : 1;
        goto done;
    }
    tok = text.tok;
    // Sampling sees the tokenizer's ids only: rows of a padded LM head beyond them never win.
    int vocab = tok_vocab_size(tok);
    if (vocab > model.cfg.vocab) {
        fprintf(stderr, "sluice-run: %s: the tokenizer has %d tokens, the model %d\n", cfg.model, vocab,
                model.cfg.vocab);
        goto done;
    }
    int threads = config_threads(&cfg);
    k_init(threads, cfg.max_num_batched_tokens, model_max_cols(&model));
    double load_ms = time_ms_since(t0);

    // ---- the prompt
    if (!a.prompt) {
        size_t len;
        stdin_text = read_stdin(&len);
    }
    int n_prompt;
    prompt = prompt_encode(tok, a.prompt ? a.prompt : stdin_text, a.chat, &n_prompt);
    if (n_prompt == 0) {
        fprintf(stderr, "sluice-run: the prompt is empty\n");
        goto done;
    }
    int max_len;
    if (model_config_max_len(&model.cfg, cfg.max_model_len, &max_len, err) != SL_OK) {
        fprintf(stderr, "sluice-run: %s\n", err);
        status = 2;
        goto done;
    }
    if (n_prompt >= max_len) {
        fprintf(stderr, "sluice-run: the prompt has %d tokens, the context limit is %d (--max-model-len)\n", n_prompt,
                max_len);
        goto done;
    }
    int max_new = MIN(a.max_tokens, max_len - n_prompt);

    // ---- the KV cache: exactly this sequence's blocks unless --kv-cache-memory says otherwise
    int n_total = n_prompt + max_new;
    int blocks = (n_total + cfg.block_size - 1) / cfg.block_size;
    size_t kv_bytes = cfg.kv_cache_memory
                          ? cfg.kv_cache_memory
                          : (size_t)blocks * kv_cache_block_bytes(model.cfg.n_layers, model.cfg.n_kv_heads,
                                                                  model.cfg.head_dim, cfg.block_size, KV_F16);
    if (kv_cache_init(&kv, model.cfg.n_layers, model.cfg.n_kv_heads, model.cfg.head_dim, cfg.block_size, KV_F16,
                      kv_bytes, err) != SL_OK ||
        kv_seq_reserve(&seq, &kv, n_total, err) != SL_OK) {
        fprintf(stderr, "sluice-run: %s\n", err);
        status = 2;
        goto done;
    }
    batch_buf_init(&bb, cfg.max_num_batched_tokens, 1, blocks);
    logits = xmalloc(sizeof(float) * model.cfg.vocab);

    SamplingParams sp = sampling_params_default();
    sp.temperature = a.temperature;
    sp.seed = cfg.seed;
    sp.has_seed = true;
    if (sampling_params_validate(&sp, vocab, err) != SL_OK) {
        fprintf(stderr, "sluice-run: %s\n", err);
        status = 2;
        goto done;
    }
    sampler_state_init(&sst, &sp, vocab, prompt, n_prompt, max_new);
    sampler_scratch_init(&ssc, vocab);
    Detok dt;
    detok_init(&dt, true);
    int piece_cap = detok_out_cap(tok);
    piece = xmalloc(piece_cap);

    // ---- prefill, in chunks of --max-num-batched-tokens
    double t_prefill = time_now_s();
    for (int pos = 0; pos < n_prompt; pos += cfg.max_num_batched_tokens) {
        int len = MIN(cfg.max_num_batched_tokens, n_prompt - pos);
        step(&model, &kv, &seq, &bb, pos, prompt + pos, len, pos + len == n_prompt, logits);
    }
    double prefill_ms = time_ms_since(t_prefill);

    // ---- decode: sample, print, feed back
    double t_decode = time_now_s();
    int n_gen = 0, n_steps = 0;
    for (;;) {
        int tok_id = sampler_sample(&sp, &sst, logits, vocab, &ssc, NULL);
        sampler_state_accept(&sst, tok_id);
        n_gen++;
        if (tok_is_eog(tok, tok_id) && !a.ignore_eos) break;
        int k = detok_feed(&dt, tok, tok_id, piece, piece_cap);
        if (k > 0) {
            fwrite(piece, 1, k, stdout);
            fflush(stdout);
        }
        if (n_gen >= max_new) break;
        step(&model, &kv, &seq, &bb, n_prompt + n_gen - 1, &tok_id, 1, true, logits);
        n_steps++;
    }
    int k = detok_flush(&dt, piece, piece_cap);
    fwrite(piece, 1, k, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    double decode_ms = time_ms_since(t_decode);

    if (a.verbose) {
        char rss[32];
        fprintf(stderr, "sluice-run: load %.1f ms (%d threads)\n", load_ms, threads);
        fprintf(stderr, "sluice-run: prompt %d tokens in %.1f ms (%.1f tok/s)\n", n_prompt, prefill_ms,
                n_prompt / (prefill_ms / 1000.0));
        fprintf(stderr, "sluice-run: generated %d tokens, %d decode steps in %.1f ms (%.1f tok/s)\n", n_gen, n_steps,
                decode_ms, n_steps > 0 ? n_steps / (decode_ms / 1000.0) : 0.0);
        fprintf(stderr, "sluice-run: total %.1f ms, peak RSS %s\n", time_ms_since(t_start),
                fmt_bytes(mem_peak_rss(), rss, sizeof rss));
    }
    status = 0;
done:
    free(piece);
    free(logits);
    free(prompt);
    free(stdin_text);
    sampler_scratch_free(&ssc);
    sampler_state_free(&sst);
    batch_buf_free(&bb);
    if (kv.slab) kv_seq_release(&seq, &kv);
    kv_cache_free(&kv);
    engine_text_close(&text);
    k_free();
    model_free(&model);
    wsrc_close(&src);
    config_free(&cfg);
    free(a.prompt);
    return status;
}
