// metrics.h: GET /metrics in Prometheus text format 0.0.4, vLLM's metric set under the sluice:
// prefix (openai-api.md §5): request gauges, KV usage, prefix-cache queries and hits,
// preemptions, token counters, request success by finish reason, and histograms of time to
// first token, inter-token latency, end-to-end latency and queue time (vLLM's buckets).
//
// The server observes per-request timings as it drains each request's outputs (any thread:
// a mutex guards the histograms); the engine's own counters and gauges are read from
// engine_stats() at scrape time and passed in as MetricsEngine.
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/spec_config.h" // SPEC_MAX_TOKENS
#include "server/respond.h"

#define METRICS_MAX_BUCKETS 24

typedef struct {
    const double *bounds;  // (n) upper bounds, increasing; +Inf is implicit
    int n;
    uint64_t counts[METRICS_MAX_BUCKETS + 1]; // per bucket (not cumulative); [n] is +Inf
    double sum;
    uint64_t count;
} MetricsHist;

enum { METRICS_FINISH_STOP = 0, METRICS_FINISH_LENGTH, METRICS_FINISH_ABORT, METRICS_FINISH_N };

typedef struct {
    pthread_mutex_t mu;
    MetricsHist ttft, itl, e2e, queue;     // seconds
    MetricsHist prefill, decode, inference; // seconds: first step to first token, first token to
                                            //   the end, first step to the end (vLLM's phases)
    MetricsHist prompt_len, gen_len;       // tokens per request
    MetricsHist grammar_compile;           // seconds per new grammar (structured output)
    uint64_t success[METRICS_FINISH_N];    // finished requests by reason (per choice)
    uint64_t http_status[6];               // responses by status class 1xx..5xx ([0] unused)
    uint64_t rejected_429, rejected_503;
} Metrics;

// What the engine knows (from engine_stats) at scrape time.
typedef struct {
    int num_running, num_waiting;
    double kv_usage;                      // fraction 0..1
    uint64_t prefix_cache_queries, prefix_cache_hits;
    uint64_t num_preemptions;
    uint64_t num_window_freed_blocks;
    uint64_t prompt_tokens, generation_tokens;
    uint64_t grammar_requests, grammar_cache_hits; // structured output: requests with a grammar, of
    int num_constrained;                           // which cache hits; constrained requests in flight
    int spec_k;                           // --speculative-config's num_speculative_tokens; 0 = off
                                          // (the spec_decode_* series are rendered only when on)
    uint64_t spec_drafts, spec_draft_tokens, spec_accepted_tokens;
    uint64_t spec_accepted_per_pos[SPEC_MAX_TOKENS];
} MetricsEngine;

void metrics_init(Metrics *m);
void metrics_free(Metrics *m);

void metrics_hist_observe(MetricsHist *h, double v); // no locking: for tests and under m->mu

// One request's timings once it finished (seconds from arrival; a value < 0 is not observed; the
// phases are the differences) and the finish reason of each of its n_choices choices (METRICS_FINISH_*).
void metrics_request_done(Metrics *m, double ttft, double e2e, double queue, int prompt_tokens, int gen_tokens,
                          const int *finish, int n_choices);
// count tokens arrived `gap` seconds after the previous ones: count samples of gap / count
// (tokens that arrive together in one step share the step's time).
void metrics_observe_itl(Metrics *m, double gap, int count);
void metrics_http_status(Metrics *m, int status);
void metrics_observe_compile(Metrics *m, double seconds); // a new grammar's compile

// Appends the exposition text. model_name labels every series (vLLM's model_name label). With
// vllm_names (--metrics-vllm-names) the metrics vLLM also has follow again under its vllm:
// prefix, so that its dashboards and alerts need no change.
void metrics_render(Metrics *m, const MetricsEngine *eng, const char *model_name, bool vllm_names, SBuf *out);
