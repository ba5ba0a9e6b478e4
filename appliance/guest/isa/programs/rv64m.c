/* RV64M (unprivileged spec ch. 13): every multiply/divide instruction over a table of corner
   values, including division by zero (quotient all ones, remainder = dividend) and signed
   overflow (most negative / -1: quotient = dividend, remainder 0), table 13.1. */
#include "rt.h"

static const u64 values[] = {
    0,
    1,
    (u64)-1,
    2,
    (u64)-2,
    7,
    (u64)-7,
    0x7fffffffffffffffUL,
    0x8000000000000000UL,
    0x000000007fffffffUL,
    0x0000000080000000UL,
    0xffffffff80000000UL,
    0x00000000ffffffffUL,
    0x123456789abcdef0UL,
    0xfedcba9876543210UL,
};
#define N_VALUES (sizeof(values) / sizeof(values[0]))

#define RR(insn)                                                                           \
    static u64 op_##insn(u64 a, u64 b)                                                     \
    {                                                                                      \
        u64 r;                                                                             \
        asm volatile(#insn " %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));                       \
        return r;                                                                          \
    }
RR(mul)
RR(mulh)
RR(mulhsu)
RR(mulhu)
RR(div)
RR(divu)
RR(rem)
RR(remu)
RR(mulw)
RR(divw)
RR(divuw)
RR(remw)
RR(remuw)

struct rr_op {
    const char *name;
    u64 (*f)(u64, u64);
};
static const struct rr_op ops[] = {
    {"mul", op_mul},     {"mulh", op_mulh},   {"mulhsu", op_mulhsu}, {"mulhu", op_mulhu},
    {"div", op_div},     {"divu", op_divu},   {"rem", op_rem},       {"remu", op_remu},
    {"mulw", op_mulw},   {"divw", op_divw},   {"divuw", op_divuw},   {"remw", op_remw},
    {"remuw", op_remuw},
};

int main(void)
{
    for (unsigned k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        for (unsigned i = 0; i < N_VALUES; i++) {
            for (unsigned j = 0; j < N_VALUES; j++) {
                put_str(ops[k].name);
                put_char('.');
                put_dec(i);
                put_char('.');
                put_dec(j);
                put_char(' ');
                put_hex(ops[k].f(values[i], values[j]), 16);
                put_char('\n');
            }
        }
    }
    /* The result register may be one of the sources. */
    u64 a = 6, b = 7;
    asm volatile("mul %0, %0, %1" : "+r"(a) : "r"(b));
    p("mul.rd-eq-rs1", a);
    a = 100;
    asm volatile("div %0, %0, %0" : "+r"(a));
    p("div.rd-eq-rs1-eq-rs2", a);
    return 0;
}
