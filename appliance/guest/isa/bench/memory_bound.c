/* Memory-bound benchmark guest: a dependent pointer chase through a 16 MiB random cycle, a
   strided sum and a block copy over 32 MiB, so that most loads and stores miss the host's
   caches and the soft TLB's 256 pages. Prints a checksum (which must agree between
   machines) and its own retired-instruction count. */
#include "rt.h"

#ifndef ROUNDS
#define ROUNDS 6
#endif

/* 2^21 words of 8 bytes = 16 MiB per array. */
#define WORDS_LOG2 21
#define WORDS (1u << WORDS_LOG2)
#define CHASE_STEPS (1u << 21)

static u64 chain[WORDS];
static u64 copy[WORDS];

/* i -> a * i + c (mod 2^k) with c odd and a = 1 (mod 4) visits every index once (Hull and
   Dobell), so the chase is one cycle through the whole array. */
static void build_chain(u64 a, u64 c)
{
    for (u64 i = 0; i < WORDS; i++)
        chain[i] = (a * i + c) & (WORDS - 1);
}

static u64 chase(u64 start)
{
    u64 index = start, sum = 0;
    for (u32 i = 0; i < CHASE_STEPS; i++) {
        index = chain[index];
        sum += index;
    }
    return sum ^ index;
}

static u64 strided_sum(u32 stride_words)
{
    u64 sum = 0;
    for (u32 offset = 0; offset < stride_words; offset++)
        for (u32 i = offset; i < WORDS; i += stride_words)
            sum += chain[i] ^ i;
    return sum;
}

static u64 block_copy(void)
{
    for (u32 i = 0; i < WORDS; i += 4) {
        copy[i] = chain[i];
        copy[i + 1] = chain[i + 1] + 1;
        copy[i + 2] = chain[i + 2] + 2;
        copy[i + 3] = chain[i + 3] + 3;
    }
    return copy[WORDS / 3] + copy[WORDS - 1];
}

int main(void)
{
    u64 start = CSR_READ(minstret);
    u64 checksum = 0;
    for (u32 round = 0; round < ROUNDS; round++) {
        build_chain(4 * (round + 1) * 2654435761ULL + 1, 2 * round + 1);
        checksum += chase(round);
        checksum ^= strided_sum(8 + round);
        checksum += block_copy();
    }
    u64 end = CSR_READ(minstret);
    p("bench.checksum", checksum);
    p("bench.instret", end - start);
    return 0;
}
