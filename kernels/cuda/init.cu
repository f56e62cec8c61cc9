// init.cu: the device, streams, memory and events behind cuda_ops.h (the CUDA side of
// kernels/cpu/init.c: what every op draws on, set up once so that no op allocates).
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/kcuda.cuh"

// cuBLAS needs a workspace for its faster kernels; 32 MiB is what it asks for on Hopper.
#define KCUDA_CUBLAS_WS_BYTES (32u << 20)

// ---- the device

static struct {
    bool probed, ok;
    char reason[384]; // room for the longest device name
    cudaDeviceProp prop;
} kdev;

static void kcuda_probe(void) {
    if (kdev.probed) return;
    kdev.probed = true;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(kdev.reason, sizeof(kdev.reason), "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        cudaGetLastError(); // clear it: the probe must leave no error behind
        return;
    }
    if (n == 0) {
        snprintf(kdev.reason, sizeof(kdev.reason), "the driver sees no device");
        return;
    }
    if (cudaGetDeviceProperties(&kdev.prop, 0) != cudaSuccess) {
        snprintf(kdev.reason, sizeof(kdev.reason), "device 0: properties unreadable");
        cudaGetLastError();
        return;
    }
    if (kdev.prop.major < 9) {
        snprintf(kdev.reason, sizeof(kdev.reason), "device 0 (%s) is sm_%d%d; built for sm_90",
                 kdev.prop.name, kdev.prop.major, kdev.prop.minor);
        return;
    }
    kdev.ok = true;
}

extern "C" bool kcuda_available(void) {
    kcuda_probe();
    return kdev.ok;
}

extern "C" const char *kcuda_unavailable_reason(void) {
    kcuda_probe();
    return kdev.ok ? "" : kdev.reason;
}

extern "C" const char *kcuda_device_name(void) {
    CHECK(kcuda_available(), "%s", kdev.reason);
    return kdev.prop.name;
}

extern "C" int kcuda_sm_count(void) {
    CHECK(kcuda_available(), "%s", kdev.reason);
    return kdev.prop.multiProcessorCount;
}

// ---- streams

extern "C" KStream *kstream_create(int max_tokens, int max_cols) {
    CHECK(kcuda_available(), "%s", kdev.reason);
    CHECK(max_tokens >= 1 && max_cols >= 1, "(%d tokens, %d cols)", max_tokens, max_cols);
    KStream *s = (KStream *)xcalloc(1, sizeof(KStream));
    // A blocking stream: the synchronous copies (kdev_memcpy_* with no stream) run on the legacy
    // default stream, which then waits for this stream's work, so a sync copy sees its results.
    CUDA_CHECK(cudaStreamCreate(&s->stream));
    CUBLAS_CHECK(cublasCreate(&s->cublas));
    CUBLAS_CHECK(cublasSetStream(s->cublas, s->stream));
    s->cublas_ws_bytes = KCUDA_CUBLAS_WS_BYTES;
    CUDA_CHECK(cudaMalloc(&s->cublas_ws, s->cublas_ws_bytes));
    CUBLAS_CHECK(cublasSetWorkspace(s->cublas, s->cublas_ws, s->cublas_ws_bytes));
    s->max_tokens = max_tokens;
    s->max_cols = max_cols;
    CUDA_CHECK(cudaMalloc(&s->xbf, (size_t)max_tokens * max_cols * sizeof(__nv_bfloat16)));
    return s;
}

extern "C" void kstream_sync(KStream *s) {
    CUDA_CHECK(cudaStreamSynchronize(kstream_of(s)));
}

extern "C" void kstream_free(KStream *s) {
    if (!s) return;
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    CUBLAS_CHECK(cublasDestroy(s->cublas));
    CUDA_CHECK(cudaFree(s->cublas_ws));
    CUDA_CHECK(cudaFree(s->xbf));
    CUDA_CHECK(cudaStreamDestroy(s->stream));
    free(s);
}

// ---- memory

extern "C" void *kdev_malloc(size_t bytes) {
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    return p;
}

extern "C" void kdev_free(void *p) {
    if (p) CUDA_CHECK(cudaFree(p));
}

extern "C" void *kdev_malloc_host(size_t bytes) {
    void *p = NULL;
    CUDA_CHECK(cudaMallocHost(&p, bytes ? bytes : 1));
    return p;
}

extern "C" void kdev_free_host(void *p) {
    if (p) CUDA_CHECK(cudaFreeHost(p));
}

static void kdev_copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, KStream *s) {
    if (bytes == 0) return;
    if (s) {
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, s->stream));
    } else {
        CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
    }
}

extern "C" void kdev_memcpy_h2d(void *dst, const void *src, size_t bytes, KStream *s) {
    kdev_copy(dst, src, bytes, cudaMemcpyHostToDevice, s);
}

extern "C" void kdev_memcpy_d2h(void *dst, const void *src, size_t bytes, KStream *s) {
    kdev_copy(dst, src, bytes, cudaMemcpyDeviceToHost, s);
}

extern "C" void kdev_memcpy_d2d(void *dst, const void *src, size_t bytes, KStream *s) {
    kdev_copy(dst, src, bytes, cudaMemcpyDeviceToDevice, s);
}

extern "C" void kdev_memset(void *dst, int byte, size_t bytes, KStream *s) {
    if (bytes == 0) return;
    if (s) {
        CUDA_CHECK(cudaMemsetAsync(dst, byte, bytes, s->stream));
    } else {
        CUDA_CHECK(cudaMemset(dst, byte, bytes));
    }
}

// ---- events

struct KEvent {
    cudaEvent_t e;
};

extern "C" KEvent *kevent_create(void) {
    KEvent *e = (KEvent *)xcalloc(1, sizeof(KEvent));
    CUDA_CHECK(cudaEventCreate(&e->e));
    return e;
}

extern "C" void kevent_record(KEvent *e, KStream *s) {
    CUDA_CHECK(cudaEventRecord(e->e, kstream_of(s)));
}

extern "C" float kevent_elapsed_ms(KEvent *start, KEvent *end) {
    float ms = 0;
    CUDA_CHECK(cudaEventSynchronize(end->e));
    CUDA_CHECK(cudaEventElapsedTime(&ms, start->e, end->e));
    return ms;
}

extern "C" void kevent_free(KEvent *e) {
    if (!e) return;
    CUDA_CHECK(cudaEventDestroy(e->e));
    free(e);
}
