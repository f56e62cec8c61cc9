// test_tokenizer.c: the tokenizer against llama.cpp's golden tokenizations
// (tests/data/tokenizer/, made by scripts/make-golden-tokens.py), decode round trips, the
// streaming detokenizer, special tokens, and load errors.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/model/gguf.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tokenizer_impl.h"
#include "tests/unit/test.h"
#include "tests/unit/tok_cases.h"

#define TOK_DIR TEST_DATA_DIR "/tokenizer"

static GGUF g_model, g_spm;
static Tokenizer *t_model, *t_spm;

// A second, independent UTF-8 check (RFC 3629 table) for the detokenizer's output.
static bool utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;
        if (c <= 0x7f) k = 1;
        else if (c >= 0xc2 && c <= 0xdf) k = 2;
        else if (c == 0xe0) k = 3, lo = 0xa0;
        else if (c == 0xed) k = 3, hi = 0x9f;
        else if (c >= 0xe1 && c <= 0xef) k = 3;
        else if (c == 0xf0) k = 4, lo = 0x90;
        else if (c == 0xf4) k = 4, hi = 0x8f;
        else if (c >= 0xf1 && c <= 0xf3) k = 4;
        else return false;
        if (i + k > n) return false;
        for (size_t j = 1; j < k; j++) {
            unsigned b = s[i + j];
            if (j == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) return false;
        }
        i += k;
    }
    return true;
}

static void print_text(const char *s, size_t n) {
    for (size_t i = 0; i < n && i < 80; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != 0x7f) fputc(c, stderr);
        else fprintf(stderr, "\\x%02x", c);
    }
}

// Encodes every case and compares with llama.cpp's ids; returns the number that differ.
static int golden_check(const Tokenizer *t, const Cases *c, const char *name) {
    int bad = 0, *ids = NULL, cap = 0;
    for (int i = 0; i < c->n; i++) {
        const Case *k = &c->v[i];
        bool bos = (k->flags & 2) && tok_add_bos(t);
        int n = tok_encode(t, k->text, k->len, bos, k->flags & 1, &ids, &cap);
        int first = -1;
        for (int j = 0; j < MAX(n, k->n_ids) && first < 0; j++)
            if (j >= n || j >= k->n_ids || ids[j] != k->ids[j]) first = j;
        if (first >= 0) {
            if (bad < 8) {
                fprintf(stderr, "  %s case %d (flags %d) \"", name, i, k->flags);
                print_text(k->text, k->len);
                fprintf(stderr, "\": first difference at index %d: got %d, want %d (n %d vs %d)\n", first,
                        first < n ? ids[first] : -1, first < k->n_ids ? k->ids[first] : -1, n, k->n_ids);
            }
            bad++;
        }
    }
    free(ids);
    fprintf(stderr, "  %s: %d/%d cases match llama.cpp\n", name, c->n - bad, c->n);
    return bad;
}

static void check_piece_hashes(const Tokenizer *t, const char *path);

// ---- default model (byte-level BPE, pre = smollm)

static void test_golden_smollm(void) {
    Cases c = cases_read(TOK_DIR "/smollm2.txt");
    ASSERT(c.n >= 200, "only %d golden cases", c.n);
    EXPECT_EQ_INT(golden_check(t_model, &c, "smollm2"), 0);
    cases_free(&c);
}

static void test_golden_other_pretokenizers(void) {
    static const char *pres[] = {"gpt-2", "llama-bpe", "qwen2", "deepseek-llm", "deepseek-coder", "default"};
    for (size_t p = 0; p < ARRAY_LEN(pres); p++) {
        char path[512], err[ERR_MAX];
        snprintf(path, sizeof path, TOK_DIR "/pre-%s.txt", pres[p]);
        Cases c = cases_read(path);
        EXPECT(c.n >= 100, "%s: %d cases", pres[p], c.n);
        Tokenizer *t = NULL;
        EXPECT(tok_load_pre(&t, &g_model, pres[p], err) == SL_OK, "%s", err);
        if (t) EXPECT(golden_check(t, &c, pres[p]) == 0, "pre %s", pres[p]);
        tok_free(t);
        cases_free(&c);
    }
}

static void test_decode_roundtrip(void) {
    Cases c = cases_read(TOK_DIR "/smollm2.txt");
    int n_rt = 0, bad = 0;
    for (int i = 0; i < c.n; i++) {
        const Case *k = &c.v[i];
        size_t len;
        char *s = tok_decode(t_model, k->ids, k->n_ids, false, &len);
        // llama.cpp's llama_detokenize (smollm does no space clean-up) is the reference...
        if (len != k->detok_len || memcmp(s, k->detok, len) != 0) {
            if (bad++ < 5) {
                fprintf(stderr, "  decode of case %d \"", i);
                print_text(k->text, k->len);
                fprintf(stderr, "\" differs from llama.cpp's: \"");
                print_text(s, len);
                fprintf(stderr, "\"\n");
            }
        }
        // ...and where llama.cpp round-trips, so do we
        if (k->roundtrip) {
            n_rt++;
            EXPECT(len == k->len && memcmp(s, k->text, len) == 0, "case %d does not round-trip", i);
        }
        free(s);
    }
    EXPECT_EQ_INT(bad, 0);
    EXPECT(n_rt >= c.n - 2, "only %d of %d golden strings round-trip in llama.cpp", n_rt, c.n);
    fprintf(stderr, "  decode: %d/%d equal llama.cpp's detokenize, %d round-trip\n", c.n - bad, c.n, n_rt);
    cases_free(&c);
}

// Feeds ids one at a time; every delta must be well-formed and the whole must equal tok_decode.
static bool stream_matches(const Tokenizer *t, const int *ids, int n, bool skip, bool first) {
    int cap = detok_out_cap(t);
    char *out = xmalloc((size_t)cap), *all = xmalloc((size_t)cap * (size_t)(n + 1) + 1);
    size_t len = 0;
    Detok d;
    detok_init(&d, skip);
    d.first = first;
    bool ok = true;
    for (int i = 0; i <= n; i++) {
        int k = i < n ? detok_feed(&d, t, ids[i], out, cap) : detok_flush(&d, out, cap);
        if (!utf8_valid((unsigned char *)out, (size_t)k) || (int)strlen(out) > k) ok = false;
        memcpy(all + len, out, (size_t)k);
        len += (size_t)k;
    }
    size_t dl;
    char *dec = tok_decode(t, ids, n, skip, &dl);
    if (first && (dl != len || memcmp(dec, all, len) != 0)) ok = false;
    free(dec);
    free(out);
    free(all);
    return ok;
}

static void test_detok_stream_golden(void) {
    const char *files[] = {TOK_DIR "/smollm2.txt", TOK_DIR "/spm-tiny.txt"};
    const Tokenizer *toks[] = {t_model, t_spm};
    for (int f = 0; f < 2; f++) {
        Cases c = cases_read(files[f]);
        int bad = 0;
        for (int i = 0; i < c.n; i++)
            for (int skip = 0; skip < 2; skip++)
                if (!stream_matches(toks[f], c.v[i].ids, c.v[i].n_ids, skip, true)) {
                    if (bad++ < 5) fprintf(stderr, "  %s case %d skip %d: stream differs\n", files[f], i, skip);
                }
        EXPECT_EQ_INT(bad, 0);
        cases_free(&c);
    }
}

// Emoji and CJK fed one byte token at a time: nothing comes out until the character completes.
static void test_detok_split_characters(void) {
    const char *texts[] = {"😀", "日本", "👨‍👩‍👧", "é!"};
    for (size_t i = 0; i < ARRAY_LEN(texts); i++) {
        const unsigned char *s = (const unsigned char *)texts[i];
        size_t n = strlen(texts[i]);
        int ids[64], cap = detok_out_cap(t_model);
        char *out = xmalloc((size_t)cap), all[256];
        size_t len = 0;
        for (size_t j = 0; j < n; j++) ids[j] = t_model->byte_sym[s[j]];
        Detok d;
        detok_init(&d, false);
        for (size_t j = 0; j < n; j++) {
            ASSERT(ids[j] >= 0);
            int k = detok_feed(&d, t_model, ids[j], out, cap);
            EXPECT(utf8_valid((unsigned char *)out, (size_t)k));
            // a delta appears exactly when a character is complete
            bool complete = j + 1 == n || (s[j + 1] & 0xc0) != 0x80;
            EXPECT(complete ? k > 0 : k == 0, "text %zu byte %zu: delta %d", i, j, k);
            memcpy(all + len, out, (size_t)k);
            len += (size_t)k;
        }
        EXPECT_EQ_INT(detok_flush(&d, out, cap), 0);
        EXPECT(len == n && memcmp(all, texts[i], n) == 0);
        free(out);
    }

    // an incomplete character at the end, a stray continuation byte, an invalid lead byte
    int cap = detok_out_cap(t_model);
    char *out = xmalloc((size_t)cap);
    Detok d;
    detok_init(&d, false);
    EXPECT_EQ_INT(detok_feed(&d, t_model, t_model->byte_sym[0xf0], out, cap), 0);
    EXPECT_EQ_INT(detok_feed(&d, t_model, t_model->byte_sym[0x9f], out, cap), 0);
    EXPECT_EQ_INT(detok_flush(&d, out, cap), 3);
    EXPECT_STR_EQ(out, "\xef\xbf\xbd");
    EXPECT_EQ_INT(detok_feed(&d, t_model, t_model->byte_sym[0x80], out, cap), 3);
    EXPECT_STR_EQ(out, "\xef\xbf\xbd");
    EXPECT_EQ_INT(detok_feed(&d, t_model, t_model->byte_sym[0xe2], out, cap), 0);
    EXPECT_EQ_INT(detok_feed(&d, t_model, tok_find(t_model, "A"), out, cap), 4); // E2 then 'A'
    EXPECT_STR_EQ(out, "\xef\xbf\xbd" "A");
    for (int b = 0xf5; b <= 0xff; b++) // a byte that never occurs in UTF-8, if the vocab has one
        if (t_model->byte_sym[b] >= 0) {
            EXPECT_EQ_INT(detok_feed(&d, t_model, t_model->byte_sym[b], out, cap), 3);
            break;
        }
    int ids[] = {t_model->byte_sym[0xe2], t_model->byte_sym[0x82], tok_find(t_model, "A")};
    size_t len;
    char *s = tok_decode(t_model, ids, 3, false, &len);
    EXPECT_STR_EQ(s, "\xef\xbf\xbd" "A"); // E2 82 is one maximal ill-formed subpart
    EXPECT(stream_matches(t_model, ids, 3, false, true));
    free(s);
    free(out);
}

static void test_special_tokens(void) {
    const Tokenizer *t = t_model;
    int im_start = tok_find(t, "<|im_start|>"), im_end = tok_find(t, "<|im_end|>");
    EXPECT_EQ_INT(im_start, 1);
    EXPECT_EQ_INT(im_end, 2);
    EXPECT_EQ_INT(tok_find(t, "<|no such token|>"), -1);
    EXPECT(tok_is_special(t, im_start) && tok_is_special(t, 0) && !tok_is_special(t, 100));
    EXPECT(tok_is_eog(t, im_end) && tok_is_eog(t, 0) && !tok_is_eog(t, im_start) && !tok_is_eog(t, 100));

    const char *text = "<|im_start|>user\nhi<|im_end|>";
    int *ids = NULL, cap = 0;
    int n = tok_encode(t, text, strlen(text), false, true, &ids, &cap);
    ASSERT(n >= 3);
    EXPECT_EQ_INT(ids[0], im_start);
    EXPECT_EQ_INT(ids[n - 1], im_end);
    n = tok_encode(t, text, strlen(text), false, false, &ids, &cap);
    for (int i = 0; i < n; i++) EXPECT(!tok_is_special(t, ids[i]), "id %d special without parse_special", ids[i]);
    size_t len;
    char *s = tok_decode(t, ids, n, true, &len); // plain text survives skip_special
    EXPECT_STR_EQ(s, text);
    free(s);

    // decoding: skip_special drops control tokens, keeps them otherwise
    n = tok_encode(t, text, strlen(text), false, true, &ids, &cap);
    s = tok_decode(t, ids, n, true, &len);
    EXPECT_STR_EQ(s, "user\nhi");
    free(s);
    s = tok_decode(t, ids, n, false, &len);
    EXPECT_STR_EQ(s, text);
    free(s);
    size_t pl;
    const char *p = tok_piece(t, im_end, &pl);
    EXPECT(pl == 10 && memcmp(p, "<|im_end|>", 10) == 0);
    p = tok_piece(t, -1, &pl);
    EXPECT_EQ_INT(pl, 0);
    p = tok_piece(t, tok_vocab_size(t), &pl);
    EXPECT_EQ_INT(pl, 0);
    free(ids);
}

static void test_bos_eos(void) {
    EXPECT_EQ_INT(tok_vocab_size(t_model), 49152);
    EXPECT_EQ_INT(tok_bos(t_model), 1);
    EXPECT_EQ_INT(tok_eos(t_model), 2);
    EXPECT(!tok_add_bos(t_model)); // SmolLM2 declares add_bos_token = false
    int *ids = NULL, cap = 0;
    int n = tok_encode(t_model, "hi", 2, true, false, &ids, &cap);
    EXPECT(n == 2 && ids[0] == 1);
    n = tok_encode(t_model, "", 0, false, false, &ids, &cap);
    EXPECT_EQ_INT(n, 0);
    n = tok_encode(t_model, "", 0, true, false, &ids, &cap);
    EXPECT(n == 1 && ids[0] == 1);

    EXPECT_EQ_INT(tok_bos(t_spm), 1);
    EXPECT_EQ_INT(tok_eos(t_spm), 2);
    EXPECT(tok_add_bos(t_spm));
    n = tok_encode(t_spm, "Hello world", 11, true, false, &ids, &cap);
    ASSERT(n >= 2);
    EXPECT_EQ_INT(ids[0], 1);
    size_t len;
    char *s = tok_decode(t_spm, ids, n, true, &len); // BOS skipped, prefix space dropped
    EXPECT_STR_EQ(s, "Hello world");
    free(s);
    free(ids);
}

// Ill-formed UTF-8 is read as one U+FFFD per bad byte (llama.cpp's rule) and never crashes.
static void test_invalid_utf8_input(void) {
    static const struct {
        const char *bad, *as;
    } cases[] = {
        {"\xff", "\xef\xbf\xbd"},
        {"a\xe2\x82", "a\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xc0\x80x", "\xef\xbf\xbd\xef\xbf\xbdx"},
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"ok \x80 ok", "ok \xef\xbf\xbd ok"},
    };
    int *a = NULL, *b = NULL, ca = 0, cb = 0;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int na = tok_encode(t_model, cases[i].bad, strlen(cases[i].bad), false, false, &a, &ca);
        int nb = tok_encode(t_model, cases[i].as, strlen(cases[i].as), false, false, &b, &cb);
        EXPECT(na == nb && memcmp(a, b, (size_t)na * sizeof(int)) == 0, "case %zu", i);
        size_t len;
        char *s = tok_decode(t_model, a, na, false, &len);
        EXPECT(utf8_valid((unsigned char *)s, len));
        free(s);
        // SentencePiece keeps the bytes and falls back to byte tokens
        na = tok_encode(t_spm, cases[i].bad, strlen(cases[i].bad), false, false, &a, &ca);
        EXPECT(na > 0);
    }
    free(a);
    free(b);
}

// ---- a synthetic byte-level vocab with multi-digit merges and a word only ignore_merges emits:
// tells llama3's regex from qwen2's, which the SmolLM vocab (every digit alone) cannot

static void test_golden_bpe_tiny(void) {
    GGUF g;
    char err[ERR_MAX];
    ASSERT(gguf_open(&g, TOK_DIR "/bpe-tiny.gguf", err) == SL_OK, "%s", err);
    static const char *pres[] = {"llama-bpe", "qwen2"};
    for (int p = 0; p < 2; p++) {
        char path[512];
        snprintf(path, sizeof path, TOK_DIR "/bpe-tiny-%s.txt", pres[p]);
        Cases c = cases_read(path);
        EXPECT(c.n >= 100, "%s: %d cases", path, c.n);
        Tokenizer *t = NULL;
        // llama-bpe is what the file declares; qwen2 is an override
        int rc = p == 0 ? tok_load(&t, &g, err) : tok_load_pre(&t, &g, pres[p], err);
        EXPECT(rc == SL_OK, "%s", err);
        if (!t) continue;
        EXPECT(tok_add_bos(t) && tok_bos(t) == 0 && tok_eos(t) == 1);
        EXPECT(golden_check(t, &c, path) == 0);
        for (int i = 0; i < c.n; i++) {
            const Case *k = &c.v[i];
            size_t len;
            char *s = tok_decode(t, k->ids, k->n_ids, false, &len);
            // every byte has a token here, so plain text round-trips; llama.cpp's detokenize
            // agrees for qwen2 but "cleans" spaces for llama3 (" 's" -> "'s"), which we do not
            if (k->flags == 0) EXPECT(len == k->len && memcmp(s, k->text, len) == 0, "case %d", i);
            if (p == 1) EXPECT(len == k->detok_len && memcmp(s, k->detok, len) == 0, "decode of case %d", i);
            free(s);
        }
        if (p == 0) check_piece_hashes(t, TOK_DIR "/pieces-bpe-tiny.txt");
        tok_free(t);
        cases_free(&c);
    }
    gguf_close(&g);
}

// ---- SentencePiece (synthetic vocab, golden from llama.cpp)

static void test_golden_spm(void) {
    Cases c = cases_read(TOK_DIR "/spm-tiny.txt");
    ASSERT(c.n >= 50, "only %d spm cases", c.n);
    EXPECT_EQ_INT(golden_check(t_spm, &c, "spm-tiny"), 0);
    int bad = 0;
    for (int i = 0; i < c.n; i++) {
        const Case *k = &c.v[i];
        size_t len;
        if (!(k->flags & 2)) { // without BOS our decode is llama_detokenize's
            char *s = tok_decode(t_spm, k->ids, k->n_ids, false, &len);
            if (len != k->detok_len || memcmp(s, k->detok, len) != 0) {
                if (bad++ < 5) {
                    fprintf(stderr, "  spm decode of case %d: \"", i);
                    print_text(s, len);
                    fprintf(stderr, "\" vs \"");
                    print_text(k->detok, k->detok_len);
                    fprintf(stderr, "\"\n");
                }
            }
            free(s);
        }
        // plain text round-trips, with or without BOS (a literal U+2581 comes back as a space)
        if (!memchr(k->text, '<', k->len) && !memmem(k->text, k->len, "\xe2\x96\x81", 3)) {
            char *s = tok_decode(t_spm, k->ids, k->n_ids, true, &len);
            if (len != k->len || memcmp(s, k->text, len) != 0) {
                if (bad++ < 5) fprintf(stderr, "  spm case %d does not round-trip\n", i);
            }
            free(s);
        }
    }
    EXPECT_EQ_INT(bad, 0);
    cases_free(&c);
}

static void test_spm_pieces(void) {
    int id = tok_find(t_spm, "<0x41>");
    size_t len;
    const char *p = tok_piece(t_spm, id, &len);
    EXPECT(id >= 0 && len == 1 && p[0] == 'A');
    int hello = tok_find(t_spm, "\xe2\x96\x81Hello");
    ASSERT(hello >= 0);
    p = tok_piece(t_spm, hello, &len);
    EXPECT(len == 6 && memcmp(p, " Hello", 6) == 0);
    // a stream continuing a prompt keeps the space; a decode from the start drops it
    int cap = detok_out_cap(t_spm);
    char *out = xmalloc((size_t)cap);
    Detok d;
    detok_init(&d, true);
    EXPECT_EQ_INT(detok_feed(&d, t_spm, hello, out, cap), 6);
    EXPECT_STR_EQ(out, " Hello");
    d.first = true;
    EXPECT_EQ_INT(detok_feed(&d, t_spm, hello, out, cap), 5);
    EXPECT_STR_EQ(out, "Hello");
    EXPECT_EQ_INT(detok_feed(&d, t_spm, hello, out, cap), 6); // only the first
    // 😀 (F0 9F 98 80) is not in the vocab: four <0xNN> tokens, one character out
    const char *emoji = "\xf0\x9f\x98\x80";
    int *ids = NULL, icap = 0;
    int n = tok_encode(t_spm, emoji, 4, false, false, &ids, &icap);
    EXPECT_EQ_INT(n, 5); // "▁" then the four bytes
    detok_init(&d, true);
    int total = 0;
    for (int i = 0; i < n; i++) {
        int k = detok_feed(&d, t_spm, ids[i], out, cap);
        EXPECT(i == n - 1 ? k == 4 : k <= 1, "delta %d at %d", k, i);
        total += k;
    }
    EXPECT_EQ_INT(total, 5);
    free(ids);
    free(out);
}

// ---- every token's piece, against llama.cpp's token_to_piece (hashed per 1024 tokens)

static uint64_t fnv64(uint64_t h, const void *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ ((const uint8_t *)p)[i]) * 1099511628211ULL;
    return h;
}

static void check_piece_hashes(const Tokenizer *t, const char *path) {
    FILE *f = fopen(path, "r");
    ASSERT(f, "cannot open %s", path);
    char line[256];
    int blocks = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        int b;
        unsigned long long want;
        if (sscanf(line, "%d %llx", &b, &want) != 2) continue;
        uint64_t h = 14695981039346656037ULL;
        for (int id = b * 1024; id < MIN((b + 1) * 1024, tok_vocab_size(t)); id++) {
            size_t len;
            const char *p = tok_piece(t, id, &len);
            uint32_t l32 = (uint32_t)len;
            h = fnv64(h, &l32, 4);
            h = fnv64(h, p, len);
        }
        if (h != want && bad++ < 5) fprintf(stderr, "  %s: block %d (ids %d..) differs\n", path, b, b * 1024);
        blocks++;
    }
    fclose(f);
    EXPECT(blocks > 0);
    EXPECT_EQ_INT(bad, 0);
}

static void test_pieces_match_llama(void) {
    check_piece_hashes(t_model, TOK_DIR "/pieces-smollm2.txt");
    check_piece_hashes(t_spm, TOK_DIR "/pieces-spm-tiny.txt");
}

// ---- load errors

// A minimal GGUF v3 in memory with string / string-array metadata only.
typedef struct {
    char buf[4096];
    size_t n;
    int n_kv;
} GGUFBuilder;

static void gb_put(GGUFBuilder *b, const void *p, size_t n) {
    memcpy(b->buf + b->n, p, n);
    b->n += n;
}
static void gb_u32(GGUFBuilder *b, uint32_t v) { gb_put(b, &v, 4); }
static void gb_u64(GGUFBuilder *b, uint64_t v) { gb_put(b, &v, 8); }
static void gb_str(GGUFBuilder *b, const char *s) {
    gb_u64(b, strlen(s));
    gb_put(b, s, strlen(s));
}
static void gb_kv_str(GGUFBuilder *b, const char *k, const char *v) {
    gb_str(b, k);
    gb_u32(b, GGUF_TYPE_STRING);
    gb_str(b, v);
    b->n_kv++;
}
static void gb_kv_strs(GGUFBuilder *b, const char *k, const char *const *v, int n) {
    gb_str(b, k);
    gb_u32(b, GGUF_TYPE_ARRAY);
    gb_u32(b, GGUF_TYPE_STRING);
    gb_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) gb_str(b, v[i]);
    b->n_kv++;
}
static void gb_begin(GGUFBuilder *b) {
    b->n = 0;
    b->n_kv = 0;
    gb_put(b, "GGUF", 4);
    gb_u32(b, 3);
    gb_u64(b, 0); // tensors
    gb_u64(b, 0); // kv count, patched by gb_end
}
static void gb_end(GGUFBuilder *b) {
    uint64_t n = (uint64_t)b->n_kv;
    memcpy(b->buf + 16, &n, 8);
    while (b->n % 32) b->buf[b->n++] = 0;
}

static void expect_load_error(GGUFBuilder *b, const char *needle) {
    GGUF g;
    char err[ERR_MAX] = "";
    gb_end(b);
    if (gguf_parse(&g, b->buf, b->n, err) != SL_OK) {
        TEST_FAIL_("crafted GGUF rejected by gguf_parse: %s", err);
        return;
    }
    Tokenizer *t = (Tokenizer *)1;
    EXPECT(tok_load(&t, &g, err) == SL_ERR, "expected an error containing '%s'", needle);
    EXPECT(t == NULL);
    EXPECT(strstr(err, needle) != NULL, "error '%s' lacks '%s'", err, needle);
    gguf_close(&g);
}

static void test_load_errors(void) {
    static const char *const toks[] = {"a", "b", "ab"};
    static const char *const dup[] = {"a", "b", "a"};
    static const char *const merges[] = {"a b"};
    GGUFBuilder *b = xmalloc(sizeof *b);

    gb_begin(b); // no tokenizer at all
    expect_load_error(b, "tokenizer.ggml.model");
    gb_begin(b);
    gb_kv_str(b, "tokenizer.ggml.model", "bert");
    expect_load_error(b, "supported: gpt2, llama");
    gb_begin(b);
    gb_kv_str(b, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(b, "tokenizer.ggml.pre", "smollm");
    expect_load_error(b, "tokenizer.ggml.tokens");
    gb_begin(b);
    gb_kv_str(b, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(b, "tokenizer.ggml.pre", "no-such-pre");
    gb_kv_strs(b, "tokenizer.ggml.tokens", toks, 3);
    expect_load_error(b, "llama-bpe");
    gb_begin(b);
    gb_kv_str(b, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(b, "tokenizer.ggml.pre", "gpt-2");
    gb_kv_strs(b, "tokenizer.ggml.tokens", toks, 3);
    expect_load_error(b, "merges");
    gb_begin(b);
    gb_kv_str(b, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(b, "tokenizer.ggml.pre", "gpt-2");
    gb_kv_strs(b, "tokenizer.ggml.tokens", dup, 3);
    gb_kv_strs(b, "tokenizer.ggml.merges", merges, 1);
    expect_load_error(b, "duplicate");

    // and a tiny valid one: "ab" merges
    gb_begin(b);
    gb_kv_str(b, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(b, "tokenizer.ggml.pre", "gpt-2");
    gb_kv_strs(b, "tokenizer.ggml.tokens", toks, 3);
    gb_kv_strs(b, "tokenizer.ggml.merges", merges, 1);
    gb_end(b);
    GGUF g;
    char err[ERR_MAX];
    Tokenizer *t = NULL;
    ASSERT(gguf_parse(&g, b->buf, b->n, err) == SL_OK, "%s", err);
    ASSERT(tok_load(&t, &g, err) == SL_OK, "%s", err);
    int *ids = NULL, cap = 0;
    int n = tok_encode(t, "abab ba", 7, false, false, &ids, &cap);
    // "abab" -> ab ab; " ba": ' ' is not in this vocab and is dropped, b, a
    EXPECT(n == 4 && ids[0] == 2 && ids[1] == 2 && ids[2] == 1 && ids[3] == 0, "n %d", n);
    EXPECT_EQ_INT(tok_bos(t), -1); // llama.cpp's default 11 is outside this vocab
    free(ids);
    tok_free(t);
    gguf_close(&g);
    free(b);
}

// ---- speed (printed, not asserted)

static void test_encode_speed(void) {
    const char *para = "The engine thread owns the scheduler, the block pool and all model state: no locks "
                       "inside a step. Prefix caching keys each full block by a hash of its parent block, "
                       "its 16 token ids and the adapter id; hits are reused.\n"
                       "def f(x):\n    return [i * 2 for i in range(x) if i % 3 == 0]  # 1,234,567\n";
    size_t pl = strlen(para);
    char *text = xmalloc(pl * 40 + 1);
    for (int i = 0; i < 40; i++) memcpy(text + pl * (size_t)i, para, pl);
    size_t len = pl * 40;
    text[len] = '\0';
    int *ids = NULL, cap = 0, n = 0, iters = 20;
    double t0 = time_now_s();
    for (int i = 0; i < iters; i++) n = tok_encode(t_model, text, len, false, false, &ids, &cap);
    double ms = time_ms_since(t0) / iters;
    fprintf(stderr, "  encode: %d tokens (%zu bytes) in %.2f ms\n", n, len, ms);
    EXPECT(n > 1000);

    // one 200 KB word: the merge loop must not be quadratic
    size_t big = 200000;
    char *w = xmalloc(big);
    for (size_t i = 0; i < big; i++) w[i] = (char)('a' + (i * 7) % 26);
    t0 = time_now_s();
    n = tok_encode(t_model, w, big, false, false, &ids, &cap);
    fprintf(stderr, "  encode: one %zu-byte word -> %d tokens in %.1f ms\n", big, n, time_ms_since(t0));
    EXPECT(n > 0);
    t0 = time_now_s();
    n = tok_encode(t_spm, w, big, false, false, &ids, &cap);
    fprintf(stderr, "  encode (spm): %zu bytes -> %d tokens in %.1f ms\n", big, n, time_ms_since(t0));
    free(w);
    free(ids);
    free(text);
}

int main(void) {
    char err[ERR_MAX];
    if (gguf_open(&g_model, TEST_MODEL_PATH, err) != SL_OK || tok_load(&t_model, &g_model, err) != SL_OK ||
        gguf_open(&g_spm, TOK_DIR "/spm-tiny.gguf", err) != SL_OK || tok_load(&t_spm, &g_spm, err) != SL_OK) {
        fprintf(stderr, "setup: %s\n", err);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    TEST_RUN(test_golden_smollm);
    TEST_RUN(test_golden_other_pretokenizers);
    TEST_RUN(test_decode_roundtrip);
    TEST_RUN(test_detok_stream_golden);
    TEST_RUN(test_detok_split_characters);
    TEST_RUN(test_special_tokens);
    TEST_RUN(test_bos_eos);
    TEST_RUN(test_invalid_utf8_input);
    TEST_RUN(test_golden_bpe_tiny);
    TEST_RUN(test_golden_spm);
    TEST_RUN(test_spm_pieces);
    TEST_RUN(test_pieces_match_llama);
    TEST_RUN(test_load_errors);
    TEST_RUN(test_encode_speed);
    tok_free(t_model);
    tok_free(t_spm);
    gguf_close(&g_model);
    gguf_close(&g_spm);
    return test_summary();
}
