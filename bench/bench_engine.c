// bench_engine.c: the engine's aggregate generation speed under concurrency, through engine.h.
//
// For each concurrency C (1, 4, 8, 16 by default) C requests are submitted at once, each with a
// distinct 128-token prompt and 128 greedy output tokens (ignore_eos), on one engine with the
// prefix cache off (distinct prompts would not hit it anyway). Printed per C:
//   gen tok/s     C * 128 / wall time from submit to the last token (prefill included)
//   decode tok/s  the sum over requests of 127 / (last token - first token)
//   TTFT          mean time to first token
//   step ms       mean step time split into schedule (+ update), forward (runner) and sample
//                 (+ stop checks, detokenizing, outboxes), from the engine's counters; prefill
//                 steps included
//   decode step   mean time of the steps that carry decode tokens only
//
//   make build/bench/bench_engine && nice build/bench/bench_engine [model.gguf] [threads] [C,C,...] [kv MiB]
//       [int16|int8]      (kv MiB 0: the default; the last: --cpu-activations)
//
// The machine should be quiet; on a shared one, OMP_WAIT_POLICY=passive keeps OpenMP threads from
// spinning against other processes.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "common/common.h"
#include "engine/engine.h"

#define PROMPT_LEN 128
#define GEN_LEN 128
#define MAX_CONC 64

typedef struct {
    double gen_tps, decode_tps, ttft_ms, wall_s;
    double step_sched_ms, step_fwd_ms, step_sample_ms, decode_step_ms;
    uint64_t steps;
} Result;

static int run_round(Engine *e, int conc, Result *res) {
    char err[ERR_MAX];
    static int32_t prompts[MAX_CONC][PROMPT_LEN];
    int vocab = engine_info(e)->vocab;
    for (int i = 0; i < conc; i++) bench_random_prompt(prompts[i], PROMPT_LEN, vocab);
    EngineParams p;
    engine_params_defaults(&p);
    p.sampling.temperature = 0;
    p.max_tokens = GEN_LEN;
    p.ignore_eos = true;

    EngineStats s0, s1;
    engine_stats(e, &s0);
    EngineRequest *rs[MAX_CONC];
    double t0 = time_now_s();
    for (int i = 0; i < conc; i++)
        if (engine_submit(e, prompts[i], PROMPT_LEN, &p, NULL, NULL, &rs[i], err) != SL_OK) {
            fprintf(stderr, "submit: %s\n", err);
            return SL_ERR;
        }
    double ttft = 0, decode = 0, t_end = t0;
    for (int i = 0; i < conc; i++) {
        EngineOutput o;
        do {
            engine_request_wait(rs[i], -1);
            engine_request_take(rs[i], &o);
        } while (!o.finished);
        if (o.completion_tokens != GEN_LEN) fprintf(stderr, "request %d made %d tokens\n", i, o.completion_tokens);
        ttft += o.t_first_token - o.t_arrival;
        decode += (GEN_LEN - 1) / (o.t_finished - o.t_first_token);
        t_end = MAX(t_end, o.t_finished);
        engine_request_release(rs[i]);
    }
    engine_stats(e, &s1);
    uint64_t steps = s1.num_steps - s0.num_steps;
    *res = (Result){.gen_tps = conc * GEN_LEN / (t_end - t0), .decode_tps = decode, .ttft_ms = 1e3 * ttft / conc,
                    .wall_s = t_end - t0, .steps = steps,
                    .step_sched_ms = 1e3 * (s1.time_schedule - s0.time_schedule) / steps,
                    .step_fwd_ms = 1e3 * (s1.time_forward - s0.time_forward) / steps,
                    .step_sample_ms = 1e3 * (s1.time_sample - s0.time_sample) / steps,
                    .decode_step_ms = 1e3 * (s1.time_decode_steps - s0.time_decode_steps) /
                                      (double)MAX(s1.num_decode_steps - s0.num_decode_steps, 1)};
    return SL_OK;
}

int main(int argc, char **argv) {
    const char *model = argc > 1 && argv[1][0] ? argv[1] : TEST_MODEL_PATH;
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    int concs[16] = {1, 4, 8, 16}, n_conc = 4;
    if (argc > 3) {
        n_conc = 0;
        for (char *s = argv[3]; *s && n_conc < 16; s++) {
            concs[n_conc++] = MIN(atoi(s), MAX_CONC);
            while (*s && *s != ',') s++;
            if (!*s) break;
        }
    }
    int max_conc = 1;
    for (int i = 0; i < n_conc; i++) max_conc = MAX(max_conc, concs[i]);

    EngineConfig c;
    engine_config_defaults(&c);
    c.max_num_seqs = max_conc;
    c.max_num_batched_tokens = MAX(512, max_conc);
    c.enable_prefix_caching = false;
    c.max_model_len = PROMPT_LEN + GEN_LEN;
    c.threads = threads;
    if (argc > 4 && atol(argv[4]) > 0) c.kv_cache_memory = (size_t)atol(argv[4]) << 20;
    if (argc > 5) c.cpu_activations = strcmp(argv[5], "int8") ? K_ACT_INT16 : K_ACT_INT8;
    char err[ERR_MAX];
    Engine *e;
    if (engine_create(&e, &c, model, err) != SL_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("bench_engine: %s, %d threads, prompt %d, %d new tokens each, budget %d tokens/step, %s activations\n",
           model, engine_info(e)->threads, PROMPT_LEN, GEN_LEN, c.max_num_batched_tokens,
           c.cpu_activations == K_ACT_INT8 ? "int8" : "int16");
    Result warm;
    if (run_round(e, 1, &warm) != SL_OK) return 1; // page in weights and KV, start the thread team

    printf("%5s %10s %13s %9s %8s %7s %9s %9s %9s %12s %8s\n", "conc", "gen tok/s", "decode tok/s", "TTFT ms",
           "wall s", "steps", "sched ms", "fwd ms", "sample ms", "decode step", "x conc1");
    double base = 0;
    for (int i = 0; i < n_conc; i++) {
        Result r;
        if (run_round(e, concs[i], &r) != SL_OK) return 1;
        if (concs[i] == 1) base = r.gen_tps;
        printf("%5d %10.1f %13.1f %9.0f %8.2f %7llu %9.3f %9.2f %9.3f %12.2f %8.2f\n", concs[i], r.gen_tps,
               r.decode_tps, r.ttft_ms, r.wall_s, (unsigned long long)r.steps, r.step_sched_ms, r.step_fwd_ms,
               r.step_sample_ms, r.decode_step_ms, base > 0 ? r.gen_tps / base : 0.0);
        fflush(stdout);
    }
    engine_destroy(e);
    return 0;
}
