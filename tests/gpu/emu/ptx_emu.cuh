// ptx_emu.cuh: the emulator's stand-ins for kernels/cuda/ptx.cuh, written from the PTX ISA's
// fragment tables (independently of the kernels' own index math).
#pragma once
#include <stdint.h>
void *emu_warp_big_slots();

static inline uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
static inline void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    char *d = (char *)emu_dyn_smem() + dst;
    if (dst % 16) abort();
    if (src_bytes) memcpy(d, src, 16); else memset(d, 0, 16);
}
static inline void cp_async_commit(void) {}
template <int N> static inline void cp_async_wait(void) {}

// ldmatrix .x4: lanes 8i..8i+7 give the row addresses of matrix i. Without .trans lane l gets
// matrix i's row l/4, columns 2(l%4), 2(l%4)+1; with .trans it gets rows 2(l%4), 2(l%4)+1 of
// column l/4.
static inline void ldmatrix_emu(uint32_t r[4], uint32_t addr, bool trans) {
    uint64_t *s = emu_warp_slots();
    unsigned l = emu_lane();
    if (addr % 16) abort();
    s[l] = addr;
    emu_warp_barrier();
    uint32_t a[32];
    for (int i = 0; i < 32; i++) a[i] = (uint32_t)s[i];
    emu_warp_barrier();
    const char *base = (const char *)emu_dyn_smem();
    for (int m = 0; m < 4; m++) {
        if (!trans) {
            memcpy(&r[m], base + a[8 * m + l / 4] + 4 * (l % 4), 4);
        } else {
            uint16_t lo, hi;
            memcpy(&lo, base + a[8 * m + 2 * (l % 4)] + 2 * (l / 4), 2);
            memcpy(&hi, base + a[8 * m + 2 * (l % 4) + 1] + 2 * (l / 4), 2);
            r[m] = lo | (uint32_t)hi << 16;
        }
    }
}
static inline void ldmatrix_x4(uint32_t r[4], uint32_t addr) { ldmatrix_emu(r, addr, false); }
static inline void ldmatrix_x4_trans(uint32_t r[4], uint32_t addr) { ldmatrix_emu(r, addr, true); }

// mma.m16n8k16.row.col f32.bf16: PTX ISA "Matrix Fragments for mma.m16n8k16", g = l>>2, t = l%4:
// A a0..a7: row g (i in 0,1,4,5) or g+8, col 2t + (i&1) (+8 for i >= 4); two per register.
// B b0..b3: row 2t + (i&1) (+8 for i >= 2), col g. C c0..c3: row g (+8 for i >= 2), col 2t + (i&1).
struct EmuMmaFrag { uint32_t a[4], b[2]; float c[4]; };
static inline float emu_bf(uint32_t reg, int half) { return __uint_as_float(((reg >> (16 * half)) & 0xffff) << 16); }
static inline float emu_A(const EmuMmaFrag *f, int r, int k) {
    int i = (k >= 8 ? 4 : 0) + (r >= 8 ? 2 : 0) + (k & 1); // element index
    int lane = (r % 8) * 4 + (k % 8) / 2;
    return emu_bf(f[lane].a[i / 2], i & 1);
}
static inline float emu_B(const EmuMmaFrag *f, int k, int n) {
    int i = (k >= 8 ? 2 : 0) + (k & 1);
    int lane = n * 4 + (k % 8) / 2;
    return emu_bf(f[lane].b[i / 2], i & 1);
}
static inline float emu_C(const EmuMmaFrag *f, int r, int n) {
    int lane = (r % 8) * 4 + n / 2;
    return f[lane].c[(r >= 8 ? 2 : 0) + (n & 1)];
}
static inline void mma_bf16_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    EmuMmaFrag *s = (EmuMmaFrag *)emu_warp_big_slots();
    unsigned l = emu_lane();
    EmuMmaFrag mine = {{a[0], a[1], a[2], a[3]}, {b0, b1}, {c[0], c[1], c[2], c[3]}};
    s[l] = mine;
    emu_warp_barrier();
    int g = l >> 2, t = l & 3;
    float d[4];
    for (int i = 0; i < 4; i++) {
        int r = g + (i >= 2 ? 8 : 0), n = 2 * t + (i & 1);
        float acc = emu_C(s, r, n);
        for (int k = 0; k < 16; k++) acc += emu_A(s, r, k) * emu_B(s, k, n);
        d[i] = acc;
    }
    emu_warp_barrier();
    for (int i = 0; i < 4; i++) c[i] = d[i];
}
