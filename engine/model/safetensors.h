// safetensors.h: a reader for Hugging Face's safetensors format over read-only mmaps.
//
// A file is: u64 little-endian N; N bytes of JSON {"name": {"dtype": "BF16", "shape": [out, in],
// "data_offsets": [begin, end]}, ..., "__metadata__": {...}} (optionally padded with spaces);
// then the data, where each tensor's bytes are [begin, end) relative to the end of the header.
// A sharded checkpoint adds model.safetensors.index.json: {"weight_map": {"name": "file", ...}}.
//
// Everything is checked against the file's size before use, so a truncated, corrupt or hostile
// file gives SL_ERR and a one-line message naming the file (and the tensor), never a crash:
// the header length, the JSON, every dtype (BF16, F16, F32 accepted; anything else is an error
// naming the tensor and its dtype), shape (1-4 dims) * element size == end - begin, offsets
// inside the data and not overlapping another tensor's, no duplicate names (within a file or
// across shards), and for shards that each file named by the index exists and holds exactly the
// tensors the index says it does.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "kernels/quant.h"

#define ST_MAX_DIMS 4

typedef struct {
    char *name;                  // NUL-terminated (owned)
    QType type;                  // QTYPE_F32, QTYPE_F16 or QTYPE_BF16
    int n_dims;                  // 1..ST_MAX_DIMS
    int64_t shape[ST_MAX_DIMS];  // row-major (PyTorch) order: shape[n_dims - 1] is contiguous
    const void *data;            // into the file's mapping
    size_t nbytes;
    int file;                    // which of SafeTensors.files holds it
} STensor;

typedef struct {
    char *path;                  // as opened (owned)
    const uint8_t *base;         // the whole file
    size_t size;
    void *map;                   // mmap base (NULL for a caller's buffer)
} STFile;

typedef struct {
    STensor *tensors;            // [n_tensors], in file order (shards in index order)
    int n_tensors;
    STFile *files;               // [n_files]
    int n_files;
    size_t bytes;                // sum of the tensors' nbytes
} SafeTensors;

// One file (mmap'd). SL_ERR + err "<path>: <problem>"; *st is then zeroed.
int safetensors_open(SafeTensors *st, const char *path, char *err);
// The same over a buffer the caller keeps alive (tests craft files in memory); messages name it.
int safetensors_parse(SafeTensors *st, const void *buf, size_t size, const char *name, char *err);
// A model directory: model.safetensors.index.json and its shards when the index exists, else
// model.safetensors, else every *.safetensors in the directory (name order).
int safetensors_open_dir(SafeTensors *st, const char *dir, char *err);
void safetensors_close(SafeTensors *st);
const STensor *safetensors_find(const SafeTensors *st, const char *name); // NULL when absent
