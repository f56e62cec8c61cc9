// sample.cu: sampling on the device, so full rows of logits never cross to the host.
// CPU twin: engine/sampling/sampler.c (sampler_sample; not in kernels/cpu/, because sampling
// parameters and per-request state are the engine's): same pipeline, same parameters, same
// arithmetic where it decides anything (the exp polynomial, the penalty formulas, the order of
// the bias additions). Compared by tests/gpu/test_gpu_sample.c.
// Not here yet: the twin's banned tokens (sampler_sample_banned: what min_tokens holds off,
// masked after raw logprobs). Until KSampleRow carries them, a row with a ban must be sampled on
// the host; the engine samples every row on the host today (the GPU runner returns logits).
//
// One thread block of 1024 threads per row. In order, as sampler.h lists them:
//   logprobs of the raw row (if asked), logit bias (one thread, array order: repeated ids add up
//   as on the CPU), penalties (one entry a thread: the entries are distinct tokens), logprobs of
//   the processed row (if asked that way), then greedy (argmax, lowest id on ties) or:
//   max, then top-k: the k-th largest logit by a radix select over the four bytes of an
//   order-preserving key, ties at the cut kept lowest id first, so exactly k survive;
//   probabilities exp((l - max) / T) by the CPU's polynomial, min-p (p >= min_p · p_max = min_p);
//   top-p: a second radix select, now over the bits of the probability weighted by its mass,
//   finds the probability where the best-first mass crosses top_p · Z, with ties at the cut
//   again lowest id first;
//   one inverse-CDF draw over the survivors in id order with the request's u.
// No sort of the vocabulary and no scratch beyond shared memory: each pass re-reads the row
// (from L2) and recomputes what it needs.
//
// Masses are summed in 64-bit fixed point (probability · 2^shift, shift = 62 - ceil(log2 V)),
// so every sum is exact and independent of the order threads add in: the survivors and the
// drawn token are deterministic, and the top-p cut matches the twin's up to the twin's own
// rounding (~1e-8 of the mass).
//
// Against the twin: greedy picks the same token; with no top-k/top-p the draw walks the same id
// order as sampler.c's sample_all, so the same u gives the same token; with top-k or top-p the
// survivor set is the same but sampler.c walks it in heap or histogram order, so the same u can
// pick a different survivor with the same distribution (tests/gpu checks the distribution).
#include <math.h>

#include "kernels/cuda/kcuda.cuh"

#define SAMPLE_THREADS 1024
#define SAMPLE_WARPS (SAMPLE_THREADS / 32)
#define SAMPLE_BINS 256
#define SAMPLE_NSUB 8 // copies of each histogram, by warp, to spread the shared-memory atomics

typedef unsigned long long u64;

typedef struct {
    KSampleOut *out;
    float *logits;
    const KSampleRow *rows;
    KSampleBias *bias;
    KSamplePenalty *pen;
    int vocab;
    double fx_scale; // 2^shift: probability -> fixed point
} SampleArgs;

typedef struct {
    u64 hist[SAMPLE_NSUB][SAMPLE_BINS];
    u64 tot[SAMPLE_BINS];
    u64 red_u[SAMPLE_WARPS];
    double red_d[SAMPLE_WARPS];
    float red_f[SAMPLE_WARPS];
    int red_i[SAMPLE_WARPS];
    uint32_t sel_prefix;
    u64 sel_above;
    int found;
    int list_n;
    float list_val[KSAMPLE_MAX_LOGPROBS];
    int list_id[KSAMPLE_MAX_LOGPROBS];
} SampleShared;

// ---- the CPU's arithmetic

// sampler.c's exp_nonpos, operation for operation (fmaf where it has fmaf; gcc contracts the
// rounding step into an fma on FMA machines, so that one is an fma here too).
static __device__ __forceinline__ float exp_nonpos(float x) {
    float xc = x > -87.3f ? x : -87.3f;
    float n = fmaf(xc, 1.44269504088896341f, 12582912.0f) - 12582912.0f;
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
    float two_n = __int_as_float(((int)n + 127) << 23);
    return x < -87.3f ? 0.0f : q * two_n;
}

// A key whose unsigned order is the float order (NaN aside).
static __device__ __forceinline__ uint32_t float_key(float f) {
    uint32_t b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

static __device__ __forceinline__ u64 to_fixed(float p, double scale) {
    return __double2ull_rn((double)p * scale);
}

// ---- block-wide reductions and scans (all SAMPLE_THREADS threads call them together)

static __device__ float block_max(float v, SampleShared &sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh.red_f[threadIdx.x >> 5] = v;
    __syncthreads();
    v = sh.red_f[threadIdx.x & 31];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

static __device__ double block_sum_d(double v, SampleShared &sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh.red_d[threadIdx.x >> 5] = v;
    __syncthreads();
    v = sh.red_d[threadIdx.x & 31];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Exclusive prefix sum over the threads in order; *total gets the sum of all.
static __device__ u64 block_scan_u64(u64 v, u64 *total, SampleShared &sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u64 incl = v;
    for (int o = 1; o < 32; o <<= 1) {
        u64 y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    __syncthreads();
    if (lane == 31) sh.red_u[warp] = incl;
    __syncthreads();
    u64 w = sh.red_u[lane], wincl = w;
    for (int o = 1; o < 32; o <<= 1) {
        u64 y = __shfl_up_sync(0xffffffffu, wincl, o);
        if (lane >= o) wincl += y;
    }
    *total = __shfl_sync(0xffffffffu, wincl, 31);
    u64 warp_before = __shfl_sync(0xffffffffu, wincl - w, warp);
    return warp_before + incl - v;
}

// The largest value, lowest index on ties (NaN never wins).
static __device__ int block_argmax(const float *x, int n, SampleShared &sh) {
    float bv = -INFINITY;
    int bi = n;
    for (int i = threadIdx.x; i < n; i += SAMPLE_THREADS) {
        float v = x[i];
        if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh.red_f[threadIdx.x >> 5] = bv, sh.red_i[threadIdx.x >> 5] = bi;
    __syncthreads();
    bv = sh.red_f[threadIdx.x & 31], bi = sh.red_i[threadIdx.x & 31];
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    return bi < n ? bi : 0; // every value NaN or -inf: token 0, as the CPU's scan would
}

// ---- selection

typedef struct {
    uint32_t key; // the key where the weight from the top reaches the target
    u64 above;    // weight of the keys above it
    u64 at;       // weight of the elements with exactly this key
} Sel;

// Radix select from the top: digit by digit (8 bits), histogram the weights of the elements
// still matching the chosen prefix, and keep the bin where (weight above) + bin >= target.
// F(i, &key, &w) says whether element i takes part, with its key and weight.
template <class F>
static __device__ Sel radix_select(F f, int n, double target, SampleShared &sh) {
    uint32_t prefix = 0, mask = 0;
    u64 above = 0, at = 0;
    u64 *hist = sh.hist[(threadIdx.x >> 5) % SAMPLE_NSUB];
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < SAMPLE_NSUB * SAMPLE_BINS; i += SAMPLE_THREADS) (&sh.hist[0][0])[i] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += SAMPLE_THREADS) {
            uint32_t key;
            u64 w;
            if (f(i, key, w) && (key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xff], w);
        }
        __syncthreads();
        if (threadIdx.x < SAMPLE_BINS) {
            u64 t = 0;
            for (int s = 0; s < SAMPLE_NSUB; s++) t += sh.hist[s][threadIdx.x];
            sh.tot[threadIdx.x] = t;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            // Walk down; if rounding keeps the target out of reach, stop at the last bin with
            // weight (everything is kept, as the twin does when its prefix never reaches top_p).
            int chosen = 0;
            u64 acc = above, acc_chosen = above;
            for (int b = SAMPLE_BINS - 1; b >= 0; b--) {
                if (sh.tot[b] == 0) continue;
                chosen = b, acc_chosen = acc;
                if ((double)(acc + sh.tot[b]) >= target) break;
                acc += sh.tot[b];
            }
            sh.sel_prefix = prefix | (uint32_t)chosen << shift;
            sh.sel_above = acc_chosen;
            sh.red_u[0] = sh.tot[chosen];
        }
        __syncthreads();
        prefix = sh.sel_prefix, above = sh.sel_above, at = sh.red_u[0];
        mask |= 0xffu << shift;
        __syncthreads(); // sh.* are rewritten by the next digit
    }
    return (Sel){prefix, above, at};
}

// The index of the m-th (from 1) element, in index order, that takes part with key `key`.
template <class F>
static __device__ int tie_cut(F f, int n, uint32_t key, u64 m, SampleShared &sh) {
    int chunk = (n + SAMPLE_THREADS - 1) / SAMPLE_THREADS, lo = threadIdx.x * chunk;
    int hi = min(n, lo + chunk);
    u64 cnt = 0, total;
    for (int i = lo; i < hi; i++) {
        uint32_t k;
        u64 w;
        cnt += f(i, k, w) && k == key;
    }
    u64 c = block_scan_u64(cnt, &total, sh);
    if (threadIdx.x == 0) sh.found = n - 1;
    __syncthreads();
    if (c < m && c + cnt >= m) {
        for (int i = lo; i < hi; i++) {
            uint32_t k;
            u64 w;
            if (f(i, k, w) && k == key && ++c == m) {
                sh.found = i;
                break;
            }
        }
    }
    __syncthreads();
    return sh.found;
}

// ---- logprobs: log-softmax of src at the n best (ties to the lower id); returns the lse

static __device__ double logprobs_top(const float *src, int n, int want, KSampleOut *out, SampleShared &sh) {
    float v = -INFINITY;
    for (int i = threadIdx.x; i < n; i += SAMPLE_THREADS) v = fmaxf(v, src[i]);
    const float mx = block_max(v, sh);
    double z = 0;
    for (int i = threadIdx.x; i < n; i += SAMPLE_THREADS) z += exp_nonpos(src[i] - mx);
    z = block_sum_d(z, sh);
    double lse = (double)mx + log(z);
    int n_top = min(want, n);
    if (threadIdx.x == 0) out->n_top = n_top, sh.list_n = 0;
    if (n_top <= 0) return lse;
    auto by_value = [&](int i, uint32_t &key, u64 &w) {
        key = float_key(src[i]), w = 1;
        return true;
    };
    Sel s = radix_select(by_value, n, (double)n_top, sh);
    u64 m = (u64)n_top - s.above;
    int last = m >= s.at ? n - 1 : tie_cut(by_value, n, s.key, m, sh);
    for (int i = threadIdx.x; i < n; i += SAMPLE_THREADS) {
        uint32_t k = float_key(src[i]);
        if (k > s.key || (k == s.key && i <= last)) {
            int slot = atomicAdd(&sh.list_n, 1);
            if (slot < KSAMPLE_MAX_LOGPROBS) sh.list_val[slot] = src[i], sh.list_id[slot] = i;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int cnt = min(sh.list_n, n_top);
        for (int i = 1; i < cnt; i++) { // insertion sort: value descending, then id ascending
            float v = sh.list_val[i];
            int id = sh.list_id[i], j = i;
            for (; j > 0 && (sh.list_val[j - 1] < v || (sh.list_val[j - 1] == v && sh.list_id[j - 1] > id)); j--)
                sh.list_val[j] = sh.list_val[j - 1], sh.list_id[j] = sh.list_id[j - 1];
            sh.list_val[j] = v, sh.list_id[j] = id;
        }
        for (int i = 0; i < cnt; i++) {
            out->top_ids[i] = sh.list_id[i];
            out->top_logprobs[i] = (float)((double)sh.list_val[i] - lse);
        }
    }
    __syncthreads();
    return lse;
}

// ---- the random draw

static __device__ int sample_random(const float *x, int n, const KSampleRow &P, double fx_scale, SampleShared &sh) {
    float v = -INFINITY;
    for (int i = threadIdx.x; i < n; i += SAMPLE_THREADS) v = fmaxf(v, x[i]);
    const float mx = block_max(v, sh);
    if (!isfinite(mx)) return -1;
    const float inv_t = 1.0f / P.temperature, min_p = P.min_p;

    // top-k: element i is in when its key is above kk, or equal with i <= k_last.
    const bool topk = P.top_k > 0 && P.top_k < n;
    uint32_t kk = 0;
    int k_last = n - 1;
    if (topk) {
        auto by_logit = [&](int i, uint32_t &key, u64 &w) {
            key = float_key(x[i]), w = 1;
            return true;
        };
        Sel s = radix_select(by_logit, n, (double)P.top_k, sh);
        u64 m = (u64)P.top_k - s.above;
        kk = s.key;
        if (m < s.at) k_last = tie_cut(by_logit, n, s.key, m, sh);
    }
    // A candidate: in the top-k, and its probability (p / p_max, as the max maps to 1) passes min-p.
    auto cand = [&](int i, float &p) {
        uint32_t key = float_key(x[i]);
        if (topk && !(key > kk || (key == kk && i <= k_last))) return false;
        p = exp_nonpos((x[i] - mx) * inv_t);
        return p >= min_p && p > 0.0f;
    };

    // top-p: the probability pp where the best-first mass reaches top_p of the candidates'.
    const bool topp = P.top_p < 1.0f;
    uint32_t pp = 0;
    int p_last = n - 1;
    if (topp) {
        u64 zc = 0, z;
        for (int i = threadIdx.x; i < n; i += SAMPLE_THREADS) {
            float p;
            if (cand(i, p)) zc += to_fixed(p, fx_scale);
        }
        block_scan_u64(zc, &z, sh);
        auto by_prob = [&](int i, uint32_t &key, u64 &w) {
            float p;
            if (!cand(i, p)) return false;
            key = __float_as_uint(p), w = to_fixed(p, fx_scale);
            return true;
        };
        double target = (double)P.top_p * (double)z;
        Sel s = radix_select(by_prob, n, target, sh);
        pp = s.key;
        u64 w = to_fixed(__uint_as_float(s.key), fx_scale), ties = w ? s.at / w : 0;
        if (w > 0 && ties > 1) {
            // The fewest ties (taken lowest id first) that reach the target.
            u64 m = (u64)ceil((target - (double)s.above) / (double)w);
            m = m < 1 ? 1 : (m > ties ? ties : m);
            while (m > 1 && (double)(s.above + (m - 1) * w) >= target) m--;
            while (m < ties && (double)(s.above + m * w) < target) m++;
            if (m < ties) p_last = tie_cut(by_prob, n, s.key, m, sh);
        }
    }
    auto survives = [&](int i, u64 &w) {
        float p;
        if (!cand(i, p)) return false;
        uint32_t key = __float_as_uint(p);
        if (topp && !(key > pp || (key == pp && i <= p_last))) return false;
        w = to_fixed(p, fx_scale);
        return true;
    };

    // The draw: the first survivor, in id order, whose inclusive mass exceeds u · Z. Each thread
    // takes a contiguous run of ids so that one scan orders the runs.
    int chunk = (n + SAMPLE_THREADS - 1) / SAMPLE_THREADS, lo = threadIdx.x * chunk, hi = min(n, lo + chunk);
    u64 mine = 0, total;
    for (int i = lo; i < hi; i++) {
        u64 w;
        if (survives(i, w)) mine += w;
    }
    u64 before = block_scan_u64(mine, &total, sh);
    u64 t = __double2ull_rd(P.u * (double)total);
    if (t >= total) t = total - 1; // u just below 1 rounding up
    if (threadIdx.x == 0) sh.found = -1;
    __syncthreads();
    if (before <= t && t < before + mine) {
        u64 acc = before;
        for (int i = lo; i < hi; i++) {
            u64 w;
            if (survives(i, w) && (acc += w) > t) {
                sh.found = i;
                break;
            }
        }
    }
    __syncthreads();
    // total == 0 only if every survivor's mass rounds to 0 in fixed point, which the max (p = 1)
    // rules out; keep the argmax as the answer anyway.
    return sh.found >= 0 ? sh.found : block_argmax(x, n, sh);
}

// ---- the kernel

__global__ void __launch_bounds__(SAMPLE_THREADS) sample_kernel(const SampleArgs a) {
    __shared__ SampleShared sh;
    const KSampleRow P = a.rows[blockIdx.x];
    const int n = a.vocab;
    float *x = a.logits + (size_t)blockIdx.x * n;
    KSampleOut *out = a.out + blockIdx.x;
    const bool want_lp = P.logprobs >= 0;
    double lse = 0;
    if (want_lp && !P.logprobs_processed) lse = logprobs_top(x, n, P.logprobs, out, sh);

    if (threadIdx.x == 0)
        for (int i = 0; i < P.n_bias; i++) {
            KSampleBias *e = &a.bias[P.bias_start + i];
            e->orig = x[e->id];
            x[e->id] += e->val;
        }
    __syncthreads();
    const float rep = P.repetition_penalty, freq = P.frequency_penalty, pres = P.presence_penalty;
    for (int i = threadIdx.x; i < P.n_pen; i += SAMPLE_THREADS) {
        KSamplePenalty *e = &a.pen[P.pen_start + i];
        float v = x[e->token];
        e->orig = v;
        if (rep != 1.0f) v = v > 0.0f ? v / rep : v * rep; // every entry is in the prompt or output
        if (e->count > 0) {
            v -= freq * (float)e->count;
            v -= pres;
        }
        x[e->token] = v;
    }
    __syncthreads();
    if (want_lp && P.logprobs_processed) lse = logprobs_top(x, n, P.logprobs, out, sh);

    int token = P.temperature < KSAMPLE_TEMP_EPS ? block_argmax(x, n, sh) : sample_random(x, n, P, a.fx_scale, sh);
    if (threadIdx.x != 0) return;
    out->token = token;
    if (!want_lp) {
        out->logprob = 0.0f, out->n_top = 0;
        return;
    }
    out->logprob = NAN;
    if (token < 0) return;
    float src = x[token];
    if (!P.logprobs_processed) { // the raw logit: from before the first bias or penalty that touched it
        bool found = false;
        for (int i = 0; i < P.n_bias && !found; i++)
            if (a.bias[P.bias_start + i].id == token) src = a.bias[P.bias_start + i].orig, found = true;
        for (int i = 0; i < P.n_pen && !found; i++)
            if (a.pen[P.pen_start + i].token == token) src = a.pen[P.pen_start + i].orig, found = true;
    }
    out->logprob = (float)((double)src - lse);
}

extern "C" void k_sample_cuda(KSampleOut *out, float *logits, int n_rows, int vocab, const KSampleRow *rows,
                              KSampleBias *bias, KSamplePenalty *pen, KStream *s) {
    if (n_rows <= 0) return;
    CHECK(vocab >= 1 && vocab <= KSAMPLE_MAX_VOCAB, "vocab %d", vocab);
    int bits = 0;
    while ((1 << bits) < vocab) bits++;
    SampleArgs a = {out, logits, rows, bias, pen, vocab, ldexp(1.0, 62 - bits)};
    sample_kernel<<<n_rows, SAMPLE_THREADS, 0, kstream_of(s)>>>(a);
    CUDA_CHECK_LAUNCH();
}
