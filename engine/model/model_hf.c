// model_hf.c: a Hugging Face model's hyperparameters from its config.json, the llama3 RoPE
// frequency divisors, and the map from HF tensor names to the GGUF names the binder uses.
//
// Supported: LlamaForCausalLM, MistralForCausalLM (a Llama with a sliding window), Qwen2ForCausalLM
// (biases on q, k, v), Qwen3ForCausalLM (RMSNorm over each q and k head), Gemma2ForCausalLM and
// Gemma3ForCausalLM (gemma.c; their window layout, soft-caps, query scale and local RoPE base)
// and Phi3ForCausalLM (fused tensors, partial rotary, LongRoPE). Everything the forward pass
// would get wrong silently (another activation, another RoPE scaling, biases elsewhere, partial
// rotary outside Phi-3, quantized checkpoints) is refused here with one line naming the key, as
// model_config_from_gguf does for GGUF metadata.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/model/model_config.h"
#include "engine/model/weights_impl.h"

static const struct {
    const char *hf;         // architectures[0]
    const char *model_type; // model_type, when architectures is absent
    const char *arch;       // ModelConfig.arch
} HF_ARCHS[] = {
    {"LlamaForCausalLM", "llama", "llama"},
    {"MistralForCausalLM", "mistral", "llama"},
    {"Qwen2ForCausalLM", "qwen2", "qwen2"},
    {"Qwen3ForCausalLM", "qwen3", "qwen3"},
    {"Gemma2ForCausalLM", "gemma2", "gemma2"},
    {"Gemma3ForCausalLM", "gemma3_text", "gemma3"},
    {"Phi3ForCausalLM", "phi3", "phi3"},
};
#define HF_ARCH_LIST \
    "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, " \
    "Gemma3ForCausalLM, Phi3ForCausalLM"

#define HF_BIG (1 << 24) // generous bound on widths, so products stay far from overflow

static const cJSON *get(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNull(v) ? NULL : v; // HF writes null for "not set"
}

// An integer key in [lo, hi]; when absent or null, def (or an error when required).
static int get_int(const cJSON *o, const char *key, bool required, int64_t def, int64_t lo, int64_t hi, int *out,
                   char *err) {
    const cJSON *v = get(o, key);
    int64_t x = def;
    if (!v) {
        if (required) return seterr(err, "key %s is missing", key);
    } else {
        double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        if (!(fabs(d) <= 9007199254740992.0) || d != floor(d)) return seterr(err, "key %s is not an integer", key);
        x = (int64_t)d;
    }
    if (x < lo || x > hi)
        return seterr(err, "key %s = %lld is out of range [%lld, %lld]", key, (long long)x, (long long)lo, (long long)hi);
    *out = (int)x;
    return SL_OK;
}

// A positive, finite number; when absent or null, def (or an error when required).
static int get_float(const cJSON *o, const char *key, bool required, double def, float *out, char *err) {
    const cJSON *v = get(o, key);
    double d = def;
    if (!v) {
        if (required) return seterr(err, "key %s is missing", key);
    } else if (!cJSON_IsNumber(v)) {
        return seterr(err, "key %s is not a number", key);
    } else {
        d = v->valuedouble;
    }
    if (!(d > 0) || d > 1e12) return seterr(err, "key %s = %g is out of range", key, d);
    *out = (float)d;
    return SL_OK;
}

static int get_bool(const cJSON *o, const char *key, bool def, bool *out, char *err) {
    const cJSON *v = get(o, key);
    if (v && !cJSON_IsBool(v)) return seterr(err, "key %s is not true or false", key);
    *out = v ? cJSON_IsTrue(v) : def;
    return SL_OK;
}

// rope_scaling (or transformers 5's rope_parameters): none, "default", or "llama3".
static int rope_scaling_read(ModelConfig *c, const cJSON *rs, const char *key, char *err) {
    if (!rs) return SL_OK;
    if (!cJSON_IsObject(rs)) return seterr(err, "key %s is not an object", key);
    const cJSON *type = get(rs, "rope_type");
    if (!type) type = get(rs, "type"); // the older spelling
    if (!type) return SL_OK;            // rope_parameters with rope_theta alone
    if (!cJSON_IsString(type)) return seterr(err, "key %s.rope_type is not a string", key);
    if (strcmp(type->valuestring, "default") == 0) return SL_OK;
    if (strcmp(type->valuestring, "llama3") != 0)
        return seterr(err, "%s type '%.32s' is not supported (supported: llama3)", key, type->valuestring);
    char why[ERR_MAX];
    if (get_float(rs, "factor", true, 0, &c->rope_scaling_factor, why) ||
        get_float(rs, "low_freq_factor", true, 0, &c->rope_low_freq_factor, why) ||
        get_float(rs, "high_freq_factor", true, 0, &c->rope_high_freq_factor, why) ||
        get_int(rs, "original_max_position_embeddings", true, 0, 1, 1 << 24, &c->rope_orig_ctx, why))
        return seterr(err, "%s: %s", key, why);
    if (c->rope_high_freq_factor <= c->rope_low_freq_factor)
        return seterr(err, "%s: high_freq_factor %g must exceed low_freq_factor %g", key, c->rope_high_freq_factor,
                      c->rope_low_freq_factor);
    return SL_OK;
}

// Gemma 2/3 and Phi-3's keys beyond Llama's (HF transformers' Gemma2Config, Gemma3TextConfig,
// Phi3Config).
static int gemma_read(ModelConfig *c, const cJSON *root, char *err) {
    bool g2 = strcmp(c->arch, "gemma2") == 0;
    c->swa_pattern = g2 ? 2 : 6;
    float pre_attn = (float)c->head_dim;
    if (get_int(root, "sliding_window", true, 0, 1, 1 << 24, &c->sliding_window, err) ||
        (!g2 && get_int(root, "sliding_window_pattern", false, 6, 1, 1024, &c->swa_pattern, err)) ||
        get_float(root, "query_pre_attn_scalar", false, c->head_dim, &pre_attn, err))
        return SL_ERR;
    c->attn_scale = 1.0f / sqrtf(pre_attn);
    // transformers >= 4.53 lists each layer's kind; it must be the pattern this forward runs
    const cJSON *types = get(root, "layer_types");
    if (types) {
        if (!cJSON_IsArray(types) || cJSON_GetArraySize(types) != c->n_layers)
            return seterr(err, "key layer_types is not a list of num_hidden_layers names");
        for (int l = 0; l < c->n_layers; l++) {
            const cJSON *t = cJSON_GetArrayItem(types, l);
            const char *want = model_layer_window(c, l) ? "sliding_attention" : "full_attention";
            if (!cJSON_IsString(t) || strcmp(t->valuestring, want) != 0)
                return seterr(err, "layer_types[%d] is not '%s' (supported: every %dth layer global)", l, want,
                              c->swa_pattern);
        }
    }
    if (g2) {
        if (get(root, "attn_logit_softcapping") &&
            get_float(root, "attn_logit_softcapping", false, 0, &c->attn_softcap, err))
            return SL_ERR;
        if (get(root, "final_logit_softcapping") &&
            get_float(root, "final_logit_softcapping", false, 0, &c->final_softcap, err))
            return SL_ERR;
        return get(root, "rope_scaling") ? seterr(err, "rope_scaling is not supported for Gemma 2") : SL_OK;
    }
    if (get_float(root, "rope_local_base_freq", false, 10000.0, &c->rope_base_local, err)) return SL_ERR;
    if (get(root, "attn_logit_softcapping") || get(root, "final_logit_softcapping"))
        return seterr(err, "soft-capping is not supported for Gemma 3 (its models have none)");
    const cJSON *rs = get(root, "rope_scaling");
    if (!rs) return SL_OK;
    const cJSON *type = get(rs, "rope_type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "linear") != 0)
        return seterr(err, "rope_scaling for Gemma 3 must be of rope_type linear");
    char why[ERR_MAX];
    if (get_float(rs, "factor", true, 0, &c->rope_linear_factor, why)) return seterr(err, "rope_scaling: %s", why);
    return SL_OK;
}

// A list of n positive numbers into out.
static int get_floats(const cJSON *o, const char *key, int n, float *out, char *err) {
    const cJSON *v = get(o, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return seterr(err, "key rope_scaling.%s is not a list of %d numbers (rotated dims / 2)", key, n);
    for (int i = 0; i < n; i++) {
        const cJSON *x = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNumber(x) || !(x->valuedouble > 0) || x->valuedouble > 1e9)
            return seterr(err, "key rope_scaling.%s[%d] is not a positive number", key, i);
        out[i] = (float)x->valuedouble;
    }
    return SL_OK;
}

static int phi3_read(ModelConfig *c, const cJSON *root, char *err) {
    c->fused_qkv = c->fused_gate_up = true;
    float partial = 1.0f;
    if (get_float(root, "partial_rotary_factor", false, 1.0, &partial, err)) return SL_ERR;
    // convert_hf_to_gguf's int(partial_rotary_factor * hidden_size) // num_attention_heads
    c->rope_dim = (int)(partial * c->dim) / c->n_heads;
    if (c->rope_dim < 2 || c->rope_dim > c->head_dim || c->rope_dim % 2 || c->rope_dim / 2 > 128)
        return seterr(err, "partial_rotary_factor %g gives %d rotated dims of %d", partial, c->rope_dim, c->head_dim);
    if (get_int(root, "original_max_position_embeddings", false, c->context_len, 1, 1 << 24, &c->rope_orig_ctx, err))
        return SL_ERR;
    const cJSON *rs = get(root, "rope_scaling");
    if (!rs) return SL_OK;
    const cJSON *type = get(rs, "rope_type");
    if (!type) type = get(rs, "type");
    if (!cJSON_IsString(type) || (strcmp(type->valuestring, "longrope") != 0 && strcmp(type->valuestring, "su") != 0))
        return seterr(err, "rope_scaling for Phi-3 must be of type longrope");
    c->longrope = true;
    if (get_floats(rs, "short_factor", c->rope_dim / 2, c->rope_short, err) ||
        get_floats(rs, "long_factor", c->rope_dim / 2, c->rope_long, err))
        return SL_ERR;
    double scale = (double)c->context_len / c->rope_orig_ctx;
    c->rope_attn_factor = scale > 1 ? (float)sqrt(1 + log(scale) / log(c->rope_orig_ctx)) : 1.0f;
    return SL_OK;
}

static int family_read(ModelConfig *c, const cJSON *root, char *err) {
    return c->gemma ? gemma_read(c, root, err) : phi3_read(c, root, err);
}

// The architecture: architectures[0], or model_type when there is no architectures list.
static int arch_read(const cJSON *root, int *which, char *err) {
    const cJSON *archs = get(root, "architectures"), *mt = get(root, "model_type");
    const char *name = NULL;
    bool by_type = false;
    if (archs) {
        const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
        if (!cJSON_IsString(a0)) return seterr(err, "key architectures is not a list of names");
        name = a0->valuestring;
    } else if (cJSON_IsString(mt)) {
        name = mt->valuestring, by_type = true;
    } else {
        return seterr(err, "key architectures is missing");
    }
    for (size_t i = 0; i < ARRAY_LEN(HF_ARCHS); i++)
        if (strcmp(name, by_type ? HF_ARCHS[i].model_type : HF_ARCHS[i].hf) == 0) {
            *which = (int)i;
            return SL_OK;
        }
    return seterr(err, "unsupported architecture '%.64s' (supported: %s)", name, HF_ARCH_LIST);
}

static int config_read(ModelConfig *c, const cJSON *root, char *err) {
    if (!cJSON_IsObject(root)) return seterr(err, "not a JSON object");
    int which = 0;
    if (arch_read(root, &which, err)) return SL_ERR;
    snprintf(c->arch, sizeof c->arch, "%s", HF_ARCHS[which].arch);
    bool mistral = strcmp(HF_ARCHS[which].hf, "MistralForCausalLM") == 0;
    c->qkv_bias = strcmp(c->arch, "qwen2") == 0;
    c->qk_norm = strcmp(c->arch, "qwen3") == 0 || strcmp(c->arch, "gemma3") == 0;
    c->gemma = strncmp(c->arch, "gemma", 5) == 0;
    bool phi3 = strcmp(c->arch, "phi3") == 0;

    if (get_int(root, "hidden_size", true, 0, 1, HF_BIG, &c->dim, err) ||
        get_int(root, "num_hidden_layers", true, 0, 1, 1024, &c->n_layers, err) ||
        get_int(root, "num_attention_heads", true, 0, 1, 4096, &c->n_heads, err) ||
        get_int(root, "num_key_value_heads", false, c->n_heads, 1, c->n_heads, &c->n_kv_heads, err) ||
        get_int(root, "intermediate_size", true, 0, 1, HF_BIG, &c->ffn_dim, err) ||
        get_int(root, "vocab_size", true, 0, 1, HF_BIG, &c->vocab, err) ||
        get_int(root, "max_position_embeddings", true, 0, 1, 1 << 24, &c->context_len, err))
        return SL_ERR;
    if (c->n_heads % c->n_kv_heads != 0)
        return seterr(err, "num_attention_heads %d is not a multiple of num_key_value_heads %d", c->n_heads,
                      c->n_kv_heads);
    int def_head_dim = c->dim % c->n_heads == 0 ? c->dim / c->n_heads : 0;
    if (get_int(root, "head_dim", def_head_dim == 0, def_head_dim, 2, 4096, &c->head_dim, err)) return SL_ERR;
    if (c->head_dim % 2) return seterr(err, "head_dim %d is odd", c->head_dim);
    c->rope_dim = c->head_dim;
    c->rope_layout = ROPE_NEOX; // HF keeps rotate_half's layout: the two halves of a head pair up

    // RoPE: rope_theta at the top level, or inside transformers 5's rope_parameters.
    const cJSON *rp = get(root, "rope_parameters");
    if (get_float(root, "rope_theta", false, 10000.0, &c->rope_base, err)) return SL_ERR;
    if (rp && cJSON_IsObject(rp) && get(rp, "rope_theta") && !get(root, "rope_theta")) {
        char why[ERR_MAX];
        if (get_float(rp, "rope_theta", true, 0, &c->rope_base, why)) return seterr(err, "rope_parameters: %s", why);
    }
    if (c->gemma || phi3) {
        if (family_read(c, root, err)) return SL_ERR; // their rope_scaling (linear, longrope) included
    } else {
        if (rope_scaling_read(c, get(root, "rope_scaling"), "rope_scaling", err)) return SL_ERR;
        if (c->rope_scaling_factor == 0 && rope_scaling_read(c, rp, "rope_parameters", err)) return SL_ERR;
        float partial = 1.0f;
        if (get_float(root, "partial_rotary_factor", false, 1.0, &partial, err)) return SL_ERR;
        if (partial != 1.0f) return seterr(err, "partial_rotary_factor %g is not supported (only 1)", partial);
    }

    if (get_float(root, "rms_norm_eps", false, 1e-6, &c->norm_eps, err) ||
        get_bool(root, "tie_word_embeddings", false, &c->tied_embeddings, err))
        return SL_ERR;
    // Gemma's GeGLU is the tanh GELU whatever it is called (HF's Gemma code forces it)
    const char *act_key = c->gemma ? "hidden_activation" : "hidden_act";
    const cJSON *act = get(root, act_key);
    if (c->gemma && !act) act = get(root, "hidden_act");
    bool act_ok = !act || (cJSON_IsString(act) && (c->gemma ? strncmp(act->valuestring, "gelu", 4) == 0
                                                             : strcmp(act->valuestring, "silu") == 0));
    if (!act_ok)
        return seterr(err, "%s '%.32s' is not supported (only %s)", act_key, cJSON_IsString(act) ? act->valuestring : "?",
                      c->gemma ? "gelu_pytorch_tanh" : "silu");

    // What the forward does not implement: say so rather than run it wrongly.
    bool attn_bias = false, mlp_bias = false;
    if (get_bool(root, "attention_bias", false, &attn_bias, err) || get_bool(root, "mlp_bias", false, &mlp_bias, err))
        return SL_ERR;
    if (attn_bias && !c->qkv_bias) // Llama's attention_bias also biases o_proj; Qwen2's biases are built in
        return seterr(err, "attention_bias (biases on the q, k, v and o projections) is not supported for %s",
                      HF_ARCHS[which].hf);
    if (mlp_bias) return seterr(err, "mlp_bias is not supported");
    if (get(root, "quantization_config")) return seterr(err, "quantized checkpoints (quantization_config) are not supported");

    // A sliding window on every layer (Mistral v0.1) or, with use_sliding_window, on Qwen2/3's
    // layers from max_window_layers on (HF's layer_types for them). Gemma's are read above;
    // Phi-3's sliding_window is not applied, as llama.cpp does not (see model_config.c).
    if (c->gemma || phi3) return SL_OK;
    bool use_window = mistral;
    if (!mistral && strcmp(c->arch, "llama") != 0 && get_bool(root, "use_sliding_window", false, &use_window, err))
        return SL_ERR;
    if (use_window && get_int(root, "sliding_window", !mistral, 0, 0, 1 << 24, &c->sliding_window, err)) return SL_ERR;
    if (use_window && !mistral &&
        get_int(root, "max_window_layers", false, 28, 0, 1 << 24, &c->swa_first_layer, err))
        return SL_ERR;
    return SL_OK;
}

int model_config_from_hf(ModelConfig *c, const char *json, size_t len, char *err) {
    memset(c, 0, sizeof *c);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t pos = at && at >= json && at <= json + len ? (size_t)(at - json) : 0;
        return seterr(err, "not valid JSON (near byte %zu)", pos);
    }
    int rc = config_read(c, root, err);
    cJSON_Delete(root);
    if (rc != SL_OK) memset(c, 0, sizeof *c);
    return rc;
}

// Llama 3.1's frequency scaling (HF transformers' _compute_llama3_parameters, llama.cpp's
// rope_freqs): wavelengths shorter than orig_ctx / high_freq_factor keep their frequency, those
// longer than orig_ctx / low_freq_factor are slowed by `factor`, and the band between is a
// smooth interpolation. Out is the divisor of each pair's frequency (1 = unchanged).
void model_rope_freq_factors(const ModelConfig *c, float *out) {
    int half = c->rope_dim / 2;
    if (c->rope_scaling_factor <= 0) {
        for (int i = 0; i < half; i++) out[i] = 1.0f;
        return;
    }
    double factor = c->rope_scaling_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    double low_wavelen = c->rope_orig_ctx / lo, high_wavelen = c->rope_orig_ctx / hi;
    for (int i = 0; i < half; i++) {
        double freq = pow(c->rope_base, -2.0 * i / c->rope_dim);
        double wavelen = 2 * M_PI / freq;
        if (wavelen < high_wavelen) out[i] = 1.0f;
        else if (wavelen > low_wavelen) out[i] = (float)factor;
        else {
            double smooth = (c->rope_orig_ctx / wavelen - lo) / (hi - lo);
            out[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
}

// ---- HF tensor names -> GGUF names

static const struct {
    const char *hf, *gguf;
} HF_LAYER_NAMES[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"}, // Gemma: post_attention_norm (below)
    {"pre_feedforward_layernorm.weight", "ffn_norm.weight"},
    {"post_feedforward_layernorm.weight", "post_ffw_norm.weight"},
    {"self_attn.qkv_proj.weight", "attn_qkv.weight"}, // Phi-3: [q; k; v]
    {"mlp.gate_up_proj.weight", "ffn_up.weight"},     // Phi-3: [gate; up]
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};

int model_hf_tensor_name(const char *arch, const char *hf, char *out, size_t cap) {
    static const struct {
        const char *hf, *gguf;
    } top[] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    for (size_t i = 0; i < ARRAY_LEN(top); i++)
        if (strcmp(hf, top[i].hf) == 0) return snprintf(out, cap, "%s", top[i].gguf), 1;
    const char *prefix = "model.layers.";
    if (strncmp(hf, prefix, strlen(prefix)) != 0) return -1;
    const char *p = hf + strlen(prefix), *q = p;
    // the layer number: decimal, no sign, no leading zero (else "01" and "1" would both be blk.1)
    while (*q >= '0' && *q <= '9' && q - p < 6) q++;
    if (q == p || *q != '.' || (*p == '0' && q - p > 1)) return -1;
    int layer = atoi(p);
    const char *rest = q + 1;
    if (strcmp(rest, "self_attn.rotary_emb.inv_freq") == 0) return 0; // recomputed from rope_theta
    // Gemma normalizes the attention output before the residual add (and has a separate
    // pre-feed-forward norm), where Llama's post_attention_layernorm is the MLP's input norm
    if (strncmp(arch, "gemma", 5) == 0 && strcmp(rest, "post_attention_layernorm.weight") == 0)
        return snprintf(out, cap, "blk.%d.post_attention_norm.weight", layer), 1;
    for (size_t i = 0; i < ARRAY_LEN(HF_LAYER_NAMES); i++)
        if (strcmp(rest, HF_LAYER_NAMES[i].hf) == 0) return snprintf(out, cap, "blk.%d.%s", layer, HF_LAYER_NAMES[i].gguf), 1;
    return -1;
}
