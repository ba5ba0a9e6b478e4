/* Physical memory protection (privileged spec 3.7): WARL read-back of pmpcfg and pmpaddr
   (granularity 4 bytes), accesses from S and U mode that no entry matches, NA4, TOR and
   NAPOT ranges, an access only partly inside an entry, the lowest-numbered entry deciding,
   entries turned off, MPRV making M-mode loads and stores S or U accesses, page-table walks
   checked as S-mode reads, and locked entries binding M-mode and their own registers.
   Each access prints the trap it took (count 0: none). */
#include "rt.h"

/* Test memory past the program's image, matched by no entry unless a test says so. */
#define AREA 0x80200000UL
/* Entry 15 grants S and U mode the image, its stacks and its page tables. */
#define IMAGE_NAPOT ((0x80000000UL >> 2) | 0x3ffffUL) /* 2 MiB from 0x80000000 */

#define PMP_R 0x01UL
#define PMP_W 0x02UL
#define PMP_X 0x04UL
#define PMP_TOR 0x08UL
#define PMP_NA4 0x10UL
#define PMP_NAPOT 0x18UL
#define PMP_L 0x80UL
#define ENTRY15 ((PMP_NAPOT | PMP_R | PMP_W | PMP_X) << 56)

#define PTE_V (1UL << 0)
#define PTE_R (1UL << 1)
#define PTE_W (1UL << 2)
#define PTE_X (1UL << 3)
#define PTE_A (1UL << 6)
#define PTE_D (1UL << 7)
#define SATP_SV39 (8UL << 60)
#define VA 0x40000000UL

static u64 root[512] __attribute__((aligned(4096)));
static u64 l1[512] __attribute__((aligned(4096)));

static long do_load(long a)
{
    return (long)*(volatile u64 *)a;
}

static long do_load32(long a)
{
    return (long)*(volatile u32 *)a;
}

static long do_store(long a)
{
    *(volatile u64 *)a = 0x5a;
    return 0;
}

static long do_store32(long a)
{
    *(volatile u32 *)a = 0x5a;
    return 0;
}

static long do_exec(long a)
{
    return ((long (*)(long))a)(0);
}

/* Runs fn(arg) in mode and prints the trap it took. */
static void check(const char *name, long mode, long (*fn)(long), u64 arg)
{
    clear_traps();
    long value = enter_mode(mode, fn, (long)arg);
    if (m_last.count == 0)
        p2(name, "value", (u64)value);
    print_m_trap(name);
}

static void check_m(const char *name, long (*fn)(long), u64 arg)
{
    clear_traps();
    long value = fn((long)arg);
    if (m_last.count == 0)
        p2(name, "value", (u64)value);
    print_m_trap(name);
}

/* A load (store = 0) or store from M-mode with MPRV = 1 and MPP = mpp (privileged spec
   3.1.6.3). One asm block: after a trap's mret, MPP is U, so no other memory access may
   happen before MPRV is cleared. */
static void check_mprv(const char *name, u64 mpp, int store, u64 addr)
{
    u64 value = addr;
    u64 set = MSTATUS_MPRV | (mpp << 11);
    u64 clear = MSTATUS_MPRV | MSTATUS_MPP;
    clear_traps();
    CSR_CLEAR(mstatus, MSTATUS_MPP);
    if (store)
        asm volatile(".option push\n.option norvc\n"
                     "csrs mstatus, %1\n sd zero, 0(%0)\n csrc mstatus, %2\n"
                     ".option pop"
                     : "+r"(value)
                     : "r"(set), "r"(clear)
                     : "memory");
    else
        asm volatile(".option push\n.option norvc\n"
                     "csrs mstatus, %1\n ld %0, 0(%0)\n csrc mstatus, %2\n"
                     ".option pop"
                     : "+r"(value)
                     : "r"(set), "r"(clear)
                     : "memory");
    if (m_last.count == 0)
        p2(name, "value", store ? 0 : value);
    print_m_trap(name);
}

/* li a0, 42; ret */
static void put_code(u64 at)
{
    *(volatile u32 *)at = 0x02a00513;
    *(volatile u32 *)(at + 4) = 0x00008067;
    asm volatile("fence.i" ::: "memory");
}

static void warl(void)
{
    CSR_WRITE(pmpaddr1, 0x123);
    p("warl.pmpaddr1_low_bits", CSR_READ(pmpaddr1));
    CSR_WRITE(pmpaddr1, (1UL << 54) - 1);
    p("warl.pmpaddr1_all_ones", CSR_READ(pmpaddr1));
    CSR_WRITE(pmpaddr7, 0x20000000);
    p("warl.pmpaddr7", CSR_READ(pmpaddr7));
    p("warl.pmpaddr15", CSR_READ(pmpaddr15));
    CSR_WRITE(pmpcfg0, 0x1f1b1f0f1d0b1901UL);
    p("warl.pmpcfg0", CSR_READ(pmpcfg0));
    CSR_WRITE(pmpcfg0, 0x0000000000000c00UL);
    p("warl.pmpcfg0_x_tor", CSR_READ(pmpcfg0));
    CSR_WRITE(pmpcfg0, 0);
    p("warl.pmpcfg0_off", CSR_READ(pmpcfg0));
    p("warl.pmpcfg2", CSR_READ(pmpcfg2));
    CSR_WRITE(pmpaddr1, 0);
    CSR_WRITE(pmpaddr7, 0);
}

static void matching(void)
{
    put_code(AREA + 0x2000);
    /* No entry matches AREA: S and U fail, M succeeds (3.7.1). */
    check("none.s_load", MODE_S, do_load, AREA);
    check("none.u_store", MODE_U, do_store, AREA);
    check("none.s_exec", MODE_S, do_exec, AREA + 0x2000);
    check_m("none.m_load", do_load, AREA);

    /* 0: NA4 at AREA + 0x10, R.  1: off, its address the bottom of entry 2.
       2: TOR [AREA + 0x1000, AREA + 0x1800), RW.  3: NAPOT AREA + 0x2000, 4 KiB, RX.
       4: NAPOT AREA + 0x3000, 4 KiB, R.  5: NAPOT AREA + 0x3000, 256 bytes, RW. */
    CSR_WRITE(pmpaddr0, (AREA + 0x10) >> 2);
    CSR_WRITE(pmpaddr1, (AREA + 0x1000) >> 2);
    CSR_WRITE(pmpaddr2, (AREA + 0x1800) >> 2);
    CSR_WRITE(pmpaddr3, ((AREA + 0x2000) >> 2) | 0x1ff);
    CSR_WRITE(pmpaddr4, ((AREA + 0x3000) >> 2) | 0x1ff);
    CSR_WRITE(pmpaddr5, ((AREA + 0x3000) >> 2) | 0x1f);
    CSR_WRITE(pmpcfg0, (PMP_NA4 | PMP_R) | (PMP_TOR | PMP_R | PMP_W) << 16 |
                           (PMP_NAPOT | PMP_R | PMP_X) << 24 | (PMP_NAPOT | PMP_R) << 32 |
                           (PMP_NAPOT | PMP_R | PMP_W) << 40);
    p("match.pmpcfg0", CSR_READ(pmpcfg0));

    check("na4.s_load32", MODE_S, do_load32, AREA + 0x10);
    check("na4.s_store32", MODE_S, do_store32, AREA + 0x10);
    check("na4.s_load64_partly_inside", MODE_S, do_load, AREA + 0x10);
    check("na4.s_load_next_word", MODE_S, do_load32, AREA + 0x14);
    check("na4.u_load32", MODE_U, do_load32, AREA + 0x10);

    check("tor.s_store_bottom", MODE_S, do_store, AREA + 0x1000);
    check("tor.s_load_bottom", MODE_S, do_load, AREA + 0x1000);
    check("tor.u_store_top", MODE_U, do_store, AREA + 0x17f8);
    check("tor.s_load_past_top", MODE_S, do_load, AREA + 0x1800);
    check("tor.s_load_below", MODE_S, do_load, AREA + 0xff8);
    check("tor.s_exec", MODE_S, do_exec, AREA + 0x1000);

    check("napot.s_exec", MODE_S, do_exec, AREA + 0x2000);
    check("napot.u_exec", MODE_U, do_exec, AREA + 0x2000);
    check("napot.s_load", MODE_S, do_load, AREA + 0x2ff8);
    check("napot.s_store", MODE_S, do_store, AREA + 0x2000);

    /* Entry 4 matches first, so entry 5's W does not count. */
    check("priority.s_store", MODE_S, do_store, AREA + 0x3000);
    check("priority.s_load", MODE_S, do_load, AREA + 0x3008);
    check("priority.u_store_past_5", MODE_U, do_store, AREA + 0x3100);

    /* Entry 7: NAPOT 16 bytes RX inside a page nothing else grants: code runs there, and
       the next instruction past it cannot be fetched. */
    put_code(AREA + 0x100);
    CSR_WRITE(pmpaddr7, ((AREA + 0x100) >> 2) | 0x1);
    CSR_SET(pmpcfg0, (PMP_NAPOT | PMP_R | PMP_X) << 56);
    check("small.s_exec", MODE_S, do_exec, AREA + 0x100);
    check("small.s_exec_past_end", MODE_S, do_exec, AREA + 0x110);
    check("small.s_load", MODE_S, do_load, AREA + 0x108);
    CSR_CLEAR(pmpcfg0, 0xffUL << 56);

    /* Entry 2 turned off: its range is matched by nothing again. */
    CSR_CLEAR(pmpcfg0, 0xffUL << 16);
    check("off.s_load", MODE_S, do_load, AREA + 0x1000);
    CSR_SET(pmpcfg0, (PMP_TOR | PMP_R | PMP_W) << 16);
    check("on_again.s_load", MODE_S, do_load, AREA + 0x1000);

    /* MPRV: M-mode loads and stores are checked as MPP's; fetches are not (3.1.6.3). */
    check_mprv("mprv.s_load_rx", MODE_S, 0, AREA + 0x2800);
    check_mprv("mprv.s_store_rx", MODE_S, 1, AREA + 0x2800);
    check_mprv("mprv.u_load_none", MODE_U, 0, AREA);
    check_mprv("mprv.m_store_none", MODE_M, 1, AREA);
    check_m("mprv.off_store_rx", do_store, AREA + 0x2800);
}

/* Sv39 walks read page tables as S-mode accesses (3.7.1): a table that S-mode may not read
   makes the access fault with the access fault of the original access (4.3.2). */
static void page_table_walk(void)
{
    u64 *l0 = (u64 *)(AREA + 0x5000);
    root[1] = (((u64)l1 >> 12) << 10) | PTE_V;
    root[2] = ((0x80000000UL >> 12) << 10) | PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D;
    l1[0] = (((u64)l0 >> 12) << 10) | PTE_V;
    l0[0] = (((AREA + 0x1000) >> 12) << 10) | PTE_V | PTE_R | PTE_W | PTE_A | PTE_D;
    l0[1] = (((AREA + 0x2000) >> 12) << 10) | PTE_V | PTE_R | PTE_X | PTE_A;
    *(volatile u64 *)(AREA + 0x1000) = 0x1234;
    CSR_WRITE(satp, SATP_SV39 | ((u64)root >> 12));
    asm volatile("sfence.vma" ::: "memory");
    check("walk.s_load_denied_table", MODE_S, do_load, VA);
    check("walk.s_store_denied_table", MODE_S, do_store, VA);
    check("walk.s_exec_denied_table", MODE_S, do_exec, VA + 0x1000);
    check_mprv("walk.mprv_s_load_denied_table", MODE_S, 0, VA);
    /* Entry 6: NAPOT over the table page, R: the walk may read it. */
    CSR_WRITE(pmpaddr6, ((AREA + 0x5000) >> 2) | 0x1ff);
    CSR_SET(pmpcfg0, (PMP_NAPOT | PMP_R) << 48);
    asm volatile("sfence.vma" ::: "memory");
    check("walk.s_load_readable_table", MODE_S, do_load, VA);
    check("walk.s_exec_readable_table", MODE_S, do_exec, VA + 0x1000);
    CSR_WRITE(satp, 0);
    asm volatile("sfence.vma" ::: "memory");
}

/* Locked entries (3.7.1.3) bind M-mode and ignore writes until reset; a locked TOR entry
   also locks the address below it. Last, since nothing unlocks them. */
static void locked(void)
{
    put_code(AREA + 0x4000);
    put_code(AREA + 0x6000);
    /* 8: NAPOT AREA + 0x4000, 4 KiB, R, locked.  9: off, bottom of 10.
       10: TOR [AREA + 0x6000, AREA + 0x7000), RW, locked. */
    CSR_WRITE(pmpaddr8, ((AREA + 0x4000) >> 2) | 0x1ff);
    CSR_WRITE(pmpaddr9, (AREA + 0x6000) >> 2);
    CSR_WRITE(pmpaddr10, (AREA + 0x7000) >> 2);
    CSR_WRITE(pmpcfg2, ENTRY15 | (PMP_L | PMP_NAPOT | PMP_R) | (PMP_L | PMP_TOR | PMP_R | PMP_W) << 16);
    p("lock.pmpcfg2", CSR_READ(pmpcfg2));
    check_m("lock.m_load", do_load, AREA + 0x4000);
    check_m("lock.m_store", do_store, AREA + 0x4000);
    check_m("lock.m_exec", do_exec, AREA + 0x4000);
    check_m("lock.m_store_tor", do_store, AREA + 0x6000);
    check_m("lock.m_exec_tor", do_exec, AREA + 0x6000);
    check_m("lock.m_store_outside", do_store, AREA + 0x7000);
    check("lock.s_load", MODE_S, do_load, AREA + 0x4000);
    CSR_WRITE(pmpcfg2, ENTRY15 | (PMP_NAPOT | PMP_R | PMP_W | PMP_X) | 0x1f00UL);
    p("lock.pmpcfg2_after_write", CSR_READ(pmpcfg2));
    CSR_WRITE(pmpaddr8, 0);
    CSR_WRITE(pmpaddr9, 0);
    CSR_WRITE(pmpaddr10, 0);
    p("lock.pmpaddr8", CSR_READ(pmpaddr8));
    p("lock.pmpaddr9", CSR_READ(pmpaddr9));
    p("lock.pmpaddr10", CSR_READ(pmpaddr10));
    CSR_WRITE(pmpaddr11, 0x77);
    p("lock.pmpaddr11", CSR_READ(pmpaddr11));
    check_m("lock.m_store_after_writes", do_store, AREA + 0x4000);
}

int main(void)
{
    m_skip = 1;
    /* Entry 15 instead of the runtime's entry 0 grants the image, so that lower entries
       can be tested without losing it. */
    CSR_WRITE(pmpaddr15, IMAGE_NAPOT);
    CSR_WRITE(pmpcfg2, ENTRY15);
    CSR_WRITE(pmpcfg0, 0);
    CSR_WRITE(pmpaddr0, 0);
    warl();
    matching();
    page_table_walk();
    locked();
    return 0;
}
