// engine.cu: the CUDA side of cuda_engine.h: device memory info, the arena the memory plan
// carves, the weight upload, and CUDA graphs. The runner above (engine/gpu_runner.c) is C and
// sees none of this file's types.
#include <string.h>

#include <thread>

#include "kernels/cuda/cuda_engine.h"
#include "kernels/cuda/kcuda.cuh"

extern "C" {
#include "kernels/quant.h"
}

// ---- device memory

extern "C" void kcuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    CHECK(kcuda_available(), "%s", kcuda_unavailable_reason());
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

// ---- the arena

struct KArena {
    char *base;
    size_t size, used;
};

extern "C" KArena *karena_create(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); // out of memory is the plan's to report, not a sticky error
        return NULL;
    }
    KArena *a = (KArena *)xcalloc(1, sizeof(KArena));
    a->base = (char *)p;
    a->size = bytes;
    return a;
}

extern "C" void *karena_take(KArena *a, size_t bytes) {
    size_t n = karena_round(bytes);
    CHECK(a->used + n <= a->size, "arena of %zu bytes: %zu used, %zu more asked", a->size, a->used, n);
    void *p = a->base + a->used;
    a->used += n;
    return p;
}

extern "C" size_t karena_used(const KArena *a) {
    return a->used;
}

extern "C" void karena_free(KArena *a) {
    if (!a) return;
    CUDA_CHECK(cudaFree(a->base));
    free(a);
}

// ---- weight upload
//
// Two chunks in flight: while the device copies and converts chunk i from pinned buffer i % 2,
// the host fills buffer (i + 1) % 2, after waiting for the event that marks the device done
// with that buffer's previous chunk. Raw GGUF blocks of the types quant.cu dequantizes go up as
// stored; other types are dequantized to f32 on the host first.

#define KUPLOAD_MAX_CHUNK ((size_t)64 << 20)
// The host's copy into pinned memory is the upload's bottleneck on one core (~8 GB/s against
// PCIe's ~25): big copies are split over this many threads.
#define KUPLOAD_COPY_THREADS 8
#define KUPLOAD_COPY_SPLIT ((size_t)4 << 20)

static void copy_parallel(void *dst, const void *src, size_t bytes) {
    int n = (int)(bytes / KUPLOAD_COPY_SPLIT);
    if (n > KUPLOAD_COPY_THREADS) n = KUPLOAD_COPY_THREADS;
    if (n < 2) {
        memcpy(dst, src, bytes);
        return;
    }
    std::thread t[KUPLOAD_COPY_THREADS];
    size_t part = (bytes + n - 1) / n;
    for (int i = 0; i < n; i++) {
        size_t o = (size_t)i * part, m = o + part <= bytes ? part : bytes - o;
        t[i] = std::thread([=]() { memcpy((char *)dst + o, (const char *)src + o, m); });
    }
    for (int i = 0; i < n; i++) t[i].join();
}

struct KUpload {
    KStream *s;
    char *host[2];
    char *dev[2];
    cudaEvent_t done[2];
    bool pending[2];
    size_t chunk;
    int next;
    size_t bytes;
};

extern "C" KUpload *kupload_create(void *dev_staging, size_t staging_bytes, KStream *s) {
    CHECK(s && staging_bytes >= ((size_t)2 << 20), "staging of %zu bytes", staging_bytes);
    KUpload *u = (KUpload *)xcalloc(1, sizeof(KUpload));
    u->s = s;
    u->chunk = staging_bytes / 2 / KARENA_ALIGN * KARENA_ALIGN;
    if (u->chunk > KUPLOAD_MAX_CHUNK) u->chunk = KUPLOAD_MAX_CHUNK;
    for (int i = 0; i < 2; i++) {
        u->dev[i] = (char *)dev_staging + (size_t)i * u->chunk;
        u->host[i] = (char *)kdev_malloc_host(u->chunk);
        CUDA_CHECK(cudaEventCreateWithFlags(&u->done[i], cudaEventDisableTiming));
    }
    return u;
}

// The next staging pair, once the device is done with its previous chunk.
static int kupload_slot(KUpload *u) {
    int i = u->next;
    u->next ^= 1;
    if (u->pending[i]) CUDA_CHECK(cudaEventSynchronize(u->done[i]));
    u->pending[i] = false;
    return i;
}

// Copies bytes from host slot i up and converts n values of type t into dst.
static void kupload_send(KUpload *u, int i, size_t bytes, uint16_t *dst, QType t, int64_t n) {
    CUDA_CHECK(cudaMemcpyAsync(u->dev[i], u->host[i], bytes, cudaMemcpyHostToDevice, u->s->stream));
    k_dequant_bf16_cuda(dst, u->dev[i], t, n, u->s);
    CUDA_CHECK(cudaEventRecord(u->done[i], u->s->stream));
    u->pending[i] = true;
    u->bytes += bytes;
}

extern "C" void kupload_matrix(KUpload *u, uint16_t *dst, const QMatrix *w) {
    CHECK(qtype_dequant_supported(w->type), "no dequantizer for %s", qtype_name(w->type));
    CHECK(w->rows >= 1 && w->cols >= 1 && ((uintptr_t)dst & 15) == 0, "%lld x %lld", (long long)w->rows,
          (long long)w->cols);
    bool raw = kcuda_dequant_on_device(w->type);
    size_t row_bytes = qtype_row_size(w->type, w->cols);
    size_t staged = raw ? row_bytes : (size_t)w->cols * sizeof(float); // one row in the staging buffer
    CHECK(staged <= u->chunk, "a row of %zu bytes, staging chunks of %zu", staged, u->chunk);
    int64_t rows_per = (int64_t)(u->chunk / staged);
    for (int64_t r0 = 0; r0 < w->rows; r0 += rows_per) {
        int64_t nr = w->rows - r0 < rows_per ? w->rows - r0 : rows_per;
        int i = kupload_slot(u);
        const uint8_t *src = (const uint8_t *)w->data + (size_t)r0 * row_bytes;
        if (raw) {
            copy_parallel(u->host[i], src, (size_t)nr * row_bytes);
        } else {
            float *f = (float *)u->host[i];
            for (int64_t r = 0; r < nr; r++) dequant_row(w->type, src + (size_t)r * row_bytes, f + r * w->cols, w->cols);
        }
        kupload_send(u, i, (size_t)nr * staged, dst + (size_t)r0 * w->cols, raw ? w->type : QTYPE_F32, nr * w->cols);
    }
}

extern "C" void kupload_f32(KUpload *u, float *dst, const float *src, size_t n) {
    size_t per = u->chunk / sizeof(float);
    for (size_t o = 0; o < n; o += per) {
        size_t m = n - o < per ? n - o : per;
        int i = kupload_slot(u);
        copy_parallel(u->host[i], src + o, m * sizeof(float));
        CUDA_CHECK(cudaMemcpyAsync(dst + o, u->host[i], m * sizeof(float), cudaMemcpyHostToDevice, u->s->stream));
        CUDA_CHECK(cudaEventRecord(u->done[i], u->s->stream));
        u->pending[i] = true;
        u->bytes += m * sizeof(float);
    }
}

extern "C" size_t kupload_finish(KUpload *u) {
    kstream_sync(u->s);
    size_t bytes = u->bytes;
    for (int i = 0; i < 2; i++) {
        CUDA_CHECK(cudaEventDestroy(u->done[i]));
        kdev_free_host(u->host[i]);
    }
    free(u);
    return bytes;
}

// ---- CUDA graphs

struct KGraph {
    cudaGraphExec_t exec;
};

extern "C" void kgraph_capture_begin(KStream *s) {
    // Thread-local: another thread's unrelated CUDA calls (a second runner, a test) do not
    // invalidate this capture; this thread must not touch the default stream meanwhile.
    CUDA_CHECK(cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal));
}

extern "C" KGraph *kgraph_capture_end(KStream *s) {
    cudaGraph_t graph;
    CUDA_CHECK(cudaStreamEndCapture(s->stream, &graph));
    KGraph *g = (KGraph *)xcalloc(1, sizeof(KGraph));
    CUDA_CHECK(cudaGraphInstantiate(&g->exec, graph, 0));
    CUDA_CHECK(cudaGraphDestroy(graph));
    // Upload now, so that the first replay in the step loop costs what the others cost.
    CUDA_CHECK(cudaGraphUpload(g->exec, s->stream));
    return g;
}

extern "C" void kgraph_launch(KGraph *g, KStream *s) {
    CUDA_CHECK(cudaGraphLaunch(g->exec, s->stream));
}

extern "C" void kgraph_free(KGraph *g) {
    if (!g) return;
    CUDA_CHECK(cudaGraphExecDestroy(g->exec));
    free(g);
}
