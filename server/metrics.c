// metrics.c: Prometheus exposition of vLLM's metric set under sluice: (see metrics.h).
//
// Names and buckets follow vLLM V1 (vllm/v1/metrics/loggers.py), and the text follows Python's
// prometheus_client, which vLLM uses: a counter's TYPE line names it without "_total" and its
// sample carries the suffix; histogram buckets are cumulative, with le="+Inf" equal to _count.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/metrics.h"

static const double TTFT_BUCKETS[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                      1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double ITL_BUCKETS[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                     0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
static const double LATENCY_BUCKETS[] = {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
                                         30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
static const double TOKEN_BUCKETS[] = {1,    2,    5,    10,    20,    50,    100,    200,
                                       500,  1000, 2000, 5000,  10000, 20000, 50000, 100000};

static const double COMPILE_BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,   1.0,    2.5,   5.0,  10.0,  30.0, 60.0};

static const char *const FINISH_NAMES[METRICS_FINISH_N] = {"stop", "length", "abort"};

static void hist_init(MetricsHist *h, const double *bounds, int n) {
    CHECK(n <= METRICS_MAX_BUCKETS);
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n = n;
}

void metrics_init(Metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    hist_init(&m->ttft, TTFT_BUCKETS, (int)ARRAY_LEN(TTFT_BUCKETS));
    hist_init(&m->itl, ITL_BUCKETS, (int)ARRAY_LEN(ITL_BUCKETS));
    hist_init(&m->e2e, LATENCY_BUCKETS, (int)ARRAY_LEN(LATENCY_BUCKETS));
    hist_init(&m->queue, LATENCY_BUCKETS, (int)ARRAY_LEN(LATENCY_BUCKETS));
    hist_init(&m->prefill, LATENCY_BUCKETS, (int)ARRAY_LEN(LATENCY_BUCKETS));
    hist_init(&m->decode, LATENCY_BUCKETS, (int)ARRAY_LEN(LATENCY_BUCKETS));
    hist_init(&m->inference, LATENCY_BUCKETS, (int)ARRAY_LEN(LATENCY_BUCKETS));
    hist_init(&m->prompt_len, TOKEN_BUCKETS, (int)ARRAY_LEN(TOKEN_BUCKETS));
    hist_init(&m->gen_len, TOKEN_BUCKETS, (int)ARRAY_LEN(TOKEN_BUCKETS));
    hist_init(&m->grammar_compile, COMPILE_BUCKETS, (int)ARRAY_LEN(COMPILE_BUCKETS));
}

void metrics_observe_compile(Metrics *m, double seconds) {
    pthread_mutex_lock(&m->mu);
    metrics_hist_observe(&m->grammar_compile, seconds);
    pthread_mutex_unlock(&m->mu);
}

void metrics_free(Metrics *m) { pthread_mutex_destroy(&m->mu); }

void metrics_hist_observe(MetricsHist *h, double v) {
    if (!(v >= 0) || !isfinite(v)) return;
    int i = 0;
    while (i < h->n && v > h->bounds[i]) i++; // le: a value equal to a bound falls in its bucket
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

void metrics_request_done(Metrics *m, double ttft, double e2e, double queue, int prompt_tokens, int gen_tokens,
                          const int *finish, int n_choices) {
    pthread_mutex_lock(&m->mu);
    metrics_hist_observe(&m->ttft, ttft);
    metrics_hist_observe(&m->e2e, e2e);
    metrics_hist_observe(&m->queue, queue);
    if (queue >= 0 && ttft >= 0) metrics_hist_observe(&m->prefill, ttft - queue);
    if (ttft >= 0 && e2e >= 0) metrics_hist_observe(&m->decode, e2e - ttft);
    if (queue >= 0 && e2e >= 0) metrics_hist_observe(&m->inference, e2e - queue);
    metrics_hist_observe(&m->prompt_len, prompt_tokens);
    metrics_hist_observe(&m->gen_len, gen_tokens);
    for (int i = 0; i < n_choices; i++)
        if (finish[i] >= 0 && finish[i] < METRICS_FINISH_N) m->success[finish[i]]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_observe_itl(Metrics *m, double gap, int count) {
    if (count <= 0 || !(gap >= 0)) return;
    double each = gap / count;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < count; i++) metrics_hist_observe(&m->itl, each);
    pthread_mutex_unlock(&m->mu);
}

void metrics_http_status(Metrics *m, int status) {
    int cls = status / 100;
    pthread_mutex_lock(&m->mu);
    if (cls >= 1 && cls <= 5) m->http_status[cls]++;
    if (status == 429) m->rejected_429++;
    if (status == 503) m->rejected_503++;
    pthread_mutex_unlock(&m->mu);
}

// ----------------------------------------------------------------------------
// exposition

// A float as prometheus_client prints it (Python repr: 1.0, 0.025, 2560.0).
static void put_float(SBuf *b, double v) {
    char buf[40];
    if (v == floor(v) && fabs(v) < 1e16) { // counts: 40.0, not 4e+01
        snprintf(buf, sizeof buf, "%.1f", v);
        sbuf_puts(b, buf);
        return;
    }
    // the shortest form that reads back exactly, as Python's repr
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    sbuf_puts(b, buf);
    if (!strpbrk(buf, ".eni")) sbuf_puts(b, ".0");
}

// One rendering of the set: the prefix ("sluice:" or "vllm:") and the model_name label.
typedef struct {
    SBuf *b;
    const char *prefix;
    const char *model;
} Out;

static void meta(const Out *o, const char *name, const char *type, const char *help) {
    sbuf_printf(o->b, "# HELP %s%s %s\n# TYPE %s%s %s\n", o->prefix, name, help, o->prefix, name, type);
}

static void label_value(SBuf *b, const char *s) {
    // Prometheus label values escape backslash, quote and newline
    for (; *s; s++) {
        if (*s == '\\') sbuf_puts(b, "\\\\");
        else if (*s == '"') sbuf_puts(b, "\\\"");
        else if (*s == '\n') sbuf_puts(b, "\\n");
        else sbuf_put(b, s, 1);
    }
}

static void sample(const Out *o, const char *name, const char *extra_label, double v) {
    sbuf_printf(o->b, "%s%s{model_name=\"", o->prefix, name);
    label_value(o->b, o->model);
    sbuf_printf(o->b, "\"%s} ", extra_label ? extra_label : "");
    put_float(o->b, v);
    sbuf_put(o->b, "\n", 1);
}

static void gauge(const Out *o, const char *name, const char *help, double v) {
    meta(o, name, "gauge", help);
    sample(o, name, NULL, v);
}

static void counter(const Out *o, const char *name, const char *help, double v) {
    char total[96];
    meta(o, name, "counter", help);
    snprintf(total, sizeof total, "%s_total", name);
    sample(o, total, NULL, v);
}

static void histogram(const Out *o, const char *name, const char *help, const MetricsHist *h) {
    char series[96], le[64];
    meta(o, name, "histogram", help);
    snprintf(series, sizeof series, "%s_bucket", name);
    uint64_t cum = 0;
    for (int i = 0; i <= h->n; i++) {
        cum += h->counts[i];
        if (i < h->n) {
            SBuf f = {0};
            put_float(&f, h->bounds[i]);
            snprintf(le, sizeof le, ",le=\"%s\"", f.data);
            sbuf_free(&f);
        } else {
            snprintf(le, sizeof le, ",le=\"+Inf\"");
        }
        sample(o, series, le, (double)cum);
    }
    snprintf(series, sizeof series, "%s_count", name);
    sample(o, series, NULL, (double)h->count);
    snprintf(series, sizeof series, "%s_sum", name);
    sample(o, series, NULL, h->sum);
}

// The metrics vLLM also has, under o->prefix (the caller holds m->mu).
static void render_vllm_set(const Out *o, Metrics *m, const MetricsEngine *e) {
    gauge(o, "num_requests_running", "Number of requests in model execution batches.", e->num_running);
    gauge(o, "num_requests_waiting", "Number of requests waiting to be processed.", e->num_waiting);
    gauge(o, "kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", e->kv_usage);
    counter(o, "prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
            (double)e->prefix_cache_queries);
    counter(o, "prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
            (double)e->prefix_cache_hits);
    counter(o, "num_preemptions", "Cumulative number of preemptions from the engine.", (double)e->num_preemptions);
    counter(o, "prompt_tokens", "Number of prefill tokens processed.", (double)e->prompt_tokens);
    counter(o, "generation_tokens", "Number of generation tokens processed.", (double)e->generation_tokens);
    meta(o, "request_success", "counter", "Count of successfully processed requests, by finish reason.");
    for (int i = 0; i < METRICS_FINISH_N; i++) {
        char label[64];
        snprintf(label, sizeof label, ",finished_reason=\"%s\"", FINISH_NAMES[i]);
        sample(o, "request_success_total", label, (double)m->success[i]);
    }
    histogram(o, "time_to_first_token_seconds", "Histogram of time to first token in seconds.", &m->ttft);
    histogram(o, "inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", &m->itl);
    histogram(o, "e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", &m->e2e);
    histogram(o, "request_queue_time_seconds", "Histogram of time spent waiting in the queue in seconds.", &m->queue);
    histogram(o, "request_inference_time_seconds", "Histogram of time spent running (prefill and decode) in seconds.",
              &m->inference);
    histogram(o, "request_prefill_time_seconds", "Histogram of time spent in prefill in seconds.", &m->prefill);
    histogram(o, "request_decode_time_seconds", "Histogram of time spent in decode in seconds.", &m->decode);
    histogram(o, "request_prompt_tokens", "Number of prefill tokens processed per request.", &m->prompt_len);
    histogram(o, "request_generation_tokens", "Number of generation tokens processed per request.", &m->gen_len);
    if (e->spec_k > 0) {
        counter(o, "spec_decode_num_drafts", "Number of spec decoding drafts.", (double)e->spec_drafts);
        counter(o, "spec_decode_num_draft_tokens", "Number of draft tokens.", (double)e->spec_draft_tokens);
        counter(o, "spec_decode_num_accepted_tokens", "Number of accepted tokens.", (double)e->spec_accepted_tokens);
        meta(o, "spec_decode_num_accepted_tokens_per_pos", "counter", "Accepted tokens per draft position.");
        for (int i = 0; i < e->spec_k && i < SPEC_MAX_TOKENS; i++) {
            char label[32];
            snprintf(label, sizeof label, ",position=\"%d\"", i);
            sample(o, "spec_decode_num_accepted_tokens_per_pos_total", label, (double)e->spec_accepted_per_pos[i]);
        }
    }
}

void metrics_render(Metrics *m, const MetricsEngine *e, const char *model, bool vllm_names, SBuf *b) {
    Out o = {b, "sluice:", model};
    pthread_mutex_lock(&m->mu);
    render_vllm_set(&o, m, e);
    meta(&o, "http_responses", "counter", "HTTP responses by status class.");
    for (int c = 1; c <= 5; c++) {
        char label[32];
        snprintf(label, sizeof label, ",code=\"%dxx\"", c);
        sample(&o, "http_responses_total", label, (double)m->http_status[c]);
    }
    meta(&o, "requests_rejected", "counter", "Requests refused by admission control (429) or while draining (503).");
    sample(&o, "requests_rejected_total", ",reason=\"overloaded\"", (double)m->rejected_429);
    sample(&o, "requests_rejected_total", ",reason=\"unavailable\"", (double)m->rejected_503);
    // (no vLLM counterpart: vLLM keeps a sliding-window model's blocks until the request ends)
    counter(&o, "kv_window_freed_blocks", "KV-cache blocks freed as out of every layer's sliding window.",
            (double)e->num_window_freed_blocks);
    counter(&o, "structured_output_requests", "Requests with a structured output constraint.",
            (double)e->grammar_requests);
    counter(&o, "structured_output_cache_hits", "Of those, requests whose grammar was compiled already.",
            (double)e->grammar_cache_hits);
    gauge(&o, "num_requests_constrained", "Requests with a structured output constraint running or waiting.",
          e->num_constrained);
    histogram(&o, "structured_output_compile_seconds", "Histogram of grammar compile time in seconds (new grammars).",
              &m->grammar_compile);
    if (vllm_names) {
        // --metrics-vllm-names: the same values under vLLM's own names, so that dashboards and
        // alerts written for vLLM work unchanged; plus the two names vLLM's older dashboards use
        // for series it has since renamed (gpu_cache_usage_perc, time_per_output_token_seconds)
        Out v = {b, "vllm:", model};
        render_vllm_set(&v, m, e);
        gauge(&v, "gpu_cache_usage_perc", "KV-cache usage (vLLM's older name). 1 means 100 percent usage.", e->kv_usage);
        histogram(&v, "time_per_output_token_seconds", "Histogram of time per output token in seconds.", &m->itl);
    }
    pthread_mutex_unlock(&m->mu);
}
