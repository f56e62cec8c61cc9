// engine.h: the engine the HTTP server serves requests through (DESIGN.md §1).
//
// One engine thread owns the model, the KV cache, the scheduler and every sequence. Other threads
// talk to it through two kinds of shared structure only:
//   - the inbox (new requests and aborts), behind the engine's mutex: engine_submit() and
//     engine_abort() return at once;
//   - each request's outbox (its new tokens, text, logprobs and finish state), behind the
//     request's own mutex: the engine appends after every step, the caller drains it with
//     engine_request_take(), woken by the notify callback or engine_request_wait().
//
// The engine thread loop: take new requests and aborts from the inbox (an abort frees the
// request's KV blocks before the next step is planned) -> sched_schedule -> runner (Batch, KV
// copies, model_forward) -> sampler -> stop checks -> sched_update -> detokenized text deltas into
// the outboxes -> notify. It sleeps on a condition variable while there is no work.
//
// A request is reference counted: one reference for the engine until the request finishes, one
// for the caller until engine_request_release(). Outputs stay readable after the request ends
// and after engine_destroy(); releasing an unfinished request aborts it.
//
// The model runs on the CPU, whole or split over --tensor-parallel-size ranks (each a thread
// with its own share of the weights and of the KV cache: engine/tp.h), or on one CUDA device
// (engine/gpu_runner.h). The kernels' scratch is per thread (k_init on each thread that runs a
// forward), so several engines may live in one process.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "config/spec_config.h"
#include "engine/sampling/grammar.h"
#include "engine/sampling/sampler.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/model/weights.h"
#include "kernels/kernels.h"

// ----------------------------------------------------------------------------
// configuration (flags follow vLLM's names; config/ maps them onto this struct)

typedef enum { ENGINE_DEVICE_AUTO = 0, ENGINE_DEVICE_CPU, ENGINE_DEVICE_CUDA } EngineDevice;

typedef struct {
    int max_num_batched_tokens; // --max-num-batched-tokens: tokens one step carries (512)
    int max_num_seqs;           // --max-num-seqs: sequences running at once (64)
    int block_size;             // --block-size: tokens per KV block (16)
    bool enable_prefix_caching; // --enable-prefix-caching (on)
    int long_prefill_token_threshold; // --long-prefill-token-threshold: prompt chunk cap (0 = none)
    int max_model_len;          // --max-model-len: prompt + output tokens; 0 = the model's context
    size_t kv_cache_memory;     // --kv-cache-memory: bytes of KV cache; 0 = min(2 GiB, RAM / 4), RAM capped by the cgroup limit
    int threads;                // --threads: compute threads; 0 = one per online core
    KVType kv_dtype;            // KV-cache element type (KV_F16: half the memory, faster on CPU)
    uint64_t seed;              // --seed: the base of per-request seeds when a request has none;
                                // 0 = a fresh random seed per request (OpenAI's behaviour)
    int tensor_parallel_size;   // --tensor-parallel-size: CPU ranks (threads) the model is split over (1)
    LoadFormat load_format;     // --load-format (LOAD_AUTO: by the path)
    const char *tokenizer;      // --tokenizer: a .gguf or an HF tokenizer directory; NULL = the model's
                                // own (read during engine_create only)
    EngineDevice device;        // --device
    KActivations cpu_activations; // --cpu-activations: the CPU matmuls' activation precision (auto)
    double gpu_memory_utilization; // --gpu-memory-utilization (0.9)
    bool enforce_eager;         // --enforce-eager: no CUDA graphs
    int structured_output_cache_size;        // --structured-output-cache-size: compiled grammars kept (64)
    double structured_output_compile_timeout; // --structured-output-compile-timeout: seconds a request
                                              // waits for its grammar to compile (10)
    SpecConfig spec;            // --speculative-config (method SPEC_NONE: off)
} EngineConfig;

void engine_config_defaults(EngineConfig *c);
// The engine's settings from the parsed flags (config/config.h), as both programs (sluice and
// sluice-run) map them. c must have passed config_parse (its names are valid).
EngineConfig engine_config_from(const Config *c);

typedef struct Engine Engine;
typedef struct EngineRequest EngineRequest;

// Opens the model (a .gguf file, an HF directory, or a config.json with --load-format dummy),
// checks the tensor-parallel size, loads the tokenizer and chat template (engine_text_open),
// loads the weights (every rank's share, or onto the GPU), sizes the KV cache, logs the memory
// plan and the start-up times, and starts the engine thread. SL_ERR + a one-line err for a bad
// file or configuration; when a setting is what cannot work the message names its flag ("--...")
// (e.g. the KV cache cannot hold one max_model_len sequence: it suggests a smaller
// --max-model-len; a tensor-parallel size that does not divide the heads: it lists the valid ones).
int engine_create(Engine **out, const EngineConfig *cfg, const char *model_path, char *err);
// Stops the engine thread; every unfinished request ends with ENGINE_FINISH_ABORT. Requests the
// caller still holds stay readable until released.
void engine_destroy(Engine *e);

typedef struct {
    char arch[32];              // "llama", "qwen2", "qwen3"
    int vocab;                  // ids a prompt may hold and sampling may pick: the tokenizer's
                                // vocabulary (the model's rows beyond it are never sampled)
    int model_vocab;            // rows of the model's LM head (>= vocab; padded vocabularies)
    int context_len;            // the model's own limit
    int max_model_len;          // what the engine enforces
    int max_num_seqs, max_num_batched_tokens, block_size;
    int num_blocks;             // KV blocks in the pool
    size_t kv_cache_bytes;      // all ranks together
    int threads;                // compute threads, all ranks together
    int tensor_parallel_size;
    EngineDevice device;        // what ran: ENGINE_DEVICE_CPU or ENGINE_DEVICE_CUDA
    LoadFormat load_format;     // what was opened
    double load_s, alloc_s, graph_s; // start-up: weights, KV cache + buffers + rank threads, CUDA graphs
    int spec_k;                 // speculative proposals per step at most; 0 = speculation off
} EngineInfo;

const EngineInfo *engine_info(const Engine *e);
// The model's tokenizer (read-only: safe to use from any thread while the engine lives).
const Tokenizer *engine_tokenizer(const Engine *e);
// The model's chat template (Jinja source), NULL when it has none; and where it came from
// ("tokenizer.chat_template of m.gguf", "dir/tokenizer_config.json"), for the log.
const char *engine_chat_template(const Engine *e);
const char *engine_chat_template_origin(const Engine *e);
const char *engine_device_name(EngineDevice d); // "auto", "cpu", "cuda"

// ----------------------------------------------------------------------------
// requests

typedef struct {
    SamplingParams sampling;    // sampler.h: temperature, top-k/p, min-p, penalties, logit bias
                                // (copied at submit), seed, logprobs. With n > 1 and a seed,
                                // sample i uses seed + i (vLLM's rule).
    int max_tokens;             // output tokens at most, per sample; 0 = up to max_model_len
    int min_tokens;             // no EOS / stop token / stop string before this many
    int n;                      // parallel samples of the prompt (OpenAI n), 1..max_num_seqs
    int priority;               // lower runs first; FCFS within a priority
    bool ignore_eos;            // keep going through end-of-generation tokens
    const int32_t *stop_token_ids; // (n_stop_token_ids), copied at submit
    int n_stop_token_ids;
    const char *const *stop;    // (n_stop) stop strings, copied at submit
    int n_stop;
    bool include_stop_str_in_output;
    bool skip_special_tokens;   // leave control tokens out of the text (default true)
    int prompt_logprobs;        // vLLM's prompt_logprobs: -1 none; k in 0..SAMPLER_MAX_LOGPROBS: the
                                // logprob of each prompt token given those before it, plus the k
                                // best alternatives (raw log_softmax, like logprobs_mode raw). Such
                                // a request takes no prefix-cache hit (every prompt row is computed),
                                // and needs --device cpu
    const char *cache_salt;     // prefix caching: KV blocks are shared only between requests with the
                                // same salt (vLLM's cache_salt); NULL = the common cache. Read at submit
    GrammarKind grammar_kind;   // structured output: the constraint's kind, GRAMMAR_NONE for none
    const char *grammar;        // (grammar_len) its canonical text (grammar.h), copied at submit; the
    size_t grammar_len;         // compiled grammar is cached by (kind, text)
} EngineParams;

void engine_params_defaults(EngineParams *p);

// engine_submit errors besides SL_ERR (an invalid parameter, named in err):
#define ENGINE_ERR_CONTEXT (-2) // the prompt (+ max_tokens) does not fit max_model_len
#define ENGINE_ERR_STOPPED (-3) // the engine is shutting down
#define ENGINE_ERR_GRAMMAR (-4) // the grammar does not compile (also later, from engine_request_status)
#define ENGINE_ERR_GRAMMAR_TIMEOUT (-5) // the grammar did not compile in time (engine_request_status)

// Called by the engine thread, with the request's mutex held, whenever the request has new
// output (at most once per step). It must only wake the consumer (resume a connection, write an
// eventfd, signal a condition variable): never block, never call back into this API, and never
// take a lock that a thread may hold while it calls engine_request_take / _wait / _release on
// this request (lock order: the request's mutex, then the callback's). Holding the mutex is what
// makes engine_request_release a clean cut: once it returns, notify is never called again.
typedef void (*EngineNotifyFn)(void *ctx);

// Validates the request and queues it. On SL_OK *out holds the caller's reference. Errors are
// one-line OpenAI-style messages; nothing is queued. notify may be NULL (use engine_request_wait).
int engine_submit(Engine *e, const int32_t *prompt, int n_prompt, const EngineParams *p, EngineNotifyFn notify,
                  void *notify_ctx, EngineRequest **out, char *err);
int64_t engine_request_id(const EngineRequest *r);
// Aborts request `id` if it is still running or waiting: its blocks are freed before the next
// step, and it finishes with ENGINE_FINISH_ABORT. Unknown or finished ids are ignored.
void engine_abort(Engine *e, int64_t id);
// Drops the caller's reference (aborting the request if it has not finished). r is gone after.
void engine_request_release(EngineRequest *r);

typedef enum {
    ENGINE_FINISH_NONE = 0,
    ENGINE_FINISH_STOP = 1,   // EOS, a stop token or a stop string
    ENGINE_FINISH_LENGTH = 2, // max_tokens, or max_model_len
    ENGINE_FINISH_ABORT = 3,  // engine_abort / release / shutdown
} EngineFinish;

const char *engine_finish_name(EngineFinish f); // "", "stop", "length", "abort"

// One choice (sample) of a request: what is new since the last take, and its state.
typedef struct {
    int index;                       // the OpenAI choices index (0..n-1)
    const int32_t *tokens;           // (n_tokens) new token ids
    int n_tokens;
    const SampleLogprobs *logprobs;  // (n_tokens) when sampling.logprobs >= 0, else NULL
    const char *text;                // (text_len) new text, whole UTF-8 characters, NUL-terminated
    size_t text_len;
    EngineFinish finish;             // set in the take that finishes the choice and every later one
    int32_t stop_token;              // the stop_token_ids entry that ended it, else -1
    int stop_str;                    // index of the stop string that ended it, else -1
    int num_tokens;                  // output tokens so far
} EngineChoice;

typedef struct {
    EngineChoice *choices;           // (n_choices)
    int n_choices;
    bool finished;                   // every choice has finished: nothing more will come
    int prompt_tokens;
    const SampleLogprobs *prompt_logprobs; // (prompt_tokens) with EngineParams.prompt_logprobs >= 0, in
                                     // the first take after the prompt is computed (NULL in every
                                     // other): entry i is prompt token i given tokens 0..i-1, with
                                     // n_top alternatives; entry 0 has none (n_top -1, logprob 0)
    int completion_tokens;           // all choices together
    int cached_tokens;               // prompt tokens served from the prefix cache
    int num_preemptions;
    double t_arrival;                // time_now_s() at submit
    double t_scheduled;              // first step that ran it (queue time = this - t_arrival); 0 before
    double t_first_token;            // 0 before
    double t_finished;               // 0 before
    uint64_t finish_step;            // EngineStats.num_steps when it finished: an abort issued while
                                     // num_steps was s lands at s, or s + 1 if a step was starting
    int error;                       // ENGINE_ERR_GRAMMAR*: it ended before running (choices: abort)
    const char *error_msg;           // why, when error is set
    double grammar_compile_s;        // its grammar was new: the compile's seconds (0 otherwise)
    bool grammar_cache_hit;          // its grammar was compiled already
} EngineOutput;

// Moves everything produced since the last take into *out (pointers valid until the next take or
// the release). Returns true when something is new: tokens, text or a finish.
bool engine_request_take(EngineRequest *r, EngineOutput *out);
// A request with a grammar waits for the compile before it is queued: 0 while it waits, 1 once
// queued (at once for a request without a grammar), ENGINE_ERR_GRAMMAR / _TIMEOUT when it ended
// because of its grammar (*msg: why, valid until the release), ENGINE_ERR_STOPPED when it was
// aborted while it waited. The notify callback fires on each change.
int engine_request_status(EngineRequest *r, const char **msg);
// Blocks until there is something new to take or the request has finished, at most timeout_s
// seconds (< 0: no limit). Returns true when there is something to take.
bool engine_request_wait(EngineRequest *r, double timeout_s);

// ----------------------------------------------------------------------------
// stats for /metrics (vLLM's names under sluice:)

typedef struct {
    int num_running;                 // sequences in the running set
    int num_waiting;                 // sequences waiting (including preempted) and not yet admitted
    int num_blocks;
    int num_free_blocks;             // free or idle in the prefix cache
    double kv_usage;                 // fraction of blocks held by sequences
    uint64_t prefix_cache_queries;   // prompt tokens looked up
    uint64_t prefix_cache_hits;      // of which served from the cache
    uint64_t num_preemptions;
    uint64_t num_window_freed_blocks; // KV blocks freed as out of every layer's sliding window
    uint64_t prompt_tokens;          // prompts whose prefill completed
    uint64_t generation_tokens;      // sampled tokens
    uint64_t requests_finished[4];   // by EngineFinish (STOP, LENGTH, ABORT)
    uint64_t num_steps;              // steps begun (the one running included)
    uint64_t step_tokens;            // tokens computed over all steps
    double time_schedule;            // seconds in sched_schedule + sched_update
    double time_forward;             // seconds in the runner (copies, Batch, model_forward)
    double time_sample;              // seconds sampling, stop checks, detokenizing, outboxes
    uint64_t grammar_queries;        // requests with a grammar
    uint64_t grammar_cache_hits;     // of which found it compiled (or known bad)
    uint64_t grammar_compiles;       // compiles finished
    int num_grammar_compiling;       // requests waiting for their grammar (also in num_waiting)
    int num_constrained;             // constrained requests admitted and not finished
    uint64_t num_decode_steps;       // steps with decode tokens only (no prefill chunk)
    double time_decode_steps;        // their seconds, all parts together
    // speculative decoding (vLLM's spec_decode_* counters)
    uint64_t spec_drafts;            // verifications: sequence-steps that carried proposals
    uint64_t spec_draft_tokens;      // proposals verified
    uint64_t spec_accepted_tokens;   // proposals accepted
    uint64_t spec_accepted_per_pos[SPEC_MAX_TOKENS]; // accepted at proposal position i
} EngineStats;

void engine_stats(Engine *e, EngineStats *out);
