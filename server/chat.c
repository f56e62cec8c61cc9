// chat.c: chat messages -> prompt text (see chat.h).
#define _GNU_SOURCE // memmem
#include <stdlib.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "engine/engine.h"
#include "server/chat.h"
#include "server/respond.h"

static char *token_text(const Tokenizer *tok, int id) {
    if (id < 0) return NULL;
    size_t n;
    const char *p = tok_piece(tok, id, &n);
    return xstrndup(p, n);
}

static atomic_bool tools_warned; // the warning about a template without tools, once per process

// Whether the template shows tools at all: one user message rendered with a tool and without.
static void probe_tools(ChatRenderer *c) {
    c->tools_ignored = true;
    if (!c->tmpl) return;
    OaiMessage m = {.role = "user", .content = "hi", .content_len = 2};
    OaiRequest r = {.kind = OAI_CHAT, .messages = &m, .n_messages = 1, .add_generation_prompt = true,
                    .tools_json = "[{\"type\":\"function\",\"function\":{\"name\":\"probe_tool_name\","
                                  "\"parameters\":{\"type\":\"object\"}}}]",
                    .tool_choice = OAI_TOOL_CHOICE_AUTO};
    char *text = NULL;
    size_t n = 0;
    ApiError e;
    atomic_store(&tools_warned, true); // not for the probe
    if (chat_render(c, &r, &text, &n, &e) == SL_OK) c->tools_ignored = !memmem(text, n, "probe_tool_name", 15);
    atomic_store(&tools_warned, false);
    free(text);
}

int chat_init(ChatRenderer *c, const char *model_path, const Engine *e, const char *template_path, char *err) {
    memset(c, 0, sizeof *c);
    const Tokenizer *tok = engine_tokenizer(e);
    c->bos = token_text(tok, tok_bos(tok));
    c->eos = token_text(tok, tok_eos(tok));
    if (template_path) {
        size_t len = 0;
        char *src = file_read_all(template_path, &len, err);
        if (!src) return SL_ERR;
        if (tmpl_parse(&c->tmpl, src, len, err) != SL_OK) {
            char msg[ERR_MAX];
            snprintf(msg, sizeof msg, "%s", err);
            free(src);
            return seterr(err, "--chat-template %s: %s", template_path, msg);
        }
        c->source = "--chat-template";
        free(src);
        log_info("chat template: %s %s", c->source, template_path);
        probe_tools(c);
        return SL_OK;
    }
    // the model's own: the GGUF's tokenizer.chat_template or tokenizer_config.json's, as the
    // engine found them (engine_text_open)
    const char *src = engine_chat_template(e);
    c->source = "built-in ChatML";
    if (!src) {
        log_warn("%s has no chat template: chat prompts use ChatML", model_path);
        return SL_OK;
    }
    char perr[ERR_MAX];
    if (tmpl_parse(&c->tmpl, src, strlen(src), perr) != SL_OK)
        log_warn("the model's chat template (%s) does not parse (%s): chat prompts use ChatML",
                 engine_chat_template_origin(e), perr);
    else
        c->source = engine_chat_template_origin(e);
    log_info("chat template: %s", c->source);
    probe_tools(c);
    return SL_OK;
}

void chat_free(ChatRenderer *c) {
    tmpl_free(c->tmpl);
    free(c->bos);
    free(c->eos);
    memset(c, 0, sizeof *c);
}

// ChatML, the format of the default model: <|im_start|>role\ncontent<|im_end|>\n ...
static void render_chatml(const OaiRequest *r, SBuf *b) {
    for (int i = 0; i < r->n_messages; i++) {
        const OaiMessage *m = &r->messages[i];
        sbuf_printf(b, "<|im_start|>%s\n", m->role);
        if (m->content) sbuf_put(b, m->content, m->content_len);
        if (!(r->continue_final_message && i == r->n_messages - 1)) sbuf_puts(b, "<|im_end|>\n");
    }
    if (r->add_generation_prompt) sbuf_puts(b, "<|im_start|>assistant\n");
}

// the request's JSON as openai.c kept it (tmpl_json_print), numbers as the client wrote them
static cJSON *parse_json(const char *s) { return s ? tmpl_json_parse(s, strlen(s), NULL, false) : NULL; }

// Tool-call arguments arrive as a JSON string (OpenAI's format); templates read them as an object
// (`tool_call.arguments | tojson`, `.items()`), so they get the parsed value, as vLLM hands them.
// An empty string is {} (vLLM); a string that is not JSON stays a string.
static void tool_call_arguments(cJSON *calls) {
    cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsString(args)) continue;
        cJSON *v = args->valuestring[0] ? parse_json(args->valuestring) : cJSON_CreateObject();
        if (v) cJSON_ReplaceItemInObjectCaseSensitive(fn, "arguments", v);
    }
}

static cJSON *messages_json(const OaiRequest *r) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < r->n_messages; i++) {
        const OaiMessage *m = &r->messages[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "role", m->role);
        // An assistant turn that only calls tools comes with "content": null or none at all (every
        // SDK sends it so); templates concatenate content, so they get "" as vLLM hands them.
        cJSON_AddStringToObject(o, "content", m->content ? m->content : "");
        if (m->name) cJSON_AddStringToObject(o, "name", m->name);
        if (m->tool_call_id) cJSON_AddStringToObject(o, "tool_call_id", m->tool_call_id);
        cJSON *calls = parse_json(m->tool_calls_json);
        if (calls) {
            tool_call_arguments(calls);
            cJSON_AddItemToObject(o, "tool_calls", calls);
        }
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

// The last occurrence of needle in hay, or NULL. Linear in n + m (memmem is glibc's two-way
// search, run once over reversed copies): looping memmem over every hit is O(n * m), which a
// final message repeated through the earlier ones turns into minutes of CPU.
static const char *mem_rfind(const char *hay, size_t n, const char *needle, size_t m) {
    if (m == 0 || m > n) return NULL;
    char *rh = xmalloc(n), *rn = xmalloc(m);
    for (size_t i = 0; i < n; i++) rh[i] = hay[n - 1 - i];
    for (size_t i = 0; i < m; i++) rn[i] = needle[m - 1 - i];
    const char *hit = memmem(rh, n, rn, m);
    // the reversed match's first byte is the original match's last byte
    const char *out = hit ? hay + (n - (size_t)(hit - rh) - m) : NULL;
    free(rh);
    free(rn);
    return out;
}

int chat_render(const ChatRenderer *c, const OaiRequest *r, char **out, size_t *len, ApiError *e) {
    *out = NULL;
    *len = 0;
    if (!c->tmpl) {
        if (r->tools_json && r->tool_choice != OAI_TOOL_CHOICE_NONE && !atomic_exchange(&tools_warned, true))
            log_warn("a request has tools, but the built-in ChatML rendering never shows them to the model "
                     "(a tools-aware template: --chat-template, see docs/api.md \"Tool calling\")");
        SBuf b = {0};
        render_chatml(r, &b);
        *out = b.data ? b.data : xstrdup("");
        *len = b.len;
        return SL_OK;
    }
    // tool_choice "none": the model is not told about tools it may not call (and nothing is parsed)
    const char *tools_json = r->tool_choice == OAI_TOOL_CHOICE_NONE ? NULL : r->tools_json;
    if (tools_json && c->tools_ignored && !atomic_exchange(&tools_warned, true))
        log_warn("a request has tools, but the chat template (%s) never renders them: the model does not see "
                 "them (a tools-aware template: --chat-template, see docs/api.md \"Tool calling\")", c->source);
    cJSON *msgs = messages_json(r), *tools = parse_json(tools_json), *kw = parse_json(r->chat_template_kwargs_json);
    cJSON *vars = tmpl_context_build(msgs, tools, NULL, r->add_generation_prompt, c->bos, c->eos, kw);
    cJSON_Delete(msgs);
    cJSON_Delete(tools);
    cJSON_Delete(kw);
    char err[ERR_MAX];
    char *text = NULL;
    size_t n = 0;
    int rc = tmpl_render(c->tmpl, vars, NULL, &text, &n, err);
    cJSON_Delete(vars);
    if (rc != SL_OK)
        return api_error(e, 400, NULL, rc == TMPL_ERR_LIMIT ? "chat_template_limit" : "chat_template_error", "messages",
                         "The chat template cannot render these messages: %s", err);
    // continue_final_message: the prompt ends right after the final message's text, so the model
    // continues it instead of closing the turn (vLLM cuts the rendering the same way).
    const OaiMessage *last = &r->messages[r->n_messages - 1];
    if (r->continue_final_message && last->content && last->content_len > 0) {
        const char *hit = mem_rfind(text, n, last->content, last->content_len);
        if (hit) {
            n = (size_t)(hit - text) + last->content_len;
            text[n] = 0;
        }
    }
    *out = text;
    *len = n;
    return SL_OK;
}
