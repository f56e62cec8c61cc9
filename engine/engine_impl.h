// engine_impl.h: the engine's private structures, shared by engine.c (submit, the engine thread,
// create / destroy) and engine_request.c (the id map, each request's outbox and the consumer's
// calls). Nothing outside engine/ includes this.
//
// Ownership. A request is allocated by engine_submit on the caller's thread with everything its
// life needs (the Sequence and its children with arrays for the longest they can grow, sampler
// states, stop strings, detokenizers, outbox buffers), so the step loop itself allocates nothing
// but the growth of outbox text and logprob buffers (doubling, so it stops once a request's
// largest delta fits). From the inbox on, the engine thread alone touches the scheduler, the
// sequences and the per-sample state; the outbox is the only part both sides see, under r->mu.
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/gpu_runner.h"
#include "engine/model/model.h"
#include "engine/runner.h"
#include "engine/model/weights.h"
#include "kernels/comm.h"
#include "engine/sampling/stop.h"
#include "engine/structured.h"
#include "scheduler/scheduler.h"

// ---- the tokenizer and chat template that go with a model (engine_text.c)
typedef struct {
    Tokenizer *tok;
    char *chat_template;         // Jinja source; NULL when there is none
    char tok_origin[1024];       // where each came from, for the log
    char template_origin[1024];
} EngineText;

// tokenizer_path (--tokenizer) when given: a .gguf file (its tokenizer.ggml.* metadata and
// tokenizer.chat_template) or an HF tokenizer directory (tokenizer.json; tokenizer_config.json's
// chat_template). Else the model's own: the GGUF's metadata, or tokenizer.json and
// tokenizer_config.json beside the model's config.json; none is an error ("the model has no
// tokenizer; pass --tokenizer"). A missing chat template is not an error (chat_template NULL).
int engine_text_open(EngineText *t, const WeightSource *src, const char *tokenizer_path, char *err);
void engine_text_close(EngineText *t); // accepts a zeroed struct

// One half of a choice's outbox: the engine fills `pending`, a take swaps it with `taken`.
typedef struct {
    int32_t *tokens;           // (cap_tokens)
    int n_tokens, cap_tokens;
    SampleLogprobs *logprobs;  // (cap_logprobs) when the request wants logprobs
    int cap_logprobs;
    char *text;                // (text_cap) NUL-terminated
    size_t text_len, text_cap;
} ChoiceBuf;

// A choice's state as the consumer sees it (under r->mu).
typedef struct {
    EngineFinish finish;
    int32_t stop_token;
    int stop_str;
    int num_tokens;
} ChoiceState;

// Engine-thread state of one sample.
typedef struct {
    SamplingParams params;     // the request's, with this sample's seed
    SamplerState sampler;
    Detok detok;
    StopText text;             // generated text not yet in the outbox (stop-string hold-back)
    int num_out;
    StopKind stop_kind;
    int32_t stop_token;
    int stop_str;
    bool finished;
    GrammarMatcher *gm;        // structured output: this choice's matcher, else NULL
    int spec_proposed, spec_accepted; // speculative decoding: this choice's proposals so far
    float spec_hits, spec_tries; // positions accepted, and verified (accepted or the miss), decayed per verification
    int spec_len;              // proposals it asks for next (0: num_speculative_tokens)
    int spec_skipped;          // steps in a row the cost model kept it from proposing (engine_spec.c)
    bool spec_off;             // its acceptance stayed low: no more proposals (engine_spec.c)
} Sample;

struct EngineRequest {
    Engine *engine;
    int64_t id;
    atomic_int refs;
    int n, n_prompt;
    bool want_logprobs;
    int prompt_lp;             // EngineParams.prompt_logprobs (-1 none)
    SampleLogprobs *plp;       // (n_prompt) prompt logprobs, written by the engine thread until
                               // plp_done, then read-only (the consumer reads them after a take)
    bool plp_done;             // engine thread: every prompt row reduced
    bool plp_ready, plp_given; // under mu: published; handed out by a take
    int32_t *bias_ids;         // owned copies of the logit bias the params point at
    float *bias_vals;
    StopSpec stop;

    // ---- structured output (structured.c): parked on a compile until admitted
    GrammarKind grammar_kind;  // GRAMMAR_NONE: unconstrained
    EngineRequest *so_next;    // in the cache entry's waiting list
    double so_t0, so_deadline;
    bool compiled_here;        // its grammar was new: this request waited for the compile
    char error[ERR_MAX];       // why it ended before reaching the engine (out.error points here)

    // ---- engine thread only
    Sequence seq;              // the parent; children inside
    Sample *samples;           // (n)
    int n_finished;
    bool prompt_counted;
    double t_scheduled, t_first_token;
    EngineRequest *inbox_next;
    EngineRequest *active_prev, *active_next;
    bool touched;              // in this step's notify list

    // ---- shared with the consumer, under mu
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ChoiceBuf *pending, *taken; // (n) each
    ChoiceState *state;         // (n)
    EngineChoice *view;         // (n) what a take hands out
    EngineOutput out;           // usage and times
    bool has_new, finished;
    bool admitted;              // queued for the engine thread (its grammar, if any, compiled)
    EngineNotifyFn notify;
    void *notify_ctx;
};

// id -> request, for aborts and for finding a sequence's request (open addressing, linear
// probing, backward-shift deletion). Engine thread only.
typedef struct {
    int64_t *keys; // 0 = empty (ids start at 1)
    EngineRequest **vals;
    uint32_t cap, n;
} ReqMap;

// What a decode step costs by its rows, for speculative decoding's proposal lengths: decayed sums
// over recent decode steps of one sequence of x = rows - 1 and y = the step's seconds
// (engine_spec.c).
typedef struct {
    double w, x, y, xx, xy;
} SpecCost;

struct Engine {
    EngineConfig cfg;
    EngineInfo info;
    WeightSource src;          // the model's files (the ranks' weights are views into it)
    Model *models;             // (tp_size) CPU: each rank's share of the model
    WeightSource draft_src;    // --speculative-config's draft model: its files,
    Model draft;               // its weights (whole, on rank 0's thread), when draft_loaded
    bool draft_loaded;
    int n_models;              // loaded so far (freed on the way out)
    CommGroupCpu *comm_group;  // CPU ranks' communicator (tp_size > 1)
    Comm **comms;              // (tp_size)
    GpuRunner *gpu;            // --device cuda
    EngineText text;           // the tokenizer and the chat template
    Tokenizer *tok;            // text.tok
    Runner runner;
    Scheduler sched;
    SchedOutput out;
    SamplerScratch scratch;
    StructuredOutput *so;      // grammar cache and compile threads
    MaskWorker masks;          // this step's bitmasks, filled during the forward
    int *mask_row;             // (max_num_seqs) sample row -> MaskWorker row, -1 when unconstrained
    atomic_int n_constrained;  // constrained requests admitted and not finished
    float *row_copy;           // (vocab) a logits row for all but the last of n samples
    int32_t *eog_ids;          // every end-of-generation token of the tokenizer
    int n_eog;
    int32_t *ban;              // (n_eog + STOP_MAX_TOKEN_IDS) this sample's tokens min_tokens holds off
    char *detok_buf;           // (detok_cap)
    int detok_cap;
    int32_t *sampled;          // (max_num_seqs) this step's tokens, by sample row
    int *prompt_rows;          // (max_num_seqs) per entry, prompt rows wanted (runner_step)
    bool *stop_flags;          // (max_num_seqs)
    EngineRequest **touched;   // (max_num_seqs + 1) requests to notify after this step
    int n_touched;
    ReqMap map;
    SpecCost spec_cost;        // the decode steps' cost by rows (speculative decoding only)
    EngineRequest *active_head;
    int64_t *aborts_eng;       // the engine's half of the abort list
    int cap_aborts_eng;

    // ---- inbox, under inbox_mu
    pthread_mutex_t inbox_mu;
    pthread_cond_t inbox_cv;
    EngineRequest *inbox_head, *inbox_tail;
    int n_inbox;               // submitted and not yet in the published stats
    int n_taken;               // of which the engine has taken this many (published next)
    int64_t *aborts;
    int n_aborts, cap_aborts;
    bool stopping;
    int64_t next_id;

    pthread_t thread;
    bool thread_started;

    atomic_uint_fast64_t steps_begun;

    // ---- stats: the engine thread's running totals, published under inbox_mu after every loop
    // iteration, so that a request counts as waiting in the inbox until the published scheduler
    // numbers include it
    EngineStats st;
    EngineStats st_pub;
};

static inline uint64_t engine_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// ---- the id map (engine thread only)
void engine_map_put(ReqMap *m, EngineRequest *r);
EngineRequest *engine_map_get(const ReqMap *m, int64_t id); // NULL when absent
void engine_map_del(ReqMap *m, int64_t id);

// Queues r for the engine thread (engine_submit, and structured output once r's grammar is
// compiled; wake: call its notify, since the consumer waits for engine_request_status). False when
// the engine is stopping (nothing queued).
bool engine_inbox_push(Engine *e, EngineRequest *r, bool wake);

// Marks r for notification at the end of the step (engine.c); the list holds a reference.
void engine_touch(Engine *e, EngineRequest *r);

// ---- after the forward (engine_sample.c)
// Structured output: hands this step's constrained sample rows' matchers to the mask thread,
// which fills their bitmasks while the forward runs. Returns how many were posted.
int engine_masks_post(Engine *e, const SchedOutput *out);
// Samples row j of entry en from logits `row`, runs the stop checks and fills the outbox.
void engine_sample_one(Engine *e, EngineRequest *r, const SchedEntry *en, int j, float *row);
// Reduces this step's prompt rows (e->prompt_rows) to prompt logprobs.
void engine_prompt_logprobs(Engine *e, const SchedOutput *out);
// Sampling and emitting one token, shared with speculative verification:
// The token for sample s from logits (modified in place): min_tokens' bans, the grammar's mask of
// sample row `row` (structured output), the sampler. Fills lp when the request wants logprobs.
int32_t engine_sample_token(Engine *e, EngineRequest *r, Sample *s, int row, float *logits, SampleLogprobs *lp);
// Appends tok to choice si's output: penalties' counts, stop checks, detokenizing, the outbox;
// records it as sampled[row_idx] with its stop flag. Returns whether the choice stops here.
bool engine_emit_token(Engine *e, EngineRequest *r, int si, int row_idx, int32_t tok, const SampleLogprobs *lp);

// ---- speculative decoding (engine_spec.c)
// Before sched_schedule: for each running decode that may speculate, how many proposals it wants
// (Sequence.num_spec) and, with n-grams, the proposals themselves, written after its tokens (a
// draft model's come from runner_draft after sched_schedule).
void engine_spec_propose(Engine *e);
// The draft model of method draft_model: opens it, checks that its tokenizer is the target's
// (every token's bytes, BOS and EOS) and that it reads no KV the target's sliding window
// (target_window, 0 for none) frees, loads it whole. SL_ERR with "--speculative-config: ...".
int engine_spec_load_draft(Engine *e, int target_window, char *err);
void engine_spec_log(const Engine *e); // one line: the method and its settings
// After the forward: verifies entry i's proposals row by row, emits the accepted ones and the
// token after them, sets en->num_accepted for sched_update.
void engine_spec_verify(Engine *e, EngineRequest *r, SchedEntry *en, int i);
// A decode step (no prompt rows) of one sequence and rows query rows took seconds: into
// e->spec_cost.
void spec_cost_add(SpecCost *c, int rows, double seconds);
// The least-squares line seconds = t1 + per_row * (rows - 1) through c's steps; false until
// enough steps with different row counts have been seen.
bool spec_cost_line(const SpecCost *c, double *t1, double *per_row);
// The number of proposals, 0..lmax, that maximises a step's expected tokens per second for a
// sequence running alone whose proposals are each accepted with probability a (given the ones
// before), when a step costs t1 + per_row * (rows - 1).
int spec_best_len(double a, double t1, double per_row, int lmax);

// ---- requests and their outboxes (engine_request.c)
// Ends a request that never reached the engine thread: every choice finishes with an abort, and
// code (ENGINE_ERR_GRAMMAR...; 0 for a plain abort) and msg go to its output. Drops the engine's
// reference.
void engine_request_end_early(EngineRequest *r, int code, const char *msg);
void engine_outbox_init(ChoiceBuf *b, int max_output, bool logprobs);
// Frees what only the engine thread uses (sequences, samplers, stop texts) once r has finished.
void engine_request_free_state(EngineRequest *r);
void engine_request_destroy(EngineRequest *r); // everything; the last reference is gone
void engine_request_unref(EngineRequest *r);
// Under r->mu: append to choice si's pending half.
void engine_outbox_push_token(EngineRequest *r, int si, int32_t tok, const SampleLogprobs *lp);
void engine_outbox_push_text(EngineRequest *r, int si, const char *text, size_t n);
