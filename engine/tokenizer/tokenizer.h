// tokenizer.h: the tokenizer a GGUF declares (tokenizer.ggml.*), encode and decode, and an
// incremental detokenizer for streaming.
//
//  - byte-level BPE (tokenizer.ggml.model = "gpt2"): the pre-tokenizer regex chosen by
//    tokenizer.ggml.pre (PCRE2 for \p{L}, \p{N} and lookahead), GPT-2 byte<->unicode mapping,
//    merges by rank;
//  - SentencePiece-style BPE (= "llama"): scores as merge priority, "▁" for spaces,
//    add_space_prefix, <0xNN> byte fallback.
// Special/control tokens are matched whole before BPE when parse_special is true and are
// treated as plain text otherwise (USER_DEFINED tokens are matched either way, as llama.cpp
// and Hugging Face do).
//
// Encoding is checked id for id against llama.cpp (tests/data/tokenizer/, made by
// scripts/make-golden-tokens.py). A Tokenizer is read-only after tok_load: encode and decode
// may run on several threads at once.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/model/gguf.h"

typedef struct Tokenizer Tokenizer;

// Builds a tokenizer from the GGUF metadata. SL_ERR + err when the metadata is missing,
// inconsistent or of an unsupported model/pre-tokenizer (the message lists what is supported).
int tok_load(Tokenizer **out, const GGUF *g, char *err);
// From a Hugging Face tokenizer directory `dir` (hf.c): tokenizer.json (model.type
// "BPE": vocab, merges as "a b" strings or [a, b] pairs, added_tokens with their special flags;
// a ByteLevel pre-tokenizer, alone or in a Sequence after Split regexes / Digits, or the
// Metaspace/byte_fallback SentencePiece style), tokenizer_config.json if present (bos_token,
// eos_token, add_bos_token, else a TemplateProcessing post_processor that prepends BOS;
// chat_template is read by the template code) and generation_config.json if present (its
// eos_token_id, an id or a list, also ends generation). End of generation: eos_token and the
// usual EOG specials, as for a GGUF. SL_ERR + err naming the file and the key.
int tok_load_hf(Tokenizer **out, const char *dir, char *err);
void tok_free(Tokenizer *t);

int tok_vocab_size(const Tokenizer *t);
int tok_bos(const Tokenizer *t);   // -1 when the model has none
int tok_eos(const Tokenizer *t);
bool tok_add_bos(const Tokenizer *t); // tokenizer.ggml.add_bos_token
bool tok_is_special(const Tokenizer *t, int id); // control / user-defined tokens
// End of generation: EOS, the declared EOT/EOM, and tokens such as <|im_end|>, <|endoftext|>,
// <|eot_id|> (llama.cpp's list).
bool tok_is_eog(const Tokenizer *t, int id);
int tok_find(const Tokenizer *t, const char *piece); // id of an exact vocab string, -1 if none

// Encodes text[0..len) into ids (growing *ids / *cap with xrealloc as needed); returns the
// count. add_bos prepends BOS when the model has one (pass tok_add_bos(t) to do what the model
// asks); EOS is never appended. Ill-formed UTF-8 in byte-level BPE input is read as U+FFFD, one
// per bad byte. A byte the vocabulary has no token for is left out, as llama.cpp does: SmolLM2's
// lacks 0x04, 0x06, 0x13, 0x14, 0x16 and 0x1d, and the lead bytes 0xf1 and 0xf2 (U+40000..U+BFFFF),
// so decode(encode(s)) == s holds only for text without them (tests/fuzz/fuzz_tokenizer.c).
int tok_encode(const Tokenizer *t, const char *text, size_t len, bool add_bos, bool parse_special,
               int **ids, int *cap);

// The raw bytes one token stands for (after undoing the byte-level or ▁ mapping);
// *len gets the byte count. Special tokens give their text. Not NUL-terminated in general;
// may be part of a UTF-8 character. An id outside the vocabulary gives "" (length 0).
const char *tok_piece(const Tokenizer *t, int id, size_t *len);

// Decodes ids into a newly allocated NUL-terminated, always well-formed UTF-8 string (what a
// Detok with first = true fed every id and flushed gives); *len_out gets its byte length.
// skip_special drops control and unknown tokens (BOS/EOS, <unk>) from the text. This decodes a
// text from its start: for SentencePiece models the space that encoding puts in front
// (add_space_prefix) is dropped from the first piece, so decode(encode(s)) == s; a skipped
// BOS does not count, and after a printed BOS the space stays ("<s> Hello", as llama.cpp and
// Hugging Face print it).
char *tok_decode(const Tokenizer *t, const int *ids, int n, bool skip_special, size_t *len_out);

// ---- incremental detokenizer: feed ids one at a time, get text deltas that never split a
// UTF-8 character (bytes of an incomplete character are held until it completes) and are
// always well-formed UTF-8 (ill-formed bytes become U+FFFD). The concatenated deltas of a
// stream equal tok_decode() of its ids (with the same skip_special and first).
typedef struct {
    char pending[8];  // bytes of an incomplete UTF-8 sequence (at most 3)
    int n_pending;
    bool skip_special;
    bool first;       // SentencePiece: drop the leading space of the first piece (see tok_decode)
} Detok;

// first = false: a generated stream continues its prompt, so every piece is kept as is
// (" Paris" after "The capital is"). Set d->first = true to decode a text from its start.
void detok_init(Detok *d, bool skip_special);
// The output capacity that is always enough for one detok_feed / detok_flush call (the
// longest piece, every byte possibly ill-formed -> 3 bytes). A smaller out_cap is a bug (abort).
int detok_out_cap(const Tokenizer *t);
// Writes the complete characters now available to out (NUL-terminated, at most out_cap bytes
// including the NUL) and returns their length (0 while a character is incomplete).
int detok_feed(Detok *d, const Tokenizer *t, int id, char *out, int out_cap);
// At the end of a stream: what is still held, as one U+FFFD.
int detok_flush(Detok *d, char *out, int out_cap);
