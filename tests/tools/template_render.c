// template_render: renders a chat template with a JSON object of variables, for the
// differential test against Python's jinja2 (tests/template/test_template_diff.py).
//
//   template_render TEMPLATE.jinja [VARS.json | -] [--now EPOCH_SECONDS]
//       prints the rendering to stdout, byte for byte; on failure prints one line to
//       stderr, "parse error: ...", "raised: <the template's raise_exception message>",
//       "render error: ..." or "limit: ...", and exits 1.
//   template_render TEMPLATE.jinja --batch VARS.json... [--now EPOCH_SECONDS]
//       renders each; prints per file a header "=== <status> <n>\n", then n bytes (the
//       rendering, or the error message) and "\n". status: ok, parse, raised, render, limit.
//       Exits 0 unless a file cannot be read.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/template/template.h"

static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0, got;
    char *buf = xmalloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n < 2) buf = xrealloc(buf, cap *= 2);
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static cJSON *read_vars(const char *path) {
    char err[ERR_MAX];
    size_t len;
    char *text = strcmp(path, "-") ? file_read_all(path, &len, err) : read_stream(stdin, &len);
    if (!text) {
        fprintf(stderr, "%s\n", err);
        return NULL;
    }
    cJSON *vars = tmpl_json_parse(text, len, NULL, false); // numbers as the server reads them
    free(text);
    if (!vars || !cJSON_IsObject(vars)) {
        fprintf(stderr, "%s: expected a JSON object of variables\n", path);
        cJSON_Delete(vars);
        return NULL;
    }
    return vars;
}

static const char *status_name(int code) {
    return code == TMPL_ERR_RAISED ? "raised" : code == TMPL_ERR_LIMIT ? "limit" : "render";
}

int main(int argc, char **argv) {
    const char *tpl_path = NULL, *vars_path = "-";
    const char *batch[4096];
    int nbatch = 0, npos = 0;
    bool is_batch = false;
    TmplLimits lim = tmpl_limits_default();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--now") && i + 1 < argc)
            lim.now = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--batch"))
            is_batch = true;
        else if (!tpl_path)
            tpl_path = argv[i];
        else if (is_batch && nbatch < (int)ARRAY_LEN(batch))
            batch[nbatch++] = argv[i];
        else if (!is_batch && npos++ == 0)
            vars_path = argv[i];
        else
            tpl_path = NULL, i = argc;
    }
    if (!tpl_path) {
        fprintf(stderr,
                "usage: %s TEMPLATE.jinja [VARS.json | -] [--now EPOCH_SECONDS]\n"
                "       %s TEMPLATE.jinja --batch VARS.json... [--now EPOCH_SECONDS]\n",
                argv[0], argv[0]);
        return 2;
    }
    char err[ERR_MAX];
    size_t tlen;
    char *src = file_read_all(tpl_path, &tlen, err);
    if (!src) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    ChatTemplate *t = NULL;
    int parse_rc = tmpl_parse(&t, src, tlen, err);
    free(src);
    char parse_err[ERR_MAX];
    snprintf(parse_err, sizeof parse_err, "%s", err);

    if (!is_batch) {
        int rc = 1;
        cJSON *vars = read_vars(vars_path);
        if (!vars)
            rc = 2;
        else if (parse_rc != SL_OK)
            fprintf(stderr, "parse error: %s\n", parse_err);
        else {
            char *out;
            size_t out_len;
            int code = tmpl_render(t, vars, &lim, &out, &out_len, err);
            if (code == SL_OK) {
                fwrite(out, 1, out_len, stdout);
                free(out);
                rc = 0;
            } else {
                fprintf(stderr, "%s%s: %s\n", status_name(code),
                        code == TMPL_ERR_RAISED || code == TMPL_ERR_LIMIT ? "" : " error", err);
            }
        }
        cJSON_Delete(vars);
        tmpl_free(t);
        return rc;
    }

    int rc = 0;
    for (int i = 0; i < nbatch; i++) {
        cJSON *vars = read_vars(batch[i]);
        if (!vars) {
            rc = 2;
            break;
        }
        if (parse_rc != SL_OK) {
            printf("=== parse %zu\n%s\n", strlen(parse_err), parse_err);
        } else {
            char *out;
            size_t out_len;
            int code = tmpl_render(t, vars, &lim, &out, &out_len, err);
            if (code == SL_OK) {
                printf("=== ok %zu\n", out_len);
                fwrite(out, 1, out_len, stdout);
                putchar('\n');
                free(out);
            } else {
                printf("=== %s %zu\n%s\n", status_name(code), strlen(err), err);
            }
        }
        cJSON_Delete(vars);
    }
    tmpl_free(t);
    return rc;
}
