// access.c: what every response carries besides its body, and the line each request leaves in
// the log.
//
// CORS follows vLLM, which puts Starlette's CORSMiddleware in front of its app: the same flags
// (--allowed-origins/-methods/-headers, --allow-credentials, defaults "*") and the same answers.
//   - A preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered before
//     routing and authentication: a browser never sends credentials with it, so with --api-key
//     it would otherwise get a 401 and the real request would never be made. An allowed one gets
//     204 with Allow-Origin/-Methods/-Headers/-Max-Age; a disallowed origin, method or header
//     gets 400 "Disallowed CORS origin" (Starlette's text; the browser refuses either way).
//   - Any other response to a request with an Origin header gets Access-Control-Allow-Origin
//     when the origin is allowed ("*", or the origin itself plus Vary: Origin when the answer
//     depends on it), Allow-Credentials when set, and exposes X-Request-Id to the page. A
//     disallowed origin gets none of these, so the browser hides the response from the page.
//   - With --allow-credentials and origins "*" the request's Origin is echoed: browsers refuse
//     "*" on a credentialed request (Starlette does this when a cookie is present; here always).
//
// X-Request-Id (vLLM): the client's header is echoed, and names the response (vLLM's
// "chatcmpl-<X-Request-Id>"); without one the response id (chatcmpl-..., cmpl-..., tokn-...)
// is sent, so a client can match a reply, an error included, to the server's log line.
//
// The log line: one per finished request, at info level (the open probe routes, which a load
// balancer calls every few seconds, at debug). The prompt text appears only with
// --enable-log-requests, cut to --max-log-len characters: prompts are the users' data.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "server/server_impl.h"

// Starlette's: what "*" methods means, and the headers a preflight may always ask for.
static const char ALL_METHODS[] = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT";
static const char *const SAFELISTED_HEADERS[] = {"accept", "accept-language", "content-language", "content-type"};
#define CORS_MAX_AGE "600"

// ----------------------------------------------------------------------------
// list flags

static void list_add(StrList *l, const char *p, size_t n) {
    l->items = xrealloc(l->items, sizeof(char *) * (size_t)(l->n + 1));
    l->items[l->n++] = xstrndup(p, n);
    if (n == 1 && p[0] == '*') l->any = true;
}

int str_list_parse(const char *text, const char *flag, StrList *out, char *err) {
    memset(out, 0, sizeof *out);
    const char *p = text;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '[') { // vLLM's form: a JSON list of strings
        cJSON *a = cJSON_Parse(p);
        bool ok = cJSON_IsArray(a) && cJSON_GetArraySize(a) > 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, a) ok = ok && cJSON_IsString(it) && it->valuestring[0];
        cJSON_ArrayForEach(it, a) if (ok) list_add(out, it->valuestring, strlen(it->valuestring));
        cJSON_Delete(a);
        if (!ok) {
            str_list_free(out);
            return seterr(err, "%s: expected a JSON list of non-empty strings such as [\"a\", \"b\"], got '%.200s'",
                          flag, text);
        }
        return SL_OK;
    }
    while (*p) {
        size_t n = strcspn(p, ", \t");
        if (n) list_add(out, p, n);
        p += n;
        p += strspn(p, ", \t");
    }
    if (out->n == 0) return seterr(err, "%s: expected at least one value, got '%.200s'", flag, text);
    return SL_OK;
}

void str_list_free(StrList *l) {
    for (int i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

bool str_list_has(const StrList *l, const char *item, bool icase) {
    for (int i = 0; i < l->n; i++)
        if (icase ? !strcasecmp(l->items[i], item) : !strcmp(l->items[i], item)) return true;
    return false;
}

int access_init(Server *s, char *err) {
    const ServerOptions *o = &s->opt;
    if (str_list_parse(o->allowed_origins, "--allowed-origins", &s->cors_origins, err) != SL_OK ||
        str_list_parse(o->allowed_methods, "--allowed-methods", &s->cors_methods, err) != SL_OK ||
        str_list_parse(o->allowed_headers, "--allowed-headers", &s->cors_headers, err) != SL_OK)
        return SL_ERR;
    return SL_OK;
}

void access_free(Server *s) {
    str_list_free(&s->cors_origins);
    str_list_free(&s->cors_methods);
    str_list_free(&s->cors_headers);
}

// ----------------------------------------------------------------------------
// request ids

void access_begin(HttpConn *hc, struct MHD_Connection *c, const char *method, const char *url, const char *prefix) {
    hc->t_start = time_now_s();
    snprintf(hc->method, sizeof hc->method, "%s", method);
    snprintf(hc->path, sizeof hc->path, "%s", url);
    const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (id && id[0]) hc->client_id = xstrdup(id);
    resp_new_id(hc->req_id, sizeof hc->req_id, prefix);
}

const char *access_id(const HttpConn *hc) { return hc->client_id ? hc->client_id : hc->req_id; }

// ----------------------------------------------------------------------------
// CORS

static bool origin_allowed(const Server *s, const char *origin) {
    return s->cors_origins.any || str_list_has(&s->cors_origins, origin, false);
}

// "*" only when any origin is allowed and no credentials: otherwise the answer names the origin.
static bool explicit_origin(const Server *s) { return !s->cors_origins.any || s->opt.allow_credentials; }

static void add_request_id(struct MHD_Connection *c, struct MHD_Response *r) {
    HttpConn *hc = http_conn_of(c);
    if (hc) MHD_add_response_header(r, "X-Request-Id", access_id(hc));
}

void access_decorate(Server *s, struct MHD_Connection *c, struct MHD_Response *r, int status) {
    HttpConn *hc = http_conn_of(c);
    if (hc) hc->status = status;
    add_request_id(c, r);
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (!origin) return; // not a cross-origin request: nothing for a browser to check
    if (explicit_origin(s)) MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Origin");
    if (!origin_allowed(s, origin)) return;
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, explicit_origin(s) ? origin : "*");
    if (s->opt.allow_credentials) MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_EXPOSE_HEADERS, "X-Request-Id");
}

static bool safelisted(const char *header) {
    for (size_t i = 0; i < ARRAY_LEN(SAFELISTED_HEADERS); i++)
        if (!strcasecmp(header, SAFELISTED_HEADERS[i])) return true;
    return false;
}

// Every requested header (a comma-separated list) is allowed: listed or safelisted, any case.
static bool headers_allowed(const Server *s, const char *req) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", req);
    for (char *save = NULL, *h = strtok_r(buf, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
        while (*h == ' ' || *h == '\t') h++;
        size_t n = strlen(h);
        while (n && (h[n - 1] == ' ' || h[n - 1] == '\t')) h[--n] = 0;
        if (!n) continue;
        if (!str_list_has(&s->cors_headers, h, true) && !safelisted(h)) return false;
    }
    return strlen(req) < sizeof buf;
}

static void join(SBuf *b, const StrList *l) {
    for (int i = 0; i < l->n; i++) sbuf_printf(b, "%s%s", i ? ", " : "", l->items[i]);
}

bool access_preflight(Server *s, HttpConn *hc, struct MHD_Connection *c, enum MHD_Result *ret) {
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    const char *want_method = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCESS_CONTROL_REQUEST_METHOD);
    const char *want_headers = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCESS_CONTROL_REQUEST_HEADERS);
    if (strcmp(hc->method, "OPTIONS") != 0 || !origin || !want_method) return false;
    bool ok_origin = origin_allowed(s, origin);
    bool ok_method = s->cors_methods.any || str_list_has(&s->cors_methods, want_method, true);
    bool ok_headers = !want_headers || s->cors_headers.any || headers_allowed(s, want_headers);
    SBuf msg = {0};
    if (!ok_origin || !ok_method || !ok_headers) {
        sbuf_puts(&msg, "Disallowed CORS");
        if (!ok_origin) sbuf_puts(&msg, " origin");
        if (!ok_method) sbuf_puts(&msg, ok_origin ? " method" : ", method");
        if (!ok_headers) sbuf_puts(&msg, ok_origin && ok_method ? " headers" : ", headers");
    }
    int status = msg.len ? 400 : 204;
    struct MHD_Response *r = MHD_create_response_from_buffer(msg.len, msg.data, MHD_RESPMEM_MUST_COPY);
    if (!r) {
        sbuf_free(&msg);
        *ret = MHD_NO;
        return true;
    }
    if (msg.len) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (explicit_origin(s)) MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Origin");
    if (ok_origin)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, explicit_origin(s) ? origin : "*");
    SBuf methods = {0}, headers = {0};
    if (s->cors_methods.any) sbuf_puts(&methods, ALL_METHODS);
    else join(&methods, &s->cors_methods);
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_METHODS, methods.data);
    if (s->cors_headers.any) { // any header: mirror what was asked for
        if (want_headers) sbuf_puts(&headers, want_headers);
    } else {
        for (size_t i = 0; i < ARRAY_LEN(SAFELISTED_HEADERS); i++)
            sbuf_printf(&headers, "%s%s", i ? ", " : "", SAFELISTED_HEADERS[i]);
        for (int i = 0; i < s->cors_headers.n; i++)
            if (!safelisted(s->cors_headers.items[i])) sbuf_printf(&headers, ", %s", s->cors_headers.items[i]);
    }
    if (headers.len) MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_HEADERS, headers.data);
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_MAX_AGE, CORS_MAX_AGE);
    if (s->opt.allow_credentials) MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    add_request_id(c, r);
    hc->status = status;
    *ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    metrics_http_status(&s->metrics, status);
    sbuf_free(&msg);
    sbuf_free(&methods);
    sbuf_free(&headers);
    return true;
}

// ----------------------------------------------------------------------------
// the log line

void access_log(HttpConn *hc) {
    bool probe = hc->probe;
    if ((probe ? LOG_DEBUG : LOG_INFO) < log_level) return; // no formatting for a line that is not written
    double now = time_now_s();
    SBuf b = {0};
    sbuf_printf(&b, "request %.200s: %s %.200s %d", access_id(hc), hc->method, hc->path, hc->status);
    if (hc->gen) {
        GenStats st;
        gen_stats(hc->gen, &st);
        sbuf_printf(&b, " prompt_tokens=%d cached_tokens=%d completion_tokens=%d", st.prompt_tokens,
                    st.cached_tokens, st.completion_tokens);
        if (st.t_first_token > 0) sbuf_printf(&b, " ttft=%.3fs", st.t_first_token - hc->t_start);
        else sbuf_puts(&b, " ttft=-");
        sbuf_printf(&b, " duration=%.3fs finish=%s", now - hc->t_start, st.finish);
        if (st.prompt) sbuf_printf(&b, st.prompt_list ? " prompt=[%s]" : " prompt=%s", st.prompt);
    } else {
        sbuf_printf(&b, " duration=%.3fs", now - hc->t_start);
    }
    log_msg(probe ? LOG_DEBUG : LOG_INFO, "%s", b.data);
    sbuf_free(&b);
}
