// spec_ngram.c: see spec_ngram.h.
#include "engine/spec_ngram.h"

#include "common/common.h"

int spec_ngram_propose(const int32_t *t, int len, int n_min, int n_max, int k, int32_t *out) {
    CHECK(n_min >= 1 && n_max >= n_min);
    if (k <= 0 || len < n_min + 1) return 0;
    int best = 0, best_end = -1;
    // a candidate occurrence ends at j (exclusive) with the proposal starting at t[j]; j < len so
    // that at least one token follows it; walking j down finds the most recent one first
    for (int j = len - 1; j >= n_min; j--) {
        int m = 0;
        while (m < n_max && m < j && t[j - 1 - m] == t[len - 1 - m]) m++;
        if (m >= n_min && m > best) {
            best = m;
            best_end = j;
            if (m == n_max) break;
        }
    }
    if (best_end < 0) return 0;
    // past the end of t the proposal continues the repetition it found (period len - best_end):
    // a run like "ab ab ab" proposes k tokens, not just the ones before the end
    int period = len - best_end;
    for (int i = 0; i < k; i++) out[i] = i < period ? t[best_end + i] : out[i - period]; // out may be t + len
    return k;
}
