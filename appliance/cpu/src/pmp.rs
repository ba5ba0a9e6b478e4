//! Physical memory protection (privileged spec 3.7): sixteen entries, OFF/TOR/NA4/NAPOT, locks.
//!
//! Every access from S and U mode is checked, and so is every access from M mode that an
//! entry with L set matches or that MPRV makes an S or U access (3.7.1). Page-table walks are
//! checked as S-mode accesses (3.7.2). Implementation choices, matching QEMU 7.2's `virt`
//! where the specification leaves room:
//! - 16 entries (`pmpcfg0`, `pmpcfg2`, `pmpaddr0`-`pmpaddr15`); the CSRs of entries 16-63 and
//!   `pmpcfg4`-`pmpcfg14` read as zero and ignore writes (the fields of unimplemented entries
//!   are read-only zero); odd `pmpcfg` CSRs do not exist on RV64 (3.7.1).
//! - Granularity G = 0: every 4-byte region, NA4 included, can be selected (QEMU reads back
//!   any `pmpaddr` value, low bits included).
//! - `pmpaddr` keeps bits 53:0 (physical address bits 55:2); bits 63:54 read as zero, as
//!   figure 3.32 says (QEMU 7.2 keeps all 64 bits).
//! - `pmpcfg` bits 6:5 read as zero (figure 3.33); the reserved combination R=0, W=1 of the
//!   WARL R/W/X field is stored as R=0, W=0 (QEMU 7.2 keeps both bits as written).
//!
//! The hart consults the PMP only when it fills a soft TLB entry (a page wholly inside one
//! permission set) and on its slow paths, and flushes the TLBs when an entry changes, so
//! accesses that hit the TLBs pay nothing for it.

use crate::mmu::Access;
use crate::Privilege;

/// PMP entries implemented (privileged spec 3.7.1 allows 0, 16 or 64).
pub(crate) const PMP_ENTRIES: usize = 16;
/// `pmpaddr` holds physical address bits 55:2 on RV64 (privileged spec 3.7.1, figure 3.32).
const PMPADDR_MASK: u64 = (1 << 54) - 1;
/// Bytes per unit of `pmpaddr` (the register holds the address shifted right by 2).
const PMPADDR_UNIT_SHIFT: u32 = 2;

/// `pmpcfg` fields (privileged spec 3.7.1, figure 3.33).
pub(crate) const PMP_R: u8 = 1 << 0;
pub(crate) const PMP_W: u8 = 1 << 1;
pub(crate) const PMP_X: u8 = 1 << 2;
const PMP_A_SHIFT: u32 = 3;
const PMP_A: u8 = 3 << PMP_A_SHIFT;
pub(crate) const PMP_L: u8 = 1 << 7;
/// The bits a `pmpcfg` write can set; bits 6:5 are reserved (read as zero).
const PMP_CFG_WRITABLE: u8 = PMP_L | PMP_A | PMP_X | PMP_W | PMP_R;
/// Address-matching modes (privileged spec table 3.10); 0 is OFF.
const A_TOR: u8 = 1;
const A_NA4: u8 = 2;
const A_NAPOT: u8 = 3;

/// CSR numbers of the PMP (privileged spec table 2.5).
pub(crate) const PMPCFG0: u16 = 0x3a0;
pub(crate) const PMPCFG15: u16 = 0x3af;
pub(crate) const PMPADDR0: u16 = 0x3b0;
pub(crate) const PMPADDR63: u16 = 0x3ef;
/// `pmpcfg` CSRs hold 8 entries each on RV64.
const ENTRIES_PER_CFG_CSR: usize = 8;
/// Words `Pmp::write_state` emits: `pmpcfg0`, `pmpcfg2` and the 16 addresses.
pub(crate) const PMP_STATE_WORDS: usize = 2 + PMP_ENTRIES;

/// Sixteen PMP entries and the byte ranges they match, recomputed on every write.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pmp {
    cfg: [u8; PMP_ENTRIES],
    addr: [u64; PMP_ENTRIES],
    /// `[start, end)` in bytes of every entry that matches anything.
    ranges: [Option<(u64, u64)>; PMP_ENTRIES],
    /// Some entry has L set, so M-mode accesses need checking too.
    any_locked: bool,
}

/// The permission bit an access needs.
fn needed(access: Access) -> u8 {
    match access {
        Access::Fetch => PMP_X,
        Access::Load => PMP_R,
        Access::Store => PMP_W,
    }
}

impl Pmp {
    /// The value of CSR `csr` in 0x3a0..=0x3ef, or `None` for an odd `pmpcfg`.
    pub fn read(&self, csr: u16) -> Option<u64> {
        if (PMPCFG0..=PMPCFG15).contains(&csr) {
            let index = (csr - PMPCFG0) as usize;
            if index % 2 == 1 {
                return None;
            }
            let first = index / 2 * ENTRIES_PER_CFG_CSR;
            let Some(bytes) = self.cfg.get(first..first + ENTRIES_PER_CFG_CSR) else {
                return Some(0);
            };
            return Some(
                bytes
                    .iter()
                    .enumerate()
                    .fold(0, |value, (i, &cfg)| value | u64::from(cfg) << (8 * i)),
            );
        }
        let index = csr.checked_sub(PMPADDR0)? as usize;
        Some(self.addr.get(index).copied().unwrap_or(0))
    }

    /// Writes CSR `csr` in 0x3a0..=0x3ef with the WARL and lock rules; `false` for an odd
    /// `pmpcfg`. The caller flushes cached translations.
    pub fn write(&mut self, csr: u16, value: u64) -> bool {
        if (PMPCFG0..=PMPCFG15).contains(&csr) {
            let index = (csr - PMPCFG0) as usize;
            if index % 2 == 1 {
                return false;
            }
            let first = index / 2 * ENTRIES_PER_CFG_CSR;
            for i in 0..ENTRIES_PER_CFG_CSR {
                self.write_cfg(first + i, (value >> (8 * i)) as u8);
            }
        } else if let Some(index) = csr.checked_sub(PMPADDR0) {
            self.write_addr(index as usize, value);
        }
        self.update_ranges();
        true
    }

    /// A locked entry ignores writes to its configuration (privileged spec 3.7.1.3).
    fn write_cfg(&mut self, index: usize, value: u8) {
        let Some(&old) = self.cfg.get(index) else {
            return;
        };
        if old & PMP_L != 0 {
            return;
        }
        let mut cfg = value & PMP_CFG_WRITABLE;
        // R=0, W=1 is reserved in the WARL R/W/X field: keep a legal value, W cleared.
        if cfg & PMP_R == 0 {
            cfg &= !PMP_W;
        }
        self.cfg[index] = cfg;
    }

    /// A locked entry ignores writes to its address, and so does the address below a locked
    /// TOR entry, which is that entry's lower bound (privileged spec 3.7.1.3).
    fn write_addr(&mut self, index: usize, value: u64) {
        if index >= PMP_ENTRIES || self.cfg[index] & PMP_L != 0 {
            return;
        }
        if let Some(&above) = self.cfg.get(index + 1) {
            if above & PMP_L != 0 && (above & PMP_A) >> PMP_A_SHIFT == A_TOR {
                return;
            }
        }
        self.addr[index] = value & PMPADDR_MASK;
    }

    /// Recomputes every entry's byte range (privileged spec 3.7.1.1, table 3.11).
    fn update_ranges(&mut self) {
        for i in 0..PMP_ENTRIES {
            let addr = self.addr[i];
            self.ranges[i] = match (self.cfg[i] & PMP_A) >> PMP_A_SHIFT {
                A_TOR => {
                    let start = if i == 0 { 0 } else { self.addr[i - 1] } << PMPADDR_UNIT_SHIFT;
                    let end = addr << PMPADDR_UNIT_SHIFT;
                    // An upper bound not above the lower one matches nothing.
                    (start < end).then_some((start, end))
                }
                A_NA4 => {
                    let start = addr << PMPADDR_UNIT_SHIFT;
                    Some((start, start + 4))
                }
                A_NAPOT => {
                    // k trailing ones select a region of 2^(k+3) bytes.
                    let ones = addr.trailing_ones();
                    let start = (addr & !((1u64 << ones) - 1)) << PMPADDR_UNIT_SHIFT;
                    Some((start, start + (1u64 << (ones + 3))))
                }
                _ => None, // A_OFF
            };
        }
        self.any_locked = self.cfg.iter().any(|&cfg| cfg & PMP_L != 0);
    }

    /// The permissions (`PMP_R | PMP_W | PMP_X` bits) that `privilege` has on every byte of
    /// `[start, start + len_bytes)`, or `None` when the range is not all decided alike: the
    /// deciding entry matches only part of it, or two entries decide different parts
    /// (privileged spec 3.7.1.2: the lowest-numbered entry matching any byte decides, and it
    /// must match every byte).
    fn permissions(&self, start: u64, len_bytes: u64, privilege: Privilege) -> Option<u8> {
        if privilege == Privilege::Machine && !self.any_locked {
            return Some(PMP_R | PMP_W | PMP_X);
        }
        let end = start.saturating_add(len_bytes);
        for (i, range) in self.ranges.iter().enumerate() {
            let Some((low, high)) = *range else {
                continue;
            };
            if end <= low || start >= high {
                continue;
            }
            if start < low || end > high {
                return None;
            }
            let cfg = self.cfg[i];
            return Some(if privilege == Privilege::Machine && cfg & PMP_L == 0 {
                PMP_R | PMP_W | PMP_X
            } else {
                cfg & (PMP_R | PMP_W | PMP_X)
            });
        }
        // No entry matches: M-mode accesses succeed, S and U accesses fail (3.7.1).
        Some(if privilege == Privilege::Machine {
            PMP_R | PMP_W | PMP_X
        } else {
            0
        })
    }

    /// Whether `privilege` may make `access` to every byte of `[addr, addr + len_bytes)`.
    pub fn allows(&self, addr: u64, len_bytes: u64, access: Access, privilege: Privilege) -> bool {
        self.permissions(addr, len_bytes, privilege)
            .is_some_and(|permissions| permissions & needed(access) != 0)
    }

    /// Whether `access` is allowed to the whole 4 KiB page at `page_addr` under one entry,
    /// so a soft TLB entry may stand for it.
    pub fn allows_page(&self, page_addr: u64, access: Access, privilege: Privilege) -> bool {
        self.allows(page_addr, crate::PAGE_SIZE_BYTES, access, privilege)
    }

    /// Appends `pmpcfg0`, `pmpcfg2` and `pmpaddr0`-`pmpaddr15`.
    pub fn write_state(&self, put: &mut impl FnMut(u64)) {
        put(self.read(PMPCFG0).unwrap_or(0));
        put(self.read(PMPCFG0 + 2).unwrap_or(0));
        for addr in self.addr {
            put(addr);
        }
    }

    /// Reads what `write_state` wrote, with no lock checks (a restore, not a guest write);
    /// values are masked to what the registers can hold.
    pub fn read_state(&mut self, take: &mut impl FnMut() -> u64) {
        for half in 0..2 {
            let value = take();
            for i in 0..ENTRIES_PER_CFG_CSR {
                let mut cfg = (value >> (8 * i)) as u8 & PMP_CFG_WRITABLE;
                if cfg & PMP_R == 0 {
                    cfg &= !PMP_W;
                }
                self.cfg[half * ENTRIES_PER_CFG_CSR + i] = cfg;
            }
        }
        for addr in self.addr.iter_mut() {
            *addr = take() & PMPADDR_MASK;
        }
        self.update_ranges();
    }
}
