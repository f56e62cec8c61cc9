// format.c: Python's two string formatting languages, `fmt % args` (and the
// `format` filter, which is the same) and `fmt.format(...)` with its format-spec
// mini-language ([[fill]align][sign][#][0][width][,][.precision][type]).
#define _GNU_SOURCE
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/template/template_impl.h"

// Pads text (n code points) to width with fill, align '<' '>' '^' or '=' (after the sign
// prefix of `sign_len` bytes).
static void put_padded(Render *r, SBuf *b, const char *text, size_t len, size_t n, int width, const char *fill,
                       char align, size_t sign_len) {
    size_t pad = width > 0 && (size_t)width > n ? (size_t)width - n : 0;
    size_t left = align == '<' ? 0 : align == '^' ? pad / 2 : pad;
    if (align == '=') sb_put(r, b, text, sign_len), text += sign_len, len -= sign_len;
    for (size_t i = 0; i < left; i++) sb_puts(r, b, fill);
    sb_put(r, b, text, len);
    for (size_t i = left; i < pad; i++) sb_puts(r, b, fill);
}

static size_t cp_count(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

// Inserts a separator every `every` digits of the integer part of num (in place, in buf).
static void group_digits(char *buf, size_t cap, char sep, int every) {
    char *p = buf + strspn(buf, "+- ");
    if (!strncmp(p, "0x", 2) || !strncmp(p, "0X", 2) || !strncmp(p, "0o", 2) || !strncmp(p, "0b", 2)) p += 2;
    size_t nd = strspn(p, "0123456789abcdefABCDEF");
    if (strchr(p, 'e') && every == 3) nd = strspn(p, "0123456789");
    size_t groups = nd ? (nd - 1) / (size_t)every : 0;
    size_t len = strlen(buf);
    if (!groups || len + groups + 1 > cap) return;
    size_t tail = len - (size_t)(p - buf) - nd;
    memmove(p + nd + groups, p + nd, tail + 1);
    for (size_t i = nd, o = nd + groups, k = 0; i > 0; k++) {
        if (k && k % (size_t)every == 0) p[--o] = sep;
        p[--o] = p[--i];
    }
}

typedef struct {
    char fill[5], align, sign, type, grouping;
    bool alt, zero;
    int width, prec;
} Spec;

#define FORMAT_MAX_WIDTH 100000 // widths and precisions beyond it are refused (a render error)

// A width or precision written in digits from s[*i]. It stops growing past FORMAT_MAX_WIDTH, which
// the caller refuses, so a long run of digits cannot overflow the int.
static int spec_number(const char *s, size_t n, size_t *i) {
    int v = 0;
    for (; *i < n && s[*i] >= '0' && s[*i] <= '9'; (*i)++)
        if (v <= FORMAT_MAX_WIDTH) v = v * 10 + (s[*i] - '0');
    return v;
}

// A `*` width or precision taken from the arguments. Python takes only an int (or bool) there:
// anything else is its TypeError, and a number beyond FORMAT_MAX_WIDTH is refused like digits.
static int star_number(Render *r, Value v) {
    if (v.type == V_UNDEF) fail_undefined(r, v);
    if (v.type != V_INT && v.type != V_BOOL && v.type != V_BIGINT) rt_error(r, "* wants int");
    if (v.type == V_BIGINT) rt_error(r, "format width or precision too large");
    int64_t x = v.type == V_BOOL ? v.b : v.i;
    if (x < -FORMAT_MAX_WIDTH || x > FORMAT_MAX_WIDTH) rt_error(r, "format width or precision too large");
    return (int)x;
}

// The code point a `c` conversion writes: Python's range check, for '%c' and '{:c}' alike.
static uint32_t char_code(Render *r, int64_t x) {
    if (x < 0 || x >= 0x110000) rt_error(r, "%%c arg not in range(0x110000)");
    return (uint32_t)x;
}

static void parse_spec(Render *r, const char *s, size_t len, Spec *sp) {
    *sp = (Spec){.fill = " ", .prec = -1};
    size_t i = 0, j = 0;
    if (len) {
        j = 0;
        utf8_next(s, len, &j);
        if (j < len && strchr("<>=^", s[j])) {
            memcpy(sp->fill, s, j);
            sp->fill[j] = 0;
            sp->align = s[j];
            i = j + 1;
        } else if (strchr("<>=^", s[0])) {
            sp->align = s[0];
            i = 1;
        }
    }
    if (i < len && strchr("+- ", s[i])) sp->sign = s[i++];
    if (i < len && s[i] == '#') sp->alt = true, i++;
    if (i < len && s[i] == '0') sp->zero = true, i++;
    sp->width = spec_number(s, len, &i);
    if (i < len && (s[i] == ',' || s[i] == '_')) sp->grouping = s[i++];
    if (i < len && s[i] == '.') {
        i++;
        if (i >= len || s[i] < '0' || s[i] > '9') rt_error(r, "format specifier missing precision");
        sp->prec = 0;
        sp->prec = spec_number(s, len, &i);
    }
    if (i < len) sp->type = s[i++];
    if (i < len) rt_error(r, "invalid format specifier");
    if (sp->width > FORMAT_MAX_WIDTH || sp->prec > FORMAT_MAX_WIDTH) rt_error(r, "format width or precision too large");
}

// format(v, spec) for one value.
static void format_value(Render *r, SBuf *b, Value v, const char *spec, size_t slen) {
    if (v.type == V_UNDEF) fail_undefined(r, v);
    if (slen == 0) {
        v_write_str(r, b, v);
        return;
    }
    Spec sp;
    parse_spec(r, spec, slen, &sp);
    char buf[512];
    if (v.type == V_STR) {
        if (sp.type && sp.type != 's') rt_error(r, "unknown format code '%c' for object of type 'str'", sp.type);
        if (sp.sign || sp.alt || sp.grouping || sp.align == '=') rt_error(r, "invalid format specifier for a string");
        size_t n = v.s->ncp, bytes = v.s->len;
        if (sp.prec >= 0 && (size_t)sp.prec < n) n = (size_t)sp.prec, bytes = utf8_offset(v.s, sp.prec);
        put_padded(r, b, v.s->s, bytes, n, sp.width, sp.fill, sp.align ? sp.align : '<', 0);
        return;
    }
    v_refuse_big(r, v, v, "format");
    if (!v_is_number(v)) rt_error(r, "unsupported format string passed to %s.__format__", v_typename(v));
    char align = sp.align ? sp.align : '>';
    if (sp.zero && !sp.align) align = '=', strcpy(sp.fill, "0");
    const char *sign = "";
    bool is_int = v.type != V_FLOAT && (!sp.type || strchr("bcdoxXn", sp.type));
    if (is_int) {
        int64_t x = v.type == V_BOOL ? v.b : v.i;
        if (sp.prec >= 0) rt_error(r, "precision not allowed in integer format specifier");
        uint64_t ux = x < 0 ? 0 - (uint64_t)x : (uint64_t)x;
        sign = x < 0 ? "-" : sp.sign == '+' ? "+" : sp.sign == ' ' ? " " : "";
        char digits[80];
        switch (sp.type) {
        case 'x': snprintf(digits, sizeof digits, "%s%" PRIx64, sp.alt ? "0x" : "", ux); break;
        case 'X': snprintf(digits, sizeof digits, "%s%" PRIX64, sp.alt ? "0X" : "", ux); break;
        case 'o': snprintf(digits, sizeof digits, "%s%" PRIo64, sp.alt ? "0o" : "", ux); break;
        case 'b': {
            char t[70];
            int k = 0;
            do t[k++] = (char)('0' + (ux & 1));
            while (ux >>= 1);
            int o = sp.alt ? snprintf(digits, sizeof digits, "0b") : 0;
            while (k) digits[o++] = t[--k];
            digits[o] = 0;
            break;
        }
        case 'c': {
            char u[5] = {0};
            utf8_put(u, char_code(r, x));
            put_padded(r, b, u, strlen(u), 1, sp.width, sp.fill, sp.align ? sp.align : '<', 0);
            return;
        }
        default: snprintf(digits, sizeof digits, "%" PRIu64, ux); break;
        }
        snprintf(buf, sizeof buf, "%s%s", sign, digits);
        if (sp.grouping) group_digits(buf, sizeof buf, sp.grouping, sp.type && strchr("xXob", sp.type) ? 4 : 3);
    } else {
        double f = v_num(v);
        char type = sp.type;
        int prec = sp.prec;
        sign = signbit(f) && !isnan(f) ? "-" : sp.sign == '+' ? "+" : sp.sign == ' ' ? " " : "";
        double a = fabs(f);
        char num[400];
        if (!type && prec < 0) {
            fmt_float(num, sizeof num, a);
        } else if (!type) { // like 'g', but a fixed-point result keeps one digit after the point
            snprintf(num, sizeof num, sp.alt ? "%#.*g" : "%.*g", prec ? prec : 1, a);
            if (!strpbrk(num, ".einf")) strcat(num, ".0");
        } else if (type == '%') {
            snprintf(num, sizeof num, "%.*f%%", prec < 0 ? 6 : prec, a * 100);
        } else if (strchr("eEfFgG", type)) {
            char f2[8];
            snprintf(f2, sizeof f2, "%%%s.*%c", sp.alt ? "#" : "", type);
            snprintf(num, sizeof num, f2, prec < 0 ? 6 : prec, a);
        } else {
            rt_error(r, "unknown format code '%c' for object of type 'float'", type);
        }
        snprintf(buf, sizeof buf, "%s%s", sign, num);
        if (sp.grouping) group_digits(buf, sizeof buf, sp.grouping, 3);
    }
    put_padded(r, b, buf, strlen(buf), cp_count(buf, strlen(buf)), sp.width, sp.fill, align, strlen(sign));
}

// ---- fmt.format(*pos, **kw)

Str *str_format_method(Render *r, Str *fmt, const Value *pos, int npos, const char **kwn, const Value *kwv, int nkw) {
    SBuf b = {0};
    const char *s = fmt->s;
    size_t n = fmt->len;
    int auto_idx = 0; // >= 0 automatic numbering in use / allowed, -1 manual numbering used
    bool manual = false;
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c == '}') {
            if (i + 1 < n && s[i + 1] == '}') {
                sb_putc(r, &b, '}');
                i += 2;
                continue;
            }
            rt_error(r, "Single '}' encountered in format string");
        }
        if (c != '{') {
            sb_putc(r, &b, c);
            i++;
            continue;
        }
        if (i + 1 < n && s[i + 1] == '{') {
            sb_putc(r, &b, '{');
            i += 2;
            continue;
        }
        size_t j = i + 1, depth = 1;
        while (j < n && depth) {
            if (s[j] == '{')
                depth++;
            else if (s[j] == '}')
                depth--;
            if (depth) j++;
        }
        if (j >= n) rt_error(r, "expected '}' before end of string");
        const char *f = s + i + 1, *end = s + j;
        i = j + 1;
        const char *colon = NULL, *bang = NULL;
        for (const char *p = f; p < end; p++) {
            if (*p == '[') {
                while (p < end && *p != ']') p++;
                continue;
            }
            if (*p == '!' && !bang && !colon) bang = p;
            if (*p == ':') {
                colon = p;
                break;
            }
        }
        const char *name_end = bang ? bang : colon ? colon : end;
        size_t k = 0;
        while (f + k < name_end && f[k] != '.' && f[k] != '[') k++;
        Value v;
        if (k == 0) {
            if (manual) rt_error(r, "cannot switch from manual field specification to automatic field numbering");
            if (auto_idx >= npos) rt_error(r, "Replacement index %d out of range for positional args tuple", auto_idx);
            v = pos[auto_idx++];
        } else if (f[0] >= '0' && f[0] <= '9') {
            if (auto_idx > 0) rt_error(r, "cannot switch from automatic field numbering to manual field specification");
            manual = true;
            int idx = atoi(f);
            if (idx >= npos) rt_error(r, "Replacement index %d out of range for positional args tuple", idx);
            v = pos[idx];
        } else {
            int hit = -1;
            for (int q = 0; q < nkw; q++)
                if (strlen(kwn[q]) == k && !memcmp(kwn[q], f, k)) hit = q;
            if (hit < 0) rt_error(r, "KeyError: '%.*s'", (int)k, f);
            v = kwv[hit];
        }
        for (const char *p = f + k; p < name_end;) { // .attr and [key] chains
            if (*p == '.') {
                const char *q = ++p;
                while (p < name_end && *p != '.' && *p != '[') p++;
                Str *attr = rt_str(r, q, (size_t)(p - q));
                v = getattr_value(r, v, attr->s);
            } else if (*p == '[') {
                const char *q = ++p;
                while (p < name_end && *p != ']') p++;
                int64_t ik;
                Value key =
                    str_parse_int(q, (size_t)(p - q), 10, &ik) ? v_int(ik) : v_str(rt_str(r, q, (size_t)(p - q)));
                v = getitem_value(r, v, key);
                p++;
            } else {
                rt_error(r, "invalid format field");
            }
        }
        if (bang) {
            char conv = bang + 1 < end ? bang[1] : 0;
            SBuf t = {0};
            if (conv == 'r' || conv == 'a')
                v_write_repr(r, &t, v);
            else if (conv == 's')
                v_write_str(r, &t, v);
            else
                rt_error(r, "Unknown conversion specifier %c", conv ? conv : '?');
            v = v_str(sb_str(r, &t));
        }
        if (colon)
            format_value(r, &b, v, colon + 1, (size_t)(end - colon - 1));
        else
            format_value(r, &b, v, "", 0);
    }
    return sb_str(r, &b);
}

// ---- fmt % args

Str *str_percent_format(Render *r, Str *fmt, Value args) {
    SBuf b = {0};
    const Value *argv = &args;
    size_t argc = 1, used = 0;
    bool is_tuple = args.type == V_LIST && args.l->kind == LK_TUPLE;
    if (is_tuple) argv = args.l->v, argc = args.l->n;
    bool mapping = args.type == V_DICT, used_key = false;
    const char *s = fmt->s;
    size_t n = fmt->len;
    for (size_t i = 0; i < n;) {
        if (s[i] != '%') {
            const char *pct = memchr(s + i, '%', n - i);
            size_t run = pct ? (size_t)(pct - s) - i : n - i;
            sb_put(r, &b, s + i, run);
            i += run;
            continue;
        }
        i++;
        if (i >= n) rt_error(r, "incomplete format");
        Value v;
        bool have = false;
        if (s[i] == '(') {
            if (!mapping) rt_error(r, "format requires a mapping");
            size_t q = ++i;
            while (i < n && s[i] != ')') i++;
            if (i >= n) rt_error(r, "incomplete format key");
            Value *hit = dict_find(r, args.d, v_str(rt_str(r, s + q, i - q)));
            if (!hit) rt_error(r, "KeyError: '%.*s'", (int)(i - q), s + q);
            v = *hit;
            have = used_key = true;
            i++;
        }
        char flags[8] = "";
        size_t nf = 0;
        while (i < n && strchr("-+ #0", s[i]) && nf < 6) flags[nf++] = s[i++];
        flags[nf] = 0;
        int width = -1, prec = -1;
        if (i < n && s[i] == '*') {
            if (used >= argc) rt_error(r, "not enough arguments for format string");
            width = star_number(r, argv[used++]);
            i++;
        } else {
            width = spec_number(s, n, &i);
        }
        if (i < n && s[i] == '.') {
            i++;
            if (i < n && s[i] == '*') {
                if (used >= argc) rt_error(r, "not enough arguments for format string");
                prec = star_number(r, argv[used++]);
                i++;
            } else {
                prec = spec_number(s, n, &i);
            }
        }
        while (i < n && strchr("hlL", s[i])) i++;
        if (i >= n) rt_error(r, "incomplete format");
        char conv = s[i++];
        if (conv == '%') {
            sb_putc(r, &b, '%');
            continue;
        }
        if (!have) {
            if (used >= argc) rt_error(r, "not enough arguments for format string");
            v = argv[used++];
        }
        if (width > FORMAT_MAX_WIDTH || prec > FORMAT_MAX_WIDTH) rt_error(r, "format width or precision too large");
        bool left = strchr(flags, '-') != NULL;
        char tmp[512];
        if (conv == 's' || conv == 'r' || conv == 'a') {
            SBuf t = {0};
            if (conv == 's')
                v_write_str(r, &t, v);
            else
                v_write_repr(r, &t, v);
            Str *x = sb_str(r, &t);
            size_t cps = x->ncp, bytes = x->len;
            if (prec >= 0 && (size_t)prec < cps) cps = (size_t)prec, bytes = utf8_offset(x, prec);
            put_padded(r, &b, x->s, bytes, cps, width, " ", left ? '<' : '>', 0);
            continue;
        }
        if (v.type == V_UNDEF) fail_undefined(r, v);
        v_refuse_big(r, v, v, "% format");
        if (!v_is_number(v)) rt_error(r, "%%%c format: a real number is required, not %s", conv, v_typename(v));
        char cf[24];
        if (strchr("diu", conv)) {
            if (v.type == V_FLOAT && isnan(v.f)) rt_error(r, "cannot convert float NaN to integer");
            if (v.type == V_FLOAT && !(fabs(v.f) < 9.2e18)) // Python's exact big int: beyond sluice's 64 bits
                rt_error(r, "%%%c format: a float beyond the 64-bit integers", conv);
            int64_t x = v.type == V_FLOAT ? (int64_t)v.f : v.type == V_BOOL ? v.b : v.i;
            snprintf(cf, sizeof cf, "%%%s*.*" PRId64, flags);
            snprintf(tmp, sizeof tmp, cf, width, prec < 0 ? 1 : prec, x);
        } else if (strchr("xXo", conv)) {
            if (v.type == V_FLOAT) rt_error(r, "%%%c format: an integer is required, not float", conv);
            int64_t x = v.type == V_BOOL ? v.b : v.i;
            snprintf(cf, sizeof cf, "%%%s*.*l%c", flags, conv);
            snprintf(tmp, sizeof tmp, cf, width, prec < 0 ? 1 : prec, x);
        } else if (strchr("eEfFgG", conv)) {
            snprintf(cf, sizeof cf, "%%%s*.*%c", flags, conv);
            snprintf(tmp, sizeof tmp, cf, width, prec < 0 ? 6 : prec, v_num(v));
        } else if (conv == 'c') {
            if (v.type == V_FLOAT) rt_error(r, "%%c requires int or char");
            char u[5] = {0};
            utf8_put(u, char_code(r, v.type == V_BOOL ? v.b : v.i));
            put_padded(r, &b, u, strlen(u), 1, width, " ", left ? '<' : '>', 0);
            continue;
        } else {
            rt_error(r, "unsupported format character '%c'", conv);
        }
        sb_puts(r, &b, tmp);
    }
    if (!mapping && !used_key && used < argc && (is_tuple || used == 0))
        rt_error(r, "not all arguments converted during string formatting");
    return sb_str(r, &b);
}
