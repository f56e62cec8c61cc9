// config.c: see config.h.
#define _GNU_SOURCE
#include "config/config.h"
#include "config/spec_config.h"

#include <ctype.h>
#include <sched.h>
#include <unistd.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// ----------------------------------------------------------------------------
// values from text

static const char *LOG_LEVEL_NAMES[] = {"debug", "info", "warning", "error"};
const char *const LOAD_FORMAT_NAMES[] = {"auto", "gguf", "safetensors", "dummy", NULL};
const char *const DEVICE_NAMES[] = {"auto", "cpu", "cuda", NULL};
const char *const CPU_ACTIVATIONS_NAMES[] = {"int16", "int8", "auto", NULL};

static int parse_loglevel(const char *s, LogLevel *out) {
    if (!strcasecmp(s, "debug")) *out = LOG_DEBUG;
    else if (!strcasecmp(s, "info")) *out = LOG_INFO;
    else if (!strcasecmp(s, "warning") || !strcasecmp(s, "warn")) *out = LOG_WARN;
    else if (!strcasecmp(s, "error")) *out = LOG_ERROR;
    else return SL_ERR;
    return SL_OK;
}

static int parse_bool(const char *s, bool *out) {
    if (!strcasecmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on")) *out = true;
    else if (!strcasecmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off")) *out = false;
    else return SL_ERR;
    return SL_OK;
}

// "123", "512M", "512MiB", "1.5G", "2GB": a number and an optional K/M/G/T unit (powers of 1024).
static int parse_size(const char *s, size_t *out) {
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || isinf(v)) return SL_ERR;
    while (*end == ' ') end++;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 0: break;
    case 'B': mul = 1; break;
    case 'K': mul = 1024.0; break;
    case 'M': mul = 1024.0 * 1024; break;
    case 'G': mul = 1024.0 * 1024 * 1024; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
    default: return SL_ERR;
    }
    if (*end) {
        end++;
        if (mul > 1 && (*end == 'i' || *end == 'I')) end++;
        if (mul > 1 && (*end == 'b' || *end == 'B')) end++;
    }
    if (*end) return SL_ERR;
    double bytes = v * mul;
    if (bytes > 1e18) return SL_ERR;
    *out = (size_t)bytes;
    return SL_OK;
}

const char *fmt_bytes(size_t bytes, char *buf, size_t cap) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4) { v /= 1024; u++; }
    if (u == 0) snprintf(buf, cap, "%zu B", bytes);
    else snprintf(buf, cap, "%.2f %s", v, units[u]);
    return buf;
}

// ----------------------------------------------------------------------------
// one flag

void flag_set_default(Flag *f) {
    switch (f->kind) {
    case FLAG_INT: snprintf(f->def, sizeof f->def, "%d", *(int *)f->dst); break;
    case FLAG_U64: snprintf(f->def, sizeof f->def, "%llu", (unsigned long long)*(uint64_t *)f->dst); break;
    case FLAG_FLOAT: snprintf(f->def, sizeof f->def, "%g", *(float *)f->dst); break;
    case FLAG_SIZE:
        if (*(size_t *)f->dst == 0) snprintf(f->def, sizeof f->def, "0");
        else fmt_bytes(*(size_t *)f->dst, f->def, sizeof f->def);
        break;
    case FLAG_STR:
    case FLAG_LIST: snprintf(f->def, sizeof f->def, "%s", *(char **)f->dst ? *(char **)f->dst : "(none)"); break;
    case FLAG_BOOL: snprintf(f->def, sizeof f->def, "%s", *(bool *)f->dst ? "on" : "off"); break;
    case FLAG_LOGLEVEL: snprintf(f->def, sizeof f->def, "%s", LOG_LEVEL_NAMES[*(LogLevel *)f->dst]); break;
    }
}

int config_choice(const char *value, const char *const *choices) {
    for (int i = 0; value && choices[i]; i++)
        if (!strcmp(value, choices[i])) return i;
    return -1;
}

// "a, b or c" into buf
static const char *choices_text(const char *const *choices, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; choices[i]; i++) {
        const char *sep = i == 0 ? "" : choices[i + 1] ? ", " : " or ";
        n += (size_t)snprintf(buf + MIN(n, cap - 1), cap - MIN(n, cap - 1), "%s%s", sep, choices[i]);
    }
    return buf;
}

int flag_set(Flag *f, const char *value, const char *source, char *err) {
    // source names where the value came from: the flag itself, or its environment variable
    switch (f->kind) {
    case FLAG_INT: {
        errno = 0;
        char *end;
        long long v = strtoll(value, &end, 10);
        if (end == value || *end || errno) return seterr(err, "%s: expected an integer, got '%s'", source, value);
        if (v < f->min || v > f->max)
            return seterr(err, "%s: %lld is out of range [%.0f, %.0f]", source, v, f->min, f->max);
        *(int *)f->dst = (int)v;
        return SL_OK;
    }
    case FLAG_U64: {
        errno = 0;
        char *end;
        unsigned long long v = strtoull(value, &end, 10);
        if (end == value || *end || errno || value[0] == '-')
            return seterr(err, "%s: expected a non-negative integer, got '%s'", source, value);
        *(uint64_t *)f->dst = v;
        return SL_OK;
    }
    case FLAG_FLOAT: {
        errno = 0;
        char *end;
        double v = strtod(value, &end);
        if (end == value || *end || errno || isnan(v)) return seterr(err, "%s: expected a number, got '%s'", source, value);
        if (v < f->min || v > f->max) return seterr(err, "%s: %g is out of range [%g, %g]", source, v, f->min, f->max);
        *(float *)f->dst = (float)v;
        return SL_OK;
    }
    case FLAG_SIZE:
        if (parse_size(value, (size_t *)f->dst) != SL_OK)
            return seterr(err, "%s: expected a size such as 1073741824, 512M or 2GiB, got '%s'", source, value);
        return SL_OK;
    case FLAG_STR:
    case FLAG_LIST:
        if (!value[0]) return seterr(err, "%s: expected a value, got an empty string", source);
        free(*(char **)f->dst);
        *(char **)f->dst = xstrdup(value);
        return SL_OK;
    case FLAG_BOOL:
        if (parse_bool(value, (bool *)f->dst) != SL_OK)
            return seterr(err, "%s: expected true or false, got '%s'", source, value);
        return SL_OK;
    case FLAG_LOGLEVEL:
        if (parse_loglevel(value, (LogLevel *)f->dst) != SL_OK)
            return seterr(err, "%s: expected debug, info, warning or error, got '%s'", source, value);
        return SL_OK;
    }
    DIE("unknown flag kind %d", (int)f->kind);
}

// ----------------------------------------------------------------------------
// tables

int flags_apply_env(Flag *flags, int n, char *err) {
    for (int i = 0; i < n; i++) {
        if (!flags[i].env) continue;
        const char *v = getenv(flags[i].env);
        if (!v) continue;
        if (flag_set(&flags[i], v, flags[i].env, err) != SL_OK) return SL_ERR;
    }
    return SL_OK;
}

static Flag *flags_find(Flag *flags, int n, const char *name, size_t len) {
    for (int i = 0; i < n; i++)
        if (strlen(flags[i].name) == len && !strncmp(flags[i].name, name, len)) return &flags[i];
    return NULL;
}

int flags_parse_args(Flag *flags, int n, int argc, char **argv, bool *given, char *err) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return CONFIG_HELP;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) return seterr(err, "unexpected argument '%s' (flags start with --; see --help)", arg);
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        Flag *f = flags_find(flags, n, arg, len);
        if (!f) return seterr(err, "unknown flag '%.*s' (see --help)", (int)len, arg);
        if (given) given[f - flags] = true;
        const char *value;
        if (eq) value = eq + 1;
        else if (f->kind == FLAG_BOOL) value = "true";
        else if (i + 1 < argc) value = argv[++i];
        else return seterr(err, "%s: missing value", f->name);
        if (f->kind == FLAG_LIST && !eq) { // the values up to the next flag, as one text
            size_t len_all = strlen(value);
            int j = i + 1;
            for (; j < argc && strncmp(argv[j], "--", 2) != 0; j++) len_all += 1 + strlen(argv[j]);
            char *joined = xmalloc(len_all + 1), *w = joined;
            w += sprintf(w, "%s", value);
            for (int k = i + 1; k < j; k++) w += sprintf(w, " %s", argv[k]);
            i = j - 1;
            int rc = flag_set(f, joined, f->name, err);
            free(joined);
            if (rc != SL_OK) return SL_ERR;
            continue;
        }
        if (flag_set(f, value, f->name, err) != SL_OK) return SL_ERR;
    }
    return SL_OK;
}

void flags_print_help(FILE *out, const char *usage, const Flag *flags, int n) {
    static const char *hints[] = {
        [FLAG_INT] = "N", [FLAG_U64] = "N", [FLAG_FLOAT] = "X", [FLAG_SIZE] = "BYTES",
        [FLAG_STR] = "S", [FLAG_LIST] = "LIST", [FLAG_BOOL] = "", [FLAG_LOGLEVEL] = "LEVEL",
    };
    fprintf(out, "%s\n\nFlags (environment variables apply when the flag is not given):\n", usage);
    for (int i = 0; i < n; i++) {
        const Flag *f = &flags[i];
        char lhs[64];
        snprintf(lhs, sizeof lhs, "%s %s", f->name, hints[f->kind]);
        fprintf(out, "  %-30s %s [default: %s]", lhs, f->help, f->def);
        if (f->env) fprintf(out, " (env %s)", f->env);
        fputc('\n', out);
    }
    fprintf(out, "  %-30s %s\n", "-h, --help", "print this help and exit");
}

// ----------------------------------------------------------------------------
// Config

#define DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

void config_defaults(Config *c) {
    memset(c, 0, sizeof *c);
    c->model = xstrdup(DEFAULT_MODEL);
    c->threads = 0;
    c->max_model_len = 0;
    c->max_num_batched_tokens = 512;
    c->max_num_seqs = 64;
    c->block_size = 16;
    c->kv_cache_memory = 0;
    c->enable_prefix_caching = true;
    c->log_level = LOG_INFO;
    c->seed = 0;
    c->tensor_parallel_size = 1;
    c->load_format = xstrdup("auto");
    c->tokenizer = NULL;
    c->device = xstrdup("auto");
    c->cpu_activations = xstrdup("auto");
    c->gpu_memory_utilization = 0.9f;
    c->enforce_eager = false;
    c->structured_output_cache_size = 64;
    c->structured_output_compile_timeout = 10;
}

void config_free(Config *c) {
    free(c->model);
    free(c->tokenizer);
    free(c->load_format);
    free(c->device);
    free(c->cpu_activations);
    free(c->config);
    free(c->speculative_config);
    c->speculative_config = NULL;
    c->model = c->tokenizer = c->load_format = c->device = c->cpu_activations = c->config = NULL;
}

int config_flags(Config *c, Flag *out) {
    Flag rows[] = {
        {"--model", "SLUICE_MODEL", FLAG_STR, &c->model, 0, 0,
         "the model: a .gguf file or a Hugging Face directory (config.json + *.safetensors)", ""},
        {"--threads", "SLUICE_THREADS", FLAG_INT, &c->threads, 0, 1024,
         "compute threads (0 = one per CPU this process may use)", ""},
        {"--max-model-len", "SLUICE_MAX_MODEL_LEN", FLAG_INT, &c->max_model_len, 0, 1 << 24,
         "longest sequence (prompt + output) in tokens (0 = the model's context length)", ""},
        {"--max-num-batched-tokens", "SLUICE_MAX_NUM_BATCHED_TOKENS", FLAG_INT, &c->max_num_batched_tokens, 1,
         1 << 20, "tokens one forward step may carry (longer prompts are prefilled in chunks)", ""},
        {"--max-num-seqs", "SLUICE_MAX_NUM_SEQS", FLAG_INT, &c->max_num_seqs, 1, 1 << 16,
         "sequences one forward step may carry", ""},
        {"--block-size", "SLUICE_BLOCK_SIZE", FLAG_INT, &c->block_size, 1, 1024,
         "tokens per KV-cache block (a power of two)", ""},
        {"--kv-cache-memory", "SLUICE_KV_CACHE_MEMORY", FLAG_SIZE, &c->kv_cache_memory, 0, 0,
         "bytes for the KV cache, K/M/G = powers of 1024 (0 = automatic: min(2 GiB, RAM/4), RAM "
         "capped by a container's memory limit; pages are touched only as the cache fills)", ""},
        {"--long-prefill-token-threshold", "SLUICE_LONG_PREFILL_TOKEN_THRESHOLD", FLAG_INT,
         &c->long_prefill_token_threshold, 0, 1 << 24,
         "most prompt tokens one sequence computes in a step, so running decodes wait less (0 = no cap)", ""},
        {"--enable-prefix-caching", "SLUICE_ENABLE_PREFIX_CACHING", FLAG_BOOL, &c->enable_prefix_caching, 0, 0,
         "reuse the KV blocks of shared prompt prefixes (--enable-prefix-caching=false turns it off)", ""},
        {"--log-level", "SLUICE_LOG_LEVEL", FLAG_LOGLEVEL, &c->log_level, 0, 0,
         "debug, info, warning or error", ""},
        {"--seed", "SLUICE_SEED", FLAG_U64, &c->seed, 0, 0, "random seed for sampling", ""},
        {"--tensor-parallel-size", "SLUICE_TENSOR_PARALLEL_SIZE", FLAG_INT, &c->tensor_parallel_size, 1, 64,
         "ranks the model is split over (Megatron style; must divide the attention and KV heads)", ""},
        {"--load-format", "SLUICE_LOAD_FORMAT", FLAG_STR, &c->load_format, 0, 0,
         "auto (by the path), gguf, safetensors, or dummy (random weights at config.json's shapes)", ""},
        {"--tokenizer", "SLUICE_TOKENIZER", FLAG_STR, &c->tokenizer, 0, 0,
         "a .gguf or an HF tokenizer directory to take the tokenizer and chat template from", ""},
        {"--device", "SLUICE_DEVICE", FLAG_STR, &c->device, 0, 0,
         "auto (cuda when this build has CUDA and a GPU is visible, else cpu), cpu or cuda", ""},
        {"--cpu-activations", "SLUICE_CPU_ACTIVATIONS", FLAG_STR, &c->cpu_activations, 0, 0,
         "activation precision of the CPU's quantized matmuls: int16 (follows the exact model; types other than "
         "Q4_0/Q4_1/Q8_0 dequantized a row at a time), int8 (VNNI/AMX u8 x s8 dot products, faster, coarser: "
         "docs/architecture.md) or auto (int8 on a CPU with AMX; elsewhere int16 for Q4_0/Q4_1/Q8_0, int8 for the "
         "rest)", ""},
        {"--gpu-memory-utilization", "SLUICE_GPU_MEMORY_UTILIZATION", FLAG_FLOAT, &c->gpu_memory_utilization, 0, 1,
         "share of the GPU's memory for weights, activations and KV cache (0 < X <= 1)", ""},
        {"--enforce-eager", "SLUICE_ENFORCE_EAGER", FLAG_BOOL, &c->enforce_eager, 0, 0,
         "no CUDA graphs: run every GPU step eagerly", ""},
        {"--structured-output-cache-size", "SLUICE_STRUCTURED_OUTPUT_CACHE_SIZE", FLAG_INT,
         &c->structured_output_cache_size, 1, 1 << 20,
         "compiled grammars (JSON schemas, regexes, choices, EBNF) kept for reuse, least recently used dropped", ""},
        {"--structured-output-compile-timeout", "SLUICE_STRUCTURED_OUTPUT_COMPILE_TIMEOUT", FLAG_FLOAT,
         &c->structured_output_compile_timeout, 0.001, 3600,
         "seconds a request waits for its grammar to compile before it fails with 408", ""},
        {"--speculative-config", "SLUICE_SPECULATIVE_CONFIG", FLAG_STR, &c->speculative_config, 0, 0,
         "speculative decoding, vLLM's JSON: '{\"method\": \"ngram\", \"num_speculative_tokens\": 4, "
         "\"prompt_lookup_max\": 4, \"prompt_lookup_min\": 2}' (docs/speculative.md)", ""},
        {"--config", "SLUICE_CONFIG", FLAG_STR, &c->config, 0, 0,
         "a YAML file of flags by long name ('max-num-seqs: 8'); the command line wins over it, it over SLUICE_*", ""},
    };
    int n = (int)ARRAY_LEN(rows);
    CHECK(n <= CONFIG_MAX_FLAGS);
    for (int i = 0; i < n; i++) {
        out[i] = rows[i];
        flag_set_default(&out[i]);
    }
    return n;
}

int config_validate(const Config *c, char *err) {
    if ((c->block_size & (c->block_size - 1)) != 0)
        return seterr(err, "--block-size: %d is not a power of two", c->block_size);
    const struct {
        const char *name, *value;
        const char *const *choices;
    } choice[] = {{"--load-format", c->load_format, LOAD_FORMAT_NAMES}, {"--device", c->device, DEVICE_NAMES},
                   {"--cpu-activations", c->cpu_activations, CPU_ACTIVATIONS_NAMES}};
    for (size_t i = 0; i < ARRAY_LEN(choice); i++) {
        int k = config_choice(choice[i].value, choice[i].choices);
        if (k < 0) {
            char names[96];
            return seterr(err, "%s: expected %s, got '%s'", choice[i].name,
                          choices_text(choice[i].choices, names, sizeof names), choice[i].value);
        }
    }
    if (!(c->gpu_memory_utilization > 0))
        return seterr(err, "--gpu-memory-utilization: must be in (0, 1], got %g", c->gpu_memory_utilization);
    SpecConfig spec;
    return spec_config_parse(c->speculative_config, &spec, err);
}

int config_parse(Config *c, Flag *extra, int n_extra, int argc, char **argv, const char *usage,
                 char *err) {
    Flag flags[CONFIG_MAX_FLAGS + 32];
    CHECK(n_extra >= 0 && n_extra <= 32);
    int n = config_flags(c, flags);
    for (int i = 0; i < n_extra; i++) {
        flags[n] = extra[i];
        flag_set_default(&flags[n]);
        n++;
    }
    if (flags_apply_env(flags, n, err) != SL_OK) return SL_ERR;
    bool given[CONFIG_MAX_FLAGS + 32] = {0};
    int rc = flags_parse_args(flags, n, argc, argv, given, err);
    if (rc == CONFIG_HELP) {
        flags_print_help(stdout, usage, flags, n);
        return CONFIG_HELP;
    }
    if (rc != SL_OK) return SL_ERR;
    if (c->config && config_file_apply(c->config, flags, n, given, err) != SL_OK) return SL_ERR;
    return config_validate(c, err);
}

void config_log(const Config *c) {
    char kv[32];
    log_info("config: model=%s threads=%d max_model_len=%d max_num_batched_tokens=%d max_num_seqs=%d "
             "block_size=%d kv_cache_memory=%s enable_prefix_caching=%s log_level=%s seed=%llu "
             "tensor_parallel_size=%d load_format=%s tokenizer=%s device=%s cpu_activations=%s gpu_memory_utilization=%g "
             "enforce_eager=%s speculative_config=%s config=%s",
             c->model, c->threads, c->max_model_len, c->max_num_batched_tokens, c->max_num_seqs, c->block_size,
             c->kv_cache_memory ? fmt_bytes(c->kv_cache_memory, kv, sizeof kv) : "auto",
             c->enable_prefix_caching ? "true" : "false", LOG_LEVEL_NAMES[c->log_level],
             (unsigned long long)c->seed, c->tensor_parallel_size, c->load_format,
             c->tokenizer ? c->tokenizer : "(the model's)", c->device, c->cpu_activations, c->gpu_memory_utilization,
             c->enforce_eager ? "true" : "false",
             c->speculative_config ? c->speculative_config : "(none)", c->config ? c->config : "(none)");
}

int config_threads(const Config *c) {
    if (c->threads > 0) return c->threads;
    // the affinity mask, not the machine's core count: containers and taskset narrow it; and a
    // container's CPU quota (docker --cpus, a Kubernetes CPU limit) caps it without narrowing it
    cpu_set_t set;
    long n = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) n = CPU_COUNT(&set);
    else n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    int quota = cgroup_cpu_limit("/sys/fs/cgroup");
    return quota > 0 && quota < n ? quota : (int)n;
}
