/* Trap delegation and privilege returns (privileged spec 3.1.8, 3.3.2, 4.1.1): medeleg sends
   U-mode exceptions to S-mode, traps from M are never delegated, sret/mret restore the
   interrupt-enable stack and privilege. */
#include "rt.h"

static long u_ecall(long v)
{
    register long a0 asm("a0") = v;
    register long a7 asm("a7") = 1;
    asm volatile("ecall" : "+r"(a0) : "r"(a7) : "memory");
    return a0 + 1;
}

static long u_illegal(long v)
{
    asm volatile(".4byte 0x0000000b");
    return v;
}

static long u_ebreak(long v)
{
    asm volatile("ebreak");
    return v;
}

static long u_load_fault(long v)
{
    return *(volatile u32 *)0x00800000UL + v;
}

/* In S-mode: sret to a label in S with SPP = S, SPIE = 1, SIE = 0; afterwards SIE = 1,
   SPIE = 1, SPP = U (4.1.1, 3.3.2). Returns the sstatus bits after the sret. */
static long s_sret_stack(long unused)
{
    u64 after;
    asm volatile("csrc sstatus, %1\n"
                 "csrs sstatus, %2\n"
                 "la t0, 1f\n"
                 "csrw sepc, t0\n"
                 "sret\n"
                 "1: csrr %0, sstatus\n"
                 : "=r"(after)
                 : "r"(MSTATUS_SIE), "r"(MSTATUS_SPIE | MSTATUS_SPP)
                 : "t0", "memory");
    /* Keep S interrupts off again. */
    asm volatile("csrc sstatus, %0" ::"r"(MSTATUS_SIE));
    return (long)(after & (MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP));
}

/* In S-mode: an ecall from S is not delegated here (medeleg[9] clear) and goes to M. */
static long s_ecall(long v)
{
    register long a0 asm("a0") = v;
    register long a7 asm("a7") = 1;
    asm volatile("ecall" : "+r"(a0) : "r"(a7) : "memory");
    return a0;
}

/* In S-mode: an illegal instruction in S is delegated to S itself when medeleg[2] is set. */
static long s_illegal(long v)
{
    asm volatile(".4byte 0x0000000b");
    return v + 1;
}

int main(void)
{
    s_skip = 1;
    m_skip = 1;
    /* Delegate illegal instruction (2), breakpoint (3), load access fault (5), ecall from U
       (8). */
    CSR_WRITE(medeleg, (1UL << 2) | (1UL << 3) | (1UL << 5) | (1UL << 8));

    clear_traps();
    p("u.ecall.delegated.return", enter_mode(MODE_U, u_ecall, 41));
    print_s_trap("u.ecall.delegated.s");
    p("u.ecall.delegated.m-count", m_last.count);

    clear_traps();
    p("u.illegal.delegated.return", enter_mode(MODE_U, u_illegal, 5));
    print_s_trap("u.illegal.delegated.s");
    p("u.illegal.delegated.m-count", m_last.count);

    clear_traps();
    enter_mode(MODE_U, u_ebreak, 0);
    print_s_trap("u.ebreak.delegated.s");

    clear_traps();
    enter_mode(MODE_U, u_load_fault, 0);
    print_s_trap("u.load-fault.delegated.s");

    clear_traps();
    p("s.illegal.delegated.return", enter_mode(MODE_S, s_illegal, 7));
    print_s_trap("s.illegal.delegated.s");
    p("s.illegal.delegated.m-count", m_last.count);

    clear_traps();
    p("s.ecall.not-delegated.return", enter_mode(MODE_S, s_ecall, 3));
    print_m_trap("s.ecall.not-delegated.m");
    p("s.ecall.not-delegated.s-count", s_last.count);

    /* Traps taken in M are never delegated (3.1.8). */
    clear_traps();
    asm volatile(".4byte 0x0000000b");
    print_m_trap("m.illegal.with-medeleg.m");
    p("m.illegal.with-medeleg.s-count", s_last.count);

    /* Without delegation the same U ecall goes to M. */
    CSR_WRITE(medeleg, 0);
    clear_traps();
    enter_mode(MODE_U, u_ecall, 0);
    print_m_trap("u.ecall.not-delegated.m");
    p("u.ecall.not-delegated.s-count", s_last.count);

    /* sret stack. */
    p("s.sret.sstatus.sie-spie-spp", enter_mode(MODE_S, s_sret_stack, 0));

    /* Not compared: privileged 1.12 says mret to a mode below M clears MPRV (3.1.6.3), but
       QEMU 7.2 leaves it set. */

    /* The S trap CSRs as left by the last delegated trap are readable from M. */
    p("sstatus.spp-after-delegated-s-trap", (CSR_READ(sstatus) >> 8) & 1);
    s_skip = 0;
    m_skip = 0;
    return 0;
}
