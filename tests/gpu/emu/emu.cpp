// emu.cpp: the SIMT emulator behind tests/gpu/emu/run.sh (see shim/emu.h): fibers with a
// hand-written x86-64 stack switch, the rendezvous that stand in for barriers and warp-wide
// instructions, and the subsets of the CUDA runtime and cuBLAS that kernels/cuda uses. Blocks run
// one after another; a block's threads run round-robin, each until it waits at a rendezvous.
// "Device" memory is host memory (so ASan sees kernels' out-of-bounds accesses) and launches
// complete before they return.
#include "emu.h"

#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

extern "C" void emu_ctx_switch(void **save_sp, void *new_sp);
asm(R"(
.text
.globl emu_ctx_switch
.type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
)");

#define EMU_STACK (256 * 1024) // per CUDA thread; the kernels' frames are small

struct EmuFiber {
    void *sp;
    char *stack;
    uint3e tid;
    bool done;
};

EmuFiber *emu_cur_fiber;
uint3e emu_block_idx;
dim3 emu_block_dim, emu_grid_dim;

static std::vector<EmuFiber> fibers;
static void *sched_sp;
static std::function<void()> *cur_body;
static int n_threads, n_exited;
static unsigned blk_count, blk_gen;
static std::vector<unsigned> warp_count, warp_gen, warp_exited;
static std::vector<uint64_t> warp_slots;
static std::vector<uint64_t> warp_big;
static uint64_t progress;
alignas(16) static char dyn_smem[256 * 1024];
#ifdef EMU_ASAN
static void *sched_fake;
static const void *sched_bottom;
static size_t sched_size;
#endif

uint3e &emu_thread_idx() { return emu_cur_fiber->tid; }
void *emu_dyn_smem() { return dyn_smem; }
unsigned emu_lane() { return emu_cur_fiber->tid.x & 31; }
uint64_t *emu_warp_slots() { return &warp_slots[(emu_cur_fiber->tid.x >> 5) * 32]; }
void *emu_warp_big_slots() { return &warp_big[(emu_cur_fiber->tid.x >> 5) * 32 * 8]; }

static void yield() {
    EmuFiber *me = emu_cur_fiber;
#ifdef EMU_ASAN
    void *fake;
    __sanitizer_start_switch_fiber(&fake, sched_bottom, sched_size);
#endif
    emu_ctx_switch(&me->sp, sched_sp);
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    emu_cur_fiber = me;
}

void __syncthreads() {
    unsigned g = blk_gen;
    if (++blk_count == (unsigned)(n_threads - n_exited)) {
        blk_count = 0, blk_gen++, progress++;
        return;
    }
    while (blk_gen == g) yield();
}

void emu_warp_barrier() {
    unsigned w = emu_cur_fiber->tid.x >> 5, g = warp_gen[w];
    int lanes = std::min(32, n_threads - (int)w * 32) - (int)warp_exited[w];
    if (++warp_count[w] == (unsigned)lanes) {
        warp_count[w] = 0, warp_gen[w]++, progress++;
        return;
    }
    while (warp_gen[w] == g) yield();
}

static void fiber_entry() {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &sched_bottom, &sched_size);
#endif
    (*cur_body)();
    EmuFiber *me = emu_cur_fiber;
    me->done = true;
    n_exited++, progress++;
    warp_exited[me->tid.x >> 5]++;
    // A barrier may now be complete without this thread.
    if (blk_count && blk_count == (unsigned)(n_threads - n_exited)) blk_count = 0, blk_gen++;
    unsigned w = me->tid.x >> 5;
    int lanes = std::min(32, n_threads - (int)w * 32) - (int)warp_exited[w];
    if (warp_count[w] && warp_count[w] == (unsigned)lanes) warp_count[w] = 0, warp_gen[w]++;
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, sched_bottom, sched_size);
#endif
    void *dummy;
    emu_ctx_switch(&dummy, sched_sp);
    abort();
}

static void fiber_init(EmuFiber &f) {
    if (!f.stack) f.stack = (char *)aligned_alloc(16, EMU_STACK);
#ifdef EMU_ASAN
    __asan_unpoison_memory_region(f.stack, EMU_STACK); // a finished fiber leaves its frames poisoned
#endif
    uint64_t *top = (uint64_t *)(f.stack + EMU_STACK);
    top[-1] = 0;
    top[-2] = (uint64_t)(void *)fiber_entry;
    for (int i = 3; i <= 8; i++) top[-i] = 0;
    f.sp = &top[-8];
    f.done = false;
}

static void emu_launch_now(dim3 grid, dim3 block, size_t smem, std::function<void()> body) {
    if (smem > sizeof(dyn_smem)) { fprintf(stderr, "emu: %zu bytes of dynamic smem\n", smem); abort(); }
    int n = (int)(block.x * block.y * block.z);
    if (n > 1024 || block.y != 1 || block.z != 1) { fprintf(stderr, "emu: block %u x %u x %u\n", block.x, block.y, block.z); abort(); }
    emu_grid_dim = grid, emu_block_dim = block;
    if ((int)fibers.size() < n) fibers.resize(n, EmuFiber{nullptr, nullptr, {0, 0, 0}, false});
    int n_warps = (n + 31) / 32;
    warp_slots.assign(n_warps * 32, 0), warp_big.assign(n_warps * 32 * 8, 0);
    cur_body = &body;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                emu_block_idx = {bx, by, bz};
                n_threads = n, n_exited = 0, blk_count = 0, blk_gen = 0;
                warp_count.assign(n_warps, 0), warp_gen.assign(n_warps, 0), warp_exited.assign(n_warps, 0);
                memset(dyn_smem, 0xA5, std::min(smem, sizeof(dyn_smem))); // garbage, not zeros
                for (int i = 0; i < n; i++) fiber_init(fibers[i]), fibers[i].tid = {(unsigned)i, 0, 0};
                int alive = n;
                uint64_t last = progress, idle = 0;
                while (alive > 0) {
                    for (int i = 0; i < n; i++) {
                        if (fibers[i].done) continue;
                        emu_cur_fiber = &fibers[i];
#ifdef EMU_ASAN
                        void *fake;
                        __sanitizer_start_switch_fiber(&fake, fibers[i].stack, EMU_STACK);
#endif
                        emu_ctx_switch(&sched_sp, fibers[i].sp);
#ifdef EMU_ASAN
                        __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
                        if (fibers[i].done) alive--;
                    }
                    if (progress == last) {
                        if (++idle > 3) { fprintf(stderr, "emu: deadlock in block (%u,%u)\n", bx, by); abort(); }
                    } else {
                        last = progress, idle = 0;
                    }
                }
            }
}

// ---- runtime
float __half2float(__half h) {
    uint32_t sign = (uint32_t)(h.x & 0x8000) << 16, e = (h.x >> 10) & 0x1f, m = h.x & 0x3ff;
    if (e == 0x1f) return __uint_as_float(sign | 0x7f800000 | m << 13);
    if (e) return __uint_as_float(sign | (e + 112) << 23 | m << 13);
    float f = (float)m * 0x1p-24f;
    return __uint_as_float(sign | __float_as_uint(f));
}
const char *cudaGetErrorString(cudaError_t) { return "emu error"; }
const char *cudaGetErrorName(cudaError_t) { return "emuError"; }
cudaError_t cudaGetLastError() { return 0; }
cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return 0; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) {
    memset(p, 0, sizeof(*p));
    strcpy(p->name, "SIMT emulator (H100-shaped)");
    p->major = 9, p->minor = 0, p->multiProcessorCount = 132;
    return 0;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { *s = (cudaStream_t)malloc(1); return 0; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return 0; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { free(s); return 0; }
cudaError_t cudaMalloc(void **p, size_t n) { if (posix_memalign(p, 256, n ? n : 1)) abort(); memset(*p, 0x5A, n); return 0; }
cudaError_t cudaFree(void *p) { free(p); return 0; }
cudaError_t cudaMallocHost(void **p, size_t n) { return cudaMalloc(p, n); }
cudaError_t cudaFreeHost(void *p) { free(p); return 0; }
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind) { memmove(d, s, n); return 0; }

cudaError_t cudaMemset(void *d, int v, size_t n) { memset(d, v, n); return 0; }

cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = (cudaEvent_t)malloc(1); return 0; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return 0; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return 0; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t, cudaEvent_t) { *ms = 1; return 0; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return 0; }

// ---- cuBLAS: C (m x n, ldc) = op(A) op(B), column-major, for the one form matmul.cu uses
const char *cublasGetStatusString(cublasStatus_t) { return "emu"; }
cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = (cublasHandle_t)malloc(1); return 0; }
cublasStatus_t cublasDestroy(cublasHandle_t h) { free(h); return 0; }
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return 0; }
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void *, size_t) { return 0; }
static cublasStatus_t gemm_now(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t,
                            cublasGemmAlgo_t) {
    if (ta != CUBLAS_OP_T || tb != CUBLAS_OP_N || at != CUDA_R_16BF || bt != CUDA_R_16BF || ct != CUDA_R_32F) abort();
    const uint16_t *a = (const uint16_t *)A, *b = (const uint16_t *)B;
    float al = *(const float *)alpha, be = *(const float *)beta;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float s = 0;
            for (int p = 0; p < k; p++)
                s += __uint_as_float((uint32_t)a[(size_t)i * lda + p] << 16) * __uint_as_float((uint32_t)b[(size_t)j * ldb + p] << 16);
            float *c = (float *)C + (size_t)j * ldc + i;
            *c = al * s + (be != 0 ? be * *c : 0.0f);
        }
    return 0;
}

// ---- device memory info and CUDA graphs (engine/gpu_runner.c)
#include <vector>
struct EmuGraph { std::vector<std::function<void()>> nodes; };
static EmuGraph *capturing;
int emu_graph_launches, emu_graph_nodes;
void emu_launch(dim3 grid, dim3 block, size_t smem, std::function<void()> body) {
    if (capturing) { capturing->nodes.push_back([=]() { emu_launch_now(grid, block, smem, body); }); return; }
    emu_launch_now(grid, block, smem, body);
}
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t cp,
                            cublasGemmAlgo_t al) {
    if (capturing) {
        float a = *(const float *)alpha, b = *(const float *)beta;
        capturing->nodes.push_back([=]() { gemm_now(h, ta, tb, m, n, k, &a, A, at, lda, B, bt, ldb, &b, C, ct, ldc, cp, al); });
        return 0;
    }
    return gemm_now(h, ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc, cp, al);
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t) {
    if (capturing) { capturing->nodes.push_back([=]() { cudaMemcpy(d, s, n, k); }); return 0; }
    return cudaMemcpy(d, s, n, k);
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t) {
    if (capturing) { capturing->nodes.push_back([=]() { cudaMemset(d, v, n); }); return 0; }
    return cudaMemset(d, v, n);
}
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) { *t = (size_t)6 << 30; *f = *t - ((size_t)100 << 20); return 0; }
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) { if (capturing) abort(); capturing = new EmuGraph; return 0; }
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g) { if (!capturing) abort(); *g = capturing; capturing = nullptr; return 0; }
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long) { *e = new EmuGraph(*g); return 0; }
cudaError_t cudaGraphDestroy(cudaGraph_t g) { delete g; return 0; }
cudaError_t cudaGraphUpload(cudaGraphExec_t, cudaStream_t) { return 0; }
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
    if (capturing) abort();
    emu_graph_launches++;
    for (auto &n : e->nodes) { emu_graph_nodes++; n(); }
    return 0;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) { delete e; return 0; }
