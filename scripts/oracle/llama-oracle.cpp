// llama-oracle.cpp: llama.cpp as the reference forward for sluice's model families.
//
//   llama-oracle MODEL.gguf N_CTX N_PREDICT TOKEN_ID...
//
// Decodes the prompt (the token ids, no tokenizer involved) in one batch, then N_PREDICT greedy
// steps one token at a time, on one thread with llama.cpp's defaults otherwise (F16 KV cache,
// no flash attention). Prints the prompt, the greedy tokens and the full logits of the last
// prompt row and of every greedy step's input row:
//   prompt 1 2 3 ...
//   greedy 7 8 9 ...
//   logits POS v_0 v_1 ... v_{vocab-1}
// scripts/make-oracle-golden.sh runs it and keeps the output as a golden file under
// tests/data/families/. Built by scripts/build-llama-oracle.sh against the llama.cpp vendored in
// the llama-cpp-python sdist.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *) {
    if (level >= GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static void print_row(int pos, const float *x, int n) {
    printf("logits %d", pos);
    for (int i = 0; i < n; i++) printf(" %.6g", x[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL.gguf N_CTX N_PREDICT TOKEN_ID...\n", argv[0]);
        return 2;
    }
    int n_ctx = atoi(argv[2]), n_predict = atoi(argv[3]);
    std::vector<llama_token> prompt;
    for (int i = 4; i < argc; i++) prompt.push_back(atoi(argv[i]));

    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "llama-oracle: cannot load %s\n", argv[1]);
        return 1;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ctx;
    cp.n_ubatch = n_ctx;
    cp.n_threads = cp.n_threads_batch = 1;
    cp.swa_full = true; // keep every position cached: the windowed mask, not eviction, decides
    llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "llama-oracle: cannot create a context\n");
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    llama_batch batch = llama_batch_init((int)prompt.size() + 1, 0, 1);
    batch.n_tokens = (int)prompt.size();
    for (int i = 0; i < batch.n_tokens; i++) {
        batch.token[i] = prompt[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = i == batch.n_tokens - 1;
    }
    printf("prompt");
    for (llama_token t : prompt) printf(" %d", t);
    printf("\n");
    std::vector<std::vector<float>> rows;
    std::vector<llama_token> out;
    int pos = (int)prompt.size() - 1;
    for (int step = 0; step <= n_predict; step++) {
        if (llama_decode(ctx, batch) != 0) {
            fprintf(stderr, "llama-oracle: llama_decode failed at step %d\n", step);
            return 1;
        }
        const float *l = llama_get_logits_ith(ctx, -1);
        rows.emplace_back(l, l + n_vocab);
        if (step == n_predict) break;
        llama_token next = argmax(l, n_vocab);
        out.push_back(next);
        pos++;
        batch.n_tokens = 1;
        batch.token[0] = next;
        batch.pos[0] = pos;
        batch.n_seq_id[0] = 1;
        batch.seq_id[0][0] = 0;
        batch.logits[0] = 1;
    }
    printf("greedy");
    for (llama_token t : out) printf(" %d", t);
    printf("\n");
    for (size_t i = 0; i < rows.size(); i++) print_row((int)prompt.size() - 1 + (int)i, rows[i].data(), n_vocab);
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
