/* Zifencei (unprivileged spec ch. 6): code written as data runs after fence.i, including
   rewriting an instruction that already ran (so a decode cache must be invalidated), a
   compressed instruction, and code in a freshly written page-aligned buffer. */
#include "rt.h"

/* A page of writable, executable RAM (PMP allows everything; no paging in M-mode). */
static u32 code[1024] __attribute__((aligned(4096)));

typedef u64 (*fn0)(void);

/* addi a0, zero, imm */
static u32 addi_a0(int imm)
{
    return ((u32)(imm & 0xfff) << 20) | (10 << 7) | 0x13;
}
#define RET 0x00008067u

/* Patches the immediate of an instruction in the middle of a running function: the function
   below is called once, then its first instruction is overwritten in place. */
static u64 __attribute__((noinline, aligned(64))) patchable(void)
{
    u64 r;
    asm volatile(".option push\n .option norvc\n 1: li %0, 1\n .option pop\n" : "=r"(r));
    return r;
}

int main(void)
{
    code[0] = addi_a0(11);
    code[1] = RET;
    asm volatile("fence.i" ::: "memory");
    p("fence.i.first", ((fn0)code)());

    /* Rewrite and run again: the new instruction must be seen. */
    code[0] = addi_a0(22);
    asm volatile("fence.i" ::: "memory");
    p("fence.i.rewrite", ((fn0)code)());

    /* Loop that rewrites itself many times. */
    u64 sum = 0;
    for (int i = 0; i < 100; i++) {
        code[0] = addi_a0(i);
        asm volatile("fence.i" ::: "memory");
        sum += ((fn0)code)();
    }
    p("fence.i.loop-sum", sum);

    /* Compressed code: c.li a0, 7; c.jr ra. */
    u16 *half = (u16 *)&code[16];
    half[0] = 0x451d;
    half[1] = 0x8082;
    asm volatile("fence.i" ::: "memory");
    p("fence.i.compressed", ((fn0)half)());
    half[0] = 0x4531; /* c.li a0, 12 */
    asm volatile("fence.i" ::: "memory");
    p("fence.i.compressed.rewrite", ((fn0)half)());

    /* A 4-byte instruction straddling a 4-byte boundary (2-byte aligned). */
    half = (u16 *)&code[32];
    half[0] = 0x0001; /* c.nop */
    u32 insn = addi_a0(-5);
    half[1] = (u16)insn;
    half[2] = (u16)(insn >> 16);
    half[3] = 0x8082;
    asm volatile("fence.i" ::: "memory");
    p("fence.i.unaligned-32bit", ((fn0)half)());

    /* Patch already-executed code of a compiled function. */
    p("patchable.before", patchable());
    u32 *target = (u32 *)(void *)patchable;
    for (int i = 0; i < 8; i++) {
        if ((target[i] & 0xfffff07fu) == ((1u << 20) | 0x13u)) {
            target[i] = (target[i] & 0x000fffffu) | (99u << 20);
            break;
        }
    }
    asm volatile("fence.i" ::: "memory");
    p("patchable.after", patchable());
    return 0;
}
