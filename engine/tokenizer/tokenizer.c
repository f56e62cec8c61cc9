// tokenizer.c: building a Tokenizer from GGUF metadata (and the construction steps
// hf.c shares, see tokenizer_impl.h), special tokens, and the encode driver.
//
// Encoding follows llama.cpp (llama-vocab.cpp) step by step, because the golden data and the
// models' own expectations come from there:
//  1. special-token partition: every CONTROL / USER_DEFINED / UNKNOWN token, longest text
//     first, cuts the text into raw fragments and whole tokens. Without parse_special only
//     USER_DEFINED tokens cut (as Hugging Face's added tokens do).
//  2. each raw fragment goes to the model's encoder: byte-level BPE (bpe.c) or
//     SentencePiece-style BPE (spm.c).
#define _GNU_SOURCE // memmem
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/tokenizer/tokenizer_impl.h"

// ---- string map

static uint32_t str_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u; // FNV-1a
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

void strmap_init(StrMap *m, uint32_t expected) {
    uint32_t cap = 16;
    while (cap < expected * 2) cap <<= 1;
    m->slots = xcalloc(cap, sizeof(StrSlot));
    m->mask = cap - 1;
    m->count = 0;
}

void strmap_free(StrMap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static StrSlot *strmap_slot(const StrMap *m, const char *key, size_t len, uint32_t h) {
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        StrSlot *s = &m->slots[i];
        if (!s->key) return s;
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) return s;
    }
}

int32_t strmap_get(const StrMap *m, const char *key, size_t len) {
    const StrSlot *s = strmap_slot(m, key, len, str_hash(key, len));
    return s->key ? s->val : -1;
}

static void strmap_grow(StrMap *m) {
    StrMap bigger;
    bigger.mask = m->mask * 2 + 1;
    bigger.slots = xcalloc((size_t)bigger.mask + 1, sizeof(StrSlot));
    bigger.count = m->count;
    for (uint32_t i = 0; i <= m->mask; i++) {
        const StrSlot *s = &m->slots[i];
        if (s->key) *strmap_slot(&bigger, s->key, s->len, s->hash) = *s;
    }
    free(m->slots);
    *m = bigger;
}

int32_t strmap_put(StrMap *m, const char *key, size_t len, int32_t val) {
    if ((m->count + 1) * 2 > m->mask + 1) strmap_grow(m);
    uint32_t h = str_hash(key, len);
    StrSlot *s = strmap_slot(m, key, len, h);
    if (s->key) return s->val;
    *s = (StrSlot){key, (uint32_t)len, h, val};
    m->count++;
    return val;
}

void tokout_push(TokOut *o, int id) {
    if (o->n >= *o->cap) {
        *o->cap = *o->cap < 64 ? 64 : *o->cap * 2;
        *o->ids = xrealloc(*o->ids, (size_t)*o->cap * sizeof(int));
    }
    (*o->ids)[o->n++] = id;
}

// ---- loading

// Tokens that end a generation, by text (llama.cpp recognises the same ones); each is also
// forced to CONTROL so it is neither matched in plain text nor printed when skipping specials.
static const char *const TOK_EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "<|eom_id|>", "<end_of_utterance>",
};

static bool meta_token_id(const GGUF *g, const char *key, int n_vocab, int *id) {
    int64_t v;
    if (!gguf_get_int(g, key, &v)) return false;
    if (v < 0 || v >= n_vocab) {
        log_warn("tokenizer: %s = %lld is outside the vocabulary (%d tokens), ignored", key,
                 (long long)v, n_vocab);
        return false;
    }
    *id = (int)v;
    return true;
}

// One arena for all texts; an empty token becomes "[EMPTY_<id>]" as in llama.cpp so that
// every text is a distinct, non-empty key. Types start NORMAL, scores 0, nothing is EOG.
int tok_vocab_init(Tokenizer *t, int n, const GGUFStr *texts, char *err) {
    t->n_vocab = n;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += texts[i].len ? texts[i].len + 1 : 24;
    t->text_arena = xmalloc(total);
    t->text_off = xmalloc((size_t)n * sizeof(uint32_t));
    t->text_len = xmalloc((size_t)n * sizeof(uint32_t));
    t->types = xmalloc((size_t)n);
    memset(t->types, TOK_TYPE_NORMAL, (size_t)n);
    t->scores = xcalloc((size_t)n, sizeof(float));
    t->eog = xcalloc((size_t)n, 1);
    strmap_init(&t->vocab, (uint32_t)n);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        GGUFStr s = texts[i];
        char *dst = t->text_arena + off;
        size_t len = s.len;
        if (len) memcpy(dst, s.ptr, len);
        else len = (size_t)snprintf(dst, 24, "[EMPTY_%d]", i);
        dst[len] = '\0';
        t->text_off[i] = (uint32_t)off;
        t->text_len[i] = (uint32_t)len;
        off += len + 1;
        int prev = strmap_put(&t->vocab, dst, len, i);
        char shown[STR_SHOW_CAP(64)];
        if (prev != i)
            return seterr(err, "duplicate token in vocabulary: '%s' has ids %d and %d", str_show(dst, len, 64, shown),
                          prev, i);
    }
    return SL_OK;
}

static int load_vocab(Tokenizer *t, const GGUF *g, char *err) {
    const GGUFKV *toks = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING);
    if (!toks) return seterr(err, "tokenizer.ggml.tokens is missing (or not a string array)");
    if (toks->arr_len == 0 || toks->arr_len > (1u << 28))
        return seterr(err, "tokenizer.ggml.tokens has %llu entries", (unsigned long long)toks->arr_len);
    int n = (int)toks->arr_len;

    const GGUFKV *types = gguf_find(g, "tokenizer.ggml.token_type");
    if (types && (types->type != GGUF_TYPE_ARRAY || types->arr_type != GGUF_TYPE_INT32 ||
                  types->arr_len < (uint64_t)n))
        return seterr(err, "tokenizer.ggml.token_type must be an int32 array of %d entries", n);
    const GGUFKV *scores = gguf_find(g, "tokenizer.ggml.scores");
    if (scores && (scores->type != GGUF_TYPE_ARRAY ||
                   (scores->arr_type != GGUF_TYPE_FLOAT32 && scores->arr_type != GGUF_TYPE_INT32) ||
                   scores->arr_len < (uint64_t)n))
        return seterr(err, "tokenizer.ggml.scores must be a float32 array of %d entries", n);

    if (tok_vocab_init(t, n, toks->arr_strs, err) != SL_OK) return SL_ERR;
    for (int i = 0; i < n; i++) {
        int32_t ty = TOK_TYPE_NORMAL;
        if (types) memcpy(&ty, types->arr_data + 4 * (size_t)i, 4);
        t->types[i] = (ty >= TOK_TYPE_NORMAL && ty <= TOK_TYPE_BYTE) ? (uint8_t)ty : TOK_TYPE_UNDEFINED;
        float sc = 0.0f;
        if (scores && scores->arr_type == GGUF_TYPE_FLOAT32) memcpy(&sc, scores->arr_data + 4 * (size_t)i, 4);
        if (scores && scores->arr_type == GGUF_TYPE_INT32) {
            int32_t v;
            memcpy(&v, scores->arr_data + 4 * (size_t)i, 4);
            sc = (float)v;
        }
        t->scores[i] = sc;
    }
    return SL_OK;
}

typedef struct {
    int len, id;
} SpecialKey;

static int special_cmp(const void *a, const void *b) {
    const SpecialKey *x = a, *y = b;
    return x->len != y->len ? y->len - x->len : x->id - y->id;
}

static int load_special(Tokenizer *t, const GGUF *g, char *err) {
    int n = t->n_vocab;
    // llama.cpp's defaults when the metadata is silent (BPE's 11 is GPT-2's historic guess)
    int bos = t->model == TOK_MODEL_SPM ? 1 : 11;
    int eos = t->model == TOK_MODEL_SPM ? 2 : 11;
    int unk = t->model == TOK_MODEL_SPM ? 0 : -1;
    t->bos = bos < n ? bos : -1;
    t->eos = eos < n ? eos : -1;
    t->unk = unk < n ? unk : -1;
    meta_token_id(g, "tokenizer.ggml.bos_token_id", n, &t->bos);
    meta_token_id(g, "tokenizer.ggml.eos_token_id", n, &t->eos);
    meta_token_id(g, "tokenizer.ggml.unknown_token_id", n, &t->unk);

    t->add_bos = t->model == TOK_MODEL_SPM || (t->pre && t->pre->add_bos);
    t->add_space_prefix = t->model == TOK_MODEL_SPM;
    gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    if (t->add_bos && t->bos < 0)
        return seterr(err, "tokenizer.ggml.add_bos_token is true, but there is no BOS token");

    // end of generation: the declared EOT/EOM here, EOS and the usual texts in tok_specials_finish
    int id;
    if (meta_token_id(g, "tokenizer.ggml.eot_token_id", n, &id)) t->eog[id] = 1;
    if (meta_token_id(g, "tokenizer.ggml.eom_token_id", n, &id)) t->eog[id] = 1;
    tok_specials_finish(t);
    return SL_OK;
}

void tok_specials_finish(Tokenizer *t) {
    int n = t->n_vocab, id;
    if (t->eos >= 0) t->eog[t->eos] = 1;
    for (size_t i = 0; i < ARRAY_LEN(TOK_EOG_TEXTS); i++) {
        id = strmap_get(&t->vocab, TOK_EOG_TEXTS[i], strlen(TOK_EOG_TEXTS[i]));
        if (id >= 0 && id < n) {
            t->eog[id] = 1;
            t->types[id] = TOK_TYPE_CONTROL;
        }
    }

    // the partition list: longest first, ties by id (llama.cpp's sort is unstable; equal
    // lengths only matter for overlapping tokens, which vocabularies do not have)
    SpecialKey *keys = xmalloc((size_t)n * sizeof(SpecialKey));
    int ns = 0;
    for (int i = 0; i < n; i++) {
        uint8_t ty = t->types[i];
        if (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN)
            keys[ns++] = (SpecialKey){(int)t->text_len[i], i};
    }
    qsort(keys, (size_t)ns, sizeof(SpecialKey), special_cmp);
    t->special = xmalloc((size_t)MAX(ns, 1) * sizeof(int));
    for (int i = 0; i < ns; i++) t->special[i] = keys[i].id;
    t->n_special = ns;
    free(keys);
}

void spm_bytes_init(Tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        int id = strmap_get(&t->vocab, hex, 6);
        if (id < 0) {
            char c = (char)b;
            id = strmap_get(&t->vocab, &c, 1);
        }
        t->byte_tok[b] = id;
    }
}

// What each token decodes to, computed once (llama.cpp keeps the same cache).
void tok_pieces_init(Tokenizer *t) {
    int n = t->n_vocab;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += t->text_len[i] + 1;
    t->piece_arena = xmalloc(total);
    t->piece_off = xmalloc((size_t)n * sizeof(uint32_t));
    t->piece_len = xmalloc((size_t)n * sizeof(uint32_t));
    size_t off = 0;
    t->max_piece = 0;
    for (int i = 0; i < n; i++) {
        const char *text = t->text_arena + t->text_off[i];
        size_t len = t->text_len[i], plen = 0;
        char *dst = t->piece_arena + off;
        switch (t->types[i]) {
        case TOK_TYPE_CONTROL:
        case TOK_TYPE_UNKNOWN:
        case TOK_TYPE_USER_DEFINED:
            memcpy(dst, text, len);
            plen = len;
            break;
        case TOK_TYPE_BYTE:
            if (len == 6 && memcmp(text, "<0x", 3) == 0) {
                dst[0] = (char)strtol((char[]){text[3], text[4], 0}, NULL, 16);
                plen = 1;
            }
            break;
        case TOK_TYPE_NORMAL:
            if (t->model == TOK_MODEL_BPE) {
                bpe_piece(t, text, len, dst, &plen);
            } else { // "▁" (E2 96 81) -> ' '
                for (size_t k = 0; k < len; k++) {
                    if (k + 2 < len && memcmp(text + k, "\xe2\x96\x81", 3) == 0) {
                        dst[plen++] = ' ';
                        k += 2;
                    } else {
                        dst[plen++] = text[k];
                    }
                }
            }
            break;
        default: // UNUSED / UNDEFINED decode to nothing, as in llama.cpp
            break;
        }
        dst[plen] = '\0';
        t->piece_off[i] = (uint32_t)off;
        t->piece_len[i] = (uint32_t)plen;
        if ((int)plen > t->max_piece) t->max_piece = (int)plen;
        off += plen + 1;
    }
}

int tok_load_pre(Tokenizer **out, const GGUF *g, const char *pre, char *err) {
    *out = NULL;
    GGUFStr model;
    if (!gguf_get_str(g, "tokenizer.ggml.model", &model))
        return seterr(err, "tokenizer.ggml.model is missing");
    Tokenizer *t = xcalloc(1, sizeof(Tokenizer));
    if (gguf_str_eq(model, "gpt2")) {
        t->model = TOK_MODEL_BPE;
    } else if (gguf_str_eq(model, "llama")) {
        t->model = TOK_MODEL_SPM;
    } else {
        char shown[STR_SHOW_CAP(64)];
        seterr(err, "unsupported tokenizer.ggml.model '%s' (supported: gpt2, llama)",
               str_show(model.ptr, model.len, 64, shown));
        tok_free(t);
        return SL_ERR;
    }

    if (t->model == TOK_MODEL_BPE) {
        GGUFStr p;
        if (pre) {
            t->pre_name = xstrdup(pre);
        } else if (gguf_get_str(g, "tokenizer.ggml.pre", &p)) {
            t->pre_name = gguf_str_dup(p);
        } else {
            log_warn("tokenizer: no tokenizer.ggml.pre in the model, using 'default' (quality may suffer)");
            t->pre_name = xstrdup("default");
        }
        t->pre = bpe_pre_find(t->pre_name);
        if (!t->pre) {
            char list[1024];
            bpe_pre_list(list, sizeof list);
            seterr(err, "unsupported tokenizer.ggml.pre '%.64s' (supported: %s)", t->pre_name, list);
            tok_free(t);
            return SL_ERR;
        }
    }

    if (load_vocab(t, g, err) != SL_OK || load_special(t, g, err) != SL_OK ||
        (t->model == TOK_MODEL_BPE && bpe_init(t, g, err) != SL_OK)) {
        tok_free(t);
        return SL_ERR;
    }
    if (t->model == TOK_MODEL_SPM) spm_bytes_init(t);
    tok_pieces_init(t);
    tok_log_loaded(t, "GGUF");
    *out = t;
    return SL_OK;
}

void tok_log_loaded(const Tokenizer *t, const char *source) {
    log_info("tokenizer (%s): %s, %d tokens%s%s, %d merges, %d special, bos %d, eos %d, add_bos %d", source,
             t->model == TOK_MODEL_BPE ? "byte-level BPE" : "SentencePiece BPE", t->n_vocab,
             t->pre_name ? ", pre " : "", t->pre_name ? t->pre_name : "", t->n_merges,
             t->n_special, t->bos, t->eos, t->add_bos);
}

int tok_load(Tokenizer **out, const GGUF *g, char *err) {
    return tok_load_pre(out, g, NULL, err);
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    if (t->model == TOK_MODEL_BPE) bpe_free(t);
    strmap_free(&t->vocab);
    free(t->text_arena);
    free(t->text_off);
    free(t->text_len);
    free(t->piece_arena);
    free(t->piece_off);
    free(t->piece_len);
    free(t->scores);
    free(t->types);
    free(t->eog);
    free(t->special);
    free((char *)t->pre_name);
    if (t->pre_owned) {
        for (int i = 0; i < TOK_MAX_REGEX && t->pre->regex[i]; i++) free((char *)t->pre->regex[i]);
        free((PreTok *)t->pre);
    }
    free(t);
}

// ---- accessors

int tok_vocab_size(const Tokenizer *t) { return t->n_vocab; }
int tok_bos(const Tokenizer *t) { return t->bos; }
int tok_eos(const Tokenizer *t) { return t->eos; }
bool tok_add_bos(const Tokenizer *t) { return t->add_bos; }

bool tok_is_special(const Tokenizer *t, int id) {
    if (id < 0 || id >= t->n_vocab) return false;
    return t->types[id] == TOK_TYPE_CONTROL || t->types[id] == TOK_TYPE_USER_DEFINED;
}

bool tok_is_eog(const Tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab && t->eog[id];
}

int tok_find(const Tokenizer *t, const char *piece) {
    int id = strmap_get(&t->vocab, piece, strlen(piece));
    return id < t->n_vocab ? id : -1; // ids beyond the vocab are internal merge strings
}

// ---- encode

typedef struct {
    int start, len; // raw text [start, start+len) when id < 0
    int id;         // a special token
} Frag;

typedef struct {
    Frag *v;
    int n, cap;
} FragList;

static void frag_push(FragList *l, int start, int len, int id) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = xrealloc(l->v, (size_t)l->cap * sizeof(Frag));
    }
    l->v[l->n++] = (Frag){start, len, id};
}

// Cuts text into raw fragments and special tokens, one special token at a time, longest first,
// each taking every non-overlapping occurrence left to right inside the raw fragments left.
static void partition(const Tokenizer *t, const char *text, size_t len, bool parse_special, FragList *out) {
    FragList cur = {0}, next = {0};
    if (len) frag_push(&cur, 0, (int)len, -1);
    for (int k = 0; k < t->n_special && cur.n; k++) {
        int id = t->special[k];
        uint8_t ty = t->types[id];
        if (!parse_special && ty != TOK_TYPE_USER_DEFINED) continue;
        const char *tt = t->text_arena + t->text_off[id];
        size_t tl = t->text_len[id];
        next.n = 0;
        for (int i = 0; i < cur.n; i++) {
            Frag f = cur.v[i];
            if (f.id >= 0 || (size_t)f.len < tl) {
                frag_push(&next, f.start, f.len, f.id);
                continue;
            }
            const char *p = text + f.start, *end = text + f.start + f.len;
            for (;;) {
                const char *m = memmem(p, (size_t)(end - p), tt, tl);
                if (!m) break;
                if (m > p) frag_push(&next, (int)(p - text), (int)(m - p), -1);
                frag_push(&next, 0, 0, id);
                p = m + tl;
            }
            if (p < end) frag_push(&next, (int)(p - text), (int)(end - p), -1);
        }
        FragList tmp = cur;
        cur = next;
        next = tmp;
    }
    free(next.v);
    *out = cur;
}

int tok_encode(const Tokenizer *t, const char *text, size_t len, bool add_bos, bool parse_special,
               int **ids, int *cap) {
    TokOut o = {ids, cap, 0};
    if (add_bos && t->bos >= 0) tokout_push(&o, t->bos);
    FragList frags;
    partition(t, text, len, parse_special, &frags);
    bool prev_special = true; // SentencePiece prefixes a space at the start and after specials
    for (int i = 0; i < frags.n; i++) {
        const Frag *f = &frags.v[i];
        if (f->id >= 0) {
            tokout_push(&o, f->id);
            prev_special = true;
            continue;
        }
        if (t->model == TOK_MODEL_BPE)
            bpe_encode_text(t, text + f->start, (size_t)f->len, &o);
        else
            spm_encode_text(t, text + f->start, (size_t)f->len, t->add_space_prefix && prev_special, &o);
        prev_special = false;
    }
    free(frags.v);
    return o.n;
}
