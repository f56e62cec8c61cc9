// safetensors.c: the safetensors reader (see safetensors.h).
//
// The header is JSON, so cJSON parses it from a NUL-terminated copy; everything it says is then
// checked against the bytes the file really has before any pointer into the data is made. The
// header length is capped (as the reference implementation does) so that a hostile length
// cannot make us copy and parse an arbitrary amount of the file.
#define _GNU_SOURCE
#include "engine/model/safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the reader assumes a little-endian host");

#define ST_HEADER_MAX (100u << 20) // safetensors' own limit on the JSON header
#define ST_SHOW_MAX 80             // longest name quoted in a message
#define ST_INT_MAX (1ull << 53)    // the largest integer a JSON double holds exactly
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

// A name from a file, for a message: at most ST_SHOW_MAX bytes, control bytes as '?', so that
// a hostile name can neither run long nor break the message's one line.
static const char *show(const char *s, char *buf, size_t cap) {
    size_t n = 0;
    for (; s[n] && n < ST_SHOW_MAX && n + 4 < cap; n++) {
        unsigned char ch = (unsigned char)s[n];
        buf[n] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    strcpy(buf + n, s[n] ? "..." : "");
    return buf;
}

static const struct {
    const char *name;
    QType type;      // QTYPE_COUNT: a real safetensors dtype that we do not load
    size_t size;
} DTYPES[] = {
    {"F32", QTYPE_F32, 4},  {"F16", QTYPE_F16, 2},  {"BF16", QTYPE_BF16, 2},
    {"F64", QTYPE_COUNT, 8}, {"I64", QTYPE_COUNT, 8}, {"I32", QTYPE_COUNT, 4},
    {"I16", QTYPE_COUNT, 2}, {"I8", QTYPE_COUNT, 1},  {"U8", QTYPE_COUNT, 1},
    {"U16", QTYPE_COUNT, 2}, {"U32", QTYPE_COUNT, 4}, {"U64", QTYPE_COUNT, 8},
    {"BOOL", QTYPE_COUNT, 1}, {"F8_E4M3", QTYPE_COUNT, 1}, {"F8_E5M2", QTYPE_COUNT, 1},
};

// A JSON number that is a whole number in [0, 2^53].
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0) || d > (double)ST_INT_MAX || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

// ---- one file

typedef struct {
    uint64_t begin, end;
    int tensor;
} Span;

static int span_cmp(const void *a, const void *b) {
    const Span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

// One header entry {"dtype", "shape", "data_offsets"} into t; span gets its offsets.
static int entry_read(STensor *t, Span *span, const cJSON *e, const STFile *f, uint64_t data_size, char *err) {
    char nm[ST_SHOW_MAX + 4];
    const char *name = show(t->name, nm, sizeof nm);
    if (!cJSON_IsObject(e)) return seterr(err, "%s: tensor '%s': header entry is not an object", f->path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dtype)) return seterr(err, "%s: tensor '%s': dtype is missing or not a string", f->path, name);
    size_t esize = 0;
    t->type = QTYPE_COUNT;
    for (size_t i = 0; i < ARRAY_LEN(DTYPES); i++)
        if (strcmp(dtype->valuestring, DTYPES[i].name) == 0) t->type = DTYPES[i].type, esize = DTYPES[i].size;
    if (t->type == QTYPE_COUNT) {
        char dt[ST_SHOW_MAX + 4];
        return seterr(err, "%s: tensor '%s' has %s dtype '%s' (supported: BF16, F16, F32)", f->path, name,
                      esize ? "an unsupported" : "an unknown", show(dtype->valuestring, dt, sizeof dt));
    }
    if (!cJSON_IsArray(shape)) return seterr(err, "%s: tensor '%s': shape is missing or not an array", f->path, name);
    int nd = cJSON_GetArraySize(shape);
    if (nd < 1 || nd > ST_MAX_DIMS)
        return seterr(err, "%s: tensor '%s' has %d dimensions (1 to %d supported)", f->path, name, nd, ST_MAX_DIMS);
    t->n_dims = nd;
    uint64_t n_elem = 1;
    for (int d = 0; d < nd; d++) {
        uint64_t v;
        if (!json_uint(cJSON_GetArrayItem(shape, d), &v) || v > INT64_MAX)
            return seterr(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", f->path, name, d);
        if (__builtin_mul_overflow(n_elem, v, &n_elem) || n_elem > ST_INT_MAX)
            return seterr(err, "%s: tensor '%s': shape has too many elements", f->path, name);
        t->shape[d] = (int64_t)v;
    }
    for (int d = nd; d < ST_MAX_DIMS; d++) t->shape[d] = 1;
    uint64_t b, en;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(cJSON_GetArrayItem(offs, 0), &b) ||
        !json_uint(cJSON_GetArrayItem(offs, 1), &en) || b > en)
        return seterr(err, "%s: tensor '%s': data_offsets is not [begin, end] with 0 <= begin <= end", f->path, name);
    if (en > data_size)
        return seterr(err, "%s: tensor '%s': data_offsets [%llu, %llu] run past the data (%llu bytes; truncated file?)",
                      f->path, name, (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_size);
    if (n_elem * esize != en - b) // n_elem <= 2^53 and esize <= 8: no overflow
        return seterr(err, "%s: tensor '%s': %llu elements of %s need %llu bytes, data_offsets give %llu", f->path,
                      name, (unsigned long long)n_elem, dtype->valuestring, (unsigned long long)(n_elem * esize),
                      (unsigned long long)(en - b));
    t->nbytes = (size_t)(en - b);
    *span = (Span){.begin = b, .end = en};
    return SL_OK;
}

// Parses file fi's header and appends its tensors to st.
static int file_read(SafeTensors *st, int fi, char *err) {
    const STFile *f = &st->files[fi];
    if (f->size < 8)
        return seterr(err, "%s: file is truncated (%zu bytes; a safetensors file starts with an 8-byte header length)",
                      f->path, f->size);
    uint64_t n;
    memcpy(&n, f->base, 8);
    if (n < 2 || n > f->size - 8 || n > ST_HEADER_MAX)
        return seterr(err, "%s: bad header length %llu (file is %zu bytes, limit %u)", f->path, (unsigned long long)n,
                      f->size, ST_HEADER_MAX);
    char *text = xmalloc((size_t)n + 1);
    memcpy(text, f->base + 8, (size_t)n);
    text[n] = 0;
    int rc = SL_ERR;
    Span *spans = NULL;
    cJSON *root = NULL;
    if (strlen(text) != n) {
        seterr(err, "%s: header contains a NUL byte (at byte %zu)", f->path, strlen(text));
        goto done;
    }
    const char *end = NULL;
    root = cJSON_ParseWithOpts(text, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t pos = at && at >= text && at <= text + n ? (size_t)(at - text) : 0;
        seterr(err, "%s: header is not valid JSON (near byte %zu of %llu)", f->path, pos, (unsigned long long)n);
        goto done;
    }
    for (const char *p = end; *p; p++) // the writer may pad the header with spaces
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            seterr(err, "%s: header has bytes after its JSON object (at byte %zu)", f->path, (size_t)(p - text));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        seterr(err, "%s: header is not a JSON object", f->path);
        goto done;
    }
    int count = cJSON_GetArraySize(root);
    st->tensors = xrealloc(st->tensors, ((size_t)st->n_tensors + count + 1) * sizeof(STensor));
    spans = xmalloc(((size_t)count + 1) * sizeof(Span));
    int n_spans = 0;
    uint64_t data_start = 8 + n, data_size = f->size - data_start;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                seterr(err, "%s: __metadata__ is not an object", f->path);
                goto done;
            }
            continue;
        }
        STensor *t = &st->tensors[st->n_tensors];
        *t = (STensor){.name = xstrdup(e->string), .file = fi};
        st->n_tensors++; // counted now, so that safetensors_close frees the name on failure
        if (!t->name[0]) {
            seterr(err, "%s: a tensor has an empty name", f->path);
            goto done;
        }
        if (entry_read(t, &spans[n_spans], e, f, data_size, err) != SL_OK) goto done;
        spans[n_spans++].tensor = st->n_tensors - 1;
        t->data = f->base + data_start + spans[n_spans - 1].begin;
        st->bytes += t->nbytes;
    }
    // No two tensors may share bytes: sorted by begin, each starts at or after the previous end.
    // (Empty tensors own no bytes; `last` is the non-empty span that reaches furthest so far.)
    qsort(spans, n_spans, sizeof *spans, span_cmp);
    const Span *last = NULL;
    for (int i = 0; i < n_spans; i++) {
        if (spans[i].begin == spans[i].end) continue;
        if (last && spans[i].begin < last->end) {
            char a[ST_SHOW_MAX + 4], b[ST_SHOW_MAX + 4];
            seterr(err, "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", f->path,
                   show(st->tensors[last->tensor].name, a, sizeof a), (unsigned long long)last->begin,
                   (unsigned long long)last->end, show(st->tensors[spans[i].tensor].name, b, sizeof b),
                   (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end);
            goto done;
        }
        if (!last || spans[i].end > last->end) last = &spans[i];
    }
    rc = SL_OK;
done:
    cJSON_Delete(root);
    free(spans);
    free(text);
    return rc;
}

static STFile *file_add(SafeTensors *st, const char *path) {
    st->files = xrealloc(st->files, ((size_t)st->n_files + 1) * sizeof(STFile));
    STFile *f = &st->files[st->n_files++];
    *f = (STFile){.path = xstrdup(path)};
    return f;
}

static int file_map(STFile *f, char *err) {
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return seterr(err, "%s: cannot open (%s)", f->path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return seterr(err, "%s: not a regular file", f->path);
    }
    f->size = (size_t)sb.st_size;
    if (f->size > 0) {
        // read-only and private: the weights are never written, and the page cache shares them
        f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            int e = errno;
            f->map = NULL;
            close(fd);
            return seterr(err, "%s: cannot mmap %zu bytes (%s)", f->path, f->size, strerror(e));
        }
    }
    close(fd);
    f->base = f->map;
    return SL_OK;
}

static int name_idx_cmp(const void *a, const void *b, void *arg) {
    const STensor *t = arg;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

// No tensor name twice, within a file or across shards.
static int check_unique(const SafeTensors *st, char *err) {
    if (st->n_tensors < 2) return SL_OK;
    int *idx = xmalloc((size_t)st->n_tensors * sizeof(int));
    for (int i = 0; i < st->n_tensors; i++) idx[i] = i;
    qsort_r(idx, st->n_tensors, sizeof(int), name_idx_cmp, st->tensors);
    int rc = SL_OK;
    for (int i = 1; i < st->n_tensors && rc == SL_OK; i++) {
        const STensor *a = &st->tensors[idx[i - 1]], *b = &st->tensors[idx[i]];
        if (strcmp(a->name, b->name) != 0) continue;
        char nm[ST_SHOW_MAX + 4];
        if (a->file == b->file)
            rc = seterr(err, "%s: tensor '%s' appears twice", st->files[a->file].path, show(a->name, nm, sizeof nm));
        else
            rc = seterr(err, "%s: tensor '%s' is also in %s", st->files[b->file].path, show(a->name, nm, sizeof nm),
                        st->files[a->file].path);
    }
    free(idx);
    return rc;
}

int safetensors_parse(SafeTensors *st, const void *buf, size_t size, const char *name, char *err) {
    memset(st, 0, sizeof *st);
    STFile *f = file_add(st, name);
    f->base = buf;
    f->size = size;
    if (file_read(st, 0, err) != SL_OK || check_unique(st, err) != SL_OK) {
        safetensors_close(st);
        return SL_ERR;
    }
    return SL_OK;
}

int safetensors_open(SafeTensors *st, const char *path, char *err) {
    memset(st, 0, sizeof *st);
    if (file_map(file_add(st, path), err) != SL_OK || file_read(st, 0, err) != SL_OK ||
        check_unique(st, err) != SL_OK) {
        safetensors_close(st);
        return SL_ERR;
    }
    return SL_OK;
}

void safetensors_close(SafeTensors *st) {
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].map) munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    free(st->files);
    memset(st, 0, sizeof *st);
}

const STensor *safetensors_find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

// ---- a directory

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static bool is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

// Maps and parses one more file of the directory.
static int dir_add(SafeTensors *st, const char *dir, const char *name, char *err) {
    char *path = path_join(dir, name);
    STFile *f = file_add(st, path);
    free(path);
    if (file_map(f, err) != SL_OK) return SL_ERR;
    return file_read(st, st->n_files - 1, err);
}

// A shard's name from the index: a plain file name inside the directory (no path, no "..").
static bool shard_name_ok(const char *s) {
    return s[0] && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int index_open(SafeTensors *st, const char *dir, const char *index_path, char *err) {
    char why[ERR_MAX];
    size_t len;
    char *text = file_read_all(index_path, &len, why);
    if (!text) return seterr(err, "%s", why);
    int rc = SL_ERR;
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    char nm[ST_SHOW_MAX + 4], fn[ST_SHOW_MAX + 4];
    if (!root) {
        seterr(err, "%s: not valid JSON", index_path);
        goto done;
    }
    if (!cJSON_IsObject(map) || !map->child) {
        seterr(err, "%s: weight_map is missing, empty or not an object", index_path);
        goto done;
    }
    // Each file the index names, once, in the order first named; every name a file that exists.
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring)) {
            seterr(err, "%s: weight_map['%s'] is not the name of a file in the directory", index_path,
                   show(e->string, nm, sizeof nm));
            goto done;
        }
        bool seen = false;
        for (int i = 0; i < st->n_files && !seen; i++) {
            const char *base = strrchr(st->files[i].path, '/');
            seen = strcmp(base ? base + 1 : st->files[i].path, e->valuestring) == 0;
        }
        if (seen) continue;
        char *path = path_join(dir, e->valuestring);
        bool exists = is_file(path);
        free(path);
        if (!exists) {
            seterr(err, "%s: shard %s (holding '%s') does not exist", index_path, show(e->valuestring, fn, sizeof fn),
                   show(e->string, nm, sizeof nm));
            goto done;
        }
        if (dir_add(st, dir, e->valuestring, err) != SL_OK) goto done;
    }
    if (check_unique(st, err) != SL_OK) goto done;
    // The index and the shards must agree tensor for tensor: each listed tensor is in the file
    // the index names, and no shard holds a tensor the index does not list.
    int listed = 0;
    cJSON_ArrayForEach(e, map) {
        listed++;
        const STensor *t = safetensors_find(st, e->string);
        const char *base = t ? strrchr(st->files[t->file].path, '/') : NULL;
        if (!t || strcmp(base ? base + 1 : st->files[t->file].path, e->valuestring) != 0) {
            seterr(err, "%s: tensor '%s' is not in %s, where the index's weight_map puts it",
                   t ? st->files[t->file].path : index_path, show(e->string, nm, sizeof nm),
                   show(e->valuestring, fn, sizeof fn));
            goto done;
        }
    }
    for (int i = 0; i < st->n_tensors; i++)
        if (!cJSON_GetObjectItemCaseSensitive(map, st->tensors[i].name)) {
            seterr(err, "%s: tensor '%s' is not listed in %s", st->files[st->tensors[i].file].path,
                   show(st->tensors[i].name, nm, sizeof nm), ST_INDEX_NAME);
            goto done;
        }
    // every listed name is a tensor and every tensor is listed: more entries means a repeat
    if (listed != st->n_tensors) {
        seterr(err, "%s: weight_map lists a tensor twice", index_path);
        goto done;
    }
    rc = SL_OK;
done:
    cJSON_Delete(root);
    free(text);
    return rc;
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Every *.safetensors in dir, in name order.
static int glob_open(SafeTensors *st, const char *dir, char *err) {
    DIR *d = opendir(dir);
    if (!d) return seterr(err, "%s: cannot open directory (%s)", dir, strerror(errno));
    char **names = NULL;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len <= 12 || strcmp(de->d_name + len - 12, ".safetensors") != 0) continue;
        names = xrealloc(names, ((size_t)n + 1) * sizeof(char *));
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (n) qsort(names, n, sizeof(char *), str_cmp);
    int rc = n ? SL_OK : seterr(err, "%s: no %s, %s or *.safetensors file", dir, ST_INDEX_NAME, ST_SINGLE_NAME);
    for (int i = 0; i < n && rc == SL_OK; i++) rc = dir_add(st, dir, names[i], err);
    if (rc == SL_OK) rc = check_unique(st, err);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

int safetensors_open_dir(SafeTensors *st, const char *dir, char *err) {
    memset(st, 0, sizeof *st);
    char *index = path_join(dir, ST_INDEX_NAME), *single = path_join(dir, ST_SINGLE_NAME);
    int rc;
    if (is_file(index)) rc = index_open(st, dir, index, err);
    else if (is_file(single)) rc = dir_add(st, dir, ST_SINGLE_NAME, err) == SL_OK ? check_unique(st, err) : SL_ERR;
    else rc = glob_open(st, dir, err);
    free(index);
    free(single);
    if (rc != SL_OK) safetensors_close(st);
    return rc;
}
