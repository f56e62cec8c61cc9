// test.h: a tiny table-friendly test harness. Each tests/unit/test_*.c is one binary; main()
// calls TEST_RUN(fn) for each case and returns test_summary(), which prints the line
// "N passed, N failed" that CI and `make test` read.
//
// EXPECT* record a failure and let the case go on; ASSERT* also return from the case.
#pragma once

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int test_passed_, test_failed_, test_case_failed_;
static const char *test_name_;

#define TEST_FAIL_(...)                                                           \
    do {                                                                          \
        fprintf(stderr, "  FAIL %s (%s:%d): ", test_name_, __FILE__, __LINE__);   \
        fprintf(stderr, __VA_ARGS__);                                             \
        fputc('\n', stderr);                                                      \
        test_case_failed_ = 1;                                                    \
    } while (0)

__attribute__((format(printf, 5, 6))) static inline void test_fail_cond_(
    const char *file, int line, const char *what, const char *cond, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "  FAIL %s (%s:%d): %s %s ", test_name_, file, line, what, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    test_case_failed_ = 1;
}

// The condition text is printed as an argument, never pasted into the format ('%' in it).
#define EXPECT(cond, ...)                                                          \
    do {                                                                           \
        if (!(cond)) { test_fail_cond_(__FILE__, __LINE__, "expected", #cond, " " __VA_ARGS__); } \
    } while (0)
#define ASSERT(cond, ...)                                                          \
    do {                                                                           \
        if (!(cond)) { test_fail_cond_(__FILE__, __LINE__, "assertion", #cond, " " __VA_ARGS__); return; } \
    } while (0)
#define EXPECT_EQ_INT(a, b)                                                        \
    do {                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                        \
        if (a_ != b_) TEST_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);        \
    } while (0)
#define EXPECT_STR_EQ(a, b)                                                        \
    do {                                                                           \
        const char *a_ = (a), *b_ = (b);                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                     \
            TEST_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",   \
                       b_ ? b_ : "(null)");                                        \
    } while (0)
#define EXPECT_NEAR(a, b, tol)                                                     \
    do {                                                                           \
        double a_ = (a), b_ = (b);                                                 \
        if (!(fabs(a_ - b_) <= (tol))) TEST_FAIL_("%s ~ %s: %g vs %g (tol %g)", #a, #b, a_, b_, (double)(tol)); \
    } while (0)

#define TEST_RUN(fn)                                                               \
    do {                                                                           \
        test_name_ = #fn;                                                          \
        test_case_failed_ = 0;                                                     \
        fn();                                                                      \
        if (test_case_failed_) test_failed_++; else test_passed_++;                \
        fprintf(stderr, "%s %s\n", test_case_failed_ ? "FAIL" : "ok  ", #fn);      \
    } while (0)

static inline int test_summary(void) {
    printf("%d passed, %d failed\n", test_passed_, test_failed_);
    fflush(stdout);
    return test_failed_ ? 1 : 0;
}

// Where the suite finds its data and the default model; the Makefile passes both.
#ifndef TEST_DATA_DIR
#define TEST_DATA_DIR "tests/data"
#endif
#ifndef TEST_MODEL_PATH
#define TEST_MODEL_PATH "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#endif
