// engine_spec.c: speculative decoding in the step loop (--speculative-config, config/spec_config.h).
//
// Each step, before the scheduler plans it, every running sequence that is decoding asks for up to
// k proposals (Sequence.num_spec); the scheduler extends its decode by as many as the token budget
// and the free blocks allow (scheduler.h), and the runner returns a logits row for the last token
// and for each proposal. The proposals themselves are n-grams (engine/spec_ngram.h), written after
// the sequence's tokens before the scheduler runs, or a draft model's greedy tokens, which
// runner_draft writes once the scheduler has given them KV slots (the draft writes its own KV
// there). Verification then walks the rows in order, exactly as if each were its own decode step:
//
//   row j: sample the token t_j from row j with the sample's own sampler (min_tokens' bans,
//          penalties that have seen t_0..t_{j-1}, temperature, top-k/top-p/min-p, one draw of
//          its generator), emit it (stop checks, logprobs from row j, the outbox); stop when
//          the choice stops, when t_j differs from proposal j, or after the last row.
//
// For greedy requests that is "the longest matching prefix plus the target's next token". For
// sampled ones it is the standard rejection sampling with a point-mass draft (the n-gram proposal
// x has q(x) = 1; so has a draft model's argmax): accept x with probability min(1, p(x)/q(x)) = p(x), else draw from
// (p - q)+ normalised = p without x, renormalised. Drawing t ~ p and accepting iff t == x does
// exactly that: P(accept) = p(x), and a rejected draw is distributed as p restricted to t != x.
// Because every row costs one draw and every draw emits one token, a seeded request consumes its
// generator exactly as without speculation, and the kernels are batch invariant (a row's logits do
// not depend on the other rows of the step), so its output is the same token for token.
//
// Proposal length adapts per choice: one more than the last verification accepted (at most k),
// so a choice whose output copies its input keeps k proposals in flight while one that
// paraphrases asks for one or two, and pays for a row or two per step instead of k. With n-grams
// the length is then cut to what pays on this host: a row's cost, against a step's, is small
// where the weights stream from memory and the tiles make rows cheap (AMX) and ~0.4 of a step
// where the matmuls are compute-bound (AVX-512 on a 2-core AMD EPYC). The engine fits the line
// step seconds = t1 + c · (rows − 1) through its own recent decode steps of one sequence
// (decayed sums: the context grows, the host's load drifts), estimates the choice's recent
// acceptance per position a (accepted / (accepted + misses) over its last few verifications,
// decayed, so that it follows the output from paraphrase into copying; from a prior of 3 in 4),
// and asks for the L <= that bound which maximises the expected tokens per second,
// (1 + a + ... + a^L) / (t1 + c · L). L = 0 proposes nothing, and every SPEC_PROBE_STEPS steps
// one proposal anyway, so the acceptance keeps being measured. Only for a sequence running alone,
// the latency case speculation is for: with several running, disable_by_batch_size decides, as
// in vLLM. (A draft model's proposals cost its own forwards, which this line does not model: a
// draft keeps the bound alone.)
//
// Not speculated: structured-output requests (their grammar's bitmask is computed for one row per
// step, so a proposal after the first row would be unchecked) and requests whose acceptance stayed
// low: after SPEC_OFF_MIN_PROPOSED proposals, fewer than 1 in SPEC_OFF_RATIO accepted turns the
// choice's speculation off for the rest of the request (a miss costs the rows it added to a step).
// With disable_by_batch_size, nobody speculates while that many sequences run: a large batch
// already reads the weights once for many rows, so extra rows only add compute.
#include <stdio.h>
#include <string.h>

#include "common/common.h"
#include "engine/engine_impl.h"
#include "engine/spec_ngram.h"

#define SPEC_OFF_MIN_PROPOSED 32
#define SPEC_OFF_RATIO 5
#define SPEC_COST_DECAY 0.97   // per decode step: the line follows the last ~30 steps
#define SPEC_COST_MIN_STEPS 8  // (decayed) steps before the line is used
#define SPEC_COST_MIN_VAR 0.05 // variance of rows - 1 below which the slope is not trusted
#define SPEC_ACCEPT_DECAY 0.8f // per verification: a choice's acceptance follows its last ~5
#define SPEC_PRIOR_HITS 1.5    // and starts at 3 in 4
#define SPEC_PRIOR_TRIES 2.0
#define SPEC_PROBE_STEPS 8

void spec_cost_add(SpecCost *c, int rows, double seconds) {
    const double d = SPEC_COST_DECAY, x = rows - 1, y = seconds;
    c->w = c->w * d + 1, c->x = c->x * d + x, c->y = c->y * d + y;
    c->xx = c->xx * d + x * x, c->xy = c->xy * d + x * y;
}

bool spec_cost_line(const SpecCost *c, double *t1, double *per_row) {
    if (c->w < SPEC_COST_MIN_STEPS) return false;
    double mx = c->x / c->w, my = c->y / c->w, vxx = c->xx / c->w - mx * mx, vxy = c->xy / c->w - mx * my;
    if (vxx < SPEC_COST_MIN_VAR) return false;
    double slope = MAX(0.0, vxy / vxx), icpt = my - slope * mx;
    if (icpt <= 0) return false; // noise: no sensible line yet
    *t1 = icpt, *per_row = slope;
    return true;
}

int spec_best_len(double a, double t1, double per_row, int lmax) {
    CHECK(a >= 0 && a <= 1 && t1 > 0 && per_row >= 0);
    double tokens = 1, p = 1, best = tokens / t1;
    int best_len = 0;
    for (int len = 1; len <= lmax; len++) {
        p *= a, tokens += p;
        double rate = tokens / (t1 + per_row * len);
        if (rate > best) best = rate, best_len = len;
    }
    return best_len;
}

void engine_spec_propose(Engine *e) {
    const SpecConfig *c = &e->cfg.spec;
    Scheduler *sc = &e->sched;
    if (c->disable_by_batch_size > 0 && sc->num_running >= c->disable_by_batch_size) return;
    double t1, per_row;
    bool costed = c->method == SPEC_NGRAM && sc->num_running == 1 && spec_cost_line(&e->spec_cost, &t1, &per_row);
    for (int i = 0; i < sc->num_running; i++) {
        Sequence *seq = sc->running[i];
        seq->num_spec = 0;
        if (seq->num_tokens - seq->num_computed_tokens != 1 || !seq->forked) continue; // not decoding
        // every accepted proposal and the token after them must fit max_tokens and max_model_len
        int room = seq->max_tokens_total - seq->num_tokens - 1;
        if (room <= 0) continue;
        EngineRequest *r = engine_map_get(&e->map, seq->id);
        CHECK(r, "sequence %lld has no request", (long long)seq->id);
        Sample *s = &r->samples[seq->sample_index];
        if (s->gm || s->spec_off || s->finished) continue;
        int k = MIN(s->spec_len > 0 ? s->spec_len : c->num_speculative_tokens, room);
        if (costed) {
            double a = (s->spec_hits + SPEC_PRIOR_HITS) / (s->spec_tries + SPEC_PRIOR_TRIES);
            int best = spec_best_len(a, t1, per_row, k);
            if (best == 0 && ++s->spec_skipped < SPEC_PROBE_STEPS) continue;
            s->spec_skipped = 0;
            k = MAX(best, 1);
        }
        if (c->method == SPEC_DRAFT) { // runner_draft fills them in once they have slots
            seq->num_spec = k;
            continue;
        }
        seq->num_spec = spec_ngram_propose(seq->tokens, seq->num_tokens, c->prompt_lookup_min, c->prompt_lookup_max, k,
                                           seq->tokens + seq->num_tokens);
    }
}

void engine_spec_verify(Engine *e, EngineRequest *r, SchedEntry *en, int i) {
    int si = en->seq->sample_index;
    Sample *s = &r->samples[si];
    CHECK(en->num_samples == 1 && en->num_spec > 0 && !s->gm);
    const int32_t *prop = en->seq->tokens + en->start_pos + 1;
    int j = 0, matched = 0;
    for (;; j++) {
        SampleLogprobs lp;
        int32_t tok = engine_sample_token(e, r, s, en->sample_row, runner_spec_row(&e->runner, en, i, j), &lp);
        bool hit = j < en->num_spec && tok == prop[j];
        matched += hit;
        if (engine_emit_token(e, r, si, en->sample_row, tok, &lp) || !hit) break;
    }
    // tokens 0..j-1 were accepted proposals (their KV stays); token j is the last emitted
    en->num_accepted = j;
    e->st.generation_tokens += (uint64_t)j; // the scheduler counts the sample row itself
    e->st.spec_drafts++;
    e->st.spec_draft_tokens += (uint64_t)en->num_spec;
    e->st.spec_accepted_tokens += (uint64_t)matched;
    for (int p = 0; p < matched; p++) e->st.spec_accepted_per_pos[p]++;
    s->spec_proposed += en->num_spec;
    s->spec_accepted += matched;
    s->spec_hits = s->spec_hits * SPEC_ACCEPT_DECAY + (float)matched;
    s->spec_tries = s->spec_tries * SPEC_ACCEPT_DECAY + (float)(matched + (matched < en->num_spec));
    s->spec_len = MIN(matched + 1, e->cfg.spec.num_speculative_tokens);
    if (s->spec_proposed >= SPEC_OFF_MIN_PROPOSED && s->spec_accepted * SPEC_OFF_RATIO < s->spec_proposed)
        s->spec_off = true;
}

void engine_spec_log(const Engine *e) {
    const SpecConfig *c = &e->cfg.spec;
    char off[64] = "never off";
    if (c->disable_by_batch_size > 0) snprintf(off, sizeof off, "off at %d running sequences", c->disable_by_batch_size);
    if (c->method == SPEC_NGRAM)
        log_info("speculative decoding: ngram, %d proposals per step, n-grams of %d..%d tokens, %s",
                 c->num_speculative_tokens, c->prompt_lookup_min, c->prompt_lookup_max, off);
    else
        log_info("speculative decoding: draft model %s (%s, %d layers, dim %d), %d greedy proposals per step, %s",
                 c->model, e->draft.cfg.arch, e->draft.cfg.n_layers, e->draft.cfg.dim, c->num_speculative_tokens, off);
}

// ---- the draft model

// A proposal is a token id, so every id must mean the same bytes to both tokenizers. SL_ERR with
// the first difference in msg.
static int tok_match(const Tokenizer *target, const Tokenizer *draft, char *msg) {
    int nt = tok_vocab_size(target), nd = tok_vocab_size(draft);
    if (nt != nd) return seterr(msg, "its tokenizer has %d tokens, the target's %d", nd, nt);
    for (int id = 0; id < nt; id++) {
        size_t lt, ld;
        const char *pt = tok_piece(target, id, &lt), *pd = tok_piece(draft, id, &ld);
        if (lt != ld || memcmp(pt, pd, lt)) {
            char a[STR_SHOW_CAP(24)], b[STR_SHOW_CAP(24)];
            return seterr(msg, "token %d is \"%s\" in its tokenizer, \"%s\" in the target's", id,
                          str_show(pd, ld, 24, a), str_show(pt, lt, 24, b));
        }
    }
    if (tok_bos(target) != tok_bos(draft) || tok_eos(target) != tok_eos(draft))
        return seterr(msg, "its BOS / EOS tokens are %d / %d, the target's %d / %d", tok_bos(draft), tok_eos(draft),
                      tok_bos(target), tok_eos(target));
    return SL_OK;
}

int engine_spec_load_draft(Engine *e, int target_window, char *err) {
    const SpecConfig *c = &e->cfg.spec;
    char msg[ERR_MAX];
    CHECK(c->method == SPEC_DRAFT);
    if (wsrc_open(&e->draft_src, c->model, LOAD_AUTO, msg) != SL_OK)
        return seterr(err, "--speculative-config: draft model: %s", msg);
    EngineText t;
    if (engine_text_open(&t, &e->draft_src, NULL, msg) != SL_OK)
        return seterr(err, "--speculative-config: draft model: %s", msg);
    int rc = tok_match(e->tok, t.tok, msg);
    engine_text_close(&t);
    if (rc != SL_OK)
        return seterr(err, "--speculative-config: draft model %s: %s; a draft model must share the target's "
                      "tokenizer", c->model, msg);
    const ModelConfig *d = &e->draft_src.cfg;
    if (d->vocab < tok_vocab_size(e->tok))
        return seterr(err, "--speculative-config: draft model %s: %d vocabulary rows, the tokenizer has %d tokens",
                      c->model, d->vocab, tok_vocab_size(e->tok));
    // The target's sliding window returns blocks to the pool; the draft must not read them.
    for (int l = 0; target_window > 0 && l < d->n_layers; l++) {
        int w = model_layer_window(d, l);
        if (w == 0 || w > target_window)
            return seterr(err, "--speculative-config: draft model %s: its layer %d attends %s, but the target keeps "
                          "only the last %d positions (sliding window)", c->model, l, w ? "further back" : "the "
                          "whole context", target_window);
    }
    if (model_load_shard(&e->draft, &e->draft_src, e->cfg.max_num_batched_tokens, 0, 1, NULL, msg) != SL_OK)
        return seterr(err, "--speculative-config: draft model: %s", msg);
    e->draft_loaded = true;
    return SL_OK;
}
