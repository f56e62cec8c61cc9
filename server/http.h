// http.h: the HTTP front end of the daemon (DESIGN.md §1; openai-api.md §6): libmicrohttpd with
// an internal epoll thread pool and suspend/resume, the OpenAI routes, admission control,
// disconnect detection and graceful drain.
//
// Typical use (server/main.c):
//
//   ServerOptions so; server_options_defaults(&so);
//   Flag extra[SERVER_MAX_FLAGS]; int n = server_flags(&so, extra);
//   config_parse(&cfg, extra, n, argc, argv, usage, err);      // one --help for everything
//   return server_run(&so, &engine_cfg, cfg.model);            // listens, loads, serves, drains
//
// or step by step: server_start (listening, /health/ready 503 while loading), engine_create,
// server_set_engine (ready), server_wait_signal, server_drain, server_stop, engine_destroy.
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "engine/engine.h"

typedef struct {
    char *host;                 // --host: address to bind (127.0.0.1; 0.0.0.0 or :: to expose)
    int port;                   // --port (8000; 0 picks a free one)
    char *api_key;              // --api-key: require "Authorization: Bearer KEY" (NULL: open)
    char *served_model_name;    // --served-model-name: names the API answers to, the first one
                                //   reported by default (NULL: the model file name without .gguf)
    char *chat_template;        // --chat-template: a Jinja file replacing the model's template
    size_t max_body_size;       // --max-body-size: request bodies above this get 413
    int max_connections;        // --max-connections: open HTTP connections at most
    int timeout;                // --timeout: seconds of inactivity before a connection is closed
    int http_threads;           // --http-threads: libmicrohttpd's epoll thread pool
    int max_n;                  // --max-n: cap on a request's n
    int max_tokens;             // --max-tokens-cap: cap on max_tokens (0: only the context)
    int max_queued_requests;    // --max-queued-requests: waiting sequences beyond --max-num-seqs
    int max_queued_tokens;      // --max-queued-tokens: prompt tokens not yet started (0: auto)
    float keepalive;            // --keepalive-interval: seconds between SSE ": keep-alive" while idle
    float shutdown_timeout;     // --shutdown-timeout: seconds to drain on SIGTERM before aborting
    char *allowed_origins;      // --allowed-origins: CORS origins (a list, see server/access.c)
    char *allowed_methods;      // --allowed-methods: CORS methods a preflight may ask for
    char *allowed_headers;      // --allowed-headers: CORS request headers a preflight may ask for
    bool allow_credentials;     // --allow-credentials: Access-Control-Allow-Credentials: true
    bool enable_log_requests;   // --enable-log-requests: the prompt text in the request log line
    int max_log_len;            // --max-log-len: characters of it at most (-1: no limit)
    bool metrics_vllm_names;    // --metrics-vllm-names: /metrics repeats vLLM's metrics as vllm:*
    bool disable_web_ui;        // --disable-web-ui: no chat page at / and /chat (404)
} ServerOptions;

void server_options_defaults(ServerOptions *o);
void server_options_free(ServerOptions *o);
#define SERVER_MAX_FLAGS 32
// The option rows for config_parse's `extra` (bound to o, defaults recorded); returns the count.
int server_flags(ServerOptions *o, Flag *out);

typedef struct Server Server;

// Binds and starts serving. It blocks SIGTERM and SIGINT in the calling thread first, so that
// every thread started afterwards (MHD's, the engine's) leaves them to server_wait_signal: call it
// before engine_create, or block both signals yourself. With engine NULL the server is up but not ready: /health answers
// 200, /health/ready and the model routes 503 until server_set_engine. SL_ERR + err when the
// address cannot be bound or an option is unusable.
int server_start(Server **out, const ServerOptions *o, Engine *engine, const char *model_path, char *err);
// Hands over the loaded engine (not owned) and marks the server ready.
int server_set_engine(Server *s, Engine *engine, const char *model_path, char *err);
int server_port(const Server *s); // the bound port (useful with --port 0)
// Blocks until SIGTERM or SIGINT (which server_start blocked in every thread); returns the signal.
int server_wait_signal(void);
// Graceful drain: readiness 503, new requests 503, in-flight requests run up to timeout_s, the
// rest are aborted (streams end with an error event and [DONE]). Returns the number aborted.
int server_drain(Server *s, double timeout_s);
// Stops listening and frees everything; call before engine_destroy. Accepts NULL.
void server_stop(Server *s);

// The whole daemon: listen, load the engine, log the address and time to ready, serve until
// SIGTERM/SIGINT, drain, stop. Returns the process exit status: 0 after a clean shutdown; 2 when
// a setting cannot work (the address, a flag the engine names); 1 when the model fails to load.
int server_run(const ServerOptions *o, const EngineConfig *ec, const char *model_path);
