// spm.c: SentencePiece-style BPE (tokenizer.ggml.model = "llama"), as llama.cpp's
// llm_tokenizer_spm does it: spaces become U+2581 ("▁"), a space is prefixed at the start and
// after each special token (add_space_prefix), the text starts as one symbol per UTF-8
// character, and the adjacent pair whose concatenation is the vocab piece with the highest
// score merges first (leftmost on ties). Symbols that are not pieces at the end fall back to
// <0xNN> byte tokens.
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/tokenizer/tokenizer_impl.h"

typedef struct {
    int start, n; // bytes of the escaped text; n = 0 once merged into the left neighbour
    int prev, next;
} SpmSym;

typedef struct {
    float score;
    int left, right, size;
} SpmBigram;

static bool spm_before(const SpmBigram *a, const SpmBigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct {
    SpmBigram *v;
    int n, cap;
} SpmHeap;

static void spm_heap_push(SpmHeap *h, SpmBigram b) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->v = xrealloc(h->v, (size_t)h->cap * sizeof(SpmBigram));
    }
    int i = h->n++;
    while (i > 0 && spm_before(&b, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = b;
}

static SpmBigram spm_heap_pop(SpmHeap *h) {
    SpmBigram top = h->v[0], last = h->v[--h->n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && spm_before(&h->v[c + 1], &h->v[c])) c++;
        if (!spm_before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

static void spm_try_pair(const Tokenizer *t, const char *s, const SpmSym *sym, SpmHeap *h, int left, int right) {
    if (left < 0 || right < 0) return;
    // adjacent symbols are contiguous in s, so the pair's text is one slice
    int size = sym[left].n + sym[right].n;
    int id = strmap_get(&t->vocab, s + sym[left].start, (size_t)size);
    if (id < 0 || id >= t->n_vocab) return;
    spm_heap_push(h, (SpmBigram){t->scores[id], left, right, size});
}

// llama.cpp's character length from the lead byte alone (no validation: SentencePiece input
// is not sanitised, a stray byte is a one-byte symbol that falls back to <0xNN>)
static int spm_char_len(unsigned char c) {
    static const int len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

void spm_encode_text(const Tokenizer *t, const char *text, size_t len, bool prefix_space, TokOut *o) {
    // escape: ' ' -> "▁" (3 bytes)
    char *s = xmalloc(len * 3 + 4);
    size_t n = 0;
    if (prefix_space) {
        memcpy(s, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            s[n++] = text[i];
        }
    }
    CHECK(n < (size_t)1 << 31, "text too long for the tokenizer");
    if (n == 0) {
        free(s);
        return;
    }

    SpmSym *sym = xmalloc(n * sizeof(SpmSym));
    int n_sym = 0;
    for (size_t off = 0; off < n;) {
        int k = (int)MIN((size_t)spm_char_len((unsigned char)s[off]), n - off);
        sym[n_sym] = (SpmSym){(int)off, k, n_sym - 1, -1};
        off += (size_t)k;
        if (off < n) sym[n_sym].next = n_sym + 1;
        n_sym++;
    }

    SpmHeap h = {0};
    for (int i = 1; i < n_sym; i++) spm_try_pair(t, s, sym, &h, i - 1, i);
    while (h.n) {
        SpmBigram b = spm_heap_pop(&h);
        SpmSym *l = &sym[b.left], *r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; // stale
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        spm_try_pair(t, s, sym, &h, l->prev, b.left);
        spm_try_pair(t, s, sym, &h, b.left, l->next);
    }

    for (int i = 0; i != -1; i = sym[i].next) {
        int id = strmap_get(&t->vocab, s + sym[i].start, (size_t)sym[i].n);
        if (id >= 0 && id < t->n_vocab) {
            tokout_push(o, id);
            continue;
        }
        // merges only ever form pieces, so this is an unmerged character the vocab lacks
        for (int k = 0; k < sym[i].n; k++) {
            int bt = t->byte_tok[(unsigned char)s[sym[i].start + k]];
            if (bt < 0) bt = t->unk; // a vocab without byte pieces (llama.cpp would throw)
            if (bt >= 0) tokout_push(o, bt);
        }
    }
    free(h.v);
    free(sym);
    free(s);
}
