// stop.c: stop tokens, min_tokens bans and stop strings across token boundaries. See stop.h.
#define _GNU_SOURCE // memmem
#include "engine/sampling/stop.h"

#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int stop_spec_init(StopSpec *s, const char *const *strs, int n_strs, const int32_t *token_ids, int n_token_ids,
                   int vocab, int min_tokens, bool ignore_eos, bool include_stop_str, char *err) {
    memset(s, 0, sizeof(*s));
    if (n_strs < 0 || n_strs > STOP_MAX_STRINGS)
        return seterr(err, "Invalid 'stop': at most %d stop strings, got %d", STOP_MAX_STRINGS, n_strs);
    if (n_token_ids < 0 || n_token_ids > STOP_MAX_TOKEN_IDS)
        return seterr(err, "Invalid 'stop_token_ids': at most %d ids, got %d", STOP_MAX_TOKEN_IDS, n_token_ids);
    if (min_tokens < 0) return seterr(err, "Invalid 'min_tokens': must be >= 0, got %d", min_tokens);
    for (int i = 0; i < n_strs; i++) {
        size_t len = strs[i] ? strlen(strs[i]) : 0;
        if (len == 0) return seterr(err, "Invalid 'stop': stop string %d is empty", i);
        if (len > STOP_MAX_STRING_LEN)
            return seterr(err, "Invalid 'stop': stop string %d has %zu bytes, at most %d", i, len,
                          STOP_MAX_STRING_LEN);
    }
    for (int i = 0; i < n_token_ids; i++)
        if (token_ids[i] < 0 || token_ids[i] >= vocab)
            return seterr(err, "Invalid 'stop_token_ids': %d is not a token id (vocabulary of %d)", token_ids[i],
                          vocab);
    s->n_strs = n_strs;
    if (n_strs > 0) {
        s->strs = xmalloc((size_t)n_strs * sizeof(char *));
        s->lens = xmalloc((size_t)n_strs * sizeof(size_t));
        for (int i = 0; i < n_strs; i++) {
            s->strs[i] = xstrdup(strs[i]);
            s->lens[i] = strlen(strs[i]);
            s->max_len = MAX(s->max_len, s->lens[i]);
        }
    }
    s->n_token_ids = n_token_ids;
    if (n_token_ids > 0) {
        s->token_ids = xmalloc((size_t)n_token_ids * sizeof(int32_t));
        memcpy(s->token_ids, token_ids, (size_t)n_token_ids * sizeof(int32_t));
    }
    s->min_tokens = min_tokens;
    s->ignore_eos = ignore_eos;
    s->include_stop_str = include_stop_str;
    return SL_OK;
}

void stop_spec_free(StopSpec *s) {
    for (int i = 0; i < s->n_strs; i++) free(s->strs[i]);
    free(s->strs);
    free(s->lens);
    free(s->token_ids);
    memset(s, 0, sizeof(*s));
}

int stop_min_tokens_ban(const StopSpec *s, const int32_t *eog_ids, int n_eog, int num_out, int32_t *out) {
    if (num_out >= s->min_tokens) return 0;
    int n = 0;
    if (!s->ignore_eos)
        for (int i = 0; i < n_eog; i++) out[n++] = eog_ids[i];
    for (int i = 0; i < s->n_token_ids; i++) out[n++] = s->token_ids[i];
    return n;
}

StopKind stop_check_token(const StopSpec *s, const Tokenizer *t, int32_t token, int num_out) {
    if (num_out < s->min_tokens) return STOP_NONE;
    if (!s->ignore_eos && tok_is_eog(t, token)) return STOP_EOS;
    for (int i = 0; i < s->n_token_ids; i++)
        if (s->token_ids[i] == token) return STOP_TOKEN;
    return STOP_NONE;
}

// ----------------------------------------------------------------------------
// text

void stop_text_init(StopText *t, const StopSpec *s, size_t max_delta) {
    // held back: < max_len bytes plus up to 3 more to reach a character boundary; then one delta
    t->cap = s->max_len + 4 + max_delta;
    t->buf = xmalloc(t->cap);
    t->len = 0;
}

void stop_text_free(StopText *t) {
    free(t->buf);
    memset(t, 0, sizeof(*t));
}

static bool utf8_is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

int stop_text_push(StopText *t, const StopSpec *s, const char *delta, size_t n, bool check, bool final,
                   size_t *n_final) {
    CHECK(t->len + n <= t->cap, "stop text overflow: %zu + %zu > %zu", t->len, n, t->cap);
    size_t old_len = t->len;
    memcpy(t->buf + t->len, delta, n);
    t->len += n;

    // The earliest stop string that ends in the new bytes (ties: the first listed).
    int match = -1;
    size_t match_at = 0;
    if (check && n > 0) {
        for (int i = 0; i < s->n_strs; i++) {
            size_t sl = s->lens[i];
            if (sl > t->len) continue;
            // a match ending in the new bytes starts at or after old_len - sl + 1
            size_t from = old_len + 1 > sl ? old_len + 1 - sl : 0;
            const char *p = memmem(t->buf + from, t->len - from, s->strs[i], sl);
            if (p && (match < 0 || (size_t)(p - t->buf) < match_at)) {
                match = i;
                match_at = (size_t)(p - t->buf);
            }
        }
    }
    if (match >= 0) {
        t->len = match_at + (s->include_stop_str ? s->lens[match] : 0);
        *n_final = t->len;
        return match;
    }
    if (final || s->n_strs == 0) {
        *n_final = t->len;
        return -1;
    }
    // hold back the tail that could still begin a stop string, cut at a character boundary
    size_t keep = s->max_len - 1;
    size_t cut = t->len > keep ? t->len - keep : 0;
    while (cut > 0 && utf8_is_continuation((unsigned char)t->buf[cut])) cut--;
    *n_final = cut;
    return -1;
}

void stop_text_consume(StopText *t, size_t n) {
    CHECK(n <= t->len);
    memmove(t->buf, t->buf + n, t->len - n);
    t->len -= n;
}
