// hf.c: a Tokenizer from a Hugging Face tokenizer directory (tokenizer.json, and
// tokenizer_config.json / generation_config.json when present), built with the construction
// steps the GGUF loader uses (tokenizer_impl.h), so that encode, decode and streaming behave as
// for the GGUF that llama.cpp's converter makes from the same files.
//
// How the `tokenizers` format maps onto our two models:
//  - model.type "BPE" with a ByteLevel pre-tokenizer -> byte-level BPE. The pre_tokenizer
//    becomes the ordered regex list the encoder applies: Split {Regex, "Isolated"} -> its regex,
//    Digits -> \p{N} (individual_digits) or \p{N}+, ByteLevel {use_regex} -> the GPT-2 regex.
//    A list equal to an entry of llama.cpp's table takes that entry (SmolLM2's
//    Sequence[Digits, ByteLevel] is 'smollm'); otherwise the regexes are the file's own.
//  - model.type "BPE" with byte_fallback, a Metaspace pre-tokenizer or a normalizer that
//    replaces " " by U+2581 -> SentencePiece-style BPE. It merges by piece score; a piece's
//    score is minus the rank of the first merge that makes it (HF's converter wrote the merges
//    in SentencePiece score order), pieces no merge makes come last.
//  - added_tokens: special -> CONTROL (the model's unk_token: UNKNOWN), others USER_DEFINED;
//    <0xNN> pieces of a byte_fallback model -> BYTE; ids the file skips -> UNUSED "[EMPTY_<id>]".
// Merges must name tokens of the vocabulary and make one (as `tokenizers` requires).
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "engine/tokenizer/tokenizer_impl.h"

#define HF_MAX_ID (1 << 24) // larger than any real vocabulary, small enough to allocate

// ---- JSON helpers

static const cJSON *jget(const cJSON *o, const char *key) {
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = jget(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool jbool(const cJSON *o, const char *key, bool dflt) {
    const cJSON *v = jget(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static bool jint(const cJSON *v, long long *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= -9e15 && d <= 9e15) || d != (double)(long long)d) return false; // also NaN
    *out = (long long)d;
    return true;
}

// A token named in tokenizer_config.json: "text" or {"content": "text", ...}.
static const char *jtoken(const cJSON *o, const char *key) {
    const cJSON *v = jget(o, key);
    if (cJSON_IsString(v)) return v->valuestring;
    return jstr(v, "content");
}

// Reads dir/name; *out = NULL (and SL_OK) when an optional file does not exist.
static int json_read(const char *dir, const char *name, bool required, cJSON **out, char *err) {
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!required && access(path, F_OK) != 0) return SL_OK;
    size_t len;
    char *buf = file_read_all(path, &len, err);
    if (!buf) return SL_ERR;
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!*out) {
        seterr(err, "%s: not valid JSON (near byte %td)", path, end ? end - buf : (ptrdiff_t)0);
        free(buf);
        return SL_ERR;
    }
    free(buf);
    return SL_OK;
}

// ---- normalizer and pre-tokenizer

typedef struct {
    const char *regex[TOK_MAX_REGEX]; // into the JSON, or string constants
    int n_regex;
    bool byte_level;   // a ByteLevel step
    bool metaspace;    // a Metaspace step (SentencePiece style)
    bool prefix_space; // Metaspace prepends U+2581 / normalizer Prepend(U+2581)
    bool spm_space;    // normalizer Replace(" " -> U+2581)
} HFPipeline;

#define SPM_SPACE "\xe2\x96\x81"

static int pre_add_regex(HFPipeline *p, const char *re, char *err) {
    if (p->n_regex == TOK_MAX_REGEX)
        return seterr(err, "tokenizer.json: pre_tokenizer has more than %d regex steps", TOK_MAX_REGEX);
    p->regex[p->n_regex++] = re;
    return SL_OK;
}

static int pre_parse(const cJSON *node, HFPipeline *p, char *err) {
    if (!node || cJSON_IsNull(node)) return SL_OK;
    const char *type = jstr(node, "type");
    if (!type) return seterr(err, "tokenizer.json: a pre_tokenizer has no type");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = jget(node, "pretokenizers"), *step;
        if (!cJSON_IsArray(list))
            return seterr(err, "tokenizer.json: pre_tokenizer Sequence has no pretokenizers list");
        cJSON_ArrayForEach(step, list) if (pre_parse(step, p, err) != SL_OK) return SL_ERR;
        return SL_OK;
    }
    if (strcmp(type, "Split") == 0) {
        const char *re = jstr(jget(node, "pattern"), "Regex"), *behavior = jstr(node, "behavior");
        if (!re) return seterr(err, "tokenizer.json: pre_tokenizer Split needs a {\"Regex\": ...} pattern");
        bool invert = jbool(node, "invert", false);
        if (!behavior || strcmp(behavior, "Isolated") != 0 || invert)
            return seterr(err, "tokenizer.json: pre_tokenizer Split behavior '%.32s'%s is not supported "
                               "(supported: Isolated)", behavior ? behavior : "(none)", invert ? " with invert" : "");
        return pre_add_regex(p, re, err);
    }
    if (strcmp(type, "Digits") == 0)
        return pre_add_regex(p, jbool(node, "individual_digits", false) ? "\\p{N}" : "\\p{N}+", err);
    if (strcmp(type, "ByteLevel") == 0) {
        // add_prefix_space would put a space in front of the text: no model we know sets it
        if (jbool(node, "add_prefix_space", false))
            return seterr(err, "tokenizer.json: pre_tokenizer ByteLevel with add_prefix_space true is not supported");
        p->byte_level = true;
        return jbool(node, "use_regex", true) ? pre_add_regex(p, TOK_RE_GPT2, err) : SL_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        const char *rep = jstr(node, "replacement"), *scheme = jstr(node, "prepend_scheme");
        if (rep && strcmp(rep, SPM_SPACE) != 0)
            return seterr(err, "tokenizer.json: pre_tokenizer Metaspace replacement '%.16s' is not supported "
                               "(only U+2581)", rep);
        p->metaspace = true;
        p->prefix_space = scheme ? strcmp(scheme, "never") != 0 : jbool(node, "add_prefix_space", true);
        return SL_OK;
    }
    return seterr(err, "tokenizer.json: pre_tokenizer type '%.64s' is not supported "
                       "(supported: ByteLevel, Split, Digits, Metaspace, Sequence)", type);
}

static int norm_parse(const cJSON *node, HFPipeline *p, char *err) {
    if (!node || cJSON_IsNull(node)) return SL_OK;
    const char *type = jstr(node, "type");
    if (!type) return seterr(err, "tokenizer.json: a normalizer has no type");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = jget(node, "normalizers"), *step;
        if (!cJSON_IsArray(list)) return seterr(err, "tokenizer.json: normalizer Sequence has no normalizers list");
        cJSON_ArrayForEach(step, list) if (norm_parse(step, p, err) != SL_OK) return SL_ERR;
        return SL_OK;
    }
    // Qwen2 declares NFC; llama.cpp does not normalize either, and text is nearly always NFC
    if (strcmp(type, "NFC") == 0) return SL_OK;
    const char *prepend = jstr(node, "prepend"), *from = jstr(jget(node, "pattern"), "String");
    const char *to = jstr(node, "content");
    if (strcmp(type, "Prepend") == 0 && prepend && strcmp(prepend, SPM_SPACE) == 0) {
        p->prefix_space = true;
        return SL_OK;
    }
    if (strcmp(type, "Replace") == 0 && from && to && strcmp(from, " ") == 0 && strcmp(to, SPM_SPACE) == 0) {
        p->spm_space = true;
        return SL_OK;
    }
    return seterr(err, "tokenizer.json: normalizer '%.64s' is not supported (supported: NFC, "
                       "Prepend(U+2581), Replace(' ', U+2581), Sequence)", type);
}

// The special token the post_processor's TemplateProcessing puts in front of a single text:
// *found says whether there is a TemplateProcessing at all; NULL when it prepends nothing.
static const char *post_first_special(const cJSON *node, bool *found) {
    const char *type = jstr(node, "type");
    if (!type) return NULL;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *step;
        cJSON_ArrayForEach(step, jget(node, "processors")) {
            const char *s = post_first_special(step, found);
            if (*found) return s;
        }
        return NULL;
    }
    if (strcmp(type, "TemplateProcessing") != 0) return NULL;
    *found = true;
    const cJSON *single = jget(node, "single");
    return cJSON_IsArray(single) ? jstr(jget(cJSON_GetArrayItem(single, 0), "SpecialToken"), "id") : NULL;
}

// ---- vocabulary

// Every (id, text) of model.vocab and added_tokens into texts[0..n); n = the largest id + 1.
static int vocab_collect(const cJSON *vocab, const cJSON *added, GGUFStr **texts_out, int *n_out, char *err) {
    long long n = 0, id = 0, entries = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!jint(e, &id) || id < 0 || id >= HF_MAX_ID)
            return seterr(err, "tokenizer.json: model.vocab['%.64s']: id out of range (0..%d)", e->string,
                          HF_MAX_ID - 1);
        n = MAX(n, id + 1);
        entries++;
    }
    cJSON_ArrayForEach(e, added) {
        if (!jstr(e, "content") || !jint(jget(e, "id"), &id) || id < 0 || id >= HF_MAX_ID)
            return seterr(err, "tokenizer.json: added_tokens: an entry without content or with an id out of range");
        n = MAX(n, id + 1);
        entries++;
    }
    if (n == 0) return seterr(err, "tokenizer.json: model.vocab is empty");
    // a few ids may be skipped (they become unused tokens), not most of them
    if (n > 2 * entries + 1024)
        return seterr(err, "tokenizer.json: ids go up to %lld for %lld tokens: id out of range", n - 1, entries);
    GGUFStr *texts = xcalloc((size_t)n, sizeof(GGUFStr));
    *texts_out = texts;
    *n_out = (int)n;
    cJSON_ArrayForEach(e, vocab) {
        jint(e, &id);
        if (texts[id].ptr)
            return seterr(err, "tokenizer.json: model.vocab: duplicate id %lld ('%.64s' and '%.64s')", id,
                          texts[id].ptr, e->string);
        texts[id] = (GGUFStr){e->string, strlen(e->string)};
    }
    cJSON_ArrayForEach(e, added) {
        const char *s = jstr(e, "content");
        jint(jget(e, "id"), &id);
        if (texts[id].ptr && strcmp(texts[id].ptr, s) != 0)
            return seterr(err, "tokenizer.json: added_tokens: duplicate id %lld ('%.64s' and '%.64s')", id,
                          texts[id].ptr, s);
        texts[id] = (GGUFStr){s, strlen(s)};
    }
    return SL_OK;
}

static int find_token(const Tokenizer *t, const char *file, const char *key, const char *text, int *id, char *err) {
    if (!text) return SL_OK;
    int k = strmap_get(&t->vocab, text, strlen(text));
    if (k < 0 || k >= t->n_vocab)
        return seterr(err, "%s: %s '%.64s' is not in the vocabulary", file, key, text);
    *id = k;
    return SL_OK;
}

static void set_types(Tokenizer *t, const GGUFStr *texts, const cJSON *added, bool byte_fallback) {
    for (int i = 0; i < t->n_vocab; i++)
        if (!texts[i].ptr) t->types[i] = TOK_TYPE_UNUSED;
    if (byte_fallback) // HF looks bytes up as "<0x%02X>"
        for (int b = 0; b < 256; b++) {
            char hex[8];
            snprintf(hex, sizeof hex, "<0x%02X>", b);
            int id = strmap_get(&t->vocab, hex, 6);
            if (id >= 0 && id < t->n_vocab) t->types[id] = TOK_TYPE_BYTE;
        }
    const cJSON *e;
    cJSON_ArrayForEach(e, added) {
        long long id = 0;
        jint(jget(e, "id"), &id); // checked by vocab_collect
        t->types[id] = jbool(e, "special", false) ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
    }
    if (t->unk >= 0) t->types[t->unk] = TOK_TYPE_UNKNOWN;
}

// bos, eos, add_bos, add_space_prefix and EOG ids from the three files.
static int set_specials(Tokenizer *t, const cJSON *tj, const cJSON *cfg, const cJSON *gen, const HFPipeline *p,
                        char *err) {
    t->bos = t->eos = -1;
    // a byte-level model has no model.unk_token, but its config may name one (SmolLM2's is
    // <|endoftext|>, as in its GGUF); that token keeps its type
    const char *unk = jtoken(cfg, "unk_token");
    if (t->unk < 0 && find_token(t, "tokenizer_config.json", "unk_token", unk, &t->unk, err) != SL_OK) return SL_ERR;
    if (find_token(t, "tokenizer_config.json", "bos_token", jtoken(cfg, "bos_token"), &t->bos, err) != SL_OK ||
        find_token(t, "tokenizer_config.json", "eos_token", jtoken(cfg, "eos_token"), &t->eos, err) != SL_OK)
        return SL_ERR;
    bool templ = false;
    const char *first = post_first_special(jget(tj, "post_processor"), &templ);
    int first_id = -1;
    if (first && find_token(t, "tokenizer.json", "post_processor token", first, &first_id, err) != SL_OK)
        return SL_ERR;
    if (t->bos < 0) t->bos = first_id;
    // add_bos: tokenizer_config.json says, else the TemplateProcessing, else the model's default
    const cJSON *ab = jget(cfg, "add_bos_token");
    if (cJSON_IsBool(ab)) t->add_bos = cJSON_IsTrue(ab);
    else if (templ) t->add_bos = first_id >= 0 && first_id == t->bos;
    else t->add_bos = t->model == TOK_MODEL_SPM;
    if (t->add_bos && t->bos < 0)
        return seterr(err, "tokenizer_config.json: add_bos_token is true, but there is no bos_token");
    t->add_space_prefix = t->model == TOK_MODEL_SPM && p->prefix_space;

    // generation_config.json's eos_token_id (an id or a list of ids) ends generation too
    const cJSON *ge = jget(gen, "eos_token_id"), *e;
    long long id;
    if (cJSON_IsNumber(ge) && jint(ge, &id) && id >= 0 && id < t->n_vocab) {
        t->eog[id] = 1;
        if (t->eos < 0) t->eos = (int)id;
    }
    const cJSON *list = cJSON_IsArray(ge) ? ge : NULL;
    cJSON_ArrayForEach(e, list) {
        if (!jint(e, &id) || id < 0 || id >= t->n_vocab) {
            log_warn("tokenizer: generation_config.json eos_token_id entry outside the vocabulary, ignored");
            continue;
        }
        t->eog[id] = 1;
        if (t->eos < 0) t->eos = (int)id;
    }
    tok_specials_finish(t);
    return SL_OK;
}

// ---- merges

// One merge as (left, right): "a b" (before tokenizers 0.20) or ["a", "b"].
static int merge_parse(const cJSON *m, int i, const char **l, const char **r, size_t *rl, char *err) {
    if (cJSON_IsString(m)) {
        const char *sp = strchr(m->valuestring, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return seterr(err, "tokenizer.json: model.merges[%d] '%.64s' is not two tokens separated by a space", i,
                          m->valuestring);
        *l = m->valuestring;
        *r = sp + 1;
        *rl = strlen(sp + 1);
        return (int)(sp - m->valuestring); // the left length
    }
    const cJSON *a = cJSON_GetArrayItem(m, 0), *b = cJSON_GetArrayItem(m, 1);
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2 || !cJSON_IsString(a) || !cJSON_IsString(b))
        return seterr(err, "tokenizer.json: model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", i);
    *l = a->valuestring;
    *r = b->valuestring;
    *rl = strlen(b->valuestring);
    return (int)strlen(a->valuestring);
}

// Checks every merge against the vocabulary; BPE: fills the merge table; SPM: the scores.
static int merges_load(Tokenizer *t, const cJSON *merges, char *err) {
    int n = cJSON_GetArraySize(merges), i = -1;
    if (t->model == TOK_MODEL_BPE) bpe_merges_reserve(t, (uint64_t)n);
    else
        for (int k = 0; k < t->n_vocab; k++) t->scores[k] = -1e30f;
    char *both = NULL;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges) {
        i++;
        const char *l = NULL, *r = NULL;
        size_t rl = 0;
        int ll = merge_parse(m, i, &l, &r, &rl, err);
        if (ll < 0) break;
        both = xrealloc(both, (size_t)ll + rl + 1);
        memcpy(both, l, (size_t)ll);
        memcpy(both + ll, r, rl);
        both[(size_t)ll + rl] = '\0';
        const char *parts[3] = {l, r, both};
        size_t lens[3] = {(size_t)ll, rl, (size_t)ll + rl};
        int ids[3];
        for (int k = 0; k < 3; k++) {
            ids[k] = strmap_get(&t->vocab, parts[k], lens[k]);
            if (ids[k] < 0 || ids[k] >= t->n_vocab) {
                seterr(err, "tokenizer.json: model.merges[%d] ('%.*s' + '%.*s'): '%.*s' is not in model.vocab", i,
                       (int)MIN(lens[0], 48), l, (int)MIN(rl, 48), r, (int)MIN(lens[k], 64), parts[k]);
                ll = SL_ERR;
                break;
            }
        }
        if (ll < 0) break;
        if (t->model == TOK_MODEL_BPE) bpe_merge_add(t, i, l, (size_t)ll, r, rl);
        else if (t->scores[ids[2]] == -1e30f) t->scores[ids[2]] = -(float)i;
    }
    free(both);
    return m ? SL_ERR : SL_OK; // the loop ran to the end only without an error
}

// t->pre: a table entry when the regex list is one, else the file's own list.
static void pre_set(Tokenizer *t, const HFPipeline *p, bool ignore_merges) {
    const PreTok *match = bpe_pre_match(p->regex, p->n_regex, ignore_merges);
    if (match) {
        t->pre = match;
        t->pre_name = xstrdup(match->names[0]);
        return;
    }
    PreTok *own = xcalloc(1, sizeof(PreTok));
    own->names[0] = "tokenizer.json";
    for (int i = 0; i < p->n_regex; i++) own->regex[i] = xstrdup(p->regex[i]);
    own->ignore_merges = ignore_merges;
    t->pre = own;
    t->pre_owned = true;
    t->pre_name = xstrdup("tokenizer.json");
}

static int hf_build(Tokenizer *t, const cJSON *tj, const cJSON *cfg, const cJSON *gen, char *err) {
    const cJSON *model = jget(tj, "model");
    if (!cJSON_IsObject(model)) return seterr(err, "tokenizer.json: 'model' is missing");
    const char *type = jstr(model, "type");
    if (!type && jget(model, "merges")) type = "BPE"; // files from before "type" was written
    if (!type || strcmp(type, "BPE") != 0)
        return seterr(err, "tokenizer.json: model.type '%.64s' is not supported (supported: BPE)",
                      type ? type : "(none)");
    const cJSON *vocab = jget(model, "vocab"), *merges = jget(model, "merges"), *added = jget(tj, "added_tokens");
    if (!cJSON_IsObject(vocab)) return seterr(err, "tokenizer.json: model.vocab is missing (or not an object)");
    if (!cJSON_IsArray(merges)) return seterr(err, "tokenizer.json: model.merges is missing (or not an array)");
    if (added && !cJSON_IsArray(added)) return seterr(err, "tokenizer.json: added_tokens is not an array");

    HFPipeline p = {0};
    if (pre_parse(jget(tj, "pre_tokenizer"), &p, err) != SL_OK) return SL_ERR;
    if (norm_parse(jget(tj, "normalizer"), &p, err) != SL_OK) return SL_ERR;
    bool byte_fallback = jbool(model, "byte_fallback", false);
    bool spm = byte_fallback || p.metaspace || p.spm_space;
    if (spm && (p.byte_level || p.n_regex))
        return seterr(err, "tokenizer.json: a SentencePiece-style model (byte_fallback / Metaspace) with a "
                           "ByteLevel, Split or Digits pre-tokenizer is not supported");
    if (!spm && !p.byte_level)
        return seterr(err, "tokenizer.json: a BPE model needs a ByteLevel pre-tokenizer (byte-level BPE) or "
                           "byte_fallback / Metaspace (SentencePiece style)");
    t->model = spm ? TOK_MODEL_SPM : TOK_MODEL_BPE;

    GGUFStr *texts = NULL;
    int n = 0, rc = vocab_collect(vocab, added, &texts, &n, err);
    if (rc == SL_OK) {
        char e2[ERR_MAX];
        rc = tok_vocab_init(t, n, texts, e2);
        if (rc != SL_OK) seterr(err, "tokenizer.json: %s", e2);
    }
    t->unk = -1;
    if (rc == SL_OK) rc = find_token(t, "tokenizer.json", "model.unk_token", jstr(model, "unk_token"), &t->unk, err);
    if (rc == SL_OK) set_types(t, texts, added, byte_fallback);
    free(texts);
    if (rc != SL_OK || set_specials(t, tj, cfg, gen, &p, err) != SL_OK || merges_load(t, merges, err) != SL_OK)
        return SL_ERR;

    if (t->model == TOK_MODEL_BPE) {
        pre_set(t, &p, jbool(model, "ignore_merges", false));
        char e2[ERR_MAX];
        if (bpe_finish(t, e2) != SL_OK) return seterr(err, "tokenizer.json: %s", e2);
    } else {
        spm_bytes_init(t);
    }
    tok_pieces_init(t);
    return SL_OK;
}

int tok_load_hf(Tokenizer **out, const char *dir, char *err) {
    *out = NULL;
    cJSON *tj = NULL, *cfg = NULL, *gen = NULL;
    int rc = json_read(dir, "tokenizer.json", true, &tj, err);
    if (rc == SL_OK) rc = json_read(dir, "tokenizer_config.json", false, &cfg, err);
    if (rc == SL_OK) rc = json_read(dir, "generation_config.json", false, &gen, err);
    Tokenizer *t = NULL;
    if (rc == SL_OK) {
        t = xcalloc(1, sizeof(Tokenizer));
        rc = hf_build(t, tj, cfg, gen, err);
    }
    cJSON_Delete(tj);
    cJSON_Delete(cfg);
    cJSON_Delete(gen);
    if (rc != SL_OK) {
        tok_free(t);
        return SL_ERR;
    }
    tok_log_loaded(t, dir);
    *out = t;
    return SL_OK;
}
