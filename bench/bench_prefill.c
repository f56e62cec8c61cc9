// bench_prefill.c: prefill and decode speed of the CPU matmul paths side by side: the 16-bit
// activations (--cpu-activations int16) and each 8-bit kernel set this CPU has (matmul_q8.c,
// matmul_amx.c), at each thread count, interleaved.
//
//   make build/bench/bench_prefill && nice build/bench/bench_prefill [model.gguf] [threads,..] [rounds]
//       [modes]      modes: comma-separated int16 and int8 path names [int16,avx512-vnni,amx]
//
// A round opens one engine per (threads, mode), in turn, and on it prefills a 512-token prompt
// (one forward step: the budget is 512) once to warm up and then 3 distinct ones, each followed
// by 32 greedy decode tokens. Per engine: prefill tok/s = 512 / the median time to first token,
// TPOT = the median of (last token - first token) / 31. Printed: the medians over the rounds,
// the CPU's model name and its SIMD flags. On a shared machine, run enough rounds and say so.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "common/common.h"
#include "engine/engine.h"
#include "kernels/kernels.h"

#define PROMPT_LEN 512
#define GEN_LEN 32
#define REPS 3
#define MAX_CFG 16
#define MAX_ROUNDS 64

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// One request: its time to first token and its time per output token after the first.
static int run_one(Engine *e, double *ttft, double *tpot) {
    char err[ERR_MAX];
    int32_t prompt[PROMPT_LEN];
    int vocab = engine_info(e)->vocab;
    bench_random_prompt(prompt, PROMPT_LEN, vocab);
    EngineParams p;
    engine_params_defaults(&p);
    p.sampling.temperature = 0;
    p.max_tokens = GEN_LEN;
    p.ignore_eos = true;
    EngineRequest *r;
    if (engine_submit(e, prompt, PROMPT_LEN, &p, NULL, NULL, &r, err) != SL_OK) {
        fprintf(stderr, "submit: %s\n", err);
        return SL_ERR;
    }
    EngineOutput o;
    do {
        engine_request_wait(r, -1);
        engine_request_take(r, &o);
    } while (!o.finished);
    *ttft = o.t_first_token - o.t_arrival;
    *tpot = (o.t_finished - o.t_first_token) / (GEN_LEN - 1);
    engine_request_release(r);
    return SL_OK;
}

// The medians of REPS requests on a fresh engine of this mode and thread count.
static int run_cfg(const char *model, const char *mode, int threads, double *pf_tps, double *tpot_ms) {
    EngineConfig c;
    engine_config_defaults(&c);
    c.max_num_seqs = 1;
    c.max_num_batched_tokens = PROMPT_LEN;
    c.enable_prefix_caching = false;
    c.max_model_len = PROMPT_LEN + GEN_LEN;
    c.threads = threads;
    c.device = ENGINE_DEVICE_CPU;
    c.cpu_activations = strcmp(mode, "int16") ? K_ACT_INT8 : K_ACT_INT16;
    if (c.cpu_activations == K_ACT_INT8) CHECK(k_int8_path_set(mode), "int8 path %s", mode);
    char err[ERR_MAX];
    Engine *e;
    if (engine_create(&e, &c, model, err) != SL_OK) {
        fprintf(stderr, "%s\n", err);
        return SL_ERR;
    }
    double tt[REPS], tp[REPS], w0, w1;
    int rc = run_one(e, &w0, &w1); // pages in the weights, starts the thread team
    for (int i = 0; i < REPS && rc == SL_OK; i++) rc = run_one(e, &tt[i], &tp[i]);
    engine_destroy(e);
    if (rc != SL_OK) return rc;
    *pf_tps = PROMPT_LEN / median(tt, REPS);
    *tpot_ms = 1e3 * median(tp, REPS);
    return SL_OK;
}

// The CPU's model name and the flags that pick the kernels.
static void print_cpu(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192], model[256] = "?", flags[1024] = "";
    bool have_model = false, have_flags = false;
    while (f && fgets(line, sizeof line, f) && !(have_model && have_flags)) {
        char *v = strchr(line, ':');
        if (!v) continue;
        v += 2;
        v[strcspn(v, "\n")] = 0;
        if (!have_model && !strncmp(line, "model name", 10)) snprintf(model, sizeof model, "%s", v), have_model = true;
        if (!have_flags && !strncmp(line, "flags", 5)) {
            have_flags = true;
            for (char *tok = strtok(v, " "); tok; tok = strtok(NULL, " "))
                if (!strncmp(tok, "avx", 3) || !strncmp(tok, "amx", 3) || !strcmp(tok, "fma") || !strcmp(tok, "f16c"))
                    strncat(flags, tok, sizeof flags - strlen(flags) - 2), strcat(flags, " ");
        }
    }
    if (f) fclose(f);
    printf("cpu: %s\nflags: %s\n", model, flags);
}

int main(int argc, char **argv) {
    log_level = LOG_WARN;
    const char *model = argc > 1 && argv[1][0] ? argv[1] : TEST_MODEL_PATH;
    int threads[MAX_CFG], n_threads = 0;
    for (char *s = argc > 2 ? argv[2] : "1,2"; *s && n_threads < MAX_CFG; s += strcspn(s, ","), s += *s == ',')
        threads[n_threads++] = atoi(s);
    int rounds = MIN(MAX_ROUNDS, argc > 3 ? atoi(argv[3]) : 5);
    char modes_buf[256];
    snprintf(modes_buf, sizeof modes_buf, "%s", argc > 4 ? argv[4] : "int16,avx512-vnni,amx");
    const char *modes[MAX_CFG];
    int n_modes = 0;
    for (char *tok = strtok(modes_buf, ","); tok && n_modes < MAX_CFG; tok = strtok(NULL, ",")) {
        if (strcmp(tok, "int16") && !k_int8_path_set(tok)) {
            printf("skip %s: this CPU lacks it\n", tok);
            continue;
        }
        modes[n_modes++] = tok;
    }
    print_cpu();
    printf("bench_prefill: %s, prompt %d, %d new tokens, %d rounds of %d requests each\n", model, PROMPT_LEN, GEN_LEN,
           rounds, REPS);
    static double pf[MAX_CFG][MAX_CFG][MAX_ROUNDS], tp[MAX_CFG][MAX_CFG][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++)
        for (int ti = 0; ti < n_threads; ti++)
            for (int m = 0; m < n_modes; m++) {
                if (run_cfg(model, modes[m], threads[ti], &pf[ti][m][r], &tp[ti][m][r]) != SL_OK) return 1;
                fprintf(stderr, "round %d: %d threads %-12s prefill %7.1f tok/s  TPOT %6.2f ms\n", r, threads[ti],
                        modes[m], pf[ti][m][r], tp[ti][m][r]);
            }
    printf("%7s %-12s %14s %9s\n", "threads", "mode", "prefill tok/s", "TPOT ms");
    for (int ti = 0; ti < n_threads; ti++)
        for (int m = 0; m < n_modes; m++)
            printf("%7d %-12s %14.1f %9.2f\n", threads[ti], modes[m], median(pf[ti][m], rounds),
                   median(tp[ti][m], rounds));
    return 0;
}
