// gguf.h: a GGUF v3 reader over a read-only mmap (or a caller's buffer, for tests).
//
// Every length, count and offset in the file is checked against the bytes that exist before
// it is used: a truncated, corrupt or hostile file makes gguf_open() return SL_ERR with a
// one-line message naming the problem, never a crash or a read out of bounds.
// Strings point into the mapping and are NOT NUL-terminated (GGUFStr has the length).
//
// What a file must satisfy (beyond being well-formed): version 2 or 3; no duplicate metadata
// keys or tensor names; no arrays of arrays; general.alignment, when present, an integer that
// is a nonzero power of two; each tensor 1-4 dimensions, every ne >= 1, the element count within
// int64, ne[0] a multiple of its type's block size, a type id quant.h knows (known is not the
// same as dequantizable: the model loader decides which types it accepts), its data offset a
// multiple of the alignment and its bytes inside the file. Tensors may be in any order.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/quant.h"

typedef enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} GGUFType;

typedef struct {
    const char *ptr; // into the mapping; not NUL-terminated
    uint64_t len;
} GGUFStr;

typedef struct {
    GGUFStr key;
    GGUFType type;          // value type; GGUF_TYPE_ARRAY for arrays
    // scalars: the value, widened
    union {
        uint64_t u64;
        int64_t i64;
        double f64;
        bool b;
        GGUFStr str;
    } v;
    // arrays: element type, count, and where the elements start in the mapping
    GGUFType arr_type;
    uint64_t arr_len;
    const uint8_t *arr_data;  // numeric arrays: arr_len packed little-endian elements
    GGUFStr *arr_strs;        // string arrays: arr_len strings (owned by the GGUF)
} GGUFKV;

#define GGUF_MAX_DIMS 4

typedef struct {
    GGUFStr name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; // ne[0] is the contiguous (row) dimension, as in ggml
    QType type;
    uint64_t offset;           // relative to the start of the data section
    const void *data;          // into the mapping
    size_t nbytes;
} GGUFTensor;

typedef struct {
    uint32_t version;
    uint64_t n_kv, n_tensors;
    GGUFKV *kv;
    GGUFTensor *tensors;
    uint32_t alignment;        // general.alignment, default 32
    const uint8_t *base;       // start of the file bytes
    size_t size;               // file size
    size_t data_offset;        // start of the tensor data section
    void *map;                 // mmap base when opened from a path (NULL for gguf_parse)
} GGUF;

// Opens (mmap, read-only, MAP_PRIVATE) and fully validates a file. On failure returns SL_ERR,
// fills err (ERR_MAX bytes) with "<path>: <problem> (<detail>)", frees whatever it allocated
// and leaves *g zeroed (gguf_close on it is a no-op).
int gguf_open(GGUF *g, const char *path, char *err);
// The same over a buffer the caller keeps alive (tests build crafted files in memory); messages
// name the file "<buffer>".
int gguf_parse(GGUF *g, const void *buf, size_t size, char *err);
void gguf_close(GGUF *g);

const GGUFKV *gguf_find(const GGUF *g, const char *key);
const GGUFTensor *gguf_tensor(const GGUF *g, const char *name);

// Typed getters: return true and set *out when the key exists with a compatible type
// (any integer type for ints, float32/float64 for floats); false otherwise.
bool gguf_get_int(const GGUF *g, const char *key, int64_t *out);
bool gguf_get_float(const GGUF *g, const char *key, double *out);
bool gguf_get_bool(const GGUF *g, const char *key, bool *out);
bool gguf_get_str(const GGUF *g, const char *key, GGUFStr *out);
// Arrays of the given element type; NULL when missing or of another type.
const GGUFKV *gguf_get_arr(const GGUF *g, const char *key, GGUFType elem_type);

bool gguf_str_eq(GGUFStr s, const char *cstr);
char *gguf_str_dup(GGUFStr s); // NUL-terminated copy, caller frees
const char *gguf_type_name(GGUFType t);
