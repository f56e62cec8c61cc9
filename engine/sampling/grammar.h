// grammar.h: constrained decoding (structured output) over XGrammar's C++ core, behind a C API.
//
// XGrammar (the engine vLLM and SGLang use) compiles a JSON schema, a regex, an EBNF grammar or a
// structural tag against the tokenizer's vocabulary once; a matcher per sequence then gives, at
// each step, the bitmask of tokens that keep the output inside the grammar (precomputed per
// grammar state, so a step costs microseconds), and accepts the token the sampler chose. It is
// built from its pinned PyPI source distribution by scripts/build-xgrammar.sh; grammar.cc is the
// only file that sees its headers.
//
// The vocabulary is handed over as each token's decoded bytes (tok_piece), so XGrammar's own
// byte-level / byte-fallback decoding never has to agree with ours: what the matcher checks is
// exactly the text the detokenizer will print. Control tokens are passed as "" (XGrammar's mark
// for a special token, never allowed inside a grammar); the tokenizer's end-of-generation tokens
// are the stop tokens, allowed only where the grammar may end.
//
// Thread safety: a GrammarVocab and a Grammar are immutable once made and may be shared by any
// threads (compiles on several threads at once are fine); a GrammarMatcher belongs to one thread
// at a time. Errors a client can cause (a bad schema, regex or grammar) return SL_ERR with
// XGrammar's message in err; nothing here aborts on client input.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GRAMMAR_NONE = 0,
    GRAMMAR_JSON_OBJECT,    // any JSON object (response_format json_object); text unused
    GRAMMAR_JSON_SCHEMA,    // text: a JSON schema
    GRAMMAR_REGEX,          // text: a regular expression the whole output must match
    GRAMMAR_CHOICE,         // text: a JSON array of strings; the output is exactly one of them
    GRAMMAR_EBNF,           // text: XGrammar EBNF / llama.cpp GBNF (root rule "root"), or Lark
    GRAMMAR_STRUCTURAL_TAG, // text: an XGrammar structural tag (JSON)
} GrammarKind;

const char *grammar_kind_name(GrammarKind k); // "json_object", "json_schema", "regex", ...

typedef struct GrammarVocab GrammarVocab;
typedef struct Grammar Grammar;
typedef struct GrammarMatcher GrammarMatcher;

// pieces[i] (lens[i] bytes) is token i's text; special[i] marks a control token; stop_ids are the
// end-of-generation tokens. compile_threads: XGrammar's threads per compile (>= 1).
int grammar_vocab_new(GrammarVocab **out, int vocab, const char *const *pieces, const size_t *lens,
                      const bool *special, const int32_t *stop_ids, int n_stop, int compile_threads, char *err);
void grammar_vocab_free(GrammarVocab *v);
// The same from a tokenizer's first vocab ids: tok_piece bytes, control tokens special, the
// end-of-generation tokens the stop tokens (grammar_vocab.c).
struct Tokenizer;
int grammar_vocab_from_tokenizer(GrammarVocab **out, const struct Tokenizer *tok, int vocab, int compile_threads,
                                 char *err);

// Compiles text[0..len) of the given kind (text may be NULL for GRAMMAR_JSON_OBJECT).
int grammar_compile(const GrammarVocab *v, GrammarKind kind, const char *text, size_t len, Grammar **out,
                    char *err);
void grammar_free(Grammar *g);
size_t grammar_memory_bytes(const Grammar *g);

// The bitmask of one step: bit (id % 32) of word (id / 32) set = token id allowed.
int grammar_mask_words(int vocab);
// logits[id] = -inf for every id < vocab whose bit is clear.
void grammar_mask_apply(const uint32_t *mask, float *logits, int vocab);

GrammarMatcher *grammar_matcher_new(const Grammar *g);
void grammar_matcher_free(GrammarMatcher *m); // accepts NULL
// Fills mask (grammar_mask_words(vocab) words) for the next token; returns false when every
// token is allowed (the mask need not be applied).
bool grammar_matcher_fill(GrammarMatcher *m, uint32_t *mask);
// Advances over token id; false (state unchanged) when the grammar does not allow it.
bool grammar_matcher_accept(GrammarMatcher *m, int32_t id);
// Undoes the last n accepted tokens (speculative decoding's rejected drafts).
void grammar_matcher_rollback(GrammarMatcher *m, int n);
// A stop token was accepted where the grammar may end: nothing more may follow.
bool grammar_matcher_terminated(const GrammarMatcher *m);
// The grammar's root is complete (a stop token would be accepted now).
bool grammar_matcher_completed(const GrammarMatcher *m);

#ifdef __cplusplus
}
#endif
