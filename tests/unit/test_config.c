// test_config.c: Config defaults, flag parsing (both spellings, every kind, every error), the
// SLUICE_* environment and its precedence, --help, and the small helpers.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "config/config.h"
#include "engine/engine.h" // engine_config_from
#include "tests/unit/test.h"

// Parses a NULL-terminated argument list (after the program name) into a fresh default Config.
static int parse(Config *c, const char **args, char *err) {
    char *argv[32] = {"prog"};
    int argc = 1;
    while (args[argc - 1]) {
        argv[argc] = (char *)args[argc - 1];
        argc++;
    }
    config_defaults(c);
    return config_parse(c, NULL, 0, argc, argv, "usage", err);
}

static void test_defaults(void) {
    Config c;
    config_defaults(&c);
    EXPECT_STR_EQ(c.model, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    EXPECT_EQ_INT(c.threads, 0);
    EXPECT_EQ_INT(c.max_model_len, 0);
    EXPECT_EQ_INT(c.max_num_batched_tokens, 512);
    EXPECT_EQ_INT(c.max_num_seqs, 64);
    EXPECT_EQ_INT(c.block_size, 16);
    EXPECT_EQ_INT(c.kv_cache_memory, 0);
    EXPECT(c.enable_prefix_caching);
    EXPECT_EQ_INT(c.log_level, LOG_INFO);
    EXPECT_EQ_INT(c.seed, 0);
    EXPECT_STR_EQ(c.cpu_activations, "auto");
    EXPECT_EQ_INT(engine_config_from(&c).cpu_activations, K_ACT_AUTO);
    char err[ERR_MAX];
    EXPECT_EQ_INT(config_validate(&c, err), SL_OK);
    config_free(&c);
    config_free(&c); // twice is fine
}

static void test_flags_valid(void) {
    char err[ERR_MAX] = "";
    Config c;
    const char *a1[] = {"--model", "x.gguf", "--threads", "3", "--max-model-len=4096", "--block-size", "32",
                        "--kv-cache-memory", "512M", "--log-level", "WARNING", "--seed", "18446744073709551615",
                        "--max-num-batched-tokens", "64", "--max-num-seqs=8", "--model", "y.gguf",
                        "--enable-prefix-caching=no", "--cpu-activations", "int8", NULL};
    EXPECT_EQ_INT(parse(&c, a1, err), SL_OK);
    EXPECT_STR_EQ(c.model, "y.gguf"); // the last one wins (and the first is freed: ASan checks)
    EXPECT_EQ_INT(c.threads, 3);
    EXPECT_EQ_INT(c.max_model_len, 4096);
    EXPECT_EQ_INT(c.block_size, 32);
    EXPECT(c.kv_cache_memory == (size_t)512 << 20);
    EXPECT_EQ_INT(c.log_level, LOG_WARN);
    EXPECT(c.seed == UINT64_MAX);
    EXPECT_EQ_INT(c.max_num_batched_tokens, 64);
    EXPECT_EQ_INT(c.max_num_seqs, 8);
    EXPECT(!c.enable_prefix_caching);
    EXPECT_STR_EQ(c.cpu_activations, "int8");
    EXPECT_EQ_INT(engine_config_from(&c).cpu_activations, K_ACT_INT8);
    config_free(&c);
    const char *a2[] = {"--enable-prefix-caching", NULL}; // a bare boolean flag sets it
    config_defaults(&c);
    c.enable_prefix_caching = false;
    Flag flags[CONFIG_MAX_FLAGS];
    int n = config_flags(&c, flags);
    char *argv2[] = {"prog", (char *)a2[0]};
    EXPECT_EQ_INT(flags_parse_args(flags, n, 2, argv2, NULL, err), SL_OK);
    EXPECT(c.enable_prefix_caching);
    config_free(&c);

    // sizes: a number and an optional unit, powers of 1024
    static const struct {
        const char *text;
        size_t bytes;
    } sizes[] = {
        {"1048576", 1048576},         {"4K", 4096},          {"1.5GiB", (size_t)3 << 29},
        {"2G", (size_t)2 << 30},      {"2gb", (size_t)2 << 30}, {"512 MiB", (size_t)512 << 20},
        {"1T", (size_t)1 << 40},      {"0", 0},              {"100B", 100},
    };
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        const char *a[] = {"--kv-cache-memory", sizes[i].text, NULL};
        EXPECT_EQ_INT(parse(&c, a, err), SL_OK);
        EXPECT(c.kv_cache_memory == sizes[i].bytes, "%s -> %zu", sizes[i].text, c.kv_cache_memory);
        config_free(&c);
    }
}

// Each bad argument list and the text its one-line error must contain.
static void test_flags_invalid(void) {
    static const struct {
        const char *args[4];
        const char *want;
    } cases[] = {
        {{"--bogus", "1"}, "unknown flag '--bogus'"},
        {{"--threads=1", "extra"}, "unexpected argument 'extra'"},
        {{"-t", "2"}, "unexpected argument '-t'"},
        {{"--threads"}, "--threads: missing value"},
        {{"--threads", "two"}, "--threads: expected an integer, got 'two'"},
        {{"--threads", "-1"}, "--threads: -1 is out of range [0, 1024]"},
        {{"--threads", "3x"}, "--threads: expected an integer, got '3x'"},
        {{"--threads", "99999999999999999999"}, "--threads: expected an integer"},
        {{"--block-size", "0"}, "--block-size: 0 is out of range"},
        {{"--block-size", "24"}, "--block-size: 24 is not a power of two"},
        {{"--max-model-len="}, "--max-model-len: expected an integer, got ''"},
        {{"--kv-cache-memory", "12Q"}, "--kv-cache-memory: expected a size"},
        {{"--kv-cache-memory", "-1G"}, "--kv-cache-memory: expected a size"},
        {{"--kv-cache-memory", "G"}, "--kv-cache-memory: expected a size"},
        {{"--log-level", "loud"}, "--log-level: expected debug, info, warning or error, got 'loud'"},
        {{"--seed", "-5"}, "--seed: expected a non-negative integer, got '-5'"},
        {{"--model", ""}, "--model: expected a value"},
        {{"--max-num-seqs", "0"}, "--max-num-seqs: 0 is out of range"},
        {{"--enable-prefix-caching=maybe"}, "--enable-prefix-caching: expected true or false, got 'maybe'"},
        {{"--cpu-activations", "int4"}, "--cpu-activations: expected int16, int8 or auto, got 'int4'"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const char *a[5] = {0};
        memcpy(a, cases[i].args, sizeof cases[i].args);
        char err[ERR_MAX] = "";
        Config c;
        EXPECT_EQ_INT(parse(&c, a, err), SL_ERR);
        EXPECT(strstr(err, cases[i].want) != NULL, "case %zu: got '%s', want '%s'", i, err, cases[i].want);
        EXPECT(strchr(err, '\n') == NULL);
        config_free(&c);
    }
}

static void test_env(void) {
    char err[ERR_MAX] = "";
    Config c;
    setenv("SLUICE_THREADS", "5", 1);
    setenv("SLUICE_MODEL", "env.gguf", 1);
    setenv("SLUICE_KV_CACHE_MEMORY", "1G", 1);
    const char *none[] = {NULL};
    EXPECT_EQ_INT(parse(&c, none, err), SL_OK);
    EXPECT_EQ_INT(c.threads, 5);
    EXPECT_STR_EQ(c.model, "env.gguf");
    EXPECT(c.kv_cache_memory == (size_t)1 << 30);
    config_free(&c);
    // a flag beats its variable
    const char *a[] = {"--threads", "2", "--model", "flag.gguf", NULL};
    EXPECT_EQ_INT(parse(&c, a, err), SL_OK);
    EXPECT_EQ_INT(c.threads, 2);
    EXPECT_STR_EQ(c.model, "flag.gguf");
    config_free(&c);
    // a bad variable is named in the error, even when the flag would override it
    setenv("SLUICE_THREADS", "lots", 1);
    EXPECT_EQ_INT(parse(&c, a, err), SL_ERR);
    EXPECT(strstr(err, "SLUICE_THREADS: expected an integer, got 'lots'") != NULL, "%s", err);
    config_free(&c);
    unsetenv("SLUICE_THREADS");
    unsetenv("SLUICE_MODEL");
    unsetenv("SLUICE_KV_CACHE_MEMORY");
    EXPECT_EQ_INT(parse(&c, none, err), SL_OK);
    EXPECT_EQ_INT(c.threads, 0);
    config_free(&c);
}

// A program's own flags parse alongside the Config's (sluice-run's pattern).
static void test_extra_flags(void) {
    char *prompt = NULL;
    bool chat = false, verbose = true;
    float temp = 1.0f;
    Flag extra[] = {
        {"--prompt", NULL, FLAG_STR, &prompt, 0, 0, "the prompt", ""},
        {"--chat", NULL, FLAG_BOOL, &chat, 0, 0, "chat", ""},
        {"--verbose", "SLUICE_TEST_VERBOSE", FLAG_BOOL, &verbose, 0, 0, "verbose", ""},
        {"--temperature", NULL, FLAG_FLOAT, &temp, 0, 2, "temperature", ""},
    };
    char *argv[] = {"prog", "--chat", "--prompt", "hi there", "--temperature=0.5", "--verbose=false", "--seed", "9"};
    Config c;
    config_defaults(&c);
    char err[ERR_MAX] = "";
    EXPECT_EQ_INT(config_parse(&c, extra, 4, 8, argv, "usage", err), SL_OK);
    EXPECT(chat);
    EXPECT(!verbose);
    EXPECT_STR_EQ(prompt, "hi there");
    EXPECT_NEAR(temp, 0.5, 1e-6);
    EXPECT(c.seed == 9);
    config_free(&c);

    char *bad[] = {"prog", "--temperature", "2.5"};
    config_defaults(&c);
    EXPECT_EQ_INT(config_parse(&c, extra, 4, 3, bad, "usage", err), SL_ERR);
    EXPECT(strstr(err, "--temperature: 2.5 is out of range [0, 2]") != NULL, "%s", err);
    config_free(&c);
    setenv("SLUICE_TEST_VERBOSE", "maybe", 1);
    char *none[] = {"prog"};
    config_defaults(&c);
    EXPECT_EQ_INT(config_parse(&c, extra, 4, 1, none, "usage", err), SL_ERR);
    EXPECT(strstr(err, "SLUICE_TEST_VERBOSE: expected true or false, got 'maybe'") != NULL, "%s", err);
    unsetenv("SLUICE_TEST_VERBOSE");
    config_free(&c);
    free(prompt);
}

// A list flag takes the arguments up to the next flag (vLLM's nargs="+"); = takes one text;
// a repeated flag replaces the earlier value, as argparse's default action does.
static void test_list_flag(void) {
    char *names = NULL;
    Flag extra[] = {{"--served-model-name", NULL, FLAG_LIST, &names, 0, 0, "names", ""}};
    char *argv[] = {"prog", "--served-model-name", "a", "b", "c", "--seed", "3"};
    Config c;
    config_defaults(&c);
    char err[ERR_MAX] = "";
    EXPECT_EQ_INT(config_parse(&c, extra, 1, 7, argv, "usage", err), SL_OK);
    EXPECT_STR_EQ(names, "a b c");
    EXPECT(c.seed == 3);
    config_free(&c);
    char *again[] = {"prog", "--served-model-name", "a", "b", "--served-model-name=x,y"};
    config_defaults(&c);
    EXPECT_EQ_INT(config_parse(&c, extra, 1, 5, again, "usage", err), SL_OK);
    EXPECT_STR_EQ(names, "x,y");
    config_free(&c);
    char *last[] = {"prog", "--served-model-name", "only"};
    config_defaults(&c);
    EXPECT_EQ_INT(config_parse(&c, extra, 1, 3, last, "usage", err), SL_OK);
    EXPECT_STR_EQ(names, "only");
    config_free(&c);
    free(names);
}

static void test_help(void) {
    Config c;
    config_defaults(&c);
    Flag flags[CONFIG_MAX_FLAGS];
    int n = config_flags(&c, flags);
    char *h1[] = {"prog", "--threads", "x", "--help"}; // --help wins over a bad value
    char *h2[] = {"prog", "-h"};
    char err[ERR_MAX];
    EXPECT_EQ_INT(flags_parse_args(flags, n, 4, h1, NULL, err), CONFIG_HELP);
    EXPECT_EQ_INT(flags_parse_args(flags, n, 2, h2, NULL, err), CONFIG_HELP);

    FILE *f = tmpfile();
    ASSERT(f != NULL);
    flags_print_help(f, "usage: prog", flags, n);
    long len = ftell(f);
    rewind(f);
    char *text = xcalloc(len + 1, 1);
    EXPECT_EQ_INT(fread(text, 1, len, f), len);
    fclose(f);
    EXPECT(strncmp(text, "usage: prog\n", 12) == 0);
    // every flag, its default and its variable
    for (int i = 0; i < n; i++) {
        char *line = strstr(text, flags[i].name);
        EXPECT(line != NULL, "%s", flags[i].name);
        if (!line) continue;
        char *eol = strchr(line, '\n');
        char want[96];
        snprintf(want, sizeof want, "[default: %s]", flags[i].def);
        char *d = strstr(line, want);
        EXPECT(d != NULL && d < eol, "%s: %s", flags[i].name, want);
        EXPECT(strstr(line, flags[i].env) != NULL && strstr(line, flags[i].env) < eol, "%s", flags[i].env);
    }
    EXPECT(strstr(text, "[default: 16]") != NULL);
    EXPECT(strstr(text, "[default: info]") != NULL);
    EXPECT(strstr(text, "--help") != NULL);
    free(text);
    config_free(&c);
}

static void test_helpers(void) {
    char buf[32];
    EXPECT_STR_EQ(fmt_bytes(0, buf, sizeof buf), "0 B");
    EXPECT_STR_EQ(fmt_bytes(1023, buf, sizeof buf), "1023 B");
    EXPECT_STR_EQ(fmt_bytes(1536, buf, sizeof buf), "1.50 KiB");
    EXPECT_STR_EQ(fmt_bytes((size_t)3 << 30, buf, sizeof buf), "3.00 GiB");
    Config c;
    config_defaults(&c);
    c.threads = 7;
    EXPECT_EQ_INT(config_threads(&c), 7);
    c.threads = 0;
    EXPECT(config_threads(&c) >= 1);
    config_free(&c);
}

// cgroup v2 limits read from a fake hierarchy root (this process's own cgroup path is absent
// under it, so the root's files are the ones read, as in a container's namespaced view).
static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CHECK(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

static void test_cgroup_limits(void) {
    char dir[] = "/tmp/sluice-cgroup-XXXXXX";
    CHECK(mkdtemp(dir));
    EXPECT_EQ_INT(cgroup_cpu_limit(dir), 0); // no files: no limit
    EXPECT(cgroup_memory_limit(dir) == 0);
    static const struct { const char *cpu_max; int cpus; } cpu[] = {
        {"max 100000\n", 0}, {"250000 100000\n", 3}, {"50000 100000\n", 1}, {"100000 100000\n", 1},
        {"400000 100000", 4}, {"garbage\n", 0}, {"-1 100000\n", 0}, {"100000 0\n", 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(cpu); i++) {
        write_file(dir, "cpu.max", cpu[i].cpu_max);
        EXPECT(cgroup_cpu_limit(dir) == cpu[i].cpus, "cpu.max '%s' -> %d, want %d", cpu[i].cpu_max,
               cgroup_cpu_limit(dir), cpu[i].cpus);
    }
    static const struct { const char *mem_max; size_t bytes; } mem[] = {
        {"max\n", 0}, {"1073741824\n", (size_t)1 << 30}, {"536870912", (size_t)1 << 29}, {"x\n", 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(mem); i++) {
        write_file(dir, "memory.max", mem[i].mem_max);
        EXPECT(cgroup_memory_limit(dir) == mem[i].bytes, "memory.max '%s' -> %zu", mem[i].mem_max,
               cgroup_memory_limit(dir));
    }
    char path[512];
    snprintf(path, sizeof path, "%s/cpu.max", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/memory.max", dir);
    unlink(path);
    rmdir(dir);
}

// ---- --config FILE

// Writes text to a fresh temporary file; its path goes into path (PATH_MAX bytes).
static void write_yaml(char *path, const char *text) {
    snprintf(path, 64, "/tmp/sluice-test-config-XXXXXX");
    int fd = mkstemp(path);
    ASSERT(fd >= 0, "mkstemp");
    ASSERT(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write");
    close(fd);
}

// Parses "--config FILE(text)" plus args (NULL-terminated) with one list flag of the program's own.
static int parse_with_file(Config *c, const char *text, const char **args, char **names, char *path, char *err) {
    write_yaml(path, text);
    char *argv[32] = {"prog", "--config", path};
    int argc = 3;
    for (int i = 0; args[i]; i++) argv[argc++] = (char *)args[i];
    Flag extra[] = {{"--served-model-name", NULL, FLAG_LIST, names, 0, 0, "names", ""}};
    config_defaults(c);
    int rc = config_parse(c, extra, 1, argc, argv, "usage", err);
    unlink(path);
    return rc;
}

// Lowest first: defaults, SLUICE_*, the file, the command line; keys as vLLM writes them.
static void test_config_file(void) {
    char err[ERR_MAX] = "", path[64];
    char *names = NULL;
    Config c;
    setenv("SLUICE_MAX_NUM_SEQS", "5", 1);
    setenv("SLUICE_THREADS", "7", 1);
    const char *yaml = "# a comment\n"
                       "max-num-seqs: 8\n"
                       "max_model_len: 4096          # vLLM reads underscores as dashes\n"
                       "kv-cache-memory: 512M\n"
                       "enable-prefix-caching: false\n"
                       "model: 'file model.gguf'\n"
                       "log-level: warning\n"
                       "served-model-name: [alpha, \"be\\\"ta\"]\n"
                       "seed: 42\n";
    const char *none[] = {NULL};
    EXPECT_EQ_INT(parse_with_file(&c, yaml, none, &names, path, err), SL_OK);
    EXPECT_EQ_INT(c.max_num_seqs, 8);  // the file over SLUICE_MAX_NUM_SEQS
    EXPECT_EQ_INT(c.threads, 7);       // what the file leaves out: the variable
    EXPECT_EQ_INT(c.max_model_len, 4096);
    EXPECT(c.kv_cache_memory == (size_t)512 << 20);
    EXPECT(!c.enable_prefix_caching);
    EXPECT_STR_EQ(c.model, "file model.gguf");
    EXPECT_EQ_INT(c.log_level, LOG_WARN);
    EXPECT_STR_EQ(names, "[\"alpha\",\"be\\\"ta\"]"); // a YAML list becomes a JSON list for the flag
    EXPECT(c.seed == 42);
    EXPECT_STR_EQ(c.config, path);
    config_free(&c);
    // the command line over the file, in either spelling, wherever --config stands
    const char *cli[] = {"--max-num-seqs", "4", "--seed=1", "--served-model-name", "cli", NULL};
    EXPECT_EQ_INT(parse_with_file(&c, yaml, cli, &names, path, err), SL_OK);
    EXPECT_EQ_INT(c.max_num_seqs, 4);
    EXPECT(c.seed == 1);
    EXPECT_STR_EQ(names, "cli");
    EXPECT_EQ_INT(c.max_model_len, 4096);
    config_free(&c);
    unsetenv("SLUICE_MAX_NUM_SEQS");
    unsetenv("SLUICE_THREADS");
    // SLUICE_CONFIG names the file as well; an empty file sets nothing
    write_yaml(path, "");
    setenv("SLUICE_CONFIG", path, 1);
    EXPECT_EQ_INT(parse(&c, none, err), SL_OK);
    EXPECT_EQ_INT(c.max_num_seqs, 64);
    EXPECT_STR_EQ(c.config, path);
    config_free(&c);
    unsetenv("SLUICE_CONFIG");
    unlink(path);
    free(names);
}

// Every problem names the file and the line (config_parse fails: the programs exit with status 2).
static void test_config_file_errors(void) {
    static const struct {
        const char *yaml;
        const char *arg; // a flag on the command line too (NULL: none)
        int line;
        const char *want;
    } cases[] = {
        {"max-num-seqs: 8\n\nmax-num-seqz: 2\n", NULL, 3, "unknown key 'max-num-seqz'"},
        {"threads: lots\n", NULL, 1, "--threads: expected an integer, got 'lots'"},
        {"max-num-seqs: 0\n", NULL, 1, "--max-num-seqs: 0 is out of range [1, 65536]"},
        {"threads: lots\n", "--threads=2", 1, "--threads: expected an integer"}, // checked though overridden
        {"log-level: loud\n", NULL, 1, "--log-level: expected debug, info"},
        {"enable-prefix-caching: maybe\n", NULL, 1, "--enable-prefix-caching: expected true or false"},
        {"seed: 1\nseed: 2\n", NULL, 2, "--seed is given twice"},
        {"model:\n", NULL, 1, "--model: no value"},
        {"threads: [1, 2]\n", NULL, 1, "--threads: expected a single value, got a list"},
        {"model:\n  path: x\n", NULL, 2, "--model: expected a single value, got a mapping"},
        {"served-model-name: [a, [b]]\n", NULL, 1, "--served-model-name: expected a list of names"},
        {"config: other.yaml\n", NULL, 1, "a config file cannot name another one"},
        {"- max-num-seqs: 8\n", NULL, 1, "expected a mapping of flag names to values"},
        {"seed: 1\nthreads: [1\n", NULL, 3, "not valid YAML"},
        {"block-size: 24\n", NULL, 0, "--block-size: 24 is not a power of two"}, // config_validate, after the file
    };
    char *names = NULL;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char err[ERR_MAX] = "", path[64], want[ERR_MAX + 80];
        const char *args[] = {cases[i].arg, NULL};
        Config c;
        EXPECT_EQ_INT(parse_with_file(&c, cases[i].yaml, args, &names, path, err), SL_ERR);
        if (cases[i].line) snprintf(want, sizeof want, "%s:%d: %s", path, cases[i].line, cases[i].want);
        else snprintf(want, sizeof want, "%s", cases[i].want);
        EXPECT(strstr(err, want) != NULL, "case %zu: got '%s', want '%s'", i, err, want);
        config_free(&c);
    }
    Config c;
    const char *missing[] = {"--config", "/nonexistent/sluice.yaml", NULL};
    char err[ERR_MAX] = "";
    EXPECT_EQ_INT(parse(&c, missing, err), SL_ERR);
    EXPECT(strstr(err, "--config /nonexistent/sluice.yaml: No such file or directory") != NULL, "%s", err);
    config_free(&c);
    free(names);
}

int main(void) {
    TEST_RUN(test_defaults);
    TEST_RUN(test_flags_valid);
    TEST_RUN(test_flags_invalid);
    TEST_RUN(test_env);
    TEST_RUN(test_extra_flags);
    TEST_RUN(test_list_flag);
    TEST_RUN(test_help);
    TEST_RUN(test_helpers);
    TEST_RUN(test_cgroup_limits);
    TEST_RUN(test_config_file);
    TEST_RUN(test_config_file_errors);
    return test_summary();
}
