//! Sleeping when idle: `hlt` until a TSC deadline, woken by the local APIC timer.
//!
//! The timer runs in TSC-deadline mode when CPUID.1:ECX bit 24 says the CPU has it (Intel SDM
//! vol. 3A 10.5.4.1), else in one-shot mode with its rate measured against the TSC (10.5.4).
//! Its vector is the only interrupt this kernel ever takes: the 8259s are masked, the I/O APIC
//! is never programmed, and virtio devices are polled with their interrupts off. Interrupts
//! are on only across `hlt` itself (`sti; hlt; cli`), so no other kernel code runs with them
//! on. Without a usable local APIC an idle wait spins with `pause`.

use crate::{paging, println, tsc};
use alloc::string::String;
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;
use x86_64::registers::model_specific::Msr;

/// The vector of the wake-up interrupt. Any vector from 32 works; the priority class (the
/// high nibble, SDM 3A 10.8.3.1) does not matter with the task priority at 0.
pub const WAKE_VECTOR: u8 = 0xe0;
/// The local APIC's spurious-interrupt vector (SDM 3A 10.9); its low four bits must be ones on
/// older processors.
const SPURIOUS_VECTOR: u8 = 0xff;
/// One halt lasts at most this long, in microseconds. Devices are polled between halts (their
/// interrupts stay off), and a 16550's 16-byte receive FIFO fills in 1.4 ms at 115200 baud, so
/// a caller that polls COM1 after every halt loses no console byte.
pub const HALT_DURATION_MAX_US: u64 = 1_000;
/// How long the one-shot timer's rate is measured against the TSC at boot, in microseconds.
const TIMER_CALIBRATION_US: u64 = 5_000;
/// The boot self check arms the timer this far ahead, in microseconds...
const SELF_CHECK_DELAY_US: u64 = 100;
/// ...and declares the timer broken when its interrupt is not pending this long after that.
/// Generous: an emulator on a loaded host may deliver late.
const SELF_CHECK_TIMEOUT_US: u64 = 200_000;
/// Halts the self check times, to report how long a `HALT_DURATION_MAX_US` halt really lasts.
const SELF_CHECK_HALTS: u64 = 3;

/// CPUID.1:EDX bit 9: the CPU has a local APIC.
const CPUID_1_EDX_APIC: u32 = 1 << 9;
/// CPUID.1:ECX bit 24: the local APIC timer has TSC-deadline mode.
const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;

/// IA32_APIC_BASE (SDM 3A 10.4.4): bit 10 x2APIC mode, bit 11 global enable, base from bit 12.
const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_X2APIC_MODE: u64 = 1 << 10;
const APIC_BASE_GLOBAL_ENABLE: u64 = 1 << 11;
const APIC_BASE_ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// The xAPIC register page, in bytes.
const APIC_REGISTERS_BYTES: u64 = 4096;
/// IA32_TSC_DEADLINE (SDM 3A 10.5.4.1): the TSC value at which the timer fires; 0 disarms it.
const IA32_TSC_DEADLINE: u32 = 0x6e0;
/// x2APIC registers are MSRs from here, one per 16-byte xAPIC register (SDM 3A 10.12.1.2).
const X2APIC_MSR_BASE: u32 = 0x800;

/// Local APIC register offsets in the xAPIC page (SDM 3A table 10-1).
const REGISTER_TASK_PRIORITY: u32 = 0x80;
const REGISTER_EOI: u32 = 0xb0;
const REGISTER_SPURIOUS: u32 = 0xf0;
const REGISTER_IRR_BASE: u32 = 0x200;
const REGISTER_LVT_TIMER: u32 = 0x320;
const REGISTER_INITIAL_COUNT: u32 = 0x380;
const REGISTER_CURRENT_COUNT: u32 = 0x390;
const REGISTER_DIVIDE_CONFIGURATION: u32 = 0x3e0;

/// Spurious-interrupt vector register bit 8: the APIC is software-enabled (SDM 3A 10.4.3).
const SPURIOUS_APIC_ENABLE: u32 = 1 << 8;
/// LVT bit 16 masks the entry; timer LVT bits 17-18 select the mode (SDM 3A figure 10-8).
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_ONE_SHOT: u32 = 0b00 << 17;
const LVT_TIMER_TSC_DEADLINE: u32 = 0b10 << 17;
/// Divide configuration 1011b: the timer counts at the APIC bus rate (SDM 3A figure 10-10).
const DIVIDE_BY_1: u32 = 0b1011;

/// Wake-up interrupts taken; the self check watches it.
static WAKE_INTERRUPTS: AtomicU64 = AtomicU64::new(0);
static IDLE: Once<Idle> = Once::new();
/// The local APIC the wake-up handler acknowledges; set before the self check's first halt.
static WAKE_APIC: Once<LocalApic> = Once::new();

/// How the local APIC's registers are reached.
#[derive(Clone, Copy, Debug)]
enum LocalApic {
    /// Memory-mapped at this (identity-mapped) physical address.
    XApic { base: u64 },
    /// MSRs, when firmware left the APIC in x2APIC mode (xAPIC accesses then fault).
    X2Apic,
}

impl LocalApic {
    fn read(self, register: u32) -> u32 {
        match self {
            // SAFETY: `init` mapped the register page; a 32-bit aligned read of an APIC
            // register has no side effects (SDM 3A 10.4.1).
            Self::XApic { base } => unsafe {
                core::ptr::read_volatile((base + u64::from(register)) as *const u32)
            },
            // SAFETY: in x2APIC mode every register named here is a readable MSR.
            Self::X2Apic => unsafe { Msr::new(X2APIC_MSR_BASE + (register >> 4)).read() as u32 },
        }
    }

    fn write(self, register: u32, value: u32) {
        match self {
            // SAFETY: `init` mapped the register page; the callers write only the timer, task
            // priority, spurious-vector and EOI registers, which change no memory.
            Self::XApic { base } => unsafe {
                core::ptr::write_volatile((base + u64::from(register)) as *mut u32, value)
            },
            // SAFETY: as above, through the register's MSR.
            Self::X2Apic => unsafe {
                Msr::new(X2APIC_MSR_BASE + (register >> 4)).write(u64::from(value))
            },
        }
    }

    fn interrupt_requested(self, vector: u8) -> bool {
        let register = REGISTER_IRR_BASE + 0x10 * u32::from(vector / 32);
        self.read(register) & (1 << (vector % 32)) != 0
    }
}

/// The timer mode in use.
#[derive(Clone, Copy, Debug)]
enum Timer {
    TscDeadline,
    OneShot { timer_hz: u64 },
}

#[derive(Clone, Copy, Debug)]
struct Halt {
    apic: LocalApic,
    timer: Timer,
}

impl Halt {
    /// Makes the timer interrupt at `wake`, `now` being the current TSC.
    fn arm(self, wake: tsc::TscTicks, now: tsc::TscTicks) {
        match self.timer {
            Timer::TscDeadline => {
                // SAFETY: IA32_TSC_DEADLINE exists when CPUID reports TSC-deadline mode; a
                // value in the past fires at once.
                unsafe { Msr::new(IA32_TSC_DEADLINE).write(wake.0.max(1)) }
            }
            Timer::OneShot { timer_hz } => {
                let ticks = wake.0.saturating_sub(now.0);
                let count = u128::from(ticks) * u128::from(timer_hz) / u128::from(tsc::hz());
                let count = count.clamp(1, u128::from(u32::MAX)) as u32;
                self.apic.write(REGISTER_INITIAL_COUNT, count);
            }
        }
    }

    /// Stops a timer that has not fired, so that a stale interrupt does not cut the next
    /// halt short.
    fn disarm(self) {
        match self.timer {
            // SAFETY: writing 0 disarms the TSC-deadline timer (SDM 3A 10.5.4.1).
            Timer::TscDeadline => unsafe { Msr::new(IA32_TSC_DEADLINE).write(0) },
            // Writing 0 to the initial count stops the timer (SDM 3A 10.5.4).
            Timer::OneShot { .. } => self.apic.write(REGISTER_INITIAL_COUNT, 0),
        }
    }

    fn halt(self, wake: tsc::TscTicks, now: tsc::TscTicks) {
        self.arm(wake, now);
        halt_with_interrupts_on();
        self.disarm();
    }
}

/// `sti; hlt; cli`: sleeps until an interrupt, with interrupts on only while halted.
fn halt_with_interrupts_on() {
    // SAFETY: the IDT has a handler for every vector and the only unmasked interrupt is the
    // wake-up timer. `sti` takes effect after the next instruction (SDM vol. 2B STI), so an
    // interrupt already pending wakes the `hlt` rather than being taken before it and leaving
    // the CPU asleep; `cli` follows at once. Handlers run on an IST stack, so the red zone
    // below `rsp` is untouched.
    unsafe { asm!("sti", "hlt", "cli", options(nostack)) };
}

/// What `halt_until` does.
#[derive(Clone, Copy, Debug)]
enum Idle {
    Halt(Halt),
    /// No usable local APIC timer: spin with `pause`.
    Spin,
}

/// Sleeps until `deadline` (a `tsc::read` value) or less: the CPU halts with the local APIC
/// timer armed to wake it.
///
/// Contract:
/// - returns at once when `deadline` has passed;
/// - otherwise returns no later than the sooner of `deadline` and `HALT_DURATION_MAX_US`
///   (1 ms) after the call, plus the wake-up interrupt's latency;
/// - may return earlier (an NMI, a stray interrupt, the one-shot timer's rounding), so callers
///   loop: poll their inputs (COM1, virtio queues: none of them interrupts), check their own
///   deadline, and call again;
/// - call it with interrupts off, as all kernel code runs; they are on only inside `hlt` and
///   off again on return, and only the timer's handler runs meanwhile;
/// - before `init`, or without a usable local APIC timer, it spins with `pause` to the same
///   capped deadline instead.
///
/// An idle wait for input or a timer due at `wake` (a TSC value) is then:
/// `while !input_arrived() && tsc::read() < wake { idle::halt_until(wake) }`.
pub fn halt_until(deadline: tsc::TscTicks) {
    let now = tsc::read();
    if deadline <= now {
        return;
    }
    let cap = tsc::TscTicks(now.0 + tsc::ticks_from_micros(HALT_DURATION_MAX_US));
    let wake = deadline.min(cap);
    match IDLE.get() {
        Some(Idle::Halt(halt)) => halt.halt(wake, now),
        Some(Idle::Spin) | None => {
            while tsc::read() < wake {
                core::hint::spin_loop();
            }
        }
    }
}

/// Called by the trap dispatcher for `WAKE_VECTOR`: counts the wake-up and acknowledges it.
pub fn wake_interrupt() {
    WAKE_INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    if let Some(apic) = WAKE_APIC.get() {
        // Any write to the EOI register ends the interrupt being serviced (SDM 3A 10.8.5);
        // without it the in-service bit would block every later wake-up.
        apic.write(REGISTER_EOI, 0);
    }
}

/// Sets up the local APIC timer, checks that its interrupt arrives and prints one line:
/// `understudy: idle halt via lapic tsc-deadline ...`, `... via lapic one-shot ...`, or
/// `understudy: idle halt unavailable (<why>): idle waits spin with pause`. Needs the TSC
/// calibrated and the IDT loaded.
pub fn init() {
    let idle = match set_up() {
        Ok(halt) => match self_check(halt) {
            Ok(halt_us) => {
                let registers = match halt.apic {
                    LocalApic::XApic { base } => alloc::format!("xapic at {base:#x}"),
                    LocalApic::X2Apic => String::from("x2apic"),
                };
                let (mode, timer) = match halt.timer {
                    Timer::TscDeadline => ("tsc-deadline", String::new()),
                    Timer::OneShot { timer_hz } => (
                        "one-shot",
                        alloc::format!(", timer {} kHz", timer_hz / 1000),
                    ),
                };
                println!(
                    "understudy: idle halt via lapic {mode} ({registers}{timer}; a {HALT_DURATION_MAX_US} us halt took {halt_us} us)"
                );
                Idle::Halt(halt)
            }
            Err(why) => unavailable(why),
        },
        Err(why) => unavailable(why),
    };
    IDLE.call_once(|| idle);
}

fn unavailable(why: &str) -> Idle {
    println!("understudy: idle halt unavailable ({why}): idle waits spin with pause");
    Idle::Spin
}

/// Finds and enables the local APIC and puts its timer in the best mode the CPU has.
fn set_up() -> Result<Halt, &'static str> {
    let features = core::arch::x86_64::__cpuid(1);
    if features.edx & CPUID_1_EDX_APIC == 0 {
        return Err("no local apic");
    }
    // SAFETY: IA32_APIC_BASE exists when CPUID reports a local APIC.
    let apic_base = unsafe { Msr::new(IA32_APIC_BASE).read() };
    if apic_base & APIC_BASE_GLOBAL_ENABLE == 0 {
        // Firmware turned it off; turning it back on would reset state firmware relies on.
        return Err("local apic disabled by firmware");
    }
    let apic = if apic_base & APIC_BASE_X2APIC_MODE != 0 {
        LocalApic::X2Apic
    } else {
        let base = apic_base & APIC_BASE_ADDRESS_MASK;
        // Below 4 GiB the boot identity map covers it already (the firmware's MTRRs make that
        // range uncached, SDM 3A 11.11); above, it is mapped uncached.
        paging::map_identity(base, APIC_REGISTERS_BYTES)
            .map_err(|_| "cannot map the local apic")?;
        LocalApic::XApic { base }
    };
    WAKE_APIC.call_once(|| apic);
    // Accept every priority, and software-enable the APIC with its spurious vector.
    apic.write(REGISTER_TASK_PRIORITY, 0);
    apic.write(
        REGISTER_SPURIOUS,
        SPURIOUS_APIC_ENABLE | u32::from(SPURIOUS_VECTOR),
    );
    let timer = if features.ecx & CPUID_1_ECX_TSC_DEADLINE != 0 {
        apic.write(
            REGISTER_LVT_TIMER,
            LVT_TIMER_TSC_DEADLINE | u32::from(WAKE_VECTOR),
        );
        // The LVT write is a memory write and the deadline a WRMSR; without a fence the WRMSR
        // may pass it and arm the timer in the old mode (SDM 3A 10.5.4.1).
        // SAFETY: `mfence` only orders memory accesses.
        unsafe { asm!("mfence", options(nostack, preserves_flags)) };
        Timer::TscDeadline
    } else {
        Timer::OneShot {
            timer_hz: measure_timer_hz(apic)?,
        }
    };
    Ok(Halt { apic, timer })
}

/// Counts the one-shot timer against the TSC for `TIMER_CALIBRATION_US`, then leaves it in
/// one-shot mode on the wake-up vector, stopped.
fn measure_timer_hz(apic: LocalApic) -> Result<u64, &'static str> {
    apic.write(REGISTER_DIVIDE_CONFIGURATION, DIVIDE_BY_1);
    apic.write(
        REGISTER_LVT_TIMER,
        LVT_MASKED | LVT_TIMER_ONE_SHOT | u32::from(WAKE_VECTOR),
    );
    apic.write(REGISTER_INITIAL_COUNT, u32::MAX);
    let start = tsc::read();
    let end = start.0 + tsc::ticks_from_micros(TIMER_CALIBRATION_US);
    while tsc::read().0 < end {
        core::hint::spin_loop();
    }
    let remaining = apic.read(REGISTER_CURRENT_COUNT);
    let elapsed = tsc::read().0 - start.0;
    apic.write(REGISTER_INITIAL_COUNT, 0);
    let counted = u64::from(u32::MAX - remaining);
    if counted == 0 {
        return Err("the lapic timer does not count");
    }
    apic.write(
        REGISTER_LVT_TIMER,
        LVT_TIMER_ONE_SHOT | u32::from(WAKE_VECTOR),
    );
    Ok((u128::from(counted) * u128::from(tsc::hz()) / u128::from(elapsed)) as u64)
}

/// Checks, with interrupts off, that the armed timer makes its interrupt pending; only then
/// halts on it, so a timer that never fires cannot put the CPU to sleep for good. Returns the
/// longest of `SELF_CHECK_HALTS` halts of `HALT_DURATION_MAX_US`, in microseconds.
fn self_check(halt: Halt) -> Result<u64, &'static str> {
    let now = tsc::read();
    halt.arm(
        tsc::TscTicks(now.0 + tsc::ticks_from_micros(SELF_CHECK_DELAY_US)),
        now,
    );
    let give_up = now.0 + tsc::ticks_from_micros(SELF_CHECK_DELAY_US + SELF_CHECK_TIMEOUT_US);
    while !halt.apic.interrupt_requested(WAKE_VECTOR) {
        if tsc::read().0 > give_up {
            halt.disarm();
            return Err("the lapic timer interrupt never became pending");
        }
        core::hint::spin_loop();
    }
    // The interrupt is pending, so this halt ends at once, through the handler.
    let taken = WAKE_INTERRUPTS.load(Ordering::Relaxed);
    halt_with_interrupts_on();
    if WAKE_INTERRUPTS.load(Ordering::Relaxed) == taken {
        return Err("the lapic timer interrupt was not taken");
    }
    let mut longest_us = 0;
    for _ in 0..SELF_CHECK_HALTS {
        let start = tsc::read();
        halt.halt(
            tsc::TscTicks(start.0 + tsc::ticks_from_micros(HALT_DURATION_MAX_US)),
            start,
        );
        let took_us = (tsc::read().0 - start.0) * 1_000_000 / tsc::hz();
        longest_us = longest_us.max(took_us);
    }
    Ok(longest_us)
}
