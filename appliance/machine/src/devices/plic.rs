//! The PLIC (RISC-V Platform-Level Interrupt Controller specification 1.0.0), as in QEMU `virt`.
//!
//! Hart 0 has two contexts: 0 is machine mode, 1 is supervisor mode. Sources are level
//! triggered through the spec's interrupt gateway (chapter 4): a high line latches the
//! source's pending bit, which stays set until a claim even if the line drops; the gateway
//! forwards no new request for a claimed source until its completion.

use crate::state::{RestoreError, StateReader, StateWriter};

pub const PLIC_BASE: u64 = 0xc00_0000;
pub const PLIC_SIZE: u64 = 0x60_0000;
/// QEMU `virt` has 95 sources (1..=95); source 0 means "no interrupt" (spec 7).
pub const PLIC_SOURCES: usize = 96;
pub const PLIC_CONTEXTS: usize = 2;
pub const CONTEXT_MACHINE: usize = 0;
pub const CONTEXT_SUPERVISOR: usize = 1;
/// Three priority bits, as QEMU `virt` (VIRT_IRQCHIP_NUM_PRIO_BITS).
const PRIORITY_MASK: u32 = 0x7;
const PENDING_BASE: u64 = 0x1000;
const ENABLE_BASE: u64 = 0x2000;
const ENABLE_STRIDE: u64 = 0x80;
const CONTEXT_BASE: u64 = 0x20_0000;
const CONTEXT_STRIDE: u64 = 0x1000;
const WORDS: usize = PLIC_SOURCES.div_ceil(32);
/// One bit per source in a `u128`, so that finding the best source looks only at the
/// sources that are pending and enabled (usually none or one) instead of all 95.
const _: () = assert!(PLIC_SOURCES <= 128);

pub struct Plic {
    priority: [u32; PLIC_SOURCES],
    /// Bit n: source n's line is high.
    level: u128,
    /// Bit n: source n's gateway forwarded a request that was not claimed yet.
    pending: u128,
    /// Bit n: source n was claimed and not completed.
    claimed: u128,
    /// Bit n of `enable[context]`: source n may interrupt the context.
    enable: [u128; PLIC_CONTEXTS],
    threshold: [u32; PLIC_CONTEXTS],
}

impl Default for Plic {
    fn default() -> Self {
        Self::new()
    }
}

fn bit(source: usize) -> u128 {
    1 << source
}

impl Plic {
    pub fn new() -> Self {
        Plic {
            priority: [0; PLIC_SOURCES],
            level: 0,
            pending: 0,
            claimed: 0,
            enable: [0; PLIC_CONTEXTS],
            threshold: [0; PLIC_CONTEXTS],
        }
    }

    /// A device drives its interrupt line.
    pub fn set_level(&mut self, source: usize, high: bool) {
        assert!(
            source > 0 && source < PLIC_SOURCES,
            "plic: no source {source}"
        );
        if high {
            self.level |= bit(source);
            if self.claimed & bit(source) == 0 {
                self.pending |= bit(source);
            }
        } else {
            self.level &= !bit(source);
        }
    }

    fn enabled(&self, context: usize, source: usize) -> bool {
        self.enable[context] & bit(source) != 0
    }

    /// The best claimable source for `context`: highest priority above the threshold, ties
    /// to the lowest source number (spec 5). Visits the pending and enabled sources only,
    /// lowest number first.
    fn best(&self, context: usize) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        let mut candidates = self.pending & self.enable[context];
        while candidates != 0 {
            let source = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            let priority = self.priority[source];
            if priority > self.threshold[context] && best.is_none_or(|(_, p)| priority > p) {
                best = Some((source, priority));
            }
        }
        best.map(|(source, _)| source)
    }

    /// Whether the context's external interrupt line (MEIP or SEIP) is asserted.
    pub fn interrupt(&self, context: usize) -> bool {
        self.best(context).is_some()
    }

    fn enable_word(&self, context: usize, word: usize) -> u32 {
        (self.enable[context] >> (32 * word)) as u32
    }

    pub fn load(&mut self, offset: u64, size_bytes: u8) -> Option<u64> {
        if size_bytes != 4 {
            return None;
        }
        let value = if offset < PENDING_BASE {
            self.priority
                .get((offset / 4) as usize)
                .copied()
                .unwrap_or(0)
        } else if offset < ENABLE_BASE {
            let word = ((offset - PENDING_BASE) / 4) as usize;
            if word < WORDS {
                (self.pending >> (32 * word)) as u32
            } else {
                0
            }
        } else if offset < CONTEXT_BASE {
            let (context, word) = enable_index(offset)?;
            self.enable_word(context, word)
        } else {
            let context = ((offset - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
            if context >= PLIC_CONTEXTS {
                return Some(0);
            }
            match (offset - CONTEXT_BASE) % CONTEXT_STRIDE {
                0 => self.threshold[context],
                4 => self.claim(context) as u32,
                _ => 0,
            }
        };
        Some(u64::from(value))
    }

    pub fn store(&mut self, offset: u64, size_bytes: u8, value: u64) -> bool {
        if size_bytes != 4 {
            return false;
        }
        let value = value as u32;
        if offset < PENDING_BASE {
            let source = (offset / 4) as usize;
            if source > 0 && source < PLIC_SOURCES {
                self.priority[source] = value & PRIORITY_MASK;
            }
        } else if offset < ENABLE_BASE {
            // Pending bits are read-only.
        } else if offset < CONTEXT_BASE {
            if let Some((context, word)) = enable_index(offset) {
                // Source 0 does not exist: its enable bit is hardwired to zero.
                let mask = if word == 0 { !1 } else { u32::MAX };
                self.set_enable_word(context, word, value & mask);
            }
        } else {
            let context = ((offset - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
            if context < PLIC_CONTEXTS {
                match (offset - CONTEXT_BASE) % CONTEXT_STRIDE {
                    0 => self.threshold[context] = value & PRIORITY_MASK,
                    4 => self.complete(context, value as usize),
                    _ => {}
                }
            }
        }
        true
    }

    fn set_enable_word(&mut self, context: usize, word: usize, value: u32) {
        let shift = 32 * word;
        self.enable[context] =
            self.enable[context] & !(u128::from(u32::MAX) << shift) | u128::from(value) << shift;
    }

    fn claim(&mut self, context: usize) -> usize {
        match self.best(context) {
            Some(source) => {
                self.pending &= !bit(source);
                self.claimed |= bit(source);
                source
            }
            None => 0,
        }
    }

    /// Spec 9: a completion for a source not enabled for the context is ignored.
    fn complete(&mut self, context: usize, source: usize) {
        if source > 0 && source < PLIC_SOURCES && self.enabled(context, source) {
            self.claimed &= !bit(source);
            if self.level & bit(source) != 0 {
                self.pending |= bit(source);
            }
        }
    }

    pub fn write_state(&self, out: &mut StateWriter) {
        let flag = |bits: u128, source: usize| ((bits >> source) & 1) as u8;
        for source in 0..PLIC_SOURCES {
            out.u32(self.priority[source]);
            out.u8(flag(self.level, source)
                | flag(self.claimed, source) << 1
                | flag(self.pending, source) << 2);
        }
        for context in 0..PLIC_CONTEXTS {
            for word in 0..WORDS {
                out.u32(self.enable_word(context, word));
            }
            out.u32(self.threshold[context]);
        }
    }
}

impl Plic {
    /// Saved state for `Machine::save_devices`: the same fields as the digest's (priority,
    /// line level, claimed and pending bits per source; enables and threshold per context).
    pub fn save(&self, out: &mut StateWriter) {
        self.write_state(out);
    }

    /// A PLIC in the state `save` wrote; values the registers cannot hold are refused.
    pub fn restore(input: &mut StateReader) -> Result<Plic, RestoreError> {
        let mut plic = Plic::new();
        for source in 0..PLIC_SOURCES {
            let priority = input.u32()?;
            if priority & !PRIORITY_MASK != 0 || (source == 0 && priority != 0) {
                return Err(RestoreError::Invalid {
                    what: "plic priority",
                    value: u64::from(priority),
                });
            }
            let flags = input.flags(0b111, "plic source flags")?;
            if source == 0 && flags != 0 {
                return Err(RestoreError::Invalid {
                    what: "plic source 0 flags",
                    value: u64::from(flags),
                });
            }
            plic.priority[source] = priority;
            let set = |bits: &mut u128, flag: u8| *bits |= u128::from(flags & flag != 0) << source;
            set(&mut plic.level, 1);
            set(&mut plic.claimed, 2);
            set(&mut plic.pending, 4);
        }
        for context in 0..PLIC_CONTEXTS {
            for word in 0..WORDS {
                let value = input.u32()?;
                if word == 0 && value & 1 != 0 {
                    return Err(RestoreError::Invalid {
                        what: "plic enable of source 0",
                        value: u64::from(value),
                    });
                }
                plic.set_enable_word(context, word, value);
            }
            let threshold = input.u32()?;
            if threshold & !PRIORITY_MASK != 0 {
                return Err(RestoreError::Invalid {
                    what: "plic threshold",
                    value: u64::from(threshold),
                });
            }
            plic.threshold[context] = threshold;
        }
        Ok(plic)
    }
}

fn enable_index(offset: u64) -> Option<(usize, usize)> {
    let relative = offset - ENABLE_BASE;
    let context = (relative / ENABLE_STRIDE) as usize;
    let word = ((relative % ENABLE_STRIDE) / 4) as usize;
    (context < PLIC_CONTEXTS && word < WORDS).then_some((context, word))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UART: usize = 10;

    fn enabled_plic() -> Plic {
        let mut plic = Plic::new();
        plic.store(4 * UART as u64, 4, 1);
        plic.store(ENABLE_BASE + ENABLE_STRIDE, 4, 1 << UART);
        plic
    }

    #[test]
    fn claim_takes_the_source_and_complete_rearms_a_still_high_line() {
        let mut plic = enabled_plic();
        plic.set_level(UART, true);
        assert!(plic.interrupt(CONTEXT_SUPERVISOR));
        assert!(
            !plic.interrupt(CONTEXT_MACHINE),
            "not enabled for machine context"
        );
        let claim = CONTEXT_BASE + CONTEXT_STRIDE + 4;
        assert_eq!(plic.load(claim, 4), Some(UART as u64));
        assert!(
            !plic.interrupt(CONTEXT_SUPERVISOR),
            "claimed source is not pending"
        );
        assert_eq!(plic.load(claim, 4), Some(0));
        plic.store(claim, 4, UART as u64);
        assert!(
            plic.interrupt(CONTEXT_SUPERVISOR),
            "level still high after completion"
        );
        assert_eq!(plic.load(claim, 4), Some(UART as u64));
        plic.set_level(UART, false);
        plic.store(claim, 4, UART as u64);
        assert!(
            !plic.interrupt(CONTEXT_SUPERVISOR),
            "low line after completion: nothing pending"
        );
    }

    #[test]
    fn a_request_stays_pending_after_the_line_drops_until_claimed_spec_4() {
        let mut plic = enabled_plic();
        plic.set_level(UART, true);
        plic.set_level(UART, false);
        assert!(plic.interrupt(CONTEXT_SUPERVISOR));
        let claim = CONTEXT_BASE + CONTEXT_STRIDE + 4;
        assert_eq!(plic.load(claim, 4), Some(UART as u64));
        assert!(!plic.interrupt(CONTEXT_SUPERVISOR));
    }

    #[test]
    fn threshold_masks_sources_at_or_below_it() {
        let mut plic = enabled_plic();
        plic.set_level(UART, true);
        plic.store(CONTEXT_BASE + CONTEXT_STRIDE, 4, 1);
        assert!(!plic.interrupt(CONTEXT_SUPERVISOR));
        plic.store(4 * UART as u64, 4, 2);
        assert!(plic.interrupt(CONTEXT_SUPERVISOR));
    }

    #[test]
    fn odd_sized_and_out_of_range_accesses_do_not_panic() {
        let mut plic = Plic::new();
        assert_eq!(plic.load(0x4, 1), None);
        assert!(!plic.store(0x4, 8, 1));
        assert_eq!(plic.load(PLIC_SIZE - 4, 4), Some(0));
        assert!(plic.store(ENABLE_BASE + 0x1000, 4, 1));
        assert!(plic.store(0x0, 4, 7), "source 0 priority write is ignored");
        assert_eq!(plic.load(0x0, 4), Some(0));
    }

    fn saved(plic: &Plic) -> alloc::vec::Vec<u8> {
        let mut out = StateWriter::default();
        plic.save(&mut out);
        out.bytes
    }

    #[test]
    fn saved_state_with_a_claimed_and_a_pending_source_restores_exactly() {
        let mut plic = enabled_plic();
        plic.store(4 * 3, 4, 5);
        plic.store(ENABLE_BASE, 4, 1 << 3);
        plic.set_level(UART, true);
        plic.set_level(3, true);
        let claim = CONTEXT_BASE + CONTEXT_STRIDE + 4;
        assert_eq!(plic.load(claim, 4), Some(UART as u64));
        let bytes = saved(&plic);
        let mut restored = Plic::restore(&mut StateReader::new(&bytes)).unwrap();
        assert_eq!(saved(&restored), bytes);
        assert!(
            restored.interrupt(CONTEXT_MACHINE),
            "source 3 still pending"
        );
        assert!(
            !restored.interrupt(CONTEXT_SUPERVISOR),
            "UART still claimed"
        );
        restored.store(claim, 4, UART as u64);
        assert!(
            restored.interrupt(CONTEXT_SUPERVISOR),
            "the line is still high"
        );
    }

    #[test]
    fn saved_state_with_impossible_registers_is_refused() {
        let bytes = saved(&enabled_plic());
        let mut priority = bytes.clone();
        priority[5 * 4] = 9;
        assert!(matches!(
            Plic::restore(&mut StateReader::new(&priority)),
            Err(RestoreError::Invalid {
                what: "plic priority",
                ..
            })
        ));
        let mut flags = bytes.clone();
        flags[5 * 5 + 4] = 8;
        assert!(matches!(
            Plic::restore(&mut StateReader::new(&flags)),
            Err(RestoreError::Invalid { .. })
        ));
        assert!(matches!(
            Plic::restore(&mut StateReader::new(&bytes[..bytes.len() - 1])),
            Err(RestoreError::Truncated { .. })
        ));
    }

    /// The specification's algorithm spelled out (chapters 4, 5 and 9), one array slot per
    /// source and a scan over all of them, as the reference for the bitmap version.
    struct ReferencePlic {
        priority: [u32; PLIC_SOURCES],
        level: [bool; PLIC_SOURCES],
        pending: [bool; PLIC_SOURCES],
        claimed: [bool; PLIC_SOURCES],
        enable: [[bool; PLIC_SOURCES]; PLIC_CONTEXTS],
        threshold: [u32; PLIC_CONTEXTS],
    }

    impl ReferencePlic {
        fn best(&self, context: usize) -> Option<usize> {
            let mut best: Option<(usize, u32)> = None;
            for source in 1..PLIC_SOURCES {
                let priority = self.priority[source];
                if self.pending[source]
                    && self.enable[context][source]
                    && priority > self.threshold[context]
                    && best.is_none_or(|(_, p)| priority > p)
                {
                    best = Some((source, priority));
                }
            }
            best.map(|(source, _)| source)
        }

        fn set_level(&mut self, source: usize, high: bool) {
            self.level[source] = high;
            if high && !self.claimed[source] {
                self.pending[source] = true;
            }
        }

        fn claim(&mut self, context: usize) -> usize {
            let Some(source) = self.best(context) else {
                return 0;
            };
            self.pending[source] = false;
            self.claimed[source] = true;
            source
        }

        fn complete(&mut self, context: usize, source: usize) {
            if source > 0 && source < PLIC_SOURCES && self.enable[context][source] {
                self.claimed[source] = false;
                if self.level[source] {
                    self.pending[source] = true;
                }
            }
        }
    }

    #[test]
    fn bitmap_plic_claims_what_the_reference_scan_claims_over_random_traffic() {
        let mut plic = Plic::new();
        let mut reference = ReferencePlic {
            priority: [0; PLIC_SOURCES],
            level: [false; PLIC_SOURCES],
            pending: [false; PLIC_SOURCES],
            claimed: [false; PLIC_SOURCES],
            enable: [[false; PLIC_SOURCES]; PLIC_CONTEXTS],
            threshold: [0; PLIC_CONTEXTS],
        };
        // A fixed xorshift sequence: the same traffic every run.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for step in 0..200_000 {
            let roll = next();
            // Few distinct sources and priorities, so ties and re-raised lines are common;
            // sources 1 and 95 are the ends of the bitmap's words.
            let source = [1, 10, 31, 32, 33, 63, 64, 95][(roll >> 8) as usize % 8];
            let context = (roll >> 16) as usize % PLIC_CONTEXTS;
            let value = (roll >> 24) as u32 % 4;
            match roll % 6 {
                0 | 1 => {
                    let high = value.is_multiple_of(2);
                    plic.set_level(source, high);
                    reference.set_level(source, high);
                }
                2 => {
                    plic.store(4 * source as u64, 4, u64::from(value));
                    reference.priority[source] = value;
                }
                3 => {
                    let word = source / 32;
                    let mask = 1u32 << (source % 32);
                    let offset = ENABLE_BASE + context as u64 * ENABLE_STRIDE + 4 * word as u64;
                    let old = plic.load(offset, 4).unwrap() as u32;
                    let new = if value < 3 { old | mask } else { old & !mask };
                    plic.store(offset, 4, u64::from(new));
                    reference.enable[context][source] = value < 3;
                }
                4 => {
                    let claim = CONTEXT_BASE + context as u64 * CONTEXT_STRIDE + 4;
                    assert_eq!(
                        plic.load(claim, 4),
                        Some(reference.claim(context) as u64),
                        "claim at step {step}"
                    );
                }
                _ => {
                    let complete = CONTEXT_BASE + context as u64 * CONTEXT_STRIDE + 4;
                    plic.store(complete, 4, source as u64);
                    reference.complete(context, source);
                    if value == 0 {
                        let threshold = CONTEXT_BASE + context as u64 * CONTEXT_STRIDE;
                        let level = (roll >> 40) as u32 % 3;
                        plic.store(threshold, 4, u64::from(level));
                        reference.threshold[context] = level;
                    }
                }
            }
            for context in 0..PLIC_CONTEXTS {
                assert_eq!(
                    plic.best(context),
                    reference.best(context),
                    "context {context} at step {step}"
                );
            }
            for word in 0..WORDS {
                let pending = plic.load(PENDING_BASE + 4 * word as u64, 4).unwrap() as u32;
                let expected = (0..32)
                    .filter(|bit| reference.pending.get(word * 32 + bit) == Some(&true))
                    .fold(0, |acc, bit| acc | 1 << bit);
                assert_eq!(pending, expected, "pending word {word} at step {step}");
            }
        }
    }
}
