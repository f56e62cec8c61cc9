// lex.c: template source -> tokens, following jinja2's lexer (lexer.py) rule for rule
// with HF's settings: trim_blocks (a block or comment tag eats the one newline after it),
// lstrip_blocks (spaces before a block or comment tag on its own line go), and the `-` / `+`
// markers. Newlines are normalized to "\n" and one trailing newline is dropped, as jinja2
// does with keep_trailing_newline=False.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/template/template_impl.h"

typedef struct {
    Arena *arena;
    const char *s; // normalized source
    size_t len;
    size_t pos;
    // position bookkeeping, advanced monotonically: line of line_pos, and where it starts
    size_t line_pos, line_start;
    int line;
    bool line_starting; // the previous match ended with "\n" (jinja2's line_starting)
    TokenList *out;
    char *err;
    char bal[256]; // closers expected for open ( [ {
    int nbal;
} Lexer;

static void lex_where(Lexer *L, size_t pos, int *line, int *col) {
    CHECK(pos >= L->line_pos);
    for (size_t i = L->line_pos; i < pos; i++)
        if (L->s[i] == '\n') {
            L->line++;
            L->line_start = i + 1;
        }
    L->line_pos = pos;
    int c = 1;
    for (size_t i = L->line_start; i < pos; i++)
        if (((unsigned char)L->s[i] & 0xC0) != 0x80) c++;
    *line = L->line;
    *col = c;
}

static int lex_fail(Lexer *L, size_t pos, const char *fmt, const char *arg) {
    int line, col;
    if (pos < L->line_pos) pos = L->line_pos;
    lex_where(L, pos, &line, &col);
    char msg[256];
    snprintf(msg, sizeof msg, fmt, arg);
    return seterr(L->err, "line %d, column %d: %s", line, col, msg);
}

static Token *lex_push(Lexer *L, int type, size_t pos) {
    TokenList *t = L->out;
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 256;
        t->v = xrealloc(t->v, (size_t)t->cap * sizeof(Token));
    }
    Token *k = &t->v[t->n++];
    memset(k, 0, sizeof *k);
    k->type = (uint8_t)type;
    lex_where(L, pos, &k->line, &k->col);
    return k;
}

// Python's \s (str.isspace) at s[i]; its byte length in *n, 0 when not whitespace.
static int ws_len(const char *s, size_t len, size_t i) {
    if (i >= len) return 0;
    size_t j = i;
    uint32_t c = utf8_next(s, len, &j);
    return uc_isspace(c) ? (int)(j - i) : 0;
}

static size_t skip_ws(const char *s, size_t len, size_t i) {
    int n;
    while ((n = ws_len(s, len, i)) > 0) i += (size_t)n;
    return i;
}

// Length of text after rstrip() (Python whitespace).
static size_t rstrip_len(const char *s, size_t n) {
    size_t end = n;
    while (end > 0) {
        size_t b = end - 1;
        while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
        size_t j = b;
        if (!uc_isspace(utf8_next(s, n, &j))) break;
        end = b;
    }
    return end;
}

static void emit_data(Lexer *L, size_t start, size_t n) {
    if (n == 0) return;
    Token *k = lex_push(L, T_DATA, start);
    k->s = str_new(L->arena, L->s + start, n);
}

// Whitespace control on the text in front of a tag (jinja2's OptionalLStrip): `-` strips all
// whitespace, otherwise lstrip_blocks drops the indentation of a block or comment tag that
// starts its line. Returns the length of text to keep.
static size_t lstrip_text(Lexer *L, size_t start, size_t n, char sign, bool is_variable) {
    const char *text = L->s + start;
    if (sign == '-') return rstrip_len(text, n);
    if (sign == '+' || is_variable) return n;
    size_t l_pos = 0;
    for (size_t i = n; i > 0; i--)
        if (text[i - 1] == '\n') {
            l_pos = i;
            break;
        }
    if (l_pos == 0 && !L->line_starting) return n;
    if (l_pos == n) return n; // \s+ needs one character at least
    for (size_t i = l_pos; i < n;) {
        int w = ws_len(text, n, i);
        if (!w) return n;
        i += (size_t)w;
    }
    return l_pos;
}

// `{%(-|+|)\s*raw\s*(?:-%}\s*|%})` at i: the end of the match, or 0.
static size_t match_raw_begin(Lexer *L, size_t i) {
    const char *s = L->s;
    size_t len = L->len, j = i + 2;
    if (j < len && (s[j] == '-' || s[j] == '+')) j++;
    j = skip_ws(s, len, j);
    if (len - j < 3 || memcmp(s + j, "raw", 3) != 0) return 0;
    j = skip_ws(s, len, j + 3);
    if (len - j >= 3 && memcmp(s + j, "-%}", 3) == 0) return skip_ws(s, len, j + 3);
    if (len - j >= 2 && memcmp(s + j, "%}", 2) == 0) return j + 2;
    return 0;
}

// `{%(-|+|)\s*endraw\s*(?:\+%}|-%}\s*|%}\n?)` at i: the end of the match, or 0.
static size_t match_raw_end(Lexer *L, size_t i, char *sign) {
    const char *s = L->s;
    size_t len = L->len, j = i + 2;
    if (len - i < 2 || s[i] != '{' || s[i + 1] != '%') return 0;
    *sign = 0;
    if (j < len && (s[j] == '-' || s[j] == '+')) *sign = s[j++];
    j = skip_ws(s, len, j);
    if (len - j < 6 || memcmp(s + j, "endraw", 6) != 0) return 0;
    j = skip_ws(s, len, j + 6);
    if (len - j >= 3 && memcmp(s + j, "+%}", 3) == 0) return j + 3;
    if (len - j >= 3 && memcmp(s + j, "-%}", 3) == 0) return skip_ws(s, len, j + 3);
    if (len - j >= 2 && memcmp(s + j, "%}", 2) == 0) return j + 2 + (j + 2 < len && s[j + 2] == '\n');
    return 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

// `(\d+_)*\d+` at i: end of the longest match, or i when there is none.
static size_t digits_end(const char *s, size_t len, size_t i) {
    if (i >= len || !is_digit(s[i])) return i;
    size_t j = i;
    for (;;) {
        while (j < len && is_digit(s[j])) j++;
        if (j + 1 < len && s[j] == '_' && is_digit(s[j + 1])) {
            j++;
            continue;
        }
        return j;
    }
}

// jinja2's float_re at i (not after a '.'): end of the match, or 0.
static size_t match_float(const char *s, size_t len, size_t i) {
    if (i > 0 && s[i - 1] == '.') return 0;
    size_t j = digits_end(s, len, i);
    if (j == i) return 0;
    size_t frac = 0;
    if (j < len && s[j] == '.') {
        size_t k = digits_end(s, len, j + 1);
        if (k > j + 1) frac = k;
    }
    size_t e = frac ? frac : j;
    if (e < len && (s[e] == 'e' || s[e] == 'E')) {
        size_t k = e + 1;
        if (k < len && (s[k] == '+' || s[k] == '-')) k++;
        size_t m = digits_end(s, len, k);
        if (m > k) return m;
    }
    return frac;
}

// jinja2's integer_re at i: end of the match, or 0; the base in *base.
static size_t match_int(const char *s, size_t len, size_t i, int *base) {
    if (i >= len || !is_digit(s[i])) return 0;
    if (s[i] == '0' && i + 1 < len) {
        char p = (char)(s[i + 1] | 0x20);
        int b = p == 'b' ? 2 : p == 'o' ? 8 : p == 'x' ? 16 : 0;
        if (b) {
            size_t j = i + 2, end = 0;
            for (;;) {
                size_t k = j + (j < len && s[j] == '_');
                if (k >= len) break;
                char c = (char)(s[k] | 0x20);
                bool ok = b == 2   ? (c == '0' || c == '1')
                          : b == 8 ? (c >= '0' && c <= '7')
                                   : (is_digit(c) || (c >= 'a' && c <= 'f'));
                if (!ok) break;
                j = k + 1;
                end = j;
            }
            if (end) {
                *base = b;
                return end;
            }
        }
    }
    *base = 10;
    size_t j = i + 1;
    char want = s[i] == '0' ? '0' : 0; // `0(_?0)*` or `[1-9](_?\d)*`
    for (;;) {
        size_t k = j + (j < len && s[j] == '_');
        if (k >= len || !(want ? s[k] == '0' : is_digit(s[k]))) break;
        j = k + 1;
    }
    return j;
}

// Python's "unicode-escape" decoding of a string literal's body.
static int unescape(Lexer *L, size_t at, const char *p, size_t n, Str **out) {
    char *buf = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (p[i] != '\\' || i + 1 >= n) {
            buf[o++] = p[i++];
            continue;
        }
        char c = p[i + 1];
        i += 2;
        uint32_t cp;
        int digits = 0;
        switch (c) {
        case '\n': continue;
        case '\\': buf[o++] = '\\'; continue;
        case '\'': buf[o++] = '\''; continue;
        case '"': buf[o++] = '"'; continue;
        case 'a': buf[o++] = '\a'; continue;
        case 'b': buf[o++] = '\b'; continue;
        case 'f': buf[o++] = '\f'; continue;
        case 'n': buf[o++] = '\n'; continue;
        case 'r': buf[o++] = '\r'; continue;
        case 't': buf[o++] = '\t'; continue;
        case 'v': buf[o++] = '\v'; continue;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default:
            if (c >= '0' && c <= '7') {
                cp = (uint32_t)(c - '0');
                for (int k = 0; k < 2 && i < n && p[i] >= '0' && p[i] <= '7'; k++)
                    cp = cp * 8 + (uint32_t)(p[i++] - '0');
                o += (size_t)utf8_put(buf + o, cp);
                continue;
            }
            buf[o++] = '\\'; // unknown escapes stay as written
            buf[o++] = c;
            continue;
        }
        cp = 0;
        for (int k = 0; k < digits; k++, i++) {
            char h = i < n ? (char)(p[i] | 0x20) : 0;
            int d = is_digit(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : -1;
            if (d < 0) {
                free(buf);
                return lex_fail(L, at, "truncated \\%s escape in a string",
                                c == 'x'   ? "xXX"
                                : c == 'u' ? "uXXXX"
                                           : "UXXXXXXXX");
            }
            cp = cp * 16 + (uint32_t)d;
        }
        if (cp > 0x10FFFF) {
            free(buf);
            return lex_fail(L, at, "%s", "illegal Unicode character in a string");
        }
        o += (size_t)utf8_put(buf + o, cp);
    }
    *out = str_new(L->arena, buf, o);
    free(buf);
    return SL_OK;
}

// One tag's contents, from pos to its end marker; leaves pos after the end.
static int lex_tag(Lexer *L, bool block) {
    const char *s = L->s;
    size_t len = L->len;
    for (;;) {
        size_t i = L->pos;
        if (i >= len) return SL_OK; // the parser reports the unexpected end
        if (L->nbal == 0) {
            size_t end = 0;
            if (block) {
                if (len - i >= 3 && memcmp(s + i, "+%}", 3) == 0)
                    end = i + 3;
                else if (len - i >= 3 && memcmp(s + i, "-%}", 3) == 0)
                    end = skip_ws(s, len, i + 3);
                else if (len - i >= 2 && memcmp(s + i, "%}", 2) == 0)
                    end = i + 2 + (i + 2 < len && s[i + 2] == '\n');
            } else {
                if (len - i >= 3 && memcmp(s + i, "-}}", 3) == 0)
                    end = skip_ws(s, len, i + 3);
                else if (len - i >= 2 && memcmp(s + i, "}}", 2) == 0)
                    end = i + 2;
            }
            if (end) {
                lex_push(L, block ? T_BLOCK_END : T_VAR_END, i);
                L->pos = end;
                L->line_starting = s[end - 1] == '\n';
                return SL_OK;
            }
        }
        size_t j = skip_ws(s, len, i);
        if (j > i) {
            L->pos = j;
            continue;
        }
        int base;
        if ((j = match_float(s, len, i)) > 0) {
            char num[128];
            size_t k = 0;
            for (size_t q = i; q < j && k + 1 < sizeof num; q++)
                if (s[q] != '_') num[k++] = s[q];
            num[k] = 0;
            Token *t = lex_push(L, T_FLOAT, i);
            t->f = strtod(num, NULL);
        } else if ((j = match_int(s, len, i, &base)) > 0) {
            Token *t = lex_push(L, T_INT, i);
            uint64_t v = 0;
            for (size_t q = i + (base == 10 ? 0 : 2); q < j; q++) {
                if (s[q] == '_') continue;
                char c = (char)(s[q] | 0x20);
                int d = is_digit(c) ? c - '0' : c - 'a' + 10;
                if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base ||
                    v * (uint64_t)base + (uint64_t)d > (uint64_t)INT64_MAX)
                    return lex_fail(L, i, "%s", "integer literal too large (sluice integers are 64-bit)");
                v = v * (uint64_t)base + (uint64_t)d;
            }
            t->i = (int64_t)v;
        } else if (is_name_start(s[i])) {
            j = i + 1;
            while (j < len && is_name_char(s[j])) j++;
            Token *t = lex_push(L, T_NAME, i);
            t->p = str_new(L->arena, s + i, j - i)->s;
        } else if (s[i] == '\'' || s[i] == '"') {
            char q = s[i];
            j = i + 1;
            while (j < len && s[j] != q) j += (s[j] == '\\') ? 2 : 1;
            if (j >= len) return lex_fail(L, i, "unexpected char '%s' (a string is not closed)", q == '"' ? "\"" : "'");
            Token *t = lex_push(L, T_STRING, i);
            if (unescape(L, i, s + i + 1, j - i - 1, &t->s) != SL_OK) return SL_ERR;
            j++;
        } else {
            static const char *ops2[] = {"//", "**", "==", "!=", ">=", "<="};
            int n = 0;
            for (size_t k = 0; k < ARRAY_LEN(ops2); k++)
                if (len - i >= 2 && memcmp(s + i, ops2[k], 2) == 0) {
                    n = 2;
                    break;
                }
            if (!n && strchr("+-/*%~[](){}><=.:|,;", s[i]) && s[i]) n = 1;
            if (!n) {
                char c[8] = {0};
                size_t q = i;
                utf8_put(c, utf8_next(s, len, &q));
                return lex_fail(L, i, "unexpected char '%s'", c);
            }
            char c = s[i];
            if (n == 1 && (c == '(' || c == '[' || c == '{')) {
                if (L->nbal == (int)sizeof L->bal) return lex_fail(L, i, "%s", "brackets nested too deeply");
                L->bal[L->nbal++] = c == '(' ? ')' : c == '[' ? ']' : '}';
            } else if (n == 1 && (c == ')' || c == ']' || c == '}')) {
                char got[2] = {c, 0};
                if (L->nbal == 0) return lex_fail(L, i, "unexpected '%s'", got);
                if (L->bal[L->nbal - 1] != c) {
                    char msg[64];
                    snprintf(msg, sizeof msg, "unexpected '%c', expected '%c'", c, L->bal[L->nbal - 1]);
                    return lex_fail(L, i, "%s", msg);
                }
                L->nbal--;
            }
            Token *t = lex_push(L, T_OP, i);
            memcpy(t->op, s + i, (size_t)n);
            j = i + (size_t)n;
        }
        L->pos = j;
        L->line_starting = s[j - 1] == '\n';
    }
}

int tmpl_lex(Arena *a, const char *src, size_t len, TokenList *out, char *err) {
    // normalize newlines, drop one trailing newline
    char *s = xmalloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n > 0 && s[n - 1] == '\n') n--;
    s[n] = 0;

    Lexer L = {.arena = a, .s = s, .len = n, .line = 1, .line_starting = true, .out = out, .err = err};
    int rc = SL_OK;
    while (L.pos < n && rc == SL_OK) {
        size_t q = L.pos;
        int kind = 0; // 1 block, 2 variable, 3 comment, 4 raw
        size_t raw_end = 0;
        for (; q + 1 < n; q++) {
            if (s[q] != '{') continue;
            char c = s[q + 1];
            if (c == '%') {
                raw_end = match_raw_begin(&L, q);
                kind = raw_end ? 4 : 1;
                break;
            }
            if (c == '{') {
                kind = 2;
                break;
            }
            if (c == '#') {
                kind = 3;
                break;
            }
        }
        if (!kind) {
            emit_data(&L, L.pos, n - L.pos);
            break;
        }
        char sign = (q + 2 < n && (s[q + 2] == '-' || s[q + 2] == '+')) ? s[q + 2] : 0;
        size_t keep = lstrip_text(&L, L.pos, q - L.pos, sign, kind == 2);
        emit_data(&L, L.pos, keep);
        size_t body = q + 2 + (sign != 0);
        if (kind == 1 || kind == 2) {
            lex_push(&L, kind == 1 ? T_BLOCK_BEGIN : T_VAR_BEGIN, q);
            L.pos = body;
            L.line_starting = false;
            L.nbal = 0;
            rc = lex_tag(&L, kind == 1);
        } else if ((kind == 4 ? raw_end : body) >= n) {
            break; // a comment or raw tag at the very end: jinja2's lexer just stops there
        } else if (kind == 3) {
            size_t p = body, end = 0;
            for (; p + 1 < n; p++) {
                if ((s[p] == '+' || s[p] == '-') && p + 2 < n && s[p + 1] == '#' && s[p + 2] == '}') {
                    end = s[p] == '+' ? p + 3 : skip_ws(s, n, p + 3);
                    break;
                }
                if (s[p] == '#' && s[p + 1] == '}') {
                    end = p + 2 + (p + 2 < n && s[p + 2] == '\n');
                    break;
                }
            }
            if (!end) {
                rc = lex_fail(&L, q, "%s", "missing end of comment tag");
                break;
            }
            L.pos = end;
            L.line_starting = s[end - 1] == '\n';
        } else {
            L.line_starting = s[raw_end - 1] == '\n';
            size_t p = raw_end, end = 0;
            char esign = 0;
            for (; p < n; p++)
                if ((end = match_raw_end(&L, p, &esign)) > 0) break;
            if (!end) {
                rc = lex_fail(&L, q, "%s", "missing end of raw directive");
                break;
            }
            size_t k = lstrip_text(&L, raw_end, p - raw_end, esign, false);
            emit_data(&L, raw_end, k);
            L.pos = end;
            L.line_starting = s[end - 1] == '\n';
        }
    }
    if (rc == SL_OK) lex_push(&L, T_EOF, n);
    free(s);
    return rc;
}
