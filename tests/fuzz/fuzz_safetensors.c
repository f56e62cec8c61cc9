// fuzz_safetensors: libFuzzer harness for the safetensors reader (engine/model/safetensors.c):
// the input is a whole file (u64 header length, JSON header, data), parsed from memory. What
// loads must keep every tensor inside the file with shape * element size bytes.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engine/model/safetensors.h"
#include "kernels/quant.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = xmalloc(size ? size : 1); // exactly size bytes, so ASan sees a read past the end
    memcpy(buf, data, size);
    SafeTensors st;
    char err[ERR_MAX];
    if (safetensors_parse(&st, buf, size, "<fuzz>", err) == SL_OK) {
        size_t total = 0;
        for (int i = 0; i < st.n_tensors; i++) {
            const STensor *t = &st.tensors[i];
            CHECK(t->n_dims >= 1 && t->n_dims <= ST_MAX_DIMS, "n_dims %d", t->n_dims);
            int64_t elems = 1;
            for (int d = 0; d < t->n_dims; d++) {
                CHECK(t->shape[d] >= 0, "negative shape");
                elems *= t->shape[d];
            }
            size_t esize = t->type == QTYPE_F32 ? 4 : 2;
            CHECK((size_t)elems * esize == t->nbytes, "%s: %zu bytes for %lld elements", t->name, t->nbytes,
                  (long long)elems);
            CHECK((const uint8_t *)t->data >= buf && (const uint8_t *)t->data + t->nbytes <= buf + size,
                  "%s outside the file", t->name);
            CHECK(safetensors_find(&st, t->name) == t, "%s not found by name", t->name);
            total += t->nbytes;
        }
        CHECK(total == st.bytes, "bytes %zu != sum %zu", st.bytes, total);
        safetensors_close(&st);
    } else {
        CHECK(err[0], "an error without a message");
    }
    free(buf);
    return 0;
}
