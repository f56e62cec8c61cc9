// engine_sample.c: the engine thread's per-token work after the forward: structured output's
// masks, sampling a row, emitting a token (stop checks, detokenizing, the outbox), and prompt
// logprobs. engine.c's step calls these for plain decodes and prefill chunks, engine_spec.c for
// each verified row of a speculative decode.
#include <string.h>

#include "common/common.h"
#include "engine/engine_impl.h"

// Structured output: the constrained rows this step samples hand their matchers to the mask
// thread, which fills their bitmasks while the forward runs. mask_row maps a sample row to its
// mask. Returns how many were posted.
int engine_masks_post(Engine *e, const SchedOutput *out) {
    if (atomic_load(&e->n_constrained) == 0) return 0;
    int n = 0;
    for (int i = 0; i < out->num_entries; i++) {
        const SchedEntry *en = &out->entries[i];
        if (en->num_samples == 0) continue;
        EngineRequest *r = engine_map_get(&e->map, en->seq->id);
        for (int j = 0; j < en->num_samples; j++) {
            GrammarMatcher *gm = r->samples[en->num_samples > 1 ? j : en->seq->sample_index].gm;
            e->mask_row[en->sample_row + j] = gm ? n : -1;
            if (gm) e->masks.matchers[n++] = gm;
        }
    }
    if (n) mask_worker_post(&e->masks, n);
    return n;
}

// Applies sample row `row`'s bitmask to its logits. Returns n_ban, or 0 when min_tokens would
// ban everything the grammar allows (its end): the grammar wins.
static int engine_mask_apply(Engine *e, int row, float *logits, int n_ban) {
    int k = e->mask_row[row];
    CHECK(k >= 0, "constrained sample row %d has no mask", row);
    if (!e->masks.restrict_[k]) return n_ban;
    const uint32_t *mask = e->masks.masks + (size_t)k * (size_t)e->masks.words;
    grammar_mask_apply(mask, logits, e->info.vocab);
    if (n_ban == 0) return 0; // nothing to weigh the mask against
    long allowed = 0;
    for (int w = 0; w < e->masks.words; w++) allowed += __builtin_popcount(mask[w]);
    for (int b = 0; b < n_ban; b++)
        if (mask[e->ban[b] >> 5] >> (e->ban[b] & 31) & 1u) allowed--;
    return allowed > 0 ? n_ban : 0;
}

int32_t engine_sample_token(Engine *e, EngineRequest *r, Sample *s, int row, float *logits, SampleLogprobs *lp) {
    // min_tokens: EOS and stop tokens are banned after the raw logprobs are taken (vLLM's order)
    int n_ban = stop_min_tokens_ban(&r->stop, e->eog_ids, e->n_eog, s->num_out, e->ban);
    if (s->gm) n_ban = engine_mask_apply(e, row, logits, n_ban);
    return sampler_sample_banned(&s->params, &s->sampler, logits, e->info.vocab, e->ban, n_ban, &e->scratch,
                                 r->want_logprobs ? lp : NULL);
}

bool engine_emit_token(Engine *e, EngineRequest *r, int si, int row_idx, int32_t tok, const SampleLogprobs *lp) {
    Sample *s = &r->samples[si];
    sampler_state_accept(&s->sampler, tok);
    s->num_out++;

    // stop token, then the text it adds (none for a stop token unless asked), then stop strings
    StopKind kind = stop_check_token(&r->stop, e->tok, tok, s->num_out);
    if (s->gm) { // the grammar's end (a stop token accepted, with ignore_eos too) ends the sample
        bool ok = grammar_matcher_accept(s->gm, tok);
        if (!ok) log_warn("request %lld: the grammar refused token %d that its mask allowed; ending the choice",
                          (long long)r->id, tok);
        if ((!ok || grammar_matcher_terminated(s->gm)) && kind == STOP_NONE) kind = STOP_EOS;
    }
    int n = 0;
    if (kind == STOP_NONE || r->stop.include_stop_str)
        n = detok_feed(&s->detok, e->tok, tok, e->detok_buf, e->detok_cap);
    bool check = kind == STOP_NONE && s->num_out >= r->stop.min_tokens;
    size_t n_final;
    int m = stop_text_push(&s->text, &r->stop, e->detok_buf, (size_t)n, check, false, &n_final);
    if (m >= 0) {
        kind = STOP_STRING;
        s->stop_str = m;
    }
    if (kind == STOP_TOKEN) s->stop_token = tok;
    s->stop_kind = kind;
    e->sampled[row_idx] = tok;
    e->stop_flags[row_idx] = kind != STOP_NONE;

    double now = time_now_s();
    if (r->t_first_token == 0) r->t_first_token = now;
    pthread_mutex_lock(&r->mu);
    engine_outbox_push_token(r, si, tok, r->want_logprobs ? lp : NULL);
    engine_outbox_push_text(r, si, s->text.buf, n_final);
    if (r->out.t_first_token == 0) r->out.t_first_token = now;
    pthread_mutex_unlock(&r->mu);
    stop_text_consume(&s->text, n_final);
    engine_touch(e, r);
    return kind != STOP_NONE;
}

// Samples row j of entry en from logits `row`, runs the stop checks and fills the outbox.
void engine_sample_one(Engine *e, EngineRequest *r, const SchedEntry *en, int j, float *row) {
    int si = en->num_samples > 1 ? j : en->seq->sample_index;
    float *logits = row;
    if (j < en->num_samples - 1) { // the sampler works in place: keep the row for the next sample
        memcpy(e->row_copy, row, (size_t)e->info.vocab * sizeof(float));
        logits = e->row_copy;
    }
    SampleLogprobs lp;
    int32_t tok = engine_sample_token(e, r, &r->samples[si], en->sample_row + j, logits, &lp);
    engine_emit_token(e, r, si, en->sample_row + j, tok, &lp);
}

// Reduces this step's prompt rows to (logprob of the next prompt token, top-k) right after the
// forward, into each request's plp (allocated at submit); the request publishes them once the
// whole prompt is done. A row's logits depend only on its own sequence (the kernels are batch
// invariant), so the result does not depend on the chunking or on the other entries.
void engine_prompt_logprobs(Engine *e, const SchedOutput *out) {
    for (int i = 0; i < out->num_entries; i++) {
        if (e->prompt_rows[i] == 0) continue;
        const SchedEntry *en = &out->entries[i];
        EngineRequest *r = engine_map_get(&e->map, en->seq->id);
        for (int j = 0; j < e->prompt_rows[i]; j++) {
            int pos = en->start_pos + j + 1;
            sampler_logprobs(runner_prompt_row(&e->runner, i, j), e->info.vocab, r->plp[pos].token, r->prompt_lp,
                             &e->scratch, &r->plp[pos]);
        }
        if (en->start_pos + e->prompt_rows[i] == r->n_prompt - 1) r->plp_done = true;
    }
}
