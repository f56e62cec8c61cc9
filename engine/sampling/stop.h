// stop.h: when a sequence stops, and which of its text the client sees (vLLM's StopChecker and
// the stop-string hold-back of its incremental detokenizer).
//
//   tokens   EOS (every end-of-generation token of the tokenizer, unless ignore_eos) and the
//            request's stop_token_ids end a sequence once it has min_tokens outputs; before that
//            stop_min_tokens_ban() lists them for the sampler to make impossible (vLLM's
//            MinTokensLogitsProcessor: after raw logprobs, so those still show their chance).
//            The stopping token counts as an output token; its text is left out unless
//            include_stop_str_in_output.
//   strings  stop strings are matched in the generated text, across token boundaries: the last
//            (longest stop string - 1) bytes are held back from the client until the next token
//            shows they do not begin a stop string. A match ends the sequence; the text ends
//            before the stop string (or after it with include_stop_str_in_output) and anything
//            after it in the same token is dropped. Only matches that end in the newest text
//            count, as in vLLM, and none before min_tokens outputs.
//   length   max_tokens and max_model_len are the scheduler's (SEQ_FINISH_LENGTH).
//
// Text is bytes of well-formed UTF-8 (the Detok's output): a stop string can only match at a
// character boundary, and held-back text is cut at one.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tokenizer/tokenizer.h"

#define STOP_MAX_STRINGS 16      // stop strings per request (OpenAI allows 4)
#define STOP_MAX_STRING_LEN 1024 // bytes of one stop string
#define STOP_MAX_TOKEN_IDS 1024  // stop_token_ids per request

typedef enum {
    STOP_NONE = 0,
    STOP_EOS = 1,    // an end-of-generation token
    STOP_TOKEN = 2,  // one of stop_token_ids
    STOP_STRING = 3, // a stop string matched in the text
} StopKind;

// One request's stop conditions (owned copies of the caller's arrays).
typedef struct {
    char **strs;        // (n_strs) NUL-terminated
    size_t *lens;       // (n_strs)
    int n_strs;
    size_t max_len;     // longest stop string, 0 without any
    int32_t *token_ids; // (n_token_ids)
    int n_token_ids;
    int min_tokens;
    bool ignore_eos;
    bool include_stop_str; // include_stop_str_in_output
} StopSpec;

// Copies and checks the conditions: stop strings non-empty and at most STOP_MAX_STRING_LEN bytes,
// ids inside the vocabulary. SL_ERR + err naming the parameter otherwise (nothing to free).
int stop_spec_init(StopSpec *s, const char *const *strs, int n_strs, const int32_t *token_ids, int n_token_ids,
                   int vocab, int min_tokens, bool ignore_eos, bool include_stop_str, char *err);
void stop_spec_free(StopSpec *s); // accepts a zeroed struct

// The tokens this step may not sample (sampler_sample_banned): while fewer than min_tokens tokens
// have been generated (num_out, before this one), the EOS tokens (eog_ids, unless ignore_eos) and
// stop_token_ids, written to out (room for n_eog + STOP_MAX_TOKEN_IDS). Returns how many: 0 from
// min_tokens on.
int stop_min_tokens_ban(const StopSpec *s, const int32_t *eog_ids, int n_eog, int num_out, int32_t *out);

// Whether the token just generated (the num_out-th) ends the sequence by itself.
StopKind stop_check_token(const StopSpec *s, const Tokenizer *t, int32_t token, int num_out);

// ---- text hold-back and stop-string matching for one sequence

typedef struct {
    char *buf;  // (cap) text generated but not yet given to the client
    size_t len, cap;
} StopText;

// Sizes the buffer for the spec's longest stop string plus one delta of at most max_delta bytes.
void stop_text_init(StopText *t, const StopSpec *s, size_t max_delta);
void stop_text_free(StopText *t); // accepts a zeroed struct

// Appends a text delta (whole UTF-8 characters). With check, looks for a stop string that ends in
// the new bytes and returns its index (-1 when none); after a match t->buf holds the final text
// (cut before or after the stop string). *n_final gets how many leading bytes of t->buf the client
// may have now: everything after a match or with final set, else all but the held-back tail.
// The caller copies them out and calls stop_text_consume().
int stop_text_push(StopText *t, const StopSpec *s, const char *delta, size_t n, bool check, bool final,
                   size_t *n_final);
void stop_text_consume(StopText *t, size_t n);
