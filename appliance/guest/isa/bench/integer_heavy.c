/* Integer-heavy benchmark guest: xorshift hashing with multiplies, shifts, compares and an
   occasional division, a byte sieve of Eratosthenes and an insertion sort of a small array,
   all in registers or a few cache-resident kilobytes. Prints a checksum (which must agree
   between machines) and its own retired-instruction count. */
#include "rt.h"

#ifndef ROUNDS
#define ROUNDS 300
#endif

#define HASH_STEPS 200000
#define SIEVE_BYTES 8192
#define SORT_WORDS 96

static u8 sieve[SIEVE_BYTES];
static u32 sort_words[SORT_WORDS];

static u64 hash_work(u64 seed)
{
    u64 h = seed | 1, acc = 0;
    for (u32 i = 0; i < HASH_STEPS; i++) {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        acc += (h * 0x2545f4914f6cdd1dULL) >> 29;
        acc ^= (acc << 5) | (i & 31);
        if (h & 1)
            acc += i;
        else
            acc -= i >> 1;
        if ((i & 255) == 0)
            acc += acc / ((h & 7) + 1);
    }
    return acc;
}

static u32 sieve_work(void)
{
    for (u32 i = 0; i < SIEVE_BYTES; i++)
        sieve[i] = 1;
    sieve[0] = sieve[1] = 0;
    for (u32 i = 2; i * i < SIEVE_BYTES; i++)
        if (sieve[i])
            for (u32 j = i * i; j < SIEVE_BYTES; j += i)
                sieve[j] = 0;
    u32 count = 0;
    for (u32 i = 0; i < SIEVE_BYTES; i++)
        count += sieve[i];
    return count;
}

static u32 sort_work(u32 seed)
{
    u32 x = seed | 1;
    for (u32 i = 0; i < SORT_WORDS; i++) {
        x = x * 1103515245u + 12345u;
        sort_words[i] = x >> 8;
    }
    for (u32 i = 1; i < SORT_WORDS; i++) {
        u32 v = sort_words[i];
        u32 j = i;
        while (j > 0 && sort_words[j - 1] > v) {
            sort_words[j] = sort_words[j - 1];
            j--;
        }
        sort_words[j] = v;
    }
    u32 sum = 0;
    for (u32 i = 0; i < SORT_WORDS; i++)
        sum = sum * 31 + sort_words[i];
    return sum;
}

int main(void)
{
    u64 start = CSR_READ(minstret);
    u64 checksum = 0;
    for (u32 round = 0; round < ROUNDS; round++) {
        checksum += hash_work(round * 0x9e3779b97f4a7c15ULL);
        checksum ^= sieve_work();
        checksum = checksum * 3 + sort_work(round);
    }
    u64 end = CSR_READ(minstret);
    p("bench.checksum", checksum);
    p("bench.instret", end - start);
    return 0;
}
