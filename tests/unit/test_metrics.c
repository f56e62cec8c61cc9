// test_metrics.c: the Prometheus exposition of server/metrics.c: histogram bucketing (le is
// inclusive, buckets cumulative, +Inf = count), counters and gauges, label escaping.
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/metrics.h"
#include "tests/unit/test.h"

static void test_hist_buckets(void) {
    static const double B[] = {0.1, 1.0, 10.0};
    MetricsHist h = {.bounds = B, .n = 3};
    double vals[] = {0.05, 0.1, 0.5, 1.0, 2.0, 100.0, -1.0, NAN};
    for (size_t i = 0; i < ARRAY_LEN(vals); i++) metrics_hist_observe(&h, vals[i]);
    // 0.05 and 0.1 in le=0.1; 0.5 and 1.0 in le=1; 2 in le=10; 100 in +Inf; -1 and NaN dropped
    EXPECT_EQ_INT(h.counts[0], 2);
    EXPECT_EQ_INT(h.counts[1], 2);
    EXPECT_EQ_INT(h.counts[2], 1);
    EXPECT_EQ_INT(h.counts[3], 1);
    EXPECT_EQ_INT(h.count, 6);
    EXPECT_NEAR(h.sum, 103.65, 1e-9);
}

static const char *line_value(const char *text, const char *series) {
    const char *p = strstr(text, series);
    return p ? p + strlen(series) : NULL;
}

static void test_render(void) {
    Metrics m;
    metrics_init(&m);
    int fin[3] = {METRICS_FINISH_STOP, METRICS_FINISH_LENGTH, METRICS_FINISH_LENGTH};
    metrics_request_done(&m, 0.03, 1.2, 0.0, 12, 40, fin, 3);
    metrics_request_done(&m, -1, 0.4, -1, 5, 0, fin + 1, 1);
    metrics_observe_itl(&m, 0.2, 4); // 4 tokens in one 0.2 s step: 4 samples of 0.05
    metrics_http_status(&m, 200);
    metrics_http_status(&m, 429);
    MetricsEngine e = {.num_running = 3, .num_waiting = 1, .kv_usage = 0.25, .prefix_cache_queries = 100,
                       .prefix_cache_hits = 40, .num_preemptions = 2, .prompt_tokens = 17, .generation_tokens = 40};
    SBuf b = {0};
    metrics_render(&m, &e, "m\"x", false, &b);
    const char *t = b.data;
    struct {
        const char *series;
        const char *value;
    } want[] = {
        {"# TYPE sluice:num_requests_running gauge\nsluice:num_requests_running{model_name=\"m\\\"x\"} ", "3.0\n"},
        {"sluice:num_requests_waiting{model_name=\"m\\\"x\"} ", "1.0\n"},
        {"sluice:kv_cache_usage_perc{model_name=\"m\\\"x\"} ", "0.25\n"},
        {"# TYPE sluice:prefix_cache_queries counter\nsluice:prefix_cache_queries_total{model_name=\"m\\\"x\"} ", "100.0\n"},
        {"sluice:prefix_cache_hits_total{model_name=\"m\\\"x\"} ", "40.0\n"},
        {"sluice:num_preemptions_total{model_name=\"m\\\"x\"} ", "2.0\n"},
        {"sluice:prompt_tokens_total{model_name=\"m\\\"x\"} ", "17.0\n"},
        {"sluice:generation_tokens_total{model_name=\"m\\\"x\"} ", "40.0\n"},
        {"sluice:request_success_total{model_name=\"m\\\"x\",finished_reason=\"stop\"} ", "1.0\n"},
        {"sluice:request_success_total{model_name=\"m\\\"x\",finished_reason=\"length\"} ", "3.0\n"},
        {"sluice:request_success_total{model_name=\"m\\\"x\",finished_reason=\"abort\"} ", "0.0\n"},
        {"sluice:time_to_first_token_seconds_bucket{model_name=\"m\\\"x\",le=\"0.02\"} ", "0.0\n"},
        {"sluice:time_to_first_token_seconds_bucket{model_name=\"m\\\"x\",le=\"0.04\"} ", "1.0\n"},
        {"sluice:time_to_first_token_seconds_bucket{model_name=\"m\\\"x\",le=\"+Inf\"} ", "1.0\n"},
        {"sluice:time_to_first_token_seconds_count{model_name=\"m\\\"x\"} ", "1.0\n"},
        {"sluice:e2e_request_latency_seconds_bucket{model_name=\"m\\\"x\",le=\"0.5\"} ", "1.0\n"},
        {"sluice:e2e_request_latency_seconds_bucket{model_name=\"m\\\"x\",le=\"1.5\"} ", "2.0\n"},
        {"sluice:e2e_request_latency_seconds_sum{model_name=\"m\\\"x\"} ", "1.6\n"},
        {"sluice:request_queue_time_seconds_bucket{model_name=\"m\\\"x\",le=\"0.3\"} ", "1.0\n"},
        // the phases of the first request (the second has no TTFT or queue time): prefill 0.03 s,
        // decode 1.17 s, running 1.2 s
        {"sluice:request_prefill_time_seconds_bucket{model_name=\"m\\\"x\",le=\"0.3\"} ", "1.0\n"},
        {"sluice:request_prefill_time_seconds_count{model_name=\"m\\\"x\"} ", "1.0\n"},
        {"sluice:request_decode_time_seconds_bucket{model_name=\"m\\\"x\",le=\"1.0\"} ", "0.0\n"},
        {"sluice:request_decode_time_seconds_bucket{model_name=\"m\\\"x\",le=\"1.5\"} ", "1.0\n"},
        {"sluice:request_inference_time_seconds_sum{model_name=\"m\\\"x\"} ", "1.2\n"},
        {"sluice:inter_token_latency_seconds_bucket{model_name=\"m\\\"x\",le=\"0.05\"} ", "4.0\n"},
        {"sluice:inter_token_latency_seconds_bucket{model_name=\"m\\\"x\",le=\"0.025\"} ", "0.0\n"},
        {"sluice:request_generation_tokens_bucket{model_name=\"m\\\"x\",le=\"50.0\"} ", "2.0\n"},
        {"sluice:http_responses_total{model_name=\"m\\\"x\",code=\"4xx\"} ", "1.0\n"},
        {"sluice:requests_rejected_total{model_name=\"m\\\"x\",reason=\"overloaded\"} ", "1.0\n"},
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        const char *v = line_value(t, want[i].series);
        EXPECT(v != NULL, "missing series %s", want[i].series);
        if (v) EXPECT(!strncmp(v, want[i].value, strlen(want[i].value)), "%s has %.12s, want %s", want[i].series, v,
                      want[i].value);
    }
    // every line is a comment or "name{labels} value"; every HELP has its TYPE
    int helps = 0, types = 0;
    for (const char *p = t; *p;) {
        const char *nl = strchr(p, '\n');
        ASSERT(nl != NULL, "unterminated last line");
        if (!strncmp(p, "# HELP ", 7)) helps++;
        else if (!strncmp(p, "# TYPE ", 7)) types++;
        else EXPECT(!strncmp(p, "sluice:", 7) && memchr(p, '}', (size_t)(nl - p)) != NULL, "bad line %.60s", p);
        p = nl + 1;
    }
    EXPECT(helps == types && helps >= 16, "%d HELP, %d TYPE", helps, types);
    sbuf_free(&b);
    metrics_free(&m);
}

// --metrics-vllm-names: every vllm: sample repeats the sluice: sample of the same name and labels
// (the two renamed ones repeat kv_cache_usage_perc and inter_token_latency_seconds); off, none.
static void test_vllm_names(void) {
    Metrics m;
    metrics_init(&m);
    int fin[1] = {METRICS_FINISH_STOP};
    metrics_request_done(&m, 0.03, 1.2, 0.01, 12, 40, fin, 1);
    metrics_observe_itl(&m, 0.2, 4);
    MetricsEngine e = {.num_running = 2, .num_waiting = 5, .kv_usage = 0.5, .prefix_cache_queries = 9,
                       .prefix_cache_hits = 3, .prompt_tokens = 12, .generation_tokens = 40};
    SBuf off = {0}, on = {0};
    metrics_render(&m, &e, "m", false, &off);
    metrics_render(&m, &e, "m", true, &on);
    EXPECT(strstr(off.data, "vllm:") == NULL, "vllm: names without the flag");
    EXPECT(!strncmp(on.data, off.data, off.len), "the sluice: part changed with the flag");
    int n = 0;
    for (const char *p = on.data + off.len; *p; n++) {
        const char *nl = strchr(p, '\n');
        ASSERT(nl != NULL, "unterminated last line");
        char line[256], twin[300];
        snprintf(line, sizeof line, "%.*s", (int)(nl - p), p);
        p = nl + 1;
        if (line[0] == '#') {
            EXPECT(!strncmp(line + 7, "vllm:", 5), "bad comment %s", line);
            continue;
        }
        ASSERT(!strncmp(line, "vllm:", 5), "not a vllm: sample: %s", line);
        const char *rest = line + 5;
        const char *renamed[][2] = {{"gpu_cache_usage_perc", "kv_cache_usage_perc"},
                                    {"time_per_output_token_seconds", "inter_token_latency_seconds"}};
        char name[256];
        snprintf(name, sizeof name, "%s", rest);
        for (size_t i = 0; i < ARRAY_LEN(renamed); i++) {
            size_t k = strlen(renamed[i][0]);
            if (!strncmp(rest, renamed[i][0], k)) {
                snprintf(name, sizeof name, "%s%s", renamed[i][1], rest + k);
            }
        }
        snprintf(twin, sizeof twin, "\nsluice:%s\n", name);
        EXPECT(strstr(off.data, twin) != NULL, "%s has no sluice: twin", line);
    }
    EXPECT(n > 100, "%d vllm: lines", n);
    EXPECT(strstr(on.data, "\nvllm:num_requests_waiting{model_name=\"m\"} 5.0\n") != NULL, "no vllm: waiting gauge");
    EXPECT(strstr(on.data, "\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n") != NULL, "no vllm: old KV name");
    EXPECT(strstr(on.data, "vllm:http_responses") == NULL, "sluice-only metric under vllm:");
    sbuf_free(&off);
    sbuf_free(&on);
    metrics_free(&m);
}

int main(void) {
    TEST_RUN(test_hist_buckets);
    TEST_RUN(test_render);
    TEST_RUN(test_vllm_names);
    return test_summary();
}
