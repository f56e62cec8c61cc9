// test_engine_tp.c: the engine at tensor-parallel sizes above one (engine/tp.h), and models from
// other sources (dummy weights, safetensors) through engine.h, on the CPU.
//
//   - the default model (9 heads, 3 KV heads) split over 3 ranks makes the same greedy tokens as
//     one rank for a whole batch (chunked prefills sharing steps with decodes, prefix-cache hits),
//     and preemption with recompute and copy-on-write for n > 1 work on every rank's cache;
//   - the tiny dummy (config/models/tiny-8h4kv: 8 heads, 4 KV heads, random weights) at 2 and 4
//     ranks equals 1;
//   - sizes that do not divide the heads, a model without a tokenizer, --device cuda without
//     CUDA: one-line errors naming the flag;
//   - a model whose LM head has more rows than the tokenizer has tokens never samples those ids
//     (a tiny safetensors model written here, whose extra rows would otherwise always win).
#include <sys/stat.h>
#include <unistd.h>

#include "engine/gpu_runner.h"
#include "tests/unit/engine_jobs.h"

#define TINY_DIR TEST_DATA_DIR "/../../config/models/tiny-8h4kv"

// ----------------------------------------------------------------------------
// tensor parallelism

// The default model split over 3 ranks: the whole greedy batch (chunked prefills sharing steps
// with decodes, prefix-cache hits) makes the TP=1 tokens and text (which test_engine.c shows are
// each request's solo ones). The KV cache holds the same number of blocks as at TP=1 for the
// same memory: a block is the ranks' shares together.
static void test_tp_batch(void) {
    static Job want[NJOBS], got[NJOBS];
    jobs_make(want, false);
    memcpy(got, want, sizeof got);
    size_t block_bytes[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        EngineConfig c = cfg_make(48, 16, true, 64 << 20);
        c.tensor_parallel_size = k ? 3 : 1;
        Engine *e = engine_open(&c);
        ASSERT(e);
        const EngineInfo *in = engine_info(e);
        EXPECT_EQ_INT(in->tensor_parallel_size, c.tensor_parallel_size);
        EXPECT_EQ_INT(in->threads, k ? 3 : 2); // --threads 2 over 3 ranks: one each
        block_bytes[k] = in->kv_cache_bytes / (size_t)in->num_blocks;
        jobs_run_together(e, k ? got : want, NJOBS);
        EngineStats st;
        expect_pool_whole(e, &st);
        EXPECT(st.prefix_cache_hits > 0, "no prefix-cache hit at TP=%d", c.tensor_parallel_size);
        engine_destroy(e);
    }
    for (int i = 0; i < NJOBS; i++) EXPECT_EQ_INT(want[i].n_out, GEN);
    jobs_compare(want, got, NJOBS, "greedy at TP=3 vs TP=1");
    EXPECT(block_bytes[0] == block_bytes[1], "block of %zu bytes at TP=1, %zu at TP=3", block_bytes[0], block_bytes[1]);
}

// Preemption and recompute, and copy-on-write of a shared partial block, on every rank's cache.
static void test_tp_preemption(void) { preemption_at(3); }
static void test_tp_parallel_samples(void) { parallel_samples_at(3); }

// Greedy outputs of four prompts on the tiny dummy model (8 heads, 4 KV heads, random weights;
// the default model's tokenizer) at TP=1, 2 and 4.
static void test_tp_dummy(void) {
    static Job want[4], got[4];
    for (int i = 0; i < 4; i++) {
        Job *j = &want[i];
        memset(j, 0, sizeof(*j));
        j->n_prompt = 5 + 23 * i;
        for (int k = 0; k < j->n_prompt; k++) j->prompt[k] = corpus_ids[(31 * i + k) % n_corpus];
        engine_params_defaults(&j->params);
        j->params.max_tokens = GEN;
        j->params.ignore_eos = true;
        j->params.sampling.temperature = 0;
    }
    int sizes[] = {1, 2, 4};
    for (size_t k = 0; k < ARRAY_LEN(sizes); k++) {
        EngineConfig c = cfg_make(64, 4, true, 16 << 20);
        c.tensor_parallel_size = sizes[k];
        c.load_format = LOAD_DUMMY;
        c.tokenizer = TEST_MODEL_PATH;
        Engine *e = engine_open_path(&c, TINY_DIR);
        ASSERT(e);
        EXPECT_EQ_INT(engine_info(e)->load_format, LOAD_DUMMY);
        EXPECT_EQ_INT(engine_info(e)->tensor_parallel_size, sizes[k]);
        Job *jobs = k == 0 ? want : got;
        if (k > 0) memcpy(got, want, sizeof got);
        jobs_run_together(e, jobs, 4);
        engine_destroy(e);
        if (k > 0) {
            char what[64];
            snprintf(what, sizeof what, "tiny dummy at TP=%d vs TP=1", sizes[k]);
            jobs_compare(want, got, 4, what);
        }
    }
    // the random model does not just repeat one token
    int distinct = 0;
    for (int i = 1; i < want[0].n_out; i++) distinct += want[0].out[i] != want[0].out[0];
    EXPECT(distinct > 0, "the dummy model repeats token %d", want[0].out[0]);
}

// Settings the model or the build cannot satisfy: one line naming the flag.
static void test_tp_errors(void) {
    char why[ERR_MAX];
    bool gpu = gpu_runner_available(why);
    struct {
        const char *path;
        int tp;
        LoadFormat format;
        const char *tokenizer;
        EngineDevice device;
        const char *msg;
    } cases[] = {
        {TEST_MODEL_PATH, 2, LOAD_AUTO, NULL, ENGINE_DEVICE_CPU,
         "--tensor-parallel-size: tensor parallel size 2 does not divide the model's 9 attention heads and 3 KV heads; "
         "valid sizes: 1, 3"},
        {TEST_MODEL_PATH, 9, LOAD_AUTO, NULL, ENGINE_DEVICE_CPU, "valid sizes: 1, 3"},
        {TINY_DIR, 3, LOAD_DUMMY, TEST_MODEL_PATH, ENGINE_DEVICE_CPU, "valid sizes: 1, 2, 4"},
        {TINY_DIR, 1, LOAD_DUMMY, NULL, ENGINE_DEVICE_CPU, "the model has no tokenizer; pass --tokenizer"},
        {TINY_DIR, 1, LOAD_DUMMY, TEST_DATA_DIR "/no-such.gguf", ENGINE_DEVICE_CPU, "--tokenizer"},
        {TEST_MODEL_PATH, 1, LOAD_AUTO, NULL, gpu ? ENGINE_DEVICE_CPU : ENGINE_DEVICE_CUDA, gpu ? NULL : "--device cuda: "},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        if (!cases[i].msg) continue; // a GPU is here: --device cuda works
        EngineConfig c = cfg_make(64, 4, true, 16 << 20);
        c.tensor_parallel_size = cases[i].tp;
        c.load_format = cases[i].format;
        c.tokenizer = cases[i].tokenizer;
        c.device = cases[i].device;
        char err[ERR_MAX] = "";
        Engine *e = (Engine *)1;
        EXPECT_EQ_INT(engine_create(&e, &c, cases[i].path, err), SL_ERR);
        EXPECT(e == NULL, "case %zu", i);
        EXPECT(strstr(err, cases[i].msg) != NULL && !strchr(err, '\n'), "case %zu: \"%s\"", i, err);
    }
}

// ----------------------------------------------------------------------------
// a model vocabulary larger than the tokenizer's

// Appends one F32 tensor to a safetensors header (JSON) and its data to *data.
static void st_add(char *hdr, size_t cap, FILE *data, size_t *off, const char *name, const int64_t *shape, int nd,
                   const float *v) {
    size_t n = 1;
    char dims[64] = "";
    for (int i = 0; i < nd; i++) {
        n *= (size_t)shape[i];
        snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld", i ? "," : "", (long long)shape[i]);
    }
    snprintf(hdr + strlen(hdr), cap - strlen(hdr), "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}",
             hdr[1] ? "," : "", name, dims, *off, *off + n * 4);
    CHECK(fwrite(v, 4, n, data) == n);
    *off += n * 4;
}

// A one-layer Llama (dim 64) with an LM head of 49160 rows for a 49152-token tokenizer: every
// projection is zero, so the last hidden state is the normed embedding of the input token, and
// the 8 extra rows (all ones) score ~64 against at most ~2 for any real token. Unmasked, they
// would win every step.
static bool write_padded_model(const char *dir) {
    enum { D = 64, V = 49160, F = 128, L = 1 };
    mkdir(dir, 0755);
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fprintf(f, "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":%d,"
               "\"intermediate_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":2,\"num_key_value_heads\":2,"
               "\"head_dim\":32,\"vocab_size\":%d,\"max_position_embeddings\":512,\"rms_norm_eps\":1e-5,"
               "\"rope_theta\":10000.0,\"tie_word_embeddings\":true,\"torch_dtype\":\"float32\"}\n", D, F, L, V);
    fclose(f);
    FILE *data = tmpfile();
    if (!data) return false;
    static char hdr[8192];
    snprintf(hdr, sizeof hdr, "{");
    size_t off = 0;
    float *emb = xmalloc((size_t)V * D * sizeof(float)), *zeros = xcalloc((size_t)D * F, sizeof(float));
    float ones[D];
    for (int i = 0; i < D; i++) ones[i] = 1.0f;
    for (int r = 0; r < V; r++)
        for (int i = 0; i < D; i++)
            emb[(size_t)r * D + i] = r >= 49152 ? 1.0f : 0.005f + 0.02f * (float)((r * 7 + i * 13) % 17) / 17.0f;
    int64_t s_emb[2] = {V, D}, s_vec[1] = {D}, s_sq[2] = {D, D}, s_up[2] = {F, D}, s_down[2] = {D, F};
    st_add(hdr, sizeof hdr, data, &off, "model.embed_tokens.weight", s_emb, 2, emb);
    st_add(hdr, sizeof hdr, data, &off, "model.norm.weight", s_vec, 1, ones);
    st_add(hdr, sizeof hdr, data, &off, "model.layers.0.input_layernorm.weight", s_vec, 1, ones);
    st_add(hdr, sizeof hdr, data, &off, "model.layers.0.post_attention_layernorm.weight", s_vec, 1, ones);
    const char *sq[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    for (int i = 0; i < 4; i++) {
        char name[96];
        snprintf(name, sizeof name, "model.layers.0.self_attn.%s.weight", sq[i]);
        st_add(hdr, sizeof hdr, data, &off, name, s_sq, 2, zeros);
    }
    st_add(hdr, sizeof hdr, data, &off, "model.layers.0.mlp.gate_proj.weight", s_up, 2, zeros);
    st_add(hdr, sizeof hdr, data, &off, "model.layers.0.mlp.up_proj.weight", s_up, 2, zeros);
    st_add(hdr, sizeof hdr, data, &off, "model.layers.0.mlp.down_proj.weight", s_down, 2, zeros);
    snprintf(hdr + strlen(hdr), sizeof hdr - strlen(hdr), "}");
    while (strlen(hdr) % 8) snprintf(hdr + strlen(hdr), sizeof hdr - strlen(hdr), " ");
    free(emb);
    free(zeros);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    f = fopen(path, "wb");
    bool ok = f != NULL;
    if (ok) {
        uint64_t n = strlen(hdr);
        ok = fwrite(&n, 8, 1, f) == 1 && fwrite(hdr, 1, n, f) == n;
        rewind(data);
        char buf[1 << 16];
        size_t got;
        while (ok && (got = fread(buf, 1, sizeof buf, data)) > 0) ok = fwrite(buf, 1, got, f) == got;
        ok = fclose(f) == 0 && ok;
    }
    fclose(data);
    return ok;
}

// What the GPU runner refuses at start-up, one line naming the architecture and what it lacks
// (--device auto then stays on the CPU): Gemma, Phi-3, any layer with a sliding window.
static void test_gpu_runner_families(void) {
    ModelConfig c = {.arch = "llama", .n_layers = 4, .head_dim = 64, .rope_dim = 64};
    char why[ERR_MAX] = "";
    EXPECT(gpu_runner_supports(&c, why), "%s", why);
    c.sliding_window = 4096; // Qwen2 with use_sliding_window, but no layer reaches max_window_layers
    c.swa_first_layer = 28;
    EXPECT(gpu_runner_supports(&c, why), "%s", why);
    static const struct {
        ModelConfig c;
        const char *want;
    } cases[] = {
        {{.arch = "gemma2", .n_layers = 4, .head_dim = 64, .rope_dim = 64, .gemma = true},
         "the GPU runner does not implement gemma2's forward (post-norms, GeGLU, soft-capping"},
        {{.arch = "phi3", .n_layers = 4, .head_dim = 64, .rope_dim = 64, .fused_qkv = true, .fused_gate_up = true},
         "phi3's forward (fused QKV and gate-up matrices)"},
        {{.arch = "llama", .n_layers = 4, .head_dim = 64, .rope_dim = 64, .sliding_window = 4096},
         "llama's forward (sliding-window attention)"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        why[0] = 0;
        EXPECT(!gpu_runner_supports(&cases[i].c, why) && strstr(why, cases[i].want) && !strchr(why, '\n'),
               "case %zu: %s", i, why);
    }
}

static void test_vocab_beyond_tokenizer(void) {
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/sluice-test-engine-%d", (int)getpid());
    ASSERT(write_padded_model(dir), "cannot write %s", dir);
    EngineConfig c = cfg_make(64, 4, true, 8 << 20);
    c.tokenizer = TEST_MODEL_PATH;
    Engine *e = engine_open_path(&c, dir);
    if (e) {
        EXPECT_EQ_INT(engine_info(e)->vocab, 49152);
        EXPECT_EQ_INT(engine_info(e)->model_vocab, 49160);
        EXPECT_EQ_INT(engine_info(e)->load_format, LOAD_SAFETENSORS);
        Job j[2];
        for (int k = 0; k < 2; k++) { // greedy, and sampling hot enough to reach any id with a high logit
            memset(&j[k], 0, sizeof(Job));
            for (int i = 0; i < 6; i++) j[k].prompt[i] = corpus_ids[i];
            j[k].n_prompt = 6;
            engine_params_defaults(&j[k].params);
            j[k].params.max_tokens = 16;
            j[k].params.ignore_eos = true;
            j[k].params.sampling.temperature = k ? 1.5f : 0.0f;
            j[k].params.sampling.seed = 3;
            j[k].params.sampling.has_seed = true;
        }
        jobs_run_alone(e, j, 2);
        for (int k = 0; k < 2; k++) {
            EXPECT_EQ_INT(j[k].n_out, 16);
            for (int i = 0; i < j[k].n_out; i++)
                EXPECT(j[k].out[i] >= 0 && j[k].out[i] < 49152, "run %d sampled id %d, beyond the tokenizer", k,
                       j[k].out[i]);
        }
        engine_destroy(e);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
}

int main(int argc, char **argv) {
    log_level = LOG_WARN;
    if (!corpus_load()) return test_summary();
    RUN(test_tp_batch);
    RUN(test_tp_preemption);
    RUN(test_tp_parallel_samples);
    RUN(test_tp_dummy);
    RUN(test_tp_errors);
    RUN(test_vocab_beyond_tokenizer);
    RUN(test_gpu_runner_families);
    return test_summary();
}
