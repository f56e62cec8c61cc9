// fuzz_gguf: libFuzzer harness for the GGUF reader (engine/model/gguf.c) over a memory buffer,
// and for what reads a GGUF's metadata after it: the model config (model_config.c) and the
// tokenizer loader (engine/tokenizer/). A file that loads gets a short encode and decode, so a
// hostile vocabulary is exercised too. Seeds: tests/data/tokenizer/*.gguf (scripts/run-fuzz.sh).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/model/gguf.h"
#include "engine/model/model_config.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz.h"

// Reads every value the way the loaders do, so each getter meets whatever the file declares.
static void walk(const GGUF *g) {
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const GGUFKV *kv = &g->kv[i];
        char *key = gguf_str_dup(kv->key);
        // (a key with a NUL in it cannot be asked for by a C string)
        CHECK(memchr(kv->key.ptr, 0, kv->key.len) || gguf_find(g, key) != NULL, "key %s not found by name", key);
        int64_t iv;
        double fv;
        bool bv;
        GGUFStr sv;
        (void)gguf_get_int(g, key, &iv);
        (void)gguf_get_float(g, key, &fv);
        (void)gguf_get_bool(g, key, &bv);
        if (gguf_get_str(g, key, &sv)) CHECK(sv.ptr >= (const char *)g->base && sv.ptr + sv.len <= (const char *)g->base + g->size);
        if (kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING)
            for (uint64_t j = 0; j < kv->arr_len; j++) {
                GGUFStr s = kv->arr_strs[j];
                CHECK(s.ptr >= (const char *)g->base && s.ptr + s.len <= (const char *)g->base + g->size, "array string");
            }
        (void)gguf_type_name(kv->type);
        free(key);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const GGUFTensor *t = &g->tensors[i];
        CHECK((const uint8_t *)t->data >= g->base && (const uint8_t *)t->data + t->nbytes <= g->base + g->size,
              "tensor %llu outside the file", (unsigned long long)i);
        char *name = gguf_str_dup(t->name);
        CHECK(memchr(t->name.ptr, 0, t->name.len) || gguf_tensor(g, name) == t, "tensor %s not found by name", name);
        free(name);
    }
}

static void tokenize(const GGUF *g) {
    char err[ERR_MAX];
    Tokenizer *t = NULL;
    if (tok_load(&t, g, err) != SL_OK) return;
    static const char text[] = "Hello world! <|im_start|>user\n 12345 \xe2\x96\x81x \xff\xfe caf\xc3\xa9";
    int *ids = NULL, cap = 0;
    int n = tok_encode(t, text, sizeof text - 1, true, true, &ids, &cap);
    int vocab = tok_vocab_size(t);
    for (int i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < vocab, "id %d outside the vocabulary", ids[i]);
    size_t len;
    char *out = tok_decode(t, ids, n, false, &len);
    CHECK(fz_utf8_ok(out, len), "tok_decode gave ill-formed UTF-8");
    free(out);
    free(ids);
    tok_free(t);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // a copy of its own, so a read past the end is ASan's to see (the corpus buffer may be larger)
    uint8_t *buf = xmalloc(size ? size : 1);
    memcpy(buf, data, size);
    GGUF g;
    char err[ERR_MAX];
    if (gguf_parse(&g, buf, size, err) == SL_OK) {
        walk(&g);
        ModelConfig c;
        (void)model_config_from_gguf(&c, &g, err);
        tokenize(&g);
        gguf_close(&g);
    } else {
        CHECK(err[0] && memchr(err, 0, ERR_MAX), "an error without a message");
        GGUF zero = {0};
        CHECK(!memcmp(&g, &zero, sizeof g), "a failed parse left *g non-zero");
    }
    free(buf);
    return 0;
}
