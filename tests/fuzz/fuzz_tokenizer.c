// fuzz_tokenizer: libFuzzer harness for tokenizer encode and decode (engine/tokenizer/): the
// default model's byte-level BPE (loaded once from TEST_MODEL_PATH, left out when the model is
// not there) and the two tiny test vocabularies (tests/data/tokenizer/: byte-level BPE and
// SentencePiece). The first input byte picks the tokenizer and the flags; the rest is the text.
// Checked: ids inside the vocabulary, decode(encode(text)) == text for well-formed text read
// without specials, well-formed UTF-8 out, and the streaming detokenizer's deltas adding up to
// tok_decode (the promise tokenizer.h makes); the same bytes read as ids decode the same way.
#define _GNU_SOURCE // memmem
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "engine/model/gguf.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/respond.h"
#include "tests/fuzz/fuzz.h"

#define MAX_TOKS 3
static GGUF ggufs[MAX_TOKS];
static Tokenizer *toks[MAX_TOKS];
static bool is_spm[MAX_TOKS];
// lossy[i][b]: the vocabulary of toks[i] cannot spell byte b (an ASCII byte), or the characters
// that start with lead byte b: encoding drops them, as llama.cpp does (SmolLM2 has no token for
// 0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, nor for the lead bytes 0xf1 and 0xf2)
static bool lossy[MAX_TOKS][256];
static int n_toks;

static bool round_trips(const Tokenizer *t, const char *s, size_t len) {
    int *ids = NULL, cap = 0;
    int n = tok_encode(t, s, len, false, false, &ids, &cap);
    size_t out_len;
    char *back = tok_decode(t, ids, n, false, &out_len);
    bool same = out_len == len && !memcmp(back, s, len);
    free(back);
    free(ids);
    return same;
}

static void find_lossy(int i) {
    for (int b = 1; b < 0x80; b++) {
        char c = (char)b;
        lossy[i][b] = !round_trips(toks[i], &c, 1);
    }
    for (int b = 0xc2; b <= 0xf4; b++) { // the smallest well-formed character with this lead
        unsigned char s[4] = {(unsigned char)b, b == 0xe0 ? 0xa0 : b == 0xf0 ? 0x90 : 0x80, 0x80, 0x80};
        lossy[i][b] = !round_trips(toks[i], (const char *)s, b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4);
    }
}

static bool spellable(int i, const char *text, size_t len) {
    for (size_t k = 0; k < len; k++)
        if (lossy[i][(unsigned char)text[k]]) return false;
    return true;
}

static void load(const char *path, bool spm) {
    char err[ERR_MAX];
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "fuzz_tokenizer: %s is missing: left out\n", path);
        return;
    }
    CHECK(gguf_open(&ggufs[n_toks], path, err) == SL_OK, "%s", err);
    CHECK(tok_load(&toks[n_toks], &ggufs[n_toks], err) == SL_OK, "%s", err);
    is_spm[n_toks] = spm;
    find_lossy(n_toks++);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fz_quiet();
    load(TEST_MODEL_PATH, false);
    load(TEST_DATA_DIR "/tokenizer/bpe-tiny.gguf", false);
    load(TEST_DATA_DIR "/tokenizer/spm-tiny.gguf", true);
    return 0;
}

// The streaming detokenizer fed ids one at a time must give tok_decode's text.
static void check_stream(const Tokenizer *t, const int *ids, int n, bool skip_special, const char *whole,
                         size_t whole_len) {
    int cap = detok_out_cap(t);
    char *piece = xmalloc((size_t)cap);
    SBuf acc = {0};
    Detok d;
    detok_init(&d, skip_special);
    d.first = true;
    for (int i = 0; i < n; i++) {
        int k = detok_feed(&d, t, ids[i], piece, cap);
        CHECK(k >= 0 && k < cap && fz_utf8_ok(piece, (size_t)k), "a delta that is not well-formed UTF-8");
        sbuf_put(&acc, piece, (size_t)k);
    }
    int k = detok_flush(&d, piece, cap);
    sbuf_put(&acc, piece, (size_t)k);
    CHECK(acc.len == whole_len && !memcmp(acc.data ? acc.data : "", whole, whole_len),
          "streamed text differs from tok_decode");
    sbuf_free(&acc);
    free(piece);
}

static void decode_checked(const Tokenizer *t, const int *ids, int n, bool skip_special) {
    size_t len;
    char *s = tok_decode(t, ids, n, skip_special, &len);
    CHECK(strlen(s) <= len && fz_utf8_ok(s, len), "tok_decode gave ill-formed UTF-8");
    check_stream(t, ids, n, skip_special, s, len);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || n_toks == 0) return 0;
    uint8_t flags = data[0];
    int pick = (flags & 3) % n_toks;
    const Tokenizer *t = toks[pick];
    bool add_bos = flags & 4, parse_special = flags & 8, skip_special = flags & 16;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int vocab = tok_vocab_size(t);

    int *ids = NULL, cap = 0;
    int n = tok_encode(t, text, len, add_bos, parse_special, &ids, &cap);
    CHECK(n >= 0 && n <= cap, "count %d, cap %d", n, cap);
    for (int i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < vocab, "id %d outside the vocabulary", ids[i]);
    // SentencePiece writes spaces as U+2581 "▁" (one in the text comes back as a space), and the
    // piece after a user-defined token such as <|user|> gets the space prefix (llama.cpp does the
    // same: tests/data/tokenizer/spm-tiny.txt marks those cases as not round-tripping)
    if (!add_bos && !parse_special && fz_utf8_ok(text, len) && !memchr(text, 0, len) && spellable(pick, text, len) &&
        !(is_spm[pick] && (memmem(text, len, "\xe2\x96\x81", 3) || memchr(text, '<', len)))) {
        size_t out_len;
        char *back = tok_decode(t, ids, n, false, &out_len);
        CHECK(out_len == len && !memcmp(back, text, len), "decode(encode(s)) != s: %zu bytes in, %zu out", len,
              out_len);
        free(back);
    }
    decode_checked(t, ids, n, skip_special);
    free(ids);

    // the same bytes as token ids, a few past either end of the vocabulary (a client's ids are
    // checked before decoding, but tok_piece promises "" for them)
    int m = (int)(len / 2);
    int *raw = xmalloc(((size_t)m + 1) * sizeof *raw);
    const uint8_t *b = data + 1;
    for (int i = 0; i < m; i++) raw[i] = (int)((b[2 * i] | b[2 * i + 1] << 8) % (vocab + 4)) - 2;
    for (int i = 0; i < m; i++) {
        size_t pl;
        const char *p = tok_piece(t, raw[i], &pl);
        CHECK(p && (raw[i] >= 0 && raw[i] < vocab ? 1 : pl == 0), "a piece for id %d outside the vocabulary", raw[i]);
    }
    decode_checked(t, raw, m, skip_special);
    free(raw);
    return 0;
}
