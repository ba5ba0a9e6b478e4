/* Crypto benchmark guest: SHA-256 over a buffer (the rounds as Linux's lib/crypto/sha256.c
   writes them: 32-bit rotates from shifts, eight rounds unrolled per loop step) and
   multi-precision multiply-subtract in 32-bit halves (as Linux's generic mpihelp_submul_1),
   the work of a kernel that checks module signatures and of TLS: long blocks that keep more
   values live than the host has registers. Prints a checksum (which must agree between
   machines) and its own retired-instruction count. */
#include "rt.h"

#ifndef ROUNDS
#define ROUNDS 3000
#endif
#define DATA_BYTES 4096
#define LIMBS 64

static u8 data[DATA_BYTES];
static u64 limbs_a[LIMBS], limbs_b[LIMBS];

static const u32 K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline u32 ror32(u32 w, unsigned s) { return (w >> s) | (w << (32 - s)); }
#define Ch(x, y, z) (z ^ (x & (y ^ z)))
#define Maj(x, y, z) ((x & y) | (z & (x | y)))
#define e0(x) (ror32(x, 2) ^ ror32(x, 13) ^ ror32(x, 22))
#define e1(x) (ror32(x, 6) ^ ror32(x, 11) ^ ror32(x, 25))
#define s0(x) (ror32(x, 7) ^ ror32(x, 18) ^ (x >> 3))
#define s1(x) (ror32(x, 17) ^ ror32(x, 19) ^ (x >> 10))
#define ROUND(i, a, b, c, d, e, f, g, h) do { \
    u32 t1 = h + e1(e) + Ch(e, f, g) + K[i] + W[i]; \
    u32 t2 = e0(a) + Maj(a, b, c); d += t1; h = t1 + t2; } while (0)

static void sha256_blocks(u32 *state, const u8 *in, u32 blocks)
{
    u32 W[64];
    while (blocks--) {
        for (int i = 0; i < 16; i++)
            W[i] = (u32)in[4 * i] << 24 | (u32)in[4 * i + 1] << 16 | (u32)in[4 * i + 2] << 8 | in[4 * i + 3];
        for (int i = 16; i < 64; i += 8) {
            W[i] = s1(W[i - 2]) + W[i - 7] + s0(W[i - 15]) + W[i - 16];
            W[i + 1] = s1(W[i - 1]) + W[i - 6] + s0(W[i - 14]) + W[i - 15];
            W[i + 2] = s1(W[i]) + W[i - 5] + s0(W[i - 13]) + W[i - 14];
            W[i + 3] = s1(W[i + 1]) + W[i - 4] + s0(W[i - 12]) + W[i - 13];
            W[i + 4] = s1(W[i + 2]) + W[i - 3] + s0(W[i - 11]) + W[i - 12];
            W[i + 5] = s1(W[i + 3]) + W[i - 2] + s0(W[i - 10]) + W[i - 11];
            W[i + 6] = s1(W[i + 4]) + W[i - 1] + s0(W[i - 9]) + W[i - 10];
            W[i + 7] = s1(W[i + 5]) + W[i] + s0(W[i - 8]) + W[i - 9];
        }
        u32 a = state[0], b = state[1], c = state[2], d = state[3];
        u32 e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i += 8) {
            ROUND(i + 0, a, b, c, d, e, f, g, h);
            ROUND(i + 1, h, a, b, c, d, e, f, g);
            ROUND(i + 2, g, h, a, b, c, d, e, f);
            ROUND(i + 3, f, g, h, a, b, c, d, e);
            ROUND(i + 4, e, f, g, h, a, b, c, d);
            ROUND(i + 5, d, e, f, g, h, a, b, c);
            ROUND(i + 6, c, d, e, f, g, h, a, b);
            ROUND(i + 7, b, c, d, e, f, g, h, a);
        }
        state[0] += a; state[1] += b; state[2] += c; state[3] += d;
        state[4] += e; state[5] += f; state[6] += g; state[7] += h;
        in += 64;
    }
}

/* res -= s1 * limb, returning the borrow; products in 32-bit halves as umul_ppmm's generic
   C version computes them. */
static __attribute__((noinline)) u64 submul(u64 *res, const u64 *s1, long size, u64 limb)
{
    u64 borrow = 0;
    u64 vl = limb & 0xffffffff, vh = limb >> 32;
    for (long i = 0; i < size; i++) {
        u64 u = s1[i], ul = u & 0xffffffff, uh = u >> 32;
        u64 x0 = ul * vl, x1 = ul * vh, x2 = uh * vl, x3 = uh * vh;
        x1 += x0 >> 32;
        x1 += x2;
        if (x1 < x2)
            x3 += 1ULL << 32;
        u64 hi = x3 + (x1 >> 32), lo = (x1 << 32) + (x0 & 0xffffffff);
        lo += borrow;
        hi += lo < borrow;
        u64 r = res[i];
        u64 d = r - lo;
        hi += d > r;
        res[i] = d;
        borrow = hi;
    }
    return borrow;
}

int main(void)
{
    u64 start = CSR_READ(minstret);
    u64 checksum = 0;
    u32 x = 12345;
    for (u32 i = 0; i < DATA_BYTES; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = x >> 16;
    }
    for (u32 i = 0; i < LIMBS; i++) {
        limbs_a[i] = (u64)i * 0x9e3779b97f4a7c15ULL;
        limbs_b[i] = ~(u64)i * 0xc2b2ae3d27d4eb4fULL;
    }
    for (u32 round = 0; round < ROUNDS; round++) {
        u32 state[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
        data[round % DATA_BYTES] ^= round;
        sha256_blocks(state, data, DATA_BYTES / 64);
        for (int i = 0; i < 8; i++)
            checksum = checksum * 31 + state[i];
        for (u32 j = 0; j < LIMBS; j++)
            checksum += submul(limbs_a, limbs_b, LIMBS, limbs_b[j] ^ checksum);
    }
    u64 end = CSR_READ(minstret);
    p("bench.checksum", checksum);
    p("bench.instret", end - start);
    return 0;
}
