/* Entry, trap entry points and privilege-mode switching shared by every ISA test program. */
#include "rt_asm.h"

    .section .text.start, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, __stack_top
    la t0, m_trap_entry
    csrw mtvec, t0
    la t0, __m_trap_stack_top
    csrw mscratch, t0
    la t0, s_trap_entry
    csrw stvec, t0
    la t0, __s_trap_stack_top
    csrw sscratch, t0
    /* mstatus.FS = Initial so F/D instructions do not trap (privileged spec 3.1.6.6). */
    li t0, (1 << 13)
    csrs mstatus, t0
    csrwi fcsr, 0
    /* One PMP entry covering all of memory with RWX, so S and U mode may access memory:
       with PMP implemented and no entry matching, S/U accesses fail (privileged spec 3.7.1). */
    li t0, -1
    srli t0, t0, 10
    csrw pmpaddr0, t0
    li t0, 0x1f
    csrw pmpcfg0, t0
    /* Zero .bss. */
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sd zero, 0(t0)
    addi t0, t0, 8
    j 1b
2:  call main
    call exit_
3:  j 3b

/* Saves x1..x31 into a frame on the trap stack whose top lives in SCRATCH, calls HANDLER with
   a0 = frame, restores the (possibly modified) frame and returns with RET. */
.macro TRAP_ENTRY name, scratch, handler, ret
    .align 2
    .globl \name
\name:
    csrrw sp, \scratch, sp
    addi sp, sp, -FRAME_BYTES
    sd x1, 8(sp)
    sd x3, 24(sp)
    sd x4, 32(sp)
    sd x5, 40(sp)
    sd x6, 48(sp)
    sd x7, 56(sp)
    sd x8, 64(sp)
    sd x9, 72(sp)
    sd x10, 80(sp)
    sd x11, 88(sp)
    sd x12, 96(sp)
    sd x13, 104(sp)
    sd x14, 112(sp)
    sd x15, 120(sp)
    sd x16, 128(sp)
    sd x17, 136(sp)
    sd x18, 144(sp)
    sd x19, 152(sp)
    sd x20, 160(sp)
    sd x21, 168(sp)
    sd x22, 176(sp)
    sd x23, 184(sp)
    sd x24, 192(sp)
    sd x25, 200(sp)
    sd x26, 208(sp)
    sd x27, 216(sp)
    sd x28, 224(sp)
    sd x29, 232(sp)
    sd x30, 240(sp)
    sd x31, 248(sp)
    csrr t0, \scratch
    sd t0, 16(sp)
    sd zero, 0(sp)
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    mv a0, sp
    call \handler
    addi t0, sp, FRAME_BYTES
    csrw \scratch, t0
    ld x1, 8(sp)
    ld x3, 24(sp)
    ld x4, 32(sp)
    ld x5, 40(sp)
    ld x6, 48(sp)
    ld x7, 56(sp)
    ld x8, 64(sp)
    ld x9, 72(sp)
    ld x10, 80(sp)
    ld x11, 88(sp)
    ld x12, 96(sp)
    ld x13, 104(sp)
    ld x14, 112(sp)
    ld x15, 120(sp)
    ld x16, 128(sp)
    ld x17, 136(sp)
    ld x18, 144(sp)
    ld x19, 152(sp)
    ld x20, 160(sp)
    ld x21, 168(sp)
    ld x22, 176(sp)
    ld x23, 184(sp)
    ld x24, 192(sp)
    ld x25, 200(sp)
    ld x26, 208(sp)
    ld x27, 216(sp)
    ld x28, 224(sp)
    ld x29, 232(sp)
    ld x30, 240(sp)
    ld x31, 248(sp)
    ld sp, 16(sp)
    \ret
.endm

    .text
    TRAP_ENTRY m_trap_entry, mscratch, m_trap, mret
    TRAP_ENTRY s_trap_entry, sscratch, s_trap, sret

/* long enter_mode(long mode, long (*fn)(long), long arg): runs fn(arg) in U (mode 0) or
   S (mode 1) mode on the lower stack; fn's return value comes back through an ecall with
   a7 = MAGIC_RETURN that m_trap turns into resume_m. Only callable from M-mode. */
    .globl enter_mode
enter_mode:
    la t0, enter_mode_jmpbuf
    sd ra, 0(t0)
    sd sp, 8(t0)
    sd s0, 16(t0)
    sd s1, 24(t0)
    sd s2, 32(t0)
    sd s3, 40(t0)
    sd s4, 48(t0)
    sd s5, 56(t0)
    sd s6, 64(t0)
    sd s7, 72(t0)
    sd s8, 80(t0)
    sd s9, 88(t0)
    sd s10, 96(t0)
    sd s11, 104(t0)
    li t0, (3 << 11)
    csrc mstatus, t0
    andi a0, a0, 3
    slli a0, a0, 11
    csrs mstatus, a0
    la t0, lower_trampoline
    csrw mepc, t0
    mv t2, a1
    mv a0, a2
    la sp, __lower_stack_top
    mret
lower_trampoline:
    jalr t2
    li a7, MAGIC_RETURN
    ecall
1:  j 1b

/* long enter_mode_direct(long mode, u64 entry, long arg): like enter_mode, but enters the
   code at entry (an address valid in that mode, e.g. a virtual one) directly with a0 = arg;
   that code must itself end with `li a7, MAGIC_RETURN; ecall`. */
    .globl enter_mode_direct
enter_mode_direct:
    la t0, enter_mode_jmpbuf
    sd ra, 0(t0)
    sd sp, 8(t0)
    sd s0, 16(t0)
    sd s1, 24(t0)
    sd s2, 32(t0)
    sd s3, 40(t0)
    sd s4, 48(t0)
    sd s5, 56(t0)
    sd s6, 64(t0)
    sd s7, 72(t0)
    sd s8, 80(t0)
    sd s9, 88(t0)
    sd s10, 96(t0)
    sd s11, 104(t0)
    li t0, (3 << 11)
    csrc mstatus, t0
    andi a0, a0, 3
    slli a0, a0, 11
    csrs mstatus, a0
    csrw mepc, a1
    mv a0, a2
    la sp, __lower_stack_top
    mret

/* void resume_m(long value): called from m_trap in M-mode; abandons the trap frame and
   returns value from the pending enter_mode. */
    .globl resume_m
resume_m:
    la t0, __m_trap_stack_top
    csrw mscratch, t0
    la t0, enter_mode_jmpbuf
    ld ra, 0(t0)
    ld sp, 8(t0)
    ld s0, 16(t0)
    ld s1, 24(t0)
    ld s2, 32(t0)
    ld s3, 40(t0)
    ld s4, 48(t0)
    ld s5, 56(t0)
    ld s6, 64(t0)
    ld s7, 72(t0)
    ld s8, 80(t0)
    ld s9, 88(t0)
    ld s10, 96(t0)
    ld s11, 104(t0)
    ret

    .bss
    .align 3
enter_mode_jmpbuf:
    .skip 8 * 14
