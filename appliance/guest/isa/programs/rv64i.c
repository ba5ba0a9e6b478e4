/* RV64I base integer instructions (unprivileged spec ch. 2 and 4): register and immediate
   arithmetic, shifts, compares, lui/auipc, branches, jal/jalr, loads and stores of every
   width with sign/zero extension, misaligned scalar accesses (QEMU performs them), fence. */
#include "rt.h"

static const u64 values[] = {
    0,
    1,
    (u64)-1,
    0x7fffffffffffffffUL,
    0x8000000000000000UL,
    0x000000007fffffffUL,
    0x0000000080000000UL,
    0x00000000ffffffffUL,
    0x123456789abcdef0UL,
    0xfedcba9876543210UL,
    31,
    32,
    63,
    (u64)-64,
};
#define N_VALUES (sizeof(values) / sizeof(values[0]))

#define RR(insn)                                                                           \
    static u64 op_##insn(u64 a, u64 b)                                                     \
    {                                                                                      \
        u64 r;                                                                             \
        asm volatile(#insn " %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));                       \
        return r;                                                                          \
    }
RR(add)
RR(sub)
RR(sll)
RR(slt)
RR(sltu)
RR(xor)
RR(srl)
RR(sra)
RR(or)
RR(and)
RR(addw)
RR(subw)
RR(sllw)
RR(srlw)
RR(sraw)

struct rr_op {
    const char *name;
    u64 (*f)(u64, u64);
};
static const struct rr_op rr_ops[] = {
    {"add", op_add},   {"sub", op_sub},   {"sll", op_sll},   {"slt", op_slt},
    {"sltu", op_sltu}, {"xor", op_xor},   {"srl", op_srl},   {"sra", op_sra},
    {"or", op_or},     {"and", op_and},   {"addw", op_addw}, {"subw", op_subw},
    {"sllw", op_sllw}, {"srlw", op_srlw}, {"sraw", op_sraw},
};

static void print_indexed(const char *op, unsigned i, unsigned j, u64 v)
{
    put_str(op);
    put_char('.');
    put_dec(i);
    put_char('.');
    put_dec(j);
    put_char(' ');
    put_hex(v, 16);
    put_char('\n');
}

#define RI(insn, imm)                                                                      \
    do {                                                                                   \
        for (unsigned i = 0; i < N_VALUES; i++) {                                          \
            u64 r;                                                                         \
            asm volatile(#insn " %0, %1, %2" : "=r"(r) : "r"(values[i]), "i"(imm));         \
            put_str(#insn "." #imm ".v");                                                  \
            put_dec(i);                                                                    \
            put_char(' ');                                                                 \
            put_hex(r, 16);                                                                \
            put_char('\n');                                                               \
        }                                                                                  \
    } while (0)

static void immediates(void)
{
    RI(addi, 0);
    RI(addi, 1);
    RI(addi, -1);
    RI(addi, 2047);
    RI(addi, -2048);
    RI(slti, 0);
    RI(slti, -1);
    RI(slti, 2047);
    RI(sltiu, 0);
    RI(sltiu, 1);
    RI(sltiu, -1);
    RI(xori, -1);
    RI(xori, 0x555);
    RI(ori, -2048);
    RI(ori, 0x7f0);
    RI(andi, -1);
    RI(andi, 0x7ff);
    RI(andi, -16);
    RI(slli, 0);
    RI(slli, 1);
    RI(slli, 31);
    RI(slli, 32);
    RI(slli, 63);
    RI(srli, 0);
    RI(srli, 1);
    RI(srli, 32);
    RI(srli, 63);
    RI(srai, 0);
    RI(srai, 1);
    RI(srai, 32);
    RI(srai, 63);
    RI(addiw, 0);
    RI(addiw, 1);
    RI(addiw, -1);
    RI(addiw, 2047);
    RI(addiw, -2048);
    RI(slliw, 0);
    RI(slliw, 1);
    RI(slliw, 31);
    RI(srliw, 0);
    RI(srliw, 1);
    RI(srliw, 31);
    RI(sraiw, 0);
    RI(sraiw, 1);
    RI(sraiw, 31);
}

static void upper_immediates(void)
{
    u64 r;
    asm volatile("lui %0, 0x80000" : "=r"(r));
    p("lui.0x80000", r);
    asm volatile("lui %0, 0xfffff" : "=r"(r));
    p("lui.0xfffff", r);
    asm volatile("lui %0, 0x12345" : "=r"(r));
    p("lui.0x12345", r);
    asm volatile("lui %0, 0x7ffff" : "=r"(r));
    p("lui.0x7ffff", r);
    /* auipc result relative to its own address (absolute addresses are the same in every
       machine, but a relative value reads better). */
    u64 base;
    asm volatile("1: auipc %0, 0x80000\n la %1, 1b" : "=r"(r), "=r"(base));
    p("auipc.0x80000.rel", r - base);
    asm volatile("1: auipc %0, 0x1\n la %1, 1b" : "=r"(r), "=r"(base));
    p("auipc.0x1.rel", r - base);
    asm volatile("1: auipc %0, 0\n la %1, 1b" : "=r"(r), "=r"(base));
    p("auipc.0.rel", r - base);
    asm volatile("1: auipc %0, 0xfffff\n la %1, 1b" : "=r"(r), "=r"(base));
    p("auipc.0xfffff.rel", r - base);
}

#define BRANCH(insn, a, b)                                                                 \
    ({                                                                                     \
        u64 taken;                                                                         \
        asm volatile("li %0, 1\n " #insn " %1, %2, 1f\n li %0, 0\n 1:"                      \
                     : "=&r"(taken)                                                        \
                     : "r"(a), "r"(b));                                                    \
        taken;                                                                             \
    })

static void branches(void)
{
    for (unsigned i = 0; i < N_VALUES; i++) {
        for (unsigned j = 0; j < N_VALUES; j++) {
            u64 a = values[i], b = values[j];
            u64 bits = BRANCH(beq, a, b) | BRANCH(bne, a, b) << 1 | BRANCH(blt, a, b) << 2 |
                       BRANCH(bge, a, b) << 3 | BRANCH(bltu, a, b) << 4 |
                       BRANCH(bgeu, a, b) << 5;
            print_indexed("branch.eq-ne-lt-ge-ltu-geu", i, j, bits);
        }
    }
    /* Backward branch: a counted loop. */
    u64 n = 0, count = 10;
    asm volatile("1: addi %0, %0, 1\n addi %1, %1, -1\n bnez %1, 1b" : "+r"(n), "+r"(count));
    p("branch.backward.loop", n);
}

static u64 jump_target_value;
static void __attribute__((noinline)) jump_target(void)
{
    jump_target_value++;
}

static void jumps(void)
{
    u64 link, base;
    asm volatile("la %1, 1f\n jal %0, 1f\n 1:" : "=r"(link), "=r"(base));
    p("jal.link.rel", link - base);
    asm volatile("jal %0, 1f\n li %0, 0\n 1: la %1, 1b" : "=r"(link), "=r"(base));
    p("jal.skip.link.rel", base - link);
    /* jalr clears bit 0 of the target (unprivileged spec 2.5.1). */
    asm volatile("la t0, 1f\n addi t0, t0, 1\n jalr %0, 0(t0)\n li %0, 0\n 1: la %1, 1b"
                 : "=r"(link), "=r"(base)
                 : : "t0");
    p("jalr.odd-target.link.rel", base - link);
    /* jalr with a negative offset and rd == rs1: the old rs1 is used for the target. */
    asm volatile("la %0, 1f + 8\n jalr %0, -8(%0)\n li %0, 0\n 1: la %1, 1b"
                 : "=&r"(link), "=r"(base));
    p("jalr.rd-eq-rs1.link.rel", base - link);
    void (*fp)(void) = jump_target;
    fp();
    fp();
    p("jalr.call.count", jump_target_value);
    /* jal x0 / jalr x0 do not write x0. */
    u64 zero;
    asm volatile("jal x0, 1f\n 1: la t0, 2f\n jalr x0, 0(t0)\n 2: mv %0, x0" : "=r"(zero) : : "t0");
    p("jal.x0", zero);
}

static u8 buffer[64] __attribute__((aligned(16)));

static void fill_buffer(void)
{
    for (unsigned i = 0; i < sizeof buffer; i++)
        buffer[i] = (u8)(0x80 + i * 7);
}

#define LOAD(insn, off)                                                                    \
    ({                                                                                     \
        u64 r;                                                                             \
        asm volatile(#insn " %0, %2(%1)" : "=r"(r) : "r"(buffer), "i"(off) : "memory");    \
        r;                                                                                 \
    })

static void loads(void)
{
    fill_buffer();
#define L(insn, off) p(#insn "." #off, LOAD(insn, off))
    L(lb, 0);
    L(lb, 1);
    L(lb, 7);
    L(lb, 20);
    L(lbu, 0);
    L(lbu, 1);
    L(lbu, 20);
    L(lh, 0);
    L(lh, 2);
    L(lh, 14);
    L(lhu, 0);
    L(lhu, 2);
    L(lhu, 14);
    L(lw, 0);
    L(lw, 4);
    L(lw, 12);
    L(lw, 16);
    L(lwu, 0);
    L(lwu, 4);
    L(lwu, 12);
    L(ld, 0);
    L(ld, 8);
    L(ld, 24);
    /* Misaligned scalar loads: QEMU performs them; the result must match. */
    L(lh, 1);
    L(lhu, 3);
    L(lw, 1);
    L(lw, 6);
    L(lwu, 3);
    L(ld, 3);
    L(ld, 12);
#undef L
    /* Negative offset from a base past the buffer. */
    u64 r;
    asm volatile("ld %0, -8(%1)" : "=r"(r) : "r"(buffer + 16) : "memory");
    p("ld.negative-offset", r);
}

static void dump_buffer(const char *name)
{
    for (unsigned i = 0; i < 32; i += 8) {
        put_str(name);
        put_char('.');
        put_dec(i);
        put_char(' ');
        put_hex(*(u64 *)(buffer + i), 16);
        put_char('\n');
    }
}

static void stores(void)
{
    u64 v = 0x0123456789abcdefUL;
    fill_buffer();
    asm volatile("sb %0, 0(%1)\n sb %0, 3(%1)\n sb %0, 31(%1)" ::"r"(v), "r"(buffer) : "memory");
    dump_buffer("sb");
    fill_buffer();
    asm volatile("sh %0, 0(%1)\n sh %0, 6(%1)\n sh %0, 30(%1)" ::"r"(v), "r"(buffer) : "memory");
    dump_buffer("sh");
    fill_buffer();
    asm volatile("sw %0, 0(%1)\n sw %0, 12(%1)\n sw %0, 28(%1)" ::"r"(v), "r"(buffer) : "memory");
    dump_buffer("sw");
    fill_buffer();
    asm volatile("sd %0, 0(%1)\n sd %0, 16(%1)" ::"r"(v), "r"(buffer) : "memory");
    dump_buffer("sd");
    fill_buffer();
    /* Misaligned stores, including one crossing an 8-byte boundary. */
    asm volatile("sh %0, 1(%1)\n sw %0, 7(%1)\n sd %0, 13(%1)" ::"r"(v), "r"(buffer) : "memory");
    dump_buffer("store.misaligned");
    fill_buffer();
    asm volatile("sd %0, -8(%1)" ::"r"(v), "r"(buffer + 32) : "memory");
    dump_buffer("sd.negative-offset");
    /* Store then load the same address through a different width. */
    u64 r;
    asm volatile("sw %1, 0(%2)\n lb %0, 3(%2)" : "=r"(r) : "r"(0x80706050UL), "r"(buffer) : "memory");
    p("sw-lb.forward", r);
}

static void misc(void)
{
    /* Writes to x0 are discarded. */
    u64 r;
    asm volatile("addi x0, x0, 5\n li x0, 7\n add %0, x0, x0" : "=r"(r));
    p("x0.hardwired", r);
    asm volatile("fence\n fence rw, rw\n fence r, w\n fence.tso\n nop" ::: "memory");
    p("fence.ok", 1);
}

int main(void)
{
    for (unsigned k = 0; k < sizeof rr_ops / sizeof rr_ops[0]; k++)
        for (unsigned i = 0; i < N_VALUES; i++)
            for (unsigned j = 0; j < N_VALUES; j++)
                print_indexed(rr_ops[k].name, i, j, rr_ops[k].f(values[i], values[j]));
    immediates();
    upper_immediates();
    branches();
    jumps();
    loads();
    stores();
    misc();
    return 0;
}
