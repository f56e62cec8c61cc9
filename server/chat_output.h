// chat_output.h: a chat choice's output text read back as OpenAI's message parts: reasoning
// (--reasoning-parser), content, and tool calls (--tool-call-parser, or the forced formats of
// tool_choice "required" / a named function), for whole bodies and for SSE deltas alike.
//
// The parsers (tool_parse.h) only ever add certain text, so a stream sends, after each engine
// output, what grew since the last one: delta.reasoning_content, delta.content, and per call a
// first delta with index, id, type, name and arguments "" and then argument fragments. Their
// concatenation is the non-streamed message byte for byte.
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "server/respond.h"
#include "server/tool_parse.h"

typedef struct {
    ToolFormat tool_fmt;    // TOOL_FMT_NONE: no tool calls are read
    bool single;            // parallel_tool_calls false
    const char *named;      // TOOL_FMT_ARGS: the function (valid while the request lives)
    ReasonFormat reason_fmt;
} ChatOutConfig;

typedef struct {
    ChatOutConfig cfg;
    ReasonParser rp;
    ToolParser tp;
    SBuf plain;             // the content when no tool calls are read
    SBuf mid;               // the reasoning parser's content, on its way to the tool parser
    bool final;                          // the choice has finished
    bool role_sent;                      // streaming: the role chunk went out
    size_t sent_reasoning, sent_content; // bytes sent
    int sent_calls;                      // calls announced
    size_t *sent_args;                   // (cap) argument bytes sent per call
    char (*ids)[32];                     // (cap) "call_…" per call
    RespToolCall *view;                  // (cap) for the body
    int cap;
} ChatOut;

bool chat_out_wanted(const ChatOutConfig *c); // anything to parse
void chat_out_init(ChatOut *o, const ChatOutConfig *c);
void chat_out_free(ChatOut *o); // accepts a zeroed struct
// Appends output text; final: the choice has finished (everything held back is settled).
void chat_out_feed(ChatOut *o, const char *s, size_t n, bool final);
// The SSE deltas for what became certain since the last call, the first of them after the role
// chunk: its content is "" before text and null before a call (OpenAI's; the Agents SDK reads ""
// as a message of its own), so it waits for the first delta. step carries the choice's index
// and, when logprobs were asked for, this step's tokens: they ride on the first content or
// reasoning delta written, else on an empty content delta (tool-call deltas carry none, as
// OpenAI's), so no token's logprob is lost.
void chat_out_stream(ChatOut *o, SBuf *out, const RespMeta *m, const RespChoice *step);
// The message's parts into rc (text = content, parsed, reasoning, calls), valid while o lives.
void chat_out_view(ChatOut *o, RespChoice *rc);
// The finish reason to report: "tool_calls" when calls were read and the model stopped by itself
// (not for a named tool_choice, where OpenAI says "stop"), else engine_reason.
const char *chat_out_finish(const ChatOut *o, const char *engine_reason);
