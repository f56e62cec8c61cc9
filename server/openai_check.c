// openai_check.c: the building blocks of request validation (openai-api.md §6 "cJSON", §7):
// the error envelope, the raw-body scan for ill-formed UTF-8 and NUL that cJSON cannot do, JSON
// parsing with a useful position, and typed field readers whose messages follow OpenAI's
// ("Invalid type for 'n': expected an integer, but got a string instead.").
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/template/template.h"
#include "server/openai_impl.h"

int api_error(ApiError *e, int status, const char *type, const char *code, const char *param,
              const char *fmt, ...) {
    if (!e) return SL_ERR;
    e->status = status;
    e->type = type ? type : "invalid_request_error";
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return SL_ERR;
}

// ----------------------------------------------------------------------------
// raw body scan

static int hex4(const unsigned char *s, size_t n) {
    if (n < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

// One pass over the bytes with just enough JSON structure to know whether we are inside a string
// and which top-level key we are under (for `param`). Malformed structure is left to cJSON.
int oai_scan_body(const char *body, size_t len, ApiError *e) {
    const unsigned char *s = (const unsigned char *)body;
    bool in_str = false, top_is_object = false, expect_key = false, str_is_key = false;
    long depth = 0;
    char key[OAI_PARAM_MAX] = "";
    size_t key_len = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        if (c == 0)
            return api_error(e, 400, NULL, NULL, key, "Invalid request body: a NUL byte at offset %zu", i);
        if (c >= 0x80) {
            int l = utf8_char_len(s + i, len - i, NULL);
            if (l <= 0) // ill-formed, or cut off by the end of the body
                return api_error(e, 400, NULL, NULL, key,
                                 "Invalid request body: it is not valid UTF-8 (byte 0x%02x at offset %zu)", c, i);
            if (in_str && str_is_key && key_len + l < sizeof key) {
                memcpy(key + key_len, s + i, l);
                key[key_len += l] = 0;
            }
            i += l;
            continue;
        }
        if (!in_str) {
            if (c == '"') {
                in_str = true;
                str_is_key = depth == 1 && top_is_object && expect_key;
                if (str_is_key) key_len = 0, key[0] = 0;
            } else if (c == '{' || c == '[') {
                if (depth == 0) top_is_object = c == '{';
                depth++;
                if (depth == 1) expect_key = top_is_object;
            } else if (c == '}' || c == ']') {
                depth--;
            } else if (depth == 1 && c == ',') {
                expect_key = top_is_object;
            } else if (depth == 1 && c == ':') {
                expect_key = false;
            }
            i++;
            continue;
        }
        // inside a string
        if (c == '"') {
            in_str = false;
            i++;
            continue;
        }
        if (c < 0x20)
            return api_error(e, 400, NULL, NULL, str_is_key ? NULL : key,
                             "Invalid request body: a raw control character 0x%02x inside a string at offset %zu "
                             "(escape it)", c, i);
        if (c != '\\') {
            if (str_is_key && key_len + 1 < sizeof key) key[key_len++] = (char)c, key[key_len] = 0;
            i++;
            continue;
        }
        if (i + 1 >= len) break; // truncated: cJSON reports it
        const char *where = str_is_key ? NULL : key;
        // cJSON 1.7.15 turns a malformed \u escape into a NUL byte (the string silently ends
        // there) and takes any letter after a backslash: refuse both here, and keep scanning
        if (s[i + 1] != 'u') {
            if (!strchr("\"\\/bfnrt", s[i + 1]) || !s[i + 1])
                return api_error(e, 400, NULL, NULL, where,
                                 "Invalid request body: an invalid escape '\\%c' at offset %zu", (char)s[i + 1], i);
            i += 2;
            continue;
        }
        int v = hex4(s + i + 2, len - i - 2);
        if (v < 0)
            return api_error(e, 400, NULL, NULL, where,
                             "Invalid request body: a \\u escape without four hex digits at offset %zu", i);
        if (v == 0)
            return api_error(e, 400, NULL, NULL, where,
                             "Invalid request body: strings must not contain NUL (\\u0000 at offset %zu)", i);
        if (v >= 0xDC00 && v <= 0xDFFF)
            return api_error(e, 400, NULL, NULL, where,
                             "Invalid request body: a lone UTF-16 low surrogate \\u%04x at offset %zu", v, i);
        if (v >= 0xD800 && v <= 0xDBFF) {
            int lo = (i + 7 < len && s[i + 6] == '\\' && s[i + 7] == 'u') ? hex4(s + i + 8, len - i - 8) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF)
                return api_error(e, 400, NULL, NULL, where,
                                 "Invalid request body: a lone UTF-16 high surrogate \\u%04x at offset %zu", v, i);
            i += 12;
            continue;
        }
        i += 6;
    }
    return SL_OK;
}

cJSON *oai_parse_object(const char *body, size_t len, ApiError *e) {
    if (len == 0) {
        api_error(e, 400, NULL, NULL, NULL,
                  "We could not parse the JSON body of your request. (HINT: the body is empty; "
                  "send a JSON object with Content-Type: application/json.)");
        return NULL;
    }
    if (oai_scan_body(body, len, e) != SL_OK) return NULL;
    // The caller's buffer has a NUL at body[len] (and no NUL before it: scanned), so parsing
    // len + 1 bytes with require_null_terminated rejects trailing garbage. Numbers keep their
    // source text: tools and tool calls reach the chat template as the client wrote them.
    CHECK(body[len] == 0, "request bodies are NUL-terminated");
    const char *end = NULL;
    cJSON *root = tmpl_json_parse(body, len + 1, &end, true);
    if (!root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : len;
        api_error(e, 400, NULL, NULL, NULL,
                  "We could not parse the JSON body of your request. (HINT: invalid JSON near byte %zu; "
                  "the body must be one JSON object, nested at most %d deep.)", at, CJSON_NESTING_LIMIT);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        api_error(e, 400, NULL, NULL, NULL, "Invalid request body: expected a JSON object, but got %s instead.",
                  oai_type_name(root));
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

// ----------------------------------------------------------------------------
// typed field readers: absent and null both mean "use the default"

const char *oai_type_name(const cJSON *v) {
    if (!v || cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        return isfinite(d) && d == floor(d) ? "an integer" : "a number";
    }
    return "an unknown type";
}

const cJSON *oai_field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

int oai_bad_type(ApiError *e, const char *param, const char *what, const cJSON *v) {
    return api_error(e, 400, NULL, "invalid_type", param,
                     "Invalid type for '%s': expected %s, but got %s instead.", param, what, oai_type_name(v));
}

int oai_get_bool(const cJSON *o, const char *key, bool def, bool *out, ApiError *e) {
    const cJSON *v = oai_field(o, key);
    *out = def;
    if (!v) return SL_OK;
    if (!cJSON_IsBool(v)) return oai_bad_type(e, key, "a boolean", v);
    *out = cJSON_IsTrue(v);
    return SL_OK;
}

int oai_check_int(const cJSON *v, const char *param, int64_t lo, int64_t hi, int64_t *out, ApiError *e) {
    if (!cJSON_IsNumber(v)) return oai_bad_type(e, param, "an integer", v);
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d)) return oai_bad_type(e, param, "an integer", v);
    if (d < (double)lo)
        return api_error(e, 400, NULL, "integer_below_min_value", param,
                         "Invalid '%s': integer below minimum value. Expected a value >= %lld, but got %.17g "
                         "instead.", param, (long long)lo, d);
    if (d > (double)hi)
        return api_error(e, 400, NULL, "integer_above_max_value", param,
                         "Invalid '%s': integer above maximum value. Expected a value <= %lld, but got %.17g "
                         "instead.", param, (long long)hi, d);
    *out = (int64_t)d;
    return SL_OK;
}

int oai_get_int(const cJSON *o, const char *key, int64_t lo, int64_t hi, int64_t def, int64_t *out,
                ApiError *e) {
    const cJSON *v = oai_field(o, key);
    *out = def;
    return v ? oai_check_int(v, key, lo, hi, out, e) : SL_OK;
}

int oai_get_num(const cJSON *o, const char *key, double lo, double hi, bool lo_open, double def, float *out,
                ApiError *e) {
    const cJSON *v = oai_field(o, key);
    *out = (float)def;
    if (!v) return SL_OK;
    if (!cJSON_IsNumber(v)) return oai_bad_type(e, key, "a number", v);
    double d = v->valuedouble;
    if (!isfinite(d))
        return api_error(e, 400, NULL, "invalid_value", key, "Invalid '%s': expected a finite number.", key);
    if (d < lo || (lo_open && d == lo))
        return api_error(e, 400, NULL, "decimal_below_min_value", key,
                         "Invalid '%s': decimal below minimum value. Expected a value %s %g, but got %g instead.",
                         key, lo_open ? ">" : ">=", lo, d);
    if (d > hi)
        return api_error(e, 400, NULL, "decimal_above_max_value", key,
                         "Invalid '%s': decimal above maximum value. Expected a value <= %g, but got %g instead.",
                         key, hi, d);
    *out = (float)d;
    return SL_OK;
}

int oai_get_str(const cJSON *o, const char *key, char **out, ApiError *e) {
    const cJSON *v = oai_field(o, key);
    *out = NULL;
    if (!v) return SL_OK;
    if (!cJSON_IsString(v)) return oai_bad_type(e, key, "a string", v);
    *out = xstrdup(v->valuestring);
    return SL_OK;
}

char *oai_json_dup(const cJSON *v) { return tmpl_json_print(v); }

int oai_token_ids(const cJSON *arr, int vocab, const char *param, int32_t **ids, int *n, ApiError *e) {
    *ids = NULL;
    *n = 0;
    if (!cJSON_IsArray(arr)) return oai_bad_type(e, param, "an array of token ids", arr);
    int count = cJSON_GetArraySize(arr);
    int32_t *out = xmalloc(sizeof(int32_t) * (size_t)MAX(count, 1));
    int k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        double d = cJSON_IsNumber(it) ? it->valuedouble : NAN;
        if (!isfinite(d) || d != floor(d)) {
            free(out);
            return api_error(e, 400, NULL, "invalid_type", param,
                             "Invalid '%s': expected an array of token ids (integers), but element %d is %s.",
                             param, k, oai_type_name(it));
        }
        if (d < 0 || d >= vocab) {
            free(out);
            return api_error(e, 400, NULL, "invalid_value", param,
                             "Invalid '%s': token id %.17g is out of vocabulary (valid ids are 0..%d).", param, d,
                             vocab - 1);
        }
        out[k++] = (int32_t)d;
    }
    *ids = out;
    *n = k;
    return SL_OK;
}
