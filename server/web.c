// web.c: GET / and /chat (the chat page) and the files it loads, from WEB_ASSETS (web.h).
#include <string.h>

#include "server/server_impl.h"
#include "server/web.h"

// The page loads only its own files and calls only this server: scripts, styles and fetches
// from anywhere else are refused by the browser, and so is inline script. Model output is
// rendered as markdown; should it smuggle in HTML, the browser will not run it.
static const char CSP[] = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                          "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const WebAsset *web_asset(const char *url) {
    if (!strcmp(url, "/")) url = "/chat";
    for (const WebAsset *a = WEB_ASSETS; a->url; a++)
        if (!strcmp(a->url, url)) return a;
    return NULL;
}

enum MHD_Result route_web(Server *s, struct MHD_Connection *c, const char *url) {
    const WebAsset *a = web_asset(url);
    CHECK(a != NULL); // route_find matched it
    struct MHD_Response *r = MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->content_type);
    MHD_add_response_header(r, "Content-Security-Policy", CSP);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    // the files change with the binary: the browser asks again each time (cheap, and never stale)
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    access_decorate(s, c, r, 200);
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    metrics_http_status(&s->metrics, 200);
    return ret;
}
