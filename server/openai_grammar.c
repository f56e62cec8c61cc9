// openai_grammar.c: the structured-output fields of a request, in every spelling clients send,
// into one constraint (a GrammarKind and its canonical text, engine/sampling/grammar.h):
//
//   response_format         OpenAI: {"type": "text" | "json_object" | "json_schema",
//                           "json_schema": {"name", "schema", "strict"}}
//   structured_outputs      vLLM: {"json" | "regex" | "choice" | "grammar" | "structural_tag" |
//                           "json_object": ...}, exactly one
//   guided_json, guided_regex, guided_choice, guided_grammar    vLLM's older names
//   json_schema, grammar    llama.cpp's server
//
// At most one constraint per request. The canonical text is what the engine caches compiled
// grammars by: JSON values (schemas, choice lists, structural tags) printed compactly, so the same
// schema sent with other whitespace or as a JSON string hits the same entry; regexes and
// grammars as sent. Whether the text compiles is the engine's to say (XGrammar's message, a 400
// naming r->grammar_param).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/openai_impl.h"

typedef struct {
    GrammarKind kind;
    const cJSON *value;  // the constraint's JSON value (NULL for json_object)
    const char *param;   // the field that held it, for errors
} Constraint;

// A JSON value given either as itself or as a JSON string holding it (guided_json: "{...}").
static cJSON *json_value(const cJSON *v, const char *param, const char *what, bool *owned, ApiError *e) {
    *owned = false;
    if (!cJSON_IsString(v)) return (cJSON *)v;
    cJSON *p = cJSON_Parse(v->valuestring);
    if (!p) {
        api_error(e, 400, NULL, "invalid_value", param, "Invalid '%s': the string is not valid JSON (expected %s).",
                  param, what);
        return NULL;
    }
    *owned = true;
    return p;
}

// Keywords XGrammar 0.2.8 compiles without enforcing them: a schema using one would get a 200
// and output the schema refuses, so it is a 400 instead (vLLM refuses a similar list).
static const char *unenforced(const cJSON *o) {
    static const char *const ALWAYS[] = {"uniqueItems", "contains", "minContains", "maxContains", "if", "then",
                                         "else", "not", "dependentRequired", "dependentSchemas",
                                         "unevaluatedProperties", "unevaluatedItems"};
    for (size_t i = 0; i < ARRAY_LEN(ALWAYS); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, ALWAYS[i]);
        if (v && !(cJSON_IsFalse(v) && !strcmp(ALWAYS[i], "uniqueItems"))) return ALWAYS[i];
    }
    // multipleOf: XGrammar enforces it on integers only
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (cJSON_GetObjectItemCaseSensitive(o, "multipleOf") && !(cJSON_IsString(type) && !strcmp(type->valuestring, "integer")))
        return "multipleOf (on a non-integer)";
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(o, "allOf");
    if (cJSON_IsArray(all) && cJSON_GetArraySize(all) > 1) return "allOf";
    bool len = cJSON_GetObjectItemCaseSensitive(o, "maxLength") || cJSON_GetObjectItemCaseSensitive(o, "minLength");
    if (len && cJSON_GetObjectItemCaseSensitive(o, "format")) return "minLength/maxLength beside format";
    if (len && cJSON_GetObjectItemCaseSensitive(o, "pattern")) return "minLength/maxLength beside pattern";
    return NULL;
}

// Walks the subschemas of o (not property names: a property may be called "not"); the first
// unenforced keyword found goes to *kw with its JSON pointer in path.
static bool schema_check(const cJSON *o, char *path, size_t cap, const char **kw, int depth) {
    if (!cJSON_IsObject(o) || depth > 64) return true;
    if ((*kw = unenforced(o))) return false;
    static const char *const ONE[] = {"additionalProperties", "items", "propertyNames", "additionalItems"};
    static const char *const MAP[] = {"properties", "patternProperties", "$defs", "definitions"};
    static const char *const LIST[] = {"anyOf", "oneOf", "allOf", "prefixItems", "items"};
    size_t n = strlen(path);
    for (size_t i = 0; i < ARRAY_LEN(ONE); i++) {
        snprintf(path + n, cap - n, "/%s", ONE[i]);
        if (!schema_check(cJSON_GetObjectItemCaseSensitive(o, ONE[i]), path, cap, kw, depth + 1)) return false;
    }
    for (size_t i = 0; i < ARRAY_LEN(MAP); i++) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, MAP[i]), *it;
        if (!cJSON_IsObject(m)) continue;
        cJSON_ArrayForEach(it, m) {
            snprintf(path + n, cap - n, "/%s/%s", MAP[i], it->string);
            if (!schema_check(it, path, cap, kw, depth + 1)) return false;
        }
    }
    for (size_t i = 0; i < ARRAY_LEN(LIST); i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, LIST[i]), *it;
        int k = 0;
        if (!cJSON_IsArray(a)) continue;
        cJSON_ArrayForEach(it, a) {
            snprintf(path + n, cap - n, "/%s/%d", LIST[i], k++);
            if (!schema_check(it, path, cap, kw, depth + 1)) return false;
        }
    }
    path[n] = '\0';
    return true;
}

static int set_text(OaiRequest *r, const Constraint *c, ApiError *e) {
    r->grammar_kind = c->kind;
    snprintf(r->grammar_param, sizeof r->grammar_param, "%s", c->param);
    if (c->kind == GRAMMAR_JSON_OBJECT) return SL_OK;
    const cJSON *v = c->value;
    if (c->kind == GRAMMAR_REGEX || c->kind == GRAMMAR_EBNF) {
        if (!cJSON_IsString(v)) return oai_bad_type(e, c->param, "a string", v);
        if (!v->valuestring[0])
            return api_error(e, 400, NULL, "invalid_value", c->param, "Invalid '%s': expected a non-empty string.",
                             c->param);
        r->grammar = xstrdup(v->valuestring);
        r->grammar_len = strlen(r->grammar);
        return SL_OK;
    }
    bool owned;
    const char *what = c->kind == GRAMMAR_CHOICE ? "a list of strings" : "a JSON object";
    cJSON *j = json_value(v, c->param, what, &owned, e);
    if (!j) return SL_ERR;
    int rc = SL_OK;
    if (c->kind == GRAMMAR_CHOICE) {
        const cJSON *it;
        bool ok = cJSON_IsArray(j) && cJSON_GetArraySize(j) > 0;
        cJSON_ArrayForEach(it, j) ok &= cJSON_IsString(it);
        if (!ok) rc = api_error(e, 400, NULL, "invalid_value", c->param,
                                "Invalid '%s': expected a non-empty list of strings.", c->param);
    } else if (!cJSON_IsObject(j) && !(c->kind == GRAMMAR_JSON_SCHEMA && cJSON_IsBool(j))) {
        rc = oai_bad_type(e, c->param, c->kind == GRAMMAR_JSON_SCHEMA ? "a JSON schema (an object)" : "an object", j);
    } else if (c->kind == GRAMMAR_JSON_SCHEMA) {
        char path[256] = "#";
        const char *kw = NULL;
        if (!schema_check(j, path, sizeof path, &kw, 0))
            rc = api_error(e, 400, NULL, "invalid_value", c->param,
                           "Invalid '%s': the JSON schema keyword '%s' (at %s) is not supported: the grammar "
                           "engine (XGrammar) would not enforce it.", c->param, kw, path);
    }
    if (rc == SL_OK) {
        r->grammar = oai_json_dup(j);
        r->grammar_len = strlen(r->grammar);
    }
    if (owned) cJSON_Delete(j);
    return rc;
}

// Records constraint k; a second one is a 400 (which one should win is not ours to guess).
static int add(Constraint *have, int *n, GrammarKind kind, const cJSON *value, const char *param, ApiError *e) {
    if (*n > 0)
        return api_error(e, 400, NULL, "invalid_value", param,
                         "Only one structured output constraint may be given: got '%s' and '%s'.", have[0].param,
                         param);
    have[(*n)++] = (Constraint){kind, value, param};
    return SL_OK;
}

static int from_response_format(const cJSON *root, Constraint *have, int *n, ApiError *e) {
    const cJSON *rf = oai_field(root, "response_format");
    if (!rf) return SL_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
    if (!cJSON_IsObject(rf) || !cJSON_IsString(type))
        return api_error(e, 400, NULL, "invalid_value", "response_format",
                         "Invalid 'response_format': expected an object with a string 'type'.");
    const char *t = type->valuestring;
    if (!strcmp(t, "text")) return SL_OK;
    if (!strcmp(t, "json_object")) return add(have, n, GRAMMAR_JSON_OBJECT, NULL, "response_format", e);
    if (!strcmp(t, "json_schema")) {
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(js, "name");
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
        if (!cJSON_IsObject(js) || !cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) > 64)
            return api_error(e, 400, NULL, "invalid_value", "response_format",
                             "Invalid 'response_format': type 'json_schema' needs 'json_schema': {\"name\": a string "
                             "of 1 to 64 characters, \"schema\": object, \"strict\"?: boolean}.");
        if (!schema || cJSON_IsNull(schema)) // a name without a schema: any JSON object
            return add(have, n, GRAMMAR_JSON_OBJECT, NULL, "response_format", e);
        return add(have, n, GRAMMAR_JSON_SCHEMA, schema, "response_format", e);
    }
    return api_error(e, 400, NULL, "invalid_value", "response_format",
                     "Invalid 'response_format.type': expected one of 'text', 'json_object', 'json_schema', but "
                     "got '%s' instead.", t);
}

static const struct {
    const char *key;
    GrammarKind kind;
} SO_KEYS[] = {{"json", GRAMMAR_JSON_SCHEMA},  {"regex", GRAMMAR_REGEX},
               {"choice", GRAMMAR_CHOICE},     {"grammar", GRAMMAR_EBNF},
               {"structural_tag", GRAMMAR_STRUCTURAL_TAG}};

static int from_structured_outputs(const cJSON *root, Constraint *have, int *n, ApiError *e) {
    const cJSON *so = oai_field(root, "structured_outputs");
    if (!so) return SL_OK;
    if (!cJSON_IsObject(so)) return oai_bad_type(e, "structured_outputs", "an object", so);
    for (size_t i = 0; i < ARRAY_LEN(SO_KEYS); i++) {
        const cJSON *v = oai_field(so, SO_KEYS[i].key);
        if (v && add(have, n, SO_KEYS[i].kind, v, "structured_outputs", e) != SL_OK) return SL_ERR;
    }
    bool json_object = false;
    if (oai_get_bool(so, "json_object", false, &json_object, e) != SL_OK) return SL_ERR;
    if (json_object && add(have, n, GRAMMAR_JSON_OBJECT, NULL, "structured_outputs", e) != SL_OK) return SL_ERR;
    if (*n == 0)
        return api_error(e, 400, NULL, "invalid_value", "structured_outputs",
                         "Invalid 'structured_outputs': expected one of 'json', 'regex', 'choice', 'grammar', "
                         "'structural_tag' or 'json_object'.");
    return SL_OK;
}

int oai_parse_grammar(OaiRequest *r, const cJSON *root, ApiError *e) {
    Constraint have[1] = {{GRAMMAR_NONE, NULL, ""}};
    int n = 0;
    if (from_response_format(root, have, &n, e) != SL_OK || from_structured_outputs(root, have, &n, e) != SL_OK)
        return SL_ERR;
    // the top-level spellings; "" means absent (clients send empty strings for unset fields)
    const struct {
        const char *key;
        GrammarKind kind;
        const cJSON *v;
    } top[] = {{"guided_json", GRAMMAR_JSON_SCHEMA, oai_field(root, "guided_json")},
               {"guided_regex", GRAMMAR_REGEX, oai_field(root, "guided_regex")},
               {"guided_choice", GRAMMAR_CHOICE, oai_field(root, "guided_choice")},
               {"guided_grammar", GRAMMAR_EBNF, oai_field(root, "guided_grammar")},
               {"json_schema", GRAMMAR_JSON_SCHEMA, oai_field(root, "json_schema")},
               {"grammar", GRAMMAR_EBNF, oai_field(root, "grammar")}};
    for (size_t i = 0; i < ARRAY_LEN(top); i++) {
        const cJSON *v = top[i].v;
        if (!v || (cJSON_IsString(v) && !v->valuestring[0])) continue;
        if (add(have, &n, top[i].kind, v, top[i].key, e) != SL_OK) return SL_ERR;
    }
    return n ? set_text(r, &have[0], e) : SL_OK;
}
