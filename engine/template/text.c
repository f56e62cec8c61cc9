// text.c: strings as Python sees them. Python indexes, slices, strips and changes
// case by code point with Unicode rules, and prints floats with repr(); a template that
// trims or slices message content must get the same bytes here. Case mapping and
// character classes come from glibc's C.UTF-8 locale (a thread-safe locale_t, never the
// process locale), with Python's own whitespace and printable sets on top.
#define _GNU_SOURCE
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#include "engine/template/template_impl.h"

// ---- UTF-8

uint32_t utf8_next(const char *s, size_t len, size_t *i) {
    const unsigned char *p = (const unsigned char *)s + *i;
    size_t left = len - *i;
    unsigned char c = p[0];
    int n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || (size_t)n > left) {
        (*i)++;
        return c;
    } // invalid: one byte stands for itself
    uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80) {
            (*i)++;
            return c;
        }
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    *i += (size_t)n;
    return cp;
}

int utf8_put(char *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t utf8_offset(const Str *s, int64_t k) {
    if (s->ncp == s->len) return (size_t)k;
    size_t i = 0;
    for (int64_t n = 0; n < k && i < s->len; n++) utf8_next(s->s, s->len, &i);
    return i;
}

// ---- character classes

static locale_t uloc;
static pthread_once_t uloc_once = PTHREAD_ONCE_INIT;
static void uloc_init(void) { uloc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0); }
static locale_t get_uloc(void) {
    pthread_once(&uloc_once, uloc_init);
    return uloc;
}

bool uc_isspace(uint32_t c) {
    if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python prints a character in repr() unless it is a control, format, surrogate, private,
// unassigned or separator character (other than the ASCII space).
bool uc_isprintable(uint32_t c) {
    if (c < 0x80) return c >= 0x20 && c < 0x7F;
    if (c < 0xA1 || c == 0xAD || uc_isspace(c)) return false;
    static const uint32_t cf[][2] = {
        {0x600, 0x605},     {0x61C, 0x61C},      {0x6DD, 0x6DD},     {0x70F, 0x70F},     {0x890, 0x891},
        {0x8E2, 0x8E2},     {0x180E, 0x180E},    {0x200B, 0x200F},   {0x202A, 0x202E},   {0x2060, 0x2064},
        {0x2066, 0x206F},   {0xD800, 0xF8FF},    {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},   {0x110BD, 0x110BD},
        {0x110CD, 0x110CD}, {0x13430, 0x1343F},  {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0xE0001, 0xE0001},
        {0xE0020, 0xE007F}, {0xF0000, 0x10FFFF},
    };
    for (size_t i = 0; i < ARRAY_LEN(cf); i++)
        if (c >= cf[i][0] && c <= cf[i][1]) return false;
    locale_t l = get_uloc();
    return l ? iswprint_l((wint_t)c, l) != 0 : true;
}

uint32_t uc_upper(uint32_t c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
    locale_t l = get_uloc();
    return l ? (uint32_t)towupper_l((wint_t)c, l) : c;
}

uint32_t uc_lower(uint32_t c) {
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    locale_t l = get_uloc();
    return l ? (uint32_t)towlower_l((wint_t)c, l) : c;
}

bool uc_isalpha(uint32_t c) {
    if (c < 0x80) return (c | 32) >= 'a' && (c | 32) <= 'z';
    locale_t l = get_uloc();
    return l && iswalpha_l((wint_t)c, l);
}

bool uc_isdigit(uint32_t c) { return c >= '0' && c <= '9'; }

static bool uc_cased(uint32_t c) { return uc_upper(c) != c || uc_lower(c) != c; }

// ---- Python repr(float): the shortest digits that read back the same, in fixed notation
// for exponents -4..15 and scientific otherwise, always with a '.0' or an exponent.
int fmt_float(char *buf, size_t cap, double f) {
    if (isnan(f)) return snprintf(buf, cap, "nan");
    if (isinf(f)) return snprintf(buf, cap, f < 0 ? "-inf" : "inf");
    if (f == 0) return snprintf(buf, cap, signbit(f) ? "-0.0" : "0.0");
    char tmp[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    // tmp is [-]d[.ddd]e[+-]XX: collect the digits and the decimal exponent
    char digits[24];
    int nd = 0, neg = tmp[0] == '-';
    const char *p = tmp + neg;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int exp10 = atoi(p + 1), decpt = exp10 + 1;
    char *o = buf;
    size_t left = cap;
#define PUT(...)                                                                                                       \
    do {                                                                                                               \
        int w_ = snprintf(o, left, __VA_ARGS__);                                                                       \
        if (w_ < 0 || (size_t)w_ >= left) return -1;                                                                   \
        o += w_;                                                                                                       \
        left -= (size_t)w_;                                                                                            \
    } while (0)
    if (neg) PUT("-");
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            PUT("0.");
            for (int i = 0; i < -decpt; i++) PUT("0");
            PUT("%s", digits);
        } else if (decpt >= nd) {
            PUT("%s", digits);
            for (int i = nd; i < decpt; i++) PUT("0");
            PUT(".0");
        } else {
            PUT("%.*s.%s", decpt, digits, digits + decpt);
        }
    } else {
        if (nd == 1)
            PUT("%c", digits[0]);
        else
            PUT("%c.%s", digits[0], digits + 1);
        PUT("e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
#undef PUT
    return (int)(o - buf);
}

// ---- str methods

static bool in_chars(const Str *chars, uint32_t c) {
    for (size_t i = 0; i < chars->len;)
        if (utf8_next(chars->s, chars->len, &i) == c) return true;
    return false;
}

Str *str_strip(Render *r, Str *s, Str *chars, int which) {
    size_t b = 0, e = s->len;
    if (which & 1)
        while (b < e) {
            size_t j = b;
            uint32_t c = utf8_next(s->s, e, &j);
            if (chars ? !in_chars(chars, c) : !uc_isspace(c)) break;
            b = j;
        }
    if (which & 2)
        while (e > b) {
            size_t k = e - 1;
            while (k > b && ((unsigned char)s->s[k] & 0xC0) == 0x80) k--;
            size_t j = k;
            uint32_t c = utf8_next(s->s, e, &j);
            if (chars ? !in_chars(chars, c) : !uc_isspace(c)) break;
            e = k;
        }
    if (b == 0 && e == s->len) return s;
    return rt_str(r, s->s + b, e - b);
}

// mode: 0 upper, 1 lower, 2 capitalize (first upper, rest lower), 3 jinja2's title filter
// (each run after - whitespace ( { [ < starts upper), 4 str.title (after a cased letter
// lower, otherwise upper).
Str *str_case(Render *r, Str *s, int mode) {
    SBuf b = {0};
    bool start = true, prev_cased = false;
    for (size_t i = 0; i < s->len;) {
        uint32_t c = utf8_next(s->s, s->len, &i);
        bool sep = mode == 3 && (uc_isspace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<');
        bool up = mode == 0 || ((mode == 2 || mode == 3) && start) || (mode == 4 && !prev_cased);
        if (mode == 4) prev_cased = uc_cased(c);
        start = sep;
        if (up && c == 0xDF) { // the one full case mapping templates meet: German sharp s
            sb_puts(r, &b, (mode == 2 || mode == 4) ? "Ss" : "SS");
            continue;
        }
        char u[4];
        sb_put(r, &b, u, (size_t)utf8_put(u, up ? uc_upper(c) : uc_lower(c)));
    }
    return sb_str(r, &b);
}

Str *str_replace(Render *r, Str *s, Str *old, Str *rep, int64_t count) {
    SBuf b = {0};
    if (old->len == 0) { // Python inserts rep between every character, and at both ends
        int64_t done = 0;
        size_t i = 0;
        for (;;) {
            if (count >= 0 && done >= count) break;
            sb_put(r, &b, rep->s, rep->len);
            done++;
            if (i >= s->len) break;
            size_t at = i;
            utf8_next(s->s, s->len, &i);
            sb_put(r, &b, s->s + at, i - at);
        }
        sb_put(r, &b, s->s + i, s->len - i);
        return sb_str(r, &b);
    }
    size_t i = 0;
    int64_t done = 0;
    while (i < s->len) {
        const char *hit = (count < 0 || done < count) ? memmem(s->s + i, s->len - i, old->s, old->len) : NULL;
        if (!hit) break;
        size_t at = (size_t)(hit - s->s);
        sb_put(r, &b, s->s + i, at - i);
        sb_put(r, &b, rep->s, rep->len);
        i = at + old->len;
        done++;
    }
    if (done == 0) return s;
    sb_put(r, &b, s->s + i, s->len - i);
    return sb_str(r, &b);
}

Str *str_slice(Render *r, Str *s, int64_t start, int64_t count, int64_t step) {
    if (count <= 0) return rt_str(r, "", 0);
    if (s->ncp == s->len && step == 1) return rt_str(r, s->s + start, (size_t)count);
    size_t *off = rt_alloc(r, (s->ncp + 1) * sizeof(size_t));
    size_t i = 0, k = 0;
    while (i < s->len) {
        off[k++] = i;
        utf8_next(s->s, s->len, &i);
    }
    off[k] = s->len;
    SBuf b = {0};
    for (int64_t n = 0, j = start; n < count; n++, j += step) sb_put(r, &b, s->s + off[j], off[j + 1] - off[j]);
    return sb_str(r, &b);
}

// The start of the code point that ends at byte e, and whether it is whitespace.
static size_t cp_start(const Str *s, size_t e) {
    size_t k = e - 1;
    while (k > 0 && ((unsigned char)s->s[k] & 0xC0) == 0x80) k--;
    return k;
}
static bool space_before(const Str *s, size_t e) {
    size_t k = cp_start(s, e);
    return uc_isspace(utf8_next(s->s, e, &k));
}

List *str_split(Render *r, Str *s, Str *sep, int64_t maxsplit, bool from_right) {
    List *l = rt_list(r, 0, LK_LIST);
    if (sep && sep->len == 0) rt_error(r, "empty separator");
    if (!from_right) {
        size_t i = 0;
        int64_t done = 0;
        if (!sep) {
            for (;;) {
                while (i < s->len) { // skip whitespace
                    size_t j = i;
                    if (!uc_isspace(utf8_next(s->s, s->len, &j))) break;
                    i = j;
                }
                if (i >= s->len) break;
                if (maxsplit >= 0 && done >= maxsplit) {
                    rt_list_push(r, l, v_str(rt_str(r, s->s + i, s->len - i)));
                    break;
                }
                size_t b = i;
                while (i < s->len) {
                    size_t j = i;
                    if (uc_isspace(utf8_next(s->s, s->len, &j))) break;
                    i = j;
                }
                rt_list_push(r, l, v_str(rt_str(r, s->s + b, i - b)));
                done++;
            }
            return l;
        }
        for (;;) {
            const char *hit = (maxsplit < 0 || done < maxsplit) ? memmem(s->s + i, s->len - i, sep->s, sep->len) : NULL;
            if (!hit) break;
            rt_list_push(r, l, v_str(rt_str(r, s->s + i, (size_t)(hit - s->s) - i)));
            i = (size_t)(hit - s->s) + sep->len;
            done++;
        }
        rt_list_push(r, l, v_str(rt_str(r, s->s + i, s->len - i)));
        return l;
    }
    // rsplit: split from the right, then reverse
    size_t e = s->len;
    int64_t done = 0;
    if (!sep) {
        for (;;) {
            while (e > 0 && space_before(s, e)) e = cp_start(s, e);
            if (e == 0) break;
            if (maxsplit >= 0 && done >= maxsplit) {
                rt_list_push(r, l, v_str(rt_str(r, s->s, e)));
                break;
            }
            size_t b = e;
            while (b > 0 && !space_before(s, b)) b = cp_start(s, b);
            rt_list_push(r, l, v_str(rt_str(r, s->s + b, e - b)));
            e = b;
            done++;
        }
    } else {
        for (;;) {
            const char *hit = NULL;
            if ((maxsplit < 0 || done < maxsplit) && e >= sep->len)
                for (size_t k = e - sep->len + 1; k-- > 0;)
                    if (memcmp(s->s + k, sep->s, sep->len) == 0) {
                        hit = s->s + k;
                        break;
                    }
            if (!hit) break;
            size_t at = (size_t)(hit - s->s);
            rt_list_push(r, l, v_str(rt_str(r, s->s + at + sep->len, e - at - sep->len)));
            e = at;
            done++;
        }
        rt_list_push(r, l, v_str(rt_str(r, s->s, e)));
    }
    for (size_t a = 0, z = l->n ? l->n - 1 : 0; a < z; a++, z--) {
        Value t = l->v[a];
        l->v[a] = l->v[z];
        l->v[z] = t;
    }
    return l;
}

List *str_splitlines(Render *r, Str *s, bool keepends) {
    List *l = rt_list(r, 0, LK_LIST);
    size_t i = 0, b = 0;
    while (i < s->len) {
        size_t at = i;
        uint32_t c = utf8_next(s->s, s->len, &i);
        bool nl = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
                  c == 0x85 || c == 0x2028 || c == 0x2029;
        if (!nl) continue;
        if (c == '\r' && i < s->len && s->s[i] == '\n') i++;
        rt_list_push(r, l, v_str(rt_str(r, s->s + b, (keepends ? i : at) - b)));
        b = i;
    }
    if (b < s->len) rt_list_push(r, l, v_str(rt_str(r, s->s + b, s->len - b)));
    return l;
}

int64_t str_find(Str *s, Str *sub, bool from_right) {
    const char *hit = NULL;
    if (!from_right) {
        hit = sub->len ? memmem(s->s, s->len, sub->s, sub->len) : s->s;
    } else if (s->len >= sub->len) {
        for (size_t k = s->len - sub->len + 1; k-- > 0;)
            if (memcmp(s->s + k, sub->s, sub->len) == 0) {
                hit = s->s + k;
                break;
            }
    }
    if (!hit) return -1;
    int64_t n = 0;
    for (size_t i = 0; i < (size_t)(hit - s->s); i++) n += ((unsigned char)s->s[i] & 0xC0) != 0x80;
    return n;
}

// ---- Python int() and float() of a string

static bool ascii_space(char c) { return (unsigned char)c < 0x80 && uc_isspace((unsigned char)c); }

static void trim_ascii_space(const char **s, size_t *len) {
    while (*len && ascii_space(**s)) (*s)++, (*len)--;
    while (*len && ascii_space((*s)[*len - 1])) (*len)--;
}

bool str_parse_int(const char *s, size_t len, int base, int64_t *out) {
    trim_ascii_space(&s, &len);
    bool neg = false;
    if (len && (*s == '+' || *s == '-')) neg = *s == '-', s++, len--;
    if (len >= 2 && s[0] == '0') {
        char p = (char)(s[1] | 0x20);
        int pb = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
        if (pb && (base == 0 || base == pb)) base = pb, s += 2, len -= 2;
    }
    if (base == 0) base = 10;
    if (!len) return false;
    uint64_t v = 0;
    bool prev_digit = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '_' && prev_digit && i + 1 < len) {
            prev_digit = false;
            continue;
        }
        int d = (c >= '0' && c <= '9') ? c - '0' : ((c | 32) >= 'a' && (c | 32) <= 'z') ? (c | 32) - 'a' + 10 : 99;
        if (d >= base) return false;
        if (v > ((uint64_t)INT64_MAX + neg - (uint64_t)d) / (uint64_t)base) return false;
        v = v * (uint64_t)base + (uint64_t)d;
        prev_digit = true;
    }
    if (!prev_digit) return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

bool str_parse_float(const char *s, size_t len, double *out) {
    trim_ascii_space(&s, &len);
    char buf[128];
    size_t n = 0;
    bool digit = false, prev_digit = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '_') {
            if (!prev_digit || i + 1 >= len || s[i + 1] < '0' || s[i + 1] > '9') return false;
            continue;
        }
        if (n + 1 >= sizeof buf || c == 'x' || c == 'X' || c == 'p' || c == 'P') return false;
        prev_digit = c >= '0' && c <= '9';
        digit |= prev_digit;
        buf[n++] = c;
    }
    buf[n] = 0;
    if (!n) return false;
    const char *word = buf + (buf[0] == '+' || buf[0] == '-');
    if (!digit && strcasecmp(word, "inf") && strcasecmp(word, "infinity") && strcasecmp(word, "nan")) return false;
    char *end;
    double v = strtod(buf, &end);
    if (*end) return false;
    *out = v;
    return true;
}

Str *str_html_escape(Render *r, Str *s) {
    SBuf b = {0};
    for (size_t i = 0; i < s->len; i++) {
        char c = s->s[i];
        const char *e = c == '&'    ? "&amp;"
                        : c == '<'  ? "&lt;"
                        : c == '>'  ? "&gt;"
                        : c == '"'  ? "&#34;"
                        : c == '\'' ? "&#39;"
                                    : NULL;
        if (e)
            sb_puts(r, &b, e);
        else
            sb_putc(r, &b, c);
    }
    return sb_str(r, &b);
}
