// structured.h: structured output in the engine (engine/sampling/grammar.h is the grammar engine).
//
//   compile   A request with a grammar is not queued for the engine thread until its grammar is
//             compiled. Compiled grammars are cached by (kind, canonical text), LRU, up to
//             --structured-output-cache-size of them. A hit attaches matchers and queues the
//             request at once; a miss parks it on the cache entry while one of the compile
//             threads compiles (requests with the same grammar share one compile), so a request
//             whose grammar is compiling holds no batch slot and blocks nobody. A bad grammar
//             ends every request parked on it with ENGINE_ERR_GRAMMAR (and stays cached, so a
//             repeat is refused at submit); a compile slower than
//             --structured-output-compile-timeout ends its waiting requests with
//             ENGINE_ERR_GRAMMAR_TIMEOUT (the compile goes on and is cached for a retry).
//   masks     Each step, the token bitmasks of the constrained rows the step will sample are
//             filled on the mask thread while the forward runs (MaskWorker); the engine thread
//             waits for them after the forward and applies them before the sampler.
//
// Lock order: so->mu, then the engine's inbox_mu (admission happens under so->mu, so an abort
// either finds the request parked here or finds it already in the inbox), then a request's mu.
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/sampling/grammar.h"
#include "engine/tokenizer/tokenizer.h"

typedef struct Engine Engine;
typedef struct EngineRequest EngineRequest;
typedef struct StructuredOutput StructuredOutput;

typedef struct {
    uint64_t queries;     // requests with a grammar
    uint64_t hits;        // of which found it compiled (or known bad) in the cache
    uint64_t compiles;    // compiles finished (ok or not)
    int num_compiling;    // requests parked on a compile
} StructuredStats;

StructuredOutput *so_create(Engine *e, const Tokenizer *tok, int vocab, int cache_size, double timeout_s);
// Stops the compile threads (a compile in progress finishes first) and ends every parked
// request with an abort. Call after the engine stopped taking its inbox.
void so_destroy(StructuredOutput *so);

// engine_submit's path for a request with a grammar (text copied). SL_OK: the request is queued
// for the engine or parked on a compile; from then on it belongs to the engine. ENGINE_ERR_GRAMMAR
// (message in err): the grammar is known to be bad; nothing was queued. ENGINE_ERR_STOPPED.
int so_submit(StructuredOutput *so, EngineRequest *r, GrammarKind kind, const char *text, size_t len, char *err);
// Ends request id with an abort if it is parked on a compile; false when it is not.
bool so_abort(StructuredOutput *so, int64_t id);
void so_stats(StructuredOutput *so, StructuredStats *st);

// ---- the mask thread: fills the bitmasks of a step's constrained rows in the background

typedef struct {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    GrammarMatcher **matchers; // (cap) this step's rows
    uint32_t *masks;           // (cap * words)
    bool *restrict_;           // (cap) fill's answer: the mask must be applied
    int n, cap, words;
    bool posted, done, stopping;
} MaskWorker;

void mask_worker_init(MaskWorker *w, int cap, int vocab);
void mask_worker_free(MaskWorker *w); // accepts a zeroed struct
// The engine thread sets matchers[0..n) and posts; fills run while it does the forward; wait
// returns when every mask is ready.
void mask_worker_post(MaskWorker *w, int n);
void mask_worker_wait(MaskWorker *w);
