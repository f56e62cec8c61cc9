// config_file.c: --config FILE, a YAML mapping of flags to values, as vLLM's --config:
//
//   model: /models/qwen2.5-7b-instruct-q4_k_m.gguf
//   max-num-seqs: 8
//   enable-prefix-caching: false
//   served-model-name: [qwen, default]
//
// A key is a flag's long name without the dashes (max_num_seqs is read as max-num-seqs, as
// vLLM's parser does); a list is allowed where the flag takes one. Flags given on the command
// line win over the file; the file wins over SLUICE_* variables (config_parse applies them in
// that order). Every value is checked, also those the command line overrides, and a problem
// names the file and line. Parsed with Debian's libyaml (a document tree, for the line numbers).
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "config/config.h"

// "FILE:LINE: message" into err; always SL_ERR.
__attribute__((format(printf, 4, 5))) static int file_err(char *err, const char *path, const yaml_node_t *at,
                                                         const char *fmt, ...) {
    char msg[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return seterr(err, "%s:%zu: %s", path, at->start_mark.line + 1, msg);
}

// YAML's null: an empty plain value, ~ or null (a quoted "null" is a string).
static bool is_null(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *v = (const char *)n->data.scalar.value;
    return !v[0] || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

// The value's text as the flag parser reads it: a scalar as it is, a list (list flags only) as a
// JSON list of strings. NULL + err when the shape does not fit the flag.
static char *value_text(const char *path, yaml_document_t *doc, const Flag *f, yaml_node_t *v, char *err) {
    if (is_null(v)) {
        file_err(err, path, v, "%s: no value (give one, or leave the key out)", f->name);
        return NULL;
    }
    if (v->type == YAML_SCALAR_NODE) return xstrdup((const char *)v->data.scalar.value);
    if (v->type != YAML_SEQUENCE_NODE || f->kind != FLAG_LIST) {
        file_err(err, path, v, "%s: expected a single value, got a %s", f->name,
                 v->type == YAML_SEQUENCE_NODE ? "list" : "mapping");
        return NULL;
    }
    yaml_node_item_t *first = v->data.sequence.items.start, *end = v->data.sequence.items.top;
    size_t cap = 3;
    for (yaml_node_item_t *it = first; it < end; it++) {
        yaml_node_t *item = yaml_document_get_node(doc, *it);
        if (item->type != YAML_SCALAR_NODE || is_null(item)) {
            file_err(err, path, item, "%s: expected a list of names", f->name);
            return NULL;
        }
        cap += 2 * item->data.scalar.length + 3; // every byte escaped at worst, quotes, comma
    }
    char *out = xmalloc(cap), *w = out;
    *w++ = '[';
    for (yaml_node_item_t *it = first; it < end; it++) {
        yaml_node_t *item = yaml_document_get_node(doc, *it);
        if (it > first) *w++ = ',';
        *w++ = '"';
        for (size_t j = 0; j < item->data.scalar.length; j++) {
            char c = (char)item->data.scalar.value[j];
            if (c == '"' || c == '\\') *w++ = '\\';
            *w++ = c;
        }
        *w++ = '"';
    }
    *w++ = ']';
    *w = 0;
    return out;
}

// Sets f from text, or (given on the command line, which wins) only checks that it would parse.
static int apply(Flag *f, bool given, const char *text, char *err) {
    if (!given) return flag_set(f, text, f->name, err);
    union {
        int i;
        uint64_t u;
        float x;
        size_t z;
        char *s;
        bool b;
        LogLevel l;
    } scratch = {0};
    Flag t = *f;
    t.dst = &scratch;
    int rc = flag_set(&t, text, f->name, err);
    if (f->kind == FLAG_STR || f->kind == FLAG_LIST) free(scratch.s);
    return rc;
}

static int apply_document(const char *path, yaml_document_t *doc, Flag *flags, int n, const bool *given,
                          char *err) {
    yaml_node_t *root = yaml_document_get_root_node(doc);
    if (!root || is_null(root)) return SL_OK; // an empty file sets nothing
    if (root->type != YAML_MAPPING_NODE)
        return file_err(err, path, root, "expected a mapping of flag names to values (max-num-seqs: 8)");
    bool seen[CONFIG_MAX_FLAGS + 64] = {0};
    CHECK(n <= (int)ARRAY_LEN(seen));
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key), *v = yaml_document_get_node(doc, p->value);
        if (k->type != YAML_SCALAR_NODE) return file_err(err, path, k, "a key must be a flag's name");
        char name[96];
        const char *key = (const char *)k->data.scalar.value;
        if (!strncmp(key, "--", 2)) key += 2;
        snprintf(name, sizeof name, "--%s", key);
        for (char *c = name + 2; *c; c++)
            if (*c == '_') *c = '-';
        int i = 0;
        while (i < n && strcmp(flags[i].name, name) != 0) i++;
        if (i == n)
            return file_err(err, path, k, "unknown key '%.60s' (keys are the flags' long names, see --help)",
                            (const char *)k->data.scalar.value);
        if (!strcmp(name, "--config")) return file_err(err, path, k, "a config file cannot name another one");
        if (seen[i]) return file_err(err, path, k, "%s is given twice", name);
        seen[i] = true;
        char *text = value_text(path, doc, &flags[i], v, err);
        if (!text) return SL_ERR;
        char msg[ERR_MAX];
        int rc = apply(&flags[i], given && given[i], text, msg);
        free(text);
        if (rc != SL_OK) return file_err(err, path, v, "%s", msg);
    }
    return SL_OK;
}

int config_file_apply(const char *path, Flag *flags, int n, const bool *given, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return seterr(err, "--config %s: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    CHECK(yaml_parser_initialize(&parser));
    yaml_parser_set_input_file(&parser, f);
    int rc;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = seterr(err, "%s:%zu: not valid YAML: %s%s%s", path, parser.problem_mark.line + 1,
                    parser.problem ? parser.problem : "unreadable", parser.context ? " " : "",
                    parser.context ? parser.context : "");
    } else {
        rc = apply_document(path, &doc, flags, n, given, err);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}
