// server_impl.h: the structures the server's files share (http.c, routes.c, generate.c, live.c).
//
// Threads: libmicrohttpd's pool threads run every callback (never blocking); the engine thread
// calls gen_notify(); one "live" thread (live.c) watches suspended connections for a dead peer,
// sends SSE keep-alives, and frees finished requests. Locks: Server.mu guards the list of live
// requests and the admission counters; GenReq.mu guards a request's hand-off flags. Both are
// leaves: nothing else (no engine call) is taken while one is held, except MHD's own
// suspend/resume, which never calls back into us.
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <microhttpd.h>

#include "engine/engine.h"
#include "server/chat.h"
#include "server/chat_output.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/respond.h"

#define SLUICE_VERSION "0.1.0"

typedef enum { SERVER_LOADING = 0, SERVER_READY, SERVER_DRAINING } ServerState;

typedef struct GenReq GenReq;
typedef struct HttpConn HttpConn;

// Connections beyond --max-connections accepted for the open probe routes only (conn.c; the
// flag's help and docs/api.md say 8).
#define HTTP_PROBE_RESERVE 8

// Where a TCP connection is in its request (conn.c's deadlines).
typedef enum { CONN_HEAD, CONN_BODY, CONN_BUSY, CONN_IDLE } ConnPhase;

// One TCP connection (MHD's socket context), from accept to close.
typedef struct ConnSlot {
    HttpConn *cur;                // the request in progress on it, or NULL (its MHD thread's)
    int fd;
    bool reserve;                 // accepted beyond --max-connections: probes only
    // Server.conn_mu
    ConnPhase phase;
    double t_phase;               // when the phase began
    uint64_t rx_idle;             // CONN_IDLE: bytes received when it went idle (TCP_INFO)
    bool cut;                     // its socket was shut down for a missed deadline
    struct ConnSlot *prev, *next; // Server.conns
} ConnSlot;

// A list flag's values (access.c: a JSON list, or comma/space-separated).
typedef struct {
    char **items;
    int n;
    bool any;                     // "*" is among them
} StrList;

struct Server {
    ServerOptions opt;            // copied; strings owned
    struct MHD_Daemon *mhd;
    int port;
    _Atomic int state;            // ServerState
    Engine *engine;               // set once by server_set_engine (then state becomes READY)
    const Tokenizer *tok;
    EngineInfo info;
    StrList names;                // the served model names (--served-model-name, else the file's)
    const char *model_name;       // names.items[0]: metrics' label, responses' default `model`
    StrList cors_origins, cors_methods, cors_headers;
    int64_t created;
    ChatRenderer chat;
    ToolFormat tool_fmt;          // --tool-call-parser (with --enable-auto-tool-choice)
    ReasonFormat reason_fmt;      // --reasoning-parser
    Metrics metrics;

    pthread_mutex_t mu;           // guards everything below
    GenReq *live;                 // every GenReq not yet freed (doubly linked)
    int n_live;
    int queued_seqs;              // sequences admitted and not finished (admission)
    long queued_tokens;           // prompt tokens admitted whose first output has not come
    pthread_t live_thread;
    pthread_cond_t live_cond;
    bool live_stop;

    pthread_mutex_t conn_mu;      // guards the open connections (a leaf, like mu)
    ConnSlot *conns;
    int n_conns;
    double t_sweep;               // the watcher thread's last conn_sweep

    pthread_mutex_t work_mu;      // guards the work queue (a leaf)
    pthread_cond_t work_cond;
    HttpConn *work_head, *work_tail;
    bool work_stop;
    pthread_t *work_threads;
    int n_work;
};

// Per-request state (MHD's *con_cls), freed in the completion callback.
struct HttpConn {
    Server *srv;
    int route;                    // RouteId
    const char *url;              // MHD's copy, valid for the request
    SBuf body;
    size_t body_seen;             // bytes received, kept counting past the cap
    bool responded;               // a response was queued in the headers phase
    bool http11;                  // the request line said HTTP/1.1 (not 1.0)
    GenReq *gen;                  // set while a generation request is in flight
    // for the response headers and the log line (access.c)
    char method[16];
    char path[256];               // the URL, cut (MHD's copy may be gone when the request is logged)
    bool probe;                   // an open probe route (health, metrics, ...): logged at debug
    char *client_id;              // the client's X-Request-Id (echoed), or NULL
    char req_id[RESP_ID_MAX];     // else ours: the response id (chatcmpl-..., cmpl-...) or a new one
    int status;                   // the status queued (0: none)
    double t_start;               // the headers phase
    // The body's work on a worker thread (work.c). The connection is suspended for it, and for
    // the engine, only from a later call than the one that completed the body (settled).
    // libmicrohttpd 0.9.75 does not update a connection's event-loop state while it is
    // suspended: suspended from that call, the connection keeps the "read" state of its body,
    // and on each resume, marked ready, it reads first. A client that half-closed after its
    // request (shutdown(SHUT_WR)) has its FIN read then, and libmicrohttpd closes the
    // connection at once (MHD_REQUEST_TERMINATED_WITH_ERROR): no reply, request aborted. So the
    // completing call returns without a response; libmicrohttpd moves the connection to
    // "waiting for the application" (it reads nothing there) and calls again on its next loop
    // pass, and the suspends from then on keep that state. A reply, once queued, is in writing
    // states, which never read; a client that is really gone (reset, or both directions
    // closed) still shows as an error on the socket (live.c, or the write).
    bool settled;
    struct MHD_Connection *work_conn;
    HttpConn *work_next;          // Server's work queue
    bool worked;                  // done (or cancelled): the handler answers with its results
    bool work_cancelled;          // the server stopped before the work ran
    int work_rc;                  // tokenize, detokenize: SL_OK with work_out, else work_err
    SBuf work_out;
    ApiError work_err;
    struct GenPrep *prep;         // chat, completions: gen_prepare's result for gen_start
};

// ---- http.c: replies (each queues a response on conn; MHD_YES/NO for the handler to return)
enum MHD_Result http_reply(struct MHD_Connection *c, Server *s, int status, const char *ctype, const char *body,
                           size_t len);
enum MHD_Result http_reply_json(struct MHD_Connection *c, Server *s, int status, const SBuf *body);
enum MHD_Result http_reply_error(struct MHD_Connection *c, Server *s, const ApiError *e);

// ---- access.c: what every response carries (CORS, X-Request-Id) and the per-request log line

// Parses a list flag's text: a JSON list of strings, else items separated by commas or spaces.
int str_list_parse(const char *text, const char *flag, StrList *out, char *err);
void str_list_free(StrList *l);
bool str_list_has(const StrList *l, const char *item, bool icase);
// The CORS lists from the options (SL_ERR + err naming the flag).
int access_init(Server *s, char *err);
void access_free(Server *s);
// The request id of hc (the client's X-Request-Id, or prefix + random), and the start time.
void access_begin(HttpConn *hc, struct MHD_Connection *c, const char *method, const char *url, const char *prefix);
const char *access_id(const HttpConn *hc);
// The connection's current request (set by http.c for each request; NULL outside one).
HttpConn *http_conn_of(struct MHD_Connection *c);
// A CORS preflight (OPTIONS + Origin + Access-Control-Request-Method) is answered here, before
// authentication, as Starlette's CORSMiddleware does: true when it was (*ret set).
bool access_preflight(Server *s, HttpConn *hc, struct MHD_Connection *c, enum MHD_Result *ret);
// Adds the CORS headers and X-Request-Id to a response about to be queued with status.
void access_decorate(Server *s, struct MHD_Connection *c, struct MHD_Response *r, int status);
// The request's log line (the completion callback; before a generation request is let go).
void access_log(HttpConn *hc);

// ---- routes.c: handlers that answer at once (the body, when any, is complete)
enum MHD_Result route_health(Server *s, struct MHD_Connection *c);
enum MHD_Result route_ready(Server *s, struct MHD_Connection *c);
enum MHD_Result route_models(Server *s, struct MHD_Connection *c);
enum MHD_Result route_model(Server *s, struct MHD_Connection *c, const char *id);
enum MHD_Result route_version(Server *s, struct MHD_Connection *c);
enum MHD_Result route_metrics(Server *s, struct MHD_Connection *c);
// (worker threads) the reply's JSON body into out, or SL_ERR with e
int route_tokenize(Server *s, const SBuf *body, SBuf *out, ApiError *e);
int route_detokenize(Server *s, const SBuf *body, SBuf *out, ApiError *e);
// web.c: the chat page and its files (url: one that web_asset() knows)
enum MHD_Result route_web(Server *s, struct MHD_Connection *c, const char *url);
// Tokenizes a prompt text as vLLM does for completions (BOS as the model asks, specials parsed).
int32_t *server_encode(const Server *s, const char *text, size_t len, bool add_special, int *n);

// ---- generate.c: chat and completions

// One choice of the response (index = part * n + the engine's choice index).
typedef struct {
    bool finished;
    EngineFinish finish;
    int32_t stop_token;          // vLLM's stop_reason: the stop token id, or
    int stop_str;                // the index of the stop string (-1: none)
    SBuf text;                   // non-streaming: the text so far (echo first)
    RespToken *toks;             // non-streaming logprobs (n_toks)
    int n_toks, cap_toks;
    size_t text_offset;          // characters (code points) of this choice's text before the next token
    bool role_sent;              // chat stream without a ChatOut: the role chunk went out (first token, as vLLM)
    int num_tokens;              // output tokens so far (continuous usage stats)
    ChatOut *co;                 // chat with a tool-call or reasoning parser: the parsed output
} GenChoice;

// One engine request: the chat prompt, or one prompt of a completions batch.
typedef struct {
    EngineRequest *er;
    int64_t id;
    int n_prompt;
    bool started;                // its first output came (its queued prompt tokens are released)
    bool finished;
    EngineOutput last;           // counters and timings of the latest take (pointers not kept)
    double t_last_tokens;        // when tokens last came, for inter-token latency
    char *echo;                  // completions echo: the prompt text (NULL otherwise)
    size_t echo_len;
    SampleLogprobs *plp;         // (n_prompt) prompt logprobs, copied from the take that had them
} GenPart;

// What the request log line says of a generation request (gen_stats).
typedef struct {
    int prompt_tokens, cached_tokens, completion_tokens;
    double t_first_token;        // time_now_s() of the first token of any part; 0: none
    char finish[64];             // the choices' finish reasons, comma-separated ("abort" if unfinished)
    const char *prompt;          // --enable-log-requests: the prompts as JSON strings, comma-separated
    bool prompt_list;            // completions: written as a list (a request may carry several)
} GenStats;

struct GenReq {
    Server *srv;
    GenReq *prev, *next;         // Server.live (Server.mu)
    OaiRequest req;
    RespMeta meta;
    GenPart *parts;
    int n_parts;
    GenChoice *choices;
    int n_choices;
    int fd;                      // the connection's socket, peeked while suspended
    int seqs_held;               // admission: sequences still counted in Server.queued_seqs
    SBuf log_prompt;             // --enable-log-requests: the prompts, JSON-escaped and truncated
    RespToken *scratch;          // streaming logprobs of one delta
    int cap_scratch;

    // Owned by the thread running the connection's callbacks, then (orphaned) by the live thread.
    SBuf out;                    // SSE bytes not yet sent
    bool stream_started, ended, all_finished, aborted;
    bool grammar_ready;          // every part's grammar compiled and queued (structured output)
    bool refused;                // an error reply went out while waiting for a grammar
    double t_sent;

    pthread_mutex_t mu;          // the hand-off between MHD, the engine thread and the live thread
    struct MHD_Connection *conn; // NULL once MHD is done with the request
    bool suspended, pending, client_gone, keepalive_due, shutdown;
    double t_last_send, t_last_peek;
    bool interim_ok;             // the client speaks HTTP/1.1: a 1xx interim response may precede the reply
    bool peer_probed;            // the peer's FIN was seen and answered with a probe (live.c)
};

// A worker thread's part, with the whole body: validates it, renders and tokenizes the prompts
// (hc->prep).
void gen_prepare(Server *s, HttpConn *hc, OaiKind kind);
void gen_prep_free(struct GenPrep *p);
// The handler's part, after gen_prepare: admits, submits, and either queues a stream or
// suspends until the outputs are complete.
enum MHD_Result gen_start(Server *s, HttpConn *hc, struct MHD_Connection *c);
// The handler called again for a resumed non-streaming request.
enum MHD_Result gen_resume(Server *s, HttpConn *hc, struct MHD_Connection *c);
// The completion callback: MHD is done with the request (ok: the response went out whole).
void gen_conn_closed(GenReq *g, bool ok);
// Takes what the engine has produced; with emit false (orphans) it is only counted.
void gen_pump(GenReq *g, bool emit);
void gen_stats(const GenReq *g, GenStats *st);
// engine_abort on every part (finished ones are ignored by the engine).
void gen_abort(GenReq *g);
// Releases the engine requests and frees g (all parts finished, MHD done with it).
void gen_free(GenReq *g);

// ---- conn.c: each TCP connection: request deadlines and the probe reserve
void conn_opened(Server *s, struct MHD_Connection *c, void **socket_context);
void conn_closed(Server *s, void **socket_context);
void conn_phase(Server *s, ConnSlot *slot, ConnPhase phase);
// Shuts down the sockets of requests past their deadline (the watcher thread, every tick).
void conn_sweep(Server *s, double now);
bool conn_reserved(const ConnSlot *slot);

// ---- work.c: worker threads for a body's CPU work
void work_start(Server *s, int n);
// Finishes the work in hand and cancels what is queued (before libmicrohttpd stops).
void work_stop(Server *s);
// Suspends c and queues hc for work_run; false when the server is stopping (nothing queued).
bool work_submit(Server *s, HttpConn *hc, struct MHD_Connection *c);
// (http.c, on a worker) the route's work on the complete body
void work_run(Server *s, HttpConn *hc);

// ---- live.c: the watcher thread (dead peers, keep-alives, freeing finished requests)
void live_start(Server *s);
// Stops the thread, then frees what has finished (waiting a little for aborted requests).
void live_stop(Server *s);
void live_add(Server *s, GenReq *g);
int live_count(Server *s);
// Drain's last step: marks every request as shut down and aborts it; returns how many.
int live_abort_all(Server *s);
// Resumes every suspended connection as gone, so that MHD_stop_daemon meets none.
void live_release_suspended(Server *s);
