// model_ref.h: for test_model_tp.c: small GGUF models of given shapes written to disk (Llama,
// Qwen2 with biases, Qwen3 with q/k norms, optional llama3 RoPE factors; F32/F16/Q8_0 weights
// from a seeded normal), and a plain float forward of one sequence over a WeightSource (no
// paging, no batching) to check the model against.
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/model/model.h"
#include "engine/model/weights.h"
#include "kernels/quant.h"
#include "tests/unit/gguf_build.h"

// ----------------------------------------------------------------------------
// small GGUF models written here

// A deterministic normal-ish generator (splitmix64 + Box-Muller).
static uint64_t rng_state;
static double rng_uniform(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return ((z >> 11) + 0.5) / 9007199254740992.0;
}
static float rng_normal(void) {
    return (float)(sqrt(-2 * log(rng_uniform())) * cos(2 * M_PI * rng_uniform()));
}

// One tensor: values generated as mean + scale * normal, stored as type.
typedef struct {
    char name[64];
    int n_dims;
    int64_t ne[2];
    QType type;
    float mean, scale;
    bool positive; // mean + scale * |normal| (RoPE frequency factors)
} Spec;

// n values of x into dst as type (F32, F16, BF16, Q8_0).
static void encode(QType type, const float *x, int64_t n, Buf *b) {
    if (type == QTYPE_F32) {
        buf_put(b, x, sizeof(float) * n);
    } else if (type == QTYPE_F16 || type == QTYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = type == QTYPE_F16 ? f32_to_fp16(x[i]) : f32_to_bf16(x[i]);
            buf_put(b, &h, 2);
        }
    } else {
        CHECK(type == QTYPE_Q8_0 && n % 32 == 0);
        for (int64_t i = 0; i < n; i += 32) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = MAX(amax, fabsf(x[i + j]));
            float d = amax / 127;
            uint16_t dh = f32_to_fp16(d);
            buf_put(b, &dh, 2);
            for (int j = 0; j < 32; j++) {
                int8_t q = (int8_t)(d > 0 ? lrintf(x[i + j] / d) : 0);
                buf_put(b, &q, 1);
            }
        }
    }
}

// Writes a GGUF with the metadata and tensors (values generated in order from seed) to path.
static void gguf_write(const char *path, const Meta *meta, int n_meta, const Spec *ts, int n_t, uint64_t seed) {
    Buf b = {0}, data = {0};
    gguf_put_header(&b, meta, n_meta, n_t);
    rng_state = seed;
    for (int i = 0; i < n_t; i++) {
        int64_t n = ts[i].ne[0] * (ts[i].n_dims > 1 ? ts[i].ne[1] : 1);
        float *x = xmalloc(sizeof(float) * n);
        for (int64_t j = 0; j < n; j++) {
            float z = rng_normal();
            x[j] = ts[i].mean + ts[i].scale * (ts[i].positive ? fabsf(z) : z);
        }
        buf_pad(&data);
        gguf_put_tensor_info(&b, ts[i].name, ts[i].n_dims, ts[i].ne, ts[i].type, data.len);
        encode(ts[i].type, x, n, &data);
        free(x);
    }
    buf_pad(&b);
    buf_put(&b, data.buf, data.len);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(b.buf, 1, b.len, f) == b.len && fclose(f) == 0, "%s", path);
    free(b.buf);
    free(data.buf);
}

// A small model of the Llama family: its shape, variant and storage types.
typedef struct {
    const char *what;
    const char *arch;
    int n_layers, dim, n_heads, n_kv_heads, head_dim, ffn, vocab;
    bool key_length; // write {arch}.attention.key_length (head_dim need not be dim / n_heads)
    bool tied;
    bool rope_freqs; // a rope_freqs.weight tensor (llama3 scaling)
    QType mat, vec;  // matrices, and norms/biases
    const char *drop, *extra; // a tensor left out / added (error cases)
} Shape;

// Appends a tensor spec named by fmt (a layer index for %d) to ts[*n].
__attribute__((format(printf, 9, 10))) static void spec_add(Spec *ts, int *n, int n_dims, int64_t cols, int64_t rows,
                                                            QType type, float mean, float scale, const char *fmt, ...) {
    Spec *t = &ts[(*n)++];
    *t = (Spec){.n_dims = n_dims, .ne = {cols, rows}, .type = type, .mean = mean, .scale = scale};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
}

// Writes s as a GGUF at path.
static void shape_write(const Shape *s, const char *path) {
    char k[12][80];
    const char *a = s->arch;
    snprintf(k[0], 80, "%s.block_count", a);
    snprintf(k[1], 80, "%s.context_length", a);
    snprintf(k[2], 80, "%s.embedding_length", a);
    snprintf(k[3], 80, "%s.feed_forward_length", a);
    snprintf(k[4], 80, "%s.attention.head_count", a);
    snprintf(k[5], 80, "%s.attention.head_count_kv", a);
    snprintf(k[6], 80, "%s.attention.layer_norm_rms_epsilon", a);
    snprintf(k[7], 80, "%s.rope.freq_base", a);
    snprintf(k[8], 80, "%s.attention.key_length", a);
    snprintf(k[9], 80, "%s.attention.value_length", a);
    Meta meta[12] = {
        {"general.architecture", 's', a, 0}, {k[0], 'u', NULL, s->n_layers}, {k[1], 'u', NULL, 1024},
        {k[2], 'u', NULL, s->dim},           {k[3], 'u', NULL, s->ffn},      {k[4], 'u', NULL, s->n_heads},
        {k[5], 'u', NULL, s->n_kv_heads},    {k[6], 'f', NULL, 1e-6},        {k[7], 'f', NULL, 10000},
    };
    int n_meta = 9;
    if (s->key_length) {
        meta[n_meta++] = (Meta){k[8], 'u', NULL, s->head_dim};
        meta[n_meta++] = (Meta){k[9], 'u', NULL, s->head_dim};
    }
    int64_t q = (int64_t)s->n_heads * s->head_dim, kv = (int64_t)s->n_kv_heads * s->head_dim;
    Spec *ts = xcalloc(16 * s->n_layers + 8, sizeof(Spec));
    int n = 0;
    float ws = 1.0f / sqrtf((float)s->dim);
    spec_add(ts, &n, 2, s->dim, s->vocab, s->mat, 0.0f, 1.0f, "token_embd.weight");
    for (int l = 0; l < s->n_layers; l++) {
        spec_add(ts, &n, 1, s->dim, 1, s->vec, 1.0f, 0.1f, "blk.%d.attn_norm.weight", l);
        spec_add(ts, &n, 2, s->dim, q, s->mat, 0.0f, ws, "blk.%d.attn_q.weight", l);
        spec_add(ts, &n, 2, s->dim, kv, s->mat, 0.0f, ws, "blk.%d.attn_k.weight", l);
        spec_add(ts, &n, 2, s->dim, kv, s->mat, 0.0f, ws, "blk.%d.attn_v.weight", l);
        if (!strcmp(a, "qwen2")) {
            spec_add(ts, &n, 1, q, 1, s->vec, 0.0f, 0.5f, "blk.%d.attn_q.bias", l);
            spec_add(ts, &n, 1, kv, 1, s->vec, 0.0f, 0.5f, "blk.%d.attn_k.bias", l);
            spec_add(ts, &n, 1, kv, 1, s->vec, 0.0f, 0.5f, "blk.%d.attn_v.bias", l);
        }
        if (!strcmp(a, "qwen3")) {
            spec_add(ts, &n, 1, s->head_dim, 1, s->vec, 1.0f, 0.2f, "blk.%d.attn_q_norm.weight", l);
            spec_add(ts, &n, 1, s->head_dim, 1, s->vec, 1.0f, 0.2f, "blk.%d.attn_k_norm.weight", l);
        }
        spec_add(ts, &n, 2, q, s->dim, s->mat, 0.0f, 1.0f / sqrtf((float)q), "blk.%d.attn_output.weight", l);
        spec_add(ts, &n, 1, s->dim, 1, s->vec, 1.0f, 0.1f, "blk.%d.ffn_norm.weight", l);
        spec_add(ts, &n, 2, s->dim, s->ffn, s->mat, 0.0f, ws, "blk.%d.ffn_gate.weight", l);
        spec_add(ts, &n, 2, s->dim, s->ffn, s->mat, 0.0f, ws, "blk.%d.ffn_up.weight", l);
        spec_add(ts, &n, 2, s->ffn, s->dim, s->mat, 0.0f, 1.0f / sqrtf((float)s->ffn), "blk.%d.ffn_down.weight", l);
    }
    spec_add(ts, &n, 1, s->dim, 1, s->vec, 1.0f, 0.1f, "output_norm.weight");
    // the LM head spreads logits over several units, so greedy picks are not float ties
    if (!s->tied) spec_add(ts, &n, 2, s->dim, s->vocab, s->mat, 0.0f, 4 * ws, "output.weight");
    if (s->rope_freqs) { // divisors >= 1, as llama3 scaling's are
        spec_add(ts, &n, 1, s->head_dim / 2, 1, QTYPE_F32, 1.0f, 3.0f, "rope_freqs.weight");
        ts[n - 1].positive = true;
    }
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (!s->drop || strcmp(ts[i].name, s->drop)) ts[kept++] = ts[i];
    n = kept;
    if (s->extra) {
        snprintf(ts[n].name, 64, "%s", s->extra);
        ts[n].n_dims = 1, ts[n].ne[0] = s->dim, ts[n].ne[1] = 1, ts[n].type = QTYPE_F32, ts[n].scale = 1;
        n++;
    }
    gguf_write(path, meta, n_meta, ts, n, 0x5eed0000u + (uint64_t)s->dim * 131 + s->vocab);
    free(ts);
}

// ----------------------------------------------------------------------------
// a plain float forward of one sequence: every position's logits, no cache paging, no batching

static float *deq(const WeightSource *ws, const char *name) {
    const WTensor *t = wsrc_find(ws, name);
    CHECK(t, "%s", name);
    int64_t cols = t->ne[0], rows = t->n_dims > 1 ? t->ne[1] : 1;
    float *out = xmalloc(sizeof(float) * cols * rows);
    size_t rb = qtype_row_size(t->type, cols);
    for (int64_t r = 0; r < rows; r++) dequant_row(t->type, (const uint8_t *)t->data + r * rb, out + r * cols, cols);
    return out;
}

static void ref_matvec(float *out, const float *w, const float *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        double acc = 0;
        for (int c = 0; c < cols; c++) acc += (double)w[(size_t)r * cols + c] * x[c];
        out[r] = (float)acc;
    }
}

static void ref_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = (float)(x[i] * s * w[i]);
}

static void ref_rope(float *x, int pos, const ModelConfig *c, const float *ff) {
    int half = c->rope_dim / 2;
    for (int i = 0; i < half; i++) {
        double theta = pos * pow(c->rope_base, -2.0 * i / c->rope_dim) / (ff ? ff[i] : 1.0);
        int a = c->rope_layout == ROPE_NEOX ? i : 2 * i, b = c->rope_layout == ROPE_NEOX ? i + half : 2 * i + 1;
        double x0 = x[a], x1 = x[b];
        x[a] = (float)(x0 * cos(theta) - x1 * sin(theta));
        x[b] = (float)(x0 * sin(theta) + x1 * cos(theta));
    }
}

static void ref_forward(const WeightSource *ws, const int *tokens, int n, float *logits) {
    const ModelConfig *c = &ws->cfg;
    int D = c->dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, F = c->ffn_dim, V = c->vocab;
    int qd = H * hd, kvd = KV * hd;
    float *emb = deq(ws, "token_embd.weight");
    float *x = xcalloc((size_t)n * D, sizeof(float)), *xb = xmalloc(sizeof(float) * D);
    float *q = xmalloc(sizeof(float) * qd), *kc = xmalloc(sizeof(float) * (size_t)n * kvd);
    float *vc = xmalloc(sizeof(float) * (size_t)n * kvd), *att = xmalloc(sizeof(float) * qd);
    float *g = xmalloc(sizeof(float) * F), *u = xmalloc(sizeof(float) * F), *d = xmalloc(sizeof(float) * D);
    float *sc = xmalloc(sizeof(float) * n);
    float *ff = wsrc_find(ws, "rope_freqs.weight") ? deq(ws, "rope_freqs.weight") : NULL;
    for (int t = 0; t < n; t++) memcpy(x + (size_t)t * D, emb + (size_t)tokens[t] * D, sizeof(float) * D);
    char nm[96];
#define W(...) (snprintf(nm, sizeof nm, __VA_ARGS__), deq(ws, nm))
    for (int l = 0; l < c->n_layers; l++) {
        float *an = W("blk.%d.attn_norm.weight", l), *wq = W("blk.%d.attn_q.weight", l);
        float *wk = W("blk.%d.attn_k.weight", l), *wv = W("blk.%d.attn_v.weight", l);
        float *wo = W("blk.%d.attn_output.weight", l), *fn = W("blk.%d.ffn_norm.weight", l);
        float *wg = W("blk.%d.ffn_gate.weight", l), *wu = W("blk.%d.ffn_up.weight", l);
        float *wd = W("blk.%d.ffn_down.weight", l);
        float *bq = c->qkv_bias ? W("blk.%d.attn_q.bias", l) : NULL, *bk = c->qkv_bias ? W("blk.%d.attn_k.bias", l) : NULL;
        float *bv = c->qkv_bias ? W("blk.%d.attn_v.bias", l) : NULL;
        float *qn = c->qk_norm ? W("blk.%d.attn_q_norm.weight", l) : NULL;
        float *kn = c->qk_norm ? W("blk.%d.attn_k_norm.weight", l) : NULL;
        // K and V of every position first (causal: position t reads 0..t only)
        for (int t = 0; t < n; t++) {
            float *k = kc + (size_t)t * kvd, *v = vc + (size_t)t * kvd;
            ref_rmsnorm(xb, x + (size_t)t * D, an, D, c->norm_eps);
            ref_matvec(k, wk, xb, kvd, D);
            ref_matvec(v, wv, xb, kvd, D);
            for (int i = 0; bk && i < kvd; i++) k[i] += bk[i], v[i] += bv[i];
            for (int h = 0; h < KV; h++) {
                if (kn) ref_rmsnorm(k + h * hd, k + h * hd, kn, hd, c->norm_eps);
                ref_rope(k + h * hd, t, c, ff);
            }
        }
        for (int t = 0; t < n; t++) {
            float *xt = x + (size_t)t * D;
            ref_rmsnorm(xb, xt, an, D, c->norm_eps);
            ref_matvec(q, wq, xb, qd, D);
            for (int i = 0; bq && i < qd; i++) q[i] += bq[i];
            for (int h = 0; h < H; h++) {
                float *qh = q + h * hd;
                if (qn) ref_rmsnorm(qh, qh, qn, hd, c->norm_eps);
                ref_rope(qh, t, c, ff);
                int kh = h / (H / KV);
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double s = 0;
                    for (int i = 0; i < hd; i++) s += (double)qh[i] * kc[(size_t)j * kvd + kh * hd + i];
                    sc[j] = (float)(s / sqrt(hd));
                    mx = MAX(mx, sc[j]);
                }
                for (int j = 0; j <= t; j++) sum += exp(sc[j] - mx);
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int j = 0; j <= t; j++) o += exp(sc[j] - mx) / sum * vc[(size_t)j * kvd + kh * hd + i];
                    att[h * hd + i] = (float)o;
                }
            }
            ref_matvec(d, wo, att, D, qd);
            for (int i = 0; i < D; i++) xt[i] += d[i];
            ref_rmsnorm(xb, xt, fn, D, c->norm_eps);
            ref_matvec(g, wg, xb, F, D);
            ref_matvec(u, wu, xb, F, D);
            for (int i = 0; i < F; i++) g[i] = g[i] / (1 + expf(-g[i])) * u[i];
            ref_matvec(d, wd, g, D, F);
            for (int i = 0; i < D; i++) xt[i] += d[i];
        }
        free(an), free(wq), free(wk), free(wv), free(wo), free(fn), free(wg), free(wu), free(wd);
        free(bq), free(bk), free(bv), free(qn), free(kn);
    }
    float *on = deq(ws, "output_norm.weight");
    float *out = c->tied_embeddings ? emb : deq(ws, "output.weight");
    for (int t = 0; t < n; t++) {
        ref_rmsnorm(xb, x + (size_t)t * D, on, D, c->norm_eps);
        ref_matvec(logits + (size_t)t * V, out, xb, V, D);
    }
#undef W
    if (out != emb) free(out);
    free(emb), free(on), free(ff), free(x), free(xb), free(q), free(kc), free(vc), free(att), free(g), free(u), free(d),
        free(sc);
}

