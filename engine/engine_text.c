// engine_text.c: which tokenizer and chat template go with a model (see engine_text_open in
// engine_impl.h): the file-finding rules, kept apart from the engine thread in engine.c.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/common.h"
#include "engine/engine_impl.h"
#include "engine/template/template.h"

static bool path_is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

// The GGUF's tokenizer.chat_template, or NULL.
static char *gguf_template(const GGUF *g) {
    GGUFStr s;
    return gguf_get_str(g, "tokenizer.chat_template", &s) ? gguf_str_dup(s) : NULL;
}

// tokenizer_config.json's chat_template in dir, or NULL (a missing file or key is no error: the
// server falls back to ChatML and says so).
static char *dir_template(const char *dir, char *origin, size_t cap) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (!path_exists(path)) return NULL;
    char *src = NULL, *bos = NULL, *eos = NULL, err[ERR_MAX];
    if (tmpl_source_from_tokenizer_config(path, &src, &bos, &eos, err) != SL_OK) {
        log_info("%s: %s", path, err);
        src = NULL;
    }
    free(bos); // the template gets the tokenizer's own BOS/EOS texts (server/chat.c)
    free(eos);
    if (src) snprintf(origin, cap, "%s", path);
    return src;
}

int engine_text_open(EngineText *t, const WeightSource *src, const char *tokenizer_path, char *err) {
    memset(t, 0, sizeof *t);
    char msg[ERR_MAX];
    if (tokenizer_path) {
        if (path_is_dir(tokenizer_path)) {
            if (tok_load_hf(&t->tok, tokenizer_path, msg) != SL_OK)
                return seterr(err, "--tokenizer %s: %s", tokenizer_path, msg);
            snprintf(t->tok_origin, sizeof t->tok_origin, "%s/tokenizer.json", tokenizer_path);
            t->chat_template = dir_template(tokenizer_path, t->template_origin, sizeof t->template_origin);
            return SL_OK;
        }
        GGUF g;
        if (gguf_open(&g, tokenizer_path, msg) != SL_OK)
            return seterr(err, "--tokenizer: %s (expected a .gguf file or an HF tokenizer directory)", msg);
        int rc = tok_load(&t->tok, &g, msg);
        if (rc == SL_OK) t->chat_template = gguf_template(&g);
        gguf_close(&g); // the Tokenizer copies what it keeps
        if (rc != SL_OK) return seterr(err, "--tokenizer %s: %s", tokenizer_path, msg);
        snprintf(t->tok_origin, sizeof t->tok_origin, "the tokenizer.ggml.* metadata of %s", tokenizer_path);
        if (t->chat_template)
            snprintf(t->template_origin, sizeof t->template_origin, "tokenizer.chat_template of %s", tokenizer_path);
        return SL_OK;
    }
    if (src->format == LOAD_GGUF) {
        if (tok_load(&t->tok, &src->gguf, msg) != SL_OK) return seterr(err, "%s: %s", src->path, msg);
        snprintf(t->tok_origin, sizeof t->tok_origin, "the tokenizer.ggml.* metadata of %s", src->path);
        t->chat_template = gguf_template(&src->gguf);
        if (t->chat_template)
            snprintf(t->template_origin, sizeof t->template_origin, "tokenizer.chat_template of %s", src->path);
        return SL_OK;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer.json", src->dir);
    if (!path_exists(path))
        return seterr(err, "the model has no tokenizer; pass --tokenizer (a .gguf or an HF tokenizer directory): "
                      "%s has no tokenizer.json", src->dir);
    if (tok_load_hf(&t->tok, src->dir, msg) != SL_OK) return seterr(err, "%s", msg);
    snprintf(t->tok_origin, sizeof t->tok_origin, "%s", path);
    t->chat_template = dir_template(src->dir, t->template_origin, sizeof t->template_origin);
    return SL_OK;
}

void engine_text_close(EngineText *t) {
    if (t->tok) tok_free(t->tok);
    free(t->chat_template);
    memset(t, 0, sizeof *t);
}
