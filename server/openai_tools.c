// openai_tools.c: a chat request's tools, tool_choice and parallel_tool_calls (openai-api.md §1),
// and the grammar that forces calls for tool_choice "required" or a named function.
//
// Forced calls follow vLLM: whatever the chat template and --tool-call-parser, a named function's
// output is constrained to its parameters' JSON schema (the whole output is the arguments), and
// "required" to a JSON array [{"name": ..., "parameters": ...}, ...] whose items are one of the
// tools (at most one with parallel_tool_calls false). The server reads them back with
// tool_parse.h's args and json_array formats, so the arguments always validate.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/openai_impl.h"

static bool tool_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int check_tools(OaiRequest *r, const cJSON *tools, ApiError *e) {
    if (!cJSON_IsArray(tools)) return oai_bad_type(e, "tools", "an array", tools);
    if (cJSON_GetArraySize(tools) == 0)
        return api_error(e, 400, NULL, "empty_array", "tools",
                         "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an "
                         "empty array instead.");
    int j = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *params = oai_field(fn, "parameters");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "function") || !cJSON_IsObject(fn) ||
            !cJSON_IsString(name) || !tool_name_ok(name->valuestring) || (params && !cJSON_IsObject(params)))
            return api_error(e, 400, NULL, "invalid_value", "tools",
                             "Invalid 'tools[%d]': expected {\"type\": \"function\", \"function\": {\"name\": "
                             "[a-zA-Z0-9_-]{1,64}, \"description\"?: string, \"parameters\"?: object}}.", j);
        j++;
    }
    r->tools_json = oai_json_dup(tools);
    return SL_OK;
}

static int parse_choice(OaiRequest *r, const cJSON *tools, const cJSON *tc, ApiError *e) {
    if (cJSON_IsString(tc)) {
        const char *v = tc->valuestring;
        if (!strcmp(v, "none")) r->tool_choice = OAI_TOOL_CHOICE_NONE;
        else if (!strcmp(v, "auto")) r->tool_choice = tools ? OAI_TOOL_CHOICE_AUTO : OAI_TOOL_CHOICE_NONE;
        else if (!strcmp(v, "required")) r->tool_choice = OAI_TOOL_CHOICE_REQUIRED;
        else
            return api_error(e, 400, NULL, "invalid_value", "tool_choice",
                             "Invalid 'tool_choice': expected 'none', 'auto', 'required' or {\"type\": \"function\", "
                             "\"function\": {\"name\": string}}, but got '%.64s'.", v);
        if (r->tool_choice == OAI_TOOL_CHOICE_REQUIRED && !tools)
            return api_error(e, 400, NULL, "invalid_value", "tool_choice",
                             "Invalid 'tool_choice': 'required' needs 'tools'.");
        return SL_OK;
    }
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    if (!cJSON_IsObject(tc) || !cJSON_IsString(name))
        return api_error(e, 400, NULL, "invalid_value", "tool_choice",
                         "Invalid 'tool_choice': expected 'none', 'auto', 'required' or {\"type\": \"function\", "
                         "\"function\": {\"name\": string}}.");
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *tn = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(t, "function"), "name");
        if (!strcmp(tn->valuestring, name->valuestring)) {
            r->tool_choice = OAI_TOOL_CHOICE_NAMED;
            r->tool_name = xstrdup(name->valuestring);
            return SL_OK;
        }
    }
    return api_error(e, 400, NULL, "invalid_value", "tool_choice",
                     "Invalid 'tool_choice': function '%s' is not one of the request's 'tools'.", name->valuestring);
}

int oai_parse_tools(OaiRequest *r, const cJSON *root, ApiError *e) {
    // the legacy spellings: answering them would take the legacy response shape (function_call)
    static const char *const LEGACY[] = {"functions", "function_call"};
    for (size_t i = 0; i < ARRAY_LEN(LEGACY); i++)
        if (oai_field(root, LEGACY[i]))
            return api_error(e, 400, NULL, "unsupported_parameter", LEGACY[i],
                             "Unsupported parameter: '%s' is deprecated and not supported by this server; use "
                             "'tools' and 'tool_choice'.", LEGACY[i]);
    const cJSON *tools = oai_field(root, "tools");
    if (tools && check_tools(r, tools, e) != SL_OK) return SL_ERR;
    r->tool_choice = tools ? OAI_TOOL_CHOICE_AUTO : OAI_TOOL_CHOICE_NONE;
    const cJSON *tc = oai_field(root, "tool_choice");
    if (tc && parse_choice(r, tools, tc, e) != SL_OK) return SL_ERR;
    return oai_get_bool(root, "parallel_tool_calls", true, &r->parallel_tool_calls, e);
}

// The function's parameters schema (a copy), or any object when it declares none.
static cJSON *params_schema(const cJSON *tool) {
    const cJSON *p = oai_field(cJSON_GetObjectItemCaseSensitive(tool, "function"), "parameters");
    if (p) return cJSON_Duplicate(p, true);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "object");
    return o;
}

static const char *tool_fn_name(const cJSON *tool) {
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tool, "function"), "name")->valuestring;
}

// [{"name": one of the tools, "parameters": that tool's schema}, ...], at least one
static cJSON *required_schema(const cJSON *tools, bool parallel) {
    cJSON *any = cJSON_CreateArray();
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        cJSON *item = cJSON_CreateObject(), *props = cJSON_CreateObject(), *name = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "type", "object");
        cJSON *en = cJSON_AddArrayToObject(name, "enum");
        cJSON_AddItemToArray(en, cJSON_CreateString(tool_fn_name(t)));
        cJSON_AddItemToObject(props, "name", name);
        cJSON_AddItemToObject(props, "parameters", params_schema(t));
        cJSON_AddItemToObject(item, "properties", props);
        cJSON *req = cJSON_AddArrayToObject(item, "required");
        cJSON_AddItemToArray(req, cJSON_CreateString("name"));
        cJSON_AddItemToArray(req, cJSON_CreateString("parameters"));
        cJSON_AddItemToArray(any, item);
    }
    cJSON *s = cJSON_CreateObject(), *items = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "type", "array");
    cJSON_AddNumberToObject(s, "minItems", 1);
    if (!parallel) cJSON_AddNumberToObject(s, "maxItems", 1);
    cJSON_AddItemToObject(items, "anyOf", any);
    cJSON_AddItemToObject(s, "items", items);
    return s;
}

int oai_tool_grammar(OaiRequest *r, ApiError *e) {
    if (r->tool_choice != OAI_TOOL_CHOICE_REQUIRED && r->tool_choice != OAI_TOOL_CHOICE_NAMED) return SL_OK;
    if (r->grammar_kind != GRAMMAR_NONE)
        return api_error(e, 400, NULL, "invalid_value", "tool_choice",
                         "Invalid 'tool_choice': a forced tool call cannot be combined with '%s' (both constrain "
                         "the output).", r->grammar_param);
    cJSON *tools = cJSON_Parse(r->tools_json);
    CHECK(tools, "tools_json is the server's own JSON");
    cJSON *schema = NULL;
    if (r->tool_choice == OAI_TOOL_CHOICE_REQUIRED) {
        schema = required_schema(tools, r->parallel_tool_calls);
    } else {
        const cJSON *t;
        cJSON_ArrayForEach(t, tools)
            if (!schema && !strcmp(tool_fn_name(t), r->tool_name)) schema = params_schema(t);
    }
    cJSON_Delete(tools);
    r->grammar = oai_json_dup(schema);
    r->grammar_len = strlen(r->grammar);
    r->grammar_kind = GRAMMAR_JSON_SCHEMA;
    snprintf(r->grammar_param, sizeof r->grammar_param, "tools");
    cJSON_Delete(schema);
    return SL_OK;
}
