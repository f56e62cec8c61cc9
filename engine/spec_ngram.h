// spec_ngram.h: the n-gram (prompt lookup) proposer of speculative decoding (vLLM's "ngram"
// method): the tokens that followed an earlier occurrence of the sequence's own last n tokens.
// Summaries, rewrites and code edits copy long runs of their input, so the continuation of a
// matching n-gram is often what the model writes next; verifying it costs one forward over a
// few more rows, and a miss costs only those rows.
#pragma once

#include <stdint.h>

// The longest n in [n_min, n_max] such that t[len-n, len) occurs earlier in t[0, len), ending
// before len (overlap allowed); among equally long matches the most recent. Writes to out the k
// tokens that followed that occurrence, continuing the repetition past the end of t (the period
// being the distance from the match to the end), and returns k; 0 when nothing matches or k <= 0.
// O(len * n_max). out may be t + len.
int spec_ngram_propose(const int32_t *t, int len, int n_min, int n_max, int k, int32_t *out);
