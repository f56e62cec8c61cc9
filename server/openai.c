// openai.c: the request schemas of POST /v1/chat/completions and /v1/completions (openai-api.md
// §1, §3, §5) read into an OaiRequest, each bad input answered as §7's table says.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "server/openai_impl.h"

#define OAI_MAX_STOP_LEN 1024 // bytes of one stop string (engine/sampling/stop.h's STOP_MAX_STRING_LEN)

void oai_request_free(OaiRequest *r) {
    if (!r) return;
    free(r->model);
    for (int i = 0; i < r->n_messages; i++) {
        OaiMessage *m = &r->messages[i];
        free(m->role);
        free(m->content);
        free(m->name);
        free(m->tool_call_id);
        free(m->tool_calls_json);
    }
    free(r->messages);
    free(r->tools_json);
    free(r->chat_template_kwargs_json);
    for (int i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].text);
        free(r->prompts[i].ids);
    }
    free(r->prompts);
    free(r->bias_ids);
    free(r->bias_vals);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->stop_token_ids);
    free(r->user);
    free(r->request_id);
    free(r->grammar);
    free(r->cache_salt);
    memset(r, 0, sizeof *r);
}

// ----------------------------------------------------------------------------
// chat messages

static const char *const ROLES[] = {"system", "developer", "user", "assistant", "tool"};

// Joins a content value (a string or an array of parts) into m->content. Text parts are joined
// with "\n" (vLLM's rule); an assistant's refusal parts are dropped; anything else is not text.
static int message_content(OaiMessage *m, const cJSON *content, int i, ApiError *e) {
    if (cJSON_IsString(content)) {
        m->content = xstrdup(content->valuestring);
        m->content_len = strlen(m->content);
        return SL_OK;
    }
    if (!cJSON_IsArray(content))
        return api_error(e, 400, NULL, "invalid_type", "messages",
                         "Invalid type for 'messages[%d].content': expected a string or an array of content "
                         "parts, but got %s instead.", i, oai_type_name(content));
    size_t len = 0, cap = 64;
    char *buf = xmalloc(cap);
    buf[0] = 0;
    int j = 0, n_text = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const char *t = cJSON_IsString(type) ? type->valuestring : NULL;
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        int rc = SL_OK;
        if (!cJSON_IsObject(part) || !t)
            rc = api_error(e, 400, NULL, "invalid_type", "messages",
                           "Invalid 'messages[%d].content[%d]': expected an object with a string 'type'.", i, j);
        else if (!strcmp(t, "text") && !cJSON_IsString(text))
            rc = api_error(e, 400, NULL, "invalid_type", "messages",
                           "Invalid 'messages[%d].content[%d].text': expected a string, but got %s instead.", i,
                           j, oai_type_name(text));
        else if (!strcmp(t, "image_url") || !strcmp(t, "input_audio") || !strcmp(t, "file") ||
                 !strcmp(t, "input_image") || !strcmp(t, "video_url"))
            rc = api_error(e, 400, NULL, "invalid_value", "messages",
                           "Invalid 'messages[%d].content[%d]': content type '%s' is not supported: this model "
                           "takes text only.", i, j, t);
        else if (strcmp(t, "text") && !(strcmp(t, "refusal") == 0 && !strcmp(m->role, "assistant")))
            rc = api_error(e, 400, NULL, "invalid_value", "messages",
                           "Invalid 'messages[%d].content[%d].type': '%s' is not a supported content type "
                           "('text').", i, j, t);
        if (rc != SL_OK) {
            free(buf);
            return rc;
        }
        if (!strcmp(t, "text")) {
            size_t l = strlen(text->valuestring);
            if (len + l + 2 > cap) buf = xrealloc(buf, cap = 2 * (len + l + 2));
            if (n_text++ > 0) buf[len++] = '\n';
            memcpy(buf + len, text->valuestring, l + 1);
            len += l;
        }
        j++;
    }
    m->content = buf;
    m->content_len = len;
    return SL_OK;
}

static int message_tool_calls(OaiMessage *m, const cJSON *calls, int i, ApiError *e) {
    if (!cJSON_IsArray(calls))
        return api_error(e, 400, NULL, "invalid_type", "messages",
                         "Invalid type for 'messages[%d].tool_calls': expected an array, but got %s instead.", i,
                         oai_type_name(calls));
    int j = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsObject(c) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(c, "id")) ||
            !cJSON_IsObject(fn) || !cJSON_IsString(name) || !cJSON_IsString(args))
            return api_error(e, 400, NULL, "invalid_value", "messages",
                             "Invalid 'messages[%d].tool_calls[%d]': expected {\"id\": string, \"type\": "
                             "\"function\", \"function\": {\"name\": string, \"arguments\": string}}.", i, j);
        j++;
    }
    m->tool_calls_json = oai_json_dup(calls);
    return SL_OK;
}

static int parse_message(OaiMessage *m, const cJSON *msg, int i, ApiError *e) {
    if (!cJSON_IsObject(msg))
        return api_error(e, 400, NULL, "invalid_type", "messages",
                         "Invalid type for 'messages[%d]': expected an object, but got %s instead.", i,
                         oai_type_name(msg));
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
    if (!role || cJSON_IsNull(role))
        return api_error(e, 400, NULL, "missing_required_parameter", "messages",
                         "Missing required parameter: 'messages[%d].role'.", i);
    bool known = false;
    for (size_t k = 0; cJSON_IsString(role) && k < ARRAY_LEN(ROLES); k++) known |= !strcmp(role->valuestring, ROLES[k]);
    if (!known)
        return api_error(e, 400, NULL, "invalid_value", "messages",
                         "Invalid 'messages[%d].role': expected one of 'system', 'developer', 'user', "
                         "'assistant', 'tool', but got %s%s%s instead.", i,
                         cJSON_IsString(role) ? "'" : "", cJSON_IsString(role) ? role->valuestring : oai_type_name(role),
                         cJSON_IsString(role) ? "'" : "");
    m->role = xstrdup(role->valuestring);
    bool assistant = !strcmp(m->role, "assistant"), tool = !strcmp(m->role, "tool");

    const cJSON *calls = oai_field(msg, "tool_calls");
    if (calls && !assistant)
        return api_error(e, 400, NULL, "invalid_value", "messages",
                         "Invalid 'messages[%d]': only assistant messages may have 'tool_calls'.", i);
    if (calls && message_tool_calls(m, calls, i, e) != SL_OK) return SL_ERR;
    const cJSON *content = oai_field(msg, "content");
    if (!content && !(assistant && (calls || oai_field(msg, "refusal"))))
        return api_error(e, 400, NULL, "missing_required_parameter", "messages",
                         "Missing required parameter: 'messages[%d].content'.", i);
    if (content && message_content(m, content, i, e) != SL_OK) return SL_ERR;

    const cJSON *name = oai_field(msg, "name");
    if (name && !cJSON_IsString(name))
        return api_error(e, 400, NULL, "invalid_type", "messages",
                         "Invalid type for 'messages[%d].name': expected a string, but got %s instead.", i,
                         oai_type_name(name));
    if (name) m->name = xstrdup(name->valuestring);
    const cJSON *id = oai_field(msg, "tool_call_id");
    if (tool && !cJSON_IsString(id))
        return api_error(e, 400, NULL, "missing_required_parameter", "messages",
                         "Missing required parameter: 'messages[%d].tool_call_id' (a string) for a tool message.",
                         i);
    if (tool) m->tool_call_id = xstrdup(id->valuestring);
    return SL_OK;
}

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

static int parse_tools(OaiRequest *r, const cJSON *root, ApiError *e) {
    const cJSON *tools = oai_field(root, "tools");
    if (tools) {
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
    }
    const cJSON *tc = oai_field(root, "tool_choice");
    r->tool_choice = tools ? OAI_TOOL_CHOICE_AUTO : OAI_TOOL_CHOICE_NONE;
    if (!tc) return SL_OK;
    if (cJSON_IsString(tc) && !strcmp(tc->valuestring, "none")) {
        r->tool_choice = OAI_TOOL_CHOICE_NONE;
        return SL_OK;
    }
    if (cJSON_IsString(tc) && !strcmp(tc->valuestring, "auto")) return SL_OK;
    if (cJSON_IsString(tc) && !strcmp(tc->valuestring, "required"))
        return api_error(e, 400, NULL, "unsupported_value", "tool_choice",
                         tools ? "Invalid 'tool_choice': 'required' is not supported by this server (it cannot "
                                 "constrain output to tool calls); use 'auto' or 'none'."
                               : "Invalid 'tool_choice': 'required' needs 'tools'.");
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    if (!cJSON_IsObject(tc) || !cJSON_IsString(name))
        return api_error(e, 400, NULL, "invalid_value", "tool_choice",
                         "Invalid 'tool_choice': expected 'none', 'auto', 'required' or {\"type\": \"function\", "
                         "\"function\": {\"name\": string}}.");
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *tn = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(t, "function"), "name");
        if (!strcmp(tn->valuestring, name->valuestring))
            return api_error(e, 400, NULL, "unsupported_value", "tool_choice",
                             "Invalid 'tool_choice': naming a function is not supported by this server (it "
                             "cannot force a tool call); use 'auto' or 'none'.");
    }
    return api_error(e, 400, NULL, "invalid_value", "tool_choice",
                     "Invalid 'tool_choice': function '%s' is not one of the request's 'tools'.", name->valuestring);
}

static int parse_messages(OaiRequest *r, const cJSON *root, ApiError *e) {
    const cJSON *msgs = oai_field(root, "messages");
    if (!msgs)
        return api_error(e, 400, NULL, "missing_required_parameter", "messages",
                         "Missing required parameter: 'messages'.");
    if (!cJSON_IsArray(msgs)) return oai_bad_type(e, "messages", "an array of message objects", msgs);
    int n = cJSON_GetArraySize(msgs);
    if (n == 0)
        return api_error(e, 400, NULL, "empty_array", "messages",
                         "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                         "empty array instead.");
    r->messages = xcalloc((size_t)n, sizeof(OaiMessage));
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        int i = r->n_messages++;
        if (parse_message(&r->messages[i], m, i, e) != SL_OK) return SL_ERR;
    }
    if (parse_tools(r, root, e) != SL_OK) return SL_ERR;
    if (oai_get_bool(root, "add_generation_prompt", true, &r->add_generation_prompt, e) != SL_OK ||
        oai_get_bool(root, "continue_final_message", false, &r->continue_final_message, e) != SL_OK)
        return SL_ERR;
    if (r->add_generation_prompt && r->continue_final_message)
        return api_error(e, 400, NULL, "invalid_value", "continue_final_message",
                         "Cannot set both 'continue_final_message' and 'add_generation_prompt' to true.");
    const cJSON *kw = oai_field(root, "chat_template_kwargs");
    if (kw && !cJSON_IsObject(kw)) return oai_bad_type(e, "chat_template_kwargs", "an object", kw);
    if (kw) r->chat_template_kwargs_json = oai_json_dup(kw);
    return SL_OK;
}

// ----------------------------------------------------------------------------
// completions prompts: a string, strings, token ids, or lists of token ids

static int parse_prompts(OaiRequest *r, const cJSON *root, int vocab, ApiError *e) {
    const cJSON *p = oai_field(root, "prompt");
    if (!p) return api_error(e, 400, NULL, "missing_required_parameter", "prompt", "Missing required parameter: 'prompt'.");
    if (cJSON_IsString(p)) {
        if (!p->valuestring[0])
            return api_error(e, 400, NULL, "invalid_value", "prompt", "Invalid 'prompt': the prompt is empty.");
        r->prompts = xcalloc(1, sizeof(OaiPrompt));
        r->n_prompts = 1;
        r->prompts[0].text = xstrdup(p->valuestring);
        r->prompts[0].len = strlen(p->valuestring);
        return SL_OK;
    }
    if (!cJSON_IsArray(p))
        return oai_bad_type(e, "prompt", "a string, an array of strings, an array of token ids or an array of "
                                         "token-id arrays", p);
    int n = cJSON_GetArraySize(p);
    if (n == 0) return api_error(e, 400, NULL, "invalid_value", "prompt", "Invalid 'prompt': the prompt is empty.");
    const cJSON *first = p->child;
    if (cJSON_IsNumber(first)) { // one prompt of token ids
        r->prompts = xcalloc(1, sizeof(OaiPrompt));
        r->n_prompts = 1;
        return oai_token_ids(p, vocab, "prompt", &r->prompts[0].ids, &r->prompts[0].n_ids, e);
    }
    if (n > OAI_MAX_PROMPTS)
        return api_error(e, 400, NULL, "invalid_value", "prompt",
                         "Invalid 'prompt': %d prompts in one request; at most %d are allowed.", n, OAI_MAX_PROMPTS);
    r->prompts = xcalloc((size_t)n, sizeof(OaiPrompt));
    bool strings = cJSON_IsString(first);
    const cJSON *it;
    cJSON_ArrayForEach(it, p) {
        OaiPrompt *q = &r->prompts[r->n_prompts++];
        if (strings != cJSON_IsString(it) || (!strings && !cJSON_IsArray(it)))
            return api_error(e, 400, NULL, "invalid_type", "prompt",
                             "Invalid 'prompt[%d]': expected %s like the first element, but got %s instead.",
                             r->n_prompts - 1, strings ? "a string" : "an array of token ids", oai_type_name(it));
        if (strings) {
            if (!it->valuestring[0])
                return api_error(e, 400, NULL, "invalid_value", "prompt", "Invalid 'prompt[%d]': the prompt is empty.",
                                 r->n_prompts - 1);
            q->text = xstrdup(it->valuestring);
            q->len = strlen(it->valuestring);
            continue;
        }
        if (oai_token_ids(it, vocab, "prompt", &q->ids, &q->n_ids, e) != SL_OK) return SL_ERR;
        if (q->n_ids == 0)
            return api_error(e, 400, NULL, "invalid_value", "prompt", "Invalid 'prompt[%d]': the prompt is empty.",
                             r->n_prompts - 1);
    }
    return SL_OK;
}

// ----------------------------------------------------------------------------
// sampling, stopping and the rest

static int parse_logit_bias(OaiRequest *r, const cJSON *root, int vocab, ApiError *e) {
    const cJSON *lb = oai_field(root, "logit_bias");
    if (!lb) return SL_OK;
    if (!cJSON_IsObject(lb)) return oai_bad_type(e, "logit_bias", "an object mapping token ids to numbers", lb);
    int n = cJSON_GetArraySize(lb);
    r->bias_ids = xmalloc(sizeof(int32_t) * (size_t)MAX(n, 1));
    r->bias_vals = xmalloc(sizeof(float) * (size_t)MAX(n, 1));
    const cJSON *it;
    cJSON_ArrayForEach(it, lb) {
        const char *k = it->string;
        char *end = NULL;
        long long id = strtoll(k, &end, 10);
        if (!k[0] || *end || !(k[0] >= '0' && k[0] <= '9') || (k[0] == '0' && k[1]))
            return api_error(e, 400, NULL, "invalid_value", "logit_bias",
                             "Invalid 'logit_bias': key '%.64s' is not a token id (a non-negative integer).", k);
        if (id >= vocab)
            return api_error(e, 400, NULL, "invalid_value", "logit_bias",
                             "Invalid 'logit_bias': token id %.64s is out of vocabulary (valid ids are 0..%d).", k,
                             vocab - 1);
        double v = cJSON_IsNumber(it) ? it->valuedouble : NAN;
        if (!isfinite(v) || v < -100 || v > 100)
            return api_error(e, 400, NULL, "invalid_value", "logit_bias",
                             "Invalid 'logit_bias' value for token %.64s: expected a number between -100 and 100, "
                             "but got %s.", k, cJSON_IsNumber(it) ? "a value out of range" : oai_type_name(it));
        r->bias_ids[r->n_bias] = (int32_t)id;
        r->bias_vals[r->n_bias++] = (float)v;
    }
    return SL_OK;
}

static int parse_stop(OaiRequest *r, const cJSON *root, int vocab, ApiError *e) {
    const cJSON *stop = oai_field(root, "stop");
    if (stop) {
        bool one = cJSON_IsString(stop);
        if (!one && !cJSON_IsArray(stop)) return oai_bad_type(e, "stop", "a string or an array of strings", stop);
        int n = one ? 1 : cJSON_GetArraySize(stop);
        if (n > OAI_MAX_STOP)
            return api_error(e, 400, NULL, "array_above_max_length", "stop",
                             "Invalid 'stop': array too long. Expected an array with maximum length %d, but got an "
                             "array with length %d instead.", OAI_MAX_STOP, n);
        r->stop = xcalloc((size_t)MAX(n, 1), sizeof(char *));
        for (const cJSON *it = one ? stop : stop->child; it; it = one ? NULL : it->next) {
            if (!cJSON_IsString(it))
                return api_error(e, 400, NULL, "invalid_type", "stop",
                                 "Invalid type for 'stop' entry: expected a string, but got %s instead.",
                                 oai_type_name(it));
            size_t l = strlen(it->valuestring);
            if (l > OAI_MAX_STOP_LEN)
                return api_error(e, 400, NULL, "invalid_value", "stop",
                                 "Invalid 'stop': a stop string of %zu bytes; at most %d are allowed.", l,
                                 OAI_MAX_STOP_LEN);
            if (l > 0) r->stop[r->n_stop++] = xstrdup(it->valuestring); // "" can never match: dropped
        }
    }
    const cJSON *ids = oai_field(root, "stop_token_ids");
    if (!ids) return SL_OK;
    if (cJSON_IsArray(ids) && cJSON_GetArraySize(ids) > OAI_MAX_STOP_TOKEN_IDS)
        return api_error(e, 400, NULL, "array_above_max_length", "stop_token_ids",
                         "Invalid 'stop_token_ids': at most %d ids are allowed.", OAI_MAX_STOP_TOKEN_IDS);
    return oai_token_ids(ids, vocab, "stop_token_ids", &r->stop_token_ids, &r->n_stop_token_ids, e);
}

// Known fields this server cannot honour: a 400 when they ask for something, never a silent drop.
static int reject_unsupported(const cJSON *root, ApiError *e) {
    static const char *const NONNULL[] = {"logits_processors", "chat_template", "suffix"};
    static const char *const NONEMPTY[] = {"allowed_token_ids", "bad_words"};
    for (size_t i = 0; i < ARRAY_LEN(NONNULL); i++) {
        const cJSON *v = oai_field(root, NONNULL[i]);
        if (v && !(cJSON_IsString(v) && !v->valuestring[0]))
            return api_error(e, 400, NULL, "unsupported_parameter", NONNULL[i],
                             "Unsupported parameter: '%s' is not supported by this server.", NONNULL[i]);
    }
    for (size_t i = 0; i < ARRAY_LEN(NONEMPTY); i++) {
        const cJSON *v = oai_field(root, NONEMPTY[i]);
        if (v && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0))
            return api_error(e, 400, NULL, "unsupported_parameter", NONEMPTY[i],
                             "Unsupported parameter: '%s' is not supported by this server.", NONEMPTY[i]);
    }
    bool beam;
    if (oai_get_bool(root, "use_beam_search", false, &beam, e) != SL_OK) return SL_ERR;
    if (beam)
        return api_error(e, 400, NULL, "unsupported_value", "use_beam_search",
                         "Invalid 'use_beam_search': beam search is not supported by this server.");
    return SL_OK;
}

static int parse_sampling(OaiRequest *r, const cJSON *root, const OaiLimits *lim, ApiError *e) {
    int64_t v;
    if (oai_get_num(root, "temperature", 0, 2, false, 1.0, &r->temperature, e) != SL_OK ||
        oai_get_num(root, "top_p", 0, 1, true, 1.0, &r->top_p, e) != SL_OK ||
        oai_get_num(root, "min_p", 0, 1, false, 0.0, &r->min_p, e) != SL_OK ||
        oai_get_num(root, "presence_penalty", -2, 2, false, 0.0, &r->presence_penalty, e) != SL_OK ||
        oai_get_num(root, "frequency_penalty", -2, 2, false, 0.0, &r->frequency_penalty, e) != SL_OK ||
        oai_get_num(root, "repetition_penalty", 0, 1e6, true, 1.0, &r->repetition_penalty, e) != SL_OK)
        return SL_ERR;
    if (oai_get_int(root, "top_k", -1, INT32_MAX, -1, &v, e) != SL_OK) return SL_ERR;
    r->top_k = (int)v;
    const cJSON *seed = oai_field(root, "seed");
    if (seed) {
        if (!cJSON_IsNumber(seed) || !isfinite(seed->valuedouble) || seed->valuedouble != floor(seed->valuedouble))
            return oai_bad_type(e, "seed", "an integer", seed);
        double d = seed->valuedouble;
        if (d < -9223372036854775808.0 || d >= 9223372036854775808.0)
            return api_error(e, 400, NULL, "invalid_value", "seed", "Invalid 'seed': expected a 64-bit integer.");
        r->has_seed = true;
        r->seed = (uint64_t)(int64_t)d;
    }
    if (parse_logit_bias(r, root, lim->vocab, e) != SL_OK) return SL_ERR;

    // logprobs: a boolean plus top_logprobs for chat, an integer for completions
    r->logprobs = -1;
    if (r->kind == OAI_CHAT) {
        bool lp;
        if (oai_get_bool(root, "logprobs", false, &lp, e) != SL_OK) return SL_ERR;
        if (oai_get_int(root, "top_logprobs", 0, OAI_MAX_LOGPROBS, -1, &v, e) != SL_OK) return SL_ERR;
        if (v >= 0 && !lp)
            return api_error(e, 400, NULL, "invalid_value", "top_logprobs",
                             "Invalid 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.");
        if (lp) r->logprobs = v >= 0 ? (int)v : 0;
    } else {
        if (oai_get_int(root, "logprobs", 0, OAI_MAX_LOGPROBS, -1, &v, e) != SL_OK) return SL_ERR;
        r->logprobs = (int)v;
    }
    if (oai_get_int(root, "prompt_logprobs", 0, OAI_MAX_LOGPROBS, -1, &v, e) != SL_OK) return SL_ERR;
    r->prompt_logprobs = (int)v;
    return SL_OK;
}

static int parse_lengths(OaiRequest *r, const cJSON *root, const OaiLimits *lim, ApiError *e) {
    int64_t v;
    int64_t cap = lim->max_tokens > 0 ? lim->max_tokens : INT32_MAX;
    r->max_tokens_param = oai_field(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    // vLLM: 0 with echo on completions (the prompt alone, e.g. for its logprobs)
    bool echo;
    if (oai_get_bool(root, "echo", false, &echo, e) != SL_OK) return SL_ERR;
    int min = r->kind == OAI_COMPLETION && echo ? 0 : 1;
    if (oai_get_int(root, r->max_tokens_param, min, cap, -1, &v, e) != SL_OK) return SL_ERR;
    r->max_tokens = (int)v;
    if (oai_get_int(root, "min_tokens", 0, INT32_MAX, 0, &v, e) != SL_OK) return SL_ERR;
    r->min_tokens = (int)v;
    if (r->max_tokens >= 0 && r->min_tokens > r->max_tokens)
        return api_error(e, 400, NULL, "invalid_value", "min_tokens",
                         "Invalid 'min_tokens': %d is more than %s (%d).", r->min_tokens, r->max_tokens_param,
                         r->max_tokens);
    if (oai_get_int(root, "n", 1, lim->max_n, 1, &v, e) != SL_OK) return SL_ERR;
    r->n = (int)v;
    const cJSON *best_of = oai_field(root, "best_of");
    if (best_of) {
        if (oai_check_int(best_of, "best_of", 1, INT32_MAX, &v, e) != SL_OK) return SL_ERR;
        if (v != r->n)
            return api_error(e, 400, NULL, "unsupported_value", "best_of",
                             "Invalid 'best_of': %lld; this server supports only best_of equal to n (%d).",
                             (long long)v, r->n);
    }
    const cJSON *tr = oai_field(root, "truncate_prompt_tokens");
    r->truncate_prompt_tokens = 0;
    if (tr) {
        if (oai_check_int(tr, "truncate_prompt_tokens", -1, INT32_MAX, &v, e) != SL_OK) return SL_ERR;
        if (v == 0)
            return api_error(e, 400, NULL, "invalid_value", "truncate_prompt_tokens",
                             "Invalid 'truncate_prompt_tokens': expected -1 or a value >= 1, but got 0.");
        r->truncate_prompt_tokens = (int)v;
    }
    return SL_OK;
}

static int parse_stream(OaiRequest *r, const cJSON *root, ApiError *e) {
    if (oai_get_bool(root, "stream", false, &r->stream, e) != SL_OK) return SL_ERR;
    const cJSON *so = oai_field(root, "stream_options");
    if (!so) return SL_OK;
    if (!r->stream)
        return api_error(e, 400, NULL, "invalid_value", "stream_options",
                         "Invalid 'stream_options': only allowed when 'stream' is true.");
    if (!cJSON_IsObject(so)) return oai_bad_type(e, "stream_options", "an object", so);
    const cJSON *iu = oai_field(so, "include_usage");
    if (iu && !cJSON_IsBool(iu)) return oai_bad_type(e, "stream_options", "a boolean 'include_usage'", iu);
    r->include_usage = iu && cJSON_IsTrue(iu);
    const cJSON *cu = oai_field(so, "continuous_usage_stats");
    if (cu && !cJSON_IsBool(cu)) return oai_bad_type(e, "stream_options", "a boolean 'continuous_usage_stats'", cu);
    r->continuous_usage = r->include_usage && cu && cJSON_IsTrue(cu); // vLLM: both must be set
    return SL_OK;
}

static int parse_model(OaiRequest *r, const cJSON *root, const OaiLimits *lim, ApiError *e) {
    if (oai_get_str(root, "model", &r->model, e) != SL_OK) return SL_ERR;
    if (!r->model || lim->n_model_names == 0) return SL_OK;
    for (int i = 0; i < lim->n_model_names; i++)
        if (!strcmp(r->model, lim->model_names[i])) return SL_OK;
    return api_error(e, 404, NULL, "model_not_found", "model",
                     "The model `%.200s` does not exist or you do not have access to it.", r->model);
}

int oai_parse(OaiKind kind, const char *body, size_t len, const OaiLimits *lim, OaiRequest *r, ApiError *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    cJSON *root = oai_parse_object(body, len, e);
    if (!root) return SL_ERR;
    int64_t prio;
    int rc = SL_ERR;
    if (parse_model(r, root, lim, e) != SL_OK) goto out;
    if (kind == OAI_CHAT ? parse_messages(r, root, e) : parse_prompts(r, root, lim->vocab, e)) goto out;
    if (parse_lengths(r, root, lim, e) || parse_sampling(r, root, lim, e) || parse_stop(r, root, lim->vocab, e) ||
        parse_stream(r, root, e) || reject_unsupported(root, e))
        goto out;
    if (oai_get_bool(root, "echo", false, &r->echo, e) || oai_get_bool(root, "ignore_eos", false, &r->ignore_eos, e) ||
        oai_get_bool(root, "skip_special_tokens", true, &r->skip_special_tokens, e) ||
        oai_get_bool(root, "include_stop_str_in_output", false, &r->include_stop_str_in_output, e) ||
        oai_get_int(root, "priority", INT32_MIN, INT32_MAX, 0, &prio, e) || oai_get_str(root, "user", &r->user, e) ||
        oai_get_str(root, "request_id", &r->request_id, e) ||
        oai_get_bool(root, "add_special_tokens", kind == OAI_COMPLETION, &r->add_special_tokens, e) ||
        oai_get_bool(root, "return_tokens_as_token_ids", false, &r->tokens_as_ids, e) ||
        oai_get_str(root, "cache_salt", &r->cache_salt, e))
        goto out;
    if (r->cache_salt && !r->cache_salt[0]) {
        api_error(e, 400, NULL, "invalid_value", "cache_salt", "Invalid 'cache_salt': expected a non-empty string.");
        goto out;
    }
    if (kind == OAI_CHAT && r->echo) { // vLLM's chat echo (prepend the last message) is not implemented
        api_error(e, 400, NULL, "unsupported_value", "echo",
                  "Invalid 'echo': echo on chat completions is not supported by this server.");
        goto out;
    }
    if (oai_parse_grammar(r, root, e) != SL_OK) goto out;
    r->priority = (int)prio;
    // prompt logprobs (and echo, which shows them) reach the whole body only: not yet in streams
    if (r->stream && (r->prompt_logprobs >= 0 || (r->echo && (r->logprobs >= 0 || r->max_tokens == 0)))) {
        const char *f = r->prompt_logprobs >= 0 ? "prompt_logprobs" : "echo";
        api_error(e, 400, NULL, "unsupported_value", f,
                  "Invalid '%s': prompt logprobs and max_tokens 0 with echo are not supported with stream yet.", f);
        goto out;
    }
    bool parallel;
    if (oai_get_bool(root, "parallel_tool_calls", true, &parallel, e)) goto out;
    rc = SL_OK;
out:
    cJSON_Delete(root);
    if (rc != SL_OK) oai_request_free(r);
    return rc;
}

int oai_check_context(const OaiRequest *r, int n_prompt, int max_model_len, int max_tokens_cap, int *max_out,
                      ApiError *e) {
    const char *param = r->kind == OAI_CHAT ? "messages" : "prompt";
    const char *what = r->kind == OAI_CHAT ? "messages" : "prompt";
    if (n_prompt >= max_model_len)
        return api_error(e, 400, NULL, "context_length_exceeded", param,
                         "This model's maximum context length is %d tokens. However, your %s resulted in %d tokens, "
                         "which leaves no room for the completion. Please reduce the length of the %s.",
                         max_model_len, what, n_prompt, what);
    if (r->max_tokens > 0 && (int64_t)n_prompt + r->max_tokens > max_model_len)
        return api_error(e, 400, NULL, "context_length_exceeded", param,
                         "This model's maximum context length is %d tokens. However, you requested %lld tokens (%d "
                         "in the %s, %d in the completion). Please reduce the length of the %s or completion.",
                         max_model_len, (long long)n_prompt + r->max_tokens, n_prompt, what, r->max_tokens, what);
    int room = max_model_len - n_prompt;
    *max_out = r->max_tokens > 0 ? r->max_tokens : r->kind == OAI_COMPLETION ? MIN(16, room) : room;
    if (max_tokens_cap > 0) *max_out = MIN(*max_out, max_tokens_cap);
    return SL_OK;
}
