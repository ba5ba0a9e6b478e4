//! The machine clock: guest time is a pure function of the instruction count plus the time
//! advances that entered through the nondeterminism port, so replay reproduces it exactly.

use understudy_cpu::InstructionCount;

/// The `timebase-frequency` in the device tree, as in QEMU `virt`: 10 MHz.
pub const TIMEBASE_HZ: u64 = 10_000_000;

/// Guest time in timebase ticks.
#[derive(Clone, Debug)]
pub struct Clock {
    instructions_per_tick: u64,
    /// Ticks added by `advance` (idle skips and wall-clock catch-up).
    offset_ticks: u64,
}

impl Clock {
    pub fn new(instructions_per_tick: u64) -> Self {
        assert!(
            instructions_per_tick > 0,
            "clock: instructions_per_tick must be positive"
        );
        Clock {
            instructions_per_tick,
            offset_ticks: 0,
        }
    }

    pub fn ticks(&self, now: InstructionCount) -> u64 {
        self.offset_ticks
            .saturating_add(now.0 / self.instructions_per_tick)
    }

    pub fn advance(&mut self, ticks: u64) {
        self.offset_ticks = self.offset_ticks.saturating_add(ticks);
    }

    /// How many more instructions retire before the clock reaches `deadline_ticks`, or
    /// `None` if it already has.
    pub fn instructions_until(&self, now: InstructionCount, deadline_ticks: u64) -> Option<u64> {
        if self.ticks(now) >= deadline_ticks {
            return None;
        }
        let target =
            (deadline_ticks - self.offset_ticks).saturating_mul(self.instructions_per_tick);
        Some(target - now.0)
    }

    pub fn offset_ticks(&self) -> u64 {
        self.offset_ticks
    }

    pub fn instructions_per_tick(&self) -> u64 {
        self.instructions_per_tick
    }

    /// Sets the ticks added by `advance` so far (restoring saved machine state).
    pub fn set_offset_ticks(&mut self, ticks: u64) {
        self.offset_ticks = ticks;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_reached_after_exactly_the_predicted_instructions() {
        let mut clock = Clock::new(10);
        clock.advance(5);
        let now = InstructionCount(1234);
        let wait = clock.instructions_until(now, 200).unwrap();
        assert_eq!(clock.ticks(InstructionCount(now.0 + wait)), 200);
        assert_eq!(clock.ticks(InstructionCount(now.0 + wait - 1)), 199);
        assert_eq!(
            clock.instructions_until(InstructionCount(now.0 + wait), 200),
            None
        );
    }
}
