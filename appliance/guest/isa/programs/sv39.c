/* Sv39 virtual memory (privileged spec 4.3, 4.4): page tables with 4 KiB, 2 MiB and 1 GiB
   pages, page faults with stval, hardware-set A and D bits, U/S permission, SUM, MXR, MPRV,
   sfence.vma after a remap, reserved PTE encodings, misaligned superpages, non-canonical
   addresses, and satp writes of unsupported modes. */
#include "rt.h"

#define PTE_V (1UL << 0)
#define PTE_R (1UL << 1)
#define PTE_W (1UL << 2)
#define PTE_X (1UL << 3)
#define PTE_U (1UL << 4)
#define PTE_G (1UL << 5)
#define PTE_A (1UL << 6)
#define PTE_D (1UL << 7)

#define SATP_SV39 (8UL << 60)

static u64 root[512] __attribute__((aligned(4096)));
static u64 l1[512] __attribute__((aligned(4096)));
static u64 l0[512] __attribute__((aligned(4096)));
static u8 pages[8][4096] __attribute__((aligned(4096)));

/* Virtual layout (root[1] covers 0x40000000..0x7fffffff). */
#define VA_4K_RW_NOAD 0x40000000UL /* pages[0], RW, A = D = 0 */
#define VA_4K_USER 0x40001000UL    /* pages[1], RW U */
#define VA_4K_RO 0x40002000UL      /* pages[2], R */
#define VA_4K_XO 0x40003000UL      /* pages[3], X only */
#define VA_4K_INVALID 0x40004000UL /* V = 0 */
#define VA_4K_W_ONLY 0x40005000UL  /* W without R: reserved */
#define VA_4K_UCODE 0x40006000UL   /* pages[4], R X U: code run in U-mode */
#define VA_4K_REMAP 0x40007000UL   /* pages[5], later pages[6] */
#define VA_4K_RW_A 0x40008000UL    /* pages[7], RW, A = 1, D = 0 */
#define VA_2M 0x40200000UL         /* 2 MiB page at PA 0x80400000 */
#define VA_2M_MISALIGNED 0x40400000UL
#define VA_1G 0xc0000000UL /* 1 GiB page aliasing RAM at 0x80000000 */
#define PA_2M 0x80400000UL

static u64 pte(u64 pa, u64 flags)
{
    return ((pa >> 12) << 10) | flags;
}

static void build_tables(void)
{
    /* Identity maps so the runtime keeps working in S-mode: devices and RAM, not U. */
    root[0] = pte(0, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
    root[1] = pte((u64)l1, PTE_V);
    root[2] = pte(0x80000000UL, PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D);
    root[3] = pte(0x80000000UL, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
    l1[0] = pte((u64)l0, PTE_V);
    l1[1] = pte(PA_2M, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
    l1[2] = pte(PA_2M + 0x1000, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
    l0[0] = pte((u64)pages[0], PTE_V | PTE_R | PTE_W);
    l0[1] = pte((u64)pages[1], PTE_V | PTE_R | PTE_W | PTE_U | PTE_A | PTE_D);
    l0[2] = pte((u64)pages[2], PTE_V | PTE_R | PTE_A);
    l0[3] = pte((u64)pages[3], PTE_V | PTE_X | PTE_A);
    l0[4] = 0;
    l0[5] = pte((u64)pages[2], PTE_V | PTE_W | PTE_A | PTE_D);
    l0[6] = pte((u64)pages[4], PTE_V | PTE_R | PTE_X | PTE_U | PTE_A);
    l0[7] = pte((u64)pages[5], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
    l0[8] = pte((u64)pages[7], PTE_V | PTE_R | PTE_W | PTE_A);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4096; j += 8)
            *(u64 *)&pages[i][j] = 0x1111111111111111UL * (u64)(i + 1) + (u64)j;
    *(volatile u64 *)PA_2M = 0x2222000000000000UL;
    *(volatile u64 *)(PA_2M + 0x1ffff8) = 0x2222ffffffffffffUL;
}

/* Minimal RV64I encoders for the U-mode code page. */
static u32 enc_i(u32 opcode, u32 rd, u32 funct3, u32 rs1, i32 imm)
{
    return ((u32)(imm & 0xfff) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode;
}
static u32 enc_s(u32 funct3, u32 rs1, u32 rs2, i32 imm)
{
    return ((u32)((imm >> 5) & 0x7f) << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) |
           ((u32)(imm & 0x1f) << 7) | 0x23;
}
#define A0 10
#define A1 11
#define A7 17

/* Appends "li a7, MAGIC_RETURN; ecall" at code[i]. */
static unsigned emit_return(u32 *code, unsigned i)
{
    u32 upper = (MAGIC_RETURN + 0x800) >> 12;
    i32 lower = (i32)(MAGIC_RETURN - (upper << 12));
    code[i++] = (upper << 12) | (A7 << 7) | 0x37;
    code[i++] = enc_i(0x1b, A7, 0, A7, lower);
    code[i++] = 0x00000073;
    return i;
}

#define UCODE_LOAD 0x000
#define UCODE_STORE 0x040
#define UCODE_JUMP 0x080
#define UCODE_STUB 0x0c0

static void build_user_code(void)
{
    u32 *code = (u32 *)pages[4];
    unsigned i = UCODE_LOAD / 4;
    code[i++] = enc_i(0x03, A0, 3, A0, 0); /* ld a0, 0(a0) */
    emit_return(code, i);
    i = UCODE_STORE / 4;
    code[i++] = enc_s(3, A0, A0, 0); /* sd a0, 0(a0) */
    code[i++] = enc_i(0x13, A0, 0, 0, 1); /* li a0, 1 */
    emit_return(code, i);
    i = UCODE_JUMP / 4;
    code[i++] = enc_i(0x67, 0, 0, A0, 0); /* jalr x0, 0(a0) */
    emit_return(code, i);
    emit_return(code, UCODE_STUB / 4);
    asm volatile("fence.i" ::: "memory");
}

/* Faults from U-mode code (not identity mapped) are skipped by fixed length here; a fetch
   fault resumes at the return stub. */
static int s_user_fault(struct frame *f, u64 cause, u64 epc, u64 tval)
{
    if ((i64)cause < 0 || (CSR_READ(sstatus) & MSTATUS_SPP))
        return 0;
    s_last.count++;
    s_last.cause = cause;
    s_last.epc = epc;
    s_last.tval = tval;
    s_last.previous_mode = 0;
    f->x[10] = 0xdead;
    if (cause == 12)
        CSR_WRITE(sepc, VA_4K_UCODE + UCODE_STUB);
    else
        CSR_WRITE(sepc, epc + 4);
    return 1;
}

static long s_load(long va)
{
    return (long)*(volatile u64 *)va;
}

static long s_store(long va)
{
    *(volatile u64 *)va = 0x5a5a5a5a5a5a5a5aUL;
    return 1;
}

static long s_fetch(long va)
{
    return ((long (*)(void))va)();
}

/* Sets sstatus bits from S-mode, runs a load, clears them again. */
static u64 s_status_bits;
static long s_load_with_status(long va)
{
    asm volatile("csrs sstatus, %0" ::"r"(s_status_bits));
    long r = s_load(va);
    asm volatile("csrc sstatus, %0" ::"r"(s_status_bits));
    return r;
}

static long s_remap(long unused)
{
    u64 before = *(volatile u64 *)VA_4K_REMAP;
    l0[7] = pte((u64)pages[6], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
    asm volatile("sfence.vma %0, zero" ::"r"(VA_4K_REMAP) : "memory");
    u64 after = *(volatile u64 *)VA_4K_REMAP;
    l0[7] = pte((u64)pages[5], PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
    asm volatile("sfence.vma" ::: "memory");
    u64 back = *(volatile u64 *)VA_4K_REMAP;
    return (long)((before == *(u64 *)pages[5]) | (after == *(u64 *)pages[6]) << 1 |
                  (back == *(u64 *)pages[5]) << 2);
}

static void s_case(const char *name, long (*fn)(long), u64 va)
{
    clear_traps();
    long r = enter_mode(MODE_S, fn, (long)va);
    p2(name, "value", (u64)r);
    print_s_trap(name);
}

static void u_case(const char *name, u64 entry, u64 arg)
{
    clear_traps();
    long r = enter_mode_direct(MODE_U, entry, (long)arg);
    p2(name, "value", (u64)r);
    print_s_trap(name);
}

static void satp_modes(void)
{
    u64 sv39 = SATP_SV39 | ((u64)root >> 12);
    CSR_WRITE(satp, sv39);
    /* Sv48 (9) and Sv57 (10) are optional: an implementation without them ignores the write
       (WARL, 4.1.11); QEMU 7.2 implements them. Either outcome is legal, so what is
       compared is that the value read back is one of the two. */
    u64 sv48 = (9UL << 60) | ((u64)root >> 12);
    CSR_WRITE(satp, sv48);
    u64 r = CSR_READ(satp);
    p("satp.sv48.readback-old-or-new", r == sv39 || r == sv48);
    CSR_WRITE(satp, sv39);
    u64 sv57 = (10UL << 60) | ((u64)root >> 12);
    CSR_WRITE(satp, sv57);
    r = CSR_READ(satp);
    p("satp.sv57.readback-old-or-new", r == sv39 || r == sv57);
    /* Reserved modes are never accepted. */
    CSR_WRITE(satp, sv39);
    CSR_WRITE(satp, (5UL << 60) | 0x1234);
    p("satp.mode5.ignored", CSR_READ(satp) == sv39);
    CSR_WRITE(satp, (15UL << 60) | 0x1234);
    p("satp.mode15.ignored", CSR_READ(satp) == sv39);
    CSR_WRITE(satp, 0);
    p("satp.bare", CSR_READ(satp));
    CSR_WRITE(satp, sv39);
    p("satp.sv39.readback", CSR_READ(satp) == sv39);
}

int main(void)
{
    build_tables();
    build_user_code();
    satp_modes();
    CSR_WRITE(satp, SATP_SV39 | ((u64)root >> 12));
    asm volatile("sfence.vma" ::: "memory");

    /* Page faults go to S, as under Linux. */
    CSR_WRITE(medeleg, (1UL << 12) | (1UL << 13) | (1UL << 15));
    s_skip = 1;
    m_skip = 1;
    s_hook = s_user_fault;

    /* Hardware A/D update (4.3.1 "Svadu" behaviour in QEMU): a load sets A, a store sets D. */
    p("pte.noad.before", l0[0] & 0xff);
    s_case("s.load.4k-noad", s_load, VA_4K_RW_NOAD + 8);
    p("pte.noad.after-load", l0[0] & 0xff);
    s_case("s.store.4k-noad", s_store, VA_4K_RW_NOAD + 16);
    p("pte.noad.after-store", l0[0] & 0xff);
    p("pte.noad.store.mem", *(u64 *)&pages[0][16]);
    s_case("s.store.4k-a-not-d", s_store, VA_4K_RW_A);
    p("pte.a-not-d.after-store", l0[8] & 0xff);

    /* Superpages. */
    s_case("s.load.2m.first", s_load, VA_2M);
    s_case("s.load.2m.last", s_load, VA_2M + 0x1ffff8);
    s_case("s.load.2m.misaligned-superpage", s_load, VA_2M_MISALIGNED);
    static u64 one_gig_probe = 0x1a2b3c4d5e6f7788UL;
    s_case("s.load.1g-alias", s_load, VA_1G + ((u64)&one_gig_probe - 0x80000000UL));
    s_case("s.fetch.1g-no-x", s_fetch, VA_1G + ((u64)s_load - 0x80000000UL));

    /* Permission faults: cause 13 load, 15 store, 12 fetch; stval = virtual address. */
    s_case("s.store.read-only", s_store, VA_4K_RO + 0x18);
    s_case("s.load.invalid", s_load, VA_4K_INVALID + 0x20);
    s_case("s.load.w-only-reserved", s_load, VA_4K_W_ONLY);
    s_case("s.load.execute-only", s_load, VA_4K_XO);
    s_case("s.fetch.no-x", s_fetch, VA_4K_RO);
    s_case("s.load.non-canonical", s_load, 0x0000008000000000UL);
    s_case("s.load.non-canonical-high", s_load, 0xffff000040000000UL);
    s_case("s.load.unmapped-root", s_load, 0x0000004000000000UL - 0x1000);

    /* U pages from S: denied unless SUM; never executable from S (4.3.1). */
    s_case("s.load.user-page.sum0", s_load, VA_4K_USER);
    s_status_bits = MSTATUS_SUM;
    s_case("s.load.user-page.sum1", s_load_with_status, VA_4K_USER);
    s_case("s.fetch.user-page", s_fetch, VA_4K_UCODE + UCODE_STUB);
    /* MXR makes execute-only pages readable. */
    s_status_bits = MSTATUS_MXR;
    s_case("s.load.execute-only.mxr1", s_load_with_status, VA_4K_XO);

    /* sfence.vma after changing a PTE. */
    s_case("s.remap.sfence", s_remap, 0);

    /* U-mode: own page readable, S pages are not, jumping to an S page faults. */
    u_case("u.load.user-page", VA_4K_UCODE + UCODE_LOAD, VA_4K_USER + 8);
    u_case("u.store.user-page", VA_4K_UCODE + UCODE_STORE, VA_4K_USER + 0x10);
    p("u.store.user-page.mem", *(u64 *)&pages[1][0x10]);
    u_case("u.load.supervisor-page", VA_4K_UCODE + UCODE_LOAD, VA_4K_RW_NOAD);
    u_case("u.store.code-page", VA_4K_UCODE + UCODE_STORE, VA_4K_UCODE + 0x800);
    u_case("u.fetch.supervisor-page", VA_4K_UCODE + UCODE_JUMP, VA_4K_RO);

    /* MPRV: M-mode loads translated with MPP's privilege (3.1.6.3). */
    s_hook = 0;
    CSR_WRITE(medeleg, 0);
    u64 mstatus = CSR_READ(mstatus);
    CSR_CLEAR(mstatus, MSTATUS_MPP);
    CSR_SET(mstatus, (1UL << 11) | MSTATUS_MPRV);
    u64 via_mprv = *(volatile u64 *)VA_2M;
    CSR_CLEAR(mstatus, MSTATUS_MPRV);
    p("m.mprv-s.load.2m", via_mprv);
    clear_traps();
    u64 r = 0x77;
    CSR_SET(mstatus, MSTATUS_MPRV);
    asm volatile("ld %0, 0(%1)" : "+r"(r) : "r"(VA_4K_INVALID));
    CSR_CLEAR(mstatus, MSTATUS_MPRV);
    print_m_trap("m.mprv-s.load.invalid");
    /* Without MPRV, M-mode ignores satp: the physical identity address reads the same data. */
    p("m.bare.load", *(volatile u64 *)PA_2M);
    CSR_WRITE(mstatus, mstatus);
    CSR_WRITE(satp, 0);
    s_skip = 0;
    m_skip = 0;
    return 0;
}
