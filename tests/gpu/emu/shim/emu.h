// emu.h: a host-side SIMT emulation of the CUDA subset kernels/cuda uses (tests/gpu/emu/run.sh).
// Each CUDA thread is a fiber; a block's fibers run round-robin on one OS thread; barriers,
// shuffles and warp-wide PTX (ldmatrix, mma: ptx_emu.cuh) are rendezvous points. Launches run
// synchronously. The shim/cuda_*.h and cublas_v2.h headers include this one in place of CUDA's.
#pragma once
#include <algorithm>
#include <cmath>
#include <math.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3e { unsigned x, y, z; };

struct EmuFiber;
extern EmuFiber *emu_cur_fiber;
extern uint3e emu_block_idx;
extern dim3 emu_block_dim, emu_grid_dim;
uint3e &emu_thread_idx();
#define threadIdx (emu_thread_idx())
#define blockIdx (emu_block_idx)
#define blockDim (emu_block_dim)
#define gridDim (emu_grid_dim)

struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float a, float b) { return {a, b}; }
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }

struct __nv_bfloat16 { uint16_t x; };
struct __half { uint16_t x; };

template <class T> inline T emu_bits(const void *p) { T v; memcpy(&v, p, sizeof v); return v; }
inline float __uint_as_float(uint32_t u) { return emu_bits<float>(&u); }
inline uint32_t __float_as_uint(float f) { return emu_bits<uint32_t>(&f); }
inline float __int_as_float(int i) { return emu_bits<float>(&i); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t x = __float_as_uint(f);
    if ((x & 0x7fffffff) > 0x7f800000) return {(uint16_t)((x >> 16) | 0x40)};
    x += 0x7fff + ((x >> 16) & 1);
    return {(uint16_t)(x >> 16)};
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.x; }
inline __half __ushort_as_half(unsigned short u) { return {u}; }
float __half2float(__half h);
inline unsigned long long __double2ull_rn(double d) { return (unsigned long long)nearbyint(d); }
inline unsigned long long __double2ull_rd(double d) { return (unsigned long long)floor(d); }
template <class T> inline T __ldg(const T *p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline size_t __cvta_generic_to_shared(const void *p);

inline int atomicAdd(int *p, int v) { int o = *p; *p += v; return o; }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) { auto o = *p; *p += v; return o; }

// ---- rendezvous
void __syncthreads();
void emu_warp_barrier();
uint64_t *emu_warp_slots(); // 32 x 8 bytes of the current warp
unsigned emu_lane();
template <class T> inline T emu_exchange(T v, int src_lane) {
    static_assert(sizeof(T) <= 8, "8 bytes at most");
    uint64_t *slots = emu_warp_slots();
    memcpy(&slots[emu_lane()], &v, sizeof(T));
    emu_warp_barrier();
    T r;
    memcpy(&r, &slots[src_lane], sizeof(T));
    emu_warp_barrier();
    return r;
}
template <class T> inline T __shfl_xor_sync(unsigned, T v, int m) { return emu_exchange(v, (int)(emu_lane() ^ (unsigned)m)); }
template <class T> inline T __shfl_sync(unsigned, T v, int src) { return emu_exchange(v, src & 31); }
template <class T> inline T __shfl_up_sync(unsigned, T v, unsigned d) {
    int l = (int)emu_lane();
    return emu_exchange(v, l >= (int)d ? l - (int)d : l);
}

// ---- launches
void emu_launch(dim3 grid, dim3 block, size_t smem, std::function<void()> body);
void *emu_dyn_smem();
inline size_t __cvta_generic_to_shared(const void *p) { return (size_t)((const char *)p - (const char *)emu_dyn_smem()); }

// ---- runtime API subset
typedef int cudaError_t;
#define cudaSuccess 0
typedef struct EmuStream *cudaStream_t;
typedef struct EmuEvent *cudaEvent_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
#define cudaStreamNonBlocking 1
#define cudaEventDisableTiming 2
struct cudaDeviceProp { char name[256]; int major, minor, multiProcessorCount; };
const char *cudaGetErrorString(cudaError_t);
const char *cudaGetErrorName(cudaError_t);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int *);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *, int);
cudaError_t cudaStreamCreate(cudaStream_t *);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *, unsigned);
cudaError_t cudaStreamSynchronize(cudaStream_t);
cudaError_t cudaStreamDestroy(cudaStream_t);
cudaError_t cudaMalloc(void **, size_t);
template <class T> cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }
cudaError_t cudaFree(void *);
cudaError_t cudaMallocHost(void **, size_t);
cudaError_t cudaFreeHost(void *);
cudaError_t cudaMemcpy(void *, const void *, size_t, cudaMemcpyKind);
cudaError_t cudaMemcpyAsync(void *, const void *, size_t, cudaMemcpyKind, cudaStream_t);
cudaError_t cudaMemset(void *, int, size_t);
cudaError_t cudaMemsetAsync(void *, int, size_t, cudaStream_t);
cudaError_t cudaEventCreate(cudaEvent_t *);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *, unsigned);
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t);
cudaError_t cudaEventSynchronize(cudaEvent_t);
cudaError_t cudaEventElapsedTime(float *, cudaEvent_t, cudaEvent_t);
cudaError_t cudaEventDestroy(cudaEvent_t);
template <class F> cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }

// ---- cuBLAS subset
typedef struct EmuCublas *cublasHandle_t;
typedef int cublasStatus_t;
#define CUBLAS_STATUS_SUCCESS 0
enum cublasOperation_t { CUBLAS_OP_N, CUBLAS_OP_T };
enum cudaDataType { CUDA_R_16BF, CUDA_R_32F };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT };
const char *cublasGetStatusString(cublasStatus_t);
cublasStatus_t cublasCreate(cublasHandle_t *);
cublasStatus_t cublasDestroy(cublasHandle_t);
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t);
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void *, size_t);
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t, cublasOperation_t, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType, int lda, const void *B, cudaDataType,
                            int ldb, const void *beta, void *C, cudaDataType, int ldc, cublasComputeType_t,
                            cublasGemmAlgo_t);

// ---- device memory info and CUDA graphs (engine/gpu_runner.c) (capture records launches,
// cuBLAS calls, copies and fills; a replay runs them again with the arguments they had)
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal, cudaStreamCaptureModeRelaxed };
typedef struct EmuGraph *cudaGraph_t;
typedef struct EmuGraph *cudaGraphExec_t;
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode);
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *, cudaGraph_t, unsigned long long);
cudaError_t cudaGraphDestroy(cudaGraph_t);
cudaError_t cudaGraphUpload(cudaGraphExec_t, cudaStream_t);
cudaError_t cudaGraphLaunch(cudaGraphExec_t, cudaStream_t);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t);
extern int emu_graph_launches, emu_graph_nodes;
