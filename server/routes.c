// routes.c: the endpoints that answer without the engine thread: health and readiness,
// models, version, metrics at once; tokenize and detokenize on a worker thread (work.c), since
// their work grows with the body (openai-api.md §3, §5).
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "server/openai_impl.h"
#include "server/server_impl.h"

enum MHD_Result route_health(Server *s, struct MHD_Connection *c) { return http_reply(c, s, 200, NULL, "", 0); }

// Ready: loaded, not draining, and the queue has room (a load balancer should send elsewhere).
enum MHD_Result route_ready(Server *s, struct MHD_Connection *c) {
    int state = atomic_load(&s->state);
    const char *why = state == SERVER_LOADING ? "The model is still loading." : state == SERVER_DRAINING ? "The server is shutting down." : NULL;
    if (!why) {
        pthread_mutex_lock(&s->mu);
        bool full = s->queued_seqs >= s->info.max_num_seqs + s->opt.max_queued_requests;
        pthread_mutex_unlock(&s->mu);
        if (full) why = "The request queue is full.";
    }
    if (!why) {
        static const char OK[] = "{\"status\":\"ok\"}";
        return http_reply(c, s, 200, "application/json", OK, sizeof OK - 1);
    }
    ApiError e;
    api_error(&e, 503, "unavailable_error", "service_unavailable", NULL, "%s", why);
    return http_reply_error(c, s, &e);
}

// One card per served name, each with the same root (vLLM's: every name is the same model).
static void model_object(Server *s, SBuf *b, const char *name) {
    sbuf_puts(b, "{\"id\":");
    json_str(b, name, strlen(name));
    sbuf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"sluice\",\"root\":", (long long)s->created);
    json_str(b, s->model_name, strlen(s->model_name));
    sbuf_printf(b, ",\"parent\":null,\"max_model_len\":%d}", s->info.max_model_len);
}

enum MHD_Result route_models(Server *s, struct MHD_Connection *c) {
    SBuf b = {0};
    sbuf_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < s->names.n; i++) {
        if (i) sbuf_puts(&b, ",");
        model_object(s, &b, s->names.items[i]);
    }
    sbuf_puts(&b, "]}");
    enum MHD_Result ret = http_reply_json(c, s, 200, &b);
    sbuf_free(&b);
    return ret;
}

enum MHD_Result route_model(Server *s, struct MHD_Connection *c, const char *id) {
    if (!str_list_has(&s->names, id, false)) {
        ApiError e;
        api_error(&e, 404, NULL, "model_not_found", "model",
                  "The model `%.200s` does not exist or you do not have access to it.", id);
        return http_reply_error(c, s, &e);
    }
    SBuf b = {0};
    model_object(s, &b, id);
    enum MHD_Result ret = http_reply_json(c, s, 200, &b);
    sbuf_free(&b);
    return ret;
}

enum MHD_Result route_version(Server *s, struct MHD_Connection *c) {
    static const char V[] = "{\"version\":\"" SLUICE_VERSION "\"}";
    return http_reply(c, s, 200, "application/json", V, sizeof V - 1);
}

enum MHD_Result route_metrics(Server *s, struct MHD_Connection *c) {
    MetricsEngine me = {0};
    if (atomic_load(&s->state) != SERVER_LOADING) { // the engine fields are set before the state
        EngineStats st;
        engine_stats(s->engine, &st);
        me = (MetricsEngine){
            .num_running = st.num_running,
            .num_waiting = st.num_waiting,
            .kv_usage = st.kv_usage,
            .prefix_cache_queries = st.prefix_cache_queries,
            .prefix_cache_hits = st.prefix_cache_hits,
            .num_preemptions = st.num_preemptions,
            .num_window_freed_blocks = st.num_window_freed_blocks,
            .prompt_tokens = st.prompt_tokens,
            .generation_tokens = st.generation_tokens,
            .grammar_requests = st.grammar_queries,
            .grammar_cache_hits = st.grammar_cache_hits,
            .num_constrained = st.num_constrained + st.num_grammar_compiling,
            .spec_k = s->info.spec_k,
            .spec_drafts = st.spec_drafts,
            .spec_draft_tokens = st.spec_draft_tokens,
            .spec_accepted_tokens = st.spec_accepted_tokens,
        };
        memcpy(me.spec_accepted_per_pos, st.spec_accepted_per_pos, sizeof me.spec_accepted_per_pos);
    }
    SBuf b = {0};
    metrics_render(&s->metrics, &me, atomic_load(&s->state) != SERVER_LOADING ? s->model_name : "",
                   s->opt.metrics_vllm_names, &b);
    enum MHD_Result ret = http_reply(c, s, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    sbuf_free(&b);
    return ret;
}

int32_t *server_encode(const Server *s, const char *text, size_t len, bool add_special, int *n) {
    int *ids = NULL, cap = 0;
    *n = tok_encode(s->tok, text, len, add_special && tok_add_bos(s->tok), true, &ids, &cap);
    _Static_assert(sizeof(int) == sizeof(int32_t), "token ids are int32");
    return (int32_t *)ids;
}

static int check_model(Server *s, const cJSON *root, ApiError *e) {
    const cJSON *m = oai_field(root, "model");
    if (m && !cJSON_IsString(m)) return oai_bad_type(e, "model", "a string", m);
    if (m && !str_list_has(&s->names, m->valuestring, false))
        return api_error(e, 404, NULL, "model_not_found", "model",
                         "The model `%.200s` does not exist or you do not have access to it.", m->valuestring);
    return SL_OK;
}

// POST /tokenize: {prompt, add_special_tokens=true, return_token_strs=false} or {messages,
// add_generation_prompt=true, add_special_tokens=false} -> {count, max_model_len, tokens, token_strs}
int route_tokenize(Server *s, const SBuf *body, SBuf *out, ApiError *e) {
    cJSON *root = oai_parse_object(body->data, body->len, e);
    if (!root) return SL_ERR;
    int32_t *ids = NULL;
    int n = 0;
    bool strs = false, special;
    int rc = check_model(s, root, e);
    bool chat = oai_field(root, "messages") != NULL;
    if (rc == SL_OK) rc = oai_get_bool(root, "return_token_strs", false, &strs, e);
    if (rc == SL_OK) rc = oai_get_bool(root, "add_special_tokens", !chat, &special, e);
    if (rc == SL_OK && chat) {
        OaiLimits lim = {.vocab = s->info.vocab, .max_n = 1 << 30};
        OaiRequest r;
        rc = oai_parse(OAI_CHAT, body->data, body->len, &lim, &r, e);
        bool parsed = rc == SL_OK;
        char *text = NULL;
        size_t len = 0;
        if (rc == SL_OK) rc = chat_render(&s->chat, &r, &text, &len, e);
        if (rc == SL_OK) ids = server_encode(s, text, len, special, &n);
        free(text);
        if (parsed) oai_request_free(&r);
    } else if (rc == SL_OK) {
        const cJSON *p = oai_field(root, "prompt");
        if (!cJSON_IsString(p))
            rc = p ? oai_bad_type(e, "prompt", "a string", p)
                   : api_error(e, 400, NULL, "missing_required_parameter", "prompt",
                               "Missing required parameter: 'prompt' (or 'messages').");
        else
            ids = server_encode(s, p->valuestring, strlen(p->valuestring), special, &n);
    }
    cJSON_Delete(root);
    if (rc != SL_OK) {
        free(ids);
        return SL_ERR;
    }
    sbuf_printf(out, "{\"count\":%d,\"max_model_len\":%d,\"tokens\":[", n, s->info.max_model_len);
    for (int i = 0; i < n; i++) sbuf_printf(out, i ? ",%d" : "%d", ids[i]);
    sbuf_puts(out, "],\"token_strs\":");
    if (!strs) sbuf_puts(out, "null");
    for (int i = 0; strs && i < n; i++) {
        size_t len;
        const char *piece = tok_piece(s->tok, ids[i], &len);
        sbuf_puts(out, i ? "," : "[");
        json_str(out, piece, len);
    }
    if (strs) sbuf_puts(out, n ? "]" : "[]");
    sbuf_puts(out, "}");
    free(ids);
    return SL_OK;
}

// POST /detokenize: {tokens} -> {prompt}
int route_detokenize(Server *s, const SBuf *body, SBuf *out, ApiError *e) {
    cJSON *root = oai_parse_object(body->data, body->len, e);
    if (!root) return SL_ERR;
    int32_t *ids = NULL;
    int n = 0;
    int rc = check_model(s, root, e);
    if (rc == SL_OK) {
        const cJSON *t = oai_field(root, "tokens");
        rc = t ? oai_token_ids(t, s->info.vocab, "tokens", &ids, &n, e)
               : api_error(e, 400, NULL, "missing_required_parameter", "tokens", "Missing required parameter: 'tokens'.");
    }
    cJSON_Delete(root);
    if (rc != SL_OK) return SL_ERR;
    size_t len = 0;
    char *text = tok_decode(s->tok, (const int *)ids, n, false, &len);
    free(ids);
    sbuf_puts(out, "{\"prompt\":");
    json_str(out, text, len);
    sbuf_puts(out, "}");
    free(text);
    return SL_OK;
}
