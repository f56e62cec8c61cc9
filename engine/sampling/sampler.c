// sampler.c: see sampler.h. In order: the parameters (defaults, validation), the per-request
// generator, the per-request token counts the penalties read, the scratch, then the sampling
// pipeline (bans, bias, penalties, greedy, temperature, min-p, top-k, top-p, the draw) and
// logprobs. The CPU twin of kernels/cuda/sample.cu (k_sample_cuda), checked against it by
// tests/gpu/test_gpu_sample.c.
//
// Hot loops run over blocks of SAMPLER_BLOCK = 16 x 16 tokens: `omp simd` loops (the Makefile's
// -fopenmp enables them) keep 16 lanes of sums or maxima in one vector register, and scalar work
// (an index, a heap insert, a gather) only visits the blocks and lanes whose max can matter. exp
// is a polynomial written so the compiler can vectorise it; glibc's expf has no vector form
// without -ffast-math.
#include "engine/sampling/sampler.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"

#define SAMPLER_BLOCK 256     // tokens per block: per-block sums and maxima
#define SAMPLER_CHUNK 16      // a block is SAMPLER_CHUNK rows of SAMPLER_CHUNK (one AVX-512 vector)
_Static_assert(SAMPLER_BLOCK == SAMPLER_CHUNK * SAMPLER_CHUNK, "a block is a square of chunks");
#define SAMPLER_NBINS 255     // top-p histogram bins, 8 per octave of probability; the last one is
                              // the tail (p / p_max < 2^-31)

// ----------------------------------------------------------------------------
// parameters

SamplingParams sampling_params_default(void) {
    SamplingParams p;
    memset(&p, 0, sizeof(p));
    p.temperature = 1.0f;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.top_k = -1;
    p.repetition_penalty = 1.0f;
    p.logprobs = -1;
    p.logprobs_mode = SAMPLER_LOGPROBS_RAW;
    return p;
}

// Comparisons are written so that NaN fails them: !(lo <= x && x <= hi).
int sampling_params_validate(const SamplingParams *p, int vocab, char *err) {
    CHECK(vocab > 0);
    if (!(p->temperature >= 0.0f && p->temperature <= SAMPLER_MAX_TEMPERATURE))
        return seterr(err, "Invalid 'temperature': expected a value between 0 and %g, got %g",
                      (double)SAMPLER_MAX_TEMPERATURE, (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return seterr(err, "Invalid 'top_p': expected a value greater than 0 and at most 1, got %g",
                      (double)p->top_p);
    if (p->top_k < -1)
        return seterr(err, "Invalid 'top_k': expected -1 or 0 (disabled) or a positive integer, "
                      "got %d", p->top_k);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return seterr(err, "Invalid 'min_p': expected a value between 0 and 1, got %g",
                      (double)p->min_p);
    if (!(fabsf(p->presence_penalty) <= SAMPLER_MAX_ABS_PENALTY))
        return seterr(err, "Invalid 'presence_penalty': expected a value between -2 and 2, got %g",
                      (double)p->presence_penalty);
    if (!(fabsf(p->frequency_penalty) <= SAMPLER_MAX_ABS_PENALTY))
        return seterr(err, "Invalid 'frequency_penalty': expected a value between -2 and 2, got %g",
                      (double)p->frequency_penalty);
    if (!(p->repetition_penalty > 0.0f && isfinite(p->repetition_penalty)))
        return seterr(err, "Invalid 'repetition_penalty': expected a value greater than 0, got %g",
                      (double)p->repetition_penalty);
    if (p->n_logit_bias < 0 || (p->n_logit_bias > 0 && (!p->logit_bias_ids || !p->logit_bias_vals)))
        return seterr(err, "Invalid 'logit_bias': malformed bias list");
    for (int i = 0; i < p->n_logit_bias; i++) {
        int32_t id = p->logit_bias_ids[i];
        float v = p->logit_bias_vals[i];
        if (id < 0 || id >= vocab)
            return seterr(err, "Invalid 'logit_bias': token id %d is outside the vocabulary "
                          "(0 to %d)", (int)id, vocab - 1);
        if (!(fabsf(v) <= SAMPLER_MAX_ABS_BIAS))
            return seterr(err, "Invalid 'logit_bias': bias for token %d must be between -100 and "
                          "100, got %g", (int)id, (double)v);
    }
    if (p->logprobs < -1 || p->logprobs > SAMPLER_MAX_LOGPROBS)
        return seterr(err, "Invalid 'top_logprobs': expected a value between 0 and %d, got %d",
                      SAMPLER_MAX_LOGPROBS, p->logprobs);
    if (p->logprobs_mode != SAMPLER_LOGPROBS_RAW && p->logprobs_mode != SAMPLER_LOGPROBS_PROCESSED)
        return seterr(err, "Invalid 'logprobs_mode': unknown mode %d", (int)p->logprobs_mode);
    return SL_OK;
}

// ----------------------------------------------------------------------------
// generator: xoshiro256** (Blackman & Vigna), seeded through splitmix64 so that nearby seeds
// (0, 1, 2, ...) still start from unrelated, never all-zero states.

static uint64_t splitmix64_next(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void sampler_rng_seed(SamplerRng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64_next(&seed);
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sampler_rng_next(SamplerRng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return out;
}

double sampler_rng_uniform(SamplerRng *r) {
    return (double)(sampler_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); // / 2^53
}

static uint64_t seed_base;
static uint64_t seed_counter;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

static void seed_base_init(void) {
    uint64_t b = 0;
    if (getrandom(&b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        b = ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
            ((uint64_t)getpid() << 32);
    }
    seed_base = b;
}

uint64_t sampler_seed_fresh(void) {
    pthread_once(&seed_once, seed_base_init);
    uint64_t x = seed_base + 0x9e3779b97f4a7c15ull *
                                 __atomic_fetch_add(&seed_counter, 1, __ATOMIC_RELAXED);
    return splitmix64_next(&x);
}

// ----------------------------------------------------------------------------
// token counts: open addressing with linear probing over `slots`, entries kept dense so that the
// penalties walk an array with no holes.

static inline uint32_t slot_of(int32_t token, int cap_slots) {
    return ((uint32_t)token * 0x9e3779b1u) & (uint32_t)(cap_slots - 1);
}

static int next_pow2(int n) {
    int c = 16;
    while (c < n) c *= 2;
    return c;
}

static void counts_rehash(SamplerState *st, int cap_slots) {
    free(st->slots);
    st->cap_slots = cap_slots;
    st->slots = xmalloc((size_t)cap_slots * sizeof(int32_t));
    memset(st->slots, 0xff, (size_t)cap_slots * sizeof(int32_t)); // all -1
    for (int e = 0; e < st->n_entries; e++) {
        uint32_t s = slot_of(st->entries[e].token, cap_slots);
        while (st->slots[s] >= 0) s = (s + 1) & (uint32_t)(cap_slots - 1);
        st->slots[s] = e;
    }
}

// Sizes the tables for `distinct` tokens: entries exactly, slots at most half full.
static void counts_reserve(SamplerState *st, int distinct) {
    if (distinct > st->cap_entries) {
        st->cap_entries = distinct;
        st->entries = xrealloc(st->entries, (size_t)distinct * sizeof(SamplerTokenCount));
    }
    if (2 * distinct > st->cap_slots) counts_rehash(st, next_pow2(2 * distinct));
}

// The entry for token, created (zeroed) when missing.
static SamplerTokenCount *counts_get(SamplerState *st, int32_t token) {
    if (st->n_entries + 1 > st->cap_entries) {
        int want = MIN(st->vocab, MAX(16, 2 * st->cap_entries));
        counts_reserve(st, MAX(want, st->n_entries + 1));
    }
    uint32_t mask = (uint32_t)(st->cap_slots - 1), s = slot_of(token, st->cap_slots);
    while (st->slots[s] >= 0) {
        SamplerTokenCount *e = &st->entries[st->slots[s]];
        if (e->token == token) return e;
        s = (s + 1) & mask;
    }
    int e = st->n_entries++;
    st->slots[s] = e;
    st->entries[e] = (SamplerTokenCount){.token = token, .count = 0, .in_prompt = 0};
    return &st->entries[e];
}

void sampler_state_init(SamplerState *st, const SamplingParams *p, int vocab,
                        const int32_t *prompt, int n_prompt, int max_output) {
    CHECK(vocab > 0 && n_prompt >= 0 && max_output >= 0);
    memset(st, 0, sizeof(*st));
    st->vocab = vocab;
    st->seed = p->has_seed ? p->seed : sampler_seed_fresh();
    sampler_rng_seed(&st->rng, st->seed);
    st->track_prompt = p->repetition_penalty != 1.0f;
    st->track_output = st->track_prompt || p->presence_penalty != 0.0f ||
                       p->frequency_penalty != 0.0f;
    if (!st->track_output) return;
    long distinct = (long)max_output + (st->track_prompt ? n_prompt : 0);
    counts_reserve(st, (int)MIN((long)vocab, MAX(distinct, 16L)));
    if (!st->track_prompt) return;
    for (int i = 0; i < n_prompt; i++) {
        CHECK(prompt[i] >= 0 && prompt[i] < vocab, "prompt token %d of %d", (int)prompt[i], vocab);
        counts_get(st, prompt[i])->in_prompt = 1;
    }
}

void sampler_state_free(SamplerState *st) {
    free(st->entries);
    free(st->slots);
    memset(st, 0, sizeof(*st));
}

void sampler_state_accept(SamplerState *st, int32_t token) {
    CHECK(token >= 0 && token < st->vocab, "token %d of %d", (int)token, st->vocab);
    st->n_output++;
    if (st->track_output) counts_get(st, token)->count++;
}

int sampler_state_count(const SamplerState *st, int32_t token) {
    if (!st->track_output || st->cap_slots == 0) return 0;
    uint32_t mask = (uint32_t)(st->cap_slots - 1), s = slot_of(token, st->cap_slots);
    while (st->slots[s] >= 0) {
        const SamplerTokenCount *e = &st->entries[st->slots[s]];
        if (e->token == token) return e->count;
        s = (s + 1) & mask;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// scratch

void sampler_scratch_init(SamplerScratch *sc, int vocab) {
    CHECK(vocab > 0);
    int nblk = (vocab + SAMPLER_BLOCK - 1) / SAMPLER_BLOCK;
    sc->vocab = vocab;
    sc->probs = xmalloc_aligned((size_t)vocab * sizeof(float));
    sc->raw = xmalloc_aligned((size_t)vocab * sizeof(float));
    sc->bins = xmalloc((size_t)vocab);
    sc->cand = xmalloc(2 * (size_t)vocab * sizeof(SamplerCand)); // candidates + a staging half
    sc->blk_sum = xmalloc((size_t)nblk * sizeof(double));
    sc->lane_max = xmalloc((size_t)nblk * SAMPLER_CHUNK * sizeof(float));
}

void sampler_scratch_free(SamplerScratch *sc) {
    free(sc->probs);
    free(sc->raw);
    free(sc->bins);
    free(sc->cand);
    free(sc->blk_sum);
    free(sc->lane_max);
    memset(sc, 0, sizeof(*sc));
}

// ----------------------------------------------------------------------------
// vectorisable helpers

// exp(x) for x <= 0, relative error below 1e-7; 0 below -87.3 (and for -inf).
// Cody-Waite reduction x = n ln2 + r with |r| <= ln2 / 2, a degree-7 Taylor polynomial for e^r,
// and 2^n built in the exponent bits. n is rounded with the 1.5 * 2^23 trick rather than rintf(),
// which gcc does not vectorise.
static inline float exp_nonpos(float x) {
    float xc = x > -87.3f ? x : -87.3f;
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = fmaf(n, -0.693145751953125f, xc);
    r = fmaf(n, -1.428606765330187045e-06f, r);
    float q = 1.0f / 5040.0f;
    q = fmaf(q, r, 1.0f / 720.0f);
    q = fmaf(q, r, 1.0f / 120.0f);
    q = fmaf(q, r, 1.0f / 24.0f);
    q = fmaf(q, r, 1.0f / 6.0f);
    q = fmaf(q, r, 0.5f);
    q = fmaf(q, r, 1.0f);
    q = fmaf(q, r, 1.0f);
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof(two_n));
    return x < -87.3f ? 0.0f : q * two_n;
}

static inline float block_max(const float *x, int n) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

// Column maxima of a whole block seen as SAMPLER_CHUNK rows of SAMPLER_CHUNK:
// cm[j] = max over r of x[r * SAMPLER_CHUNK + j]. The rows are whole vectors, so this is a few
// vector max ops with no horizontal step; a scan then visits only the columns (lanes) whose max
// can matter, each a strided set of SAMPLER_CHUNK tokens. Scans that visit lanes out of id order
// compare (value, id) in full so ties still go to the lower id.
static inline void block_colmax(const float *x, float *cm) {
#pragma omp simd
    for (int j = 0; j < SAMPLER_CHUNK; j++) cm[j] = x[j];
    for (int r = 1; r < SAMPLER_CHUNK; r++) {
#pragma omp simd
        for (int j = 0; j < SAMPLER_CHUNK; j++)
            cm[j] = x[r * SAMPLER_CHUNK + j] > cm[j] ? x[r * SAMPLER_CHUNK + j] : cm[j];
    }
}

// The index of the largest value, the lowest one on ties: one pass, block by block; a block is
// scanned for its index only when its max beats the best so far.
int32_t sampler_argmax(const float *x, int n) {
    int32_t best = 0;
    float bv = x[0];
    for (int b0 = 0; b0 < n; b0 += SAMPLER_BLOCK) {
        int len = MIN(SAMPLER_BLOCK, n - b0);
        float m = block_max(x + b0, len);
        if (!(m > bv)) continue;
        for (int i = 0; i < len; i++)
            if (x[b0 + i] == m) { best = b0 + i; bv = m; break; }
    }
    return best;
}

// ----------------------------------------------------------------------------
// the in-place steps

void sampler_apply_logit_bias(const SamplingParams *p, float *logits, int vocab) {
    for (int i = 0; i < p->n_logit_bias; i++) {
        int32_t id = p->logit_bias_ids[i];
        CHECK(id >= 0 && id < vocab, "logit_bias id %d of %d (params not validated)", (int)id,
              vocab);
        logits[id] += p->logit_bias_vals[i];
    }
}

// vLLM's arithmetic and order: repetition (prompt or output), then - f * count, then - presence.
void sampler_apply_penalties(const SamplingParams *p, const SamplerState *st, float *logits) {
    float rep = p->repetition_penalty, freq = p->frequency_penalty, pres = p->presence_penalty;
    CHECK(st->track_prompt || rep == 1.0f, "repetition penalty set after sampler_state_init");
    CHECK(st->track_output || (freq == 0.0f && pres == 0.0f),
          "penalty set after sampler_state_init");
    if (!st->track_output) return;
    for (int i = 0; i < st->n_entries; i++) {
        const SamplerTokenCount *e = &st->entries[i];
        float x = logits[e->token];
        if (rep != 1.0f) x = x > 0.0f ? x / rep : x * rep; // every entry is in prompt or output
        if (e->count > 0) {
            x -= freq * (float)e->count;
            x -= pres;
        }
        logits[e->token] = x;
    }
}

// ----------------------------------------------------------------------------
// random sampling over the temperature-scaled distribution

// Best-first order: higher value, then lower id.
static int cand_cmp_desc(const void *a, const void *b) {
    const SamplerCand *x = a, *y = b;
    if (x->val != y->val) return x->val > y->val ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

// One draw from cand[0..n) weighted by val, walking in list order.
static int32_t draw_from(const SamplerCand *cand, int n, double u) {
    double z = 0;
    for (int i = 0; i < n; i++) z += cand[i].val;
    double t = u * z, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += cand[i].val;
        if (acc > t) return cand[i].id;
    }
    for (int i = n - 1; i > 0; i--) // rounding left t at the very top: the last one with mass
        if (cand[i].val > 0) return cand[i].id;
    return cand[0].id;
}

static inline float prob_of(float logit, float max, float inv_t, float min_p) {
    float e = exp_nonpos((logit - max) * inv_t);
    return e >= min_p ? e : 0.0f;
}

// probs[i] = exp((logit - max) / T), zeroed below min_p (p / p_max = probs[i] since the max maps
// to exactly 1), with each block's sum and its lanes' maxima (see block_colmax; the ragged last
// block gets its max in every lane). Returns the total. A block is summed by lane in float (16
// terms each), then across lanes and blocks in double; the lanes stay in vector registers.
static double probs_fill(const float *logits, int vocab, float max, float inv_t, float min_p,
                         SamplerScratch *sc) {
    double z = 0;
    for (int b = 0, b0 = 0; b0 < vocab; b++, b0 += SAMPLER_BLOCK) {
        const float *l = logits + b0;
        float *pr = sc->probs + b0, *lane_max = sc->lane_max + b * SAMPLER_CHUNK;
        double s = 0;
        if (vocab - b0 < SAMPLER_BLOCK) { // the ragged tail
            float m = 0;
            for (int i = 0; i < vocab - b0; i++) {
                pr[i] = prob_of(l[i], max, inv_t, min_p);
                s += pr[i];
                m = pr[i] > m ? pr[i] : m;
            }
            for (int j = 0; j < SAMPLER_CHUNK; j++) lane_max[j] = m;
        } else {
            float cs[SAMPLER_CHUNK], cm[SAMPLER_CHUNK];
#pragma omp simd
            for (int j = 0; j < SAMPLER_CHUNK; j++) cs[j] = cm[j] = 0.0f;
            for (int r = 0; r < SAMPLER_CHUNK; r++) {
#pragma omp simd
                for (int j = 0; j < SAMPLER_CHUNK; j++) {
                    float e = prob_of(l[r * SAMPLER_CHUNK + j], max, inv_t, min_p);
                    pr[r * SAMPLER_CHUNK + j] = e;
                    cs[j] += e;
                    cm[j] = e > cm[j] ? e : cm[j];
                }
            }
            for (int j = 0; j < SAMPLER_CHUNK; j++) {
                s += cs[j];
                lane_max[j] = cm[j];
            }
        }
        sc->blk_sum[b] = s;
        z += s;
    }
    return z;
}

// Neither top-k nor top-p: an inverse-CDF draw over probs, skipping whole blocks by their sums.
static int32_t sample_all(int vocab, double z, SamplerScratch *sc, double u) {
    double t = u * z, acc = 0;
    for (int b = 0, b0 = 0; b0 < vocab; b++, b0 += SAMPLER_BLOCK) {
        if (acc + sc->blk_sum[b] <= t) { acc += sc->blk_sum[b]; continue; }
        int len = MIN(SAMPLER_BLOCK, vocab - b0);
        for (int i = 0; i < len; i++) { // sums here may round apart from blk_sum: go on if so
            acc += sc->probs[b0 + i];
            if (acc > t) return b0 + i;
        }
    }
    for (int i = vocab - 1; i > 0; i--)
        if (sc->probs[i] > 0) return i;
    return 0;
}

// Keeps the shortest best-first prefix of cand[0..n) (sorted, val = probability) whose mass
// reaches top_p of the total. Returns its length (at least 1).
static int top_p_prefix(const SamplerCand *cand, int n, float top_p) {
    double z = 0;
    for (int i = 0; i < n; i++) z += cand[i].val;
    double target = (double)top_p * z, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += cand[i].val;
        if (acc >= target) return i + 1;
    }
    return n;
}

// Heap ordered worst-at-root: lower logit, then higher id.
static inline bool cand_worse(SamplerCand a, SamplerCand b) {
    return a.val < b.val || (a.val == b.val && a.id > b.id);
}

static void heap_sift_down(SamplerCand *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_worse(h[l], h[w])) w = l;
        if (r < n && cand_worse(h[r], h[w])) w = r;
        if (w == i) return;
        SamplerCand t = h[i]; h[i] = h[w]; h[w] = t;
        i = w;
    }
}

static void heap_sift_up(SamplerCand *h, int i) {
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!cand_worse(h[i], h[parent])) return;
        SamplerCand t = h[i]; h[i] = h[parent]; h[parent] = t;
        i = parent;
    }
}

static inline void heap_offer(SamplerCand *h, int *n, int k, SamplerCand c) {
    if (*n < k) {
        h[*n] = c;
        heap_sift_up(h, (*n)++);
    } else if (cand_worse(h[0], c)) {
        h[0] = c;
        heap_sift_down(h, k, 0);
    }
}

// Top-k: the k best logits by a worst-at-root heap in one pass (only the lanes of a block whose
// max reaches the heap's worst are visited), then min-p and top-p over those k.
static int filter_top_k(const SamplingParams *p, const float *logits, int vocab, float inv_t,
                        SamplerScratch *sc) {
    SamplerCand *h = sc->cand;
    int k = p->top_k, n = 0;
    float cm[SAMPLER_CHUNK];
    for (int b0 = 0; b0 < vocab; b0 += SAMPLER_BLOCK) {
        if (vocab - b0 < SAMPLER_BLOCK) { // the ragged tail, in order
            for (int i = b0; i < vocab; i++) heap_offer(h, &n, k, (SamplerCand){logits[i], i});
            break;
        }
        block_colmax(logits + b0, cm);
        for (int j = 0; j < SAMPLER_CHUNK; j++) {
            if (n == k && !(cm[j] >= h[0].val)) continue;
            for (int i = b0 + j; i < b0 + SAMPLER_BLOCK; i += SAMPLER_CHUNK)
                if (n < k || logits[i] >= h[0].val)
                    heap_offer(h, &n, k, (SamplerCand){logits[i], i});
        }
    }
    float max = h[0].val;
    for (int i = 1; i < n; i++) max = h[i].val > max ? h[i].val : max;
    CHECK(isfinite(max), "logits max %g", (double)max);
    if (p->top_p < 1.0f) qsort(h, (size_t)n, sizeof(*h), cand_cmp_desc);
    int m = 0;
    for (int i = 0; i < n; i++) { // logits -> probabilities, dropping those under min-p
        float e = exp_nonpos((h[i].val - max) * inv_t);
        if (e >= p->min_p && e > 0) h[m++] = (SamplerCand){e, h[i].id};
    }
    CHECK(m > 0); // the max survives everything
    if (p->top_p < 1.0f) m = top_p_prefix(h, m, p->top_p);
    return m;
}

// Gathers token i (probability e) as a top-p candidate when e >= c, with its histogram bin:
// 8 bins per octave from the float's exponent and top mantissa bits (e <= 1: bin 0 at e = 1).
static inline int top_p_take(SamplerScratch *sc, int n, float e, int32_t i, float c, double *mass) {
    if (!(e >= c && e > 0)) return n;
    uint32_t bits;
    memcpy(&bits, &e, sizeof(bits));
    uint32_t bin = MIN((0x3f800000u - bits) >> 20, SAMPLER_NBINS - 1u);
    sc->bins[n] = (uint8_t)bin;
    mass[bin] += e;
    sc->cand[n] = (SamplerCand){e, i};
    return n + 1;
}

// Top-p without top-k, never sorting the vocab:
//  1. probs and their total z in one vectorised pass (probs_fill);
//  2. a token with probability below c = (1 - top_p) z / V can never be in the kept set, since all
//     of them together weigh less than (1 - top_p) z: gather only those >= c, skipping blocks and
//     lanes by their max;
//  3. histogram the gathered by probability (top_p_take); bins above the one where the
//     best-first mass crosses top_p z are kept whole, and only that one bin is sorted to find
//     the exact cut.
static int filter_top_p(const SamplingParams *p, int vocab, double z, SamplerScratch *sc) {
    SamplerCand *cand = sc->cand, *stage = sc->cand + vocab;
    double target = (double)p->top_p * z;
    float c = (float)((1.0 - (double)p->top_p) * z / vocab);
    int n = 0;
    double mass[SAMPLER_NBINS] = {0};
    const float *pr = sc->probs;
    for (int b = 0, b0 = 0; b0 < vocab; b++, b0 += SAMPLER_BLOCK) {
        const float *lane_max = sc->lane_max + b * SAMPLER_CHUNK;
        if (vocab - b0 < SAMPLER_BLOCK) { // the ragged tail, in order
            if (lane_max[0] >= c)
                for (int i = b0; i < vocab; i++) n = top_p_take(sc, n, pr[i], i, c, mass);
            break;
        }
        for (int j = 0; j < SAMPLER_CHUNK; j++) {
            if (!(lane_max[j] >= c)) continue;
            for (int i = b0 + j; i < b0 + SAMPLER_BLOCK; i += SAMPLER_CHUNK)
                n = top_p_take(sc, n, pr[i], i, c, mass);
        }
    }
    CHECK(n > 0);
    int cross = SAMPLER_NBINS - 1;
    double before = 0; // mass of the bins above `cross`
    for (int b = 0; b < SAMPLER_NBINS; b++) {
        if (before + mass[b] >= target) { cross = b; break; }
        before += mass[b];
    }
    int kept = 0, staged = 0;
    for (int i = 0; i < n; i++) {
        if (sc->bins[i] < cross) cand[kept++] = cand[i];
        else if (sc->bins[i] == cross) stage[staged++] = cand[i];
    }
    qsort(stage, (size_t)staged, sizeof(*stage), cand_cmp_desc);
    double acc = before;
    for (int i = 0; i < staged; i++) {
        cand[kept++] = stage[i];
        acc += stage[i].val;
        if (acc >= target) break;
    }
    return kept;
}

static int32_t sample_random(const SamplingParams *p, const float *logits, int vocab,
                             SamplerScratch *sc, double u) {
    float inv_t = 1.0f / p->temperature;
    if (p->top_k > 0 && p->top_k < vocab)
        return draw_from(sc->cand, filter_top_k(p, logits, vocab, inv_t, sc), u);
    float max = block_max(logits, vocab);
    CHECK(isfinite(max), "logits max %g", (double)max);
    double z = probs_fill(logits, vocab, max, inv_t, p->min_p, sc);
    if (p->top_p < 1.0f) return draw_from(sc->cand, filter_top_p(p, vocab, z, sc), u);
    return sample_all(vocab, z, sc, u);
}

int sampler_filter(const SamplingParams *p, const float *logits, int vocab, SamplerScratch *sc) {
    CHECK(vocab <= sc->vocab && p->temperature >= SAMPLER_TEMP_EPS);
    float inv_t = 1.0f / p->temperature;
    if (p->top_k > 0 && p->top_k < vocab) return filter_top_k(p, logits, vocab, inv_t, sc);
    float max = block_max(logits, vocab);
    CHECK(isfinite(max), "logits max %g", (double)max);
    double z = probs_fill(logits, vocab, max, inv_t, p->min_p, sc);
    if (p->top_p < 1.0f) return filter_top_p(p, vocab, z, sc);
    int n = 0;
    for (int i = 0; i < vocab; i++)
        if (sc->probs[i] > 0) sc->cand[n++] = (SamplerCand){sc->probs[i], i};
    return n;
}

// ----------------------------------------------------------------------------
// logprobs: log_softmax of `x` at the chosen token and at the n_top best, with the sum of
// exp(x - max) from probs_fill (double across blocks).

// Offers (v, i) to the best-first list vals/ids of n <= want entries; returns the new n.
static inline int top_n_offer(float *vals, int32_t *ids, int n, int want, float v, int32_t i) {
    SamplerCand c = {v, i};
    if (n == want && !cand_worse((SamplerCand){vals[n - 1], ids[n - 1]}, c)) return n;
    int pos = n < want ? n++ : n - 1;
    while (pos > 0 && cand_worse((SamplerCand){vals[pos - 1], ids[pos - 1]}, c)) {
        vals[pos] = vals[pos - 1];
        ids[pos] = ids[pos - 1];
        pos--;
    }
    vals[pos] = v;
    ids[pos] = i;
    return n;
}

static void logprobs_fill(const float *x, int vocab, int32_t chosen, int n_top,
                          SamplerScratch *sc, SampleLogprobs *lp) {
    n_top = MIN(n_top, vocab);
    int want = MAX(n_top, 1), n = 0;
    float vals[SAMPLER_MAX_LOGPROBS] = {0};
    int32_t ids[SAMPLER_MAX_LOGPROBS] = {0};
    float cm[SAMPLER_CHUNK];
    for (int b0 = 0; b0 < vocab; b0 += SAMPLER_BLOCK) {
        if (vocab - b0 < SAMPLER_BLOCK) { // the ragged tail, in order
            for (int i = b0; i < vocab; i++) n = top_n_offer(vals, ids, n, want, x[i], i);
            break;
        }
        block_colmax(x + b0, cm);
        for (int j = 0; j < SAMPLER_CHUNK; j++) {
            if (n == want && !(cm[j] >= vals[n - 1])) continue;
            for (int i = b0 + j; i < b0 + SAMPLER_BLOCK; i += SAMPLER_CHUNK)
                if (n < want || x[i] >= vals[n - 1]) n = top_n_offer(vals, ids, n, want, x[i], i);
        }
    }
    float max = vals[0];
    CHECK(isfinite(max), "logits max %g", (double)max);
    double lse = (double)max + log(probs_fill(x, vocab, max, 1.0f, 0.0f, sc)); // sampling is done

    lp->token = chosen;
    lp->logprob = (float)((double)x[chosen] - lse);
    lp->n_top = n_top;
    for (int i = 0; i < n_top; i++) {
        lp->top_ids[i] = ids[i];
        lp->top_logprobs[i] = (float)((double)vals[i] - lse);
    }
}

// ----------------------------------------------------------------------------

int32_t sampler_sample_banned(const SamplingParams *p, SamplerState *st, float *logits, int vocab,
                              const int32_t *ban, int n_ban, SamplerScratch *sc, SampleLogprobs *lp) {
    CHECK(vocab == st->vocab && vocab <= sc->vocab, "vocab %d, state %d, scratch %d", vocab,
          st->vocab, sc->vocab);
    double u = sampler_rng_uniform(&st->rng); // exactly one draw per token, greedy or not
    bool want_lp = lp && p->logprobs >= 0;
    const float *lp_src = logits;
    if (want_lp && p->logprobs_mode == SAMPLER_LOGPROBS_RAW &&
        (n_ban > 0 || p->n_logit_bias > 0 || st->track_output)) {
        memcpy(sc->raw, logits, (size_t)vocab * sizeof(float));
        lp_src = sc->raw;
    }
    for (int i = 0; i < n_ban; i++) {
        CHECK(ban[i] >= 0 && ban[i] < vocab, "banned id %d of %d", ban[i], vocab);
        logits[ban[i]] = -INFINITY;
    }
    sampler_apply_logit_bias(p, logits, vocab);
    sampler_apply_penalties(p, st, logits);
    int32_t token = p->temperature < SAMPLER_TEMP_EPS ? sampler_argmax(logits, vocab)
                                                      : sample_random(p, logits, vocab, sc, u);
    if (want_lp) logprobs_fill(lp_src, vocab, token, p->logprobs, sc, lp);
    return token;
}

void sampler_logprobs(const float *logits, int vocab, int32_t token, int n_top, SamplerScratch *sc,
                      SampleLogprobs *lp) {
    CHECK(vocab <= sc->vocab && token >= 0 && token < vocab && n_top >= 0 && n_top <= SAMPLER_MAX_LOGPROBS);
    logprobs_fill(logits, vocab, token, n_top, sc, lp);
    int above = 0;
    for (int i = 0; i < vocab; i++) above += logits[i] > logits[token];
    lp->rank = above + 1;
}

int32_t sampler_sample(const SamplingParams *p, SamplerState *st, float *logits, int vocab,
                       SamplerScratch *sc, SampleLogprobs *lp) {
    return sampler_sample_banned(p, st, logits, vocab, NULL, 0, sc, lp);
}
