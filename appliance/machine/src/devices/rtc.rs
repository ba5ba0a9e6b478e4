//! The Goldfish real-time clock (Android goldfish virtual hardware, `google,goldfish-rtc`, as
//! in QEMU `virt`): wall time in nanoseconds and one alarm.
//!
//! Wall time is a pure function of guest time: `wall_clock_base_ns` (an input, set once at
//! boot from the host's clock and recorded) plus 100 ns per timebase tick, plus whatever the
//! guest set. The alarm fires when guest time reaches it; nothing changes state behind the
//! guest's back: an expired alarm is computed from the tick count when it is observed, and
//! turned into state only at register accesses, which happen at exact instructions.

use crate::fdt::FdtWriter;
use crate::state::{RestoreError, StateReader, StateWriter};

pub const RTC_BASE: u64 = 0x10_1000;
pub const RTC_SIZE: u64 = 0x1000;
/// PLIC source, as QEMU `virt` (VIRT_RTC_IRQ).
pub const RTC_IRQ: usize = 11;
/// Nanoseconds per timebase tick (10 MHz, `clock::TIMEBASE_HZ`).
pub const NANOSECONDS_PER_TICK: u64 = 100;

/// Register offsets (goldfish RTC: the 32-bit registers Linux `rtc-goldfish` uses).
pub const TIME_LOW: u64 = 0x00;
pub const TIME_HIGH: u64 = 0x04;
pub const ALARM_LOW: u64 = 0x08;
pub const ALARM_HIGH: u64 = 0x0c;
pub const IRQ_ENABLED: u64 = 0x10;
pub const CLEAR_ALARM: u64 = 0x14;
pub const ALARM_STATUS: u64 = 0x18;
pub const CLEAR_INTERRUPT: u64 = 0x1c;

pub struct GoldfishRtc {
    /// Wall time at tick 0, in nanoseconds (wrapping: the guest may set any time).
    offset_ns: u64,
    /// TIME_HIGH as latched by the last TIME_LOW read, so a 64-bit read is consistent.
    time_high_latch: u32,
    /// The alarm time, also the value ALARM_LOW/HIGH read back.
    alarm_ns: u64,
    /// The alarm is armed and has not been observed to fire.
    alarm_armed: bool,
    irq_enabled: bool,
    irq_pending: bool,
}

impl Default for GoldfishRtc {
    fn default() -> Self {
        Self::new()
    }
}

impl GoldfishRtc {
    pub fn new() -> Self {
        GoldfishRtc {
            offset_ns: 0,
            time_high_latch: 0,
            alarm_ns: 0,
            alarm_armed: false,
            irq_enabled: false,
            irq_pending: false,
        }
    }

    /// An input: the wall time at guest tick 0 (the host's clock at boot, in ns since the
    /// Unix epoch).
    pub fn set_wall_clock_base_ns(&mut self, base_ns: u64) {
        self.offset_ns = base_ns;
    }

    /// Wall time in ns at guest time `ticks`.
    pub fn time_ns(&self, ticks: u64) -> u64 {
        self.offset_ns
            .wrapping_add(ticks.wrapping_mul(NANOSECONDS_PER_TICK))
    }

    fn alarm_expired(&self, ticks: u64) -> bool {
        self.alarm_armed && self.time_ns(ticks) >= self.alarm_ns
    }

    /// The interrupt line towards the PLIC at guest time `ticks`.
    pub fn interrupt(&self, ticks: u64) -> bool {
        self.irq_enabled && (self.irq_pending || self.alarm_expired(ticks))
    }

    /// The guest time in ticks at which the armed alarm fires (at or before `ticks` if it
    /// already has), so the machine can end a run slice there; `None` if no alarm is armed.
    pub fn next_alarm_ticks(&self, ticks: u64) -> Option<u64> {
        if !self.alarm_armed {
            return None;
        }
        let now_ns = self.time_ns(ticks);
        if now_ns >= self.alarm_ns {
            return Some(ticks);
        }
        let wait_ticks = (self.alarm_ns - now_ns).div_ceil(NANOSECONDS_PER_TICK);
        Some(ticks.saturating_add(wait_ticks))
    }

    /// Turns an alarm that has fired by `ticks` into a pending interrupt. Called only at
    /// register accesses, so the stored state changes at exact instructions.
    fn settle(&mut self, ticks: u64) {
        if self.alarm_expired(ticks) {
            self.alarm_armed = false;
            self.irq_pending = true;
        }
    }

    pub fn load(&mut self, offset: u64, size_bytes: u8, ticks: u64) -> Option<u64> {
        if size_bytes != 4 || !offset.is_multiple_of(4) {
            return None;
        }
        self.settle(ticks);
        let value = match offset {
            TIME_LOW => {
                let now = self.time_ns(ticks);
                self.time_high_latch = (now >> 32) as u32;
                now as u32
            }
            TIME_HIGH => self.time_high_latch,
            ALARM_LOW => self.alarm_ns as u32,
            ALARM_HIGH => (self.alarm_ns >> 32) as u32,
            IRQ_ENABLED => self.irq_enabled as u32,
            ALARM_STATUS => self.alarm_armed as u32,
            _ => 0,
        };
        Some(u64::from(value))
    }

    pub fn store(&mut self, offset: u64, size_bytes: u8, value: u64, ticks: u64) -> bool {
        if size_bytes != 4 || !offset.is_multiple_of(4) {
            return false;
        }
        self.settle(ticks);
        let value = value as u32;
        match offset {
            // Setting the time replaces one half of the current time (Linux writes HIGH,
            // then LOW).
            TIME_LOW | TIME_HIGH => {
                let now = self.time_ns(ticks);
                let new = if offset == TIME_LOW {
                    (now & !0xffff_ffff) | u64::from(value)
                } else {
                    (now & 0xffff_ffff) | (u64::from(value) << 32)
                };
                self.offset_ns = self.offset_ns.wrapping_add(new.wrapping_sub(now));
            }
            ALARM_HIGH => {
                self.alarm_ns = (self.alarm_ns & 0xffff_ffff) | (u64::from(value) << 32);
            }
            // Writing the low half arms the alarm; one already in the past fires at once.
            ALARM_LOW => {
                self.alarm_ns = (self.alarm_ns & !0xffff_ffff) | u64::from(value);
                self.alarm_armed = true;
                self.settle(ticks);
            }
            IRQ_ENABLED => self.irq_enabled = value & 1 != 0,
            CLEAR_ALARM => self.alarm_armed = false,
            CLEAR_INTERRUPT => self.irq_pending = false,
            _ => {}
        }
        true
    }

    pub fn write_state(&self, out: &mut StateWriter) {
        out.u64(self.offset_ns);
        out.u32(self.time_high_latch);
        out.u64(self.alarm_ns);
        out.u8(self.alarm_armed as u8
            | (self.irq_enabled as u8) << 1
            | (self.irq_pending as u8) << 2);
    }

    /// Saved state for `Machine::save_devices`: the same fields as the digest's.
    pub fn save(&self, out: &mut StateWriter) {
        self.write_state(out);
    }

    /// An RTC in the state `save` wrote.
    pub fn restore(input: &mut StateReader) -> Result<GoldfishRtc, RestoreError> {
        let offset_ns = input.u64()?;
        let time_high_latch = input.u32()?;
        let alarm_ns = input.u64()?;
        let flags = input.flags(0b111, "rtc flags")?;
        Ok(GoldfishRtc {
            offset_ns,
            time_high_latch,
            alarm_ns,
            alarm_armed: flags & 1 != 0,
            irq_enabled: flags & 2 != 0,
            irq_pending: flags & 4 != 0,
        })
    }
}

/// Writes the RTC's device tree node (Linux `google,goldfish-rtc` binding). Call inside
/// `/soc`.
pub fn write_fdt_node(fdt: &mut FdtWriter, plic_phandle: u32) {
    fdt.begin_node("rtc@101000");
    fdt.property_string("compatible", "google,goldfish-rtc");
    fdt.property_cells(
        "reg",
        &[
            (RTC_BASE >> 32) as u32,
            RTC_BASE as u32,
            (RTC_SIZE >> 32) as u32,
            RTC_SIZE as u32,
        ],
    );
    fdt.property_u32("interrupt-parent", plic_phandle);
    fdt.property_u32("interrupts", RTC_IRQ as u32);
    fdt.end_node();
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE_NS: u64 = 1_764_000_000_000_000_000;

    fn read_time(rtc: &mut GoldfishRtc, ticks: u64) -> u64 {
        let low = rtc.load(TIME_LOW, 4, ticks).unwrap();
        let high = rtc.load(TIME_HIGH, 4, ticks + 5).unwrap();
        high << 32 | low
    }

    #[test]
    fn time_is_the_base_plus_100_ns_per_tick() {
        let mut rtc = GoldfishRtc::new();
        rtc.set_wall_clock_base_ns(BASE_NS);
        assert_eq!(read_time(&mut rtc, 0), BASE_NS);
        assert_eq!(read_time(&mut rtc, 10_000_000), BASE_NS + 1_000_000_000);
    }

    #[test]
    fn time_high_is_latched_by_the_low_read() {
        let mut rtc = GoldfishRtc::new();
        rtc.set_wall_clock_base_ns(0xffff_ff00);
        let low = rtc.load(TIME_LOW, 4, 0).unwrap();
        // 100 ticks later the high half has moved on, but the latch has not.
        assert_eq!(rtc.load(TIME_HIGH, 4, 100).unwrap(), 0);
        assert_eq!(low, 0xffff_ff00);
    }

    #[test]
    fn guest_sets_the_time_high_then_low() {
        let mut rtc = GoldfishRtc::new();
        rtc.set_wall_clock_base_ns(BASE_NS);
        let target: u64 = 0x1234_5678_9abc_def0;
        rtc.store(TIME_HIGH, 4, target >> 32, 1000);
        rtc.store(TIME_LOW, 4, target & 0xffff_ffff, 1000);
        assert_eq!(read_time(&mut rtc, 1000), target);
        assert_eq!(read_time(&mut rtc, 1010), target + 1000);
    }

    #[test]
    fn alarm_fires_exactly_when_guest_time_reaches_it() {
        let mut rtc = GoldfishRtc::new();
        rtc.set_wall_clock_base_ns(BASE_NS);
        let alarm = BASE_NS + 1_050; // 10.5 ticks after 0.
        rtc.store(ALARM_HIGH, 4, alarm >> 32, 0);
        rtc.store(ALARM_LOW, 4, alarm & 0xffff_ffff, 0);
        rtc.store(IRQ_ENABLED, 4, 1, 0);
        assert_eq!(rtc.load(ALARM_STATUS, 4, 0), Some(1));
        assert_eq!(rtc.next_alarm_ticks(0), Some(11));
        assert!(!rtc.interrupt(10));
        assert!(rtc.interrupt(11));
        // Observing the line does not change state; the digest is the same at any tick.
        let mut before = StateWriter::default();
        rtc.write_state(&mut before);
        let _ = rtc.interrupt(50);
        let mut after = StateWriter::default();
        rtc.write_state(&mut after);
        assert_eq!(before.bytes, after.bytes);
        // The handler clears the interrupt; the alarm is no longer armed.
        rtc.store(CLEAR_INTERRUPT, 4, 1, 12);
        assert!(!rtc.interrupt(12));
        assert_eq!(rtc.load(ALARM_STATUS, 4, 12), Some(0));
        assert_eq!(rtc.next_alarm_ticks(12), None);
    }

    #[test]
    fn alarm_in_the_past_fires_at_once_and_clear_alarm_disarms() {
        let mut rtc = GoldfishRtc::new();
        rtc.set_wall_clock_base_ns(BASE_NS);
        rtc.store(IRQ_ENABLED, 4, 1, 0);
        rtc.store(ALARM_HIGH, 4, 0, 0);
        rtc.store(ALARM_LOW, 4, 5, 0);
        assert!(rtc.interrupt(0));
        assert_eq!(rtc.load(ALARM_STATUS, 4, 0), Some(0));
        rtc.store(CLEAR_INTERRUPT, 4, 1, 0);

        let alarm = BASE_NS + 1_000_000;
        rtc.store(ALARM_HIGH, 4, alarm >> 32, 0);
        rtc.store(ALARM_LOW, 4, alarm & 0xffff_ffff, 0);
        rtc.store(CLEAR_ALARM, 4, 1, 0);
        assert!(!rtc.interrupt(u64::MAX / 200));
        assert_eq!(rtc.next_alarm_ticks(0), None);
    }

    #[test]
    fn disabled_irq_holds_the_line_low() {
        let mut rtc = GoldfishRtc::new();
        rtc.store(ALARM_LOW, 4, 0, 0);
        assert!(!rtc.interrupt(0));
        rtc.store(IRQ_ENABLED, 4, 1, 0);
        assert!(rtc.interrupt(0), "pending interrupt shows once enabled");
    }

    /// Seeded random register traffic: whatever the guest does, `next_alarm_ticks` names
    /// the first tick at which an armed alarm raises the line, so cutting run slices there
    /// delivers the alarm at an exact instruction.
    #[test]
    fn next_alarm_ticks_is_exactly_where_the_line_rises_for_random_traffic() {
        let mut state = 0x5eed_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut future_alarms = 0;
        for _ in 0..2000 {
            let mut rtc = GoldfishRtc::new();
            rtc.set_wall_clock_base_ns(next() >> 4);
            let mut ticks = next() % 1000;
            for _ in 0..30 {
                ticks += next() % 2000;
                let offset = (next() % 9) * 4;
                let near = rtc.time_ns(ticks).wrapping_add(next() % 300_000);
                let value = match next() % 3 {
                    0 => near & 0xffff_ffff,
                    1 => near >> 32,
                    _ => next() & 0xffff_ffff,
                };
                if next() % 2 == 0 {
                    assert!(rtc.store(offset, 4, value, ticks));
                } else {
                    assert!(rtc.load(offset, 4, ticks).is_some());
                }
                if let Some(fire) = rtc.next_alarm_ticks(ticks) {
                    assert!(fire >= ticks);
                    future_alarms += (fire > ticks) as u32;
                    let line_before = fire > ticks && rtc.interrupt(fire - 1);
                    assert_eq!(rtc.interrupt(fire), rtc.irq_enabled, "line at the alarm");
                    assert!(
                        !line_before || rtc.irq_pending,
                        "line rose before the alarm"
                    );
                }
            }
        }
        assert!(
            future_alarms > 100,
            "the property test reached armed future alarms"
        );
    }

    #[test]
    fn odd_accesses_fault() {
        let mut rtc = GoldfishRtc::new();
        assert_eq!(rtc.load(TIME_LOW, 8, 0), None);
        assert_eq!(rtc.load(2, 4, 0), None);
        assert!(!rtc.store(TIME_LOW, 1, 0, 0));
        assert_eq!(rtc.load(0x100, 4, 0), Some(0));
    }

    #[test]
    fn saved_state_keeps_the_armed_alarm_and_refuses_unknown_flags() {
        let mut rtc = GoldfishRtc::new();
        rtc.set_wall_clock_base_ns(BASE_NS);
        rtc.store(IRQ_ENABLED, 4, 1, 0);
        rtc.store(ALARM_HIGH, 4, (BASE_NS + 1_000) >> 32, 0);
        rtc.store(ALARM_LOW, 4, (BASE_NS + 1_000) & 0xffff_ffff, 0);
        let mut saved = StateWriter::default();
        rtc.save(&mut saved);
        let restored = GoldfishRtc::restore(&mut StateReader::new(&saved.bytes)).unwrap();
        let mut again = StateWriter::default();
        restored.save(&mut again);
        assert_eq!(again.bytes, saved.bytes);
        assert_eq!(restored.next_alarm_ticks(0), Some(10));
        assert!(restored.interrupt(10) && !restored.interrupt(9));
        let last = saved.bytes.len() - 1;
        saved.bytes[last] = 8;
        assert_eq!(
            GoldfishRtc::restore(&mut StateReader::new(&saved.bytes)).err(),
            Some(RestoreError::Invalid {
                what: "rtc flags",
                value: 8
            })
        );
    }
}
