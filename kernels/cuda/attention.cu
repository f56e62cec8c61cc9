// attention.cu: paged causal attention over the varlen Batch with GQA, twin of
// kernels/cpu/attention.c. Row t of sequence s at position p attends to cache positions 0..p of
// s (p - window + 1 .. p with a sliding window) through its block table; the rows of this step
// were written there by k_rope_kv_write_cuda. Soft-capped scores (Gemma 2) become
// cap · tanh(s / cap) before the softmax.
// The cache is bf16, [slot, kv head, head_dim]; slot = block * block_size + offset.
//
// A plan (built once per step on the host, shared by every layer) splits the rows two ways:
//
//  - decode: sequences with at most KATTN_DECODE_MAX_Q query rows. One thread block per
//    (row, KV head, slice of the context) reads each K and V row once for the whole group of
//    query heads that share it (GQA), 16 bytes a lane, and keeps an online softmax in fp32.
//    When the rows alone would not fill the GPU, long contexts are split into slices of `part`
//    positions (FlashDecoding): each slice writes its normalised output and (max, sum), and a
//    merge kernel combines them. Arithmetic is fp32 on the bf16 cache: against the twin on the
//    same (bf16-valued) cache the error is f32 rounding.
//
//  - prefill: the other sequences, in tiles of KATTN_BQ query rows of one head
//    (attention_prefill.cuh): FlashAttention-2 style on the tensor cores (mma.sync m16n8k16,
//    bf16 in, fp32 accumulate), K and V tiles gathered through the block table by cp.async into
//    a two-stage shared-memory pipeline, causal by position. Q and P are rounded to bf16, so
//    the error against the twin is that of bf16 operands (~1e-3 relative).
//
// Scores live in the exp2 domain (scale · log2 e folded in), as in FlashAttention.
#include <algorithm>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include "kernels/cuda/kcuda.cuh"

#define KATTN_THREADS 128
#define KATTN_DECODE_MAX_Q 4 // a sequence with at most this many query rows is decoding
#define KATTN_BQ 64          // prefill: query rows per tile (4 warps x 16)
#define KATTN_BK 64          // prefill: keys per tile
#define KATTN_MIN_PART 256   // decode: fewest positions in one slice of a split context
#define KATTN_PARTS_PER_SM 16 // decode: partial results the plan may hold, per multiprocessor

typedef struct {
    int row, seq;
    int start, end; // positions [start, end) of the row's context
    int part;       // its slot in the partial results, or -1: the slice is the whole context
} DecodeWork;

typedef struct {
    int row, first, n; // row's slices are partial results first .. first + n - 1
} MergeWork;

typedef struct {
    int seq, row0, n_rows, max_pos, min_pos;
} PrefillTile;

typedef struct {
    const float *q;
    float *out;
    const uint16_t *kc, *vc;
    const int *positions, *block_tables;
    int max_blocks, block_size, n_heads, n_kv, group, hchunks;
    float scale_log2;
    int window;     // 0: the whole context
    float cap_log2; // the soft-cap in the exp2 domain (cap · log2 e), 0: none
    const DecodeWork *work;
    const MergeWork *merge;
    const PrefillTile *tiles;
    float *part_o;   // [parts, n_heads, head_dim] each slice's normalised output
    float2 *part_ml; // [parts, n_heads] its (max, sum) in the exp2 domain
} AttnArgs;

// cap · tanh(s / cap) for a score s in the exp2 domain (cap_log2 = cap · log2 e): the same as
// capping the natural score and converting after.
__device__ __forceinline__ float attn_softcap(float s, float cap_log2) {
    return cap_log2 > 0.0f ? cap_log2 * tanhf(s / cap_log2) : s;
}

#include "kernels/cuda/attention_prefill.cuh"

// ---- decode

// GM: query heads per block (the group, or a chunk of it). Each lane holds 8 dims (16 bytes of
// bf16) of a key: LPK lanes read one key, so a warp reads KPW keys at once and each lane keeps
// U keys' loads in flight. Per lane: q and the accumulators of GM heads x 8 dims in registers.
template <int HD, int GM>
__global__ void __launch_bounds__(KATTN_THREADS) attn_decode_kernel(const AttnArgs a) {
    constexpr int LPK = HD / 8, KPW = 32 / LPK, NW = KATTN_THREADS / 32;
    constexpr int U = GM >= 8 ? 2 : 4;
    constexpr int STEP = NW * KPW; // keys the block reads at once
    __shared__ float s_acc[NW][GM][HD];
    __shared__ float s_m[NW][GM], s_l[NW][GM];

    const DecodeWork w = a.work[blockIdx.x];
    const int chunk = blockIdx.y % a.hchunks, kvh = blockIdx.y / a.hchunks;
    const int h0 = kvh * a.group + chunk * GM, nh = min(GM, a.group - chunk * GM);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, grp = lane / LPK, d0 = (lane % LPK) * 8;

    float qr[GM][8];
#pragma unroll
    for (int h = 0; h < GM; h++) {
        float4 x = make_float4(0, 0, 0, 0), y = x;
        if (h < nh) {
            const float4 *qp = (const float4 *)(a.q + ((size_t)w.row * a.n_heads + h0 + h) * HD + d0);
            x = qp[0], y = qp[1];
        }
        const float f[8] = {x.x, x.y, x.z, x.w, y.x, y.y, y.z, y.w};
#pragma unroll
        for (int j = 0; j < 8; j++) qr[h][j] = f[j] * a.scale_log2;
    }
    float m[GM], l[GM], acc[GM][8];
#pragma unroll
    for (int h = 0; h < GM; h++) {
        m[h] = -INFINITY, l[h] = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) acc[h][j] = 0.0f;
    }

    const int *bt = a.block_tables + (size_t)w.seq * a.max_blocks;
    const size_t kv_stride = (size_t)a.n_kv * HD;
    const uint16_t *kb = a.kc + (size_t)kvh * HD + d0, *vb = a.vc + (size_t)kvh * HD + d0;
    // The loop bound is the same for the whole warp (the shuffles below need every lane).
    for (int base = w.start + warp * KPW; base < w.end; base += STEP * U) {
        uint4 kr[U], vr[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int p = base + grp + u * STEP;
            kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
            if (p < w.end) {
                size_t off = (size_t)(bt[p / a.block_size] * a.block_size + p % a.block_size) * kv_stride;
                kr[u] = __ldg((const uint4 *)(kb + off));
                vr[u] = __ldg((const uint4 *)(vb + off));
            }
        }
        float s[U][GM];
#pragma unroll
        for (int u = 0; u < U; u++) {
            float kf[8];
            bf16x8_to_f32(kr[u], kf);
            bool ok = base + grp + u * STEP < w.end;
#pragma unroll
            for (int h = 0; h < GM; h++) {
                float dot = 0.0f;
#pragma unroll
                for (int j = 0; j < 8; j++) dot += qr[h][j] * kf[j];
#pragma unroll
                for (int o = LPK / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
                s[u][h] = ok ? attn_softcap(dot, a.cap_log2) : -INFINITY;
            }
        }
        // One rescale per U keys. A lane group whose keys all fell past the end keeps m = -inf;
        // mb = 0 then makes every factor 0 rather than NaN.
#pragma unroll
        for (int h = 0; h < GM; h++) {
            float mx = s[0][h];
#pragma unroll
            for (int u = 1; u < U; u++) mx = fmaxf(mx, s[u][h]);
            float mn = fmaxf(m[h], mx), mb = mn == -INFINITY ? 0.0f : mn;
            float c = exp2f(m[h] - mb);
            m[h] = mn;
            l[h] *= c;
#pragma unroll
            for (int j = 0; j < 8; j++) acc[h][j] *= c;
#pragma unroll
            for (int u = 0; u < U; u++) {
                s[u][h] = exp2f(s[u][h] - mb);
                l[h] += s[u][h];
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            float vf[8];
            bf16x8_to_f32(vr[u], vf);
#pragma unroll
            for (int h = 0; h < GM; h++)
#pragma unroll
                for (int j = 0; j < 8; j++) acc[h][j] += s[u][h] * vf[j];
        }
    }

    // Merge the lane groups of the warp (lanes LPK apart hold the same dims of other keys).
#pragma unroll
    for (int o = LPK; o < 32; o <<= 1) {
#pragma unroll
        for (int h = 0; h < GM; h++) {
            float mo = __shfl_xor_sync(0xffffffffu, m[h], o), lo = __shfl_xor_sync(0xffffffffu, l[h], o);
            float mn = fmaxf(m[h], mo), mb = mn == -INFINITY ? 0.0f : mn;
            float fa = exp2f(m[h] - mb), fb = exp2f(mo - mb);
            l[h] = l[h] * fa + lo * fb;
#pragma unroll
            for (int j = 0; j < 8; j++) acc[h][j] = acc[h][j] * fa + __shfl_xor_sync(0xffffffffu, acc[h][j], o) * fb;
            m[h] = mn;
        }
    }
    if (grp == 0) {
#pragma unroll
        for (int h = 0; h < GM; h++) {
#pragma unroll
            for (int j = 0; j < 8; j++) s_acc[warp][h][d0 + j] = acc[h][j];
            if (d0 == 0) s_m[warp][h] = m[h], s_l[warp][h] = l[h];
        }
    }
    __syncthreads();
    // Merge the warps and write: the final output, or this slice's part for the merge kernel.
    for (int i = threadIdx.x; i < nh * HD; i += KATTN_THREADS) {
        int h = i / HD, d = i % HD;
        float mx = -INFINITY, sum = 0.0f, o = 0.0f;
#pragma unroll
        for (int wi = 0; wi < NW; wi++) mx = fmaxf(mx, s_m[wi][h]);
#pragma unroll
        for (int wi = 0; wi < NW; wi++) {
            float f = exp2f(s_m[wi][h] - mx); // a slice is never empty, so mx is finite
            sum += s_l[wi][h] * f;
            o += s_acc[wi][h][d] * f;
        }
        if (w.part < 0) {
            a.out[((size_t)w.row * a.n_heads + h0 + h) * HD + d] = o / sum;
        } else {
            a.part_o[((size_t)w.part * a.n_heads + h0 + h) * HD + d] = o / sum;
            if (d == 0) a.part_ml[(size_t)w.part * a.n_heads + h0 + h] = make_float2(mx, sum);
        }
    }
}

// One block per (split row, head), one thread per dim: out = Σ wᵢ oᵢ / Σ wᵢ, wᵢ = lᵢ 2^(mᵢ - M).
__global__ void attn_merge_kernel(const AttnArgs a) {
    const MergeWork mw = a.merge[blockIdx.x];
    const int h = blockIdx.y, d = threadIdx.x, hd = blockDim.x;
    float mx = -INFINITY;
    for (int i = 0; i < mw.n; i++) mx = fmaxf(mx, a.part_ml[(size_t)(mw.first + i) * a.n_heads + h].x);
    float sum = 0.0f, o = 0.0f;
    for (int i = 0; i < mw.n; i++) {
        size_t pi = (size_t)(mw.first + i) * a.n_heads + h;
        float2 ml = a.part_ml[pi];
        float f = ml.y * exp2f(ml.x - mx);
        sum += f;
        o += f * a.part_o[pi * hd + d];
    }
    a.out[((size_t)mw.row * a.n_heads + h) * hd + d] = o / sum;
}

// ---- the plan

struct KAttnPlan {
    int max_tokens, n_heads, head_dim, n_sm;
    int cap_work, cap_parts;
    // The three lists, packed in one pinned host buffer and copied to one device buffer.
    char *h_buf, *d_buf;
    size_t off_merge, off_tiles, buf_bytes;
    cudaEvent_t uploaded; // the last upload, before the host buffer is rewritten
    bool upload_pending;
    float *part_o;
    float2 *part_ml;
    // this step's
    int n_kv, gm, hchunks, part, window;
    int n_work, n_merge, n_tiles, n_decode_rows;
};

extern "C" KAttnPlan *kattn_plan_create(int max_tokens, int n_heads, int head_dim) {
    CHECK(max_tokens >= 1 && n_heads >= 1 && (head_dim == 64 || head_dim == 128), "(%d tokens, %d heads of %d)",
          max_tokens, n_heads, head_dim);
    KAttnPlan *p = (KAttnPlan *)xcalloc(1, sizeof(KAttnPlan));
    p->max_tokens = max_tokens, p->n_heads = n_heads, p->head_dim = head_dim;
    p->n_sm = kcuda_sm_count();
    p->cap_parts = KATTN_PARTS_PER_SM * p->n_sm;
    p->cap_work = max_tokens + p->cap_parts; // each split adds at most one item per part
    p->off_merge = (size_t)p->cap_work * sizeof(DecodeWork);
    p->off_tiles = p->off_merge + (size_t)max_tokens * sizeof(MergeWork);
    p->buf_bytes = p->off_tiles + (size_t)max_tokens * sizeof(PrefillTile);
    p->h_buf = (char *)kdev_malloc_host(p->buf_bytes);
    p->d_buf = (char *)kdev_malloc(p->buf_bytes);
    p->part_o = (float *)kdev_malloc((size_t)p->cap_parts * n_heads * head_dim * sizeof(float));
    p->part_ml = (float2 *)kdev_malloc((size_t)p->cap_parts * n_heads * sizeof(float2));
    CUDA_CHECK(cudaEventCreateWithFlags(&p->uploaded, cudaEventDisableTiming));
    attn_prefill_opt_in();
    return p;
}

extern "C" void kattn_plan_free(KAttnPlan *p) {
    if (!p) return;
    CUDA_CHECK(cudaEventSynchronize(p->uploaded));
    CUDA_CHECK(cudaEventDestroy(p->uploaded));
    kdev_free_host(p->h_buf);
    kdev_free(p->d_buf);
    kdev_free(p->part_o);
    kdev_free(p->part_ml);
    free(p);
}

extern "C" void kattn_plan_counts(const KAttnPlan *p, int *decode_rows, int *decode_blocks, int *prefill_tiles) {
    if (decode_rows) *decode_rows = p->n_decode_rows;
    if (decode_blocks) *decode_blocks = p->n_work * p->n_kv * p->hchunks;
    if (prefill_tiles) *prefill_tiles = p->n_tiles * p->n_heads;
}

static int ceil_div(int a, int b) {
    return (a + b - 1) / b;
}

// The slice length for the decode rows: the longest that still gives the GPU two blocks per
// multiprocessor (fewer slices, less merging), within the partial results' room.
static int plan_choose_part(const KAttnPlan *p, const DecodeWork *rows, int n_rows) {
    int max_ctx = 0;
    for (int i = 0; i < n_rows; i++) max_ctx = std::max(max_ctx, rows[i].end - rows[i].start);
    int part = KATTN_MIN_PART;
    while (part < max_ctx) part *= 2;
    int chosen = part, per_slice = p->n_kv * p->hchunks, target = 2 * p->n_sm;
    for (; part >= KATTN_MIN_PART; part /= 2) {
        long slices = 0, parts = 0;
        for (int i = 0; i < n_rows; i++) {
            int n = ceil_div(rows[i].end - rows[i].start, part);
            slices += n;
            if (n > 1) parts += n;
        }
        if (parts > p->cap_parts) break;
        chosen = part;
        if (slices * per_slice >= target) break;
    }
    return chosen;
}

static bool tile_heavier(const PrefillTile &x, const PrefillTile &y) {
    return x.max_pos != y.max_pos ? x.max_pos > y.max_pos : x.row0 < y.row0;
}

extern "C" void kattn_plan_build(KAttnPlan *p, const Batch *hb, int n_kv_heads, int window, KStream *s) {
    CHECK(hb->n_tokens >= 0 && hb->n_tokens <= p->max_tokens, "%d rows, plan sized for %d", hb->n_tokens,
          p->max_tokens);
    CHECK(n_kv_heads >= 1 && p->n_heads % n_kv_heads == 0, "%d heads, %d KV heads", p->n_heads, n_kv_heads);
    CHECK(window >= 0);
    p->window = window;
    if (p->upload_pending) CUDA_CHECK(cudaEventSynchronize(p->uploaded));
    DecodeWork *work = (DecodeWork *)p->h_buf;
    MergeWork *merge = (MergeWork *)(p->h_buf + p->off_merge);
    PrefillTile *tiles = (PrefillTile *)(p->h_buf + p->off_tiles);
    int group = p->n_heads / n_kv_heads;
    p->n_kv = n_kv_heads;
    p->gm = group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8;
    p->hchunks = ceil_div(group, p->gm);

    // Decode rows go to the tail of the work area first (one item each, whole context), then are
    // expanded into slices at the front once the slice length is known.
    int n_rows = 0, n_tiles = 0;
    DecodeWork *rows = work + p->cap_work - p->max_tokens;
    for (int sq = 0; sq < hb->n_seqs; sq++) {
        int q0 = hb->query_start[sq], q1 = hb->query_start[sq + 1];
        CHECK(0 <= q0 && q0 <= q1 && q1 <= hb->n_tokens, "sequence %d rows [%d, %d)", sq, q0, q1);
        for (int t = q0; t < q1; t++) CHECK(hb->positions[t] >= 0, "row %d at position %d", t, hb->positions[t]);
        if (q1 - q0 <= KATTN_DECODE_MAX_Q) {
            for (int t = q0; t < q1; t++) {
                int end = hb->positions[t] + 1, start = window > 0 ? std::max(0, end - window) : 0;
                rows[n_rows++] = (DecodeWork){t, sq, start, end, -1};
            }
            continue;
        }
        for (int r0 = q0; r0 < q1; r0 += KATTN_BQ) {
            int n = std::min(KATTN_BQ, q1 - r0), max_pos = 0, min_pos = INT32_MAX;
            for (int t = r0; t < r0 + n; t++)
                max_pos = std::max(max_pos, hb->positions[t]), min_pos = std::min(min_pos, hb->positions[t]);
            tiles[n_tiles++] = (PrefillTile){sq, r0, n, max_pos, min_pos};
        }
    }
    // Longest tiles first, so the short ones fill in behind them.
    std::sort(tiles, tiles + n_tiles, tile_heavier);

    p->part = plan_choose_part(p, rows, n_rows);
    int n_work = 0, n_merge = 0, n_parts = 0;
    for (int i = 0; i < n_rows; i++) {
        DecodeWork r = rows[i]; // read before the front of the area overwrites it
        int n = ceil_div(r.end - r.start, p->part);
        if (n == 1) {
            work[n_work++] = r;
            continue;
        }
        merge[n_merge++] = (MergeWork){r.row, n_parts, n};
        for (int j = 0; j < n; j++)
            work[n_work++] = (DecodeWork){r.row, r.seq, r.start + j * p->part, std::min(r.end, r.start + (j + 1) * p->part),
                                          n_parts + j};
        n_parts += n;
    }
    CHECK(n_parts <= p->cap_parts && n_work <= p->cap_work, "plan overflow: %d parts, %d items", n_parts, n_work);
    p->n_work = n_work, p->n_merge = n_merge, p->n_tiles = n_tiles, p->n_decode_rows = n_rows;

    cudaStream_t st = kstream_of(s);
    CUDA_CHECK(cudaMemcpyAsync(p->d_buf, p->h_buf, (size_t)n_work * sizeof(DecodeWork), cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(p->d_buf + p->off_merge, merge, (size_t)n_merge * sizeof(MergeWork),
                               cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(p->d_buf + p->off_tiles, tiles, (size_t)n_tiles * sizeof(PrefillTile),
                               cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaEventRecord(p->uploaded, st));
    p->upload_pending = true;
}

// ---- launch

template <int HD>
static void attn_decode_launch(const AttnArgs &a, const KAttnPlan *p, cudaStream_t st) {
    dim3 grid(p->n_work, p->n_kv * p->hchunks);
    switch (p->gm) {
    case 1: attn_decode_kernel<HD, 1><<<grid, KATTN_THREADS, 0, st>>>(a); break;
    case 2: attn_decode_kernel<HD, 2><<<grid, KATTN_THREADS, 0, st>>>(a); break;
    case 4: attn_decode_kernel<HD, 4><<<grid, KATTN_THREADS, 0, st>>>(a); break;
    default: attn_decode_kernel<HD, 8><<<grid, KATTN_THREADS, 0, st>>>(a); break;
    }
    CUDA_CHECK_LAUNCH();
}

extern "C" void k_attention_cuda(float *out, const float *q, const KVLayer *cache, const Batch *b,
                                 const KAttnPlan *plan, int n_heads, const AttnOpt *o, KStream *s) {
    CHECK(kv_dtype_id(cache) == KCUDA_KV_BF16_ID, "the CUDA KV cache is bf16 (dtype %d)", kv_dtype_id(cache));
    bool same = n_heads == plan->n_heads && cache->head_dim == plan->head_dim && cache->n_kv_heads == plan->n_kv;
    CHECK(same, "plan for %d heads of %d / %d KV heads; called with %d of %d / %d", plan->n_heads, plan->head_dim,
          plan->n_kv, n_heads, cache->head_dim, cache->n_kv_heads);
    CHECK(o->scale > 0 && o->softcap >= 0 && o->window == plan->window, "window %d, the plan's %d", o->window,
          plan->window);
    CHECK((((uintptr_t)q | (uintptr_t)out | (uintptr_t)cache->k | (uintptr_t)cache->v) & 15) == 0,
          "attention buffers must be 16-byte aligned");
    if (b->n_tokens <= 0) return;
    AttnArgs a;
    memset(&a, 0, sizeof(a));
    a.q = q, a.out = out;
    a.kc = (const uint16_t *)cache->k, a.vc = (const uint16_t *)cache->v;
    a.positions = b->positions, a.block_tables = b->block_tables;
    a.max_blocks = b->max_blocks_per_seq, a.block_size = cache->block_size;
    a.n_heads = n_heads, a.n_kv = cache->n_kv_heads, a.group = n_heads / cache->n_kv_heads;
    a.hchunks = plan->hchunks;
    a.scale_log2 = o->scale * 1.4426950408889634f;
    a.window = o->window;
    a.cap_log2 = o->softcap * 1.4426950408889634f;
    a.work = (const DecodeWork *)plan->d_buf;
    a.merge = (const MergeWork *)(plan->d_buf + plan->off_merge);
    a.tiles = (const PrefillTile *)(plan->d_buf + plan->off_tiles);
    a.part_o = plan->part_o, a.part_ml = plan->part_ml;
    cudaStream_t st = kstream_of(s);
    int hd = cache->head_dim;
    if (plan->n_work > 0) {
        if (hd == 64) attn_decode_launch<64>(a, plan, st);
        else attn_decode_launch<128>(a, plan, st);
    }
    if (plan->n_merge > 0) {
        attn_merge_kernel<<<dim3(plan->n_merge, n_heads), hd, 0, st>>>(a);
        CUDA_CHECK_LAUNCH();
    }
    if (plan->n_tiles > 0) {
        if (hd == 64) attn_prefill_launch<64>(a, plan->n_tiles, st);
        else attn_prefill_launch<128>(a, plan->n_tiles, st);
    }
}
