// forward_dump: the logits sluice's forward gives for a sequence of token ids, for the
// differential tests against llama.cpp (tests/models/test_families.py).
//
//   forward_dump [--top K] [--int8] MODEL FIRST TOKEN_ID...
//       MODEL: a .gguf file or an HF directory (wsrc_open's LOAD_AUTO). Runs the whole sequence
//       as one prefill (a paged KV cache with blocks of 16, a scrambled block table) and prints
//       one line per position p >= FIRST: "logits p v_0 ... v_{vocab-1}" (%.6g), the logits
//       of the next token after positions 0..p. Errors: one line on stderr, exit 1.
//       --top K: "top p id logit ..." instead, the K largest (ties: lower id first), for
//       full-size vocabularies (tests/models/test_requant.py). --int8: 8-bit activations
//       (--cpu-activations int8).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/kv_cache.h"
#include "engine/model/model.h"
#include "kernels/kernels.h"

#define BLOCK 16

// The k largest of row (k <= 16) into ids, best first, lower id first on ties.
static int top_k(const float *row, int vocab, int k, int *ids) {
    int n = 0;
    for (int v = 0; v < vocab; v++) {
        int i = n < k ? n++ : k;
        if (i == k && row[v] <= row[ids[k - 1]]) continue;
        if (i == k) i = k - 1;
        while (i > 0 && row[ids[i - 1]] < row[v]) ids[i] = ids[i - 1], i--;
        ids[i] = v;
    }
    return n;
}

int main(int argc, char **argv) {
    int top = 0;
    for (;;) {
        if (argc > 2 && !strcmp(argv[1], "--top")) {
            top = atoi(argv[2]), argc -= 2, argv += 2;
        } else if (argc > 1 && !strcmp(argv[1], "--int8")) {
            k_set_activations(K_ACT_INT8), argc--, argv++;
        } else {
            break;
        }
    }
    if (argc < 4 || top < 0 || top > 16) {
        fprintf(stderr, "usage: forward_dump [--top K (1..16)] [--int8] MODEL FIRST TOKEN_ID...\n");
        return 2;
    }
    log_level = LOG_WARN;
    int first = atoi(argv[2]), n = argc - 3;
    int *tokens = xmalloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) tokens[i] = atoi(argv[3 + i]);
    if (first < 0 || first >= n) {
        fprintf(stderr, "forward_dump: FIRST %d is not a position of the %d tokens\n", first, n);
        return 2;
    }
    Model m;
    char err[ERR_MAX];
    if (model_load(&m, argv[1], n, err) != SL_OK) {
        fprintf(stderr, "forward_dump: %s\n", err);
        return 1;
    }
    const ModelConfig *c = &m.cfg;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab) {
            fprintf(stderr, "forward_dump: token %d is outside the vocabulary of %d\n", tokens[i], c->vocab);
            return 1;
        }
    k_init(2, n, model_max_cols(&m));
    int n_blocks = (n + BLOCK - 1) / BLOCK;
    KVCache kv;
    kv_cache_init(&kv, c->n_layers, c->n_kv_heads, c->head_dim, BLOCK, KV_F16, n_blocks);
    int *table = xmalloc(sizeof(int) * n_blocks);
    for (int i = 0; i < n_blocks; i++) table[i] = n_blocks - 1 - i; // not the identity
    BatchBuf bb;
    batch_buf_init(&bb, n, 1, n_blocks);
    batch_buf_add(&bb, table, n_blocks, BLOCK, 0, tokens, n, n - first);
    float *logits = xmalloc(sizeof(float) * (size_t)(n - first) * c->vocab);
    model_forward(&m, kv.layers, &bb.b, logits);
    for (int p = first; p < n; p++) {
        const float *row = logits + (size_t)(p - first) * c->vocab;
        if (top) {
            int ids[16], n = top_k(row, c->vocab, top, ids);
            printf("top %d", p);
            for (int i = 0; i < n; i++) printf(" %d %.6g", ids[i], row[ids[i]]);
            printf("\n");
            continue;
        }
        printf("logits %d", p);
        for (int v = 0; v < c->vocab; v++) printf(" %.6g", row[v]);
        printf("\n");
    }
    free(logits), free(table), free(tokens);
    batch_buf_free(&bb);
    kv_cache_free(&kv);
    model_free(&m);
    return 0;
}
