// weights.c: the weight sources behind weights.h: a GGUF file as it is, a Hugging Face
// directory (config.json + safetensors, names mapped to GGUF's and shapes reversed to ggml
// order), or config.json alone with generated weights (weights_dummy.c).
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "engine/model/weights_impl.h"

static const char *LOAD_FORMAT_NAMES[] = {"auto", "gguf", "safetensors", "dummy"};

int load_format_parse(const char *s) {
    for (size_t i = 0; i < ARRAY_LEN(LOAD_FORMAT_NAMES); i++)
        if (s && strcmp(s, LOAD_FORMAT_NAMES[i]) == 0) return (int)i;
    return -1;
}

const char *load_format_name(LoadFormat f) {
    return (unsigned)f < ARRAY_LEN(LOAD_FORMAT_NAMES) ? LOAD_FORMAT_NAMES[f] : "unknown";
}

// ---- the tensor table

WTensor *wsrc_push(WeightSource *ws, const char *name) {
    WsrcImpl *im = ws->impl;
    if (ws->n_tensors == im->cap) {
        im->cap = im->cap ? im->cap * 2 : 64;
        ws->tensors = xrealloc(ws->tensors, (size_t)im->cap * sizeof(WTensor));
    }
    WTensor *t = &ws->tensors[ws->n_tensors++];
    *t = (WTensor){.n_dims = 1, .ne = {1, 1, 1, 1}};
    CHECK(strlen(name) < sizeof t->name, "tensor name %s", name);
    strcpy(t->name, name);
    return t;
}

void wsrc_push_rope_freqs(WeightSource *ws) {
    const ModelConfig *c = &ws->cfg;
    if (c->rope_scaling_factor <= 0) return;
    WsrcImpl *im = ws->impl;
    int half = c->rope_dim / 2;
    im->rope_freqs = xmalloc((size_t)half * sizeof(float));
    model_rope_freq_factors(c, im->rope_freqs);
    WTensor *t = wsrc_push(ws, "rope_freqs.weight");
    t->type = QTYPE_F32;
    t->ne[0] = half;
    t->data = im->rope_freqs;
    t->nbytes = (size_t)half * sizeof(float);
    ws->bytes += t->nbytes;
}

const WTensor *wsrc_find(const WeightSource *ws, const char *name) {
    for (int i = 0; i < ws->n_tensors; i++)
        if (strcmp(ws->tensors[i].name, name) == 0) return &ws->tensors[i];
    return NULL;
}

// ---- GGUF: its metadata and tensors as stored

static int open_gguf(WeightSource *ws, const char *path, char *err) {
    if (gguf_open(&ws->gguf, path, err) != SL_OK) return SL_ERR;
    char why[ERR_MAX];
    if (model_config_from_gguf(&ws->cfg, &ws->gguf, why) != SL_OK) return seterr(err, "%s: %s", path, why);
    for (uint64_t i = 0; i < ws->gguf.n_tensors; i++) {
        const GGUFTensor *g = &ws->gguf.tensors[i];
        char shown[STR_SHOW_CAP(40)];
        if (g->name.len >= sizeof ws->tensors[0].name)
            return seterr(err, "%s: tensor name '%s' is longer than %zu bytes", path,
                          str_show(g->name.ptr, g->name.len, 40, shown), sizeof ws->tensors[0].name - 1);
        char name[sizeof ws->tensors[0].name];
        snprintf(name, sizeof name, "%.*s", (int)g->name.len, g->name.ptr);
        WTensor *t = wsrc_push(ws, name);
        t->type = g->type;
        t->n_dims = (int)g->n_dims;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < (int)g->n_dims ? g->ne[d] : 1;
        t->data = g->data;
        t->nbytes = g->nbytes;
        ws->bytes += t->nbytes;
    }
    return SL_OK;
}

// ---- config.json sources

static int read_config(WeightSource *ws, char *err) {
    char path[600], why[ERR_MAX];
    snprintf(path, sizeof path, "%s/config.json", ws->dir);
    size_t len;
    char *text = file_read_all(path, &len, why);
    if (!text) return seterr(err, "%s", why);
    int rc = model_config_from_hf(&ws->cfg, text, len, why);
    free(text);
    return rc == SL_OK ? SL_OK : seterr(err, "%s: %s", path, why);
}

// What llama.cpp's converter changes on the way to a GGUF, done here so that the binder sees one
// model whatever the format: Gemma's norm weights w become 1 + w (its RMSNorm multiplies by
// 1 + w), and Phi-3's LongRoPE factors (config.json lists) become rope_factors_{long,short}.
static void hf_convert(WeightSource *ws) {
    const ModelConfig *c = &ws->cfg;
    WsrcImpl *im = ws->impl;
    size_t n = 0;
    for (int i = 0; c->gemma && i < ws->n_tensors; i++)
        if (strstr(ws->tensors[i].name, "norm.weight")) n += (size_t)ws->tensors[i].ne[0];
    if (c->longrope) n += (size_t)c->rope_dim;
    if (n == 0) return;
    float *dst = im->converted = xmalloc(n * sizeof(float));
    for (int i = 0; c->gemma && i < ws->n_tensors; i++) {
        WTensor *t = &ws->tensors[i];
        if (!strstr(t->name, "norm.weight") || t->n_dims != 1) continue;
        dequant_row(t->type, t->data, dst, t->ne[0]);
        for (int64_t j = 0; j < t->ne[0]; j++) dst[j] += 1.0f;
        ws->bytes += (size_t)t->ne[0] * sizeof(float) - t->nbytes;
        t->type = QTYPE_F32, t->data = dst, t->nbytes = (size_t)t->ne[0] * sizeof(float);
        dst += t->ne[0];
    }
    if (!c->longrope) return;
    const int half = c->rope_dim / 2;
    const struct { const char *name; const float *v; } sets[] = {
        {"rope_factors_long.weight", c->rope_long}, {"rope_factors_short.weight", c->rope_short}};
    for (int k = 0; k < 2; k++) {
        memcpy(dst, sets[k].v, sizeof(float) * half);
        WTensor *t = wsrc_push(ws, sets[k].name);
        t->type = QTYPE_F32, t->ne[0] = half, t->data = dst, t->nbytes = sizeof(float) * half;
        ws->bytes += t->nbytes;
        dst += half;
    }
}

static int open_safetensors(WeightSource *ws, char *err) {
    if (read_config(ws, err) != SL_OK) return SL_ERR;
    WsrcImpl *im = ws->impl;
    SafeTensors *st = &im->st;
    if (safetensors_open_dir(st, ws->dir, err) != SL_OK) return SL_ERR;
    for (int i = 0; i < st->n_tensors; i++) {
        const STensor *s = &st->tensors[i];
        const char *file = st->files[s->file].path;
        char name[sizeof ws->tensors[0].name];
        int r = model_hf_tensor_name(ws->cfg.arch, s->name, name, sizeof name);
        if (r < 0)
            return seterr(err, "%s: tensor '%.80s' is not part of a %s model", file, s->name, ws->cfg.arch);
        if (r == 0) continue;
        // A tied model's checkpoint may still carry lm_head.weight; HF ignores it, and so do we.
        if (ws->cfg.tied_embeddings && strcmp(name, "output.weight") == 0) continue;
        if (s->n_dims > 2) return seterr(err, "%s: tensor '%.80s' has %d dimensions (at most 2)", file, s->name, s->n_dims);
        WTensor *t = wsrc_push(ws, name);
        t->type = s->type;
        t->n_dims = s->n_dims;
        for (int d = 0; d < s->n_dims; d++) t->ne[d] = s->shape[s->n_dims - 1 - d]; // [out, in] -> {in, out}
        t->data = s->data;
        t->nbytes = s->nbytes;
        ws->bytes += t->nbytes;
    }
    // The vocabulary is what the embedding holds (as for GGUF); config.json must agree with it.
    const WTensor *emb = wsrc_find(ws, "token_embd.weight");
    if (!emb) return seterr(err, "%s: tensor model.embed_tokens.weight is missing", ws->dir);
    if (emb->n_dims != 2 || emb->ne[0] != ws->cfg.dim || emb->ne[1] != ws->cfg.vocab)
        return seterr(err, "%s: model.embed_tokens.weight has shape [%lld, %lld], config.json says [%d, %d]", ws->dir,
                      (long long)emb->ne[1], (long long)emb->ne[0], ws->cfg.vocab, ws->cfg.dim);
    wsrc_push_rope_freqs(ws);
    hf_convert(ws);
    return SL_OK;
}

// ---- dispatch

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool has_gguf_magic(const char *path) {
    char magic[4] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = read(fd, magic, 4) == 4 && memcmp(magic, "GGUF", 4) == 0;
    close(fd);
    return ok;
}

// Any *.safetensors (or the shard index) in dir.
static bool dir_has_safetensors(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d)))
        found = ends_with(de->d_name, ".safetensors") || strcmp(de->d_name, "model.safetensors.index.json") == 0;
    closedir(d);
    return found;
}

// Sets ws->dir (and the format, for LOAD_AUTO) from path.
static int resolve(WeightSource *ws, const char *path, LoadFormat *f, char *err) {
    struct stat sb;
    if (stat(path, &sb) != 0) return seterr(err, "%s: cannot open (%s)", path, strerror(errno));
    bool is_dir = S_ISDIR(sb.st_mode);
    if (!is_dir && !S_ISREG(sb.st_mode)) return seterr(err, "%s: not a file or a directory", path);
    snprintf(ws->dir, sizeof ws->dir, "%s", path);
    if (!is_dir) { // the directory holding the file (tokenizer.json, config.json live there)
        char *slash = strrchr(ws->dir, '/');
        if (slash == ws->dir) slash[1] = 0;
        else if (slash) *slash = 0;
        else snprintf(ws->dir, sizeof ws->dir, ".");
    }
    if (*f == LOAD_GGUF && is_dir) return seterr(err, "%s: is a directory, not a GGUF file", path);
    if (*f == LOAD_SAFETENSORS || *f == LOAD_DUMMY) {
        if (!is_dir && !ends_with(path, "config.json") && !ends_with(path, ".safetensors") &&
            !ends_with(path, ".index.json"))
            return seterr(err, "%s: expected a model directory or its config.json", path);
        return SL_OK;
    }
    if (*f == LOAD_AUTO) {
        if (!is_dir && (ends_with(path, ".gguf") || has_gguf_magic(path))) *f = LOAD_GGUF;
        else if ((is_dir || ends_with(path, "config.json") || ends_with(path, ".safetensors") ||
                  ends_with(path, ".index.json")) && dir_has_safetensors(ws->dir))
            *f = LOAD_SAFETENSORS;
        else
            return seterr(err, "%s: neither a GGUF file nor a directory with config.json and *.safetensors "
                               "(--load-format dummy runs a config.json with random weights)", path);
    }
    return SL_OK;
}

int wsrc_open(WeightSource *ws, const char *path, LoadFormat f, char *err) {
    memset(ws, 0, sizeof *ws);
    ws->impl = xcalloc(1, sizeof(WsrcImpl));
    if (strlen(path) >= sizeof ws->path) {
        wsrc_close(ws);
        return seterr(err, "%.64s...: path is longer than %zu bytes", path, sizeof ws->path - 1);
    }
    snprintf(ws->path, sizeof ws->path, "%s", path);
    double t0 = time_now_s();
    int rc = resolve(ws, path, &f, err);
    if (rc == SL_OK) {
        ws->format = f;
        switch (f) {
        case LOAD_GGUF: rc = open_gguf(ws, path, err); break;
        case LOAD_SAFETENSORS: rc = open_safetensors(ws, err); break;
        case LOAD_DUMMY:
            rc = read_config(ws, err);
            // (the generator writes the Llama family's tensors; Gemma's extra norms and Phi-3's
            // fused ones it does not know)
            if (rc == SL_OK && (ws->cfg.gemma || ws->cfg.fused_qkv))
                rc = seterr(err, "%s: --load-format dummy does not generate %s weights yet", path, ws->cfg.arch);
            if (rc == SL_OK) {
                wsrc_dummy_generate(ws);
                wsrc_push_rope_freqs(ws);
            }
            break;
        default: DIE("load format %d", (int)f);
        }
    }
    if (rc != SL_OK) {
        wsrc_close(ws);
        return SL_ERR;
    }
    log_info("weights: %s %s: %d tensors, %.1f MiB, %.2f s", load_format_name(ws->format), ws->path, ws->n_tensors,
             ws->bytes / 1048576.0, time_now_s() - t0);
    return SL_OK;
}

void wsrc_close(WeightSource *ws) {
    WsrcImpl *im = ws->impl;
    if (im) {
        safetensors_close(&im->st);
        free(im->slab);
        free(im->rope_freqs);
        free(im->converted);
        free(im);
    }
    gguf_close(&ws->gguf); // a no-op on a zeroed GGUF
    free(ws->tensors);
    memset(ws, 0, sizeof *ws);
}
