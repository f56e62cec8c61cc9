// bpe.c: byte-level BPE (tokenizer.ggml.model = "gpt2"): the pre-tokenizer regexes,
// the GPT-2 byte <-> code point mapping, and merges by rank.
//
// Pre-tokenization is llama.cpp's (unicode.cpp, unicode_regex_split): the regexes of the
// model's tokenizer.ggml.pre run one after the other; each splits every piece left by the
// previous one into its matches AND the unmatched gaps between them, and sees only that piece
// (so a lookahead at its end sees the end of the text). PCRE2 with UTF + UCP gives \p{L},
// \p{N}, \s and lookahead their Unicode meaning without tables of our own.
//
// Merging is llama.cpp's too: within one pre-token, repeatedly merge the adjacent pair with the
// lowest merge rank (leftmost on ties) until no pair has a rank. Strings are interned as ids
// (vocab ids, then merge strings that are not tokens), so a pair lookup is one hash probe.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/tokenizer/tokenizer_impl.h"

// ---- the pre-tokenizers: llama.cpp's regex strings (llama-vocab.cpp), their non-ASCII
// characters written as \x{...} so no editor or normalizer can change them

#define RE_GPT2 TOK_RE_GPT2
#define RE_LLAMA3                                                                             \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                              \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_CJK "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"

static const PreTok PRE_TOKENIZERS[] = {
    {.names = {"default"},
     .regex = {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {.names = {"gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4"}, .regex = {RE_GPT2}},
    // StarCoder family: every digit on its own, then GPT-2
    {.names = {"smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva-7b"},
     .regex = {"\\p{N}", RE_GPT2}},
    {.names = {"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"},
     .regex = {RE_LLAMA3}, .ignore_merges = true, .add_bos = true},
    {.names = {"dbrx", "smaug-bpe"}, .regex = {RE_LLAMA3}},
    {.names = {"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"}, .regex = {RE_QWEN2}},
    {.names = {"deepseek-llm"},
     .regex = {"[\r\n]",
               "\\s?["
               "A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"
               "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}"
               "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}"
               "\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}"
               "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"
               "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}"
               "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}"
               "\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}"
               "\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}"
               "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}"
               "\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}"
               "\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}"
               "\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}"
               "\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}"
               "\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}"
               "\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}"
               "\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}"
               "\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}"
               "]+",               "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+", "\\s+$", RE_CJK, "\\p{N}+"}},
    {.names = {"deepseek-coder"},
     .regex = {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}"}},
};

const PreTok *bpe_pre_find(const char *name) {
    for (size_t i = 0; i < ARRAY_LEN(PRE_TOKENIZERS); i++)
        for (int k = 0; k < 8 && PRE_TOKENIZERS[i].names[k]; k++)
            if (strcmp(PRE_TOKENIZERS[i].names[k], name) == 0) return &PRE_TOKENIZERS[i];
    return NULL;
}

const PreTok *bpe_pre_match(const char *const *regex, int n, bool ignore_merges) {
    for (size_t i = 0; i < ARRAY_LEN(PRE_TOKENIZERS); i++) {
        const PreTok *p = &PRE_TOKENIZERS[i];
        int k = 0;
        while (k < n && k < TOK_MAX_REGEX && p->regex[k] && strcmp(p->regex[k], regex[k]) == 0) k++;
        if (k == n && (k == TOK_MAX_REGEX || !p->regex[k]) && p->ignore_merges == ignore_merges) return p;
    }
    return NULL;
}

void bpe_pre_list(char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ARRAY_LEN(PRE_TOKENIZERS); i++)
        for (int k = 0; k < 8 && PRE_TOKENIZERS[i].names[k]; k++)
            if (n < cap)
                n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", PRE_TOKENIZERS[i].names[k]);
}

// ---- merge table

static uint32_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static PairSlot *pairmap_slot(const PairMap *m, uint64_t key) {
    for (uint32_t i = pair_hash(key) & m->mask;; i = (i + 1) & m->mask) {
        PairSlot *s = &m->slots[i];
        if (s->key == key || s->key == 0) return s;
    }
}

static const PairSlot *pairmap_get(const PairMap *m, int left, int right) {
    uint64_t key = ((uint64_t)(uint32_t)(left + 1) << 32) | (uint32_t)(right + 1);
    const PairSlot *s = pairmap_slot(m, key);
    return s->key ? s : NULL;
}

// The id of a string: its vocab id, or a new id past the vocab for a merge string that is
// not a token (llama.cpp compares strings; distinct strings <=> distinct ids here).
static int intern(Tokenizer *t, const char *s, size_t len) {
    int id = strmap_get(&t->vocab, s, len);
    if (id >= 0) return id;
    if ((t->n_extra & (t->n_extra - 1)) == 0)
        t->extra = xrealloc(t->extra, (size_t)MAX(16, t->n_extra * 2) * sizeof(char *));
    char *copy = xstrndup(s, len);
    t->extra[t->n_extra] = copy;
    id = t->n_vocab + t->n_extra++;
    strmap_put(&t->vocab, copy, len, id);
    return id;
}

void bpe_merges_reserve(Tokenizer *t, uint64_t n) {
    uint32_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    t->merges.slots = xcalloc(cap, sizeof(PairSlot));
    t->merges.mask = cap - 1;
}

void bpe_merge_add(Tokenizer *t, int rank, const char *left_s, size_t ll, const char *right_s, size_t rl) {
    char small[256];
    char *both = ll + rl <= sizeof small ? small : xmalloc(ll + rl);
    memcpy(both, left_s, ll);
    memcpy(both + ll, right_s, rl);
    int left = intern(t, left_s, ll), right = intern(t, right_s, rl);
    int merged = intern(t, both, ll + rl);
    if (both != small) free(both);
    uint64_t key = ((uint64_t)(uint32_t)(left + 1) << 32) | (uint32_t)(right + 1);
    CHECK(t->merges.count < t->merges.mask, "merge table full: bpe_merges_reserve was not called");
    PairSlot *slot = pairmap_slot(&t->merges, key);
    if (slot->key) return; // the first rank wins, as with std::map::emplace
    *slot = (PairSlot){key, (int32_t)rank, merged};
    t->merges.count++;
    t->n_merges++;
}

static int load_merges(Tokenizer *t, const GGUF *g, char *err) {
    const GGUFKV *kv = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_TYPE_STRING);
    if (!kv) return seterr(err, "tokenizer.ggml.merges is missing (byte-level BPE needs it)");
    if (kv->arr_len > (1u << 28)) return seterr(err, "tokenizer.ggml.merges is too long");
    bpe_merges_reserve(t, kv->arr_len);
    for (uint64_t i = 0; i < kv->arr_len; i++) {
        GGUFStr s = kv->arr_strs[i];
        // "left right", split at the first space after the first byte (llama.cpp's rule)
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp) continue; // llama.cpp files it under ("", ""), which never matches
        size_t ll = (size_t)(sp - s.ptr), rl = s.len - ll - 1;
        bpe_merge_add(t, (int)i, s.ptr, ll, sp + 1, rl);
    }
    return SL_OK;
}

// ---- GPT-2 byte mapping: printable bytes stand for themselves, the others for U+0100...

static void init_bytes(Tokenizer *t) {
    int n = 0;
    for (int i = 0; i < 0x144; i++) t->byte_dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        int cp = printable ? b : 256 + n++;
        t->byte_dec[cp] = (int16_t)b;
        if (cp < 0x80) {
            t->byte_enc[b][0] = (char)cp;
            t->byte_enc_len[b] = 1;
        } else {
            t->byte_enc[b][0] = (char)(0xc0 | (cp >> 6));
            t->byte_enc[b][1] = (char)(0x80 | (cp & 0x3f));
            t->byte_enc_len[b] = 2;
        }
        int id = strmap_get(&t->vocab, t->byte_enc[b], t->byte_enc_len[b]);
        t->byte_sym[b] = id;
        char c = (char)b;
        id = strmap_get(&t->vocab, &c, 1);
        t->single_byte_tok[b] = id < t->n_vocab ? id : -1;
    }
}

void bpe_piece(const Tokenizer *t, const char *text, size_t len, char *out, size_t *out_len) {
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        const unsigned char *s = (const unsigned char *)text + i;
        int k = utf8_char_len(s, len - i, NULL);
        int cp = -1;
        if (k == 1) cp = s[0];
        if (k == 2) cp = ((s[0] & 0x1f) << 6) | (s[1] & 0x3f);
        if (cp >= 0 && cp < 0x144 && t->byte_dec[cp] >= 0) {
            out[o++] = (char)t->byte_dec[cp];
            i += (size_t)k;
        } else { // not a mapped code point: keep its bytes (llama.cpp prints an [UNK_BYTE] marker)
            size_t n = k > 0 ? (size_t)k : 1;
            memcpy(out + o, s, n);
            o += n;
            i += n;
        }
    }
    *out_len = o;
}

int bpe_finish(Tokenizer *t, char *err) {
    init_bytes(t);
    for (int i = 0; i < TOK_MAX_REGEX && t->pre->regex[i]; i++) {
        int code;
        PCRE2_SIZE off;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)t->pre->regex[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &code, &off, NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            // our own table is wrong: a bug; a regex from a tokenizer.json: the file's problem
            if (!t->pre_owned)
                DIE("pre-tokenizer %s regex %d: %s at %zu", t->pre->names[0], i, (char *)msg, (size_t)off);
            return seterr(err, "pre-tokenizer regex %d does not compile: %s at offset %zu", i, (char *)msg,
                          (size_t)off);
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // optional: falls back to the interpreter
        t->re[t->n_re++] = re;
    }
    return SL_OK;
}

int bpe_init(Tokenizer *t, const GGUF *g, char *err) {
    if (load_merges(t, g, err) != SL_OK) return SL_ERR;
    return bpe_finish(t, err);
}

void bpe_free(Tokenizer *t) {
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    for (int i = 0; i < t->n_extra; i++) free(t->extra[i]);
    free(t->extra);
    free(t->merges.slots);
}

// ---- pre-tokenization

typedef struct {
    int start, len;
} Span;

typedef struct {
    Span *v;
    int n, cap;
} SpanList;

static void span_push(SpanList *l, int start, int len) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = xrealloc(l->v, (size_t)l->cap * sizeof(Span));
    }
    l->v[l->n++] = (Span){start, len};
}

// Splits each span of `in` into the regex's matches and the gaps between them.
static void split_regex(const pcre2_code *re, pcre2_match_data *md, const char *s, const SpanList *in,
                        SpanList *out) {
    out->n = 0;
    for (int i = 0; i < in->n; i++) {
        PCRE2_SPTR subj = (PCRE2_SPTR)(s + in->v[i].start);
        size_t len = (size_t)in->v[i].len, pos = 0, prev = 0;
        uint32_t opts = 0;
        while (pos <= len) {
            int rc = pcre2_match(re, subj, len, pos, opts | PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH && opts) { // no non-empty match here: step one character
                if (pos >= len) break;
                int k = utf8_char_len(subj + pos, len - pos, NULL);
                pos += k > 0 ? (size_t)k : 1;
                opts = 0;
                continue;
            }
            if (rc < 0) {
                // no match, or a resource limit on a pathological input: the rest stays one piece
                if (rc != PCRE2_ERROR_NOMATCH) log_warn("tokenizer: regex match failed (%d)", rc);
                break;
            }
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (ms > prev) span_push(out, in->v[i].start + (int)prev, (int)(ms - prev));
            if (me > ms) span_push(out, in->v[i].start + (int)ms, (int)(me - ms));
            prev = me;
            pos = me;
            // an empty match only marks a split point; look for a non-empty one at the same place
            opts = me == ms ? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED : 0;
            if (me == ms && me == len) break;
        }
        if (prev < len) span_push(out, in->v[i].start + (int)prev, (int)(len - prev));
    }
}

// ---- merging one pre-token

typedef struct {
    int id;          // interned string id, -1 for a byte whose character is not in the vocab
    int start, n;    // bytes of the word; n = 0 once merged into the left neighbour
    int prev, next;
} Sym;

typedef struct {
    int rank, left, right, lid, rid, merged;
} Bigram;

static bool bigram_before(const Bigram *a, const Bigram *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

typedef struct {
    Sym *sym;
    Bigram *heap;
    int n_heap, cap_sym, cap_heap;
    char *enc; // the word in GPT-2 characters, for ignore_merges
} Scratch;

static void heap_push(Scratch *w, Bigram b) {
    if (w->n_heap == w->cap_heap) {
        w->cap_heap = w->cap_heap ? w->cap_heap * 2 : 64;
        w->heap = xrealloc(w->heap, (size_t)w->cap_heap * sizeof(Bigram));
    }
    int i = w->n_heap++;
    while (i > 0 && bigram_before(&b, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = b;
}

static Bigram heap_pop(Scratch *w) {
    Bigram top = w->heap[0], last = w->heap[--w->n_heap];
    int i = 0, n = w->n_heap;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!bigram_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void try_pair(const Tokenizer *t, Scratch *w, int left, int right) {
    if (left < 0 || right < 0) return;
    int lid = w->sym[left].id, rid = w->sym[right].id;
    if (lid < 0 || rid < 0) return;
    const PairSlot *p = pairmap_get(&t->merges, lid, rid);
    if (p) heap_push(w, (Bigram){p->rank, left, right, lid, rid, p->merged});
}

static void emit_fallback(const Tokenizer *t, const unsigned char *bytes, int n, TokOut *o) {
    // llama.cpp looks up each single byte of the symbol's GPT-2 text; most are not tokens
    // and are dropped (this only happens for bytes the vocab lacks)
    for (int i = 0; i < n; i++) {
        const char *e = t->byte_enc[bytes[i]];
        for (int k = 0; k < t->byte_enc_len[bytes[i]]; k++) {
            int id = t->single_byte_tok[(unsigned char)e[k]];
            if (id >= 0) tokout_push(o, id);
        }
    }
}

static void bpe_word(const Tokenizer *t, Scratch *w, const unsigned char *word, int n, TokOut *o) {
    if (t->pre->ignore_merges) {
        size_t el = 0;
        for (int i = 0; i < n; i++) {
            memcpy(w->enc + el, t->byte_enc[word[i]], t->byte_enc_len[word[i]]);
            el += t->byte_enc_len[word[i]];
        }
        int id = strmap_get(&t->vocab, w->enc, el);
        if (id >= 0 && id < t->n_vocab) {
            tokout_push(o, id);
            return;
        }
    }
    for (int i = 0; i < n; i++)
        w->sym[i] = (Sym){t->byte_sym[word[i]], i, 1, i - 1, i + 1 < n ? i + 1 : -1};
    w->n_heap = 0;
    for (int i = 1; i < n; i++) try_pair(t, w, i - 1, i);
    while (w->n_heap) {
        Bigram b = heap_pop(w);
        Sym *l = &w->sym[b.left], *r = &w->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->id != b.lid || r->id != b.rid) continue; // stale
        l->id = b.merged;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = b.left;
        try_pair(t, w, l->prev, b.left);
        try_pair(t, w, b.left, l->next);
    }
    for (int i = 0; i != -1; i = w->sym[i].next) {
        const Sym *s = &w->sym[i];
        if (s->id >= 0 && s->id < t->n_vocab) tokout_push(o, s->id);
        else emit_fallback(t, word + s->start, s->n, o);
    }
}

// Replaces ill-formed UTF-8 by U+FFFD, one per bad byte, as llama.cpp's decoder does; the
// regexes then run with PCRE2_NO_UTF_CHECK (the check would be O(n) per match call).
static size_t utf8_sanitize(const char *in, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int k = utf8_char_len((const unsigned char *)in + i, n - i, NULL);
        if (k > 0) {
            memcpy(out + o, in + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    return o;
}

void bpe_encode_text(const Tokenizer *t, const char *text, size_t len, TokOut *o) {
    char *s = xmalloc(len * 3 + 1);
    size_t n = utf8_sanitize(text, len, s);
    CHECK(n < (size_t)1 << 31, "text too long for the tokenizer");

    SpanList a = {0}, b = {0};
    span_push(&a, 0, (int)n);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    for (int i = 0; i < t->n_re; i++) {
        split_regex(t->re[i], md, s, &a, &b);
        SpanList tmp = a;
        a = b;
        b = tmp;
    }
    pcre2_match_data_free(md);

    int max_len = 0;
    for (int i = 0; i < a.n; i++) max_len = MAX(max_len, a.v[i].len);
    Scratch w = {0};
    w.sym = xmalloc((size_t)MAX(max_len, 1) * sizeof(Sym));
    w.enc = t->pre->ignore_merges ? xmalloc((size_t)max_len * 2 + 1) : NULL;
    for (int i = 0; i < a.n; i++)
        bpe_word(t, &w, (const unsigned char *)s + a.v[i].start, a.v[i].len, o);

    free(w.sym);
    free(w.heap);
    free(w.enc);
    free(a.v);
    free(b.v);
    free(s);
}
