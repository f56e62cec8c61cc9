// attention_prefill.cuh: the prefill half of attention.cu (included there, after AttnArgs).
//
// One thread block per (query head, tile of KATTN_BQ query rows of one sequence); 4 warps, each
// owning 16 query rows. FlashAttention-2's loop: for each tile of KATTN_BK keys (positions 0 ..
// the tile's last position, through the block table),
//   S = Q Kᵀ on the tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate),
//   scale, causal mask by position, online softmax per row in registers,
//   O += P V with P converted in registers from S's accumulator layout to an A operand.
// K and V tiles are gathered with cp.async (16 bytes a copy, zero-filled past the last key) into
// two shared-memory stages, so tile k+1 loads while tile k computes. Rows are padded by 16 bytes
// so ldmatrix's eight row addresses fall in different banks.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16): lane = 4 g + t4.
//   A 16x16 (row): a0 (g, 2t4..+1), a1 (g+8, 2t4..), a2 (g, 2t4+8..), a3 (g+8, 2t4+8..)
//   B 16x8 (col):  b0 (k 2t4..+1, n g), b1 (k 2t4+8..+9, n g)
//   C 16x8:        c0 c1 (g, 2t4..+1), c2 c3 (g+8, 2t4..+1)
// so the C fragments of key tiles 2kk and 2kk+1 are, packed to bf16, the A fragment of P for
// keys 16kk..16kk+15. K rows [key][d] are B for S directly (ldmatrix); V rows [key][d] are B
// for O transposed (ldmatrix .trans).
#pragma once

#include "kernels/cuda/ptx.cuh"

template <int HD>
struct PrefillShape {
    static constexpr int LDS = HD + 8;                        // shared row stride, elements
    static constexpr int STAGE = KATTN_BK * LDS;              // one K or V tile
    static constexpr int SMEM_BYTES = 4 * STAGE * 2;          // K and V, two stages, bf16
};

template <int HD>
__global__ void __launch_bounds__(KATTN_THREADS) attn_prefill_kernel(const AttnArgs a) {
    using S = PrefillShape<HD>;
    constexpr int LDS = S::LDS, CHUNKS = HD / 8, NT = KATTN_BK / 8, KS = HD / 16;
    extern __shared__ uint4 prefill_smem[];
    uint16_t *sk = (uint16_t *)prefill_smem, *sv = sk + 2 * S::STAGE;

    const int h = blockIdx.x, kvh = h / a.group;
    const PrefillTile tile = a.tiles[blockIdx.y];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const int rend = tile.row0 + tile.n_rows;
    const int r0 = tile.row0 + warp * 16 + g, r1 = r0 + 8;
    // A row past the tile gets position -1: every key is masked and nothing is written.
    const int pos0 = r0 < rend ? a.positions[r0] : -1, pos1 = r1 < rend ? a.positions[r1] : -1;

    // Q as A fragments, bf16, for the whole loop.
    uint32_t qf[KS][4];
    {
        const float *q0 = a.q + ((size_t)r0 * a.n_heads + h) * HD, *q1 = a.q + ((size_t)r1 * a.n_heads + h) * HD;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            int c = 16 * kk + 2 * t4;
            float2 x00 = make_float2(0, 0), x01 = x00, x10 = x00, x11 = x00;
            if (pos0 >= 0) x00 = *(const float2 *)(q0 + c), x01 = *(const float2 *)(q0 + c + 8);
            if (pos1 >= 0) x10 = *(const float2 *)(q1 + c), x11 = *(const float2 *)(q1 + c + 8);
            qf[kk][0] = pack_bf16x2(x00.x, x00.y);
            qf[kk][1] = pack_bf16x2(x10.x, x10.y);
            qf[kk][2] = pack_bf16x2(x01.x, x01.y);
            qf[kk][3] = pack_bf16x2(x11.x, x11.y);
        }
    }
    float o[HD / 8][4];
#pragma unroll
    for (int j = 0; j < HD / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

    const int *bt = a.block_tables + (size_t)tile.seq * a.max_blocks;
    const int n_keys = tile.max_pos + 1, n_kt = (n_keys + KATTN_BK - 1) / KATTN_BK;
    // With a window, keys before the first row's window are neither read (their blocks may be
    // gone from the table: zero-filled instead) nor looped over (tiles before k_lo's)
    const int k_lo = a.window > 0 ? max(0, tile.min_pos - a.window + 1) : 0, kt0 = k_lo / KATTN_BK;
    const size_t kv_stride = (size_t)a.n_kv * HD;
    const uint16_t *kb = a.kc + (size_t)kvh * HD, *vb = a.vc + (size_t)kvh * HD;

    auto load_tile = [&](int kt, int stage) {
        for (int c = threadIdx.x; c < KATTN_BK * CHUNKS; c += KATTN_THREADS) {
            int key = c / CHUNKS, part = c % CHUNKS, p = kt * KATTN_BK + key;
            size_t off = 0;
            bool in = p < n_keys && p >= k_lo;
            if (in) off = (size_t)(bt[p / a.block_size] * a.block_size + p % a.block_size) * kv_stride + part * 8;
            int bytes = in ? 16 : 0;
            int so = (stage * KATTN_BK + key) * LDS + part * 8;
            cp_async16(smem_addr(sk + so), kb + off, bytes);
            cp_async16(smem_addr(sv + so), vb + off, bytes);
        }
    };

    load_tile(kt0, kt0 & 1);
    cp_async_commit();
    for (int kt = kt0; kt < n_kt; kt++) {
        if (kt + 1 < n_kt) {
            load_tile(kt + 1, (kt + 1) & 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const uint16_t *ks = sk + (kt & 1) * S::STAGE, *vs = sv + (kt & 1) * S::STAGE;

        // S = Q Kᵀ: 16 rows x KATTN_BK keys per warp.
        float s[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk += 2) {
#pragma unroll
            for (int j = 0; j < NT; j++) {
                uint32_t b[4];
                ldmatrix_x4(b, smem_addr(ks + (8 * j + (lane & 7)) * LDS + 16 * kk + 8 * (lane >> 3)));
                mma_bf16_16816(s[j], qf[kk], b[0], b[1]);
                mma_bf16_16816(s[j], qf[kk + 1], b[2], b[3]);
            }
        }

        // Scale, mask (key position <= the row's position), online softmax.
        const int kbase = kt * KATTN_BK + 2 * t4;
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int j = 0; j < NT; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = kbase + 8 * j + (e & 1), pos = e < 2 ? pos0 : pos1;
                bool ok = key <= pos && (a.window == 0 || key > pos - a.window);
                s[j][e] = ok ? attn_softcap(s[j][e] * a.scale_log2, a.cap_log2) : -INFINITY;
            }
            mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
            mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
        }
#pragma unroll
        for (int o4 = 1; o4 < 4; o4 <<= 1) { // the 4 lanes of a quad share rows g and g + 8
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o4));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o4));
        }
        float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        float mb0 = mn0 == -INFINITY ? 0.0f : mn0, mb1 = mn1 == -INFINITY ? 0.0f : mn1;
        float c0 = exp2f(m0 - mb0), c1 = exp2f(m1 - mb1);
        m0 = mn0, m1 = mn1;
        l0 *= c0, l1 *= c1;
#pragma unroll
        for (int j = 0; j < HD / 8; j++) o[j][0] *= c0, o[j][1] *= c0, o[j][2] *= c1, o[j][3] *= c1;
        uint32_t pa[KATTN_BK / 16][4];
#pragma unroll
        for (int j = 0; j < NT; j++) {
            float p0 = exp2f(s[j][0] - mb0), p1 = exp2f(s[j][1] - mb0);
            float p2 = exp2f(s[j][2] - mb1), p3 = exp2f(s[j][3] - mb1);
            l0 += p0 + p1, l1 += p2 + p3;
            pa[j / 2][(j & 1) * 2 + 0] = pack_bf16x2(p0, p1);
            pa[j / 2][(j & 1) * 2 + 1] = pack_bf16x2(p2, p3);
        }

        // O += P V.
#pragma unroll
        for (int kk = 0; kk < KATTN_BK / 16; kk++) {
#pragma unroll
            for (int jd = 0; jd < HD / 16; jd++) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, smem_addr(vs + (16 * kk + 8 * ((lane >> 3) & 1) + (lane & 7)) * LDS + 16 * jd +
                                               8 * (lane >> 4)));
                mma_bf16_16816(o[2 * jd], pa[kk], b[0], b[1]);
                mma_bf16_16816(o[2 * jd + 1], pa[kk], b[2], b[3]);
            }
        }
        __syncthreads(); // every warp is done with this stage before it is refilled
    }

#pragma unroll
    for (int o4 = 1; o4 < 4; o4 <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, o4);
        l1 += __shfl_xor_sync(0xffffffffu, l1, o4);
    }
    if (pos0 >= 0) {
        float *dst = a.out + ((size_t)r0 * a.n_heads + h) * HD + 2 * t4;
        float inv = 1.0f / l0;
#pragma unroll
        for (int j = 0; j < HD / 8; j++) *(float2 *)(dst + 8 * j) = make_float2(o[j][0] * inv, o[j][1] * inv);
    }
    if (pos1 >= 0) {
        float *dst = a.out + ((size_t)r1 * a.n_heads + h) * HD + 2 * t4;
        float inv = 1.0f / l1;
#pragma unroll
        for (int j = 0; j < HD / 8; j++) *(float2 *)(dst + 8 * j) = make_float2(o[j][2] * inv, o[j][3] * inv);
    }
}

// Above 48 KiB of dynamic shared memory a kernel must opt in, per device: kattn_plan_create
// calls this on the device the plan is for (each tensor-parallel rank makes its own plan).
static void attn_prefill_opt_in(void) {
    CUDA_CHECK(cudaFuncSetAttribute(attn_prefill_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    PrefillShape<64>::SMEM_BYTES));
    CUDA_CHECK(cudaFuncSetAttribute(attn_prefill_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    PrefillShape<128>::SMEM_BYTES));
}

template <int HD>
static void attn_prefill_launch(const AttnArgs &a, int n_tiles, cudaStream_t st) {
    CHECK(n_tiles <= 65535, "%d prefill tiles", n_tiles);
    attn_prefill_kernel<HD><<<dim3(a.n_heads, n_tiles), KATTN_THREADS, PrefillShape<HD>::SMEM_BYTES, st>>>(a);
    CUDA_CHECK_LAUNCH();
}
