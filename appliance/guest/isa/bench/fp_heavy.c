/* Floating-point-heavy benchmark guest: double-precision matrix products, a Newton square
   root and single-precision polynomial evaluation, with the integer work reduced to loop
   control and addressing. Prints a checksum of the result bits (which must agree between
   machines) and its own retired-instruction count. */
#include "rt.h"

#ifndef ROUNDS
#define ROUNDS 4000
#endif

#define N 24

static double a[N][N], b[N][N], c[N][N];

static u64 bits_of(double d)
{
    union {
        double d;
        u64 u;
    } v = { .d = d };
    return v.u;
}

static double matrix_work(u32 round)
{
    for (u32 i = 0; i < N; i++)
        for (u32 j = 0; j < N; j++) {
            a[i][j] = (double)((i * 7 + j + round) % 19) * 0.25 - 2.0;
            b[i][j] = (double)((i + j * 3 + round) % 23) * 0.125 - 1.0;
        }
    for (u32 i = 0; i < N; i++)
        for (u32 j = 0; j < N; j++) {
            double acc = 0.0;
            for (u32 k = 0; k < N; k++)
                acc += a[i][k] * b[k][j];
            c[i][j] = acc;
        }
    double trace = 0.0;
    for (u32 i = 0; i < N; i++)
        trace += c[i][i] * c[i][N - 1 - i];
    return trace;
}

static double newton_sqrt(double x)
{
    double r = x > 1.0 ? x : 1.0;
    for (u32 i = 0; i < 40; i++)
        r = 0.5 * (r + x / r);
    return r;
}

static float polynomial(float x)
{
    float sum = 0.0f;
    for (u32 i = 0; i < 200; i++) {
        x = x * 0.999f + 0.001f;
        sum = sum * 0.5f + (((x * 3.0f - 2.0f) * x + 1.5f) * x - 0.25f);
    }
    return sum;
}

int main(void)
{
    u64 start = CSR_READ(minstret);
    u64 checksum = 0;
    for (u32 round = 0; round < ROUNDS; round++) {
        double trace = matrix_work(round);
        checksum = checksum * 31 + bits_of(trace);
        checksum ^= bits_of(newton_sqrt(trace < 0 ? -trace : trace));
        union {
            float f;
            u32 u;
        } v = { .f = polynomial((float)round * 0.01f) };
        checksum += v.u;
    }
    u64 end = CSR_READ(minstret);
    p("bench.checksum", checksum);
    p("bench.instret", end - start);
    return 0;
}
