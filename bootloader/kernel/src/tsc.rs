//! The TSC clock, calibrated at boot against PIT channel 0 (or CPUID leaves 0x15/0x16).

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

/// The PIT input clock, in Hz (8254 datasheet; the PC's 14.31818 MHz / 12).
const PIT_HZ: u64 = 1_193_182;
/// Calibration interval, in milliseconds.
const CALIBRATION_MS: u64 = 20;
/// PIT reads before deciding there is no PIT (for example `-M microvm,pit=off`).
const PIT_POLLS_MAX: u64 = 50_000_000;
/// Used only when no calibration source works; printed as a warning.
const FALLBACK_TSC_HZ: u64 = 1_000_000_000;

static TSC_HZ: AtomicU64 = AtomicU64::new(FALLBACK_TSC_HZ);
static TSC_AT_CALIBRATION: AtomicU64 = AtomicU64::new(0);

/// A TSC reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TscTicks(pub u64);

/// Microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Micros(pub u64);

/// Where the TSC rate came from.
#[derive(Clone, Copy, Debug)]
pub enum CalibrationSource {
    Pit,
    CpuidCrystal,
    CpuidBaseFrequency,
    Fallback,
}

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

/// Measures TSC ticks while PIT channel 0 counts down `CALIBRATION_MS`. Channel 0 rather than
/// the usual channel 2 because channel 2's gate is port 0x61, which `microvm` lacks. Its IRQ 0
/// stays masked (the 8259s are masked and the I/O APIC is never programmed).
fn calibrate_with_pit() -> Option<u64> {
    let mut command = Port::<u8>::new(0x43);
    let mut channel0 = Port::<u8>::new(0x40);
    let interval = (PIT_HZ * CALIBRATION_MS / 1000) as u16;
    // SAFETY: PIT programming has no memory effects. Channel 0, lobyte/hibyte, mode 0
    // (interrupt on terminal count), binary, initial count 0xffff.
    unsafe {
        command.write(0x30);
        channel0.write(0xff);
        channel0.write(0xff);
    }
    // The count loads on the next input clock; wait for it to start moving.
    let mut polls = 0u64;
    let first = pit_channel0_count(&mut command, &mut channel0);
    let mut previous = first;
    while previous == first {
        polls += 1;
        if polls > PIT_POLLS_MAX {
            return None;
        }
        previous = pit_channel0_count(&mut command, &mut channel0);
    }
    let start_count = previous;
    let start = read();
    loop {
        let count = pit_channel0_count(&mut command, &mut channel0);
        // A count that rises means the counter wrapped or there is no PIT: either way stop.
        if count > previous {
            return None;
        }
        previous = count;
        if start_count - count >= interval {
            break;
        }
        polls += 1;
        if polls > PIT_POLLS_MAX {
            return None;
        }
    }
    let ticks = read().0 - start.0;
    let elapsed_pit = u64::from(start_count - previous);
    Some(ticks * PIT_HZ / elapsed_pit)
}

fn calibrate_with_cpuid() -> Option<(u64, CalibrationSource)> {
    let max_leaf = core::arch::x86_64::__cpuid(0).eax;
    if max_leaf >= 0x15 {
        // SDM vol. 2A, CPUID leaf 15H: TSC/crystal ratio and crystal Hz.
        let leaf = core::arch::x86_64::__cpuid(0x15);
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            return Some((
                u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax),
                CalibrationSource::CpuidCrystal,
            ));
        }
    }
    if max_leaf >= 0x16 {
        // CPUID leaf 16H: EAX is the base frequency in MHz.
        let leaf = core::arch::x86_64::__cpuid(0x16);
        if leaf.eax != 0 {
            return Some((
                u64::from(leaf.eax) * 1_000_000,
                CalibrationSource::CpuidBaseFrequency,
            ));
        }
    }
    None
}

/// Calibrates the TSC; returns the rate in Hz and its source.
pub fn calibrate() -> (u64, CalibrationSource) {
    let (hz, source) = match calibrate_with_pit() {
        Some(hz) => (hz, CalibrationSource::Pit),
        None => calibrate_with_cpuid().unwrap_or((FALLBACK_TSC_HZ, CalibrationSource::Fallback)),
    };
    TSC_HZ.store(hz, Ordering::Relaxed);
    TSC_AT_CALIBRATION.store(read().0, Ordering::Relaxed);
    (hz, source)
}

pub fn hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Microseconds since calibration.
pub fn now() -> Micros {
    let ticks = read()
        .0
        .wrapping_sub(TSC_AT_CALIBRATION.load(Ordering::Relaxed));
    Micros((u128::from(ticks) * 1_000_000 / u128::from(hz())) as u64)
}
