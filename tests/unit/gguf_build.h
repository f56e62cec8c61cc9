// gguf_build.h: a small GGUF v3 writer for tests that build model files (test_model.c's crafted
// files, model_ref.h's small random models): a growable byte buffer, the header with metadata of
// three kinds, and tensor infos. The tensor data and its layout are the caller's.
// (test_gguf.c crafts hostile files byte by byte and keeps its own writer.)
#pragma once

#include <stdint.h>
#include <string.h>

#include "common/common.h"
#include "engine/model/gguf.h"

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} Buf;

static void buf_put(Buf *b, const void *p, size_t n) {
    if (n == 0) return;
    if (b->len + n > b->cap) {
        b->cap = MAX(b->cap * 2, b->len + n + 4096);
        b->buf = xrealloc(b->buf, b->cap);
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}
static void buf_u32(Buf *b, uint32_t v) { buf_put(b, &v, 4); }
static void buf_u64(Buf *b, uint64_t v) { buf_put(b, &v, 8); }
static void buf_str(Buf *b, const char *s) {
    buf_u64(b, strlen(s));
    buf_put(b, s, strlen(s));
}
// Zeros up to the next multiple of 32 (GGUF's default alignment).
static void buf_pad(Buf *b) {
    static const uint8_t zeros[32];
    buf_put(b, zeros, (32 - b->len % 32) % 32);
}

// One metadata entry: kind 's' string, 'u' uint32, 'f' float32.
typedef struct {
    const char *key;
    char kind;
    const char *s;
    double num;
} Meta;

// The header: magic, version 3, the counts, then every metadata entry.
static void gguf_put_header(Buf *b, const Meta *meta, int n_meta, int n_tensors) {
    buf_put(b, "GGUF", 4);
    buf_u32(b, 3);
    buf_u64(b, (uint64_t)n_tensors);
    buf_u64(b, (uint64_t)n_meta);
    for (int i = 0; i < n_meta; i++) {
        buf_str(b, meta[i].key);
        if (meta[i].kind == 's') {
            buf_u32(b, GGUF_TYPE_STRING);
            buf_str(b, meta[i].s);
        } else if (meta[i].kind == 'u') {
            buf_u32(b, GGUF_TYPE_UINT32);
            buf_u32(b, (uint32_t)meta[i].num);
        } else {
            buf_u32(b, GGUF_TYPE_FLOAT32);
            float f = (float)meta[i].num;
            buf_put(b, &f, 4);
        }
    }
}

// One tensor info: name, dims (ne[0] contiguous), type, offset into the data section.
static void gguf_put_tensor_info(Buf *b, const char *name, int n_dims, const int64_t *ne, int type, uint64_t offset) {
    buf_str(b, name);
    buf_u32(b, (uint32_t)n_dims);
    for (int d = 0; d < n_dims; d++) buf_u64(b, (uint64_t)ne[d]);
    buf_u32(b, (uint32_t)type);
    buf_u64(b, offset);
}
