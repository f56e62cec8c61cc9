// tok_cases.h: the golden tokenizer case files of tests/data/tokenizer/ (made by
// scripts/make-golden-tokens.py from llama.cpp), read by test_tokenizer.c and test_tokenizer_hf.c.
// One case a line: flags TAB hex(text) TAB ids TAB roundtrip TAB hex(llama detok).
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

typedef struct {
    int flags; // bit 0 parse_special, bit 1 add BOS
    char *text;
    size_t len;
    int *ids;
    int n_ids;
    int roundtrip;
    char *detok;
    size_t detok_len;
} Case;

typedef struct {
    Case *v;
    int n;
} Cases;

static char *hex_decode(const char *h, size_t hl, size_t *len) {
    char *s = xmalloc(hl / 2 + 1);
    for (size_t i = 0; i + 1 < hl; i += 2) {
        char b[3] = {h[i], h[i + 1], 0};
        s[i / 2] = (char)strtol(b, NULL, 16);
    }
    *len = hl / 2;
    s[*len] = '\0';
    return s;
}

static Cases cases_read(const char *path) {
    Cases c = {0};
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return c;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (line[n - 1] == '\n') line[--n] = '\0';
        char *fld[5];
        int nf = 0;
        for (char *p = line; nf < 5; nf++) {
            fld[nf] = p;
            char *tab = strchr(p, '\t');
            if (!tab) {
                nf++;
                break;
            }
            *tab = '\0';
            p = tab + 1;
        }
        if (nf != 5) continue;
        c.v = xrealloc(c.v, (size_t)(c.n + 1) * sizeof(Case));
        Case *k = &c.v[c.n++];
        k->flags = atoi(fld[0]);
        k->text = hex_decode(fld[1], strlen(fld[1]), &k->len);
        k->ids = NULL;
        k->n_ids = 0;
        for (char *p = fld[2], *end; *p; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            k->ids = xrealloc(k->ids, (size_t)(k->n_ids + 1) * sizeof(int));
            k->ids[k->n_ids++] = (int)v;
        }
        k->roundtrip = atoi(fld[3]);
        k->detok = hex_decode(fld[4], strlen(fld[4]), &k->detok_len);
    }
    free(line);
    fclose(f);
    return c;
}

static void cases_free(Cases *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->v[i].text);
        free(c->v[i].ids);
        free(c->v[i].detok);
    }
    free(c->v);
}

