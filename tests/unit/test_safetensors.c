// test_safetensors.c: the safetensors reader (crafted bad files, sharded directories), the
// Hugging Face side of the weight sources (config.json parsing, tensor names, a model directory
// written here), the llama3 RoPE factors and the dummy weights.
#define _GNU_SOURCE
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "engine/model/safetensors.h"
#include "engine/model/weights_impl.h"
#include "tests/unit/test.h"

#define MODELS_DIR TEST_DATA_DIR "/../../config/models"

// ----------------------------------------------------------------------------
// helpers: safetensors files built in memory, a scratch directory

typedef struct {
    const char *name, *dtype;
    int n_dims;
    int64_t shape[4];
    const void *data;
    size_t nbytes;
} TT;

static size_t dtype_size(const char *d) { return strcmp(d, "F32") == 0 ? 4 : 2; }

// A valid file holding tensors t[0..n) back to back; the header padded to 8 bytes with spaces.
static uint8_t *st_build(const TT *t, int n, size_t *size_out) {
    char hdr[8192];
    size_t off = 0, pos = (size_t)snprintf(hdr, sizeof hdr, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        pos += (size_t)snprintf(hdr + pos, sizeof hdr - pos, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].n_dims; d++)
            pos += (size_t)snprintf(hdr + pos, sizeof hdr - pos, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        pos += (size_t)snprintf(hdr + pos, sizeof hdr - pos, "],\"data_offsets\":[%zu,%zu]}", off, off + t[i].nbytes);
        off += t[i].nbytes;
    }
    pos += (size_t)snprintf(hdr + pos, sizeof hdr - pos, "}");
    while (pos % 8) hdr[pos++] = ' ';
    uint8_t *buf = xmalloc(8 + pos + off);
    uint64_t n64 = pos;
    memcpy(buf, &n64, 8);
    memcpy(buf + 8, hdr, pos);
    off = 8 + pos;
    for (int i = 0; i < n; i++, off += t[i - 1].nbytes) memcpy(buf + off, t[i].data, t[i].nbytes);
    *size_out = off;
    return buf;
}

// A file whose header is the given text, followed by data_len zero bytes.
static uint8_t *st_raw(const char *header, size_t hlen, size_t data_len, size_t *size_out) {
    uint8_t *buf = xcalloc(1, 8 + hlen + data_len + 1);
    uint64_t n64 = hlen;
    memcpy(buf, &n64, 8);
    memcpy(buf + 8, header, hlen);
    *size_out = 8 + hlen + data_len;
    return buf;
}

static void write_file(const char *dir, const char *name, const void *data, size_t len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f, "%s", path);
    CHECK(fwrite(data, 1, len, f) == len);
    fclose(f);
}

static void write_text(const char *dir, const char *name, const char *text) { write_file(dir, name, text, strlen(text)); }

static void remove_file(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

// A fresh empty scratch directory (removing whatever an earlier use left in it).
static const char *scratch_dir(char *buf, size_t cap) {
    snprintf(buf, cap, "/tmp/sluice-test-st-%d", (int)getpid());
    DIR *d = opendir(buf);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (de->d_name[0] != '.') remove_file(buf, de->d_name);
        closedir(d);
    } else {
        CHECK(mkdir(buf, 0700) == 0, "%s", buf);
    }
    return buf;
}

static void scratch_remove(const char *dir) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", dir);
    scratch_dir(buf, sizeof buf);
    rmdir(buf);
}

static bool one_line(const char *s) { return s[0] && !strchr(s, '\n'); }

// ----------------------------------------------------------------------------
// the reader

static const float A_DATA[6] = {1, 2, 3, 4, 5, 6};
static const uint16_t B_DATA[4] = {0x3f80, 0x4000, 0xbf80, 0x0000}; // bf16 1, 2, -1, 0

static uint8_t *valid_file(size_t *size) {
    TT t[] = {{"a", "F32", 2, {2, 3}, A_DATA, sizeof A_DATA}, {"b", "BF16", 1, {4}, B_DATA, sizeof B_DATA}};
    return st_build(t, 2, size);
}

static void test_parse_valid(void) {
    size_t size;
    uint8_t *buf = valid_file(&size);
    SafeTensors st;
    char err[ERR_MAX] = "";
    ASSERT(safetensors_parse(&st, buf, size, "<buf>", err) == SL_OK, "%s", err);
    EXPECT_EQ_INT(st.n_tensors, 2);
    EXPECT_EQ_INT(st.bytes, sizeof A_DATA + sizeof B_DATA);
    const STensor *a = safetensors_find(&st, "a"), *b = safetensors_find(&st, "b");
    ASSERT(a && b);
    EXPECT_EQ_INT(a->type, QTYPE_F32);
    EXPECT_EQ_INT(a->n_dims, 2);
    EXPECT_EQ_INT(a->shape[0], 2);
    EXPECT_EQ_INT(a->shape[1], 3);
    EXPECT_EQ_INT(a->nbytes, 24);
    EXPECT(memcmp(a->data, A_DATA, sizeof A_DATA) == 0);
    EXPECT_EQ_INT(b->type, QTYPE_BF16);
    EXPECT(memcmp(b->data, B_DATA, sizeof B_DATA) == 0);
    EXPECT(safetensors_find(&st, "c") == NULL);
    safetensors_close(&st);
    free(buf);
}

// Every proper prefix of a valid file is rejected with one line naming the file.
static void test_truncations(void) {
    size_t size;
    uint8_t *buf = valid_file(&size);
    for (size_t k = 0; k < size; k++) {
        uint8_t *copy = xmalloc(k + 1); // exactly k bytes readable (ASan sees any overread)
        memcpy(copy, buf, k);
        SafeTensors st;
        char err[ERR_MAX] = "";
        int rc = safetensors_parse(&st, copy, k, "<trunc>", err);
        EXPECT(rc == SL_ERR, "prefix of %zu of %zu bytes accepted", k, size);
        EXPECT(strstr(err, "<trunc>: ") == err && one_line(err), "%zu: %s", k, err);
        EXPECT(st.n_tensors == 0 && st.tensors == NULL);
        free(copy);
    }
    free(buf);
}

static void test_bad_headers(void) {
    static const struct {
        const char *header; // NULL: see bad_len
        size_t data_len;
        const char *want;
    } cases[] = {
        {"{\"a\":", 0, "header is not valid JSON"},
        {"[1,2]", 0, "header is not a JSON object"},
        {"{}  x", 0, "bytes after its JSON object"},
        {"{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a' has an unknown dtype 'F99'"},
        {"{\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a' has an unsupported dtype 'I32'"},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': dtype is missing"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16, "need 16 bytes, data_offsets give 12"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "run past the data"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}", 16, "data_offsets is not [begin, end]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0] is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0] is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, "has 0 dimensions"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "has 5 dimensions"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4, "too many elements"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24, "tensors 'a' [0, 16] and 'b' [8, 24] overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},\"e\":{\"dtype\":\"F32\",\"shape\":[0],"
         "\"data_offsets\":[8,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", 32, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor 'a' appears twice"},
        {"{\"__metadata__\":[1]}", 0, "__metadata__ is not an object"},
        {"{\"a\":[1]}", 0, "header entry is not an object"},
        {"{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "empty name"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets is not"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t size;
        uint8_t *buf = st_raw(cases[i].header, strlen(cases[i].header), cases[i].data_len, &size);
        SafeTensors st;
        char err[ERR_MAX] = "";
        EXPECT(safetensors_parse(&st, buf, size, "bad.safetensors", err) == SL_ERR, "case %zu accepted", i);
        EXPECT(strstr(err, cases[i].want) && strstr(err, "bad.safetensors: ") == err && one_line(err),
               "case %zu: want '%s', got '%s'", i, cases[i].want, err);
        free(buf);
    }
    // the header length itself: zero, past the end of the file, and a NUL inside the JSON
    const uint64_t lens[] = {0, 1000, UINT64_MAX};
    for (size_t i = 0; i < ARRAY_LEN(lens); i++) {
        uint8_t buf[16] = "........{}      ";
        memcpy(buf, &lens[i], 8);
        SafeTensors st;
        char err[ERR_MAX] = "";
        EXPECT(safetensors_parse(&st, buf, sizeof buf, "len", err) == SL_ERR);
        EXPECT(strstr(err, "len: bad header length"), "%s", err);
    }
    size_t size;
    uint8_t *buf = st_raw("{}\0 ", 4, 0, &size);
    SafeTensors st;
    char err[ERR_MAX] = "";
    EXPECT(safetensors_parse(&st, buf, size, "nul", err) == SL_ERR);
    EXPECT(strstr(err, "header contains a NUL byte"), "%s", err);
    free(buf);
}

// ----------------------------------------------------------------------------
// sharded directories

static const char *INDEX_OK = "{\"metadata\":{\"total_size\":40},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                              "\"b\":\"model-00002-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}}";

// Shard 1 holds a; shard 2 holds b and c (or whatever `second` says).
static void write_shards(const char *dir, const TT *second, int n_second) {
    TT first[] = {{"a", "F32", 2, {2, 3}, A_DATA, sizeof A_DATA}};
    size_t size;
    uint8_t *buf = st_build(first, 1, &size);
    write_file(dir, "model-00001-of-00002.safetensors", buf, size);
    free(buf);
    buf = st_build(second, n_second, &size);
    write_file(dir, "model-00002-of-00002.safetensors", buf, size);
    free(buf);
}

static void test_sharded(void) {
    char dir[256];
    scratch_dir(dir, sizeof dir);
    TT second[] = {{"b", "BF16", 1, {4}, B_DATA, sizeof B_DATA}, {"c", "F32", 1, {2}, A_DATA, 8}};
    write_shards(dir, second, 2);
    write_text(dir, "model.safetensors.index.json", INDEX_OK);
    SafeTensors st;
    char err[ERR_MAX] = "";
    ASSERT(safetensors_open_dir(&st, dir, err) == SL_OK, "%s", err);
    EXPECT_EQ_INT(st.n_files, 2);
    EXPECT_EQ_INT(st.n_tensors, 3);
    const STensor *a = safetensors_find(&st, "a"), *b = safetensors_find(&st, "b"), *c = safetensors_find(&st, "c");
    ASSERT(a && b && c);
    EXPECT(a->file == 0 && b->file == 1 && c->file == 1);
    EXPECT(memcmp(a->data, A_DATA, sizeof A_DATA) == 0 && memcmp(b->data, B_DATA, sizeof B_DATA) == 0);
    EXPECT(memcmp(c->data, A_DATA, 8) == 0);
    safetensors_close(&st);

    static const struct {
        const char *index; // NULL: INDEX_OK
        int second;        // shard 2: 0 = {b, c}, 1 = {b} only, 2 = {b, c, d}, 3 = {b, c, a}
        const char *want;
    } cases[] = {
        {"{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00003-of-00002.safetensors\"}}", 0,
         "shard model-00003-of-00002.safetensors (holding 'b') does not exist"},
        {NULL, 1, "tensor 'c' is not in model-00002-of-00002.safetensors, where the index's weight_map puts it"},
        {NULL, 2, "model-00002-of-00002.safetensors: tensor 'd' is not listed in model.safetensors.index.json"},
        {NULL, 3, "tensor 'a' is also in"},
        {"{\"weight_map\":{\"a\":\"model-00002-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\","
         "\"c\":\"model-00002-of-00002.safetensors\"}}", 0, "tensor 'a' is not in model-00002-of-00002.safetensors"},
        {"{\"weight_map\":{\"a\":\"../model-00001-of-00002.safetensors\"}}", 0, "weight_map['a'] is not the name of a file"},
        {"{\"weight_map\":{\"a\":7}}", 0, "weight_map['a'] is not the name of a file"},
        {"{\"metadata\":{}}", 0, "weight_map is missing"},
        {"{\"weight_map\":", 0, "not valid JSON"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        scratch_dir(dir, sizeof dir);
        TT d = {"d", "F32", 1, {1}, A_DATA, 4}, again_a = {"a", "F32", 1, {1}, A_DATA, 4};
        TT sec[3] = {second[0], second[1], cases[i].second == 3 ? again_a : d};
        write_shards(dir, sec, cases[i].second == 1 ? 1 : cases[i].second >= 2 ? 3 : 2);
        write_text(dir, "model.safetensors.index.json", cases[i].index ? cases[i].index : INDEX_OK);
        err[0] = 0;
        EXPECT(safetensors_open_dir(&st, dir, err) == SL_ERR, "case %zu accepted", i);
        EXPECT(strstr(err, cases[i].want) && strstr(err, dir) == err && one_line(err), "case %zu: want '%s', got '%s'",
               i, cases[i].want, err);
    }
    // a shard that is itself corrupt: the message names the shard
    scratch_dir(dir, sizeof dir);
    write_shards(dir, second, 2);
    write_text(dir, "model.safetensors.index.json", INDEX_OK);
    write_text(dir, "model-00002-of-00002.safetensors", "short");
    err[0] = 0;
    EXPECT(safetensors_open_dir(&st, dir, err) == SL_ERR);
    EXPECT(strstr(err, "model-00002-of-00002.safetensors: file is truncated"), "%s", err);
    // no index: every *.safetensors in name order; nothing at all: an error
    remove_file(dir, "model.safetensors.index.json");
    write_shards(dir, second, 2);
    ASSERT(safetensors_open_dir(&st, dir, err) == SL_OK, "%s", err);
    EXPECT_EQ_INT(st.n_tensors, 3);
    safetensors_close(&st);
    scratch_dir(dir, sizeof dir);
    EXPECT(safetensors_open_dir(&st, dir, err) == SL_ERR);
    EXPECT(strstr(err, "no model.safetensors.index.json, model.safetensors or *.safetensors"), "%s", err);
    scratch_remove(dir);
}

// ----------------------------------------------------------------------------
// config.json

static char *models_config(const char *name, size_t *len) {
    char path[512], err[ERR_MAX];
    snprintf(path, sizeof path, "%s/%s/config.json", MODELS_DIR, name);
    char *text = file_read_all(path, len, err);
    CHECK(text, "%s", err);
    return text;
}

static void test_config_models(void) {
    static const struct {
        const char *dir, *arch;
        int layers, dim, heads, kv, head_dim, ffn, vocab, ctx;
        float base, eps, scaling;
        bool tied, bias;
    } want[] = {
        {"llama-3.1-8b", "llama", 32, 4096, 32, 8, 128, 14336, 128256, 131072, 500000, 1e-5f, 8, false, false},
        {"llama-3.2-1b", "llama", 16, 2048, 32, 8, 64, 8192, 128256, 131072, 500000, 1e-5f, 32, true, false},
        {"qwen2.5-0.5b", "qwen2", 24, 896, 14, 2, 64, 4864, 151936, 32768, 1000000, 1e-6f, 0, true, true},
        {"tiny-8h4kv", "llama", 4, 512, 8, 4, 64, 1024, 49152, 2048, 100000, 1e-5f, 0, true, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        size_t len;
        char *text = models_config(want[i].dir, &len), err[ERR_MAX] = "";
        ModelConfig c;
        EXPECT(model_config_from_hf(&c, text, len, err) == SL_OK, "%s: %s", want[i].dir, err);
        EXPECT_STR_EQ(c.arch, want[i].arch);
        EXPECT(c.n_layers == want[i].layers && c.dim == want[i].dim && c.n_heads == want[i].heads &&
                   c.n_kv_heads == want[i].kv && c.head_dim == want[i].head_dim && c.ffn_dim == want[i].ffn &&
                   c.vocab == want[i].vocab && c.context_len == want[i].ctx,
               "%s", want[i].dir);
        EXPECT(c.rope_base == want[i].base && c.norm_eps == want[i].eps, "%s", want[i].dir);
        EXPECT(c.rope_dim == c.head_dim && c.rope_layout == ROPE_NEOX, "%s", want[i].dir);
        EXPECT(c.tied_embeddings == want[i].tied && c.qkv_bias == want[i].bias && !c.qk_norm, "%s", want[i].dir);
        EXPECT(c.rope_scaling_factor == want[i].scaling && c.sliding_window == 0, "%s", want[i].dir);
        if (want[i].scaling > 0)
            EXPECT(c.rope_low_freq_factor == 1 && c.rope_high_freq_factor == 4 && c.rope_orig_ctx == 8192);
        free(text);
    }
}

#define CFG_BASE "\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"intermediate_size\": 128, " \
                 "\"vocab_size\": 100, \"max_position_embeddings\": 512"

static void test_config_variants(void) {
    static const struct {
        const char *json;
        const char *want; // NULL: valid
    } cases[] = {
        {"{\"architectures\": [\"Qwen3ForCausalLM\"], " CFG_BASE ", \"head_dim\": 32, \"num_key_value_heads\": 2}", NULL},
        {"{\"architectures\": [\"MistralForCausalLM\"], " CFG_BASE ", \"sliding_window\": 256}", NULL},
        {"{\"architectures\": [\"Qwen2ForCausalLM\"], " CFG_BASE ", \"use_sliding_window\": true, \"sliding_window\": 128}", NULL},
        {"{\"model_type\": \"llama\", " CFG_BASE ", \"rope_scaling\": {\"type\": \"default\"}, \"head_dim\": null}", NULL},
        {"{\"architectures\": [\"LlamaForCausalLM\"], \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
         "\"intermediate_size\": 128, \"vocab_size\": 100, \"max_position_embeddings\": 512}", "key hidden_size is missing"},
        {"{\"architectures\": [\"GPT2LMHeadModel\"], " CFG_BASE "}", "unsupported architecture 'GPT2LMHeadModel' (supported: "
         "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, "
         "Gemma3ForCausalLM, Phi3ForCausalLM)"},
        {"{" CFG_BASE "}", "key architectures is missing"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
         "rope_scaling type 'yarn' is not supported (supported: llama3)"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", "
         "\"factor\": 8, \"low_freq_factor\": 1, \"high_freq_factor\": 4}}", "rope_scaling: key original_max_position_embeddings is missing"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", "
         "\"factor\": 8, \"low_freq_factor\": 4, \"high_freq_factor\": 4, \"original_max_position_embeddings\": 64}}",
         "high_freq_factor 4 must exceed low_freq_factor 4"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"hidden_act\": \"gelu\"}", "hidden_act 'gelu' is not supported"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"attention_bias\": true}", "attention_bias"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"mlp_bias\": true}", "mlp_bias is not supported"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"num_key_value_heads\": 3}",
         "num_attention_heads 4 is not a multiple of num_key_value_heads 3"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"num_key_value_heads\": 8}", "key num_key_value_heads = 8 is out of range"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"head_dim\": 15}", "head_dim 15 is odd"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"rms_norm_eps\": \"x\"}", "key rms_norm_eps is not a number"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"tie_word_embeddings\": 1}", "tie_word_embeddings is not true or false"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"partial_rotary_factor\": 0.5}", "partial_rotary_factor"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"quantization_config\": {}}", "quantization_config"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE ", \"num_key_value_heads\": 2.5}", "key num_key_value_heads is not an integer"},
        {"{\"architectures\": [\"LlamaForCausalLM\"], " CFG_BASE "", "not valid JSON"},
        {"[1]", "not a JSON object"},
        {"{\"architectures\": [\"Gemma2ForCausalLM\"], " CFG_BASE ", \"sliding_window\": 16, \"query_pre_attn_scalar\": 64, "
         "\"attn_logit_softcapping\": 50, \"final_logit_softcapping\": 30, \"hidden_activation\": \"gelu_pytorch_tanh\"}", NULL},
        {"{\"architectures\": [\"Gemma3ForCausalLM\"], " CFG_BASE ", \"sliding_window\": 16, "
         "\"layer_types\": [\"sliding_attention\", \"full_attention\"], \"sliding_window_pattern\": 2, "
         "\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 8}}", NULL},
        {"{\"architectures\": [\"Phi3ForCausalLM\"], " CFG_BASE ", \"partial_rotary_factor\": 0.5, "
         "\"original_max_position_embeddings\": 128, \"rope_scaling\": {\"type\": \"longrope\", "
         "\"short_factor\": [1, 1, 1, 1], \"long_factor\": [2, 3, 4, 5]}}", NULL},
        {"{\"architectures\": [\"Gemma3ForCausalLM\"], " CFG_BASE ", \"sliding_window\": 16, "
         "\"layer_types\": [\"full_attention\", \"full_attention\"]}", "layer_types[0] is not 'sliding_attention'"},
        {"{\"architectures\": [\"Gemma2ForCausalLM\"], " CFG_BASE ", \"sliding_window\": 16, \"hidden_activation\": \"silu\"}",
         "hidden_activation 'silu' is not supported (only gelu_pytorch_tanh)"},
        {"{\"architectures\": [\"Phi3ForCausalLM\"], " CFG_BASE ", \"rope_scaling\": {\"type\": \"longrope\", "
         "\"short_factor\": [1, 1], \"long_factor\": [2, 3]}}", "rope_scaling.short_factor is not a list of 8 numbers"},
        {"{\"architectures\": [\"Phi3ForCausalLM\"], " CFG_BASE ", \"rope_scaling\": {\"type\": \"yarn\"}}",
         "rope_scaling for Phi-3 must be of type longrope"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        ModelConfig c;
        char err[ERR_MAX] = "";
        int rc = model_config_from_hf(&c, cases[i].json, strlen(cases[i].json), err);
        if (!cases[i].want) {
            EXPECT(rc == SL_OK, "case %zu: %s", i, err);
            continue;
        }
        EXPECT(rc == SL_ERR && strstr(err, cases[i].want) && one_line(err), "case %zu: want '%s', got '%s'", i,
               cases[i].want, err);
    }
    // what the valid variants set
    ModelConfig c;
    char err[ERR_MAX];
    ASSERT(model_config_from_hf(&c, cases[0].json, strlen(cases[0].json), err) == SL_OK);
    EXPECT(strcmp(c.arch, "qwen3") == 0 && c.qk_norm && !c.qkv_bias && c.head_dim == 32 && c.n_kv_heads == 2);
    ASSERT(model_config_from_hf(&c, cases[1].json, strlen(cases[1].json), err) == SL_OK);
    EXPECT(strcmp(c.arch, "llama") == 0 && c.sliding_window == 256 && c.n_kv_heads == 4 && c.head_dim == 16);
    ASSERT(model_config_from_hf(&c, cases[2].json, strlen(cases[2].json), err) == SL_OK);
    EXPECT(strcmp(c.arch, "qwen2") == 0 && c.qkv_bias && c.sliding_window == 128);
    EXPECT(c.norm_eps == 1e-6f && c.rope_base == 10000.0f && !c.tied_embeddings); // HF's defaults
    EXPECT(c.swa_first_layer == 28 && model_layer_window(&c, 1) == 0); // max_window_layers' default
    // Gemma 2: every other layer windowed, its scale and caps; Gemma 3: its pattern, local base, linear
    // scaling; Phi-3: partial rotary and LongRoPE (magnitude sqrt(1 + ln(512/128) / ln(128)))
    ASSERT(model_config_from_hf(&c, cases[23].json, strlen(cases[23].json), err) == SL_OK, "%s", err);
    EXPECT(c.gemma && model_layer_window(&c, 0) == 16 && model_layer_window(&c, 1) == 0 && c.attn_scale == 0.125f &&
           c.attn_softcap == 50 && c.final_softcap == 30 && c.rope_layout == ROPE_NEOX);
    ASSERT(model_config_from_hf(&c, cases[24].json, strlen(cases[24].json), err) == SL_OK, "%s", err);
    EXPECT(c.gemma && c.qk_norm && c.swa_pattern == 2 && c.rope_base_local == 10000 && c.rope_linear_factor == 8);
    ASSERT(model_config_from_hf(&c, cases[25].json, strlen(cases[25].json), err) == SL_OK, "%s", err);
    EXPECT(c.fused_qkv && c.fused_gate_up && c.rope_dim == 8 && c.longrope && c.rope_long[3] == 5 &&
           model_longrope_long(&c) && fabsf(c.rope_attn_factor - 1.1338934f) < 1e-5f, "%g", c.rope_attn_factor);
}

// ----------------------------------------------------------------------------
// HF tensor names -> GGUF names

static void test_tensor_names(void) {
    static const struct {
        const char *hf;
        int rc;
        const char *gguf;
    } cases[] = {
        {"model.embed_tokens.weight", 1, "token_embd.weight"},
        {"model.norm.weight", 1, "output_norm.weight"},
        {"lm_head.weight", 1, "output.weight"},
        {"model.layers.0.input_layernorm.weight", 1, "blk.0.attn_norm.weight"},
        {"model.layers.12.self_attn.q_proj.weight", 1, "blk.12.attn_q.weight"},
        {"model.layers.3.self_attn.k_proj.bias", 1, "blk.3.attn_k.bias"},
        {"model.layers.3.self_attn.v_proj.bias", 1, "blk.3.attn_v.bias"},
        {"model.layers.7.self_attn.o_proj.weight", 1, "blk.7.attn_output.weight"},
        {"model.layers.7.self_attn.q_norm.weight", 1, "blk.7.attn_q_norm.weight"},
        {"model.layers.7.self_attn.k_norm.weight", 1, "blk.7.attn_k_norm.weight"},
        {"model.layers.31.post_attention_layernorm.weight", 1, "blk.31.ffn_norm.weight"},
        {"model.layers.31.mlp.gate_proj.weight", 1, "blk.31.ffn_gate.weight"},
        {"model.layers.31.mlp.up_proj.weight", 1, "blk.31.ffn_up.weight"},
        {"model.layers.31.mlp.down_proj.weight", 1, "blk.31.ffn_down.weight"},
        {"model.layers.5.self_attn.rotary_emb.inv_freq", 0, NULL},
        {"model.layers.01.mlp.up_proj.weight", -1, NULL},
        {"model.layers.x.mlp.up_proj.weight", -1, NULL},
        {"model.layers.1234567.mlp.up_proj.weight", -1, NULL},
        {"model.layers.1.self_attn.o_proj.bias", -1, NULL},
        {"model.layers.1.mlp.up_proj", -1, NULL},
        {"model.embed_tokens.bias", -1, NULL},
        {"transformer.wte.weight", -1, NULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char out[64] = "untouched";
        int rc = model_hf_tensor_name("llama", cases[i].hf, out, sizeof out);
        EXPECT(rc == cases[i].rc, "%s: %d", cases[i].hf, rc);
        EXPECT_STR_EQ(out, cases[i].gguf ? cases[i].gguf : "untouched");
    }
}

// ----------------------------------------------------------------------------
// llama3 RoPE frequency factors

static void test_rope_freq_factors(void) {
    size_t len;
    char *text = models_config("llama-3.1-8b", &len), err[ERR_MAX];
    ModelConfig c;
    ASSERT(model_config_from_hf(&c, text, len, err) == SL_OK, "%s", err);
    free(text);
    float f[64];
    model_rope_freq_factors(&c, f);
    // reference: llama.cpp's convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors) in float32
    static const struct {
        int i;
        float v;
    } ref[] = {{0, 1.0f}, {20, 1.0f}, {28, 1.0f}, {29, 1.2074839f}, {31, 2.0263131f},
                 {34, 5.2573271f}, {35, 8.0f}, {63, 8.0f}};
    for (size_t k = 0; k < ARRAY_LEN(ref); k++) EXPECT_NEAR(f[ref[k].i], ref[k].v, 1e-4 * ref[k].v);
    for (int i = 1; i < 64; i++) EXPECT(f[i] >= f[i - 1] && f[i] >= 1 && f[i] <= 8, "%d: %g", i, f[i]);
    // no scaling: all ones
    c.rope_scaling_factor = 0;
    model_rope_freq_factors(&c, f);
    for (int i = 0; i < 64; i++) EXPECT(f[i] == 1.0f);
}

// ----------------------------------------------------------------------------
// a Hugging Face model directory, written here, opened through wsrc_open

#define TINY_CONFIG_FMT                                                                                               \
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 16, \"num_hidden_layers\": 2, "                    \
    "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 8, \"intermediate_size\": 32, "         \
    "\"vocab_size\": %d, \"max_position_embeddings\": 64, \"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05, "       \
    "\"tie_word_embeddings\": %s, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 4.0, "                  \
    "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64}}"

typedef struct {
    TT t[32];
    char names[32][64];
    uint8_t *data[32];
    int n;
} TinyModel;

// Tensor i's bytes are a pattern of i, so each can be recognised after the mapping.
static void tiny_add(TinyModel *m, const char *name, const char *dtype, int n_dims, int64_t d0, int64_t d1) {
    int i = m->n++;
    snprintf(m->names[i], sizeof m->names[i], "%s", name);
    size_t nbytes = (size_t)(d0 * (n_dims > 1 ? d1 : 1)) * dtype_size(dtype);
    m->data[i] = xmalloc(nbytes);
    for (size_t k = 0; k < nbytes; k++) m->data[i][k] = (uint8_t)(k * 7 + i * 13);
    m->t[i] = (TT){m->names[i], dtype, n_dims, {d0, d1}, m->data[i], nbytes};
}

static void tiny_build(TinyModel *m, const char *extra_name) {
    memset(m, 0, sizeof *m);
    tiny_add(m, "model.embed_tokens.weight", "BF16", 2, 20, 16);
    char n[64];
    for (int l = 0; l < 2; l++) {
#define L(s) (snprintf(n, sizeof n, "model.layers.%d.%s", l, s), n)
        tiny_add(m, L("input_layernorm.weight"), "F32", 1, 16, 1);
        tiny_add(m, L("self_attn.q_proj.weight"), "BF16", 2, 16, 16);
        tiny_add(m, L("self_attn.k_proj.weight"), "BF16", 2, 8, 16);
        tiny_add(m, L("self_attn.v_proj.weight"), "BF16", 2, 8, 16);
        tiny_add(m, L("self_attn.o_proj.weight"), "BF16", 2, 16, 16);
        tiny_add(m, L("self_attn.rotary_emb.inv_freq"), "F32", 1, 4, 1);
        tiny_add(m, L("post_attention_layernorm.weight"), "F32", 1, 16, 1);
        tiny_add(m, L("mlp.gate_proj.weight"), "F16", 2, 32, 16);
        tiny_add(m, L("mlp.up_proj.weight"), "F16", 2, 32, 16);
        tiny_add(m, L("mlp.down_proj.weight"), "F16", 2, 16, 32);
#undef L
    }
    tiny_add(m, "model.norm.weight", "F32", 1, 16, 1);
    tiny_add(m, "lm_head.weight", "F32", 2, 20, 16);
    if (extra_name) tiny_add(m, extra_name, "F32", 1, 4, 1);
}

static void tiny_free(TinyModel *m) {
    for (int i = 0; i < m->n; i++) free(m->data[i]);
}

static void tiny_write(const char *dir, const TinyModel *m, int vocab, bool tied) {
    char cfg[1024];
    snprintf(cfg, sizeof cfg, TINY_CONFIG_FMT, vocab, tied ? "true" : "false");
    write_text(dir, "config.json", cfg);
    size_t size;
    uint8_t *buf = st_build(m->t, m->n, &size);
    write_file(dir, "model.safetensors", buf, size);
    free(buf);
}

static void test_model_dir(void) {
    char dir[256], err[ERR_MAX] = "";
    scratch_dir(dir, sizeof dir);
    TinyModel m;
    tiny_build(&m, NULL);
    tiny_write(dir, &m, 20, false);
    WeightSource ws;
    ASSERT(wsrc_open(&ws, dir, LOAD_AUTO, err) == SL_OK, "%s", err);
    EXPECT_EQ_INT(ws.format, LOAD_SAFETENSORS);
    EXPECT_STR_EQ(ws.dir, dir);
    EXPECT(ws.cfg.dim == 16 && ws.cfg.n_layers == 2 && ws.cfg.vocab == 20 && !ws.cfg.tied_embeddings);
    EXPECT_EQ_INT(ws.n_tensors, m.n - 2 + 1); // the two inv_freq dropped, rope_freqs.weight added
    size_t bytes = 0;
    for (int i = 0; i < m.n; i++) {
        char gguf[64];
        if (model_hf_tensor_name("llama", m.names[i], gguf, sizeof gguf) != 1) continue;
        const WTensor *t = wsrc_find(&ws, gguf);
        if (!t) {
            EXPECT(t, "%s (%s) missing", gguf, m.names[i]);
            continue;
        }
        const TT *s = &m.t[i];
        QType want = strcmp(s->dtype, "F32") == 0 ? QTYPE_F32 : strcmp(s->dtype, "F16") == 0 ? QTYPE_F16 : QTYPE_BF16;
        EXPECT(t->type == want && t->n_dims == s->n_dims, "%s", gguf);
        if (s->n_dims == 2) EXPECT(t->ne[0] == s->shape[1] && t->ne[1] == s->shape[0], "%s: reversed shape", gguf);
        else EXPECT(t->ne[0] == s->shape[0] && t->ne[1] == 1, "%s", gguf);
        EXPECT(t->nbytes == s->nbytes && memcmp(t->data, s->data, s->nbytes) == 0, "%s: bytes", gguf);
        bytes += t->nbytes;
    }
    const WTensor *k = wsrc_find(&ws, "blk.1.attn_k.weight"), *rf = wsrc_find(&ws, "rope_freqs.weight");
    ASSERT(k && rf);
    EXPECT(k->ne[0] == 16 && k->ne[1] == 8 && k->ne[2] == 1 && k->ne[3] == 1);
    EXPECT(rf->type == QTYPE_F32 && rf->n_dims == 1 && rf->ne[0] == 4 && rf->nbytes == 16);
    float want[4];
    model_rope_freq_factors(&ws.cfg, want);
    EXPECT(memcmp(rf->data, want, sizeof want) == 0);
    // the test config spans the three bands: unchanged, interpolated, divided by the factor
    EXPECT(want[0] == 1.0f && want[1] > 1.0f && want[1] < 4.0f && want[3] == 4.0f, "%g %g %g", want[0], want[1], want[3]);
    EXPECT_EQ_INT(ws.bytes, bytes + rf->nbytes);
    EXPECT(wsrc_find(&ws, "blk.0.rotary_emb.inv_freq") == NULL && wsrc_find(&ws, "nothing") == NULL);
    wsrc_close(&ws);
    EXPECT(ws.tensors == NULL && ws.impl == NULL);

    // config.json as the path; the format named explicitly
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    ASSERT(wsrc_open(&ws, path, LOAD_SAFETENSORS, err) == SL_OK, "%s", err);
    EXPECT_STR_EQ(ws.dir, dir);
    wsrc_close(&ws);

    // tied: a checkpoint's lm_head.weight is ignored, as HF does
    tiny_write(dir, &m, 20, true);
    ASSERT(wsrc_open(&ws, dir, LOAD_AUTO, err) == SL_OK, "%s", err);
    EXPECT(ws.cfg.tied_embeddings && wsrc_find(&ws, "output.weight") == NULL);
    wsrc_close(&ws);

    // errors: config.json's vocab against the embedding; a tensor no forward reads; no config.json
    tiny_write(dir, &m, 21, false);
    EXPECT(wsrc_open(&ws, dir, LOAD_AUTO, err) == SL_ERR);
    EXPECT(strstr(err, "model.embed_tokens.weight has shape [20, 16], config.json says [21, 16]"), "%s", err);
    tiny_free(&m);
    tiny_build(&m, "model.layers.0.self_attn.foo.weight");
    tiny_write(dir, &m, 20, false);
    EXPECT(wsrc_open(&ws, dir, LOAD_AUTO, err) == SL_ERR);
    EXPECT(strstr(err, "model.safetensors: tensor 'model.layers.0.self_attn.foo.weight' is not part of a llama model"),
           "%s", err);
    EXPECT(ws.tensors == NULL && ws.impl == NULL && ws.n_tensors == 0);
    tiny_free(&m);
    remove_file(dir, "config.json");
    EXPECT(wsrc_open(&ws, dir, LOAD_SAFETENSORS, err) == SL_ERR);
    EXPECT(strstr(err, "config.json"), "%s", err);
    remove_file(dir, "model.safetensors");
    write_text(dir, "config.json", "{}");
    EXPECT(wsrc_open(&ws, dir, LOAD_AUTO, err) == SL_ERR);
    EXPECT(strstr(err, "neither a GGUF file nor a directory with config.json and *.safetensors") &&
               strstr(err, "--load-format dummy") && one_line(err), "%s", err);
    EXPECT(wsrc_open(&ws, dir, LOAD_DUMMY, err) == SL_ERR);
    EXPECT(strstr(err, "config.json: key architectures is missing"), "%s", err);
    EXPECT(wsrc_open(&ws, dir, LOAD_GGUF, err) == SL_ERR);
    EXPECT(strstr(err, "is a directory, not a GGUF file"), "%s", err);
    snprintf(path, sizeof path, "%s/missing", dir);
    EXPECT(wsrc_open(&ws, path, LOAD_AUTO, err) == SL_ERR);
    EXPECT(strstr(err, "missing: cannot open"), "%s", err);
    scratch_remove(dir);
}

static void test_load_format(void) {
    for (int f = LOAD_AUTO; f <= LOAD_DUMMY; f++) EXPECT_EQ_INT(load_format_parse(load_format_name(f)), f);
    EXPECT_STR_EQ(load_format_name(LOAD_SAFETENSORS), "safetensors");
    EXPECT_EQ_INT(load_format_parse("pt"), -1);
    EXPECT_EQ_INT(load_format_parse(""), -1);
    EXPECT_EQ_INT(load_format_parse(NULL), -1);
}

// The default model through the GGUF source: its tensor table as stored.
static void test_gguf_source(void) {
    WeightSource ws;
    char err[ERR_MAX] = "";
    ASSERT(wsrc_open(&ws, TEST_MODEL_PATH, LOAD_AUTO, err) == SL_OK, "%s", err);
    EXPECT_EQ_INT(ws.format, LOAD_GGUF);
    EXPECT_EQ_INT(ws.n_tensors, (int)ws.gguf.n_tensors);
    EXPECT(ws.cfg.n_layers == 30 && ws.cfg.dim == 576 && ws.cfg.vocab == 49152);
    const WTensor *e = wsrc_find(&ws, "token_embd.weight"), *q = wsrc_find(&ws, "blk.29.attn_q.weight");
    ASSERT(e && q);
    EXPECT(e->type == QTYPE_Q8_0 && e->n_dims == 2 && e->ne[0] == 576 && e->ne[1] == 49152 && e->ne[2] == 1);
    EXPECT(q->type == QTYPE_Q4_1 && q->data == gguf_tensor(&ws.gguf, "blk.29.attn_q.weight")->data);
    EXPECT(strstr(ws.dir, "/models") && !strstr(ws.dir, ".gguf"), "%s", ws.dir);
    wsrc_close(&ws);
}

// ----------------------------------------------------------------------------
// dummy weights

static double tensor_value(const WTensor *t, int64_t i) {
    if (t->type == QTYPE_F32) return ((const float *)t->data)[i];
    return bf16_to_f32(((const uint16_t *)t->data)[i]);
}

static void tensor_stats(const WTensor *t, double *mean, double *std, double *lo, double *hi) {
    int64_t n = t->ne[0] * t->ne[1];
    double s = 0, s2 = 0;
    *lo = INFINITY, *hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double v = tensor_value(t, i);
        s += v, s2 += v * v;
        *lo = MIN(*lo, v), *hi = MAX(*hi, v);
    }
    *mean = s / n;
    *std = sqrt(MAX(s2 / n - *mean * *mean, 0));
}

static void test_dummy_tiny(void) {
    WeightSource a, b;
    char err[ERR_MAX] = "";
    ASSERT(wsrc_open(&a, MODELS_DIR "/tiny-8h4kv", LOAD_DUMMY, err) == SL_OK, "%s", err);
    ASSERT(wsrc_open(&b, MODELS_DIR "/tiny-8h4kv/config.json", LOAD_DUMMY, err) == SL_OK, "%s", err);
    EXPECT_EQ_INT(a.format, LOAD_DUMMY);
    EXPECT_EQ_INT(a.n_tensors, 1 + 4 * 9 + 1); // tied: no output.weight; no rope scaling: no rope_freqs
    ASSERT(a.n_tensors == b.n_tensors);
    for (int i = 0; i < a.n_tensors; i++) { // deterministic: the same bytes twice
        EXPECT(strcmp(a.tensors[i].name, b.tensors[i].name) == 0 && a.tensors[i].nbytes == b.tensors[i].nbytes &&
                   memcmp(a.tensors[i].data, b.tensors[i].data, a.tensors[i].nbytes) == 0,
               "%s", a.tensors[i].name);
        EXPECT(((uintptr_t)a.tensors[i].data & 63) == 0);
    }
    const WTensor *k = wsrc_find(&a, "blk.3.attn_k.weight"), *q0 = wsrc_find(&a, "blk.0.attn_q.weight"),
                  *q1 = wsrc_find(&a, "blk.1.attn_q.weight"), *down = wsrc_find(&a, "blk.2.ffn_down.weight"),
                  *norm = wsrc_find(&a, "blk.0.attn_norm.weight"), *emb = wsrc_find(&a, "token_embd.weight");
    ASSERT(k && q0 && q1 && down && norm && emb);
    EXPECT(k->type == QTYPE_BF16 && k->n_dims == 2 && k->ne[0] == 512 && k->ne[1] == 256 && k->nbytes == 512 * 256 * 2);
    EXPECT(down->ne[0] == 1024 && down->ne[1] == 512);
    EXPECT(emb->ne[0] == 512 && emb->ne[1] == 49152);
    EXPECT(norm->type == QTYPE_F32 && norm->n_dims == 1 && norm->ne[0] == 512);
    EXPECT(wsrc_find(&a, "output.weight") == NULL && wsrc_find(&a, "output_norm.weight") != NULL);
    EXPECT(memcmp(q0->data, q1->data, q0->nbytes) != 0); // each tensor its own stream
    double mean, std, lo, hi;
    tensor_stats(q0, &mean, &std, &lo, &hi);
    EXPECT(fabs(mean) < 0.002 && fabs(std * sqrt(512.0) - 1) < 0.03, "attn_q: mean %g std %g", mean, std);
    tensor_stats(down, &mean, &std, &lo, &hi);
    EXPECT(fabs(std * sqrt(1024.0) - 1) < 0.03, "ffn_down: std %g", std);
    tensor_stats(norm, &mean, &std, &lo, &hi);
    EXPECT(fabs(mean - 1) < 0.05 && lo >= 0.75 && hi <= 1.25, "norm: mean %g in [%g, %g]", mean, lo, hi);
    tensor_stats(emb, &mean, &std, &lo, &hi);
    EXPECT(fabs(std * sqrt(512.0) / 4 - 1) < 0.03, "token_embd: std %g", std);

    // The LM head on unit-RMS hidden states: logits spread over a few units, and the top two
    // apart by far more than float rounding, so greedy decoding is decided by the weights.
    uint64_t s = 42;
    for (int r = 0; r < 4; r++) {
        float h[512];
        double ss = 0;
        for (int i = 0; i < 512; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            h[i] = (float)((s >> 11) * 0x1.0p-53) - 0.5f;
            ss += (double)h[i] * h[i];
        }
        for (int i = 0; i < 512; i++) h[i] = (float)(h[i] / sqrt(ss / 512));
        double top1 = -INFINITY, top2 = -INFINITY, sum = 0, sum2 = 0;
        float row[512];
        for (int v = 0; v < 49152; v++) {
            dequant_row(QTYPE_BF16, (const uint16_t *)emb->data + (size_t)v * 512, row, 512);
            double z = 0;
            for (int i = 0; i < 512; i++) z += (double)row[i] * h[i];
            sum += z, sum2 += z * z;
            if (z > top1) top2 = top1, top1 = z;
            else if (z > top2) top2 = z;
        }
        double lstd = sqrt(sum2 / 49152 - (sum / 49152) * (sum / 49152));
        EXPECT(lstd > 3 && lstd < 5, "logit std %g", lstd);
        EXPECT(top1 - top2 > 1e-3, "top-2 margin %g", top1 - top2);
    }
    wsrc_close(&a);
    wsrc_close(&b);
}

// The variants: Qwen2's biases, Qwen3's q/k norms, llama3 scaling's rope_freqs, untied head.
static void test_dummy_variants(void) {
    static const struct {
        const char *arch, *extra;
        int n_tensors;
        const char *has[3];
    } cases[] = {
        {"Qwen2ForCausalLM", "", 1 + 2 * 12 + 2, {"blk.1.attn_q.bias", "blk.1.attn_k.bias", "blk.0.attn_v.bias"}},
        {"Qwen3ForCausalLM", "", 1 + 2 * 11 + 2, {"blk.1.attn_q_norm.weight", "blk.1.attn_k_norm.weight", "output.weight"}},
        {"LlamaForCausalLM", ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                             "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64}",
         1 + 2 * 9 + 2 + 1, {"rope_freqs.weight", "output.weight", "blk.1.ffn_up.weight"}},
    };
    char dir[256], err[ERR_MAX] = "", cfg[1024];
    scratch_dir(dir, sizeof dir);
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        snprintf(cfg, sizeof cfg,
                 "{\"architectures\": [\"%s\"], \"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                 " \"num_key_value_heads\": 2, \"head_dim\": 32, \"intermediate_size\": 96, \"vocab_size\": 300, "
                 "\"max_position_embeddings\": 256%s}",
                 cases[i].arch, cases[i].extra);
        write_text(dir, "config.json", cfg);
        WeightSource ws;
        ASSERT(wsrc_open(&ws, dir, LOAD_DUMMY, err) == SL_OK, "%s: %s", cases[i].arch, err);
        EXPECT(ws.n_tensors == cases[i].n_tensors, "%s: %d tensors", cases[i].arch, ws.n_tensors);
        for (int h = 0; h < 3; h++) EXPECT(wsrc_find(&ws, cases[i].has[h]), "%s: %s", cases[i].arch, cases[i].has[h]);
        const WTensor *qb = wsrc_find(&ws, "blk.0.attn_q.bias"), *qn = wsrc_find(&ws, "blk.0.attn_q_norm.weight"),
                      *rf = wsrc_find(&ws, "rope_freqs.weight"), *q = wsrc_find(&ws, "blk.0.attn_q.weight");
        EXPECT(q && q->ne[0] == 64 && q->ne[1] == 128); // head_dim 32 x 4 heads, wider than hidden_size
        if (qb) EXPECT(qb->type == QTYPE_F32 && qb->n_dims == 1 && qb->ne[0] == 128);
        if (qn) EXPECT(qn->type == QTYPE_F32 && qn->ne[0] == 32);
        if (rf) {
            float want[16];
            model_rope_freq_factors(&ws.cfg, want);
            EXPECT(rf->ne[0] == 16 && memcmp(rf->data, want, sizeof want) == 0);
        }
        wsrc_close(&ws);
    }
    scratch_remove(dir);
}

int main(void) {
    log_level = LOG_WARN;
    TEST_RUN(test_parse_valid);
    TEST_RUN(test_truncations);
    TEST_RUN(test_bad_headers);
    TEST_RUN(test_sharded);
    TEST_RUN(test_config_models);
    TEST_RUN(test_config_variants);
    TEST_RUN(test_tensor_names);
    TEST_RUN(test_rope_freq_factors);
    TEST_RUN(test_model_dir);
    TEST_RUN(test_load_format);
    TEST_RUN(test_gguf_source);
    TEST_RUN(test_dummy_tiny);
    TEST_RUN(test_dummy_variants);
    return test_summary();
}
