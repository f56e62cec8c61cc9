// tokenizer.h: the tokenizer a GGUF declares (tokenizer.ggml.*), encode and decode, and an
// incremental detokenizer for streaming.
//
//  - byte-level BPE (tokenizer.ggml.model = "gpt2"): the pre-tokenizer regex chosen by
//    tokenizer.ggml.pre (PCRE2 for \p{L}, \p{N} and lookahead), GPT-2 byte<->unicode mapping,
//    merges by rank;
//  - SentencePiece-style BPE (= "llama"): scores as merge priority, "▁" for spaces,
//    add_space_prefix, <0xNN> byte fallback.
// Special/control tokens are matched whole before BPE when parse_special is true and are
// treated as plain text otherwise.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct Tokenizer Tokenizer;

// Builds a tokenizer from the GGUF metadata. SL_ERR + err when the metadata is missing,
// inconsistent or of an unsupported model/pre-tokenizer (the message lists what is supported).
int tok_load(Tokenizer **out, const GGUF *g, char *err);
void tok_free(Tokenizer *t);

int tok_vocab_size(const Tokenizer *t);
int tok_bos(const Tokenizer *t);   // -1 when the model has none
int tok_eos(const Tokenizer *t);
bool tok_add_bos(const Tokenizer *t); // tokenizer.ggml.add_bos_token
bool tok_is_special(const Tokenizer *t, int id); // control / user-defined tokens
int tok_find(const Tokenizer *t, const char *piece); // id of an exact vocab string, -1 if none

// Encodes text[0..len) into ids (growing *ids / *cap with xrealloc as needed); returns the
// count. add_bos prepends BOS when the model has one.
int tok_encode(const Tokenizer *t, const char *text, size_t len, bool add_bos, bool parse_special,
               int **ids, int *cap);

// The raw bytes one token stands for (after undoing the byte-level or ▁ mapping);
// *len gets the byte count. Special tokens give their text.
const char *tok_piece(const Tokenizer *t, int id, size_t *len);

// Decodes ids into a newly allocated NUL-terminated string; *len_out gets its byte length.
// skip_special drops control tokens (BOS/EOS) from the text.
char *tok_decode(const Tokenizer *t, const int *ids, int n, bool skip_special, size_t *len_out);

// ---- incremental detokenizer: feed ids one at a time, get text deltas that never split a
// UTF-8 character (bytes of an incomplete character are held until it completes).
typedef struct {
    char pending[8];  // bytes of an incomplete UTF-8 sequence
    int n_pending;
    bool skip_special;
    bool first;       // SentencePiece: drop the leading space of the first piece
} Detok;

void detok_init(Detok *d, bool skip_special);
// Appends the complete characters now available to out (NUL-terminated, at most out_cap
// bytes including the NUL; 64 bytes per token is always enough) and returns their length.
int detok_feed(Detok *d, const Tokenizer *t, int id, char *out, int out_cap);
// At the end of a stream: what is still held, as U+FFFD per broken sequence.
int detok_flush(Detok *d, char *out, int out_cap);
