// openai.h: OpenAI request bodies in, validated plain-C requests out (reference: openai-api.md
// §1, §3, §5, §7).
//
// oai_parse() turns the raw body of POST /v1/chat/completions or /v1/completions into an
// OaiRequest with copied strings and arrays (no cJSON pointers survive), or fills an ApiError
// with the HTTP status and OpenAI's error envelope fields, `param` naming the offending field.
// Everything that can be checked without the prompt's token count is checked here, so a
// streaming request that passes never fails on its input after the first byte; the context
// length check (which needs the token count) is oai_check_context().
//
// Policy: unknown fields are accepted and ignored; a known field sluice cannot honour
// (best_of > n, logits_processors, ...) is a 400 saying so, never silently
// dropped. cJSON neither checks UTF-8 nor survives NUL, so the raw body is scanned for both
// first (oai_scan_body).
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "engine/sampling/grammar.h"

#define OAI_MAX_LOGPROBS 20   // top_logprobs / completions logprobs upper bound (vLLM's)
#define OAI_MAX_STOP 4        // stop strings per request (OpenAI's limit)
#define OAI_MAX_PROMPTS 64    // prompts in one /v1/completions batch
#define OAI_MAX_STOP_TOKEN_IDS 1024
#define OAI_PARAM_MAX 64

// ---- errors: an HTTP status plus OpenAI's envelope {"error":{message,type,param,code}}

typedef struct {
    int status;               // 400, 401, 404, 405, 413, 415, 429, 500, 503
    const char *type;         // "invalid_request_error", "server_error", ... (static string)
    const char *code;         // NULL or "model_not_found", "context_length_exceeded", ...
    char param[OAI_PARAM_MAX]; // "" means null
    char message[ERR_MAX];
} ApiError;

// Fills e and returns SL_ERR, so a check reads `return api_error(e, 400, ...)`.
// type NULL means "invalid_request_error"; param NULL means null.
__attribute__((format(printf, 6, 7))) int api_error(ApiError *e, int status, const char *type,
                                                     const char *code, const char *param,
                                                     const char *fmt, ...);

// ---- the request

typedef enum { OAI_CHAT = 0, OAI_COMPLETION = 1 } OaiKind;

typedef struct {
    char *role;            // system, developer, user, assistant, tool
    char *content;         // text parts joined with "\n"; NULL for an assistant turn with only tool calls
    size_t content_len;
    char *name;            // NULL when absent
    char *tool_call_id;    // tool messages
    char *tool_calls_json; // assistant tool_calls, compact JSON, NULL when absent
} OaiMessage;

typedef struct {
    char *text;            // a text prompt (NUL-terminated, len bytes), or NULL for token ids
    size_t len;
    int32_t *ids;          // (n_ids) token ids when text is NULL
    int n_ids;
} OaiPrompt;

typedef enum { OAI_TOOL_CHOICE_NONE = 0, OAI_TOOL_CHOICE_AUTO } OaiToolChoice;

typedef struct {
    OaiKind kind;
    char *model;                 // as sent; NULL when absent (then the served model)

    // chat
    OaiMessage *messages;        // (n_messages)
    int n_messages;
    char *tools_json;            // the tools array, compact JSON, NULL when absent
    OaiToolChoice tool_choice;
    bool add_generation_prompt;  // vLLM extra, default true
    bool continue_final_message; // vLLM extra, default false
    char *chat_template_kwargs_json; // object, compact JSON, NULL when absent

    // completions
    OaiPrompt *prompts;          // (n_prompts)
    int n_prompts;
    bool echo;

    // both: vLLM extras
    bool add_special_tokens;     // BOS as the tokenizer asks: default false for chat (the template
                                 // writes it), true for completions
    bool tokens_as_ids;          // return_tokens_as_token_ids: logprobs name tokens "token_id:N"
    char *cache_salt;            // prefix-cache isolation: blocks are shared only within one salt

    // generation length and count
    int max_tokens;              // -1: not given (chat: up to the context; completions: 16); 0 only
                                 // with echo (vLLM: the prompt alone, nothing generated)
    const char *max_tokens_param; // "max_tokens" or "max_completion_tokens" (for messages)
    int min_tokens;
    int n;
    int truncate_prompt_tokens;  // -1: off; k: keep the prompt's last k tokens

    // sampling (same meanings and ranges as engine/sampling/sampler.h's SamplingParams)
    float temperature, top_p, min_p;
    int top_k;
    float presence_penalty, frequency_penalty, repetition_penalty;
    int32_t *bias_ids;           // (n_bias) logit_bias
    float *bias_vals;
    int n_bias;
    bool has_seed;
    uint64_t seed;               // an int64 seed, bit-cast
    int logprobs;                // -1: none; 0..20: the chosen token's logprob and this many alternatives
    int prompt_logprobs;         // vLLM extra: -1 none; 0..20 alternatives per prompt token

    // stopping and output
    char **stop;                 // (n_stop) non-empty stop strings
    int n_stop;
    int32_t *stop_token_ids;     // (n_stop_token_ids)
    int n_stop_token_ids;
    bool ignore_eos;
    bool skip_special_tokens;    // default true
    bool include_stop_str_in_output;

    // streaming and scheduling
    bool stream;
    bool include_usage;          // stream_options.include_usage
    bool continuous_usage;       // stream_options.continuous_usage_stats (with include_usage): usage
                                 // so far in every chunk
    int priority;                // vLLM: lower runs first
    char *user;
    char *request_id;            // vLLM extra; NULL when absent
    // structured output (openai_grammar.c): at most one constraint, as its kind and canonical text
    GrammarKind grammar_kind;    // GRAMMAR_NONE: unconstrained
    char *grammar;               // (grammar_len) NULL for json_object
    size_t grammar_len;
    char grammar_param[OAI_PARAM_MAX]; // the field that held it ("response_format", "guided_regex", ...)
} OaiRequest;

// What a request is checked against.
typedef struct {
    int vocab;                        // token ids must be in [0, vocab)
    int max_n;                        // cap on n (>= 1)
    int max_tokens;                   // cap on max_tokens; 0 = no cap beyond the context
    const char *const *model_names;   // (n_model_names) names the `model` field may take
    int n_model_names;
} OaiLimits;

void oai_request_free(OaiRequest *r); // accepts a zeroed struct

// Checks that body[0..len) is well-formed UTF-8 with no NUL (raw, or as a \u0000 escape) and no
// raw control character inside a string. Iterative (any nesting depth). On failure fills e
// (400, param = the top-level key whose value holds the fault, when there is one).
int oai_scan_body(const char *body, size_t len, ApiError *e);

// Parses and validates one request body. SL_OK with *r filled (free with oai_request_free),
// or SL_ERR with e filled and *r zeroed.
int oai_parse(OaiKind kind, const char *body, size_t len, const OaiLimits *lim, OaiRequest *r,
              ApiError *e);

// The context check once the prompt is tokenized: n_prompt tokens (+ max_tokens when given)
// must fit max_model_len. SL_ERR + 400 context_length_exceeded otherwise. *max_out gets the
// output budget per choice: max_tokens, or when the request has none what the context leaves
// (completions: at most 16), at most max_tokens_cap (--max-tokens-cap; 0 = no cap), which
// oai_parse already applied to a max_tokens the request gives.
int oai_check_context(const OaiRequest *r, int n_prompt, int max_model_len, int max_tokens_cap, int *max_out,
                      ApiError *e);

// Helpers shared with the other endpoints (/tokenize, /detokenize).
// Parses body as a JSON object (after oai_scan_body); NULL with e filled otherwise.
struct cJSON *oai_parse_object(const char *body, size_t len, ApiError *e);
// A JSON array of token ids in [0, vocab) into a malloc'd array; SL_ERR + e naming param.
int oai_token_ids(const struct cJSON *arr, int vocab, const char *param, int32_t **ids, int *n,
                  ApiError *e);
