// common.h: checks, logging, allocation and time helpers shared by every module.
//
// Two kinds of failure (DESIGN.md §7):
//  - a bug or a broken environment: CHECK / DIE log file, line and cause, then exit(1);
//  - anything a client or a file can cause: the function returns SL_ERR and writes a one-line
//    message into the caller's `char *err` buffer (ERR_MAX bytes) with seterr().
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SL_OK 0
#define SL_ERR (-1)
#define ERR_MAX 512

// The condition text goes in as an argument, never into the format (it may contain '%').
#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (!(cond)) die_check_at(__FILE__, __LINE__, #cond, " " __VA_ARGS__);       \
    } while (0)
#define DIE(...) die_at(__FILE__, __LINE__, __VA_ARGS__)

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

__attribute__((noreturn, format(printf, 3, 4))) void die_at(const char *file, int line,
                                                            const char *fmt, ...);

__attribute__((noreturn, format(printf, 4, 5))) void die_check_at(const char *file, int line,
                                                                  const char *cond,
                                                                  const char *fmt, ...);

// Writes a formatted one-line message into err (which may be NULL) and returns SL_ERR,
// so a failing path reads `return seterr(err, "bad magic %08x", m);`.
__attribute__((format(printf, 2, 3))) int seterr(char *err, const char *fmt, ...);

// ---- logging (stderr, one line each, with a monotonic timestamp)
typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } LogLevel;
extern LogLevel log_level;
__attribute__((format(printf, 2, 3))) void log_msg(LogLevel lvl, const char *fmt, ...);
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

// ---- allocation: abort on out-of-memory, so callers never check (redis' zmalloc rule)
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
// 64-byte aligned, for SIMD rows and weight slabs; free with free().
void *xmalloc_aligned(size_t n);

// ---- time
double time_now_s(void); // monotonic seconds
// A time_now_s() value as the CLOCK_MONOTONIC timespec pthread_cond_timedwait takes (for a
// condition variable whose clock attribute is CLOCK_MONOTONIC).
struct timespec time_mono_timespec(double t_s);
double time_ms_since(double t0_s);

// ---- files
// Reads a whole file into a NUL-terminated buffer; NULL with err set when it cannot.
char *file_read_all(const char *path, size_t *len_out, char *err);

// Peak resident set size of this process in bytes (VmHWM), 0 when unknown.
size_t mem_peak_rss(void);

// ---- UTF-8
// The length of the well-formed character at s[0..n) (1..4; Unicode Table 3-7: no overlongs,
// no surrogates, nothing above U+10FFFF); 0 when s[0] cannot start one or a continuation byte is
// wrong, with *bad (if not NULL) set to the length of the ill-formed part to replace by one
// U+FFFD (Unicode's "maximal subpart", as Python and browsers do); -k when the k bytes left are
// a valid but incomplete prefix (only possible when the input ends early).
int utf8_char_len(const unsigned char *s, size_t n, int *bad);
// Characters that start in s[0..n): the bytes that are not UTF-8 continuation bytes. On
// well-formed text its length in code points (what Python's len() and a client's string index
// count); a piece that ends inside a character counts it where it starts.
size_t utf8_count_chars(const char *s, size_t n);
// The bytes of s[0..n)'s first max_chars characters (as utf8_count_chars counts them): a cut that
// never splits a character.
size_t utf8_prefix_len(const char *s, size_t n, size_t max_chars);

// s[0..n) made safe for a one-line message from an untrusted file: at most max of its bytes,
// every byte outside printable ASCII as \xNN (so control bytes, NULs and broken UTF-8 neither
// cut nor garble the line), "..." when cut. buf needs STR_SHOW_CAP(max) bytes.
#define STR_SHOW_CAP(max) (4 * (max) + 4)
const char *str_show(const char *s, size_t n, size_t max, char *buf);

// 64-bit FNV-1a of p[0..n): a quick, stable hash for names, keys and salts (tables and seeds;
// nothing an attacker's collisions can hurt beyond a slower probe).
uint64_t hash_fnv1a(const void *p, size_t n);

// ---- container limits (cgroup v2), so that defaults sized from "the machine" fit a container's
// share of it. root is where the cgroup hierarchy is mounted ("/sys/fs/cgroup"); this process's
// own cgroup (from /proc/self/cgroup) is read under it, else root itself (a container's
// namespaced view).
// The CPUs a cpu.max quota allows, rounded up ("250000 100000" -> 3); 0 when there is no quota
// or it cannot be read.
int cgroup_cpu_limit(const char *root);
// memory.max in bytes; 0 when unlimited ("max") or unreadable.
size_t cgroup_memory_limit(const char *root);
