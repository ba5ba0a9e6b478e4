/* Debug triggers (Sdtrig, debug spec 1.0 chapter 5): tselect over two triggers, the WARL
   fields of type 2 (mcontrol) and type 6 (mcontrol6) tdata1, tdata2 and tdata3; execute,
   load and store address matches raising breakpoint exceptions before the instruction
   retires, in S and U mode as the mode bits say; two triggers armed at once; and the exact
   instruction count around a breakpoint. M-mode triggers are left out: QEMU 7.2 has no
   tcontrol and fires them, our machine fires them only while tcontrol.mte is set. */
#include "rt.h"

#define MCONTROL (2UL << 60)
#define MCONTROL6 (6UL << 60)
#define T_LOAD (1UL << 0)
#define T_STORE (1UL << 1)
#define T_EXECUTE (1UL << 2)
#define T_U (1UL << 3)
#define T_S (1UL << 4)
#define T_M (1UL << 6)

static volatile u64 data[4];

__attribute__((noinline, aligned(4))) static long target(long x)
{
    asm volatile("" ::: "memory");
    return x + 1;
}

static long do_call(long x)
{
    return target(x) + 1;
}

static long do_load(long a)
{
    return (long)*(volatile u64 *)a;
}

static long do_store(long a)
{
    *(volatile u64 *)a = 0x5a;
    return 0;
}

static void set_trigger(u64 index, u64 tdata1, u64 tdata2)
{
    CSR_WRITE(tselect, index);
    CSR_WRITE(tdata1, MCONTROL);
    CSR_WRITE(tdata2, tdata2);
    CSR_WRITE(tdata1, tdata1);
}

static void disarm(void)
{
    set_trigger(0, MCONTROL, 0);
    set_trigger(1, MCONTROL, 0);
}

static long (*volatile measured_fn)(long);
static volatile u64 measured_delta;

/* Calls measured_fn between two reads of instret in the lower mode, so the count covers the
   call and any M-mode handler it trapped into, but not the ecall that ends enter_mode
   (QEMU 7.2 counts an ecall as retired; Zicntr says it does not retire). */
static long measured(long arg)
{
    u64 before = CSR_READ(instret);
    long value = measured_fn(arg);
    u64 after = CSR_READ(instret);
    measured_delta = after - before;
    return value;
}

/* Runs fn(arg) in mode and prints the breakpoint it took. QEMU 7.2 writes mtval = 0 for a
   trigger, our machine the address (privileged spec 3.1.16 allows both). */
static void check(const char *name, long mode, long (*fn)(long), u64 arg, u64 address)
{
    clear_traps();
    measured_fn = fn;
    long value = enter_mode(mode, measured, (long)arg);
    p2(name, "count", m_last.count);
    if (m_last.count == 0) {
        p2(name, "value", (u64)value);
    } else {
        p2(name, "cause", m_last.cause);
        p2(name, "epc", m_last.epc);
        p2(name, "tval_is_0_or_address", m_last.tval == 0 || m_last.tval == address);
        p2(name, "mode", m_last.previous_mode);
    }
    p2(name, "instret_delta", measured_delta);
}

static void csrs(void)
{
    p("csr.tselect", CSR_READ(tselect));
    p("csr.tdata1_0", CSR_READ(tdata1));
    p("csr.tinfo_types", CSR_READ(tinfo) & 0xffff);
    CSR_WRITE(tselect, 1);
    p("csr.tselect_1", CSR_READ(tselect));
    p("csr.tdata1_1", CSR_READ(tdata1));
    CSR_WRITE(tselect, 2);
    p("csr.tselect_past_last", CSR_READ(tselect));
    CSR_WRITE(tselect, 100);
    p("csr.tselect_far_past_last", CSR_READ(tselect));
    CSR_WRITE(tdata2, 0x123456789abcdef0UL);
    p("csr.tdata2_1", CSR_READ(tdata2));
    CSR_WRITE(tselect, 0);
    p("csr.tdata2_0", CSR_READ(tdata2));
    CSR_WRITE(tdata3, 0x1234567);
    p("csr.tdata3", CSR_READ(tdata3));
    /* Mode and access bits stay; match, chain, action, timing, select, hit and dmode read
       as zero. */
    CSR_WRITE(tdata1, MCONTROL | T_LOAD | T_STORE | T_EXECUTE | T_U | T_S | T_M);
    p("csr.mcontrol_all_modes", CSR_READ(tdata1));
    CSR_WRITE(tdata1, MCONTROL | (1UL << 59) | (1UL << 20) | (1UL << 19) | (1UL << 18) |
                          (1UL << 12) | (1UL << 11) | (2UL << 7) | T_S | T_LOAD);
    p("csr.mcontrol_unsupported_fields", CSR_READ(tdata1));
    CSR_WRITE(tdata1, MCONTROL6 | (1UL << 59) | (1UL << 12) | (1UL << 11) | (3UL << 7) |
                          T_U | T_STORE);
    p("csr.mcontrol6_unsupported_fields", CSR_READ(tdata1));
    /* A type this trigger cannot be leaves tdata1 as it was. */
    CSR_WRITE(tdata1, (3UL << 60) | 0x7f);
    p("csr.type3_ignored", CSR_READ(tdata1));
    CSR_WRITE(tdata1, (4UL << 60) | 0x7f);
    p("csr.type4_ignored", CSR_READ(tdata1));
    CSR_WRITE(tdata1, MCONTROL);
    p("csr.mcontrol_disabled", CSR_READ(tdata1));
}

int main(void)
{
    m_skip = 1;
    /* instret readable in S and U mode (privileged spec 3.1.11, 4.1.5). */
    CSR_WRITE(mcounteren, 4);
    CSR_WRITE(scounteren, 4);
    csrs();
    disarm();

    check("none.u_call", MODE_U, do_call, 7, 0);

    set_trigger(0, MCONTROL | T_U | T_EXECUTE, (u64)target);
    check("exec2.u_call", MODE_U, do_call, 7, (u64)target);
    check("exec2.s_call_not_enabled_for_s", MODE_S, do_call, 7, (u64)target);
    check("exec2.u_load_of_the_address", MODE_U, do_load, (u64)target, (u64)target);
    set_trigger(0, MCONTROL | T_S | T_U | T_EXECUTE, (u64)target + 1);
    check("exec2.u_call_other_address", MODE_U, do_call, 7, 0);
    disarm();

    set_trigger(1, MCONTROL6 | T_S | T_EXECUTE, (u64)target);
    check("exec6.s_call", MODE_S, do_call, 7, (u64)target);
    check("exec6.u_call_not_enabled_for_u", MODE_U, do_call, 7, (u64)target);
    disarm();

    data[1] = 0x11;
    set_trigger(0, MCONTROL | T_S | T_LOAD, (u64)&data[1]);
    check("load2.s_load", MODE_S, do_load, (u64)&data[1], (u64)&data[1]);
    check("load2.s_load_other", MODE_S, do_load, (u64)&data[2], 0);
    check("load2.s_store_same", MODE_S, do_store, (u64)&data[1], (u64)&data[1]);
    p("load2.data1", data[1]);
    check("load2.u_load_not_enabled_for_u", MODE_U, do_load, (u64)&data[1], (u64)&data[1]);
    disarm();

    data[2] = 0x22;
    set_trigger(1, MCONTROL6 | T_U | T_S | T_STORE, (u64)&data[2]);
    check("store6.u_store", MODE_U, do_store, (u64)&data[2], (u64)&data[2]);
    p("store6.data2_unchanged", data[2]);
    check("store6.s_store", MODE_S, do_store, (u64)&data[2], (u64)&data[2]);
    check("store6.s_load_same", MODE_S, do_load, (u64)&data[2], (u64)&data[2]);
    check("store6.s_store_other", MODE_S, do_store, (u64)&data[3], 0);
    p("store6.data3", data[3]);
    disarm();

    /* Both triggers at once. */
    set_trigger(0, MCONTROL | T_S | T_LOAD, (u64)&data[0]);
    set_trigger(1, MCONTROL | T_S | T_EXECUTE, (u64)target);
    check("both.s_load", MODE_S, do_load, (u64)&data[0], (u64)&data[0]);
    check("both.s_call", MODE_S, do_call, 3, (u64)target);
    disarm();
    check("disarmed.s_call", MODE_S, do_call, 3, 0);
    return 0;
}
