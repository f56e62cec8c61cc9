// tokenizer_impl.h: the Tokenizer's insides, shared by tokenizer.c (load, special tokens, encode
// driver), hf.c (load from a Hugging Face tokenizer.json), bpe.c
// (pre-tokenizer regexes, byte-level BPE), spm.c (SentencePiece-style BPE) and
// decode.c (pieces, decode, streaming detokenizer).
// Not part of the public contract: only these files and the tokenizer test include it.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tokenizer/tokenizer.h"

// GGUF tokenizer.ggml.token_type values (llama.cpp's LLAMA_TOKEN_TYPE_*)
enum {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

typedef enum { TOK_MODEL_BPE, TOK_MODEL_SPM } TokModel;

// ---- string -> int map (open addressing, linear probing). Keys point at storage that
// outlives the map (the tokenizer's text arena or its extra strings); never deleted.
typedef struct {
    const char *key;
    uint32_t len;
    uint32_t hash;
    int32_t val;
} StrSlot;

typedef struct {
    StrSlot *slots;
    uint32_t mask; // capacity - 1 (power of two)
    uint32_t count;
} StrMap;

void strmap_init(StrMap *m, uint32_t expected);
void strmap_free(StrMap *m);
// Returns the value of key, or -1.
int32_t strmap_get(const StrMap *m, const char *key, size_t len);
// Inserts key -> val unless key is present; returns the value now stored for key.
int32_t strmap_put(StrMap *m, const char *key, size_t len, int32_t val);

// ---- (left id, right id) -> merge rank and merged id, for byte-level BPE
typedef struct {
    uint64_t key; // ((left + 1) << 32) | (right + 1); 0 = empty slot
    int32_t rank;
    int32_t merged;
} PairSlot;

typedef struct {
    PairSlot *slots;
    uint32_t mask;
    uint32_t count;
} PairMap;

// GPT-2's pre-tokenizer regex (also what a Hugging Face ByteLevel pre-tokenizer with use_regex applies)
#define TOK_RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"

// A pre-tokenizer: the regexes llama.cpp applies one after the other for a tokenizer.ggml.pre.
#define TOK_MAX_REGEX 6
typedef struct {
    const char *names[8];             // the tokenizer.ggml.pre values that select it
    const char *regex[TOK_MAX_REGEX]; // applied in order; NULL-terminated
    bool ignore_merges;               // a whole word found in the vocab is emitted as is
    bool add_bos;                     // default for add_bos when the GGUF does not say
} PreTok;

struct Tokenizer {
    TokModel model;
    int n_vocab;

    // vocab text as stored in the GGUF (byte-level BPE: GPT-2 mapped; SPM: with U+2581)
    char *text_arena;
    uint32_t *text_off, *text_len;
    // the bytes each token stands for (what tok_piece returns)
    char *piece_arena;
    uint32_t *piece_off, *piece_len;
    int max_piece;

    float *scores;  // SPM merge priority (higher merges first)
    uint8_t *types; // TOK_TYPE_*
    uint8_t *eog;   // 1 for end-of-generation tokens
    StrMap vocab;   // text -> id; for BPE also the merge strings that are not tokens (id >= n_vocab)

    // special tokens, longest text first (llama.cpp's partition order)
    int *special;
    int n_special;

    int bos, eos, unk;
    bool add_bos, add_space_prefix;

    // ---- byte-level BPE
    const PreTok *pre;
    bool pre_owned;            // pre (and its regex strings) built from a tokenizer.json: freed with t
    const char *pre_name;      // as declared in the GGUF (or "default"), or the table entry a tokenizer.json matches
    void *re[TOK_MAX_REGEX];   // pcre2_code *
    int n_re;
    PairMap merges;
    int n_merges;
    char **extra;              // merge strings that are not vocab tokens (ids n_vocab..)
    int n_extra;
    char byte_enc[256][3];     // GPT-2 byte -> code point as UTF-8
    uint8_t byte_enc_len[256];
    int16_t byte_dec[0x144];   // code point -> byte, -1 when the code point stands for none
    int byte_sym[256];         // id of byte_enc[b] in vocab (or -1)
    int single_byte_tok[256];  // id of the one-byte string b (llama.cpp's last-resort fallback)

    // ---- SentencePiece
    int byte_tok[256];         // <0xXX> (or the one-byte string), -1 when neither exists
};

// ---- internal entry points between the tokenizer files

// Construction shared by the GGUF loader (tokenizer.c, tok_load) and the Hugging Face one
// (hf.c, tok_load_hf), in this order:
//   tok_vocab_init; the loader sets types, scores, bos/eos/unk, add_bos, add_space_prefix and
//   extra EOG ids; tok_specials_finish; BPE: bpe_merges_reserve + bpe_merge_add per merge and
//   bpe_finish (t->pre set); SPM: spm_bytes_init; then tok_pieces_init.
// texts[i] with len 0 becomes "[EMPTY_<i>]"; a text found twice is SL_ERR ("duplicate token").
int tok_vocab_init(Tokenizer *t, int n, const GGUFStr *texts, char *err);
// EOS and the usual end-of-generation texts become EOG (the texts also CONTROL); builds the
// special-token partition list from the types.
void tok_specials_finish(Tokenizer *t);
void tok_pieces_init(Tokenizer *t);
void spm_bytes_init(Tokenizer *t);
void tok_log_loaded(const Tokenizer *t, const char *source);

// byte-level BPE: bpe.c
const PreTok *bpe_pre_find(const char *name);
// The table entry with exactly these regexes (in order) and ignore_merges, or NULL.
const PreTok *bpe_pre_match(const char *const *regex, int n, bool ignore_merges);
void bpe_pre_list(char *buf, size_t cap); // "a, b, c" of every supported pre name
int bpe_init(Tokenizer *t, const GGUF *g, char *err); // the GGUF's merges, then bpe_finish
void bpe_merges_reserve(Tokenizer *t, uint64_t n_merges);
// left+right at this rank (the first rank of a pair wins); strings that are not tokens get
// internal ids past the vocabulary (llama.cpp's behaviour for GGUF merges).
void bpe_merge_add(Tokenizer *t, int rank, const char *left, size_t left_len, const char *right, size_t right_len);
// byte tables and the compiled regexes of t->pre (SL_ERR only for a regex of an owned pre)
int bpe_finish(Tokenizer *t, char *err);
void bpe_free(Tokenizer *t);
void bpe_piece(const Tokenizer *t, const char *text, size_t len, char *out, size_t *out_len);

// Growable id output shared by the encoders.
typedef struct {
    int **ids;
    int *cap;
    int n;
} TokOut;
void tokout_push(TokOut *o, int id);

void bpe_encode_text(const Tokenizer *t, const char *text, size_t len, TokOut *o);
void spm_encode_text(const Tokenizer *t, const char *text, size_t len, bool prefix_space, TokOut *o);


// Test hook: tok_load with tokenizer.ggml.pre replaced by pre (NULL: as declared).
int tok_load_pre(Tokenizer **out, const GGUF *g, const char *pre, char *err);
