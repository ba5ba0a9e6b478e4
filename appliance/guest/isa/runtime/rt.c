/* Shared runtime of the ISA test programs: console, finisher, default trap handlers. */
#include "rt.h"

volatile trap_hook m_hook, s_hook;
volatile struct trap_record m_last, s_last;
volatile int m_skip, s_skip;

void resume_m(long value);

/* ns16550a: wait for THR empty (LSR bit 5), then write THR. */
void put_char(char c)
{
    volatile u8 *uart = (volatile u8 *)UART_BASE;
    while ((uart[5] & 0x20) == 0) {
    }
    uart[0] = (u8)c;
}

void put_str(const char *s)
{
    while (*s)
        put_char(*s++);
}

void put_hex(u64 v, int digits)
{
    put_str("0x");
    for (int i = digits - 1; i >= 0; i--)
        put_char("0123456789abcdef"[(v >> (4 * i)) & 0xf]);
}

void put_dec(i64 v)
{
    char buf[24];
    int n = 0;
    u64 u = v < 0 ? -(u64)v : (u64)v;
    if (v < 0)
        put_char('-');
    do {
        buf[n++] = '0' + (char)(u % 10);
        u /= 10;
    } while (u);
    while (n)
        put_char(buf[--n]);
}

void p(const char *name, u64 v)
{
    put_str(name);
    put_char(' ');
    put_hex(v, 16);
    put_char('\n');
}

void p32(const char *name, u32 v)
{
    put_str(name);
    put_char(' ');
    put_hex(v, 8);
    put_char('\n');
}

void p2(const char *prefix, const char *suffix, u64 v)
{
    put_str(prefix);
    put_char('.');
    p(suffix, v);
}

/* sifive_test: 0x5555 powers off with success, 0x3333 | code << 16 fails with code. */
_Noreturn void exit_(int code)
{
    volatile u32 *finisher = (volatile u32 *)FINISHER_BASE;
    if (code == 0)
        *finisher = 0x5555;
    else
        *finisher = 0x3333 | ((u32)code << 16);
    for (;;) {
    }
}

/* Length of the instruction at epc: 2 for compressed (low bits != 11), else 4 (ISA 1.5). */
static u64 insn_length(u64 epc)
{
    u16 low = *(volatile u16 *)epc;
    return (low & 3) == 3 ? 4 : 2;
}

static int is_fetch_fault(u64 cause)
{
    return cause == 0 || cause == 1 || cause == 12;
}

static void print_unexpected(const char *who, u64 cause, u64 epc, u64 tval)
{
    put_str("unexpected-trap ");
    put_str(who);
    put_str(" cause ");
    put_hex(cause, 16);
    put_str(" epc ");
    put_hex(epc, 16);
    put_str(" tval ");
    put_hex(tval, 16);
    put_char('\n');
}

void m_trap(struct frame *f)
{
    u64 cause = CSR_READ(mcause), epc = CSR_READ(mepc), tval = CSR_READ(mtval);
    u64 mstatus = CSR_READ(mstatus);
    int interrupt = (i64)cause < 0;
    if (!interrupt && (cause == 8 || cause == 9) && f->x[17] == MAGIC_RETURN)
        resume_m((long)f->x[10]);
    if (m_hook && m_hook(f, cause, epc, tval))
        return;
    if (m_skip && !interrupt) {
        m_last.count++;
        m_last.cause = cause;
        m_last.epc = epc;
        m_last.tval = tval;
        m_last.previous_mode = (mstatus >> 11) & 3;
        if (is_fetch_fault(cause))
            CSR_WRITE(mepc, f->x[1]);
        else
            CSR_WRITE(mepc, epc + insn_length(epc));
        return;
    }
    print_unexpected("m", cause, epc, tval);
    exit_(3);
}

void s_trap(struct frame *f)
{
    u64 cause = CSR_READ(scause), epc = CSR_READ(sepc), tval = CSR_READ(stval);
    u64 sstatus = CSR_READ(sstatus);
    int interrupt = (i64)cause < 0;
    if (!interrupt && cause == 8 && f->x[17] == MAGIC_RETURN)
        s_return_to_m((long)f->x[10]);
    if (s_hook && s_hook(f, cause, epc, tval))
        return;
    if (s_skip && !interrupt) {
        s_last.count++;
        s_last.cause = cause;
        s_last.epc = epc;
        s_last.tval = tval;
        s_last.previous_mode = (sstatus >> 8) & 1;
        if (is_fetch_fault(cause))
            CSR_WRITE(sepc, f->x[1]);
        else
            CSR_WRITE(sepc, epc + insn_length(epc));
        return;
    }
    print_unexpected("s", cause, epc, tval);
    exit_(4);
}

_Noreturn void s_return_to_m(long value)
{
    register long a0 asm("a0") = value;
    register long a7 asm("a7") = MAGIC_RETURN;
    asm volatile("ecall" ::"r"(a0), "r"(a7) : "memory");
    for (;;) {
    }
}

static void print_record(const char *name, volatile struct trap_record *r)
{
    p2(name, "count", r->count);
    p2(name, "cause", r->cause);
    p2(name, "epc", r->epc);
    p2(name, "tval", r->tval);
    p2(name, "mode", r->previous_mode);
}

void print_m_trap(const char *name)
{
    print_record(name, &m_last);
}

void print_s_trap(const char *name)
{
    print_record(name, &s_last);
}

void clear_traps(void)
{
    m_last.count = m_last.cause = m_last.epc = m_last.tval = m_last.previous_mode = 0;
    s_last.count = s_last.cause = s_last.epc = s_last.tval = s_last.previous_mode = 0;
}

extern char __m_trap_stack_top[], __s_trap_stack_top[];
void m_trap_entry(void);

void restore_trap_csrs(void)
{
    CSR_WRITE(mtvec, (u64)m_trap_entry);
    CSR_WRITE(stvec, (u64)s_trap_entry);
    CSR_WRITE(mscratch, (u64)__m_trap_stack_top);
    CSR_WRITE(sscratch, (u64)__s_trap_stack_top);
}

/* The compiler may emit calls to these for struct copies and array initialisers. */
void *memset(void *d, int c, unsigned long n)
{
    volatile u8 *p = d;
    while (n--)
        *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    volatile u8 *dp = d;
    const volatile u8 *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}
