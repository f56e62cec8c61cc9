// template.c: the public API of chat templates (see template.h): parse once, render per
// request within limits, build HF's standard variables, read tokenizer_config.json.
#include <stdlib.h>
#include <string.h>

#include "engine/template/template_impl.h"

TmplLimits tmpl_limits_default(void) {
    return (TmplLimits){
        .max_output = 8u << 20,
        .max_memory = 64u << 20,
        .max_steps = 5000000,
        .max_depth = 100,
    };
}

int tmpl_parse(ChatTemplate **out, const char *src, size_t len, char *err) {
    *out = NULL;
    ChatTemplate *t = xcalloc(1, sizeof(ChatTemplate));
    TokenList toks = {0};
    int rc = tmpl_lex(&t->arena, src, len, &toks, err);
    if (rc == SL_OK) rc = tmpl_parse_tokens(t, &toks, err);
    free(toks.v);
    if (rc != SL_OK) {
        tmpl_free(t);
        return SL_ERR;
    }
    *out = t;
    return SL_OK;
}

void tmpl_free(ChatTemplate *t) {
    if (!t) return;
    arena_free(&t->arena);
    free(t);
}

int tmpl_render(const ChatTemplate *t, const cJSON *vars, const TmplLimits *lim, char **out, size_t *out_len,
                char *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    TmplLimits d = tmpl_limits_default();
    if (lim) {
        if (lim->max_output) d.max_output = lim->max_output;
        if (lim->max_memory) d.max_memory = lim->max_memory;
        if (lim->max_steps) d.max_steps = lim->max_steps;
        if (lim->max_depth) d.max_depth = lim->max_depth;
        d.now = lim->now;
    }
    Render *r = xcalloc(1, sizeof(Render)); // holds the jmp_buf; off the caller's stack
    r->lim = d;
    r->err = err;
    SBuf top = {0};
    r->top = r->out = &top;
    if (setjmp(r->jb)) {
        int code = r->err_code;
        arena_free(&r->arena);
        free(r);
        return code;
    }
    // The request's own data is not charged to max_memory: the server bounds its size.
    Scope *root = rt_alloc(r, sizeof(Scope));
    if (vars && cJSON_IsObject(vars)) {
        int n = cJSON_GetArraySize(vars);
        root->names = rt_alloc(r, (size_t)(n + 1) * sizeof(char *));
        root->vals = rt_alloc(r, (size_t)(n + 1) * sizeof(Value));
        root->cap = n;
        for (const cJSON *c = vars->child; c; c = c->next) {
            if (!c->string) continue;
            const char *name = rt_str(r, c->string, strlen(c->string))->s;
            Value v = json_to_value(r, c);
            int i = 0;
            while (i < root->n && strcmp(root->names[i], name)) i++;
            root->names[i] = name;
            root->vals[i] = v;
            if (i == root->n) root->n++;
        }
    }
    r->arena.limit = r->arena.used + d.max_memory;
    r->steps = 0;
    Scope *top_scope = rt_alloc(r, sizeof(Scope));
    top_scope->parent = root;
    exec_body(r, &t->body, top_scope);

    char *text = xmalloc(top.n + 1);
    if (top.n) memcpy(text, top.p, top.n);
    text[top.n] = 0;
    *out = text;
    if (out_len) *out_len = top.n;
    arena_free(&r->arena);
    free(r);
    return SL_OK;
}

cJSON *tmpl_context_build(const cJSON *messages, const cJSON *tools, const cJSON *documents, bool add_generation_prompt,
                          const char *bos_token, const char *eos_token, const cJSON *kwargs) {
    cJSON *ctx = cJSON_CreateObject();
    CHECK(ctx);
    // chat_template_kwargs first, so the standard names below replace any of theirs where
    // HF would refuse them; bos/eos come from the tokenizer unless the request sets them
    static const char *const reserved[] = {"messages", "tools", "documents", "add_generation_prompt"};
    if (kwargs && cJSON_IsObject(kwargs))
        for (const cJSON *c = kwargs->child; c; c = c->next) {
            bool skip = !c->string;
            for (size_t i = 0; !skip && i < ARRAY_LEN(reserved); i++) skip = !strcmp(c->string, reserved[i]);
            if (!skip) cJSON_AddItemToObject(ctx, c->string, cJSON_Duplicate(c, true));
        }
    cJSON_AddItemToObject(ctx, "messages", messages ? cJSON_Duplicate(messages, true) : cJSON_CreateArray());
    cJSON_AddItemToObject(ctx, "tools",
                          tools && !cJSON_IsNull(tools) ? cJSON_Duplicate(tools, true) : cJSON_CreateNull());
    cJSON_AddItemToObject(ctx, "documents",
                          documents && !cJSON_IsNull(documents) ? cJSON_Duplicate(documents, true)
                                                                : cJSON_CreateNull());
    cJSON_AddItemToObject(ctx, "add_generation_prompt", cJSON_CreateBool(add_generation_prompt));
    if (bos_token && !cJSON_GetObjectItemCaseSensitive(ctx, "bos_token"))
        cJSON_AddItemToObject(ctx, "bos_token", cJSON_CreateString(bos_token));
    if (eos_token && !cJSON_GetObjectItemCaseSensitive(ctx, "eos_token"))
        cJSON_AddItemToObject(ctx, "eos_token", cJSON_CreateString(eos_token));
    return ctx;
}

// A special token in tokenizer_config.json: a string or an AddedToken {"content": ...}.
static char *token_text(const cJSON *j) {
    if (cJSON_IsString(j)) return xstrdup(j->valuestring);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "content");
    return cJSON_IsString(c) ? xstrdup(c->valuestring) : NULL;
}

int tmpl_source_from_tokenizer_config(const char *path, char **src, char **bos_token, char **eos_token, char *err) {
    *src = NULL;
    if (bos_token) *bos_token = NULL;
    if (eos_token) *eos_token = NULL;
    size_t len;
    char *text = file_read_all(path, &len, err);
    if (!text) return SL_ERR;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j) return seterr(err, "%s: not valid JSON", path);
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    const char *found = NULL;
    if (cJSON_IsString(ct))
        found = ct->valuestring;
    else if (cJSON_IsArray(ct)) // [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        for (const cJSON *e = ct->child; e; e = e->next) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(name) && !strcmp(name->valuestring, "default") && cJSON_IsString(tpl))
                found = tpl->valuestring;
        }
    if (!found) {
        cJSON_Delete(j);
        return seterr(err, "%s: no chat_template", path);
    }
    *src = xstrdup(found);
    if (bos_token) *bos_token = token_text(cJSON_GetObjectItemCaseSensitive(j, "bos_token"));
    if (eos_token) *eos_token = token_text(cJSON_GetObjectItemCaseSensitive(j, "eos_token"));
    cJSON_Delete(j);
    return SL_OK;
}
