/* External interrupts through the PLIC (platform-level interrupt controller spec: priority,
   enable, threshold, claim/complete) from the ns16550a UART's transmitter-empty interrupt
   (source 10 on QEMU virt), taken in M (context 0, mcause 11) and, delegated, in S
   (context 1, scause 9); the UART's IER/IIR/LSR registers as the 8250 driver uses them. */
#include "rt.h"

#define PLIC_BASE 0x0c000000UL
#define PLIC_PRIORITY(source) (PLIC_BASE + 4 * (source))
#define PLIC_PENDING (PLIC_BASE + 0x1000)
#define PLIC_ENABLE(context) (PLIC_BASE + 0x2000 + 0x80 * (context))
#define PLIC_THRESHOLD(context) (PLIC_BASE + 0x200000 + 0x1000 * (context))
#define PLIC_CLAIM(context) (PLIC_BASE + 0x200004 + 0x1000 * (context))
#define UART_IRQ 10

#define UART_IER 1
#define UART_IIR 2
#define UART_LCR 3
#define UART_LSR 5
#define UART_SCR 7
#define IER_THRI 0x02

#define MIP_SEIP (1UL << 9)
#define MIP_MEIP (1UL << 11)
#define WAIT_ITERATIONS 2000000

static volatile u32 *reg32(u64 address)
{
    return (volatile u32 *)address;
}
static volatile u8 *uart(unsigned offset)
{
    return (volatile u8 *)(UART_BASE + offset);
}

static volatile u64 taken, last_cause, last_claim, claims_total;
static volatile u64 claim_context;

/* Claim, quiet the UART, complete (PLIC spec: claim returns the highest-priority pending
   source and clears its pending bit; completion re-arms it). */
static void service(void)
{
    u32 source = *reg32(PLIC_CLAIM(claim_context));
    last_claim = source;
    claims_total++;
    *uart(UART_IER) = 0;
    *reg32(PLIC_CLAIM(claim_context)) = source;
}

static int m_external(struct frame *f, u64 cause, u64 epc, u64 tval)
{
    if (cause != (1UL << 63 | 11))
        return 0;
    taken++;
    last_cause = cause;
    service();
    return 1;
}

static int s_external(struct frame *f, u64 cause, u64 epc, u64 tval)
{
    if (cause != (1UL << 63 | 9))
        return 0;
    taken++;
    last_cause = cause | (1UL << 62); /* bit 62 marks "taken in S" */
    service();
    return 1;
}

static void wait_taken(void)
{
    for (int i = 0; i < WAIT_ITERATIONS && !taken; i++) {
    }
}

static void uart_registers(void)
{
    /* Scratch register round trip; LCR as written; THR empty and transmitter idle in LSR. */
    *uart(UART_SCR) = 0xa5;
    p("uart.scr", *uart(UART_SCR));
    *uart(UART_LCR) = 0x03;
    p("uart.lcr", *uart(UART_LCR));
    p("uart.lsr.thre-temt", *uart(UART_LSR) & 0x60);
    /* No interrupt enabled: IIR says none pending (bit 0 set). */
    *uart(UART_IER) = 0;
    p("uart.iir.none.bit0", *uart(UART_IIR) & 1);
    /* THRI enabled with THR empty: IIR reports THR empty (0x2). */
    *uart(UART_IER) = IER_THRI;
    p("uart.iir.thri", *uart(UART_IIR) & 0x0f);
    *uart(UART_IER) = 0;
}

static void machine_external(void)
{
    *reg32(PLIC_PRIORITY(UART_IRQ)) = 1;
    p("plic.priority", *reg32(PLIC_PRIORITY(UART_IRQ)));
    *reg32(PLIC_ENABLE(0)) = 1u << UART_IRQ;
    p("plic.enable.context0", *reg32(PLIC_ENABLE(0)));
    *reg32(PLIC_THRESHOLD(0)) = 0;
    claim_context = 0;
    CSR_WRITE(mie, MIP_MEIP);
    /* The source becomes pending when the UART raises it: mip.MEIP follows. */
    *uart(UART_IER) = IER_THRI;
    p("plic.pending.uart", (*reg32(PLIC_PENDING) >> UART_IRQ) & 1);
    p("mip.meip.before-enable", (CSR_READ(mip) & MIP_MEIP) != 0);
    taken = 0;
    CSR_SET(mstatus, MSTATUS_MIE);
    wait_taken();
    CSR_CLEAR(mstatus, MSTATUS_MIE);
    p("m.external.taken", taken);
    p("m.external.cause", last_cause);
    p("m.external.claim", last_claim);
    p("mip.meip.after-complete", (CSR_READ(mip) & MIP_MEIP) != 0);
    /* Threshold at or above the priority masks the source (PLIC spec, threshold). */
    *reg32(PLIC_THRESHOLD(0)) = 1;
    *uart(UART_IER) = IER_THRI;
    p("mip.meip.masked-by-threshold", (CSR_READ(mip) & MIP_MEIP) != 0);
    p("plic.pending.masked", (*reg32(PLIC_PENDING) >> UART_IRQ) & 1);
    *uart(UART_IER) = 0;
    /* A level-triggered request accepted by the PLIC core stays pending after the device
       deasserts, until claimed (PLIC spec, "Interrupt Gateways"). */
    p("plic.pending.after-deassert", (*reg32(PLIC_PENDING) >> UART_IRQ) & 1);
    *reg32(PLIC_THRESHOLD(0)) = 0;
    u32 stale = *reg32(PLIC_CLAIM(0));
    p("plic.claim.after-deassert", stale);
    if (stale)
        *reg32(PLIC_CLAIM(0)) = stale;
    /* A claim with nothing pending returns 0. */
    p("plic.claim.nothing-pending", *reg32(PLIC_CLAIM(0)));
    *reg32(PLIC_ENABLE(0)) = 0;
    CSR_WRITE(mie, 0);
}

static long s_wait(long unused)
{
    asm volatile("csrs sstatus, %0" ::"r"(MSTATUS_SIE));
    wait_taken();
    asm volatile("csrc sstatus, %0" ::"r"(MSTATUS_SIE));
    return (long)taken;
}

static void supervisor_external(void)
{
    /* Context 1 is hart 0's S-mode context on QEMU virt; SEIP delegated to S. */
    *reg32(PLIC_ENABLE(1)) = 1u << UART_IRQ;
    *reg32(PLIC_THRESHOLD(1)) = 0;
    claim_context = 1;
    CSR_WRITE(mideleg, MIP_SEIP);
    CSR_WRITE(mie, MIP_SEIP);
    taken = 0;
    *uart(UART_IER) = IER_THRI;
    p("mip.seip.pending", (CSR_READ(mip) & MIP_SEIP) != 0);
    enter_mode(MODE_S, s_wait, 0);
    p("s.external.taken", taken);
    p("s.external.cause", last_cause);
    p("s.external.claim", last_claim);
    *reg32(PLIC_ENABLE(1)) = 0;
    CSR_WRITE(mideleg, 0);
    CSR_WRITE(mie, 0);
}

int main(void)
{
    m_hook = m_external;
    s_hook = s_external;
    uart_registers();
    machine_external();
    supervisor_external();
    p("claims.total", claims_total);
    return 0;
}
