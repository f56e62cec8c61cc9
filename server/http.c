// http.c: the libmicrohttpd daemon: options, routing, auth, request bodies, replies, and the
// server's life cycle (start, ready, drain, stop). Generation lives in generate.c, the routes
// that answer at once in routes.c, the watcher thread in live.c.
//
// The access handler runs on MHD's epoll pool threads and never blocks. For a POST it is called
// (1) with the headers (upload_data NULL): framing, route, method, auth, Content-Type and
// Content-Length are checked here, so an oversized body is refused with 413 before it is read;
// (2) once per body chunk: appended up to --max-body-size, then counted and dropped; (3) with
// the body complete: the route's handler answers; a route whose work grows with the body
// (tokenize, generation) first goes to a worker thread (work.c) with the connection suspended,
// and is called again to reply, or (generation) to submit and suspend the connection.
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "server/server_impl.h"
#include "server/web.h"

// libmicrohttpd's per-connection pool: the request line and headers (larger ones get 431) and
// the write buffer of a stream. Smaller than its 32 KiB default, so idle streams stay cheap.
#define HTTP_CONN_MEMORY (16 * 1024)

// ----------------------------------------------------------------------------
// options

void server_options_defaults(ServerOptions *o) {
    memset(o, 0, sizeof *o);
    o->host = xstrdup("127.0.0.1");
    o->port = 8000;
    o->max_body_size = 8u << 20;
    o->max_connections = 8192;
    o->timeout = 60;
    o->request_header_timeout = 10.0f;
    o->request_body_timeout = 60.0f;
    o->http_threads = 4;
    o->max_n = 16;
    o->max_queued_requests = 256;
    o->keepalive = 10.0f;
    o->shutdown_timeout = 30.0f;
    o->allowed_origins = xstrdup("[\"*\"]"); // vLLM's defaults: any origin, method and header
    o->allowed_methods = xstrdup("[\"*\"]");
    o->allowed_headers = xstrdup("[\"*\"]");
    o->max_log_len = -1;
}

void server_options_free(ServerOptions *o) {
    free(o->host);
    free(o->api_key);
    free(o->served_model_name);
    free(o->chat_template);
    free(o->allowed_origins);
    free(o->allowed_methods);
    free(o->allowed_headers);
    free(o->tool_call_parser);
    free(o->reasoning_parser);
    memset(o, 0, sizeof *o);
}

int server_flags(ServerOptions *o, Flag *out) {
    Flag rows[] = {
        {"--host", "SLUICE_HOST", FLAG_STR, &o->host, 0, 0, "address to listen on (0.0.0.0 or :: to expose)", ""},
        {"--port", "SLUICE_PORT", FLAG_INT, &o->port, 0, 65535, "TCP port (0 = any free port)", ""},
        {"--api-key", "SLUICE_API_KEY", FLAG_STR, &o->api_key, 0, 0,
         "require 'Authorization: Bearer KEY' (health, version and metrics stay open)", ""},
        {"--served-model-name", "SLUICE_SERVED_MODEL_NAME", FLAG_LIST, &o->served_model_name, 0, 0,
         "model ids ('a b', a,b or [\"a\",\"b\"]): requests may name any, /v1/models lists all, responses "
         "report the one asked for, else the first (none: the model file name without .gguf)", ""},
        {"--chat-template", "SLUICE_CHAT_TEMPLATE", FLAG_STR, &o->chat_template, 0, 0,
         "Jinja chat template file replacing the model's own", ""},
        {"--max-body-size", "SLUICE_MAX_BODY_SIZE", FLAG_SIZE, &o->max_body_size, 0, 0,
         "largest request body; larger ones get 413", ""},
        {"--max-connections", "SLUICE_MAX_CONNECTIONS", FLAG_INT, &o->max_connections, 1, 1 << 20,
         "open HTTP connections at most, and 8 more kept for the probe routes (/health, ...); the fd limit is "
         "raised to fit", ""},
        {"--timeout", "SLUICE_TIMEOUT", FLAG_INT, &o->timeout, 1, 86400,
         "seconds of inactivity (no bytes either way) before a connection is closed", ""},
        {"--request-header-timeout", "SLUICE_REQUEST_HEADER_TIMEOUT", FLAG_FLOAT, &o->request_header_timeout, 0.1,
         86400, "seconds from a request's first byte to its last header; a slower client is disconnected "
         "(however often it sends a byte)", ""},
        {"--request-body-timeout", "SLUICE_REQUEST_BODY_TIMEOUT", FLAG_FLOAT, &o->request_body_timeout, 0.1, 86400,
         "seconds from a request's headers to the end of its body; a slower client is disconnected", ""},
        {"--http-threads", "SLUICE_HTTP_THREADS", FLAG_INT, &o->http_threads, 1, 256,
         "HTTP epoll threads, and as many worker threads for request bodies (parse, chat template, tokenizer)", ""},
        {"--max-n", "SLUICE_MAX_N", FLAG_INT, &o->max_n, 1, 1024, "largest n (choices per request)", ""},
        {"--max-tokens-cap", "SLUICE_MAX_TOKENS_CAP", FLAG_INT, &o->max_tokens, 0, 1 << 24,
         "largest max_tokens a request may ask for (0 = what the context allows)", ""},
        {"--max-queued-requests", "SLUICE_MAX_QUEUED_REQUESTS", FLAG_INT, &o->max_queued_requests, 0, 1 << 20,
         "sequences that may wait beyond --max-num-seqs; more get 429", ""},
        {"--max-queued-tokens", "SLUICE_MAX_QUEUED_TOKENS", FLAG_INT, &o->max_queued_tokens, 0, 1 << 30,
         "prompt tokens that may wait to start; more get 429 (0 = 16 x max-model-len)", ""},
        {"--keepalive-interval", "SLUICE_KEEPALIVE_INTERVAL", FLAG_FLOAT, &o->keepalive, 0.1, 3600,
         "seconds between ': keep-alive' comments on an idle stream", ""},
        {"--shutdown-timeout", "SLUICE_SHUTDOWN_TIMEOUT", FLAG_FLOAT, &o->shutdown_timeout, 0, 86400,
         "seconds in-flight requests may run after SIGTERM before they are aborted", ""},
        {"--allowed-origins", "SLUICE_ALLOWED_ORIGINS", FLAG_LIST, &o->allowed_origins, 0, 0,
         "CORS: origins browsers may call from, a JSON list or comma-separated (\"*\": any)", ""},
        {"--allowed-methods", "SLUICE_ALLOWED_METHODS", FLAG_LIST, &o->allowed_methods, 0, 0,
         "CORS: methods a preflight may ask for (\"*\": any)", ""},
        {"--allowed-headers", "SLUICE_ALLOWED_HEADERS", FLAG_LIST, &o->allowed_headers, 0, 0,
         "CORS: request headers a preflight may ask for (\"*\": any)", ""},
        {"--allow-credentials", "SLUICE_ALLOW_CREDENTIALS", FLAG_BOOL, &o->allow_credentials, 0, 0,
         "CORS: allow credentials (cookies, Authorization); the request's Origin is echoed instead of *", ""},
        {"--enable-log-requests", "SLUICE_ENABLE_LOG_REQUESTS", FLAG_BOOL, &o->enable_log_requests, 0, 0,
         "put the prompt text in each request's log line (off: never logged)", ""},
        {"--max-log-len", "SLUICE_MAX_LOG_LEN", FLAG_INT, &o->max_log_len, -1, 1 << 30,
         "characters of the prompt the request log line keeps (-1: all)", ""},
        {"--metrics-vllm-names", "SLUICE_METRICS_VLLM_NAMES", FLAG_BOOL, &o->metrics_vllm_names, 0, 0,
         "/metrics also carries vLLM's metrics under their vllm: names, for dashboards written for vLLM", ""},
        {"--disable-web-ui", "SLUICE_DISABLE_WEB_UI", FLAG_BOOL, &o->disable_web_ui, 0, 0,
         "no chat page at GET / and /chat (they answer 404)", ""},
        {"--enable-auto-tool-choice", "SLUICE_ENABLE_AUTO_TOOL_CHOICE", FLAG_BOOL, &o->enable_auto_tool_choice, 0,
         0, "read the model's tool calls back into message.tool_calls (needs --tool-call-parser)", ""},
        {"--tool-call-parser", "SLUICE_TOOL_CALL_PARSER", FLAG_STR, &o->tool_call_parser, 0, 0,
         "the model's tool-call format: hermes, llama3_json, mistral or pythonic", ""},
        {"--reasoning-parser", "SLUICE_REASONING_PARSER", FLAG_STR, &o->reasoning_parser, 0, 0,
         "split <think> text into reasoning_content: deepseek_r1 or qwen3", ""},
    };
    int n = (int)ARRAY_LEN(rows);
    CHECK(n <= SERVER_MAX_FLAGS);
    for (int i = 0; i < n; i++) {
        out[i] = rows[i];
        flag_set_default(&out[i]);
    }
    return n;
}

// ----------------------------------------------------------------------------
// replies

enum MHD_Result http_reply(struct MHD_Connection *c, Server *s, int status, const char *ctype, const char *body,
                           size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    if (ctype) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (status == 429 || status == 503) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (s) access_decorate(s, c, r, status);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    if (s) metrics_http_status(&s->metrics, status);
    return ret;
}

enum MHD_Result http_reply_json(struct MHD_Connection *c, Server *s, int status, const SBuf *body) {
    return http_reply(c, s, status, "application/json", body->data ? body->data : "", body->len);
}

enum MHD_Result http_reply_error(struct MHD_Connection *c, Server *s, const ApiError *e) {
    SBuf b = {0};
    resp_error_body(&b, e);
    enum MHD_Result ret = http_reply_json(c, s, e->status, &b);
    sbuf_free(&b);
    return ret;
}

static enum MHD_Result reply_errorf(struct MHD_Connection *c, Server *s, int status, const char *type,
                                    const char *code, const char *msg) {
    ApiError e;
    api_error(&e, status, type, code, NULL, "%s", msg);
    return http_reply_error(c, s, &e);
}

// ----------------------------------------------------------------------------
// routing

typedef enum {
    R_HEALTH, R_READY, R_MODELS, R_MODEL, R_VERSION, R_METRICS, R_TOKENIZE, R_DETOKENIZE, R_CHAT, R_COMPLETIONS,
    R_WEB, R_COUNT
} RouteId;

static const struct {
    const char *path;      // exact, or a prefix ending in '/' for R_MODEL
    const char *method;
    bool open;             // served without the API key
    const char *id_prefix; // of the request id when the client sends no X-Request-Id (vLLM's)
} ROUTES[R_COUNT] = {
    [R_HEALTH] = {"/health", "GET", true, ""},
    [R_READY] = {"/health/ready", "GET", true, ""},
    [R_MODELS] = {"/v1/models", "GET", false, ""},
    [R_MODEL] = {"/v1/models/", "GET", false, ""},
    [R_VERSION] = {"/version", "GET", true, ""},
    [R_METRICS] = {"/metrics", "GET", true, ""},
    [R_TOKENIZE] = {"/tokenize", "POST", false, "tokn-"},
    [R_DETOKENIZE] = {"/detokenize", "POST", false, "tokn-"},
    [R_CHAT] = {"/v1/chat/completions", "POST", false, "chatcmpl-"},
    [R_COMPLETIONS] = {"/v1/completions", "POST", false, "cmpl-"},
    // the page asks for the key itself and sends it with its API calls (server/web.h)
    [R_WEB] = {"/chat", "GET", true, ""}, // and every file web_asset() knows
};

static ConnSlot *conn_slot(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

HttpConn *http_conn_of(struct MHD_Connection *c) {
    ConnSlot *slot = conn_slot(c);
    return slot ? slot->cur : NULL;
}

// The route of url, or -1; *method_ok says whether method is the route's (HEAD counts as GET).
static int route_find(const char *url, const char *method, bool *method_ok) {
    for (int i = 0; i < R_COUNT; i++) {
        bool hit = i == R_MODEL ? strncmp(url, ROUTES[i].path, strlen(ROUTES[i].path)) == 0 && url[11]
                   : i == R_WEB ? web_asset(url) != NULL
                                : strcmp(url, ROUTES[i].path) == 0;
        if (!hit) continue;
        *method_ok = !strcmp(method, ROUTES[i].method) || (!strcmp(method, "HEAD") && !strcmp(ROUTES[i].method, "GET"));
        return i;
    }
    return -1;
}

// Constant-time in the key's content: every byte of the longer string is looked at.
static bool key_equal(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b), n = MAX(na, nb);
    unsigned char diff = (unsigned char)(na != nb);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < na ? (unsigned char)a[i] : 0, y = i < nb ? (unsigned char)b[i] : 0;
        diff |= x ^ y;
    }
    return diff == 0;
}

static bool auth_ok(Server *s, struct MHD_Connection *c) {
    if (!s->opt.api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    while (*h == ' ') h++;
    return key_equal(h, s->opt.api_key);
}

// An error reply with one more header (Allow for a 405, Connection: close after bad framing).
static enum MHD_Result reply_error_header(struct MHD_Connection *c, Server *s, const ApiError *e, const char *name,
                                          const char *value) {
    SBuf b = {0};
    resp_error_body(&b, e);
    struct MHD_Response *r = MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
    sbuf_free(&b);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, name, value);
    access_decorate(s, c, r, e->status);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)e->status, r);
    MHD_destroy_response(r);
    metrics_http_status(&s->metrics, e->status);
    return ret;
}

// The body's framing headers, every occurrence (MHD's lookup returns only the first).
typedef struct {
    int n_length, n_encoding;
    const char *length;     // the first Content-Length
    bool length_differs;    // a later one says something else
    bool encoding_other;    // a Transfer-Encoding other than plain "chunked"
} Framing;

static enum MHD_Result framing_scan(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    Framing *f = cls;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        if (f->length && strcmp(f->length, value ? value : "") != 0) f->length_differs = true;
        if (!f->length) f->length = value ? value : "";
        f->n_length++;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        if (!value || strcasecmp(value, "chunked") != 0) f->encoding_other = true;
        f->n_encoding++;
    }
    return MHD_YES;
}

// RFC 9112 §6: a body whose length two parsers could read differently (Content-Length values
// that differ, a Transfer-Encoding other than plain chunked, or both headers) is refused with
// 400 and the connection closed: a proxy in front that took the other reading would otherwise
// see a second, smuggled request in what follows. SL_ERR with *ret queued.
static int framing_check(Server *s, struct MHD_Connection *c, enum MHD_Result *ret) {
    Framing f = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, framing_scan, &f);
    const char *why = f.length_differs                   ? "Content-Length headers that differ"
                      : f.encoding_other || f.n_encoding > 1 ? "a Transfer-Encoding other than chunked"
                      : f.n_encoding && f.n_length           ? "both Transfer-Encoding and Content-Length"
                                                             : NULL;
    if (!why) return SL_OK;
    ApiError e;
    api_error(&e, 400, NULL, "bad_framing", NULL,
              "The request's body length is ambiguous (%s); send one Content-Length or chunked alone.", why);
    *ret = reply_error_header(c, s, &e, MHD_HTTP_HEADER_CONNECTION, "close");
    return SL_ERR;
}

// The headers phase for url's route (route_find's answer): SL_OK to go on reading the body, or a
// response is queued (*ret).
static int headers_check(Server *s, HttpConn *hc, struct MHD_Connection *c, const char *url, const char *method,
                         int route, bool method_ok, enum MHD_Result *ret) {
    char msg[ERR_MAX];
    if (framing_check(s, c, ret) != SL_OK) return SL_ERR;
    if (conn_reserved(conn_slot(c)) && !hc->probe) { // a probe's connection: not for this
        ApiError e;
        api_error(&e, 503, "server_error", "service_unavailable", NULL,
                  "The server is at --max-connections (%d); retry later.", s->opt.max_connections);
        *ret = reply_error_header(c, s, &e, MHD_HTTP_HEADER_CONNECTION, "close");
        return SL_ERR;
    }
    if (route >= 0 && !ROUTES[route].open && !auth_ok(s, c)) {
        *ret = reply_errorf(c, s, 401, "invalid_request_error", "invalid_api_key",
                            "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'.");
        return SL_ERR;
    }
    if (route < 0) {
        snprintf(msg, sizeof msg, "Invalid URL (%.16s %.400s)", method, url);
        *ret = reply_errorf(c, s, 404, "invalid_request_error", "not_found", msg);
        return SL_ERR;
    }
    if (!method_ok) {
        snprintf(msg, sizeof msg, "Method %.16s is not allowed for %.400s; use %s.", method, url, ROUTES[route].method);
        ApiError e;
        api_error(&e, 405, NULL, "method_not_allowed", NULL, "%s", msg);
        *ret = reply_error_header(c, s, &e, MHD_HTTP_HEADER_ALLOW, ROUTES[route].method);
        return SL_ERR;
    }
    hc->route = route;
    if (strcmp(ROUTES[route].method, "POST") != 0) return SL_OK;
    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ctype && strncasecmp(ctype, "application/json", 16) != 0) {
        snprintf(msg, sizeof msg, "Unsupported Content-Type '%.100s': send the body as application/json.", ctype);
        *ret = reply_errorf(c, s, 400, "invalid_request_error", "unsupported_media_type", msg);
        return SL_ERR;
    }
    const char *clen = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (clen) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(clen, &end, 10);
        if (errno || *end || n > s->opt.max_body_size) {
            snprintf(msg, sizeof msg, "Request body of %.30s bytes is larger than the limit of %zu bytes.", clen,
                     s->opt.max_body_size);
            *ret = reply_errorf(c, s, 413, "invalid_request_error", "request_too_large", msg);
            return SL_ERR;
        }
    }
    if (atomic_load(&s->state) == SERVER_DRAINING && (route == R_CHAT || route == R_COMPLETIONS)) {
        *ret = reply_errorf(c, s, 503, "server_error", "service_unavailable",
                            "The server is shutting down; retry on another replica.");
        return SL_ERR;
    }
    return SL_OK;
}

// The routes whose work grows with the body: it runs on a worker thread (work.c).
static bool route_works(int route) {
    return route == R_TOKENIZE || route == R_DETOKENIZE || route == R_CHAT || route == R_COMPLETIONS;
}

void work_run(Server *s, HttpConn *hc) {
    switch ((RouteId)hc->route) {
    case R_TOKENIZE: hc->work_rc = route_tokenize(s, &hc->body, &hc->work_out, &hc->work_err); return;
    case R_DETOKENIZE: hc->work_rc = route_detokenize(s, &hc->body, &hc->work_out, &hc->work_err); return;
    case R_CHAT: gen_prepare(s, hc, OAI_CHAT); return;
    case R_COMPLETIONS: gen_prepare(s, hc, OAI_COMPLETION); return;
    default: DIE("route %d has no work", hc->route);
    }
}

static enum MHD_Result work_reply(Server *s, HttpConn *hc, struct MHD_Connection *c) {
    if (hc->work_rc != SL_OK) return http_reply_error(c, s, &hc->work_err);
    enum MHD_Result ret = http_reply_json(c, s, 200, &hc->work_out);
    sbuf_free(&hc->work_out);
    return ret;
}

static enum MHD_Result dispatch(Server *s, HttpConn *hc, struct MHD_Connection *c) {
    if (atomic_load(&s->state) == SERVER_LOADING && hc->route != R_HEALTH && hc->route != R_READY &&
        hc->route != R_VERSION && hc->route != R_METRICS && hc->route != R_WEB)
        return reply_errorf(c, s, 503, "server_error", "service_unavailable", "The model is still loading.");
    if (route_works(hc->route) && !hc->worked) {
        if (!hc->settled) { // see the comment at HttpConn.settled: suspend on the next call, not this one
            hc->settled = true;
            return MHD_YES;
        }
        if (work_submit(s, hc, c)) return MHD_YES; // called again when the work is done
        hc->work_cancelled = true;
    }
    if (hc->work_cancelled)
        return reply_errorf(c, s, 503, "server_error", "service_unavailable", "The server is shutting down.");
    switch ((RouteId)hc->route) {
    case R_HEALTH: return route_health(s, c);
    case R_READY: return route_ready(s, c);
    case R_MODELS: return route_models(s, c);
    case R_MODEL: return route_model(s, c, hc->url + strlen(ROUTES[R_MODEL].path));
    case R_VERSION: return route_version(s, c);
    case R_METRICS: return route_metrics(s, c);
    case R_TOKENIZE:
    case R_DETOKENIZE: return work_reply(s, hc, c);
    case R_CHAT:
    case R_COMPLETIONS: return gen_start(s, hc, c);
    case R_WEB: return route_web(s, c, hc->url);
    case R_COUNT: break;
    }
    DIE("route %d", hc->route);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size,
                                  void **con_cls) {
    Server *s = cls;
    HttpConn *hc = *con_cls;
    if (!hc) { // (1) headers
        hc = xcalloc(1, sizeof *hc);
        hc->srv = s;
        hc->url = url;
        hc->route = -1;
        hc->http11 = version && strcmp(version, MHD_HTTP_VERSION_1_0) != 0;
        *con_cls = hc;
        ConnSlot *slot = conn_slot(c);
        if (slot) slot->cur = hc;
        bool method_ok = false;
        int route = route_find(url, method, &method_ok);
        if (route == R_WEB && s->opt.disable_web_ui) route = -1; // a 404, as for any unknown path
        hc->probe = route >= 0 && ROUTES[route].open;
        conn_phase(s, slot, CONN_BODY);
        access_begin(hc, c, method, url, route >= 0 ? ROUTES[route].id_prefix : "");
        enum MHD_Result ret = MHD_YES;
        if (access_preflight(s, hc, c, &ret) || headers_check(s, hc, c, url, method, route, method_ok, &ret) != SL_OK)
            hc->responded = true;
        return ret;
    }
    if (hc->responded) { // refused in the headers phase: MHD discards the body
        *upload_size = 0;
        return MHD_YES;
    }
    if (hc->gen) return gen_resume(s, hc, c);
    if (*upload_size) { // (2) a body chunk
        size_t n = *upload_size;
        hc->body_seen += n;
        if (hc->body_seen <= s->opt.max_body_size) sbuf_put(&hc->body, upload_data, n);
        *upload_size = 0;
        return MHD_YES;
    }
    // (3) the body is complete
    conn_phase(s, conn_slot(c), CONN_BUSY);
    if (hc->body_seen > s->opt.max_body_size) {
        char msg[ERR_MAX];
        snprintf(msg, sizeof msg, "Request body of %zu bytes is larger than the limit of %zu bytes.", hc->body_seen,
                 s->opt.max_body_size);
        sbuf_free(&hc->body);
        return reply_errorf(c, s, 413, "invalid_request_error", "request_too_large", msg);
    }
    if (!hc->body.data) sbuf_put(&hc->body, "", 0); // parsers want a NUL-terminated buffer
    return dispatch(s, hc, c);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    HttpConn *hc = *con_cls;
    if (!hc) return;
    conn_phase(cls, conn_slot(c), CONN_IDLE);
    access_log(hc); // before gen_conn_closed: from then on the live thread owns hc->gen
    if (hc->gen) gen_conn_closed(hc->gen, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    ConnSlot *slot = conn_slot(c);
    if (slot && slot->cur == hc) slot->cur = NULL;
    sbuf_free(&hc->body);
    sbuf_free(&hc->work_out);
    gen_prep_free(hc->prep);
    free(hc->client_id);
    free(hc);
    *con_cls = NULL;
}

// The connection's request, for replies made where only the connection is at hand (routes.c):
// MHD keeps a context per TCP connection, and the requests on one connection come one at a time.
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    if (code == MHD_CONNECTION_NOTIFY_STARTED) conn_opened(cls, c, socket_context);
    else conn_closed(cls, socket_context);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    log_debug("libmicrohttpd: %s", buf);
}

// ----------------------------------------------------------------------------
// life cycle

// Up to max_connections sockets plus the model, logs and the engine: raise the soft fd limit.
static void raise_fd_limit(int want) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t need = (rlim_t)want + 64;
    if (rl.rlim_cur >= need) return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) log_warn("cannot raise the open-file limit: %s", strerror(errno));
    if (rl.rlim_cur < need)
        log_warn("open-file limit %llu is below --max-connections %d", (unsigned long long)rl.rlim_cur, want);
}

// --tool-call-parser, --enable-auto-tool-choice and --reasoning-parser (vLLM's rules: auto tool
// choice needs a parser; a parser alone is accepted and unused).
static int parsers_init(Server *s, char *err) {
    const ServerOptions *o = &s->opt;
    if (o->tool_call_parser && !(s->tool_fmt = tool_format_from_name(o->tool_call_parser)))
        return seterr(err, "--tool-call-parser %s: unknown parser (one of %s)", o->tool_call_parser,
                      TOOL_PARSER_NAMES);
    if (o->enable_auto_tool_choice && !o->tool_call_parser)
        return seterr(err, "--enable-auto-tool-choice needs --tool-call-parser (one of %s)", TOOL_PARSER_NAMES);
    if (!o->enable_auto_tool_choice) s->tool_fmt = TOOL_FMT_NONE;
    if (o->reasoning_parser && !(s->reason_fmt = reason_format_from_name(o->reasoning_parser)))
        return seterr(err, "--reasoning-parser %s: unknown parser (deepseek_r1 or qwen3)", o->reasoning_parser);
    return SL_OK;
}

int server_start(Server **out, const ServerOptions *o, Engine *engine, const char *model_path, char *err) {
    *out = NULL;
    // SIGTERM/SIGINT are taken by server_wait_signal: block them before any thread starts, so
    // every thread inherits the mask. A client that goes away must not kill us with SIGPIPE.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    int gai = getaddrinfo(o->host, port, &hints, &ai);
    if (gai != 0) return seterr(err, "--host %s: %s", o->host, gai_strerror(gai));

    Server *s = xcalloc(1, sizeof *s);
    s->opt = *o;
    s->opt.host = xstrdup(o->host);
    s->opt.api_key = o->api_key ? xstrdup(o->api_key) : NULL;
    s->opt.served_model_name = o->served_model_name ? xstrdup(o->served_model_name) : NULL;
    s->opt.chat_template = o->chat_template ? xstrdup(o->chat_template) : NULL;
    s->opt.allowed_origins = xstrdup(o->allowed_origins);
    s->opt.allowed_methods = xstrdup(o->allowed_methods);
    s->opt.allowed_headers = xstrdup(o->allowed_headers);
    s->opt.tool_call_parser = o->tool_call_parser ? xstrdup(o->tool_call_parser) : NULL;
    s->opt.reasoning_parser = o->reasoning_parser ? xstrdup(o->reasoning_parser) : NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->conn_mu, NULL);
    pthread_mutex_init(&s->work_mu, NULL);
    pthread_cond_init(&s->work_cond, NULL);
    pthread_cond_init(&s->live_cond, NULL);
    metrics_init(&s->metrics);
    atomic_store(&s->state, SERVER_LOADING);
    // the list flags are checked before anything starts: a typo is a setting error (exit 2) at once
    if (parsers_init(s, err) != SL_OK || access_init(s, err) != SL_OK ||
        (o->served_model_name &&
         str_list_parse(o->served_model_name, "--served-model-name", &s->names, err) != SL_OK)) {
        freeaddrinfo(ai);
        server_stop(s);
        return SL_ERR;
    }
    raise_fd_limit(o->max_connections + HTTP_PROBE_RESERVE);

    work_start(s, o->http_threads);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)o->http_threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(o->max_connections + HTTP_PROBE_RESERVE), MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->timeout,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->mhd) {
        int e = errno;
        server_stop(s);
        return seterr(err, "cannot listen on %s:%d: %s", o->host, o->port, e ? strerror(e) : "libmicrohttpd failed");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    live_start(s);
    if (engine && server_set_engine(s, engine, model_path, err) != SL_OK) {
        server_stop(s);
        return SL_ERR;
    }
    *out = s;
    return SL_OK;
}

int server_set_engine(Server *s, Engine *engine, const char *model_path, char *err) {
    s->engine = engine;
    s->tok = engine_tokenizer(engine);
    s->info = *engine_info(engine);
    if (s->names.n == 0) { // "models/SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct.Q4_1"
        // a directory given as "dir/" is named by its last component, not ""
        size_t plen = strlen(model_path);
        while (plen > 1 && model_path[plen - 1] == '/') plen--;
        const char *base = model_path;
        for (size_t i = 0; i < plen; i++)
            if (model_path[i] == '/') base = model_path + i + 1;
        size_t n = (size_t)(model_path + plen - base);
        if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
        s->names.items = xmalloc(sizeof(char *));
        s->names.items[0] = xstrndup(base, n);
        s->names.n = 1;
    }
    s->model_name = s->names.items[0];
    s->created = (int64_t)time(NULL);
    if (chat_init(&s->chat, model_path, engine, s->opt.chat_template, err) != SL_OK) return SL_ERR;
    if (s->opt.max_queued_tokens == 0) s->opt.max_queued_tokens = 16 * s->info.max_model_len;
    atomic_store(&s->state, SERVER_READY);
    return SL_OK;
}

int server_port(const Server *s) { return s->port; }

int server_wait_signal(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {}
    return sig;
}

int server_drain(Server *s, double timeout_s) {
    atomic_store(&s->state, SERVER_DRAINING);
    double t0 = time_now_s();
    while (live_count(s) > 0 && time_now_s() - t0 < timeout_s) usleep(20000);
    int aborted = live_abort_all(s);
    // the aborted requests end their streams (error event, [DONE]) or their bodies (503)
    t0 = time_now_s();
    while (live_count(s) > 0 && time_now_s() - t0 < 5.0) usleep(20000);
    return aborted;
}

void server_stop(Server *s) {
    if (!s) return;
    work_stop(s); // resumes every connection waiting for a worker
    if (s->mhd) {
        live_release_suspended(s); // MHD_stop_daemon must not meet a suspended connection
        MHD_stop_daemon(s->mhd);
    }
    live_stop(s);
    chat_free(&s->chat);
    metrics_free(&s->metrics);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->conn_mu);
    pthread_mutex_destroy(&s->work_mu);
    pthread_cond_destroy(&s->work_cond);
    pthread_cond_destroy(&s->live_cond);
    str_list_free(&s->names);
    access_free(s);
    server_options_free(&s->opt);
    free(s);
}

// Seconds since this process was exec'd (/proc/self/stat start time against /proc/uptime).
static double seconds_since_exec(void) {
    char buf[1024];
    double uptime = 0;
    unsigned long long start = 0;
    FILE *f = fopen("/proc/uptime", "r");
    if (!f) return -1;
    int ok = fscanf(f, "%lf", &uptime) == 1;
    fclose(f);
    f = fopen("/proc/self/stat", "r");
    if (!f || !ok) {
        if (f) fclose(f);
        return -1;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); // the command name may hold spaces; fields restart after it
    for (int field = 2; p && field < 22; field++) p = strchr(p + 1, ' ');
    if (!p || sscanf(p + 1, "%llu", &start) != 1) return -1;
    return uptime - (double)start / (double)sysconf(_SC_CLK_TCK);
}

int server_run(const ServerOptions *o, const EngineConfig *ec, const char *model_path) {
    char err[ERR_MAX];
    Server *s = NULL;
    Engine *e = NULL;
    if (server_start(&s, o, NULL, model_path, err) != SL_OK) {
        log_error("%s", err);
        return 2; // the address or an option: a setting the user can change
    }
    log_info("listening on http://%s:%d (/health/ready answers 503 until the model is loaded)", o->host,
             server_port(s));
    if (engine_create(&e, ec, model_path, err) != SL_OK || server_set_engine(s, e, model_path, err) != SL_OK) {
        log_error("%s", err);
        server_stop(s);
        if (e) engine_destroy(e);
        return strstr(err, "--") ? 2 : 1; // the engine names a flag when a setting is what cannot work
    }
    const EngineInfo *info = engine_info(e);
    log_info("ready: model %s served as '%s', max_model_len %d, max_num_seqs %d, %d KV blocks, %.2f s from exec",
             model_path, s->model_name, info->max_model_len, info->max_num_seqs, info->num_blocks,
             seconds_since_exec());
    log_info("try: curl http://%s:%d/v1/chat/completions -H 'Content-Type: application/json' -d "
             "'{\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}],\"max_tokens\":32}'",
             strchr(o->host, ':') || !strcmp(o->host, "0.0.0.0") ? "127.0.0.1" : o->host, server_port(s));
    int sig = server_wait_signal();
    log_info("%s: draining (new requests get 503; in-flight ones have %.0f s)", sig == SIGINT ? "SIGINT" : "SIGTERM",
             (double)o->shutdown_timeout);
    int aborted = server_drain(s, o->shutdown_timeout);
    if (aborted) log_warn("shutdown: %d requests were still running and were aborted", aborted);
    server_stop(s);
    engine_destroy(e);
    log_info("stopped");
    return 0;
}
