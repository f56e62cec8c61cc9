// weights_dummy.c: random weights at the shapes a config.json implies (vLLM's --load-format
// dummy), so a model shape can be served and benchmarked without its weights.
//
// Deterministic: every tensor's values come from a seed made of its name, in chunks of
// DUMMY_CHUNK elements each keyed by its index, so the bytes do not depend on the thread count.
// Fast: an 8B shape is 16 GB of bf16; each element is an integer hash of its index (vectorised),
// uniform rather than Gaussian (no log/cos per element), and OpenMP spreads the chunks over
// every core. One core fills about 1 GB/s, which is what first-touching fresh pages costs anyway.
//
// Scaled so the forward is well conditioned: matrices have std 1 / sqrt(input features) (each
// projection keeps an RMS-normalised input at unit scale), the embedding and LM head std
// DUMMY_LOGIT_STD / sqrt(dim), so logits spread over several units and greedy decoding is not
// decided by float rounding; norm weights are 1 +- 0.25, Qwen2's biases have std 0.5 (big enough
// that a forward ignoring them differs visibly).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/model/weights_impl.h"

#define DUMMY_CHUNK 65536      // elements drawn from one seed
#define DUMMY_LOGIT_STD 4.0f   // std of the logits for a unit-RMS final hidden state
#define DUMMY_NORM_SPREAD 0.25f
#define DUMMY_BIAS_STD 0.5f

typedef struct {
    int tensor;        // index into ws->tensors
    float center, half; // values uniform in [center - half, center + half)
    uint64_t seed;
    size_t offset;     // into the slab
    int64_t n;         // elements
    int64_t chunk0;    // index of the tensor's first chunk among all chunks
} DummySpec;

typedef struct {
    WeightSource *ws;
    DummySpec *specs;
    int n, cap;
    size_t bytes;
} DummyPlan;

static inline uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint16_t bf16_round(float f) { // round to nearest even; the values are finite
    uint32_t b;
    memcpy(&b, &f, 4);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

// One tensor of ne0 x ne1 (ne1 = 1 for vectors), uniform with the given center and std.
static void plan_add(DummyPlan *p, const char *name, QType type, int64_t ne0, int64_t ne1, float center, float std) {
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->specs = xrealloc(p->specs, (size_t)p->cap * sizeof(DummySpec));
    }
    WTensor *t = wsrc_push(p->ws, name);
    t->type = type;
    t->n_dims = ne1 > 1 || type != QTYPE_F32 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->nbytes = (size_t)(ne0 * ne1) * (type == QTYPE_F32 ? 4 : 2);
    p->specs[p->n++] = (DummySpec){
        .tensor = p->ws->n_tensors - 1,
        .center = center,
        .half = std * sqrtf(3.0f), // a uniform on [-h, h) has std h / sqrt(3)
        .seed = hash_fnv1a(name, strlen(name)),
        .offset = p->bytes,
        .n = ne0 * ne1,
    };
    p->bytes += (t->nbytes + 63) & ~(size_t)63; // each tensor 64-byte aligned
}

static void plan_matrix(DummyPlan *p, const char *name, int64_t rows, int64_t cols, float std) {
    plan_add(p, name, QTYPE_BF16, cols, rows, 0.0f, std);
}

static void plan_norm(DummyPlan *p, const char *name, int64_t n) {
    plan_add(p, name, QTYPE_F32, n, 1, 1.0f, DUMMY_NORM_SPREAD / sqrtf(3.0f));
}

// Every tensor the config implies, in GGUF order.
static void plan_model(DummyPlan *p, const ModelConfig *c) {
    int64_t q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    float in_dim = 1.0f / sqrtf((float)c->dim), in_q = 1.0f / sqrtf((float)q_dim), in_ffn = 1.0f / sqrtf((float)c->ffn_dim);
    float head_std = DUMMY_LOGIT_STD / sqrtf((float)c->dim);
    char name[64];
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
    plan_matrix(p, "token_embd.weight", c->vocab, c->dim, head_std);
    for (int l = 0; l < c->n_layers; l++) {
        plan_norm(p, NAME("blk.%d.attn_norm.weight", l), c->dim);
        plan_matrix(p, NAME("blk.%d.attn_q.weight", l), q_dim, c->dim, in_dim);
        plan_matrix(p, NAME("blk.%d.attn_k.weight", l), kv_dim, c->dim, in_dim);
        plan_matrix(p, NAME("blk.%d.attn_v.weight", l), kv_dim, c->dim, in_dim);
        if (c->qkv_bias) {
            plan_add(p, NAME("blk.%d.attn_q.bias", l), QTYPE_F32, q_dim, 1, 0.0f, DUMMY_BIAS_STD);
            plan_add(p, NAME("blk.%d.attn_k.bias", l), QTYPE_F32, kv_dim, 1, 0.0f, DUMMY_BIAS_STD);
            plan_add(p, NAME("blk.%d.attn_v.bias", l), QTYPE_F32, kv_dim, 1, 0.0f, DUMMY_BIAS_STD);
        }
        if (c->qk_norm) {
            plan_norm(p, NAME("blk.%d.attn_q_norm.weight", l), c->head_dim);
            plan_norm(p, NAME("blk.%d.attn_k_norm.weight", l), c->head_dim);
        }
        plan_matrix(p, NAME("blk.%d.attn_output.weight", l), c->dim, q_dim, in_q);
        plan_norm(p, NAME("blk.%d.ffn_norm.weight", l), c->dim);
        plan_matrix(p, NAME("blk.%d.ffn_gate.weight", l), c->ffn_dim, c->dim, in_dim);
        plan_matrix(p, NAME("blk.%d.ffn_up.weight", l), c->ffn_dim, c->dim, in_dim);
        plan_matrix(p, NAME("blk.%d.ffn_down.weight", l), c->dim, c->ffn_dim, in_ffn);
    }
    plan_norm(p, "output_norm.weight", c->dim);
    if (!c->tied_embeddings) plan_matrix(p, "output.weight", c->vocab, c->dim, head_std);
#undef NAME
}

// lowbias32 (C. Wellons): a 32-bit integer hash with good avalanche; two rounds per element
// are cheap and vectorise (32-bit multiplies), unlike a sequential generator.
static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    return x ^ (x >> 16);
}

// Chunk k of spec s: element j of the chunk is a hash of j under the chunk's 64-bit key, so
// elements are independent (the loops vectorise) and no two chunks share a sequence.
static void chunk_fill(const DummySpec *s, QType type, void *dst, int64_t k) {
    uint64_t state = s->seed ^ ((uint64_t)k * 0xd1b54a32d192ed03ull);
    uint64_t key = splitmix64(&state);
    const uint32_t a = (uint32_t)key, b = (uint32_t)(key >> 32);
    int64_t i0 = k * DUMMY_CHUNK;
    int n = (int)(MIN(i0 + DUMMY_CHUNK, s->n) - i0);
    const float scale = 2.0f * s->half / 16777216.0f, lo = s->center - s->half; // 24 random bits
    if (type == QTYPE_F32) {
        float *d = (float *)dst + i0;
#pragma omp simd
        for (int j = 0; j < n; j++) d[j] = lo + (float)(mix32(mix32(a ^ (uint32_t)j) + b) >> 8) * scale;
    } else {
        uint16_t *d = (uint16_t *)dst + i0;
#pragma omp simd
        for (int j = 0; j < n; j++) d[j] = bf16_round(lo + (float)(mix32(mix32(a ^ (uint32_t)j) + b) >> 8) * scale);
    }
}

void wsrc_dummy_generate(WeightSource *ws) {
    DummyPlan p = {.ws = ws};
    plan_model(&p, &ws->cfg);
    WsrcImpl *im = ws->impl;
    im->slab = xmalloc_aligned(p.bytes ? p.bytes : 64);
    int64_t n_chunks = 0;
    for (int i = 0; i < p.n; i++) {
        WTensor *t = &ws->tensors[p.specs[i].tensor];
        t->data = (uint8_t *)im->slab + p.specs[i].offset;
        ws->bytes += t->nbytes;
        p.specs[i].chunk0 = n_chunks;
        n_chunks += (p.specs[i].n + DUMMY_CHUNK - 1) / DUMMY_CHUNK;
    }
    // One flat loop over every chunk of every tensor: big and small tensors balance across threads.
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t k = 0; k < n_chunks; k++) {
        int lo = 0, hi = p.n - 1; // the last spec whose chunk0 <= k
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (p.specs[mid].chunk0 <= k) lo = mid;
            else hi = mid - 1;
        }
        const DummySpec *s = &p.specs[lo];
        chunk_fill(s, ws->tensors[s->tensor].type, (uint8_t *)im->slab + s->offset, k - s->chunk0);
    }
    free(p.specs);
}
