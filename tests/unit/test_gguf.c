// test_gguf.c: the GGUF reader on the real default model, on a crafted valid file, on one
// crafted file per kind of damage (each must be rejected with a message naming it), and on
// every truncation and many byte flips of the valid file (none may crash or read out of
// bounds: run this under ASan).
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "engine/model/gguf.h"
#include "test.h"

// ---- the real default model

// The rows scripts/make-quant-data.py dequantized with gguf-py into quant/model_rows.f32
// (same list, same order).
static const struct { const char *tensor; int64_t row; } MODEL_ROWS[] = {
    {"token_embd.weight", 0},      {"token_embd.weight", 1234}, {"token_embd.weight", 49151},
    {"blk.0.attn_q.weight", 0},    {"blk.0.attn_q.weight", 575}, {"blk.29.ffn_down.weight", 575},
    {"output_norm.weight", 0},
};

static void expect_tensor(const GGUF *g, const char *name, QType type, int64_t ne0, int64_t ne1) {
    const GGUFTensor *t = gguf_tensor(g, name);
    EXPECT(t != NULL, "tensor %s", name);
    if (!t) return;
    EXPECT_EQ_INT(t->type, type);
    EXPECT_EQ_INT(t->ne[0], ne0);
    EXPECT_EQ_INT(t->ne[1], ne1);
    EXPECT_EQ_INT(t->nbytes, qtype_row_size(type, ne0) * (size_t)ne1);
    EXPECT_EQ_INT(((const uint8_t *)t->data - g->base) % g->alignment, 0);
}

static void test_model(void) {
    GGUF g;
    char err[ERR_MAX] = "";
    ASSERT(gguf_open(&g, TEST_MODEL_PATH, err) == SL_OK, "%s", err);
    EXPECT_EQ_INT(g.version, 3);
    EXPECT_EQ_INT(g.n_kv, 33);
    EXPECT_EQ_INT(g.n_tensors, 272);
    EXPECT_EQ_INT(g.alignment, 32);

    GGUFStr s = {0};
    EXPECT(gguf_get_str(&g, "general.architecture", &s) && gguf_str_eq(s, "llama"));
    EXPECT(gguf_get_str(&g, "tokenizer.ggml.pre", &s) && gguf_str_eq(s, "smollm"));
    static const struct { const char *key; int64_t want; } ints[] = {
        {"llama.block_count", 30},         {"llama.embedding_length", 576},
        {"llama.attention.head_count", 9}, {"llama.attention.head_count_kv", 3},
        {"llama.feed_forward_length", 1536}, {"llama.context_length", 8192},
        {"tokenizer.ggml.bos_token_id", 1}, {"tokenizer.ggml.eos_token_id", 2},
    };
    for (size_t i = 0; i < ARRAY_LEN(ints); i++) {
        int64_t v = -1;
        EXPECT(gguf_get_int(&g, ints[i].key, &v), "%s", ints[i].key);
        EXPECT_EQ_INT(v, ints[i].want);
    }
    double f = 0;
    EXPECT(gguf_get_float(&g, "llama.rope.freq_base", &f));
    EXPECT_NEAR(f, 100000.0, 0);
    EXPECT(gguf_get_float(&g, "llama.attention.layer_norm_rms_epsilon", &f));
    EXPECT_NEAR(f, 1e-5, 1e-12);
    bool b = true;
    EXPECT(gguf_get_bool(&g, "tokenizer.ggml.add_bos_token", &b) && !b);

    const GGUFKV *tokens = gguf_get_arr(&g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING);
    EXPECT(tokens != NULL);
    if (tokens) {
        EXPECT_EQ_INT(tokens->arr_len, 49152);
        EXPECT(gguf_str_eq(tokens->arr_strs[0], "<|endoftext|>"));
        EXPECT(gguf_str_eq(tokens->arr_strs[1], "<|im_start|>"));
    }
    const GGUFKV *merges = gguf_get_arr(&g, "tokenizer.ggml.merges", GGUF_TYPE_STRING);
    EXPECT(merges && merges->arr_len == 48900);
    if (merges) EXPECT(gguf_str_eq(merges->arr_strs[0], "\xc4\xa0 t"));
    const GGUFKV *types = gguf_get_arr(&g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32);
    EXPECT(types && types->arr_len == 49152);
    EXPECT(gguf_get_arr(&g, "tokenizer.ggml.tokens", GGUF_TYPE_INT32) == NULL);

    expect_tensor(&g, "token_embd.weight", QTYPE_Q8_0, 576, 49152);
    expect_tensor(&g, "blk.0.attn_q.weight", QTYPE_Q4_1, 576, 576);
    expect_tensor(&g, "blk.0.attn_k.weight", QTYPE_Q4_1, 576, 192);
    expect_tensor(&g, "blk.29.ffn_down.weight", QTYPE_Q4_1, 1536, 576);
    expect_tensor(&g, "output_norm.weight", QTYPE_F32, 576, 1);
    EXPECT(gguf_tensor(&g, "output.weight") == NULL); // tied embeddings
    for (uint64_t i = 0; i < g.n_tensors; i++)
        EXPECT(qtype_dequant_supported(g.tensors[i].type), "tensor #%llu", (unsigned long long)i);

    // rows dequantized here and by gguf-py agree bit for bit, and are finite
    char path[512];
    snprintf(path, sizeof path, "%s/quant/model_rows.f32", TEST_DATA_DIR);
    size_t len = 0;
    float *want = (float *)file_read_all(path, &len, err);
    EXPECT(want != NULL, "%s", err);
    size_t at = 0;
    float row[1536];
    for (size_t i = 0; want && i < ARRAY_LEN(MODEL_ROWS); i++) {
        const GGUFTensor *t = gguf_tensor(&g, MODEL_ROWS[i].tensor);
        if (!t) continue;
        size_t rs = qtype_row_size(t->type, t->ne[0]);
        dequant_row(t->type, (const uint8_t *)t->data + rs * (size_t)MODEL_ROWS[i].row, row, t->ne[0]);
        int nonfinite = 0, differ = 0;
        for (int64_t j = 0; j < t->ne[0]; j++) {
            nonfinite += !isfinite(row[j]);
            differ += at + (size_t)j >= len / 4 || memcmp(&row[j], &want[at + (size_t)j], 4) != 0;
        }
        EXPECT_EQ_INT(nonfinite, 0);
        EXPECT(differ == 0, "%s row %lld: %d values differ from gguf-py", MODEL_ROWS[i].tensor,
               (long long)MODEL_ROWS[i].row, differ);
        at += (size_t)t->ne[0];
    }
    EXPECT_EQ_INT(at * 4, len);
    free(want);
    gguf_close(&g);
    EXPECT(g.kv == NULL && g.tensors == NULL && g.map == NULL);
}

// Prefixes of the real file's header and metadata (1.7 MB of strings) are rejected cleanly too.
static void test_model_truncations(void) {
    GGUF g;
    char err[ERR_MAX] = "";
    ASSERT(gguf_open(&g, TEST_MODEL_PATH, err) == SL_OK, "%s", err);
    size_t end = g.data_offset, step = end / 61 + 1;
    for (size_t len = 0; len < end; len += step + len % 7) {
        uint8_t *copy = xmalloc(len); // exactly len bytes, so any over-read trips ASan
        memcpy(copy, g.base, len);
        GGUF h;
        char e[ERR_MAX] = "";
        EXPECT(gguf_parse(&h, copy, len, e) == SL_ERR, "prefix of %zu bytes accepted", len);
        EXPECT(h.kv == NULL && e[0] != 0 && strchr(e, '\n') == NULL, "prefix of %zu: '%s'", len, e);
        free(copy);
    }
    gguf_close(&g);
}

// ---- a small GGUF writer for crafted files

typedef struct {
    uint8_t *p;
    size_t len, cap;
} Buf;

static void buf_raw(Buf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void buf_u8(Buf *b, uint8_t v) { buf_raw(b, &v, 1); }
static void buf_u32(Buf *b, uint32_t v) { buf_raw(b, &v, 4); }
static void buf_u64(Buf *b, uint64_t v) { buf_raw(b, &v, 8); }
static void buf_str(Buf *b, const char *s) { buf_u64(b, strlen(s)); buf_raw(b, s, strlen(s)); }
static void buf_zeros(Buf *b, size_t n) { while (n--) buf_u8(b, 0); }

#define AUTO UINT64_MAX // tensor offset: packed after the previous tensor

typedef struct {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[5];
    uint32_t type;
    uint64_t offset;
} TSpec;

// What to write; a zeroed Craft (plus craft_default's tensors) is the valid file.
typedef struct {
    const char *magic;
    uint32_t version;
    bool set_n_kv, set_n_tensors;
    uint64_t n_kv, n_tensors;      // header counts when set_*
    bool set_align;
    uint64_t align;                // general.alignment when set_align (written as uint64)
    bool align_as_string;
    uint64_t key1_len;             // nonzero: the length field of the second key
    uint32_t extra_kv_type;        // nonzero: a last kv "x.extra" of this value type
    bool duplicate_key;
    TSpec t[4];
    int n_t;
    // written by craft(): where things start, to cut files at chosen places
    size_t info_start, data_start;
} Craft;

static Craft craft_default(void) {
    Craft c = {0};
    c.t[0] = (TSpec){"tok.weight", 2, {64, 2}, QTYPE_Q8_0, AUTO};
    c.t[1] = (TSpec){"norm.weight", 1, {8}, QTYPE_F32, AUTO};
    c.t[2] = (TSpec){"blk.0.q.weight", 2, {32, 3}, QTYPE_Q4_1, AUTO};
    c.n_t = 3;
    return c;
}

static void kv_head(Buf *b, const char *key, uint32_t type) { buf_str(b, key); buf_u32(b, type); }

// Writes the file c describes into b (b->len = 0 first). Tensors with an AUTO offset get data:
// Q8_0 rows d = 1, q = j - 16 + row; F32 values 0.5 * i; anything else bytes with fp16 scales
// of 1. The last tensor's bytes end the file, so every shorter prefix is damaged.
static void craft(Buf *b, Craft *c) {
    b->len = 0;
    buf_raw(b, c->magic ? c->magic : "GGUF", 4);
    buf_u32(b, c->version ? c->version : 3);
    uint64_t n_kv = 15 + (c->extra_kv_type != 0) + c->duplicate_key;
    buf_u64(b, c->set_n_tensors ? c->n_tensors : (uint64_t)c->n_t);
    buf_u64(b, c->set_n_kv ? c->n_kv : n_kv);

    kv_head(b, "llama.block_count", GGUF_TYPE_UINT32); buf_u32(b, 2);
    if (c->key1_len) {
        buf_u64(b, c->key1_len); buf_raw(b, "general.architecture", 20);
    } else {
        buf_str(b, "general.architecture");
    }
    buf_u32(b, GGUF_TYPE_STRING); buf_str(b, "llama");
    if (c->align_as_string) {
        kv_head(b, "general.alignment", GGUF_TYPE_STRING); buf_str(b, "32");
    } else {
        kv_head(b, "general.alignment", GGUF_TYPE_UINT64); buf_u64(b, c->set_align ? c->align : 32);
    }
    kv_head(b, "t.u8", GGUF_TYPE_UINT8); buf_u8(b, 200);
    kv_head(b, "t.i8", GGUF_TYPE_INT8); buf_u8(b, (uint8_t)-5);
    kv_head(b, "t.u16", GGUF_TYPE_UINT16); buf_raw(b, &(uint16_t){60000}, 2);
    kv_head(b, "t.i16", GGUF_TYPE_INT16); buf_raw(b, &(int16_t){-30000}, 2);
    kv_head(b, "t.i32", GGUF_TYPE_INT32); buf_raw(b, &(int32_t){-2000000000}, 4);
    kv_head(b, "t.u64", GGUF_TYPE_UINT64); buf_u64(b, (1ull << 63) + 1);
    kv_head(b, "t.i64", GGUF_TYPE_INT64); buf_u64(b, (uint64_t)-(1ll << 40));
    kv_head(b, "t.f32", GGUF_TYPE_FLOAT32); buf_raw(b, &(float){1.5f}, 4);
    kv_head(b, "t.f64", GGUF_TYPE_FLOAT64); buf_raw(b, &(double){-2.25}, 8);
    kv_head(b, "t.bool", GGUF_TYPE_BOOL); buf_u8(b, 1);
    kv_head(b, "t.arr_i32", GGUF_TYPE_ARRAY); buf_u32(b, GGUF_TYPE_INT32); buf_u64(b, 3);
    buf_raw(b, (int32_t[]){1, -2, 3}, 12);
    kv_head(b, "t.arr_str", GGUF_TYPE_ARRAY); buf_u32(b, GGUF_TYPE_STRING); buf_u64(b, 3);
    buf_str(b, "a"); buf_str(b, "bc"); buf_str(b, "");
    if (c->duplicate_key) { kv_head(b, "t.u8", GGUF_TYPE_UINT8); buf_u8(b, 1); }
    if (c->extra_kv_type == GGUF_TYPE_ARRAY) { // an array of arrays of uint8
        kv_head(b, "x.extra", GGUF_TYPE_ARRAY); buf_u32(b, GGUF_TYPE_ARRAY); buf_u64(b, 1);
        buf_u32(b, GGUF_TYPE_UINT8); buf_u64(b, 1); buf_u8(b, 7);
    } else if (c->extra_kv_type) {
        kv_head(b, "x.extra", c->extra_kv_type); buf_u64(b, 0);
    }

    c->info_start = b->len;
    uint64_t next = 0, offs[4];
    for (int i = 0; i < c->n_t; i++) {
        const TSpec *t = &c->t[i];
        buf_str(b, t->name);
        buf_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims && d < 5; d++) buf_u64(b, t->ne[d]);
        buf_u32(b, t->type);
        offs[i] = t->offset;
        if (t->offset == AUTO) {
            offs[i] = next;
            bool sized = qtype_known((int)t->type) && t->ne[0] % (uint64_t)qtype_block((QType)t->type) == 0;
            size_t nbytes = sized ? qtype_row_size((QType)t->type, (int64_t)t->ne[0]) * (t->n_dims > 1 ? t->ne[1] : 1) : 64;
            next = (offs[i] + nbytes + 31) / 32 * 32;
        }
        buf_u64(b, offs[i]);
    }
    buf_zeros(b, (32 - b->len % 32) % 32);
    c->data_start = b->len;
    for (int i = 0; i < c->n_t; i++) {
        const TSpec *t = &c->t[i];
        if (t->offset != AUTO) continue;
        buf_zeros(b, c->data_start + offs[i] - b->len);
        int64_t rows = t->n_dims > 1 ? (int64_t)t->ne[1] : 1, n = (int64_t)t->ne[0];
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t j = 0; j < n; j++) {
                if (t->type == QTYPE_F32) {
                    buf_raw(b, &(float){0.5f * (float)(r * n + j)}, 4);
                } else if (t->type == QTYPE_Q8_0) {
                    if (j % 32 == 0) buf_raw(b, (uint8_t[]){0x00, 0x3c}, 2);
                    buf_u8(b, (uint8_t)(int8_t)(j % 32 - 16 + r));
                } else if (j % 32 == 0) { // Q4_1: d = 1, m = 1, nibbles 0..15
                    buf_raw(b, (uint8_t[]){0x00, 0x3c, 0x00, 0x3c}, 4);
                    for (int k = 0; k < 16; k++) buf_u8(b, (uint8_t)(k | k << 4));
                }
            }
        }
    }
}

// ---- the valid crafted file

static void test_crafted_valid(void) {
    Buf b = {0};
    Craft c = craft_default();
    craft(&b, &c);
    GGUF g;
    char err[ERR_MAX] = "";
    int rc = gguf_parse(&g, b.p, b.len, err);
    EXPECT_EQ_INT(rc, SL_OK);
    if (rc != SL_OK) { fprintf(stderr, "  %s\n", err); free(b.p); return; }
    EXPECT_EQ_INT(g.n_kv, 15);
    EXPECT_EQ_INT(g.n_tensors, 3);
    EXPECT_EQ_INT(g.data_offset, c.data_start);

    int64_t i = 0;
    double f = 0;
    bool bo = false;
    GGUFStr s = {0};
    EXPECT(gguf_get_int(&g, "llama.block_count", &i) && i == 2);
    EXPECT(gguf_get_str(&g, "general.architecture", &s) && gguf_str_eq(s, "llama"));
    EXPECT(!gguf_str_eq(s, "llam") && !gguf_str_eq(s, "llamas"));
    EXPECT(gguf_get_int(&g, "t.u8", &i) && i == 200);
    EXPECT(gguf_get_int(&g, "t.i8", &i) && i == -5);
    EXPECT(gguf_get_int(&g, "t.u16", &i) && i == 60000);
    EXPECT(gguf_get_int(&g, "t.i16", &i) && i == -30000);
    EXPECT(gguf_get_int(&g, "t.i32", &i) && i == -2000000000);
    EXPECT(gguf_get_int(&g, "t.i64", &i) && i == -(1ll << 40));
    EXPECT(!gguf_get_int(&g, "t.u64", &i));     // 2^63 + 1 does not fit
    EXPECT(gguf_find(&g, "t.u64") && gguf_find(&g, "t.u64")->v.u64 == (1ull << 63) + 1);
    EXPECT(gguf_get_float(&g, "t.f32", &f) && f == 1.5);
    EXPECT(gguf_get_float(&g, "t.f64", &f) && f == -2.25);
    EXPECT(gguf_get_bool(&g, "t.bool", &bo) && bo);
    // wrong types and missing keys
    EXPECT(!gguf_get_int(&g, "t.f32", &i));
    EXPECT(!gguf_get_float(&g, "t.i32", &f));
    EXPECT(!gguf_get_str(&g, "t.u8", &s));
    EXPECT(!gguf_get_bool(&g, "t.u8", &bo));
    EXPECT(!gguf_get_int(&g, "no.such.key", &i));
    EXPECT(gguf_find(&g, "t.u") == NULL);

    const GGUFKV *a = gguf_get_arr(&g, "t.arr_i32", GGUF_TYPE_INT32);
    EXPECT(a && a->arr_len == 3);
    if (a) {
        int32_t v[3];
        memcpy(v, a->arr_data, sizeof v);
        EXPECT(v[0] == 1 && v[1] == -2 && v[2] == 3);
    }
    EXPECT(gguf_get_arr(&g, "t.arr_i32", GGUF_TYPE_UINT32) == NULL);
    EXPECT(gguf_get_arr(&g, "t.i32", GGUF_TYPE_INT32) == NULL);
    a = gguf_get_arr(&g, "t.arr_str", GGUF_TYPE_STRING);
    EXPECT(a && a->arr_len == 3);
    if (a) {
        EXPECT(gguf_str_eq(a->arr_strs[0], "a") && gguf_str_eq(a->arr_strs[1], "bc"));
        EXPECT(gguf_str_eq(a->arr_strs[2], ""));
        char *dup = gguf_str_dup(a->arr_strs[1]);
        EXPECT_STR_EQ(dup, "bc");
        free(dup);
    }
    EXPECT_STR_EQ(gguf_type_name(GGUF_TYPE_FLOAT32), "float32");
    EXPECT_STR_EQ(gguf_type_name((GGUFType)99), "unknown");

    // tensors: shapes, sizes, data where the writer put it, values through dequant_row
    const GGUFTensor *t = gguf_tensor(&g, "tok.weight");
    EXPECT(t && t->type == QTYPE_Q8_0 && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 2 &&
           t->ne[2] == 1 && t->ne[3] == 1 && t->nbytes == 136 && t->offset == 0);
    if (t) {
        float row[64];
        dequant_row(t->type, (const uint8_t *)t->data + 68, row, 64); // row 1
        int bad = 0;
        for (int j = 0; j < 64; j++) bad += row[j] != (float)(j % 32 - 16 + 1);
        EXPECT_EQ_INT(bad, 0);
    }
    t = gguf_tensor(&g, "norm.weight");
    EXPECT(t && t->type == QTYPE_F32 && t->n_dims == 1 && t->nbytes == 32 && t->offset == 160);
    if (t) {
        EXPECT((const uint8_t *)t->data == b.p + c.data_start + 160);
        float v[8];
        dequant_row(QTYPE_F32, t->data, v, 8);
        EXPECT(v[0] == 0.0f && v[7] == 3.5f);
    }
    t = gguf_tensor(&g, "blk.0.q.weight");
    EXPECT(t && t->type == QTYPE_Q4_1 && t->nbytes == 60);
    if (t) EXPECT((const uint8_t *)t->data + t->nbytes == b.p + b.len, "the last tensor ends the file");
    EXPECT(gguf_tensor(&g, "blk.0.q") == NULL);
    gguf_close(&g);
    gguf_close(&g); // a second close is harmless
    free(b.p);
}

// ---- one crafted file per kind of damage

typedef struct {
    const char *what;
    void (*edit)(Craft *c);
    long cut;            // nonzero: keep only the first `cut` bytes (after the edit), counted
    int cut_from;        // from: 0 the start, 1 the start of the tensor infos (cut < 0)
    const char *expect;  // words the message must contain
} BadCase;

static void e_none(Craft *c) { (void)c; }
static void e_magic(Craft *c) { c->magic = "GGML"; }
static void e_version(Craft *c) { c->version = 1; }
static void e_version_be(Craft *c) { c->version = 0x03000000; }
static void e_n_kv(Craft *c) { c->set_n_kv = true; c->n_kv = 1ull << 60; }
static void e_n_tensors(Craft *c) { c->set_n_tensors = true; c->n_tensors = 1ull << 60; }
static void e_n_tensors_max(Craft *c) { c->set_n_tensors = true; c->n_tensors = UINT64_MAX; }
static void e_strlen(Craft *c) { c->key1_len = 1ull << 40; }
static void e_strlen_max(Craft *c) { c->key1_len = UINT64_MAX; }
static void e_value_type(Craft *c) { c->extra_kv_type = 13; }
static void e_nested(Craft *c) { c->extra_kv_type = GGUF_TYPE_ARRAY; }
static void e_dup_key(Craft *c) { c->duplicate_key = true; }
static void e_align(Craft *c) { c->set_align = true; c->align = 24; }
static void e_align0(Craft *c) { c->set_align = true; c->align = 0; }
static void e_align_str(Craft *c) { c->align_as_string = true; }
static void e_ttype(Craft *c) { c->t[1].type = 99; }
static void e_ttype_retired(Craft *c) { c->t[1].type = 4; }
static void e_ndims(Craft *c) { c->t[1].n_dims = 5; c->t[1].ne[1] = c->t[1].ne[2] = c->t[1].ne[3] = c->t[1].ne[4] = 1; }
static void e_ndims0(Craft *c) { c->t[1].n_dims = 0; }
static void e_beyond(Craft *c) { c->t[2].offset = 4096; }
static void e_beyond_wrap(Craft *c) { c->t[2].offset = UINT64_MAX - 31; }
static void e_misaligned(Craft *c) { c->t[2].offset = 4; }
static void e_row(Craft *c) { c->t[0].ne[0] = 48; c->t[0].offset = 0; }
static void e_dup_tensor(Craft *c) { c->t[2].name = "norm.weight"; }
static void e_overflow(Craft *c) { c->t[1] = (TSpec){"norm.weight", 3, {1ull << 32, 1ull << 32, 4}, QTYPE_F32, 160}; }
static void e_ne_zero(Craft *c) { c->t[1] = (TSpec){"norm.weight", 2, {8, 0}, QTYPE_F32, 160}; }
// a corrupted name: an escape sequence, a byte that is not UTF-8, a DEL
static void e_name_bytes(Craft *c) { c->t[1].name = "norm\x1b[2J\xff\x7f.weight"; c->t[1].type = 99; }
static void e_ne_negative(Craft *c) { c->t[1] = (TSpec){"norm.weight", 2, {8, (1ull << 63) + 1}, QTYPE_F32, 160}; }

static const BadCase BAD_CASES[] = {
    {"bad magic", e_magic, 0, 0, "not a GGUF file"},
    {"unsupported version", e_version, 0, 0, "unsupported GGUF version 1"},
    {"big-endian version", e_version_be, 0, 0, "big-endian"},
    {"truncated header", e_none, 10, 0, "truncated in the header"},
    {"truncated inside a kv", e_none, -3, 1, "truncated in metadata 't.arr_str'"},
    {"absurd kv count", e_n_kv, 0, 0, "absurd metadata count"},
    {"absurd tensor count", e_n_tensors, 0, 0, "absurd tensor count"},
    {"max tensor count", e_n_tensors_max, 0, 0, "absurd tensor count"},
    {"bad string length", e_strlen, 0, 0, "bad string length in metadata key #1"},
    {"max string length", e_strlen_max, 0, 0, "bad string length"},
    {"unknown value type", e_value_type, 0, 0, "unknown metadata value type in metadata 'x.extra' (type id 13)"},
    {"nested array", e_nested, 0, 0, "nested arrays are not supported"},
    {"duplicate key", e_dup_key, 0, 0, "duplicate metadata key (metadata 't.u8'"},
    {"alignment 24", e_align, 0, 0, "bad general.alignment (24"},
    {"alignment 0", e_align0, 0, 0, "bad general.alignment (0"},
    {"alignment string", e_align_str, 0, 0, "bad general.alignment (type string"},
    {"unknown tensor type", e_ttype, 0, 0, "unknown tensor type in tensor 'norm.weight' (type id 99)"},
    {"retired tensor type", e_ttype_retired, 0, 0, "type id 4"},
    {"n_dims too large", e_ndims, 0, 0, "bad n_dims in tensor 'norm.weight' (5 dimensions"},
    {"n_dims zero", e_ndims0, 0, 0, "bad n_dims"},
    {"offset beyond the file", e_beyond, 0, 0, "tensor 'blk.0.q.weight' data [offset"},
    {"offset wraps around", e_beyond_wrap, 0, 0, "lies beyond the end of the file"},
    {"misaligned offset", e_misaligned, 0, 0, "'blk.0.q.weight' data offset is misaligned (offset 4"},
    {"row not whole blocks", e_row, 0, 0, "row is not a multiple of the block size (ne[0] = 48, Q8_0"},
    {"duplicate tensor", e_dup_tensor, 0, 0, "duplicate tensor name 'norm.weight' (tensors #1 and #2)"},
    {"element count overflow", e_overflow, 0, 0, "element count overflows"},
    {"zero dimension", e_ne_zero, 0, 0, "bad dimension in tensor 'norm.weight' (ne[1] = 0"},
    {"negative dimension", e_ne_negative, 0, 0, "bad dimension"},
    {"name with raw bytes", e_name_bytes, 0, 0, "tensor 'norm\\x1b[2J\\xff\\x7f.weight' (type id 99)"},
};

// A failed parse leaves an empty GGUF, a one-line message, and nothing allocated (ASan's leak
// check sees the last part).
static void expect_rejected(const uint8_t *buf, size_t len, const char *what, const char *words) {
    uint8_t *copy = xmalloc(len); // exactly len bytes, so any over-read trips ASan
    memcpy(copy, buf, len);
    GGUF g;
    memset(&g, 0xab, sizeof g);
    char err[ERR_MAX] = "";
    int rc = gguf_parse(&g, copy, len, err);
    EXPECT(rc == SL_ERR, "%s: accepted", what);
    EXPECT(g.kv == NULL && g.tensors == NULL && g.n_kv == 0 && g.n_tensors == 0, "%s", what);
    EXPECT(strncmp(err, "<buffer>: ", 10) == 0 && strlen(err) > 12, "%s: message '%s'", what, err);
    // bytes from the file are escaped: the message is printable ASCII whatever the file holds
    for (const char *p = err; *p; p++) EXPECT(*p >= 0x20 && *p < 0x7f, "%s: raw byte %02x in the message", what, (unsigned char)*p);
    if (words) EXPECT(strstr(err, words) != NULL, "%s: message '%s' lacks '%s'", what, err, words);
    if (rc == SL_OK) gguf_close(&g);
    free(copy);
}

static void test_crafted_bad(void) {
    Buf b = {0};
    for (size_t i = 0; i < ARRAY_LEN(BAD_CASES); i++) {
        const BadCase *bc = &BAD_CASES[i];
        Craft c = craft_default();
        bc->edit(&c);
        craft(&b, &c);
        size_t len = b.len;
        if (bc->cut) len = (size_t)(bc->cut + (long)(bc->cut_from ? c.info_start : 0));
        expect_rejected(b.p, MIN(len, b.len), bc->what, bc->expect);
    }
    free(b.p);
}

// common's str_show, which every message quoting the file's bytes goes through
static void test_str_show(void) {
    char buf[STR_SHOW_CAP(8)];
    EXPECT_STR_EQ(str_show("llama", 5, 8, buf), "llama");
    EXPECT_STR_EQ(str_show("a\0b\n\x1b\x7f\xc3\xa9", 8, 8, buf), "a\\x00b\\x0a\\x1b\\x7f\\xc3\\xa9");
    EXPECT_STR_EQ(str_show("abcdefghij", 10, 8, buf), "abcdefgh...");
    EXPECT_STR_EQ(str_show("\xff\xff\xff\xff\xff\xff\xff\xff\xff", 9, 8, buf),
               "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff..."); // the longest: fills the buffer
    EXPECT_EQ_INT(strlen(buf) + 1, sizeof buf);
    EXPECT_STR_EQ(str_show("", 0, 8, buf), "");
}

// ---- every truncation and many byte flips of the valid file

static void test_crafted_truncations(void) {
    Buf b = {0};
    Craft c = craft_default();
    craft(&b, &c);
    for (size_t len = 0; len < b.len; len++) {
        char what[64];
        snprintf(what, sizeof what, "prefix of %zu bytes", len);
        expect_rejected(b.p, len, what, NULL);
    }
    free(b.p);
}

// Flipping bytes of the header, metadata and tensor infos must give either a valid parse or a
// clean rejection; what matters is that nothing crashes, over-reads or leaks.
static void test_crafted_flips(void) {
    Buf b = {0};
    Craft c = craft_default();
    craft(&b, &c);
    static const uint8_t masks[] = {0xff, 0x80, 0x01, 0x10};
    int accepted = 0, rejected = 0;
    for (size_t pos = 0; pos < c.data_start; pos++) {
        for (size_t m = 0; m < ARRAY_LEN(masks); m++) {
            uint8_t *copy = xmalloc(b.len);
            memcpy(copy, b.p, b.len);
            copy[pos] ^= masks[m];
            GGUF g;
            char err[ERR_MAX] = "";
            if (gguf_parse(&g, copy, b.len, err) == SL_OK) {
                accepted++;
                // whatever was accepted is consistent: every tensor lies inside the buffer
                for (uint64_t i = 0; i < g.n_tensors; i++) {
                    const uint8_t *d = g.tensors[i].data;
                    EXPECT(d >= copy && d + g.tensors[i].nbytes <= copy + b.len, "flip at %zu", pos);
                }
                gguf_close(&g);
            } else {
                rejected++;
                EXPECT(err[0] && strchr(err, '\n') == NULL, "flip at %zu: '%s'", pos, err);
                for (const char *p = err; *p; p++) EXPECT(*p >= 0x20 && *p < 0x7f, "flip at %zu: raw byte", pos);
            }
            free(copy);
        }
    }
    EXPECT(rejected > 0 && accepted > 0, "%d accepted, %d rejected", accepted, rejected);
    free(b.p);
}

// ---- gguf_open on files

static void test_open_files(void) {
    char dir[] = "/tmp/test_gguf.XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    char path[256], err[ERR_MAX] = "";
    GGUF g;

    Buf b = {0};
    Craft c = craft_default();
    craft(&b, &c);
    snprintf(path, sizeof path, "%s/ok.gguf", dir);
    FILE *f = fopen(path, "wb");
    ASSERT(f && fwrite(b.p, 1, b.len, f) == b.len);
    fclose(f);
    EXPECT_EQ_INT(gguf_open(&g, path, err), SL_OK);
    EXPECT(g.map != NULL && g.size == b.len);
    const GGUFTensor *t = gguf_tensor(&g, "norm.weight");
    if (t) EXPECT(memcmp(t->data, b.p + c.data_start + 160, 32) == 0);
    gguf_close(&g);

    // a damaged file: the message starts with its path
    c = craft_default();
    e_beyond(&c);
    craft(&b, &c);
    snprintf(path, sizeof path, "%s/bad.gguf", dir);
    f = fopen(path, "wb");
    ASSERT(f && fwrite(b.p, 1, b.len, f) == b.len);
    fclose(f);
    EXPECT_EQ_INT(gguf_open(&g, path, err), SL_ERR);
    EXPECT(strncmp(err, path, strlen(path)) == 0 && strstr(err, "beyond the end of the file"), "%s", err);
    EXPECT(g.map == NULL && g.kv == NULL);
    unlink(path);

    snprintf(path, sizeof path, "%s/empty.gguf", dir);
    f = fopen(path, "wb");
    ASSERT(f);
    fclose(f);
    EXPECT_EQ_INT(gguf_open(&g, path, err), SL_ERR);
    EXPECT(strstr(err, "truncated in the header") != NULL, "%s", err);
    unlink(path);

    snprintf(path, sizeof path, "%s/missing.gguf", dir);
    EXPECT_EQ_INT(gguf_open(&g, path, err), SL_ERR);
    EXPECT(strstr(err, "cannot open") != NULL, "%s", err);
    EXPECT_EQ_INT(gguf_open(&g, dir, err), SL_ERR);
    EXPECT(strstr(err, "not a regular file") != NULL, "%s", err);

    snprintf(path, sizeof path, "%s/ok.gguf", dir);
    unlink(path);
    rmdir(dir);
    free(b.p);
}

int main(void) {
    TEST_RUN(test_model);
    TEST_RUN(test_model_truncations);
    TEST_RUN(test_crafted_valid);
    TEST_RUN(test_crafted_bad);
    TEST_RUN(test_str_show);
    TEST_RUN(test_crafted_truncations);
    TEST_RUN(test_crafted_flips);
    TEST_RUN(test_open_files);
    return test_summary();
}
