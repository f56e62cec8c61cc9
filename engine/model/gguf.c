// gguf.c: the GGUF v3 reader (see gguf.h).
//
// Layout (all little-endian): header {magic "GGUF", u32 version, u64 n_tensors, u64 n_kv};
// n_kv metadata pairs {string key, u32 type, value}; n_tensors tensor infos {string name,
// u32 n_dims, u64 ne[n_dims], u32 type, u64 offset}; padding to general.alignment; the data
// section, where each tensor's offset points. A string is {u64 len, len bytes}; an array value
// is {u32 elem type, u64 count, elements}.
//
// Every read goes through a Cursor that checks the bytes exist first; every count is compared
// with the bytes left before anything is allocated for it, so a hostile header cannot make us
// allocate more than a small multiple of the file's size.
#define _GNU_SOURCE
#include "engine/model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the reader assumes a little-endian host");

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
// The fewest bytes one metadata pair / tensor info can take: a key of length 0, the type and a
// one-byte value; a name of length 0, n_dims, one ne, the type and the offset.
#define GGUF_MIN_KV_BYTES (8 + 4 + 1)
#define GGUF_MIN_TENSOR_BYTES (8 + 4 + 8 + 4 + 8)
#define GGUF_SHOW_MAX 80 // longest key or tensor name quoted in a message

// ---- a bounds-checked reader over the file bytes

typedef struct {
    const uint8_t *p;
    size_t size, pos;
    const char *path;
    char *err;
    // what is being read, for messages: `what` alone, `what #index`, or `what 'name'`
    const char *what;
    uint64_t index;
    GGUFStr name;
} Cursor;

// A string from the file for a message: at most GGUF_SHOW_MAX bytes, escaped (common's
// str_show), so a hostile name can neither run long nor break the message's one line.
#define GGUF_SHOW_CAP STR_SHOW_CAP(GGUF_SHOW_MAX)
static const char *gguf_show(GGUFStr s, char *buf) { return str_show(s.ptr, (size_t)s.len, GGUF_SHOW_MAX, buf); }

static void cur_at(Cursor *c, const char *what, uint64_t index) {
    c->what = what;
    c->index = index;
    c->name = (GGUFStr){0};
}

static const char *cur_where(const Cursor *c, char *buf, size_t cap) {
    char nm[GGUF_SHOW_CAP];
    if (c->name.ptr) snprintf(buf, cap, "%s '%s'", c->what, gguf_show(c->name, nm));
    else if (c->index != UINT64_MAX) snprintf(buf, cap, "%s #%llu", c->what, (unsigned long long)c->index);
    else snprintf(buf, cap, "%s", c->what);
    return buf;
}

static size_t cur_left(const Cursor *c) { return c->size - c->pos; }

static int cur_take(Cursor *c, size_t n, const uint8_t **out) {
    if (n > cur_left(c)) {
        char where[GGUF_SHOW_CAP + 64];
        return seterr(c->err, "%s: file is truncated in %s (needs %zu bytes at offset %zu, file is %zu bytes)",
                      c->path, cur_where(c, where, sizeof where), n, c->pos, c->size);
    }
    *out = c->p + c->pos;
    c->pos += n;
    return SL_OK;
}

static int cur_u32(Cursor *c, uint32_t *v) {
    const uint8_t *b = NULL;
    if (cur_take(c, 4, &b) != SL_OK) return SL_ERR;
    memcpy(v, b, 4);
    return SL_OK;
}

static int cur_u64(Cursor *c, uint64_t *v) {
    const uint8_t *b = NULL;
    if (cur_take(c, 8, &b) != SL_OK) return SL_ERR;
    memcpy(v, b, 8);
    return SL_OK;
}

static int cur_str(Cursor *c, GGUFStr *s) {
    uint64_t len;
    if (cur_u64(c, &len) != SL_OK) return SL_ERR;
    if (len > cur_left(c)) {
        char where[GGUF_SHOW_CAP + 64];
        return seterr(c->err, "%s: bad string length in %s (%llu bytes at offset %zu, only %zu left in the file)",
                      c->path, cur_where(c, where, sizeof where), (unsigned long long)len, c->pos,
                      cur_left(c));
    }
    s->ptr = (const char *)c->p + c->pos;
    s->len = len;
    c->pos += (size_t)len;
    return SL_OK;
}

// ---- metadata values

// Bytes of one value of a fixed-size type; 0 for strings and arrays.
static size_t gguf_type_size(GGUFType t) {
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

const char *gguf_type_name(GGUFType t) {
    static const char *names[GGUF_TYPE_COUNT] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
        "bool", "string", "array", "uint64", "int64", "float64",
    };
    return (unsigned)t < GGUF_TYPE_COUNT ? names[t] : "unknown";
}

// Widens one fixed-size scalar at b into kv->v.
static void kv_set_scalar(GGUFKV *kv, const uint8_t *b) {
    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
    float f32;
    switch (kv->type) {
    case GGUF_TYPE_UINT8: memcpy(&u8, b, 1); kv->v.u64 = u8; break;
    case GGUF_TYPE_INT8: memcpy(&i8, b, 1); kv->v.i64 = i8; break;
    case GGUF_TYPE_UINT16: memcpy(&u16, b, 2); kv->v.u64 = u16; break;
    case GGUF_TYPE_INT16: memcpy(&i16, b, 2); kv->v.i64 = i16; break;
    case GGUF_TYPE_UINT32: memcpy(&u32, b, 4); kv->v.u64 = u32; break;
    case GGUF_TYPE_INT32: memcpy(&i32, b, 4); kv->v.i64 = i32; break;
    case GGUF_TYPE_FLOAT32: memcpy(&f32, b, 4); kv->v.f64 = f32; break;
    case GGUF_TYPE_BOOL: kv->v.b = b[0] != 0; break;
    case GGUF_TYPE_UINT64: memcpy(&kv->v.u64, b, 8); break;
    case GGUF_TYPE_INT64: memcpy(&kv->v.i64, b, 8); break;
    case GGUF_TYPE_FLOAT64: memcpy(&kv->v.f64, b, 8); break;
    default: DIE("not a scalar type %d", (int)kv->type);
    }
}

static int kv_read_array(Cursor *c, GGUFKV *kv) {
    char where[GGUF_SHOW_CAP + 64];
    uint32_t et;
    uint64_t n;
    if (cur_u32(c, &et) != SL_OK || cur_u64(c, &n) != SL_OK) return SL_ERR;
    if (et >= GGUF_TYPE_COUNT)
        return seterr(c->err, "%s: unknown array element type in %s (type id %u)", c->path,
                      cur_where(c, where, sizeof where), et);
    if (et == GGUF_TYPE_ARRAY)
        return seterr(c->err, "%s: nested arrays are not supported (%s is an array of arrays)",
                      c->path, cur_where(c, where, sizeof where));
    kv->arr_type = (GGUFType)et;
    kv->arr_len = n;
    // each element takes at least its size (8 bytes of length for a string): check before
    // allocating, so a huge count costs nothing
    size_t esize = et == GGUF_TYPE_STRING ? 8 : gguf_type_size((GGUFType)et);
    if (n > cur_left(c) / esize)
        return seterr(c->err, "%s: array too long for the file in %s (%llu %s elements, %zu bytes left)",
                      c->path, cur_where(c, where, sizeof where), (unsigned long long)n,
                      gguf_type_name((GGUFType)et), cur_left(c));
    if (et != GGUF_TYPE_STRING) {
        const uint8_t *b;
        if (cur_take(c, (size_t)n * esize, &b) != SL_OK) return SL_ERR;
        kv->arr_data = b;
        return SL_OK;
    }
    kv->arr_strs = xcalloc((size_t)n, sizeof(GGUFStr)); // freed by gguf_close, even on error
    for (uint64_t i = 0; i < n; i++)
        if (cur_str(c, &kv->arr_strs[i]) != SL_OK) return SL_ERR;
    return SL_OK;
}

static int kv_read(Cursor *c, GGUFKV *kv, uint64_t i) {
    char where[GGUF_SHOW_CAP + 64];
    cur_at(c, "metadata key", i);
    if (cur_str(c, &kv->key) != SL_OK) return SL_ERR;
    c->what = "metadata";
    c->name = kv->key;
    uint32_t t;
    if (cur_u32(c, &t) != SL_OK) return SL_ERR;
    if (t >= GGUF_TYPE_COUNT)
        return seterr(c->err, "%s: unknown metadata value type in %s (type id %u)", c->path,
                      cur_where(c, where, sizeof where), t);
    kv->type = (GGUFType)t;
    if (t == GGUF_TYPE_ARRAY) return kv_read_array(c, kv);
    if (t == GGUF_TYPE_STRING) return cur_str(c, &kv->v.str);
    const uint8_t *b;
    if (cur_take(c, gguf_type_size(kv->type), &b) != SL_OK) return SL_ERR;
    kv_set_scalar(kv, b);
    return SL_OK;
}

// ---- duplicate names: an open-addressing hash set over the strings already in g

static bool str_eq(GGUFStr a, GGUFStr b) {
    return a.len == b.len && memcmp(a.ptr, b.ptr, (size_t)a.len) == 0;
}

// n strings at base + i * stride (each a GGUFStr); returns true and sets *first, *second when
// two are equal.
static bool names_find_dup(const void *base, size_t stride, size_t n, size_t *first, size_t *second) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    size_t *slots = xcalloc(cap, sizeof(size_t)); // index + 1; 0 = empty
    bool dup = false;
    for (size_t i = 0; i < n && !dup; i++) {
        GGUFStr s = *(const GGUFStr *)((const char *)base + i * stride);
        for (size_t h = hash_fnv1a(s.ptr, (size_t)s.len) & (cap - 1);; h = (h + 1) & (cap - 1)) {
            if (!slots[h]) { slots[h] = i + 1; break; }
            GGUFStr o = *(const GGUFStr *)((const char *)base + (slots[h] - 1) * stride);
            if (str_eq(s, o)) { *first = slots[h] - 1; *second = i; dup = true; break; }
        }
    }
    free(slots);
    return dup;
}

// ---- tensors

static int tensor_info_read(Cursor *c, GGUFTensor *t, uint64_t i) {
    char where[GGUF_SHOW_CAP + 64];
    cur_at(c, "tensor info", i);
    if (cur_str(c, &t->name) != SL_OK) return SL_ERR;
    c->what = "tensor";
    c->name = t->name;
    if (cur_u32(c, &t->n_dims) != SL_OK) return SL_ERR;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return seterr(c->err, "%s: bad n_dims in %s (%u dimensions, 1 to %d supported)", c->path,
                      cur_where(c, where, sizeof where), t->n_dims, GGUF_MAX_DIMS);
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        if (cur_u64(c, &ne) != SL_OK) return SL_ERR;
        if (ne == 0 || ne > INT64_MAX)
            return seterr(c->err, "%s: bad dimension in %s (ne[%u] = %lld; each must be >= 1)", c->path,
                          cur_where(c, where, sizeof where), d, (long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    uint32_t type;
    if (cur_u32(c, &type) != SL_OK) return SL_ERR;
    if (!qtype_known((int)type))
        return seterr(c->err, "%s: unknown tensor type in %s (type id %u)", c->path,
                      cur_where(c, where, sizeof where), type);
    t->type = (QType)type;
    return cur_u64(c, &t->offset);
}

// Checks a tensor's shape against its type and its bytes against the file; sets nbytes, data.
static int tensor_check(const GGUF *g, GGUFTensor *t, const char *path, char *err) {
    char nm[GGUF_SHOW_CAP];
    gguf_show(t->name, nm);
    int64_t nel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        if (__builtin_mul_overflow(nel, t->ne[d], &nel))
            return seterr(err, "%s: tensor '%s' element count overflows int64 (ne [%lld, %lld, %lld, %lld])",
                          path, nm, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                          (long long)t->ne[3]);
    int block = qtype_block(t->type);
    if (t->ne[0] % block != 0)
        return seterr(err, "%s: tensor '%s' row is not a multiple of the block size (ne[0] = %lld, %s blocks hold %d)",
                      path, nm, (long long)t->ne[0], qtype_name(t->type), block);
    uint64_t nbytes;
    if (__builtin_mul_overflow((uint64_t)(nel / block), (uint64_t)qtype_block_bytes(t->type), &nbytes))
        return seterr(err, "%s: tensor '%s' byte size overflows (%lld %s elements)", path, nm,
                      (long long)nel, qtype_name(t->type));
    if (t->offset % g->alignment != 0)
        return seterr(err, "%s: tensor '%s' data offset is misaligned (offset %llu is not a multiple of %u)",
                      path, nm, (unsigned long long)t->offset, g->alignment);
    uint64_t start, end;
    bool ovf = __builtin_add_overflow((uint64_t)g->data_offset, t->offset, &start);
    ovf = ovf || __builtin_add_overflow(start, nbytes, &end);
    if (ovf)
        return seterr(err, "%s: tensor '%s' data [data-section offset %llu, %llu bytes] lies beyond the end of the file (%zu bytes)",
                      path, nm, (unsigned long long)t->offset, (unsigned long long)nbytes, g->size);
    if (end > g->size)
        return seterr(err, "%s: tensor '%s' data [offset %llu, %llu bytes] lies beyond the end of the file (%zu bytes)",
                      path, nm, (unsigned long long)start, (unsigned long long)nbytes, g->size);
    t->nbytes = (size_t)nbytes;
    t->data = g->base + start;
    return SL_OK;
}

// ---- the whole file

static int gguf_read_alignment(GGUF *g, const char *path, char *err) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const GGUFKV *kv = gguf_find(g, "general.alignment");
    if (!kv) return SL_OK;
    int64_t a;
    if (!gguf_get_int(g, "general.alignment", &a))
        return seterr(err, "%s: bad general.alignment (type %s, expected an integer)", path,
                      gguf_type_name(kv->type));
    if (a <= 0 || a > (1ll << 30) || (a & (a - 1)) != 0)
        return seterr(err, "%s: bad general.alignment (%lld; must be a power of two from 1 to 2^30)", path,
                      (long long)a);
    g->alignment = (uint32_t)a;
    return SL_OK;
}

static int gguf_read(GGUF *g, Cursor *c) {
    char where[GGUF_SHOW_CAP + 64];
    const char *path = c->path;
    char *err = c->err;

    // header
    cur_at(c, "the header", UINT64_MAX);
    const uint8_t *magic;
    if (cur_take(c, 4, &magic) != SL_OK) return SL_ERR;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0)
        return seterr(err, "%s: not a GGUF file (bad magic %02x %02x %02x %02x, expected \"GGUF\")",
                      path, magic[0], magic[1], magic[2], magic[3]);
    if (cur_u32(c, &g->version) != SL_OK) return SL_ERR;
    if (g->version != 2 && g->version != 3)
        return seterr(err, "%s: unsupported GGUF version %u (versions 2 and 3 are supported%s)", path,
                      g->version, g->version >= 0x10000 ? "; a big-endian file?" : "");
    if (cur_u64(c, &g->n_tensors) != SL_OK || cur_u64(c, &g->n_kv) != SL_OK) return SL_ERR;
    if (g->n_kv > cur_left(c) / GGUF_MIN_KV_BYTES)
        return seterr(err, "%s: absurd metadata count (%llu pairs cannot fit in the %zu bytes after the header; truncated or corrupt file)",
                      path, (unsigned long long)g->n_kv, cur_left(c));
    if (g->n_tensors > (cur_left(c) - g->n_kv * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_BYTES)
        return seterr(err, "%s: absurd tensor count (%llu tensor infos cannot fit in the %zu bytes after the header; truncated or corrupt file)",
                      path, (unsigned long long)g->n_tensors, cur_left(c));

    // metadata
    g->kv = xcalloc((size_t)g->n_kv, sizeof(GGUFKV));
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (kv_read(c, &g->kv[i], i) != SL_OK) return SL_ERR;
    size_t a, b;
    if (names_find_dup(g->kv, sizeof(GGUFKV), (size_t)g->n_kv, &a, &b)) {
        c->what = "metadata";
        c->name = g->kv[a].key;
        return seterr(err, "%s: duplicate metadata key (%s at #%zu and #%zu)", path,
                      cur_where(c, where, sizeof where), a, b);
    }
    if (gguf_read_alignment(g, path, err) != SL_OK) return SL_ERR;

    // tensor infos, then the data section at the next multiple of the alignment
    if (g->n_tensors > cur_left(c) / GGUF_MIN_TENSOR_BYTES)
        return seterr(err, "%s: absurd tensor count (%llu tensor infos cannot fit in the %zu bytes after the metadata; truncated or corrupt file)",
                      path, (unsigned long long)g->n_tensors, cur_left(c));
    g->tensors = xcalloc((size_t)g->n_tensors, sizeof(GGUFTensor));
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (tensor_info_read(c, &g->tensors[i], i) != SL_OK) return SL_ERR;
    if (names_find_dup(g->tensors, sizeof(GGUFTensor), (size_t)g->n_tensors, &a, &b)) {
        char nm[GGUF_SHOW_CAP];
        return seterr(err, "%s: duplicate tensor name '%s' (tensors #%zu and #%zu)", path,
                      gguf_show(g->tensors[a].name, nm), a, b);
    }
    g->data_offset = (c->pos + g->alignment - 1) / g->alignment * g->alignment;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (tensor_check(g, &g->tensors[i], path, err) != SL_OK) return SL_ERR;
    return SL_OK;
}

static int gguf_parse_named(GGUF *g, const void *buf, size_t size, const char *path, char *err) {
    memset(g, 0, sizeof *g);
    g->base = buf;
    g->size = size;
    Cursor c = {.p = buf, .size = size, .path = path, .err = err};
    if (gguf_read(g, &c) != SL_OK) {
        gguf_close(g);
        return SL_ERR;
    }
    return SL_OK;
}

int gguf_parse(GGUF *g, const void *buf, size_t size, char *err) {
    return gguf_parse_named(g, buf, size, "<buffer>", err);
}

int gguf_open(GGUF *g, const char *path, char *err) {
    memset(g, 0, sizeof *g);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return seterr(err, "%s: cannot open (%s)", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return seterr(err, "%s: cannot stat (%s)", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return seterr(err, "%s: not a regular file (mode %o)", path, (unsigned)st.st_mode);
    }
    size_t size = (size_t)st.st_size;
    void *map = NULL;
    if (size > 0) {
        // read-only and private: the weights are never written, and the page cache shares them
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return seterr(err, "%s: cannot mmap %zu bytes (%s)", path, size, strerror(e));
        }
    }
    close(fd);
    if (gguf_parse_named(g, map, size, path, err) != SL_OK) {
        if (map) munmap(map, size);
        return SL_ERR;
    }
    g->map = map;
    return SL_OK;
}

void gguf_close(GGUF *g) {
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) free(g->kv[i].arr_strs);
    free(g->kv);
    free(g->tensors);
    if (g->map) munmap(g->map, g->size);
    memset(g, 0, sizeof *g);
}

// ---- lookups

bool gguf_str_eq(GGUFStr s, const char *cstr) {
    size_t n = strlen(cstr);
    return s.len == n && memcmp(s.ptr, cstr, n) == 0;
}

char *gguf_str_dup(GGUFStr s) { return xstrndup(s.ptr ? s.ptr : "", (size_t)s.len); }

const GGUFKV *gguf_find(const GGUF *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (gguf_str_eq(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const GGUFTensor *gguf_tensor(const GGUF *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (gguf_str_eq(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

bool gguf_get_int(const GGUF *g, const char *key, int64_t *out) {
    const GGUFKV *kv = gguf_find(g, key);
    if (!kv) return false;
    switch (kv->type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_UINT16: case GGUF_TYPE_UINT32: case GGUF_TYPE_UINT64:
        if (kv->v.u64 > INT64_MAX) return false;
        *out = (int64_t)kv->v.u64;
        return true;
    case GGUF_TYPE_INT8: case GGUF_TYPE_INT16: case GGUF_TYPE_INT32: case GGUF_TYPE_INT64:
        *out = kv->v.i64;
        return true;
    default:
        return false;
    }
}

bool gguf_get_float(const GGUF *g, const char *key, double *out) {
    const GGUFKV *kv = gguf_find(g, key);
    if (!kv || (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)) return false;
    *out = kv->v.f64;
    return true;
}

bool gguf_get_bool(const GGUF *g, const char *key, bool *out) {
    const GGUFKV *kv = gguf_find(g, key);
    if (!kv || kv->type != GGUF_TYPE_BOOL) return false;
    *out = kv->v.b;
    return true;
}

bool gguf_get_str(const GGUF *g, const char *key, GGUFStr *out) {
    const GGUFKV *kv = gguf_find(g, key);
    if (!kv || kv->type != GGUF_TYPE_STRING) return false;
    *out = kv->v.str;
    return true;
}

const GGUFKV *gguf_get_arr(const GGUF *g, const char *key, GGUFType elem_type) {
    const GGUFKV *kv = gguf_find(g, key);
    if (!kv || kv->type != GGUF_TYPE_ARRAY || kv->arr_type != elem_type) return NULL;
    return kv;
}
