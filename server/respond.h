// respond.h: response bodies and SSE events, byte for byte (openai-api.md §1-§4).
//
// Everything is written into an SBuf by a small JSON writer rather than cJSON: one event per
// generated token must be cheap, each event must be one line, and strings need two escapes
// cJSON does not do: U+2028/U+2029 (which break old SDKs) and ill-formed UTF-8 (a token's raw
// bytes), which is written as U+FFFD so every body is valid UTF-8.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/openai.h"

// ---- a growable byte buffer (always NUL-terminated)

typedef struct {
    char *data;
    size_t len, cap;
} SBuf;

void sbuf_free(SBuf *b);                // accepts a zeroed struct
void sbuf_reset(SBuf *b);               // len = 0, keeps the memory
void sbuf_put(SBuf *b, const void *p, size_t n);
void sbuf_puts(SBuf *b, const char *s);
__attribute__((format(printf, 2, 3))) void sbuf_printf(SBuf *b, const char *fmt, ...);
// Drops the first n bytes (what a reader has sent).
void sbuf_consume(SBuf *b, size_t n);

// ---- JSON values
void json_str(SBuf *b, const char *s, size_t n); // a quoted, escaped JSON string
void json_float(SBuf *b, float v);             // shortest text that reads back as v; non-finite -> -9999.0

// ---- what the generation path hands over

// Room for a response id: a prefix and a client's X-Request-Id (vLLM builds "chatcmpl-<X-Request-Id>").
#define RESP_ID_MAX 160

typedef struct {
    int prompt_tokens, completion_tokens, cached_tokens;
} RespUsage;

typedef struct {
    OaiKind kind;
    char id[RESP_ID_MAX];    // "chatcmpl-…" / "cmpl-…", the same in every chunk
    int64_t created;         // unix seconds
    const char *model;       // the served model name
    const char *fingerprint; // system_fingerprint, or NULL (written as null)
    bool include_usage;      // streaming: "usage":null in every chunk and a usage chunk at the end
    bool continuous_usage;   // streaming (continuous_usage_stats): `live` instead of null in every chunk
    RespUsage live;          // the usage so far of the choice whose chunk is written next
    bool tokens_as_ids;      // return_tokens_as_token_ids: logprobs name tokens "token_id:N"
} RespMeta;

// One token with its logprob and alternatives, as bytes (a token may be part of a character).
typedef struct {
    int32_t token;
    const char *piece;       // the token's bytes
    size_t piece_len;
    float logprob;
    int n_top;
    int32_t top_token[OAI_MAX_LOGPROBS];
    const char *top_piece[OAI_MAX_LOGPROBS];
    size_t top_len[OAI_MAX_LOGPROBS];
    float top_logprob[OAI_MAX_LOGPROBS];
    bool no_logprob;         // the prompt's first token (echo with logprobs): null logprob and top
    int rank;                // prompt_logprobs: the token's rank in the vocabulary (1 = best)
} RespToken;

// A parsed tool call (chat_output.c): arguments as the JSON text the model wrote.
typedef struct {
    const char *id;          // "call_…"
    const char *name;
    const char *args;
    size_t args_len;
} RespToolCall;

typedef struct {
    int index;
    const char *text;        // the whole choice text (non-streaming) or the delta (streaming)
    size_t text_len;
    const char *finish_reason; // "stop", "length", "abort"; NULL while unfinished
    const char *stop_str;    // vLLM's stop_reason: the matched stop string, or
    int32_t stop_token;      // the matched stop token id (-1: none); both absent -> null
    const RespToken *tokens; // (n_tokens) when logprobs were asked for, else NULL
    int n_tokens;
    size_t text_offset;      // completions logprobs: where tokens[0] starts in the full choice text,
                             // in characters (code points), as text_offset counts
    const RespToken *prompt_lp; // (n_prompt_lp) vLLM's prompt_logprobs, NULL when not asked for:
    int n_prompt_lp;            // per choice (completions), or the response's from choice 0 (chat)
    // chat with a tool-call or reasoning parser (chat_output.h): the message's parsed parts
    bool parsed;             // content is null when empty
    bool has_reasoning;      // reasoning_content is written (null when empty)
    const char *reasoning;
    size_t reasoning_len;
    const RespToolCall *calls; // (n_calls) message.tool_calls, written when there are any
    int n_calls;
    bool reasoning_delta;    // streaming: text is a delta.reasoning_content, not delta.content
} RespChoice;

// out = prefix + 24 random hex digits (truncated to cap).
void resp_new_id(char *out, size_t cap, const char *prefix);
// Fills meta->id with prefix + 24 random hex digits and created with the clock.
void resp_meta_init(RespMeta *m, OaiKind kind, const char *model, const char *fingerprint, bool include_usage);

// ---- non-streaming bodies
void resp_chat_body(SBuf *b, const RespMeta *m, const RespChoice *c, int n, const RespUsage *u);
void resp_completion_body(SBuf *b, const RespMeta *m, const RespChoice *c, int n, const RespUsage *u);
// {"error":{"message":…,"type":…,"param":…|null,"code":…|null}}
void resp_error_body(SBuf *b, const ApiError *e);

// ---- SSE events ("data: <one line>\n\n")
void resp_sse_chat_role(SBuf *b, const RespMeta *m, int index, bool null_content); // delta {role, content}
// A content delta (c->text, and c->tokens' logprobs when not NULL). Chat: delta.content;
// completions: "text". With c->finish_reason set, a completions chunk also carries it.
void resp_sse_delta(SBuf *b, const RespMeta *m, const RespChoice *c);
// Chat: one tool call's delta, as OpenAI sends them: the first (id != NULL) carries index, id,
// type, function.name and arguments ""; later ones index and an arguments fragment.
void resp_sse_tool_delta(SBuf *b, const RespMeta *m, int index, int call, const RespToolCall *tc, const char *args,
                         size_t args_len);
// Chat: the choice's last chunk, delta {} and the finish reason. Completions: text "" and the reason.
void resp_sse_finish(SBuf *b, const RespMeta *m, const RespChoice *c);
void resp_sse_usage(SBuf *b, const RespMeta *m, const RespUsage *u);     // choices [] + usage
void resp_sse_error(SBuf *b, const char *message, const char *type, const char *code);
void resp_sse_done(SBuf *b);       // "data: [DONE]\n\n"
void resp_sse_keepalive(SBuf *b);  // ": keep-alive\n\n"
