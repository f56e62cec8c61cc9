// structured.c: the grammar cache, the compile threads, the compile deadline and the mask thread
// (see structured.h for the life of a constrained request).
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"
#include "engine/engine_impl.h"
#include "engine/structured.h"

#define SO_COMPILE_THREADS 2 // two slow schemas in flight still leave the rest compiling

typedef enum { SO_COMPILING = 0, SO_READY, SO_FAILED } SoState;

typedef struct SoEntry {
    GrammarKind kind;
    char *text;               // (len) the canonical text: the cache key with kind
    size_t len;
    uint64_t hash;
    SoState state;
    bool taken;               // a compile thread is on it
    Grammar *grammar;         // SO_READY
    char error[ERR_MAX];      // SO_FAILED: XGrammar's message
    double compile_s;
    EngineRequest *waiters;   // parked requests (r->so_next), SO_COMPILING only
    uint64_t last_used;
    struct SoEntry *next;
} SoEntry;

struct StructuredOutput {
    Engine *e;
    const Tokenizer *tok;
    int vocab, cache_size;
    double timeout_s;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;   // an entry to compile, or stopping
    pthread_cond_t timer_cv;  // a new deadline, or stopping
    SoEntry *entries;
    int n_entries;
    uint64_t tick;
    bool stopping;
    pthread_t workers[SO_COMPILE_THREADS], timer;
    // the vocabulary, made by the first compile (so a server that never sees a grammar never
    // pays for it at start-up); guarded by vocab_mu
    pthread_mutex_t vocab_mu;
    GrammarVocab *gv;
    char gv_err[ERR_MAX];
    StructuredStats st;       // under mu
};

// ----------------------------------------------------------------------------
// the vocabulary

static GrammarVocab *so_vocab(StructuredOutput *so, char *err) {
    pthread_mutex_lock(&so->vocab_mu);
    if (!so->gv && !so->gv_err[0]) {
        double t0 = time_now_s();
        if (grammar_vocab_from_tokenizer(&so->gv, so->tok, so->vocab, 1, so->gv_err) == SL_OK)
            log_info("structured output: XGrammar vocabulary of %d tokens in %.0f ms", so->vocab,
                     (time_now_s() - t0) * 1e3);
        else
            log_error("structured output: %s", so->gv_err);
    }
    GrammarVocab *gv = so->gv;
    if (!gv) snprintf(err, ERR_MAX, "%s", so->gv_err);
    pthread_mutex_unlock(&so->vocab_mu);
    return gv;
}

// ----------------------------------------------------------------------------
// the cache (under mu)

static SoEntry *cache_find(StructuredOutput *so, GrammarKind kind, const char *text, size_t len, uint64_t h) {
    for (SoEntry *en = so->entries; en; en = en->next)
        if (en->hash == h && en->kind == kind && en->len == len && !memcmp(en->text, text, len)) return en;
    return NULL;
}

static void entry_free(SoEntry *en) {
    grammar_free(en->grammar);
    free(en->text);
    free(en);
}

// Drops the least recently used finished entries beyond the cache size. Compiling entries stay
// (their requests are waiting); a dropped grammar lives on in the matchers that use it.
static void cache_trim(StructuredOutput *so) {
    while (so->n_entries > so->cache_size) {
        SoEntry **victim = NULL;
        for (SoEntry **p = &so->entries; *p; p = &(*p)->next)
            if ((*p)->state != SO_COMPILING && (!victim || (*p)->last_used < (*victim)->last_used)) victim = p;
        if (!victim) return;
        SoEntry *en = *victim;
        *victim = en->next;
        so->n_entries--;
        entry_free(en);
    }
}

// ----------------------------------------------------------------------------
// admission (under mu) and early ends

// A matcher per choice, then the engine's inbox; wake: tell the consumer (a parked request's
// server side waits for this). False when the engine is stopping.
static bool admit(StructuredOutput *so, EngineRequest *r, const Grammar *g, bool wake) {
    for (int i = 0; i < r->n; i++) r->samples[i].gm = grammar_matcher_new(g);
    atomic_fetch_add(&so->e->n_constrained, 1);
    return engine_inbox_push(so->e, r, wake);
}

static void end_list(EngineRequest *list, int code, const char *msg) {
    for (EngineRequest *r = list, *next; r; r = next) {
        next = r->so_next;
        r->so_next = NULL;
        engine_request_end_early(r, code, msg);
    }
}

int so_submit(StructuredOutput *so, EngineRequest *r, GrammarKind kind, const char *text, size_t len, char *err) {
    uint64_t h = hash_fnv1a(text, len) ^ (uint64_t)kind;
    r->so_t0 = time_now_s();
    pthread_mutex_lock(&so->mu);
    so->st.queries++;
    SoEntry *en = cache_find(so, kind, text, len, h);
    if (en) en->last_used = ++so->tick;
    if (en && en->state == SO_FAILED) {
        so->st.hits++;
        snprintf(err, ERR_MAX, "%s", en->error);
        pthread_mutex_unlock(&so->mu);
        return ENGINE_ERR_GRAMMAR;
    }
    if (en && en->state == SO_READY) {
        so->st.hits++;
        r->out.grammar_cache_hit = true;
        bool ok = admit(so, r, en->grammar, false);
        pthread_mutex_unlock(&so->mu);
        if (!ok) {
            seterr(err, "the server is shutting down");
            return ENGINE_ERR_STOPPED;
        }
        return SL_OK;
    }
    if (so->stopping) {
        pthread_mutex_unlock(&so->mu);
        seterr(err, "the server is shutting down");
        return ENGINE_ERR_STOPPED;
    }
    if (!en) { // a new grammar: a compile thread takes it
        en = xcalloc(1, sizeof *en);
        en->kind = kind;
        en->text = xmalloc(len + 1);
        memcpy(en->text, text, len);
        en->text[len] = '\0';
        en->len = len;
        en->hash = h;
        en->last_used = ++so->tick;
        en->next = so->entries;
        so->entries = en;
        so->n_entries++;
        r->compiled_here = true;
        pthread_cond_signal(&so->work_cv);
    }
    r->so_deadline = r->so_t0 + so->timeout_s;
    r->so_next = en->waiters;
    en->waiters = r;
    so->st.num_compiling++;
    pthread_cond_signal(&so->timer_cv);
    pthread_mutex_unlock(&so->mu);
    return SL_OK;
}

// Unlinks r from whichever entry it is parked on. Under mu.
static bool unpark(StructuredOutput *so, int64_t id, EngineRequest **out) {
    for (SoEntry *en = so->entries; en; en = en->next)
        for (EngineRequest **p = &en->waiters; *p; p = &(*p)->so_next)
            if ((*p)->id == id) {
                *out = *p;
                *p = (*p)->so_next;
                (*out)->so_next = NULL;
                so->st.num_compiling--;
                return true;
            }
    return false;
}

bool so_abort(StructuredOutput *so, int64_t id) {
    if (!so) return false;
    EngineRequest *r = NULL;
    pthread_mutex_lock(&so->mu);
    bool found = unpark(so, id, &r);
    pthread_mutex_unlock(&so->mu);
    if (found) engine_request_end_early(r, 0, NULL);
    return found;
}

void so_stats(StructuredOutput *so, StructuredStats *st) {
    memset(st, 0, sizeof *st);
    if (!so) return;
    pthread_mutex_lock(&so->mu);
    *st = so->st;
    pthread_mutex_unlock(&so->mu);
}

// ----------------------------------------------------------------------------
// the compile threads

static void *compile_main(void *arg) {
    StructuredOutput *so = arg;
    pthread_mutex_lock(&so->mu);
    for (;;) {
        SoEntry *en = NULL;
        while (!so->stopping) {
            for (en = so->entries; en && (en->state != SO_COMPILING || en->taken); en = en->next) {}
            if (en) break;
            pthread_cond_wait(&so->work_cv, &so->mu);
        }
        if (so->stopping) break;
        en->taken = true;
        pthread_mutex_unlock(&so->mu);

        char err[ERR_MAX] = "";
        Grammar *g = NULL;
        double t0 = time_now_s();
        GrammarVocab *gv = so_vocab(so, err);
        int rc = gv ? grammar_compile(gv, en->kind, en->text, en->len, &g, err) : SL_ERR;
        double dt = time_now_s() - t0;
        if (dt > 1.0) log_warn("structured output: compiling a %s of %zu bytes took %.1f s", grammar_kind_name(en->kind),
                               en->len, dt);

        pthread_mutex_lock(&so->mu);
        en->compile_s = dt;
        so->st.compiles++;
        EngineRequest *failed = NULL;
        for (EngineRequest *r = en->waiters, *next; r; r = next) {
            next = r->so_next;
            r->so_next = NULL;
            so->st.num_compiling--;
            pthread_mutex_lock(&r->mu);
            r->out.grammar_compile_s = r->compiled_here ? dt : 0;
            pthread_mutex_unlock(&r->mu);
            if (rc != SL_OK || !admit(so, r, g, true)) { // stopping: admit refused it
                r->so_next = failed;
                failed = r;
            }
        }
        en->waiters = NULL;
        if (rc == SL_OK) {
            en->state = SO_READY;
            en->grammar = g;
        } else {
            en->state = SO_FAILED;
            snprintf(en->error, sizeof en->error, "%s", err);
        }
        cache_trim(so);
        pthread_mutex_unlock(&so->mu);
        end_list(failed, rc == SL_OK ? 0 : ENGINE_ERR_GRAMMAR, rc == SL_OK ? NULL : err);
        pthread_mutex_lock(&so->mu);
    }
    pthread_mutex_unlock(&so->mu);
    return NULL;
}

// ----------------------------------------------------------------------------
// the deadline thread: a request parked longer than the timeout ends with a timeout error

static void *timer_main(void *arg) {
    StructuredOutput *so = arg;
    char msg[ERR_MAX];
    snprintf(msg, sizeof msg, "The grammar did not compile within %.3g s (--structured-output-compile-timeout); it is "
             "still compiling and a retry may find it ready", so->timeout_s);
    pthread_mutex_lock(&so->mu);
    while (!so->stopping) {
        double now = time_now_s(), next = 0;
        EngineRequest *expired = NULL;
        for (SoEntry *en = so->entries; en; en = en->next)
            for (EngineRequest **p = &en->waiters; *p;) {
                EngineRequest *r = *p;
                if (r->so_deadline <= now) {
                    *p = r->so_next;
                    r->so_next = expired;
                    expired = r;
                    so->st.num_compiling--;
                    continue;
                }
                if (next == 0 || r->so_deadline < next) next = r->so_deadline;
                p = &r->so_next;
            }
        if (expired) {
            pthread_mutex_unlock(&so->mu);
            end_list(expired, ENGINE_ERR_GRAMMAR_TIMEOUT, msg);
            pthread_mutex_lock(&so->mu);
            continue;
        }
        if (next == 0) {
            pthread_cond_wait(&so->timer_cv, &so->mu);
        } else {
            struct timespec ts = time_mono_timespec(next);
            pthread_cond_timedwait(&so->timer_cv, &so->mu, &ts);
        }
    }
    pthread_mutex_unlock(&so->mu);
    return NULL;
}

// ----------------------------------------------------------------------------
// create / destroy

StructuredOutput *so_create(Engine *e, const Tokenizer *tok, int vocab, int cache_size, double timeout_s) {
    StructuredOutput *so = xcalloc(1, sizeof *so);
    so->e = e;
    so->tok = tok;
    so->vocab = vocab;
    so->cache_size = MAX(cache_size, 1);
    so->timeout_s = timeout_s > 0 ? timeout_s : 1e9;
    pthread_mutex_init(&so->mu, NULL);
    pthread_mutex_init(&so->vocab_mu, NULL);
    pthread_cond_init(&so->work_cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&so->timer_cv, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < SO_COMPILE_THREADS; i++)
        CHECK(pthread_create(&so->workers[i], NULL, compile_main, so) == 0, "cannot start a compile thread");
    CHECK(pthread_create(&so->timer, NULL, timer_main, so) == 0, "cannot start the compile deadline thread");
    return so;
}

void so_destroy(StructuredOutput *so) {
    if (!so) return;
    pthread_mutex_lock(&so->mu);
    so->stopping = true;
    pthread_cond_broadcast(&so->work_cv);
    pthread_cond_broadcast(&so->timer_cv);
    pthread_mutex_unlock(&so->mu);
    for (int i = 0; i < SO_COMPILE_THREADS; i++) pthread_join(so->workers[i], NULL);
    pthread_join(so->timer, NULL);
    for (SoEntry *en = so->entries, *next; en; en = next) {
        next = en->next;
        end_list(en->waiters, 0, NULL);
        entry_free(en);
    }
    grammar_vocab_free(so->gv);
    pthread_mutex_destroy(&so->mu);
    pthread_mutex_destroy(&so->vocab_mu);
    pthread_cond_destroy(&so->work_cv);
    pthread_cond_destroy(&so->timer_cv);
    free(so);
}

// ----------------------------------------------------------------------------
// the mask thread

static void *mask_main(void *arg) {
    MaskWorker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->posted && !w->stopping) pthread_cond_wait(&w->cv, &w->mu);
        if (w->stopping) break;
        w->posted = false;
        int n = w->n;
        pthread_mutex_unlock(&w->mu);
        for (int i = 0; i < n; i++)
            w->restrict_[i] = grammar_matcher_fill(w->matchers[i], w->masks + (size_t)i * (size_t)w->words);
        pthread_mutex_lock(&w->mu);
        w->done = true;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

void mask_worker_init(MaskWorker *w, int cap, int vocab) {
    memset(w, 0, sizeof *w);
    w->cap = cap;
    w->words = grammar_mask_words(vocab);
    w->matchers = xcalloc((size_t)cap, sizeof(GrammarMatcher *));
    w->masks = xmalloc_aligned((size_t)cap * (size_t)w->words * sizeof(uint32_t));
    w->restrict_ = xcalloc((size_t)cap, sizeof(bool));
    w->done = true;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    CHECK(pthread_create(&w->thread, NULL, mask_main, w) == 0, "cannot start the mask thread");
}

void mask_worker_free(MaskWorker *w) {
    if (!w->matchers) return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->matchers);
    free(w->masks);
    free(w->restrict_);
    memset(w, 0, sizeof *w);
}

void mask_worker_post(MaskWorker *w, int n) {
    CHECK(n <= w->cap);
    pthread_mutex_lock(&w->mu);
    CHECK(w->done, "mask_worker_post while a fill is running");
    w->n = n;
    w->done = false;
    w->posted = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void mask_worker_wait(MaskWorker *w) {
    pthread_mutex_lock(&w->mu);
    while (!w->done) pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}
