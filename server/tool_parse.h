// tool_parse.h: a model's tool calls read back out of its text (vLLM's --tool-call-parser), and
// reasoning ("<think>...</think>") split from the answer (--reasoning-parser).
//
// One left-to-right machine serves both streaming and whole outputs: text is fed as it comes,
// and after each feed `content` and each call's `name` / `args` hold only what is certain; they
// only ever grow. A stream sends what grew since the last feed; a whole output is the same feeds
// with final set at the end. So the concatenated deltas equal the non-streamed message by
// construction. Text that might be the start of a call (a partial "<tool_call>", trailing
// whitespace before one) is held back until it is known; a call that turns out malformed stays
// text (its marker and all) and never an error.
//
// Formats (the model's text -> calls):
//   hermes       <tool_call>{"name": "f", "arguments": {...}}</tool_call>, any number, text before
//   llama3_json  {"name": "f", "parameters": {...}} (optionally after <|python_tag|>), calls
//                separated by ";", only when the output starts with one
//   mistral      [TOOL_CALLS][{"name": "f", "arguments": {...}}, ...] or, newer tokenizers,
//                [TOOL_CALLS]f[ARGS]{...} per call
//   pythonic     [f(a=1, b="x"), g()] (optionally in <|python_start|>...<|python_end|>), Python
//                literals turned into JSON; each call goes out whole once its ")" came
//   json_array   tool_choice "required": [{"name": "f", "parameters": {...}}, ...] (the grammar's)
//   args         a named tool_choice: the whole output is the named function's arguments
// Arguments are the model's JSON text as written (hermes, llama3_json, mistral, json_array), so
// a stream's fragments are plain slices of it.
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "server/respond.h"

typedef enum {
    TOOL_FMT_NONE = 0,
    TOOL_FMT_HERMES,
    TOOL_FMT_LLAMA3_JSON,
    TOOL_FMT_MISTRAL,
    TOOL_FMT_PYTHONIC,
    TOOL_FMT_JSON_ARRAY,
    TOOL_FMT_ARGS,
} ToolFormat;

// --tool-call-parser NAME -> its format; TOOL_FMT_NONE for an unknown name.
ToolFormat tool_format_from_name(const char *name);
extern const char *const TOOL_PARSER_NAMES; // "hermes, llama3_json, mistral, pythonic" (messages)

typedef struct {
    char *name;
    SBuf args;          // the arguments JSON text so far
} ToolCallOut;

typedef struct {
    ToolFormat fmt;
    bool single;        // parallel_tool_calls false: the first call only, the rest dropped
    SBuf text;          // the whole output so far
    size_t pos;         // parsed up to here
    int state;          // tool_parse.c's ParseState
    int after;          // the state that follows the open call's arguments
    size_t mark;        // where the call being read began (with the whitespace before its marker):
    size_t resume;      // if it is malformed, text[mark..resume) becomes content and parsing resumes
    SBuf content;       // certain content
    ToolCallOut *calls; // (n_calls) certain calls; the last may still be growing
    int n_calls, cap_calls;
    int depth;          // the JSON scanner inside the open call's arguments
    bool in_str, esc;
} ToolParser;

// named: the function of a named tool_choice (TOOL_FMT_ARGS), announced before any text.
void tool_parser_init(ToolParser *p, ToolFormat fmt, bool single, const char *named);
void tool_parser_free(ToolParser *p); // accepts a zeroed struct
// Appends s[0..n) to the output; final: nothing follows (everything held back is settled).
void tool_parser_feed(ToolParser *p, const char *s, size_t n, bool final);
// The open call's arguments are complete (or it has none open).
bool tool_parser_args_done(const ToolParser *p);

// pythonic (tool_pythonic.c): one call "name(k=v, ...)" at text[*pos..n): 1 with the name and the
// arguments as a JSON object appended (pos past ")"), 0 when the text ends first, -1 malformed.
int tool_pythonic_call(const char *text, size_t n, size_t *pos, SBuf *name, SBuf *args);

// ---- reasoning (chat_output.c)

typedef enum { REASON_NONE = 0, REASON_DEEPSEEK_R1, REASON_QWEN3 } ReasonFormat;

ReasonFormat reason_format_from_name(const char *name); // REASON_NONE for an unknown name

// deepseek_r1: the output starts inside the thinking (the template opened "<think>"; a leading
// "<think>" is skipped) up to "</think>"; without one, all of it is reasoning.
// qwen3: thinking only when the output starts with "<think>" (up to "</think>" or the end);
// otherwise all of it is content (enable_thinking false, or a model that did not think).
// Whitespace right after "</think>" is dropped.
typedef struct {
    ReasonFormat fmt;
    int state;
    SBuf hold;          // bytes that may be part of a tag
    SBuf reasoning;     // certain reasoning text
} ReasonParser;

void reason_parser_init(ReasonParser *p, ReasonFormat fmt);
void reason_parser_free(ReasonParser *p);
// Feeds s[0..n); the content part that is now certain is appended to content.
void reason_parser_feed(ReasonParser *p, const char *s, size_t n, bool final, SBuf *content);
