// fuzz.h: helpers shared by the libFuzzer harnesses in tests/fuzz/ (built by `make fuzz` with
// clang -fsanitize=fuzzer,address,undefined; see docs/architecture.md, tests/).
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

// Only errors in the log: the code under test logs what it loads, thousands of times a second.
static inline void fz_quiet(void) { log_level = LOG_ERROR; }

// Whether s[0..n) is well-formed UTF-8 (what every decoder and renderer promises its output is).
static inline bool fz_utf8_ok(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int l = utf8_char_len((const unsigned char *)s + i, n - i, NULL);
        if (l <= 0) return false;
        i += (size_t)l;
    }
    return true;
}

// A NUL-terminated malloc'd copy of the input (the corpus buffer is exactly size bytes: a copy
// lets the code under test keep its NUL-terminated assumptions, as its real callers do).
static inline char *fz_strdup(const uint8_t *data, size_t size) {
    char *s = xmalloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}
