// decode.c: token pieces, whole-sequence decode, and the streaming detokenizer.
//
// One rule makes streaming and whole decoding agree: tok_decode() IS the detokenizer fed every
// id and flushed. The detokenizer emits only well-formed UTF-8: the bytes of a character split
// across tokens wait in Detok.pending until it completes; ill-formed bytes become U+FFFD, one
// per maximal ill-formed subpart (the Unicode recommendation Python and browsers follow).
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/tokenizer/tokenizer_impl.h"

const char *tok_piece(const Tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        *len = 0;
        return "";
    }
    *len = t->piece_len[id];
    return t->piece_arena + t->piece_off[id];
}

int detok_out_cap(const Tokenizer *t) {
    // worst case: every byte of a piece and of the pending prefix is ill-formed -> 3 bytes each
    return 3 * (t->max_piece + (int)sizeof(((Detok *)0)->pending)) + 1;
}

void detok_init(Detok *d, bool skip_special) {
    memset(d, 0, sizeof *d);
    d->skip_special = skip_special;
    d->first = false;
}

// Appends the well-formed characters of pending + src to out; keeps a trailing incomplete
// character in pending.
static int detok_emit(Detok *d, const char *src, size_t n, char *out, int out_cap) {
    unsigned char small[256];
    size_t total = (size_t)d->n_pending + n;
    unsigned char *buf = total <= sizeof small ? small : xmalloc(total);
    memcpy(buf, d->pending, (size_t)d->n_pending);
    memcpy(buf + d->n_pending, src, n);
    d->n_pending = 0;
    CHECK(3 * total + 1 <= (size_t)out_cap, "detok output buffer too small: use detok_out_cap()");

    int o = 0;
    for (size_t i = 0; i < total;) {
        int bad = 1;
        int k = utf8_char_len(buf + i, total - i, &bad);
        if (k > 0) {
            memcpy(out + o, buf + i, (size_t)k);
            o += k;
            i += (size_t)k;
        } else if (k < 0) { // the character continues in a later token
            d->n_pending = (int)(total - i);
            memcpy(d->pending, buf + i, (size_t)d->n_pending);
            break;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += (size_t)bad;
        }
    }
    out[o] = '\0';
    if (buf != small) free(buf);
    return o;
}

int detok_feed(Detok *d, const Tokenizer *t, int id, char *out, int out_cap) {
    size_t n;
    const char *p = tok_piece(t, id, &n);
    if (id >= 0 && id < t->n_vocab && d->skip_special &&
        (t->types[id] == TOK_TYPE_CONTROL || t->types[id] == TOK_TYPE_UNKNOWN))
        n = 0;
    if (d->first && !(id == t->bos && n == 0)) {
        // SentencePiece adds a space in front of the text; a decode from the start drops it,
        // unless a BOS is printed before it ("<s> Hello", as llama.cpp and Hugging Face do)
        if (t->model == TOK_MODEL_SPM && t->add_space_prefix && n > 0 && p[0] == ' ') {
            p++;
            n--;
        }
        d->first = false;
    }
    return detok_emit(d, p, n, out, out_cap);
}

int detok_flush(Detok *d, char *out, int out_cap) {
    CHECK(out_cap >= 4, "detok output buffer too small");
    int o = 0;
    if (d->n_pending) { // an incomplete character at the end of the stream
        memcpy(out, "\xef\xbf\xbd", 3);
        o = 3;
        d->n_pending = 0;
    }
    out[o] = '\0';
    return o;
}

char *tok_decode(const Tokenizer *t, const int *ids, int n, bool skip_special, size_t *len_out) {
    int cap = detok_out_cap(t);
    char *piece = xmalloc((size_t)cap);
    size_t len = 0, size = 64;
    char *s = xmalloc(size);
    Detok d;
    detok_init(&d, skip_special);
    d.first = true;
    for (int i = 0; i <= n; i++) {
        int k = i < n ? detok_feed(&d, t, ids[i], piece, cap) : detok_flush(&d, piece, cap);
        if (len + (size_t)k + 1 > size) {
            while (len + (size_t)k + 1 > size) size *= 2;
            s = xrealloc(s, size);
        }
        memcpy(s + len, piece, (size_t)k);
        len += (size_t)k;
    }
    s[len] = '\0';
    free(piece);
    if (len_out) *len_out = len;
    return s;
}
