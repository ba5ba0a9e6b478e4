/* Synchronous exceptions (privileged spec 3.1.15, 3.3): illegal instructions, ecall from each
   mode, ebreak, access faults on unmapped physical addresses, privileged instructions in the
   wrong mode, mstatus.TVM/TW/TSR. Each trap prints mcause, mepc, mtval and the previous mode. */
#include "rt.h"

/* Unmapped in the QEMU virt memory map (between the RTC and the CLINT). */
#define UNMAPPED 0x00800000UL

static long do_ecall(long unused)
{
    register long a0 asm("a0") = 0x1234;
    register long a7 asm("a7") = 7;
    asm volatile("ecall" : "+r"(a0) : "r"(a7) : "memory");
    return a0;
}

static long do_ebreak(long unused)
{
    asm volatile("ebreak");
    return 1;
}

static long do_illegal_custom(long unused)
{
    asm volatile(".4byte 0x0000000b");
    return 1;
}

static long do_load_unmapped(long unused)
{
    return *(volatile u64 *)UNMAPPED;
}

static long do_sret(long unused)
{
    asm volatile("sret");
    return 1;
}

static long do_mret(long unused)
{
    asm volatile("mret");
    return 1;
}

static long do_wfi(long unused)
{
    asm volatile("wfi");
    return 1;
}

static long do_sfence(long unused)
{
    asm volatile("sfence.vma");
    return 1;
}

static long do_read_mstatus(long unused)
{
    u64 r;
    asm volatile("csrr %0, mstatus" : "=r"(r));
    return 1;
}

static long do_read_sstatus(long unused)
{
    u64 r;
    asm volatile("csrr %0, sstatus" : "=r"(r));
    return 1;
}

static long do_write_satp(long unused)
{
    asm volatile("csrw satp, zero");
    return 1;
}

static long do_fetch_unmapped(long unused)
{
    ((void (*)(void))UNMAPPED)();
    return 1;
}

struct lower_case {
    const char *name;
    long (*fn)(long);
};

static void run_lower(const char *mode_name, long mode, const struct lower_case *cases, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        clear_traps();
        enter_mode(mode, cases[i].fn, 0);
        char name[64];
        unsigned k = 0;
        for (const char *c = mode_name; *c && k < 30; c++)
            name[k++] = *c;
        name[k++] = '.';
        for (const char *c = cases[i].name; *c && k < 62; c++)
            name[k++] = *c;
        name[k] = 0;
        print_m_trap(name);
    }
}

int main(void)
{
    m_skip = 1;

    /* M-mode traps. */
    clear_traps();
    asm volatile("unimp");
    print_m_trap("m.unimp");
    clear_traps();
    asm volatile(".4byte 0x0000000b");
    print_m_trap("m.custom-0");
    clear_traps();
    asm volatile(".4byte 0xffffffff");
    print_m_trap("m.all-ones");
    clear_traps();
    p("m.ecall.a0", do_ecall(0));
    print_m_trap("m.ecall");
    clear_traps();
    asm volatile("ebreak");
    print_m_trap("m.ebreak");
    clear_traps();
    u64 r = 0x77;
    asm volatile("ld %0, 0(%1)" : "+r"(r) : "r"(UNMAPPED));
    print_m_trap("m.load-access-fault");
    p("m.load-access-fault.rd-unchanged", r);
    clear_traps();
    asm volatile("sw %0, 0(%1)" ::"r"(r), "r"(UNMAPPED + 4));
    print_m_trap("m.store-access-fault");
    clear_traps();
    asm volatile("amoadd.d %0, %1, (%2)" : "+r"(r) : "r"(1UL), "r"(UNMAPPED + 8));
    /* The spec names cause 7 (store/AMO access fault); QEMU 7.2 reports 5, so only "an
       access fault" is compared. */
    p("m.amo-access-fault.cause-is-access-fault", m_last.cause == 5 || m_last.cause == 7);
    p("m.amo-access-fault.epc", m_last.epc);
    p("m.amo-access-fault.tval", m_last.tval);
    clear_traps();
    do_fetch_unmapped(0);
    print_m_trap("m.fetch-access-fault");
    /* A trap saves MIE in MPIE; the handler's mret restores MIE from MPIE, sets MPIE and
       leaves MPP = U, the least-privileged mode (3.1.6.1, 3.3.2). */
    CSR_SET(mstatus, MSTATUS_MIE);
    CSR_WRITE(mie, 0);
    clear_traps();
    asm volatile("unimp");
    p("m.after-trap-and-mret.mstatus.mie-mpie-mpp", CSR_READ(mstatus) & (MSTATUS_MIE | MSTATUS_MPIE | MSTATUS_MPP));
    CSR_CLEAR(mstatus, MSTATUS_MIE);

    static const struct lower_case s_cases[] = {
        {"ecall", do_ecall},           {"ebreak", do_ebreak},
        {"custom-0", do_illegal_custom}, {"load-access-fault", do_load_unmapped},
        {"mret", do_mret},             {"read-mstatus", do_read_mstatus},
        {"fetch-access-fault", do_fetch_unmapped},
    };
    run_lower("s", MODE_S, s_cases, sizeof s_cases / sizeof s_cases[0]);

    static const struct lower_case u_cases[] = {
        {"ecall", do_ecall},           {"ebreak", do_ebreak},
        {"custom-0", do_illegal_custom}, {"load-access-fault", do_load_unmapped},
        {"sret", do_sret},             {"mret", do_mret},
        {"wfi", do_wfi},               {"sfence.vma", do_sfence},
        {"read-sstatus", do_read_sstatus}, {"write-satp", do_write_satp},
    };
    run_lower("u", MODE_U, u_cases, sizeof u_cases / sizeof u_cases[0]);

    /* mstatus.TVM traps satp and sfence.vma in S; TW traps wfi in S; TSR traps sret in S
       (3.1.6.5). */
    static const struct lower_case tvm_cases[] = {
        {"write-satp", do_write_satp},
        {"sfence.vma", do_sfence},
    };
    CSR_SET(mstatus, 1UL << 20);
    run_lower("s.tvm", MODE_S, tvm_cases, 2);
    CSR_CLEAR(mstatus, 1UL << 20);
    static const struct lower_case tw_cases[] = {{"wfi", do_wfi}};
    CSR_SET(mstatus, 1UL << 21);
    run_lower("s.tw", MODE_S, tw_cases, 1);
    CSR_CLEAR(mstatus, 1UL << 21);
    static const struct lower_case tsr_cases[] = {{"sret", do_sret}};
    CSR_SET(mstatus, 1UL << 22);
    run_lower("s.tsr", MODE_S, tsr_cases, 1);
    CSR_CLEAR(mstatus, 1UL << 22);
    /* Without TVM, satp and sfence.vma are legal in S. */
    clear_traps();
    enter_mode(MODE_S, do_write_satp, 0);
    enter_mode(MODE_S, do_sfence, 0);
    p("s.satp-sfence.no-tvm.trap-count", m_last.count);
    m_skip = 0;
    return 0;
}
