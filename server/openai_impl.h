// openai_impl.h: helpers shared by openai.c and openai_check.c (not part of the server's API).
#pragma once

#include <cjson/cJSON.h>

#include "server/openai.h"

// "an integer", "a string", "null", ... for messages.
const char *oai_type_name(const cJSON *v);
// The member `key` of o, or NULL when it is absent or JSON null.
const cJSON *oai_field(const cJSON *o, const char *key);
// 400 invalid_type: "Invalid type for 'param': expected <what>, but got <type> instead."
int oai_bad_type(ApiError *e, const char *param, const char *what, const cJSON *v);

// Typed readers: absent or null leaves the default. Errors name `key` (or `param`) in e.
int oai_get_bool(const cJSON *o, const char *key, bool def, bool *out, ApiError *e);
int oai_check_int(const cJSON *v, const char *param, int64_t lo, int64_t hi, int64_t *out, ApiError *e);
int oai_get_int(const cJSON *o, const char *key, int64_t lo, int64_t hi, int64_t def, int64_t *out,
                ApiError *e);
// A finite number in [lo, hi] (or (lo, hi] when lo_open).
int oai_get_num(const cJSON *o, const char *key, double lo, double hi, bool lo_open, double def, float *out,
                ApiError *e);
int oai_get_str(const cJSON *o, const char *key, char **out, ApiError *e); // *out malloc'd or NULL
// Compact JSON of v, malloc'd.
char *oai_json_dup(const cJSON *v);

// The structured-output fields (openai_grammar.c) into r->grammar_kind / grammar / grammar_param.
int oai_parse_grammar(OaiRequest *r, const cJSON *root, ApiError *e);
