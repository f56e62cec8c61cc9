// embed.c: the embedding gather: each token's row of the table, dequantized to float.
#include <omp.h>

#include "kernels/cpu/cpu.h"

void k_embed(float *out, const QMatrix *table, const int *ids, int n_tokens) {
    int cols = (int)table->cols;
    size_t row_bytes = qtype_row_size(table->type, table->cols);
    for (int t = 0; t < n_tokens; t++)
        CHECK(ids[t] >= 0 && ids[t] < table->rows, "token id %d of %lld", ids[t], (long long)table->rows);
    int nth = k_threads(); // the caller's count, read before the region (workers are other threads)
#pragma omp parallel for schedule(static) num_threads(nth) if (n_tokens >= 64)
    for (int t = 0; t < n_tokens; t++)
        dequant_row(table->type, (const uint8_t *)table->data + (size_t)ids[t] * row_bytes,
                    out + (size_t)t * cols, cols);
}
