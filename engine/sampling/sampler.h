// sampler.h: choosing the next token of one request from its row of logits, with the OpenAI /
// vLLM sampling parameters, a per-request random generator and optional logprobs.
//
// The pipeline (vLLM V1's order, see vllm/v1/sample/sampler.py):
//   1. logprobs source: in SAMPLER_LOGPROBS_RAW mode (vLLM's default "raw_logprobs") the logprobs
//      are those of the model's own logits, before anything below touches them;
//   2. banned tokens (sampler_sample_banned: what min_tokens holds back, EOS and stop tokens,
//      vLLM's MinTokensLogitsProcessor) get -inf; then logit bias: logit[id] += bias (OpenAI
//      logit_bias, -100..100);
//   3. penalties: repetition over prompt AND output tokens (logit > 0 ? logit / r : logit * r),
//      then frequency (- f * count) and presence (- p if count > 0) over OUTPUT tokens only;
//      in SAMPLER_LOGPROBS_PROCESSED mode the logprobs are taken here;
//   4. temperature < SAMPLER_TEMP_EPS: greedy (argmax, lowest id on ties), done;
//   5. temperature scaling, then min-p (keep p >= min_p * p_max), top-k (the k most likely, ties to
//      the lower id, so exactly k survive; vLLM keeps every token tied with the k-th), top-p
//      (the smallest most-likely-first set whose mass, renormalised after min-p and top-k,
//      reaches top_p; ties to the lower id);
//   6. one draw from the renormalised survivors with the request's generator.
// min-p commutes with top-k (both keep a most-likely-first prefix), so only its place before
// top-p matters; that is where vLLM V1 puts it.
//
// Determinism: every call to sampler_sample() advances the request's generator exactly once
// (greedy calls too), and nothing else reads it, so a seeded request's tokens depend only on its
// own logits, never on what else is in the batch or in which order rows are sampled.
//
// Cost per call at vocab V: greedy is one pass over V; top-k keeps a k-heap in one pass; top-p
// without top-k is one vectorised pass of exp, a gather of the few tokens that can be in the set
// (probability >= (1 - top_p) / V of the total), a histogram of those by log-probability and a
// sort of the one bin where the mass crosses top_p (never of V). Penalties touch only the
// request's distinct prompt/output tokens; bias only its listed ids. No allocation per call:
// everything lives in a SamplerScratch sized for the vocab once.
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define SAMPLER_MAX_LOGPROBS 20   // OpenAI's top_logprobs limit and vLLM's default max_logprobs
#define SAMPLER_TEMP_EPS 1e-5f    // below this temperature: greedy (vLLM's _SAMPLING_EPS)
#define SAMPLER_MAX_TEMPERATURE 2.0f
#define SAMPLER_MAX_ABS_BIAS 100.0f
#define SAMPLER_MAX_ABS_PENALTY 2.0f

typedef enum {
    SAMPLER_LOGPROBS_RAW = 0,   // log_softmax of the model's logits (vLLM's default logprobs_mode)
    SAMPLER_LOGPROBS_PROCESSED, // after logit bias and penalties, before temperature and filters
} SamplerLogprobsMode;

typedef struct {
    float temperature;        // [0, 2]; below SAMPLER_TEMP_EPS means greedy
    float top_p;              // (0, 1]; 1 disables
    float min_p;              // [0, 1]; 0 disables
    int top_k;                // -1 or 0 disables; k >= 1 keeps the k most likely
    float presence_penalty;   // [-2, 2]
    float frequency_penalty;  // [-2, 2]
    float repetition_penalty; // > 0; 1 disables
    int n_logit_bias;         // entries of the two arrays below (owned by the caller)
    const int32_t *logit_bias_ids;
    const float *logit_bias_vals; // each added to its id's logit; repeated ids add up
    uint64_t seed;
    bool has_seed;            // false: the state draws a seed from a process-wide source
    int logprobs;             // -1: none; 0..20: the chosen token's logprob + this many others
    SamplerLogprobsMode logprobs_mode;
} SamplingParams;

// OpenAI's defaults: temperature 1, top_p 1, no top-k/min-p, no penalties, no bias, no logprobs.
SamplingParams sampling_params_default(void);

// SL_OK, or SL_ERR with an OpenAI-style one-line message naming the parameter, e.g.
// "Invalid 'temperature': expected a value between 0 and 2, got 3". Rejects NaN everywhere.
int sampling_params_validate(const SamplingParams *p, int vocab, char *err);

// ---- the per-request random generator: xoshiro256** seeded through splitmix64. Fast, 256 bits
// of state, and the same stream on every platform for a given seed.
typedef struct {
    uint64_t s[4];
} SamplerRng;

void sampler_rng_seed(SamplerRng *r, uint64_t seed);
uint64_t sampler_rng_next(SamplerRng *r);
double sampler_rng_uniform(SamplerRng *r); // [0, 1) with 53 random bits
// A fresh seed for a request that gave none: a process-wide counter (thread-safe) mixed with
// entropy taken once from getrandom() (the clock if that fails), so two requests never share one.
uint64_t sampler_seed_fresh(void);

// ---- per-request state

// One distinct token the request has seen: in its prompt and/or its output so far.
typedef struct {
    int32_t token;
    int32_t count;     // occurrences in the output
    int32_t in_prompt; // 1 when it occurs in the prompt (only tracked for the repetition penalty)
} SamplerTokenCount;

typedef struct {
    SamplerRng rng;
    uint64_t seed; // where the generator started (the request's seed or the drawn one)
    int vocab;
    int n_output;  // tokens accepted so far
    // Penalty bookkeeping, allocated only when the request has a penalty. A hash map from token
    // to its entry rather than a dense count array of the vocab: memory follows the request's
    // distinct tokens (bounded by its context) instead of V per request (1 MiB each at 256k),
    // and applying the penalties walks `entries` only, never the vocab.
    bool track_prompt, track_output;
    SamplerTokenCount *entries; // (cap_entries) distinct tokens, n_entries used
    int n_entries, cap_entries;
    int32_t *slots;             // (cap_slots, a power of two) open addressing: entry index or -1
    int cap_slots;
} SamplerState;

// Seeds the generator and, when a penalty is on, records the prompt's tokens. max_output is a
// capacity hint (the request's max_tokens): with it, sampler_state_accept() never allocates;
// with 0 the tables grow by doubling when they need to. The params must be valid for vocab.
void sampler_state_init(SamplerState *st, const SamplingParams *p, int vocab,
                        const int32_t *prompt, int n_prompt, int max_output);
// Accepts a zeroed struct.
void sampler_state_free(SamplerState *st);
// Records that `token` was appended to the request's output (call once per generated token).
void sampler_state_accept(SamplerState *st, int32_t token);
// How often `token` occurs in the output so far (0 when output counts are not tracked).
int sampler_state_count(const SamplerState *st, int32_t token);

// ---- scratch: one per thread that samples, sized for the largest vocab once.

typedef struct {
    float val; // a logit, or an unnormalised probability exp((logit - max) / T)
    int32_t id;
} SamplerCand;

typedef struct {
    int vocab;
    float *probs;      // (vocab) unnormalised probabilities
    uint8_t *bins;     // (vocab) top-p histogram bin of each token
    SamplerCand *cand; // (2 * vocab) candidates, then a staging area for the top-p cut
    float *raw;        // (vocab) the logits before bias and penalties, for raw logprobs
    double *blk_sum;   // (vocab / 256 rounded up) per-block sums of probs
    float *lane_max;   // (same * 16) per-block, per-lane maxima of probs
} SamplerScratch;

void sampler_scratch_init(SamplerScratch *sc, int vocab);
void sampler_scratch_free(SamplerScratch *sc); // accepts a zeroed struct

// ---- sampling

typedef struct {
    int32_t token;
    float logprob;                           // of the chosen token
    int n_top;                               // min(params.logprobs, vocab)
    int32_t top_ids[SAMPLER_MAX_LOGPROBS];   // most likely first, ties to the lower id
    float top_logprobs[SAMPLER_MAX_LOGPROBS];
    int rank;                                // prompt logprobs only: 1 + the ids with a larger logit
                                             // (vLLM's Logprob.rank); 0 where not computed
} SampleLogprobs;

// The next token for one request. logits (vocab floats) are modified in place (bias, penalties).
// When params->logprobs >= 0 and lp is not NULL, fills lp. The caller then appends the token and
// calls sampler_state_accept(). params must have passed sampling_params_validate().
// The CUDA twin is kernels/cuda/sample.cu (k_sample_cuda), compared with this one by
// tests/gpu/test_gpu_sample.c.
int32_t sampler_sample(const SamplingParams *p, SamplerState *st, float *logits, int vocab,
                       SamplerScratch *sc, SampleLogprobs *lp);
// The same with ban[0..n_ban) made impossible for this step (step 2 above: after raw logprobs are
// taken, so a client asking for them still sees EOS's own probability while min_tokens holds it
// off; processed logprobs see -inf). n_ban 0 is sampler_sample.
int32_t sampler_sample_banned(const SamplingParams *p, SamplerState *st, float *logits, int vocab,
                              const int32_t *ban, int n_ban, SamplerScratch *sc, SampleLogprobs *lp);

// The index of the largest of x[0..n), the lowest on ties: greedy sampling's choice (step 4).
int32_t sampler_argmax(const float *x, int n);

// Raw logprobs of `token` and the n_top best (0..SAMPLER_MAX_LOGPROBS) under log_softmax(logits),
// with the arithmetic sampler_sample uses for raw logprobs, so a prompt token's logprob (prompt
// logprobs, teacher forcing) equals the one the sampler reports when it generates that token;
// also fills lp->rank.
void sampler_logprobs(const float *logits, int vocab, int32_t token, int n_top, SamplerScratch *sc,
                      SampleLogprobs *lp);

// The survivors of temperature, min-p, top-k and top-p for already biased and penalised logits
// (temperature >= SAMPLER_TEMP_EPS): writes them to sc->cand[0..n) as (unnormalised probability,
// id) and returns n; sampler_sample draws from exactly this set. For tests and debugging.
int sampler_filter(const SamplingParams *p, const float *logits, int vocab, SamplerScratch *sc);

// The two in-place steps on their own (sampler_sample runs them), exposed for tests and for a
// device sampler that wants the CPU's exact penalty arithmetic.
void sampler_apply_logit_bias(const SamplingParams *p, float *logits, int vocab);
void sampler_apply_penalties(const SamplingParams *p, const SamplerState *st, float *logits);
