// common.c: see common.h.
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

LogLevel log_level = LOG_INFO;

void die_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "sluice: fatal: %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    exit(1);
}

void die_check_at(const char *file, int line, const char *cond, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "sluice: fatal: %s:%d: check failed: %s", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    exit(1);
}

int seterr(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, ERR_MAX, fmt, ap);
        va_end(ap);
    }
    return SL_ERR;
}

static double log_t0 = -1;

void log_msg(LogLevel lvl, const char *fmt, ...) {
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (lvl < log_level) return;
    if (log_t0 < 0) log_t0 = time_now_s();
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    // one fprintf per line so lines from different threads never interleave
    fprintf(stderr, "%s %9.3f %s\n", names[lvl], time_now_s() - log_t0, line);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) DIE("out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) DIE("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) DIE("out of memory reallocating %zu bytes", n);
    return q;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n) {
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void *xmalloc_aligned(size_t n) {
    void *p = NULL;
    size_t rounded = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) DIE("out of memory allocating %zu aligned bytes", n);
    return p;
}

double time_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct timespec time_mono_timespec(double t_s) {
    struct timespec ts;
    ts.tv_sec = (time_t)t_s;
    ts.tv_nsec = (long)((t_s - (double)ts.tv_sec) * 1e9);
    return ts;
}

double time_ms_since(double t0_s) { return (time_now_s() - t0_s) * 1e3; }

char *file_read_all(const char *path, size_t *len_out, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        seterr(err, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len + 1 >= cap) buf = xrealloc(buf, cap *= 2);
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        seterr(err, "error reading %s", path);
        return NULL;
    }
    buf[len] = 0;
    if (len_out) *len_out = len;
    return buf;
}

uint64_t hash_fnv1a(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

static inline bool utf8_starts_char(char c) { return ((unsigned char)c & 0xc0) != 0x80; }

size_t utf8_count_chars(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += utf8_starts_char(s[i]);
    return k;
}

const char *str_show(const char *s, size_t n, size_t max, char *buf) {
    size_t k = 0, m = MIN(n, max);
    for (size_t i = 0; i < m; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f) buf[k++] = (char)ch;
        else k += (size_t)sprintf(buf + k, "\\x%02x", ch);
    }
    strcpy(buf + k, m < n ? "..." : "");
    return buf;
}

size_t utf8_prefix_len(const char *s, size_t n, size_t max_chars) {
    size_t chars = 0, i = 0;
    for (; i < n; i++)
        if (utf8_starts_char(s[i]) && chars++ == max_chars) break;
    return i;
}

int utf8_char_len(const unsigned char *s, size_t n, int *bad) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned lo = 0x80, hi = 0xbf; // allowed range of the second byte
    if (c >= 0xc2 && c <= 0xdf) need = 2;
    else if (c == 0xe0) need = 3, lo = 0xa0;                  // no overlongs
    else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) need = 3;
    else if (c == 0xed) need = 3, hi = 0x9f;                  // no surrogates
    else if (c == 0xf0) need = 4, lo = 0x90;                  // no overlongs
    else if (c >= 0xf1 && c <= 0xf3) need = 4;
    else if (c == 0xf4) need = 4, hi = 0x8f;                  // nothing past U+10FFFF
    else {
        if (bad) *bad = 1;
        return 0;
    }
    for (int k = 1; k < need; k++) {
        if ((size_t)k >= n) return -k;
        unsigned b = s[k];
        bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xbf);
        if (!ok) {
            if (bad) *bad = k;
            return 0;
        }
    }
    return need;
}

// The first line of <root><own cgroup>/<name>, else of <root>/<name>, into buf.
static bool cgroup_read(const char *root, const char *name, char *buf, size_t cap) {
    char own[600] = "", path[1024];
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (f) {
        char line[600];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "0::", 3)) { // the v2 hierarchy
                snprintf(own, sizeof own, "%s", line + 3);
                own[strcspn(own, "\n")] = '\0';
                if (!strcmp(own, "/")) own[0] = '\0';
                break;
            }
        fclose(f);
    }
    for (int i = 0; i < 2; i++) {
        if (i == 0 && !own[0]) continue;
        snprintf(path, sizeof path, "%s%s/%s", root, i == 0 ? own : "", name);
        FILE *g = fopen(path, "r");
        if (!g) continue;
        bool ok = fgets(buf, (int)cap, g) != NULL;
        fclose(g);
        if (ok) return true;
    }
    return false;
}

int cgroup_cpu_limit(const char *root) {
    char buf[128];
    long long quota, period;
    if (!cgroup_read(root, "cpu.max", buf, sizeof buf)) return 0;
    if (sscanf(buf, "%lld %lld", &quota, &period) != 2 || quota <= 0 || period <= 0) return 0; // "max ..."
    long long n = (quota + period - 1) / period;
    return n > 4096 ? 4096 : (int)n;
}

size_t cgroup_memory_limit(const char *root) {
    char buf[128];
    unsigned long long v;
    if (!cgroup_read(root, "memory.max", buf, sizeof buf)) return 0;
    if (sscanf(buf, "%llu", &v) != 1) return 0; // "max"
    return (size_t)v;
}

size_t mem_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}
