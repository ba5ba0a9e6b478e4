/* RV64C (unprivileged spec ch. 16): every compressed instruction form of RV64GC, each run
   with explicit `c.` mnemonics on the restricted registers x8-x15, sp-relative forms on a
   private stack, control transfers with their link values, and the reserved/illegal
   encodings (16.8: the all-zero halfword is illegal). */
#include "rt.h"

/* Runs insn with a0 = A and a1 = B (x10, x11: both in the x8-x15 set), prints a0. */
#define R2(name, a, b, insn)                                                               \
    do {                                                                                   \
        u64 r__;                                                                           \
        asm volatile("mv a0, %1\n mv a1, %2\n" insn "\n mv %0, a0"                         \
                     : "=r"(r__)                                                           \
                     : "r"((u64)(a)), "r"((u64)(b))                                        \
                     : "a0", "a1");                                                        \
        p(name, r__);                                                                      \
    } while (0)

static u64 mem[8] __attribute__((aligned(16)));
static u64 stack_area[16] __attribute__((aligned(16)));

static void fill(void)
{
    for (unsigned i = 0; i < 8; i++)
        mem[i] = 0x8877665544332211UL * (i + 1);
    for (unsigned i = 0; i < 16; i++)
        stack_area[i] = 0xf0e0d0c0b0a09080UL ^ (i * 0x0101010101010101UL);
}

static void quadrant0(void)
{
    u64 r, base;
    /* c.addi4spn rd', sp, nzuimm: sp-relative address (sp itself is only read). */
    asm volatile("mv t0, sp\n li sp, 0x1000\n c.addi4spn a0, sp, 1020\n mv %0, a0\n mv sp, t0"
                 : "=r"(r)
                 :
                 : "a0", "t0");
    p("c.addi4spn.1020", r);
    asm volatile("mv t0, sp\n li sp, 0x1000\n c.addi4spn a0, sp, 4\n mv %0, a0\n mv sp, t0"
                 : "=r"(r)
                 :
                 : "a0", "t0");
    p("c.addi4spn.4", r);
    fill();
    asm volatile("mv a1, %1\n c.lw a0, 4(a1)\n mv %0, a0" : "=r"(r) : "r"(mem) : "a0", "a1", "memory");
    p("c.lw.sign-extended", r);
    asm volatile("mv a1, %1\n c.lw a0, 124(a1)\n mv %0, a0" : "=r"(r) : "r"((u64)mem - 120) : "a0", "a1", "memory");
    p("c.lw.max-offset", r);
    asm volatile("mv a1, %1\n c.ld a0, 8(a1)\n mv %0, a0" : "=r"(r) : "r"(mem) : "a0", "a1", "memory");
    p("c.ld", r);
    asm volatile("mv a1, %1\n c.ld a0, 248(a1)\n mv %0, a0" : "=r"(r) : "r"((u64)mem - 240) : "a0", "a1", "memory");
    p("c.ld.max-offset", r);
    asm volatile("mv a1, %1\n c.fld fa0, 16(a1)\n fmv.x.d %0, fa0" : "=r"(r) : "r"(mem) : "fa0", "a1", "memory");
    p("c.fld", r);
    asm volatile("mv a1, %0\n li a0, -2\n c.sw a0, 0(a1)" ::"r"(mem) : "a0", "a1", "memory");
    p("c.sw.mem", mem[0]);
    asm volatile("mv a1, %0\n li a0, -3\n c.sd a0, 24(a1)" ::"r"(mem) : "a0", "a1", "memory");
    p("c.sd.mem", mem[3]);
    asm volatile("mv a1, %0\n fmv.d.x fa0, %1\n c.fsd fa0, 32(a1)" ::"r"(mem), "r"(0x400921fb54442d18UL)
                 : "fa0", "a1", "memory");
    p("c.fsd.mem", mem[4]);
    /* s0/s1 (x8/x9) as compressed registers too. */
    asm volatile("mv t1, s0\n mv s0, %1\n c.ld s1, 40(s0)\n mv %0, s1\n mv s0, t1" : "=r"(r) : "r"(mem) : "s1", "t1", "memory");
    p("c.ld.s0-s1", r);
    (void)base;
}

static void quadrant1(void)
{
    u64 r;
    R2("c.nop", 5, 0, "c.nop");
    R2("c.addi.1", 5, 0, "c.addi a0, 1");
    R2("c.addi.-32", 5, 0, "c.addi a0, -32");
    R2("c.addi.31", (u64)-1, 0, "c.addi a0, 31");
    R2("c.addiw.1", 0x7fffffff, 0, "c.addiw a0, 1");
    R2("c.addiw.0-sext", 0x00000000fedcba98UL, 0, "c.addiw a0, 0");
    R2("c.addiw.-1", 0, 0, "c.addiw a0, -1");
    R2("c.li.-32", 0, 0, "c.li a0, -32");
    R2("c.li.31", 0, 0, "c.li a0, 31");
    R2("c.lui.1", 0, 0, "c.lui a0, 1");
    R2("c.lui.0x1f", 0, 0, "c.lui a0, 0x1f");
    R2("c.lui.0xfffe0", 0, 0, "c.lui a0, 0xfffe0");
    R2("c.lui.0xfffff", 0, 0, "c.lui a0, 0xfffff");
    R2("c.srli.1", 0x8000000000000001UL, 0, "c.srli a0, 1");
    R2("c.srli.63", 0x8000000000000001UL, 0, "c.srli a0, 63");
    R2("c.srli.32", 0xfedcba9876543210UL, 0, "c.srli a0, 32");
    R2("c.srai.1", 0x8000000000000001UL, 0, "c.srai a0, 1");
    R2("c.srai.63", 0x8000000000000001UL, 0, "c.srai a0, 63");
    R2("c.srai.33", 0xfedcba9876543210UL, 0, "c.srai a0, 33");
    R2("c.andi.-32", 0xffffUL, 0, "c.andi a0, -32");
    R2("c.andi.31", 0xffffUL, 0, "c.andi a0, 31");
    R2("c.sub", 5, 7, "c.sub a0, a1");
    R2("c.xor", 0xff00ff00UL, 0x0ff00ff0UL, "c.xor a0, a1");
    R2("c.or", 0xff00ff00UL, 0x0ff00ff0UL, "c.or a0, a1");
    R2("c.and", 0xff00ff00UL, 0x0ff00ff0UL, "c.and a0, a1");
    R2("c.subw", 0x80000000UL, 1, "c.subw a0, a1");
    R2("c.subw.wrap", 0, 0x80000000UL, "c.subw a0, a1");
    R2("c.addw", 0x7fffffffUL, 1, "c.addw a0, a1");
    R2("c.addw.high-bits-ignored", 0x1234567800000001UL, 0xff00000000000002UL, "c.addw a0, a1");
    /* c.addi16sp: sp += nzimm (multiple of 16). */
    asm volatile("mv t0, sp\n li sp, 0x1000\n c.addi16sp sp, -512\n mv %0, sp\n mv sp, t0" : "=r"(r) : : "t0");
    p("c.addi16sp.-512", r);
    asm volatile("mv t0, sp\n li sp, 0x1000\n c.addi16sp sp, 496\n mv %0, sp\n mv sp, t0" : "=r"(r) : : "t0");
    p("c.addi16sp.496", r);
    /* c.j / c.beqz / c.bnez forwards and backwards. */
    R2("c.j.forward", 1, 0, "c.j 1f\n c.li a0, 9\n 1:");
    R2("c.j.backward", 0, 0, "c.j 2f\n 1: c.addi a0, 1\n c.j 3f\n 2: c.addi a0, 2\n c.j 1b\n 3:");
    R2("c.beqz.taken", 0, 0, "c.beqz a0, 1f\n c.li a0, 9\n 1:");
    R2("c.beqz.not-taken", 1, 0, "c.beqz a0, 1f\n c.li a0, 9\n 1:");
    R2("c.bnez.taken", 1, 0, "c.bnez a0, 1f\n c.li a0, 9\n 1:");
    R2("c.bnez.not-taken", 0, 0, "c.bnez a0, 1f\n c.li a0, 9\n 1:");
    R2("c.bnez.loop", 0, 10, "1: c.addi a0, 3\n c.addi a1, -1\n c.bnez a1, 1b");
}

static void quadrant2(void)
{
    u64 r, base;
    R2("c.slli.1", 0x8000000000000001UL, 0, "c.slli a0, 1");
    R2("c.slli.63", 1, 0, "c.slli a0, 63");
    R2("c.slli.32", 0x12345678UL, 0, "c.slli a0, 32");
    R2("c.mv", 0, 0x1234, "c.mv a0, a1");
    R2("c.add", 0x7fffffffffffffffUL, 1, "c.add a0, a1");
    /* c.mv and c.add with registers outside x8-x15. */
    asm volatile("li t3, 77\n li t4, 5\n c.add t3, t4\n c.mv t5, t3\n mv %0, t5" : "=r"(r) : : "t3", "t4", "t5");
    p("c.add-c.mv.full-registers", r);
    fill();
    asm volatile("mv t0, sp\n mv sp, %1\n c.lwsp a0, 12(sp)\n mv sp, t0\n mv %0, a0" : "=r"(r) : "r"(stack_area) : "a0", "t0", "memory");
    p("c.lwsp", r);
    asm volatile("mv t0, sp\n mv sp, %1\n c.lwsp t6, 252(sp)\n mv sp, t0\n mv %0, t6" : "=r"(r) : "r"((u64)stack_area - 248) : "t6", "t0", "memory");
    p("c.lwsp.max-offset", r);
    asm volatile("mv t0, sp\n mv sp, %1\n c.ldsp a0, 24(sp)\n mv sp, t0\n mv %0, a0" : "=r"(r) : "r"(stack_area) : "a0", "t0", "memory");
    p("c.ldsp", r);
    asm volatile("mv t0, sp\n mv sp, %1\n c.ldsp a0, 504(sp)\n mv sp, t0\n mv %0, a0" : "=r"(r) : "r"((u64)stack_area - 496) : "a0", "t0", "memory");
    p("c.ldsp.max-offset", r);
    asm volatile("mv t0, sp\n mv sp, %1\n c.fldsp fa0, 40(sp)\n mv sp, t0\n fmv.x.d %0, fa0" : "=r"(r) : "r"(stack_area) : "fa0", "t0", "memory");
    p("c.fldsp", r);
    asm volatile("mv t0, sp\n mv sp, %0\n li a0, -7\n c.swsp a0, 8(sp)\n mv sp, t0" ::"r"(stack_area) : "a0", "t0", "memory");
    p("c.swsp.mem", stack_area[1]);
    asm volatile("mv t0, sp\n mv sp, %0\n li a0, -9\n c.sdsp a0, 16(sp)\n mv sp, t0" ::"r"(stack_area) : "a0", "t0", "memory");
    p("c.sdsp.mem", stack_area[2]);
    asm volatile("mv t0, sp\n mv sp, %0\n fmv.d.x fa0, %1\n c.fsdsp fa0, 48(sp)\n mv sp, t0" ::"r"(stack_area), "r"(0xc000000000000001UL)
                 : "fa0", "t0", "memory");
    p("c.fsdsp.mem", stack_area[6]);
    /* c.jr and c.jalr: c.jalr links pc + 2 (16.4). */
    asm volatile("la a1, 1f\n li a0, 1\n c.jr a1\n li a0, 9\n 1: mv %0, a0" : "=r"(r) : : "a0", "a1");
    p("c.jr", r);
    asm volatile("la a1, 2f\n 1: c.jalr a1\n 2: la %1, 1b\n mv %0, ra" : "=r"(r), "=r"(base) : : "a1", "ra");
    p("c.jalr.link.rel", r - base);
}

static void traps(void)
{
    m_skip = 1;
    clear_traps();
    asm volatile("c.ebreak");
    print_m_trap("c.ebreak");
    /* The all-zero halfword is defined illegal (16.8). */
    clear_traps();
    asm volatile(".2byte 0x0000");
    print_m_trap("c.illegal.zero");
    /* Reserved encodings: c.addi16sp with nzimm 0, c.lui with nzimm 0, c.lwsp with rd 0,
       c.jr with rs1 0 (16.5, 16.6). */
    clear_traps();
    asm volatile(".2byte 0x6101");
    print_m_trap("c.addi16sp.zero-reserved");
    clear_traps();
    asm volatile(".2byte 0x6281");
    print_m_trap("c.lui.zero-reserved");
    clear_traps();
    asm volatile(".2byte 0x4002");
    print_m_trap("c.lwsp.rd0-reserved");
    clear_traps();
    asm volatile(".2byte 0x8002");
    print_m_trap("c.jr.rs0-reserved");
    m_skip = 0;
}

int main(void)
{
    quadrant0();
    quadrant1();
    quadrant2();
    traps();
    return 0;
}
