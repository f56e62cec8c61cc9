// model_config.c: the Llama family's hyperparameters from GGUF metadata.
//
// Keys are "<arch>.<name>" (llama.cpp's naming). Everything the forward pass relies on is
// checked here, so that a file describing a model we cannot run fails at load with one line
// that says why, instead of producing garbage later.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "engine/model/model_config.h"

// Architectures whose GGUF layout and forward pass llama.c (gemma.c for Gemma) implements, and
// how each differs from Llama. llama.cpp's converter permutes a llama's Q and K rows so that
// RoPE rotates adjacent pairs; the others are stored as trained, in NeoX's split halves. Others
// (MoE, ...) need their differences implemented before joining this table.
static const struct {
    const char *name;
    RopeLayout rope_layout;
    bool qkv_bias; // blk.N.attn_{q,k,v}.bias
    bool qk_norm;  // blk.N.attn_{q,k}_norm.weight
} ARCHS[] = {
    {"llama", ROPE_NORMAL, false, false},
    {"qwen2", ROPE_NEOX, true, false},
    {"qwen3", ROPE_NEOX, false, true},
    {"gemma2", ROPE_NEOX, false, false},
    {"gemma3", ROPE_NEOX, false, true},
    {"phi3", ROPE_NEOX, false, false},
};

const char *model_supported_archs(void) {
    static char list[128];
    if (!list[0]) {
        for (size_t i = 0; i < ARRAY_LEN(ARCHS); i++) {
            if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, ARCHS[i].name, sizeof list - strlen(list) - 1);
        }
    }
    return list;
}

// "<arch>.<name>" into buf
static const char *arch_key(char *buf, size_t cap, const char *arch, const char *name) {
    snprintf(buf, cap, "%s.%s", arch, name);
    return buf;
}

// An integer key in [lo, hi]; when absent, def (or an error when required).
static int get_int(const GGUF *g, const char *arch, const char *name, bool required, int64_t def,
                   int64_t lo, int64_t hi, int *out, char *err) {
    char key[160];
    arch_key(key, sizeof key, arch, name);
    int64_t v;
    if (!gguf_get_int(g, key, &v)) {
        if (gguf_find(g, key)) return seterr(err, "metadata %s is not an integer", key);
        if (required) return seterr(err, "metadata %s is missing", key);
        v = def;
    }
    if (v < lo || v > hi) return seterr(err, "metadata %s = %lld is out of range [%lld, %lld]", key, (long long)v,
                                        (long long)lo, (long long)hi);
    *out = (int)v;
    return SL_OK;
}

static int get_float(const GGUF *g, const char *arch, const char *name, bool required, double def,
                     float *out, char *err) {
    char key[160];
    arch_key(key, sizeof key, arch, name);
    double v;
    if (!gguf_get_float(g, key, &v)) {
        if (gguf_find(g, key)) return seterr(err, "metadata %s is not a float", key);
        if (required) return seterr(err, "metadata %s is missing", key);
        v = def;
    }
    if (!(v > 0) || v > 1e12) return seterr(err, "metadata %s = %g is out of range", key, v);
    *out = (float)v;
    return SL_OK;
}

// What llama.cpp reads (or assumes) for Gemma 2/3 and Phi-3 beyond the Llama keys
// (src/llama-model.cpp, llm_load_hparams): Gemma's window layout and RoPE bases are fixed by the
// architecture, not stored; a Phi-3 GGUF's sliding_window is ignored there (llama.cpp disables
// Phi's windows), and so it is here, to run the model the file's producer ran.
static int family_from_gguf(ModelConfig *c, const GGUF *g, char *err) {
    const char *a = c->arch;
    char key[160];
    if (strncmp(a, "gemma", 5) == 0) {
        bool g2 = strcmp(a, "gemma2") == 0;
        c->gemma = true;
        c->swa_pattern = g2 ? 2 : 6;
        if (get_int(g, a, "attention.sliding_window", !g2, 4096, 1, 1 << 24, &c->sliding_window, err)) return SL_ERR;
        // gemma_pytorch's config: the 27B models scale by dim / n_heads, the others by head_dim
        bool big = c->n_layers == (g2 ? 46 : 62);
        c->attn_scale = 1.0f / sqrtf((float)(big ? c->dim / c->n_heads : c->head_dim));
        if (g2 && (get_float(g, a, "attn_logit_softcapping", false, 50.0, &c->attn_softcap, err) ||
                   get_float(g, a, "final_logit_softcapping", false, 30.0, &c->final_softcap, err)))
            return SL_ERR;
        if (!g2) {
            c->rope_base_local = 10000.0f;
            double f = 0;
            if (gguf_get_float(g, arch_key(key, sizeof key, a, "rope.scaling.factor"), &f) && f != 1.0) {
                if (!(f > 0 && f < 1e6)) return seterr(err, "metadata %s = %g is out of range", key, f);
                c->rope_linear_factor = (float)f;
            }
        }
    } else if (strcmp(a, "phi3") == 0) {
        c->fused_qkv = gguf_tensor(g, "blk.0.attn_qkv.weight") != NULL;
        c->fused_gate_up = true;
        c->longrope = gguf_tensor(g, "rope_factors_long.weight") != NULL;
        if (get_int(g, a, "rope.scaling.original_context_length", c->longrope, c->context_len, 1, 1 << 24,
                    &c->rope_orig_ctx, err) ||
            get_float(g, a, "rope.scaling.attn_factor", false, 1.0, &c->rope_attn_factor, err))
            return SL_ERR;
    }
    return SL_OK;
}

int model_layer_window(const ModelConfig *c, int l) {
    if (c->sliding_window <= 0 || l < c->swa_first_layer) return 0;
    if (c->swa_pattern > 0 && (l + 1) % c->swa_pattern == 0) return 0;
    return c->sliding_window;
}

bool model_longrope_long(const ModelConfig *c) { return c->longrope && c->context_len > c->rope_orig_ctx; }

int model_config_from_gguf(ModelConfig *c, const GGUF *g, char *err) {
    memset(c, 0, sizeof *c);
    GGUFStr s;
    if (!gguf_get_str(g, "general.architecture", &s)) return seterr(err, "metadata general.architecture is missing");
    int arch = -1;
    for (size_t i = 0; i < ARRAY_LEN(ARCHS); i++)
        if (gguf_str_eq(s, ARCHS[i].name)) arch = (int)i;
    char shown[STR_SHOW_CAP(64)];
    if (arch < 0)
        return seterr(err, "unsupported architecture '%s' (supported: %s)", str_show(s.ptr, s.len, 64, shown),
                      model_supported_archs());
    snprintf(c->arch, sizeof c->arch, "%s", ARCHS[arch].name);
    const char *a = c->arch;

    const int64_t BIG = 1 << 24; // generous bound on widths, so products stay far from overflow
    if (get_int(g, a, "block_count", true, 0, 1, 1024, &c->n_layers, err) ||
        get_int(g, a, "embedding_length", true, 0, 1, BIG, &c->dim, err) ||
        get_int(g, a, "feed_forward_length", true, 0, 1, BIG, &c->ffn_dim, err) ||
        get_int(g, a, "attention.head_count", true, 0, 1, 4096, &c->n_heads, err) ||
        get_int(g, a, "attention.head_count_kv", false, c->n_heads, 1, c->n_heads, &c->n_kv_heads, err) ||
        get_int(g, a, "context_length", true, 0, 1, 1 << 24, &c->context_len, err))
        return SL_ERR;
    if (c->n_heads % c->n_kv_heads != 0)
        return seterr(err, "attention.head_count %d is not a multiple of head_count_kv %d", c->n_heads, c->n_kv_heads);
    int def_head_dim = c->dim % c->n_heads == 0 ? c->dim / c->n_heads : 0;
    if (get_int(g, a, "attention.key_length", def_head_dim == 0, def_head_dim, 1, 4096, &c->head_dim, err))
        return SL_ERR;
    int v_dim;
    if (get_int(g, a, "attention.value_length", false, c->head_dim, 1, 4096, &v_dim, err)) return SL_ERR;
    if (v_dim != c->head_dim)
        return seterr(err, "attention.value_length %d differs from key_length %d (not supported)", v_dim, c->head_dim);
    if (get_int(g, a, "rope.dimension_count", false, c->head_dim, 2, c->head_dim, &c->rope_dim, err)) return SL_ERR;
    if (c->rope_dim % 2) return seterr(err, "rope.dimension_count %d is odd", c->rope_dim);
    if (get_float(g, a, "rope.freq_base", false, 10000.0, &c->rope_base, err) ||
        get_float(g, a, "attention.layer_norm_rms_epsilon", true, 0, &c->norm_eps, err))
        return SL_ERR;
    c->rope_layout = ARCHS[arch].rope_layout;
    c->qkv_bias = ARCHS[arch].qkv_bias;
    c->qk_norm = ARCHS[arch].qk_norm;

    if (family_from_gguf(c, g, err)) return SL_ERR;

    // What this forward pass does not implement yet: say so rather than run it wrongly.
    char key[160];
    GGUFStr scaling;
    if (gguf_get_str(g, arch_key(key, sizeof key, a, "rope.scaling.type"), &scaling) && !gguf_str_eq(scaling, "none") &&
        !(strcmp(a, "gemma3") == 0 && gguf_str_eq(scaling, "linear"))) {
        double factor = 1.0;
        gguf_get_float(g, arch_key(key, sizeof key, a, "rope.scaling.factor"), &factor);
        if (factor != 1.0)
            return seterr(err, "RoPE scaling '%s' (factor %g) is not supported yet",
                          str_show(scaling.ptr, scaling.len, 32, shown), factor);
    }
    // Llama 3.1's "llama3" scaling has no metadata key in a GGUF: the converter stores its
    // per-pair divisors as the tensor rope_freqs.weight, which llama.c binds.
    int n_experts = 0;
    if (get_int(g, a, "expert_count", false, 0, 0, 1 << 16, &n_experts, err)) return SL_ERR;
    if (n_experts > 0) return seterr(err, "mixture-of-experts models (expert_count %d) are not supported", n_experts);

    // The vocabulary is whatever the embedding table holds; the metadata must agree with it.
    const GGUFTensor *emb = gguf_tensor(g, "token_embd.weight");
    if (!emb) return seterr(err, "tensor token_embd.weight is missing");
    if (emb->n_dims != 2 || emb->ne[0] != c->dim || emb->ne[1] < 1 || emb->ne[1] > BIG)
        return seterr(err, "tensor token_embd.weight has shape [%lld, %lld], expected [%d, vocab]",
                      (long long)emb->ne[0], (long long)emb->ne[1], c->dim);
    c->vocab = (int)emb->ne[1];
    int meta_vocab;
    if (get_int(g, a, "vocab_size", false, c->vocab, 1, BIG, &meta_vocab, err)) return SL_ERR;
    if (meta_vocab != c->vocab)
        return seterr(err, "metadata %s.vocab_size %d differs from token_embd.weight's %d rows", a, meta_vocab, c->vocab);
    c->tied_embeddings = gguf_tensor(g, "output.weight") == NULL;
    return SL_OK;
}

int model_config_max_len(const ModelConfig *c, int requested, int *out, char *err) {
    if (requested > c->context_len)
        return seterr(err, "--max-model-len %d exceeds the model's context length %d", requested, c->context_len);
    *out = requested > 0 ? requested : c->context_len;
    return SL_OK;
}

void model_config_log(const ModelConfig *c) {
    log_info("model: arch=%s layers=%d dim=%d heads=%d kv_heads=%d head_dim=%d ffn=%d vocab=%d ctx=%d "
             "rope_base=%g rope_dim=%d rope=%s eps=%g tied_embeddings=%s%s%s",
             c->arch, c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim, c->vocab,
             c->context_len, c->rope_base, c->rope_dim, c->rope_layout == ROPE_NEOX ? "neox" : "normal", c->norm_eps,
             c->tied_embeddings ? "yes" : "no", c->qkv_bias ? " qkv_bias" : "", c->qk_norm ? " qk_norm" : "");
    if (c->sliding_window > 0)
        log_info("model: sliding_window=%d (%s)", c->sliding_window,
                 c->swa_pattern ? "interleaved with global layers" : "every layer");
    if (c->gemma)
        log_info("model: gemma attn_scale=%g attn_softcap=%g final_softcap=%g rope_base_local=%g", c->attn_scale,
                 c->attn_softcap, c->final_softcap, c->rope_base_local);
    if (c->longrope)
        log_info("model: LongRoPE (%s factors) original_ctx=%d attn_factor=%g", model_longrope_long(c) ? "long" : "short",
                 c->rope_orig_ctx, c->rope_attn_factor);
    if (c->rope_scaling_factor > 0)
        log_info("model: rope scaling llama3 factor=%g low_freq_factor=%g high_freq_factor=%g original_ctx=%d",
                 c->rope_scaling_factor, c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_orig_ctx);
}
