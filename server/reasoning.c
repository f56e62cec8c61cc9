// reasoning.c: thinking text split from the answer (--reasoning-parser; see tool_parse.h).
//
// Like the tool-call machine it decides only on text that is there (a half-written "</think>" is
// held), so a stream's reasoning and content deltas add up to the non-streamed message.
#define _GNU_SOURCE // memmem
#include <string.h>

#include "server/tool_parse.h"

#define THINK_OPEN "<think>"
#define THINK_CLOSE "</think>"

enum { R_START = 0, R_THINK, R_LEAD, R_CONTENT };

ReasonFormat reason_format_from_name(const char *name) {
    if (name && !strcmp(name, "deepseek_r1")) return REASON_DEEPSEEK_R1;
    if (name && !strcmp(name, "qwen3")) return REASON_QWEN3;
    return REASON_NONE;
}

void reason_parser_init(ReasonParser *p, ReasonFormat fmt) {
    memset(p, 0, sizeof *p);
    p->fmt = fmt;
}

void reason_parser_free(ReasonParser *p) {
    sbuf_free(&p->hold);
    sbuf_free(&p->reasoning);
    memset(p, 0, sizeof *p);
}

// The longest end of h that is a proper prefix of tag.
static size_t partial_tag(const SBuf *h, const char *tag) {
    size_t l = strlen(tag);
    for (size_t k = MIN(l - 1, h->len); k > 0; k--)
        if (!memcmp(h->data + h->len - k, tag, k)) return k;
    return 0;
}

void reason_parser_feed(ReasonParser *p, const char *s, size_t n, bool final, SBuf *content) {
    SBuf *h = &p->hold;
    sbuf_put(h, s, n);
    for (;;) {
        if (p->state == R_START) {
            size_t l = strlen(THINK_OPEN), k = MIN(l, h->len);
            bool prefix = !memcmp(h->data ? h->data : "", THINK_OPEN, k);
            if (prefix && k < l && !final) return; // "<thi" may still become "<think>"
            if (prefix && k == l) {
                sbuf_consume(h, l);
                p->state = R_THINK;
            } else {
                p->state = p->fmt == REASON_DEEPSEEK_R1 ? R_THINK : R_CONTENT;
            }
        } else if (p->state == R_THINK) {
            const char *hit = h->len ? memmem(h->data, h->len, THINK_CLOSE, strlen(THINK_CLOSE)) : NULL;
            if (!hit) {
                size_t keep = final ? 0 : partial_tag(h, THINK_CLOSE);
                sbuf_put(&p->reasoning, h->data, h->len - keep);
                sbuf_consume(h, h->len - keep);
                return;
            }
            size_t k = (size_t)(hit - h->data);
            sbuf_put(&p->reasoning, h->data, k);
            sbuf_consume(h, k + strlen(THINK_CLOSE));
            p->state = R_LEAD;
        } else if (p->state == R_LEAD) {
            size_t k = strspn(h->data ? h->data : "", " \n\t\r");
            sbuf_consume(h, MIN(k, h->len));
            if (!h->len) return;
            p->state = R_CONTENT;
        } else {
            sbuf_put(content, h->data, h->len);
            sbuf_reset(h);
            return;
        }
    }
}
