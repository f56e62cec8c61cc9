// config.h: the daemon's settings (the Config struct), their defaults, and how they are set.
//
// Precedence, lowest first: built-in defaults, SLUICE_* environment variables, the --config
// file (config_file.c), command-line flags. Flag names follow vLLM's where one exists (DESIGN.md §8). Every setting is one row of
// a flag table (Flag), so parsing, the environment, validation messages and --help come from
// one place; a program with flags of its own (sluice-run) appends rows to the same table.
//
// A bad flag or value is a user error: the parser returns SL_ERR with a one-line message that
// names the flag (the programs print it and exit with status 2).
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/common.h"

#define CONFIG_HELP 1 // config_parse(): --help was given and printed; exit 0

typedef struct {
    char *model;                // --model: a GGUF file, a Hugging Face model directory, or (with
                                //   --load-format dummy) a config.json or its directory (owned)
    int threads;                // --threads: compute threads; 0 = one per online core
    int max_model_len;          // --max-model-len: context limit; 0 = the model's own
    int max_num_batched_tokens; // --max-num-batched-tokens: tokens one forward step may carry
    int max_num_seqs;           // --max-num-seqs: sequences one step may carry
    int block_size;             // --block-size: tokens per KV-cache block
    size_t kv_cache_memory;     // --kv-cache-memory: bytes of the KV-cache slab; 0 = automatic
    bool enable_prefix_caching; // --enable-prefix-caching: reuse cached KV blocks of shared prefixes
    int long_prefill_token_threshold; // --long-prefill-token-threshold: prompt chunk cap (0 = none)
    LogLevel log_level;         // --log-level
    uint64_t seed;              // --seed: sampler seed for requests that give none
    int tensor_parallel_size;   // --tensor-parallel-size: ranks the model is split over (1)
    char *load_format;          // --load-format: one of LOAD_FORMAT_NAMES (owned)
    char *tokenizer;            // --tokenizer: a .gguf or an HF tokenizer directory; NULL = the model's (owned)
    char *device;               // --device: one of DEVICE_NAMES (owned)
    char *cpu_activations;      // --cpu-activations: one of CPU_ACTIVATIONS_NAMES (owned)
    float gpu_memory_utilization; // --gpu-memory-utilization: share of the GPU's memory, in (0, 1]
    bool enforce_eager;         // --enforce-eager: no CUDA graphs
    int structured_output_cache_size; // --structured-output-cache-size: compiled grammars kept (LRU)
    float structured_output_compile_timeout; // --structured-output-compile-timeout: seconds
    char *speculative_config;   // --speculative-config: vLLM's JSON object (spec_config.h); NULL = off (owned)
    char *config;               // --config: the YAML file the other settings were read from (owned)
} Config;

// The values --load-format (engine/model/weights.h's LoadFormat names) and --device take; config_validate
// checks them.
extern const char *const LOAD_FORMAT_NAMES[]; // "auto", "gguf", "safetensors", "dummy", NULL
extern const char *const DEVICE_NAMES[];      // "auto", "cpu", "cuda", NULL
extern const char *const CPU_ACTIVATIONS_NAMES[]; // "int16", "int8", NULL (kernels.h's KActivations order)

// ---- flag tables

typedef enum {
    FLAG_INT,    // int, within [min, max]
    FLAG_U64,    // uint64_t
    FLAG_FLOAT,  // float, within [min, max]
    FLAG_SIZE,   // size_t bytes: "1073741824", "512M", "1.5GiB", "2G" (K/M/G/T are powers of 1024)
    FLAG_STR,    // char * (owned: the old value is freed on assignment)
    FLAG_LIST,   // char *, like FLAG_STR, but on the command line it also takes the arguments that
                 //   follow up to the next --flag, joined by spaces (vLLM's nargs="+": --name a b);
                 //   the program splits the text (JSON list, or comma/space-separated)
    FLAG_BOOL,   // bool: "--flag" sets true; the environment takes 1/0/true/false/yes/no
    FLAG_LOGLEVEL, // LogLevel: debug, info, warning (or warn), error
} FlagKind;

typedef struct {
    const char *name;  // "--max-model-len"
    const char *env;   // "SLUICE_MAX_MODEL_LEN", or NULL when there is none
    FlagKind kind;
    void *dst;         // the field this flag sets
    double min, max;   // FLAG_INT / FLAG_FLOAT bounds
    const char *help;  // one line
    char def[40];      // the default, as shown by --help (filled by flag_set_default)
} Flag;

// Records the current value of f->dst as the default --help shows; call when building a table.
void flag_set_default(Flag *f);
// Sets the flag from text; SL_ERR with "<name>: <problem>" when the value is malformed.
int flag_set(Flag *f, const char *value, const char *source, char *err);

// Applies every SLUICE_* variable that is set.
int flags_apply_env(Flag *flags, int n, char *err);
// Parses argv[1..argc) as "--name value", "--name=value", for booleans "--name", and for lists
// "--name v1 v2 ..." (a repeated flag replaces the earlier value, as argparse does). given (may
// be NULL; n entries) marks the flags the arguments set.
// Returns SL_OK, CONFIG_HELP when -h/--help is among them, or SL_ERR naming the bad argument.
int flags_parse_args(Flag *flags, int n, int argc, char **argv, bool *given, char *err);
// Applies a YAML config file (--config): keys are the flags' long names without dashes, values
// are checked as on the command line; the flags marked in given (set on the command line) keep
// their values. SL_ERR with "FILE:LINE: ..." for an unknown key, a bad value or malformed YAML.
int config_file_apply(const char *path, Flag *flags, int n, const bool *given, char *err);
// Prints usage, then one line per flag: name, value hint, help, default and env variable.
void flags_print_help(FILE *f, const char *usage, const Flag *flags, int n);

// ---- Config

void config_defaults(Config *c);
void config_free(Config *c);
// Fills out[0..) with the Config's flag rows bound to c (defaults recorded); returns the count.
#define CONFIG_MAX_FLAGS 48
int config_flags(Config *c, Flag *out);
// Cross-field checks beyond each flag's own range (e.g. block size a power of two).
int config_validate(const Config *c, char *err);
// The whole sequence: defaults must already be in c (config_defaults), then environment, then
// argv, then the --config file for what argv did not set, then validation. extra (may be NULL) are the program's own flags, parsed alongside.
// On --help prints the help to stdout and returns CONFIG_HELP.
int config_parse(Config *c, Flag *extra, int n_extra, int argc, char **argv, const char *usage,
                 char *err);
// One log line with every setting, at info level.
void config_log(const Config *c);
// The index of value in a NULL-terminated list of names (LOAD_FORMAT_NAMES, DEVICE_NAMES), -1 if absent.
int config_choice(const char *value, const char *const *choices);
// The thread count to use: --threads, or when 0 the CPUs this process may run on.
int config_threads(const Config *c);

// "1.50 GiB" style formatting of a byte count into buf (returns buf).
const char *fmt_bytes(size_t bytes, char *buf, size_t cap);
