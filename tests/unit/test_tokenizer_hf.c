// test_tokenizer_hf.c: tok_load_hf against tok_load. The default model's tokenizer, converted
// by scripts/hf_tokenizer.py into tests/data/hf/smollm2/, must give the tokenizer the GGUF gives:
// the same ids on llama.cpp's golden cases (tests/data/tokenizer/), the same decode, pieces,
// specials, bos/eos/add_bos and EOG. The synthetic byte-level (llama-bpe: Split + ignore_merges,
// merges as pairs) and SentencePiece vocabularies go the same way. Bad tokenizer.json files are
// rejected with a message naming the problem.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "engine/model/gguf.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tokenizer_impl.h"
#include "tests/unit/test.h"
#include "tests/unit/tok_cases.h"

#define TOK_DIR TEST_DATA_DIR "/tokenizer"
#define HF_DIR TEST_DATA_DIR "/hf"

// Encodes every case with a and b; returns how many differ from the golden ids (either way).
static int golden_check(const Tokenizer *a, const Tokenizer *b, const Cases *c, const char *name) {
    int bad = 0, *ia = NULL, *ib = NULL, ca = 0, cb = 0;
    for (int i = 0; i < c->n; i++) {
        const Case *k = &c->v[i];
        int na = tok_encode(a, k->text, k->len, (k->flags & 2) && tok_add_bos(a), k->flags & 1, &ia, &ca);
        int nb = tok_encode(b, k->text, k->len, (k->flags & 2) && tok_add_bos(b), k->flags & 1, &ib, &cb);
        bool ok = na == k->n_ids && nb == k->n_ids;
        for (int j = 0; ok && j < na; j++) ok = ia[j] == k->ids[j] && ib[j] == k->ids[j];
        if (!ok && bad++ < 5) fprintf(stderr, "  %s case %d (flags %d): GGUF %d ids, HF %d ids, golden %d\n", name, i,
                                      k->flags, na, nb, k->n_ids);
    }
    free(ia);
    free(ib);
    fprintf(stderr, "  %s: %d/%d cases give the golden ids through both loaders\n", name, c->n - bad, c->n);
    return bad;
}

// Everything encode and decode read must be equal.
static void expect_same_tokenizer(const Tokenizer *g, const Tokenizer *h, const char *name) {
    ASSERT(g && h, "%s: not loaded", name);
    EXPECT(g->model == h->model, "%s", name);
    ASSERT(tok_vocab_size(g) == tok_vocab_size(h), "%s: %d vs %d tokens", name, tok_vocab_size(g), tok_vocab_size(h));
    EXPECT(tok_bos(g) == tok_bos(h) && tok_eos(g) == tok_eos(h) && g->unk == h->unk,
           "%s: bos %d/%d eos %d/%d unk %d/%d", name, tok_bos(g), tok_bos(h), tok_eos(g), tok_eos(h), g->unk, h->unk);
    EXPECT(tok_add_bos(g) == tok_add_bos(h) && g->add_space_prefix == h->add_space_prefix, "%s", name);
    EXPECT_EQ_INT(g->n_merges, h->n_merges);
    EXPECT_EQ_INT(g->max_piece, h->max_piece);
    int bad = 0;
    for (int id = 0; id < tok_vocab_size(g); id++) {
        size_t lg, lh;
        const char *pg = tok_piece(g, id, &lg), *ph = tok_piece(h, id, &lh);
        bool same = g->types[id] == h->types[id] && tok_is_eog(g, id) == tok_is_eog(h, id) &&
                    tok_is_special(g, id) == tok_is_special(h, id) &&
                    lg == lh && memcmp(pg, ph, lg) == 0 && g->text_len[id] == h->text_len[id] &&
                    memcmp(g->text_arena + g->text_off[id], h->text_arena + h->text_off[id], g->text_len[id]) == 0;
        if (!same && bad++ < 5)
            fprintf(stderr, "  %s: token %d differs (type %d/%d, eog %d/%d)\n", name, id, g->types[id], h->types[id],
                    tok_is_eog(g, id), tok_is_eog(h, id));
    }
    EXPECT_EQ_INT(bad, 0);
    ASSERT(g->n_special == h->n_special, "%s: %d vs %d specials", name, g->n_special, h->n_special);
    EXPECT(memcmp(g->special, h->special, (size_t)g->n_special * sizeof(int)) == 0, "%s: partition order", name);
}

// ---- the default model

static GGUF g_model;
static Tokenizer *t_gguf, *t_hf;

static void test_smollm2_same_tokenizer(void) {
    expect_same_tokenizer(t_gguf, t_hf, "smollm2");
    // Sequence[Digits(individual_digits), ByteLevel(use_regex)] is llama.cpp's 'smollm'
    EXPECT(t_hf->pre == t_gguf->pre && !t_hf->pre_owned);
    EXPECT_STR_EQ(t_hf->pre_name, "smollm");
    EXPECT_EQ_INT(tok_bos(t_hf), 1);
    EXPECT_EQ_INT(tok_eos(t_hf), 2);
    EXPECT(!tok_add_bos(t_hf));
    EXPECT(tok_is_eog(t_hf, 0) && tok_is_eog(t_hf, 2) && !tok_is_eog(t_hf, 1));
}

static void test_smollm2_golden(void) {
    Cases c = cases_read(TOK_DIR "/smollm2.txt");
    ASSERT(c.n >= 200, "only %d golden cases", c.n);
    EXPECT_EQ_INT(golden_check(t_gguf, t_hf, &c, "smollm2"), 0);
    cases_free(&c);
}

// decode, skipping specials or not, and the streaming detokenizer give the same text
static void test_smollm2_decode(void) {
    Cases c = cases_read(TOK_DIR "/smollm2.txt");
    int bad = 0, cap = detok_out_cap(t_hf);
    EXPECT_EQ_INT(cap, detok_out_cap(t_gguf));
    char *out_g = xmalloc((size_t)cap), *out_h = xmalloc((size_t)cap);
    for (int i = 0; i < c.n; i++) {
        const Case *k = &c.v[i];
        for (int skip = 0; skip < 2; skip++) {
            size_t lg, lh;
            char *sg = tok_decode(t_gguf, k->ids, k->n_ids, skip, &lg),
                 *sh = tok_decode(t_hf, k->ids, k->n_ids, skip, &lh);
            if (lg != lh || memcmp(sg, sh, lg) != 0) bad++;
            free(sg);
            free(sh);
            Detok dg, dh;
            detok_init(&dg, skip);
            detok_init(&dh, skip);
            for (int j = 0; j < k->n_ids; j++) {
                int ng = detok_feed(&dg, t_gguf, k->ids[j], out_g, cap),
                    nh = detok_feed(&dh, t_hf, k->ids[j], out_h, cap);
                if (ng != nh || memcmp(out_g, out_h, (size_t)ng) != 0) bad++;
            }
        }
    }
    EXPECT_EQ_INT(bad, 0);
    free(out_g);
    free(out_h);
    cases_free(&c);
}

// ---- the synthetic vocabularies of test_tokenizer.c, converted the same way

static void test_bpe_tiny(void) {
    GGUF g;
    char err[ERR_MAX];
    Tokenizer *tg = NULL, *th = NULL;
    ASSERT(gguf_open(&g, TOK_DIR "/bpe-tiny.gguf", err) == SL_OK, "%s", err);
    EXPECT(tok_load(&tg, &g, err) == SL_OK, "%s", err);
    EXPECT(tok_load_hf(&th, HF_DIR "/bpe-tiny", err) == SL_OK, "%s", err);
    if (tg && th) {
        // HF's llama-3 regex writes (?i:'s|...) where llama.cpp spells out [sS]: the file's own
        // regex list, with model.ignore_merges
        expect_same_tokenizer(tg, th, "bpe-tiny");
        EXPECT(th->pre_owned && th->pre->ignore_merges);
        EXPECT(tok_add_bos(th)); // from the TemplateProcessing and add_bos_token
        Cases c = cases_read(TOK_DIR "/bpe-tiny-llama-bpe.txt");
        EXPECT(c.n >= 100, "%d cases", c.n);
        EXPECT_EQ_INT(golden_check(tg, th, &c, "bpe-tiny"), 0);
        cases_free(&c);
    }
    tok_free(tg);
    tok_free(th);
    gguf_close(&g);
}

static void test_spm_tiny(void) {
    GGUF g;
    char err[ERR_MAX];
    Tokenizer *tg = NULL, *th = NULL;
    ASSERT(gguf_open(&g, TOK_DIR "/spm-tiny.gguf", err) == SL_OK, "%s", err);
    EXPECT(tok_load(&tg, &g, err) == SL_OK, "%s", err);
    EXPECT(tok_load_hf(&th, HF_DIR "/spm-tiny", err) == SL_OK, "%s", err);
    if (tg && th) {
        EXPECT(th->model == TOK_MODEL_SPM && th->add_space_prefix && tok_add_bos(th));
        EXPECT(memcmp(tg->byte_tok, th->byte_tok, sizeof tg->byte_tok) == 0);
        expect_same_tokenizer(tg, th, "spm-tiny");
        Cases c = cases_read(TOK_DIR "/spm-tiny.txt");
        EXPECT(c.n >= 50, "%d cases", c.n);
        EXPECT_EQ_INT(golden_check(tg, th, &c, "spm-tiny"), 0);
        cases_free(&c);
    }
    tok_free(tg);
    tok_free(th);
    gguf_close(&g);
}

// ---- crafted directories

// Writes the files of a temporary tokenizer directory (NULL: not written) and loads it.
static int load_crafted(const char *tj, const char *cfg, const char *gen, Tokenizer **t, char *err) {
    char dir[] = "/tmp/sluice-tokhf-XXXXXX", path[256];
    if (!mkdtemp(dir)) return seterr(err, "mkdtemp failed");
    const char *names[3] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json"};
    const char *texts[3] = {tj, cfg, gen};
    for (int i = 0; i < 3; i++) {
        if (!texts[i]) continue;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "w");
        if (f) {
            fputs(texts[i], f);
            fclose(f);
        }
    }
    int rc = tok_load_hf(t, dir, err);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    return rc;
}

#define BL_PRE "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}"
#define VOCAB "\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"<s>\": 3}"
#define ADDED "\"added_tokens\": [{\"id\": 3, \"content\": \"<s>\", \"special\": true}]"
#define BPE_MODEL(merges) "\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": " merges "}"
#define TJ(a, b) "{" ADDED ", " a ", " b "}"
#define GOOD TJ(BL_PRE, BPE_MODEL("[\"a b\"]"))

static void test_bad_files(void) {
    static const struct {
        const char *tj, *cfg, *needle;
    } cases[] = {
        {"{}", NULL, "'model' is missing"},
        {"{\"model\": ", NULL, "not valid JSON"},
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", NULL,
         "model.type 'Unigram' is not supported"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", NULL, "'WordPiece'"},
        {TJ(BL_PRE, "\"model\": {\"type\": \"BPE\", " VOCAB "}"), NULL, "model.merges is missing"},
        {TJ(BL_PRE, BPE_MODEL("[\"a c\"]")), NULL, "'c' is not in model.vocab"},
        {TJ(BL_PRE, BPE_MODEL("[[\"b\", \"a\"]]")), NULL, "'ba' is not in model.vocab"},
        {TJ(BL_PRE, BPE_MODEL("[\"a b c\"]")), NULL, "model.merges[0] 'a b c' is not two tokens"},
        {TJ(BL_PRE, BPE_MODEL("[[\"a\"]]")), NULL, "model.merges[0] is neither"},
        {"{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}", NULL,
         "id out of range"},
        {"{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1.5}, \"merges\": []}}", NULL,
         "id out of range"},
        {"{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 100000}, \"merges\": []}}", NULL,
         "ids go up to 100000 for 1 tokens"},
        {"{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}", NULL,
         "duplicate id 0"},
        {"{\"added_tokens\": [{\"id\": 5, \"content\": \"a\", \"special\": true}], " BL_PRE ", " BPE_MODEL("[]") "}",
         NULL, "duplicate token"},
        {"{\"added_tokens\": [{\"id\": 0, \"content\": \"x\", \"special\": true}], " BL_PRE ", " BPE_MODEL("[]") "}",
         NULL, "added_tokens: duplicate id 0"},
        {TJ("\"pre_tokenizer\": {\"type\": \"Whitespace\"}", BPE_MODEL("[]")), NULL,
         "pre_tokenizer type 'Whitespace' is not supported"},
        {TJ("\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Punctuation\"}]}",
            BPE_MODEL("[]")),
         NULL, "'Punctuation'"},
        {TJ("\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Removed\"}",
            BPE_MODEL("[]")),
         NULL, "Split behavior 'Removed'"},
        {TJ("\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
            "{\"Regex\": \"(a\"}, \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}",
            BPE_MODEL("[]")),
         NULL, "regex 0 does not compile"},
        {TJ("\"pre_tokenizer\": null", BPE_MODEL("[]")), NULL, "needs a ByteLevel pre-tokenizer"},
        {TJ("\"normalizer\": {\"type\": \"Lowercase\"}, " BL_PRE, BPE_MODEL("[]")), NULL, "normalizer 'Lowercase'"},
        {TJ(BL_PRE, "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", " VOCAB ", \"merges\": []}"), NULL,
         "model.unk_token '<unk>' is not in the vocabulary"},
        {GOOD, "{\"bos_token\": \"<nope>\"}", "tokenizer_config.json: bos_token '<nope>' is not in the vocabulary"},
        {GOOD, "{\"eos_token\": {\"content\": \"<nope>\"}}", "eos_token '<nope>'"},
        {GOOD, "{\"add_bos_token\": true}", "add_bos_token is true, but there is no bos_token"},
        {GOOD, "{\"bos_token\": ", "tokenizer_config.json: not valid JSON"},
        {NULL, NULL, "tokenizer.json"}, // no tokenizer.json at all
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char err[ERR_MAX] = "";
        Tokenizer *t = (Tokenizer *)1;
        int rc = load_crafted(cases[i].tj, cases[i].cfg, NULL, &t, err);
        EXPECT(rc == SL_ERR && t == NULL, "case %zu: accepted", i);
        EXPECT(strstr(err, cases[i].needle) != NULL, "case %zu: error '%s' lacks '%s'", i, err, cases[i].needle);
        if (rc == SL_OK) tok_free(t);
    }
}

static void test_crafted_good(void) {
    char err[ERR_MAX];
    Tokenizer *t = NULL;
    int *ids = NULL, cap = 0;
    // merges as a legacy string; "abab ba" -> ab ab b a (the space has no token and is dropped)
    ASSERT(load_crafted(GOOD, NULL, NULL, &t, err) == SL_OK, "%s", err);
    EXPECT(tok_bos(t) == -1 && tok_eos(t) == -1 && !tok_add_bos(t) && t->n_merges == 1);
    int n = tok_encode(t, "abab ba", 7, false, false, &ids, &cap);
    EXPECT(n == 4 && ids[0] == 2 && ids[1] == 2 && ids[2] == 1 && ids[3] == 0, "n %d", n);
    n = tok_encode(t, "a<s>b", 5, false, true, &ids, &cap);
    EXPECT(n == 3 && ids[1] == 3 && tok_is_special(t, 3), "n %d", n);
    tok_free(t);

    // ids the file skips become unused tokens; bos from {content}; a TemplateProcessing that
    // prepends BOS turns add_bos on; generation_config.json's eos_token_id list ends generation
    const char *tj =
        "{\"added_tokens\": [{\"id\": 6, \"content\": \"<s>\", \"special\": true}, "
        "{\"id\": 7, \"content\": \"<x>\", \"special\": false}], " BL_PRE ", "
        "\"post_processor\": {\"type\": \"Sequence\", \"processors\": [{\"type\": \"ByteLevel\"}, "
        "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, "
        "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}]}]}, "
        "\"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, "
        "\"</s>\": 4}, \"merges\": [[\"a\", \"b\"]]}}";
    ASSERT(load_crafted(tj, "{\"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": \"</s>\"}",
                        "{\"eos_token_id\": [4, 2, 99]}", &t, err) == SL_OK,
           "%s", err);
    EXPECT_EQ_INT(tok_vocab_size(t), 8);
    EXPECT(t->types[3] == TOK_TYPE_UNUSED && t->types[5] == TOK_TYPE_UNUSED);
    EXPECT(t->types[6] == TOK_TYPE_CONTROL && t->types[7] == TOK_TYPE_USER_DEFINED);
    EXPECT(tok_bos(t) == 6 && tok_eos(t) == 4 && tok_add_bos(t));
    EXPECT(tok_is_eog(t, 4) && tok_is_eog(t, 2) && !tok_is_eog(t, 0) && !tok_is_eog(t, 6));
    EXPECT(t->pre_owned && t->pre->ignore_merges); // GPT-2's regex with ignore_merges: no table entry
    n = tok_encode(t, "ab<x>a", 6, true, false, &ids, &cap); // user-defined tokens cut without parse_special
    EXPECT(n == 4 && ids[0] == 6 && ids[1] == 2 && ids[2] == 7 && ids[3] == 0, "n %d", n);
    size_t len;
    char *s = tok_decode(t, ids, n, true, &len);
    EXPECT_STR_EQ(s, "ab<x>a");
    free(s);
    tok_free(t);

    // add_bos_token in tokenizer_config.json wins over the template
    ASSERT(load_crafted(tj, "{\"add_bos_token\": false}", NULL, &t, err) == SL_OK, "%s", err);
    EXPECT(!tok_add_bos(t) && tok_bos(t) == 6 && tok_eos(t) == -1);
    tok_free(t);
    free(ids);
}

int main(void) {
    char err[ERR_MAX];
    if (gguf_open(&g_model, TEST_MODEL_PATH, err) != SL_OK || tok_load(&t_gguf, &g_model, err) != SL_OK ||
        tok_load_hf(&t_hf, HF_DIR "/smollm2", err) != SL_OK) {
        fprintf(stderr, "setup: %s\n", err);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    TEST_RUN(test_smollm2_same_tokenizer);
    TEST_RUN(test_smollm2_golden);
    TEST_RUN(test_smollm2_decode);
    TEST_RUN(test_bpe_tiny);
    TEST_RUN(test_spm_tiny);
    TEST_RUN(test_bad_files);
    TEST_RUN(test_crafted_good);
    tok_free(t_gguf);
    tok_free(t_hf);
    gguf_close(&g_model);
    return test_summary();
}
