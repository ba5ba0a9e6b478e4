/* Shared runtime of the ISA test programs: UART console, sifive_test finisher, CSR access,
   trap recording and privilege-mode switching. Every program prints lines "name value". */
#ifndef RT_H
#define RT_H
#include "rt_asm.h"
#include "rt_types.h"

#define UART_BASE 0x10000000UL
#define FINISHER_BASE 0x100000UL
#define CLINT_BASE 0x2000000UL
#define CLINT_MSIP (CLINT_BASE + 0x0)
#define CLINT_MTIMECMP (CLINT_BASE + 0x4000)
#define CLINT_MTIME (CLINT_BASE + 0xbff8)

#define MODE_U 0
#define MODE_S 1
#define MODE_M 3

#define MSTATUS_SIE (1UL << 1)
#define MSTATUS_MIE (1UL << 3)
#define MSTATUS_SPIE (1UL << 5)
#define MSTATUS_MPIE (1UL << 7)
#define MSTATUS_SPP (1UL << 8)
#define MSTATUS_MPP (3UL << 11)
#define MSTATUS_FS (3UL << 13)
#define MSTATUS_MPRV (1UL << 17)
#define MSTATUS_SUM (1UL << 18)
#define MSTATUS_MXR (1UL << 19)

#define CSR_READ(csr) ({ u64 v__; asm volatile("csrr %0, " #csr : "=r"(v__)::"memory"); v__; })
#define CSR_WRITE(csr, v) asm volatile("csrw " #csr ", %0" ::"r"((u64)(v)) : "memory")
#define CSR_SET(csr, v) asm volatile("csrs " #csr ", %0" ::"r"((u64)(v)) : "memory")
#define CSR_CLEAR(csr, v) asm volatile("csrc " #csr ", %0" ::"r"((u64)(v)) : "memory")

void put_char(char c);
void put_str(const char *s);
void put_hex(u64 v, int digits);
void put_dec(i64 v);
/* "name 0x<16 hex digits>" */
void p(const char *name, u64 v);
/* "name 0x<8 hex digits>" */
void p32(const char *name, u32 v);
/* "prefix.suffix 0x<16 hex digits>" */
void p2(const char *prefix, const char *suffix, u64 v);
_Noreturn void exit_(int code);

struct frame {
    u64 x[32];
};

/* A hook returns 1 when it handled the trap (it may edit the frame and xepc). */
typedef int (*trap_hook)(struct frame *f, u64 cause, u64 epc, u64 tval);
extern volatile trap_hook m_hook, s_hook;

struct trap_record {
    u64 count, cause, epc, tval, previous_mode;
};
/* Last trap taken into M (resp. S) mode when skipping is on. */
extern volatile struct trap_record m_last, s_last;
/* When set, a synchronous trap is recorded and execution resumes after the faulting
   instruction (or at ra for instruction fetch faults, so fetch-faulting calls return). */
extern volatile int m_skip, s_skip;

long enter_mode(long mode, long (*fn)(long), long arg);
/* Enters entry (valid in that mode) with a0 = arg; the code ends with li a7, MAGIC_RETURN;
   ecall, whose a0 is returned. */
long enter_mode_direct(long mode, u64 entry, long arg);
void s_trap_entry(void);
/* From S-mode: hands a value back to M-mode, ending the enter_mode that started S-mode. */
_Noreturn void s_return_to_m(long value);

/* Prints the M (resp. S) trap record under a name. */
void print_m_trap(const char *name);
void print_s_trap(const char *name);
void clear_traps(void);
/* Puts mtvec, stvec, mscratch and sscratch back to the runtime's values (the trap entry
   points rely on them); for programs that test those CSRs. */
void restore_trap_csrs(void);

#endif
