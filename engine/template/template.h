// template.h: chat templates, a Jinja2 renderer that matches Python's jinja2 (3.1) byte for
// byte under the settings HF transformers uses for `apply_chat_template`:
// ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loopcontrols), a
// `tojson` filter that is json.dumps(ensure_ascii=False), and the globals raise_exception()
// and strftime_now().
//
// A template is parsed once at start-up (tmpl_parse; a syntax error names line and column)
// and is then immutable, so any number of threads may render it at once. Each render works
// in its own arena and is bounded by TmplLimits: a hostile template or message list gets an
// error, never a hang or an exhausted server.
//
// Every failure of tmpl_render is caused by the request meeting the template (a wrong role
// order the template rejects, a missing field, a type error, a limit): the server answers
// 400 with the message. Bugs in sluice abort through CHECK instead.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/common.h"

typedef struct ChatTemplate ChatTemplate;

// tmpl_render's failure codes; all are < 0 and all mean "400 with err" to the server.
#define TMPL_ERR_RENDER SL_ERR // a type error, an undefined value used, a bad argument, ...
#define TMPL_ERR_RAISED (-2)   // the template called raise_exception(msg): err is msg verbatim
#define TMPL_ERR_LIMIT (-3)    // a TmplLimits bound was hit

typedef struct {
    size_t max_output; // bytes of rendered text (default 8 MiB)
    size_t max_memory; // bytes of values made while rendering, beyond the context (64 MiB)
    long max_steps;    // loop iterations, calls and bulk work, in units (default 5,000,000)
    int max_depth;     // nested macro calls and recursive loops (default 100)
    int64_t now;       // seconds since the epoch for strftime_now(); 0 = the clock
} TmplLimits;

// The defaults above; fields left 0 in a caller's TmplLimits also take them.
TmplLimits tmpl_limits_default(void);

// Parses src (len bytes of UTF-8). On error returns SL_ERR with
// "line L, column C: <what>" in err and *out = NULL.
int tmpl_parse(ChatTemplate **out, const char *src, size_t len, char *err);
void tmpl_free(ChatTemplate *t); // accepts NULL

// Request JSON for templates: cJSON_ParseWithLengthOpts that also keeps, in each number
// node's valuestring, the number's source text where the double loses it (a fraction or
// exponent, 16 digits or more). The template then sees numbers as Python's json.loads makes
// them: `1.0` a float, a 30-digit integer an int with all its digits. cJSON_Delete frees the
// literals and cJSON_Duplicate copies them; cJSON_Print drops them, tmpl_json_print keeps
// them (compact, malloc'd).
cJSON *tmpl_json_parse(const char *text, size_t len, const char **end, bool require_null_terminated);
char *tmpl_json_print(const cJSON *j);

// Renders with the variables of `vars` (a JSON object: each key is a template variable).
// A number with a kept literal (tmpl_json_parse) is a float when written with a fraction or
// exponent, else an int of any size; one without is an int when whole, else a float.
// On success *out is a malloc'd NUL-terminated string the caller frees, *out_len its length.
// On failure returns TMPL_ERR_* with a one-line message in err and *out = NULL.
// lim may be NULL for the defaults.
int tmpl_render(const ChatTemplate *t, const cJSON *vars, const TmplLimits *lim, char **out, size_t *out_len,
                char *err);

// Builds the variables HF's apply_chat_template passes to a chat template: messages,
// add_generation_prompt, bos_token, eos_token (omitted when NULL), tools and documents (null
// when absent, as HF passes None), plus each key of kwargs (the request's
// chat_template_kwargs). As in HF, a bos_token / eos_token in kwargs replaces the
// tokenizer's, but kwargs cannot replace messages, tools, documents or
// add_generation_prompt. The inputs are copied; free the result with cJSON_Delete.
cJSON *tmpl_context_build(const cJSON *messages, const cJSON *tools, const cJSON *documents, bool add_generation_prompt,
                          const char *bos_token, const char *eos_token, const cJSON *kwargs);

// Reads the chat template of a HF tokenizer_config.json (the "chat_template" string, or the
// entry named "default" when it is a list of {name, template}), and its bos_token and
// eos_token (strings or {"content": ...} objects; NULL when absent). The strings are
// malloc'd for the caller. Returns SL_ERR with err set when the file has no template.
int tmpl_source_from_tokenizer_config(const char *path, char **src, char **bos_token, char **eos_token, char *err);
