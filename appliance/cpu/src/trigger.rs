//! Debug triggers (Sdtrig, RISC-V debug specification 1.0 chapter 5): address matches.
//!
//! Two triggers, each of type 2 (`mcontrol`) or type 6 (`mcontrol6`) as the section "Trigger
//! Module Registers" describes them, match the address of an executed instruction, a load or
//! a store and raise a breakpoint exception (cause 3) with `xtval` = that address (action 0).
//! Implementation choices, matching QEMU 7.2 where the specification leaves room:
//! - Only `match` = 0 (the address equals `tdata2`), `action` = 0, `timing` = 0 (before the
//!   instruction), `select` = 0, `chain` = 0 and `size` = 0 (any size) are supported; those
//!   fields are WARL and read back as zero, as do `hit`, `dmode`, `maskmax` and the
//!   hypervisor bits `vs`/`vu` (no H extension). A load or store matches when `tdata2` is
//!   the address of any byte it accesses; an instruction when `tdata2` is its address.
//! - `tdata1` writes with a type other than 2, 6, 0 or 15 are ignored (QEMU 7.2 does the
//!   same); 0 and 15 disable the trigger, which then reads as type 15 (`tdata1`: "disabled").
//! - `tdata3` (`textra`) reads as zero and ignores writes; `tselect` ignores values past the
//!   last trigger; `tinfo` reports version 1 and types 2 and 6 (QEMU 7.2: version 0).
//! - `tcontrol` exists (QEMU 7.2 lacks it): triggers fire in M-mode only while `mte` is set;
//!   a trap into M-mode saves `mte` in `mpte` and clears it, `mret` restores it (section
//!   "Native M-Mode Triggers"), so a trigger cannot fire again inside the M-mode handler of
//!   its own breakpoint.
//!
//! QEMU 7.2 writes `xtval` = 0 for trigger breakpoints; the privileged spec (3.1.16) allows
//! either, and the address is what a debugger wants.
//!
//! When no trigger is armed the hart runs decoded blocks with no per-instruction check; an
//! armed trigger makes it step one instruction at a time through `Hart::step_with_triggers`.

use crate::inst::{Instruction, Op};
use crate::Privilege;

/// Triggers implemented (`tselect` values 0..TRIGGER_COUNT).
pub(crate) const TRIGGER_COUNT: usize = 2;

/// Trigger CSR numbers (debug spec 1.0, "Trigger Module Registers").
pub(crate) const TSELECT: u16 = 0x7a0;
pub(crate) const TDATA1: u16 = 0x7a1;
pub(crate) const TDATA2: u16 = 0x7a2;
pub(crate) const TDATA3: u16 = 0x7a3;
pub(crate) const TINFO: u16 = 0x7a4;
pub(crate) const TCONTROL: u16 = 0x7a5;

const TYPE_SHIFT: u32 = 60;
const TYPE_NONE: u64 = 0;
const TYPE_MCONTROL: u64 = 2;
const TYPE_MCONTROL6: u64 = 6;
const TYPE_DISABLED: u64 = 15;
/// `mcontrol`/`mcontrol6` fields that this implementation keeps.
const LOAD: u64 = 1 << 0;
const STORE: u64 = 1 << 1;
const EXECUTE: u64 = 1 << 2;
const MODE_U: u64 = 1 << 3;
const MODE_S: u64 = 1 << 4;
const MODE_M: u64 = 1 << 6;
const MCONTROL_WRITABLE: u64 = LOAD | STORE | EXECUTE | MODE_U | MODE_S | MODE_M;
/// `tinfo`: version 1 (debug spec 1.0) in bits 31:24, types 2 and 6 in the bit map.
const TINFO_VALUE: u64 = 1 << 24 | 1 << TYPE_MCONTROL | 1 << TYPE_MCONTROL6;
/// `tcontrol` fields: M-mode trigger enable and its previous value.
const TCONTROL_MTE: u64 = 1 << 3;
const TCONTROL_MPTE: u64 = 1 << 7;
/// A trigger's `tdata1` at reset: type 2 with no mode enabled, as QEMU 7.2 starts.
const TDATA1_RESET: u64 = TYPE_MCONTROL << TYPE_SHIFT;
/// Words `Triggers::write_state` emits.
pub(crate) const TRIGGER_STATE_WORDS: usize = 2 + 2 * TRIGGER_COUNT;

/// What an instruction does that a trigger can match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Execute,
    Load,
    Store,
}

/// The trigger module's state.
#[derive(Clone, Debug)]
pub(crate) struct Triggers {
    tselect: u64,
    tdata1: [u64; TRIGGER_COUNT],
    tdata2: [u64; TRIGGER_COUNT],
    tcontrol: u64,
    /// Some trigger is enabled for some mode and access kind (derived from `tdata1`).
    pub armed: bool,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            tselect: 0,
            tdata1: [TDATA1_RESET; TRIGGER_COUNT],
            tdata2: [0; TRIGGER_COUNT],
            tcontrol: 0,
            armed: false,
        }
    }
}

fn is_address_match(tdata1: u64) -> bool {
    matches!(tdata1 >> TYPE_SHIFT, TYPE_MCONTROL | TYPE_MCONTROL6)
}

impl Triggers {
    fn selected(&self) -> usize {
        self.tselect as usize
    }

    /// The value of trigger CSR `csr`, or `None` if it does not exist.
    pub fn read(&self, csr: u16) -> Option<u64> {
        Some(match csr {
            TSELECT => self.tselect,
            TDATA1 => self.tdata1[self.selected()],
            TDATA2 => self.tdata2[self.selected()],
            TDATA3 => 0,
            TINFO => TINFO_VALUE,
            TCONTROL => self.tcontrol,
            _ => return None,
        })
    }

    /// Writes trigger CSR `csr` with its WARL rules; `false` if it does not exist.
    pub fn write(&mut self, csr: u16, value: u64) -> bool {
        let selected = self.selected();
        match csr {
            TSELECT => {
                if value < TRIGGER_COUNT as u64 {
                    self.tselect = value;
                }
            }
            TDATA1 => match value >> TYPE_SHIFT {
                kind @ (TYPE_MCONTROL | TYPE_MCONTROL6) => {
                    self.tdata1[selected] = kind << TYPE_SHIFT | value & MCONTROL_WRITABLE;
                }
                TYPE_NONE | TYPE_DISABLED => {
                    self.tdata1[selected] = TYPE_DISABLED << TYPE_SHIFT;
                }
                _ => {}
            },
            TDATA2 => self.tdata2[selected] = value,
            TDATA3 | TINFO => {}
            TCONTROL => self.tcontrol = value & (TCONTROL_MTE | TCONTROL_MPTE),
            _ => return false,
        }
        self.update_armed();
        true
    }

    fn update_armed(&mut self) {
        self.armed = self.tdata1.iter().any(|&tdata1| {
            is_address_match(tdata1)
                && tdata1 & (MODE_U | MODE_S | MODE_M) != 0
                && tdata1 & (LOAD | STORE | EXECUTE) != 0
        });
    }

    /// Whether a trigger fires for `kind` at `[addr, addr + len_bytes)` in `privilege`
    /// (the `m`, `s`, `u` bits, and `tcontrol.mte` for M-mode).
    pub fn fires(&self, privilege: Privilege, kind: Kind, addr: u64, len_bytes: u64) -> bool {
        let mode = match privilege {
            Privilege::User => MODE_U,
            Privilege::Supervisor => MODE_S,
            Privilege::Machine if self.tcontrol & TCONTROL_MTE != 0 => MODE_M,
            Privilege::Machine => return false,
        };
        let kind_bit = match kind {
            Kind::Execute => EXECUTE,
            Kind::Load => LOAD,
            Kind::Store => STORE,
        };
        self.tdata1
            .iter()
            .zip(self.tdata2)
            .any(|(&tdata1, tdata2)| {
                is_address_match(tdata1)
                    && tdata1 & mode != 0
                    && tdata1 & kind_bit != 0
                    && tdata2.wrapping_sub(addr) < len_bytes
            })
    }

    /// A trap into M-mode: `mpte` = `mte`, `mte` = 0 (`tcontrol`).
    pub fn enter_machine_trap(&mut self) {
        let mte = self.tcontrol & TCONTROL_MTE;
        self.tcontrol = mte << 4;
    }

    /// `mret`: `mte` = `mpte` (`tcontrol`).
    pub fn machine_return(&mut self) {
        let mpte = self.tcontrol & TCONTROL_MPTE;
        self.tcontrol = mpte | mpte >> 4;
    }

    /// Appends `tselect`, `tcontrol`, then `tdata1` and `tdata2` of each trigger.
    pub fn write_state(&self, put: &mut impl FnMut(u64)) {
        put(self.tselect);
        put(self.tcontrol);
        for i in 0..TRIGGER_COUNT {
            put(self.tdata1[i]);
            put(self.tdata2[i]);
        }
    }

    /// Reads what `write_state` wrote; values are brought back into their legal ranges.
    pub fn read_state(&mut self, take: &mut impl FnMut() -> u64) {
        let tselect = take();
        self.tselect = if tselect < TRIGGER_COUNT as u64 {
            tselect
        } else {
            0
        };
        self.tcontrol = take() & (TCONTROL_MTE | TCONTROL_MPTE);
        for i in 0..TRIGGER_COUNT {
            let tdata1 = take();
            self.tdata1[i] = if is_address_match(tdata1) {
                tdata1 & (0xf << TYPE_SHIFT | MCONTROL_WRITABLE)
            } else {
                TYPE_DISABLED << TYPE_SHIFT
            };
            self.tdata2[i] = take();
        }
        self.update_armed();
    }
}

/// The data access an instruction makes, for matching against load and store triggers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DataAccess {
    pub addr: u64,
    pub len_bytes: u64,
    pub loads: bool,
    pub stores: bool,
}

/// The data access of `inst` when its base register holds `rs1_value`, if it makes one.
/// AMOs both load and store, so they match load and store triggers.
pub(crate) fn data_access(inst: &Instruction, rs1_value: u64) -> Option<DataAccess> {
    use Op::*;
    let (loads, stores, len_bytes, offset) = match inst.op {
        Lb | Lbu => (true, false, 1, true),
        Lh | Lhu => (true, false, 2, true),
        Lw | Lwu | Flw => (true, false, 4, true),
        Ld | Fld => (true, false, 8, true),
        Sb => (false, true, 1, true),
        Sh => (false, true, 2, true),
        Sw | Fsw => (false, true, 4, true),
        Sd | Fsd => (false, true, 8, true),
        LrW => (true, false, 4, false),
        LrD => (true, false, 8, false),
        ScW => (false, true, 4, false),
        ScD => (false, true, 8, false),
        AmoswapW | AmoaddW | AmoxorW | AmoandW | AmoorW | AmominW | AmomaxW | AmominuW
        | AmomaxuW => (true, true, 4, false),
        AmoswapD | AmoaddD | AmoxorD | AmoandD | AmoorD | AmominD | AmomaxD | AmominuD
        | AmomaxuD => (true, true, 8, false),
        _ => return None,
    };
    let addr = if offset {
        rs1_value.wrapping_add(inst.imm as i64 as u64)
    } else {
        rs1_value
    };
    Some(DataAccess {
        addr,
        len_bytes,
        loads,
        stores,
    })
}
