//! The TSC clock: its rate measured at boot from every source the machine has, cross-checked.
//!
//! Sources, most trusted first: CPUID leaf 0x15 (the TSC is the crystal times a ratio, exact
//! by definition, Intel SDM vol. 2A CPUID 15H), the hypervisor timing leaf 0x40000010 (the
//! hypervisor states the rate it gives the guest), PIT channel 0 (measured: the median of
//! several runs), and CPUID leaf 0x16 (the nominal base frequency in whole MHz, used only when
//! nothing else answers). Every source that answers is compared with the chosen one. With no
//! source the rate is unknown, and guessing would skew guest time and the lease's drift bound,
//! so `calibrate` returns an error the kernel turns into an epitaph.

use crate::println;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

/// The PIT input clock, in Hz (8254 datasheet; the PC's 14.31818 MHz / 12).
const PIT_HZ: u64 = 1_193_182;
/// One PIT measurement, in milliseconds: long against the PIT's 838 ns period and a few
/// microseconds of port-read latency at each end, short enough that five fit in the boot.
const PIT_MEASUREMENT_MS: u64 = 10;
/// PIT measurements taken; their median is the PIT's answer, so one run disturbed by an SMI
/// or by the host descheduling a virtual CPU does not skew it.
const PIT_MEASUREMENTS: usize = 5;
/// TSC ticks to wait for the PIT count to move before deciding there is no PIT (for example
/// `-M microvm,pit=off`, where the ports read 0xff): 10 ms at 10 GHz, 1 s at 100 MHz, against
/// a PIT that moves every 838 ns.
const PIT_START_WAIT_TSC_TICKS_MAX: u64 = 100_000_000;
/// TSC ticks one measurement may take before it is abandoned (a PIT that stopped counting):
/// 100 ms at 10 GHz.
const PIT_MEASUREMENT_TSC_TICKS_MAX: u64 = 1_000_000_000;
/// Sources may differ by this much, in parts per million, before the console says so: the
/// replication runtime's `clock_drift_ppm_max` (ft/src/limits.rs). A rate error beyond it is
/// a clock drift beyond what the output lease allows for.
const SOURCE_DISAGREEMENT_PPM_MAX: u64 = 1_000;

/// CPUID leaf 0x15: TSC/crystal ratio and crystal frequency (SDM vol. 2A, CPUID 15H).
const CPUID_LEAF_TSC_CRYSTAL: u32 = 0x15;
/// CPUID leaf 0x16: processor base frequency in MHz (SDM vol. 2A, CPUID 16H).
const CPUID_LEAF_BASE_FREQUENCY: u32 = 0x16;
/// CPUID.1:ECX bit 31: running under a hypervisor (reserved as 0 on bare metal).
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// The hypervisor leaf range starts here; its EAX is the highest hypervisor leaf.
const CPUID_LEAF_HYPERVISOR: u32 = 0x4000_0000;
/// The hypervisor timing leaf (VMware's, also offered by KVM/QEMU and cloud-hypervisor):
/// EAX is the TSC rate in kHz.
const CPUID_LEAF_HYPERVISOR_TIMING: u32 = 0x4000_0010;
/// CPUID leaf 0x80000007 EDX bit 8: invariant TSC, constant rate in every P-, C- and T-state
/// (SDM vol. 3B 17.17.1).
const CPUID_LEAF_ADVANCED_POWER: u32 = 0x8000_0007;
const CPUID_ADVANCED_POWER_EDX_INVARIANT_TSC: u32 = 1 << 8;

/// Zero until `calibrate` succeeds; `hz` asserts it is set.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_AT_CALIBRATION: AtomicU64 = AtomicU64::new(0);

/// A TSC reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TscTicks(pub u64);

/// Microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Micros(pub u64);

/// Where a TSC rate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalibrationSource {
    CpuidCrystal,
    Hypervisor,
    Pit,
    CpuidBaseFrequency,
}

impl fmt::Display for CalibrationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CpuidCrystal => "cpuid 0x15 crystal",
            Self::Hypervisor => "hypervisor cpuid 0x40000010",
            Self::Pit => "pit channel 0",
            Self::CpuidBaseFrequency => "cpuid 0x16 base frequency",
        })
    }
}

/// No source could give the TSC rate.
#[derive(Clone, Copy, Debug)]
pub struct CalibrationError;

impl fmt::Display for CalibrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "cannot measure the tsc rate: no pit counts and cpuid reports no tsc frequency \
             (leaves 0x15, 0x16, 0x40000010); give the machine a pit (qemu: do not set pit=off) \
             or a cpu model that reports its tsc frequency",
        )
    }
}

impl core::error::Error for CalibrationError {}

pub fn read() -> TscTicks {
    // SAFETY: `rdtsc` is unprivileged and has no side effects.
    TscTicks(unsafe { core::arch::x86_64::_rdtsc() })
}

/// Reads PIT channel 0's current count (counter-latch command, 8254 datasheet).
fn pit_channel0_count(command: &mut Port<u8>, channel0: &mut Port<u8>) -> u16 {
    // SAFETY: latching and reading the counter has no memory effects.
    unsafe {
        command.write(0x00);
        let low = channel0.read();
        let high = channel0.read();
        u16::from_le_bytes([low, high])
    }
}

/// Measures the TSC rate once while PIT channel 0 counts down `PIT_MEASUREMENT_MS`. Channel 0
/// rather than the usual channel 2 because channel 2's gate is port 0x61, which `microvm`
/// lacks. Its IRQ 0 stays masked (the 8259s are masked and the I/O APIC is never programmed).
/// Both ends are taken just after the count changes, so each is late by at most one poll.
fn measure_with_pit() -> Option<u64> {
    let mut command = Port::<u8>::new(0x43);
    let mut channel0 = Port::<u8>::new(0x40);
    let interval = (PIT_HZ * PIT_MEASUREMENT_MS / 1000) as u16;
    // SAFETY: PIT programming has no memory effects. Channel 0, lobyte/hibyte, mode 0
    // (interrupt on terminal count), binary, initial count 0xffff: 55 ms, more than one
    // measurement needs.
    unsafe {
        command.write(0x30);
        channel0.write(0xff);
        channel0.write(0xff);
    }
    // The count loads on the next input clock; wait for it to start moving.
    let waiting = read();
    let first = pit_channel0_count(&mut command, &mut channel0);
    let mut previous = first;
    while previous == first {
        if read().0.wrapping_sub(waiting.0) > PIT_START_WAIT_TSC_TICKS_MAX {
            return None;
        }
        previous = pit_channel0_count(&mut command, &mut channel0);
    }
    let start_count = previous;
    let start = read();
    loop {
        let count = pit_channel0_count(&mut command, &mut channel0);
        let now = read();
        // A count that rises means the counter wrapped or there is no PIT: either way stop.
        if count > previous || now.0.wrapping_sub(start.0) > PIT_MEASUREMENT_TSC_TICKS_MAX {
            return None;
        }
        previous = count;
        if start_count - count >= interval {
            let ticks = now.0 - start.0;
            let elapsed_pit = u64::from(start_count - count);
            return Some(ticks * PIT_HZ / elapsed_pit);
        }
    }
}

/// The PIT's answer: the median of the measurements that completed, and their spread.
struct PitResult {
    hz: u64,
    measured: usize,
    spread_ppm: u64,
}

fn calibrate_with_pit() -> Option<PitResult> {
    let mut rates = [0u64; PIT_MEASUREMENTS];
    let mut measured = 0;
    for _ in 0..PIT_MEASUREMENTS {
        match measure_with_pit() {
            Some(hz) => {
                rates[measured] = hz;
                measured += 1;
            }
            // No PIT at all answers nothing at the first attempt; do not wait five times.
            None if measured == 0 => return None,
            None => {}
        }
    }
    let rates = &mut rates[..measured];
    rates.sort_unstable();
    let hz = rates[measured / 2];
    Some(PitResult {
        hz,
        measured,
        spread_ppm: difference_ppm(rates[0], rates[measured - 1]),
    })
}

fn cpuid(leaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid(leaf)
}

fn cpuid_crystal() -> Option<u64> {
    if cpuid(0).eax < CPUID_LEAF_TSC_CRYSTAL {
        return None;
    }
    // EAX: denominator, EBX: numerator of the TSC/crystal ratio; ECX: crystal Hz (0 when the
    // CPU does not enumerate it, which leaves the rate unknown here).
    let leaf = cpuid(CPUID_LEAF_TSC_CRYSTAL);
    if leaf.eax == 0 || leaf.ebx == 0 || leaf.ecx == 0 {
        return None;
    }
    Some(u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax))
}

fn cpuid_base_frequency() -> Option<u64> {
    if cpuid(0).eax < CPUID_LEAF_BASE_FREQUENCY {
        return None;
    }
    let mhz = cpuid(CPUID_LEAF_BASE_FREQUENCY).eax & 0xffff;
    (mhz != 0).then_some(u64::from(mhz) * 1_000_000)
}

fn cpuid_hypervisor() -> Option<u64> {
    if cpuid(1).ecx & CPUID_1_ECX_HYPERVISOR == 0
        || cpuid(CPUID_LEAF_HYPERVISOR).eax < CPUID_LEAF_HYPERVISOR_TIMING
    {
        return None;
    }
    let khz = cpuid(CPUID_LEAF_HYPERVISOR_TIMING).eax;
    (khz != 0).then_some(u64::from(khz) * 1000)
}

fn invariant() -> bool {
    cpuid(0x8000_0000).eax >= CPUID_LEAF_ADVANCED_POWER
        && cpuid(CPUID_LEAF_ADVANCED_POWER).edx & CPUID_ADVANCED_POWER_EDX_INVARIANT_TSC != 0
}

/// How far apart two rates are, in parts per million of the first.
fn difference_ppm(a: u64, b: u64) -> u64 {
    (u128::from(a.abs_diff(b)) * 1_000_000 / u128::from(a.max(1))) as u64
}

/// Measures the TSC rate from every source the machine has, keeps the most trusted, prints
/// what it found (and any disagreement between sources) and starts the clock. Fails only when
/// no source answers.
pub fn calibrate() -> Result<(), CalibrationError> {
    let pit = calibrate_with_pit();
    let answers: [Option<(CalibrationSource, u64)>; 4] = [
        cpuid_crystal().map(|hz| (CalibrationSource::CpuidCrystal, hz)),
        cpuid_hypervisor().map(|hz| (CalibrationSource::Hypervisor, hz)),
        pit.as_ref().map(|pit| (CalibrationSource::Pit, pit.hz)),
        cpuid_base_frequency().map(|hz| (CalibrationSource::CpuidBaseFrequency, hz)),
    ];
    let (source, hz) = answers
        .iter()
        .flatten()
        .copied()
        .next()
        .ok_or(CalibrationError)?;
    let invariant = invariant();
    println!(
        "understudy: tsc {} kHz from {}, {}",
        hz / 1000,
        source,
        if invariant {
            "invariant"
        } else {
            "not reported invariant"
        }
    );
    if let Some(pit) = &pit {
        println!(
            "understudy: tsc pit median of {} measurements {} kHz, spread {} ppm",
            pit.measured,
            pit.hz / 1000,
            pit.spread_ppm
        );
        if pit.measured < PIT_MEASUREMENTS {
            println!(
                "understudy: warning: {} of {} pit measurements failed",
                PIT_MEASUREMENTS - pit.measured,
                PIT_MEASUREMENTS
            );
        }
    }
    for (other, other_hz) in answers.iter().flatten().filter(|(s, _)| *s != source) {
        let ppm = difference_ppm(hz, *other_hz);
        let verdict = if ppm > SOURCE_DISAGREEMENT_PPM_MAX {
            "disagrees"
        } else {
            "agrees"
        };
        println!(
            "understudy: tsc {} {} kHz {verdict} ({ppm} ppm apart; at most {SOURCE_DISAGREEMENT_PPM_MAX} ppm expected)",
            other,
            other_hz / 1000
        );
    }
    if !invariant {
        // QEMU's TCG and many hypervisors do not report it; the clock still works, but on
        // hardware its rate can change with power states.
        println!(
            "understudy: warning: cpuid 0x80000007 does not report an invariant tsc; \
             time may drift if the cpu changes frequency (on a hypervisor, expose invtsc)"
        );
    }
    TSC_HZ.store(hz, Ordering::Relaxed);
    TSC_AT_CALIBRATION.store(read().0, Ordering::Relaxed);
    Ok(())
}

/// TSC ticks per second. Calibration comes first in the boot; a use before it is a bug.
pub fn hz() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    assert!(hz != 0, "tsc used before calibration");
    hz
}

/// Microseconds since calibration.
pub fn now() -> Micros {
    let ticks = read()
        .0
        .wrapping_sub(TSC_AT_CALIBRATION.load(Ordering::Relaxed));
    Micros((u128::from(ticks) * 1_000_000 / u128::from(hz())) as u64)
}

/// TSC ticks in `micros` microseconds at the calibrated rate.
pub fn ticks_from_micros(micros: u64) -> u64 {
    (u128::from(micros) * u128::from(hz()) / 1_000_000) as u64
}
