//! Control and status registers (privileged spec chapters 2-4, unprivileged chapter 9).

use crate::pmp::{Pmp, PMPADDR63, PMPCFG0, PMP_STATE_WORDS};
use crate::trigger::{Triggers, TCONTROL, TRIGGER_STATE_WORDS, TSELECT};
use crate::{Hart, Platform, Privilege};

/// CSR numbers (privileged spec table 2.2-2.5).
#[allow(missing_docs)]
pub mod numbers {
    pub const FFLAGS: u16 = 0x001;
    pub const FRM: u16 = 0x002;
    pub const FCSR: u16 = 0x003;
    pub const CYCLE: u16 = 0xc00;
    pub const TIME: u16 = 0xc01;
    pub const INSTRET: u16 = 0xc02;
    pub const SSTATUS: u16 = 0x100;
    pub const SIE: u16 = 0x104;
    pub const STVEC: u16 = 0x105;
    pub const SCOUNTEREN: u16 = 0x106;
    pub const SENVCFG: u16 = 0x10a;
    pub const SSCRATCH: u16 = 0x140;
    pub const SEPC: u16 = 0x141;
    pub const SCAUSE: u16 = 0x142;
    pub const STVAL: u16 = 0x143;
    pub const SIP: u16 = 0x144;
    pub const SATP: u16 = 0x180;
    pub const MVENDORID: u16 = 0xf11;
    pub const MARCHID: u16 = 0xf12;
    pub const MIMPID: u16 = 0xf13;
    pub const MHARTID: u16 = 0xf14;
    pub const MCONFIGPTR: u16 = 0xf15;
    pub const MSTATUS: u16 = 0x300;
    pub const MISA: u16 = 0x301;
    pub const MEDELEG: u16 = 0x302;
    pub const MIDELEG: u16 = 0x303;
    pub const MIE: u16 = 0x304;
    pub const MTVEC: u16 = 0x305;
    pub const MCOUNTEREN: u16 = 0x306;
    pub const MENVCFG: u16 = 0x30a;
    pub const MCOUNTINHIBIT: u16 = 0x320;
    pub const MSCRATCH: u16 = 0x340;
    pub const MEPC: u16 = 0x341;
    pub const MCAUSE: u16 = 0x342;
    pub const MTVAL: u16 = 0x343;
    pub const MIP: u16 = 0x344;
    pub const MCYCLE: u16 = 0xb00;
    pub const MINSTRET: u16 = 0xb02;
}
use numbers::*;

pub const MSTATUS_SIE: u64 = 1 << 1;
pub const MSTATUS_MIE: u64 = 1 << 3;
pub const MSTATUS_SPIE: u64 = 1 << 5;
pub const MSTATUS_MPIE: u64 = 1 << 7;
pub const MSTATUS_SPP: u64 = 1 << 8;
pub const MSTATUS_MPP: u64 = 3 << 11;
pub const MSTATUS_FS: u64 = 3 << 13;
pub const MSTATUS_MPRV: u64 = 1 << 17;
pub const MSTATUS_SUM: u64 = 1 << 18;
pub const MSTATUS_MXR: u64 = 1 << 19;
pub const MSTATUS_TVM: u64 = 1 << 20;
pub const MSTATUS_TW: u64 = 1 << 21;
pub const MSTATUS_TSR: u64 = 1 << 22;
/// UXL = SXL = 2 (64-bit), read-only (privileged spec 3.1.6.2).
const MSTATUS_XLEN: u64 = 2 << 32 | 2 << 34;
pub const MSTATUS_SD: u64 = 1 << 63;
pub(crate) const MSTATUS_WRITABLE: u64 = MSTATUS_SIE
    | MSTATUS_MIE
    | MSTATUS_SPIE
    | MSTATUS_MPIE
    | MSTATUS_SPP
    | MSTATUS_MPP
    | MSTATUS_FS
    | MSTATUS_MPRV
    | MSTATUS_SUM
    | MSTATUS_MXR
    | MSTATUS_TVM
    | MSTATUS_TW
    | MSTATUS_TSR;
/// The sstatus view (privileged spec 4.1.1): SIE, SPIE, SPP, FS, SUM, MXR, UXL, SD.
pub(crate) const SSTATUS_MASK: u64 = MSTATUS_SIE
    | MSTATUS_SPIE
    | MSTATUS_SPP
    | MSTATUS_FS
    | MSTATUS_SUM
    | MSTATUS_MXR
    | 3 << 32
    | MSTATUS_SD;

/// Interrupt bits (privileged spec 3.1.9).
pub const SSIP: u64 = 1 << 1;
pub const MSIP: u64 = 1 << 3;
pub const STIP: u64 = 1 << 5;
pub const MTIP: u64 = 1 << 7;
pub const SEIP: u64 = 1 << 9;
pub const MEIP: u64 = 1 << 11;
pub const LINE_BITS: u64 = MSIP | MTIP | MEIP | SEIP | STIP;
const MIP_WRITABLE: u64 = SSIP | STIP | SEIP;
const MIE_WRITABLE: u64 = SSIP | MSIP | STIP | MTIP | SEIP | MEIP;
const MIDELEG_WRITABLE: u64 = SSIP | STIP | SEIP;
/// Exceptions that may be delegated: all but ecall from M and the reserved codes.
const MEDELEG_WRITABLE: u64 = 0xb3ff;

/// misa: MXL=2 (RV64) and extensions A, C, D, F, I, M, S, U.
pub const MISA_VALUE: u64 =
    2 << 62 | 1 << 0 | 1 << 2 | 1 << 3 | 1 << 5 | 1 << 8 | 1 << 12 | 1 << 18 | 1 << 20;

const SATP_MODE_BARE: u64 = 0;
const SATP_MODE_SV39: u64 = 8;
/// satp.MODE (4 bits), ASID (16 bits, like QEMU), PPN (44 bits).
const SATP_WRITABLE: u64 = 0xf << 60 | 0xffff << 44 | ((1 << 44) - 1);

/// Words `CsrFile::write_state` emits: 22 registers, the PMP and the triggers.
pub(crate) const CSR_STATE_WORDS: usize = 22 + PMP_STATE_WORDS + TRIGGER_STATE_WORDS;

/// The CSR state that is not a counter view.
#[derive(Clone, Debug)]
pub(crate) struct CsrFile {
    pub mstatus: u64,
    pub medeleg: u64,
    pub mideleg: u64,
    pub mie: u64,
    /// The software-writable bits of mip (SSIP, STIP, SEIP).
    pub mip: u64,
    pub mtvec: u64,
    pub mcounteren: u64,
    pub mscratch: u64,
    pub mepc: u64,
    pub mcause: u64,
    pub mtval: u64,
    pub stvec: u64,
    pub scounteren: u64,
    pub sscratch: u64,
    pub sepc: u64,
    pub scause: u64,
    pub stval: u64,
    pub satp: u64,
    pub fflags: u64,
    pub frm: u64,
    /// minstret = instret + this (wrapping), so writes do not disturb the replay clock.
    pub minstret_offset: u64,
    pub mcycle_offset: u64,
    /// Physical memory protection (privileged spec 3.7).
    pub pmp: Pmp,
    /// Debug triggers (debug spec 1.0 chapter 5).
    pub triggers: Triggers,
}

impl Default for CsrFile {
    fn default() -> Self {
        CsrFile {
            mstatus: MSTATUS_XLEN,
            medeleg: 0,
            mideleg: 0,
            mie: 0,
            mip: 0,
            mtvec: 0,
            mcounteren: 0,
            mscratch: 0,
            mepc: 0,
            mcause: 0,
            mtval: 0,
            stvec: 0,
            scounteren: 0,
            sscratch: 0,
            sepc: 0,
            scause: 0,
            stval: 0,
            satp: 0,
            fflags: 0,
            frm: 0,
            minstret_offset: 0,
            mcycle_offset: 0,
            pmp: Pmp::default(),
            triggers: Triggers::default(),
        }
    }
}

impl CsrFile {
    pub fn write_state(&self, put: &mut impl FnMut(u64)) {
        for v in [
            self.mstatus,
            self.medeleg,
            self.mideleg,
            self.mie,
            self.mip,
            self.mtvec,
            self.mcounteren,
            self.mscratch,
            self.mepc,
            self.mcause,
            self.mtval,
            self.stvec,
            self.scounteren,
            self.sscratch,
            self.sepc,
            self.scause,
            self.stval,
            self.satp,
            self.fflags,
            self.frm,
            self.minstret_offset,
            self.mcycle_offset,
        ] {
            put(v);
        }
        self.pmp.write_state(put);
        self.triggers.write_state(put);
    }

    /// Reads the values `write_state` wrote, in the same order.
    pub fn read_state(&mut self, take: &mut impl FnMut() -> u64) {
        for field in [
            &mut self.mstatus,
            &mut self.medeleg,
            &mut self.mideleg,
            &mut self.mie,
            &mut self.mip,
            &mut self.mtvec,
            &mut self.mcounteren,
            &mut self.mscratch,
            &mut self.mepc,
            &mut self.mcause,
            &mut self.mtval,
            &mut self.stvec,
            &mut self.scounteren,
            &mut self.sscratch,
            &mut self.sepc,
            &mut self.scause,
            &mut self.stval,
            &mut self.satp,
            &mut self.fflags,
            &mut self.frm,
            &mut self.minstret_offset,
            &mut self.mcycle_offset,
        ] {
            *field = take();
        }
        self.pmp.read_state(take);
        self.triggers.read_state(take);
    }

    pub fn fs_off(&self) -> bool {
        self.mstatus & MSTATUS_FS == 0
    }

    /// Marks the FP state dirty (FS = 3, SD = 1) after an FP register or fflags write.
    #[inline]
    pub fn set_fs_dirty(&mut self) {
        self.mstatus |= MSTATUS_FS | MSTATUS_SD;
    }

    pub fn satp_sv39(&self) -> bool {
        self.satp >> 60 == SATP_MODE_SV39
    }
}

/// Why a CSR access failed: always an illegal-instruction exception for the guest.
pub(crate) struct CsrIllegal;

impl Hart {
    /// mip as the guest reads it: software bits OR the machine's lines.
    pub(crate) fn mip(&self) -> u64 {
        self.csr.mip | self.lines
    }

    fn mstatus_read(&self) -> u64 {
        let m = self.csr.mstatus;
        if m & MSTATUS_FS == MSTATUS_FS {
            m | MSTATUS_SD
        } else {
            m & !MSTATUS_SD
        }
    }

    fn mstatus_write(&mut self, v: u64) {
        let mut new = (self.csr.mstatus & !MSTATUS_WRITABLE) | (v & MSTATUS_WRITABLE);
        // MPP is WARL: the reserved value 2 keeps the old mode.
        if (new & MSTATUS_MPP) >> 11 == 2 {
            new = (new & !MSTATUS_MPP) | (self.csr.mstatus & MSTATUS_MPP);
        }
        new = (new & !MSTATUS_SD)
            | if new & MSTATUS_FS == MSTATUS_FS {
                MSTATUS_SD
            } else {
                0
            };
        self.csr.mstatus = new | MSTATUS_XLEN;
        self.update_tlb_keys();
    }

    /// Whether the counter `csr` (0xc00-0xc1f) may be read at the current privilege
    /// (privileged spec 3.1.11, 4.1.5).
    pub(crate) fn counter_enabled(&self, csr: u16) -> bool {
        let bit = 1u64 << (csr & 0x1f);
        match self.privilege {
            Privilege::Machine => true,
            Privilege::Supervisor => self.csr.mcounteren & bit != 0,
            Privilege::User => self.csr.mcounteren & bit != 0 && self.csr.scounteren & bit != 0,
        }
    }

    /// A CSR instruction's read with privilege checks (privileged spec 2.1).
    pub(crate) fn csr_read(
        &mut self,
        platform: &mut impl Platform,
        csr: u16,
        will_write: bool,
    ) -> Result<u64, CsrIllegal> {
        let min_privilege = (csr >> 8) & 3;
        if (self.privilege as u16) < min_privilege {
            return Err(CsrIllegal);
        }
        if will_write && csr >> 10 == 3 {
            return Err(CsrIllegal);
        }
        match csr {
            FFLAGS | FRM | FCSR if self.csr.fs_off() => Err(CsrIllegal),
            SATP if self.privilege == Privilege::Supervisor
                && self.csr.mstatus & MSTATUS_TVM != 0 =>
            {
                Err(CsrIllegal)
            }
            0xc00..=0xc1f if !self.counter_enabled(csr) => Err(CsrIllegal),
            TIME => Ok(platform.time(crate::InstructionCount(self.instret))),
            _ => self.csr_read_raw(csr).ok_or(CsrIllegal),
        }
    }

    /// Reads a CSR without privilege checks. `time` is `None` (only the platform knows it).
    pub(crate) fn csr_read_raw(&self, csr: u16) -> Option<u64> {
        let c = &self.csr;
        Some(match csr {
            FFLAGS => c.fflags,
            FRM => c.frm,
            FCSR => c.frm << 5 | c.fflags,
            CYCLE | MCYCLE => self.instret.wrapping_add(c.mcycle_offset),
            INSTRET | MINSTRET => self.instret.wrapping_add(c.minstret_offset),
            // hpmcounter3..31 and mhpmcounter3..31, mhpmevent3..31: present, always zero.
            0xc03..=0xc1f | 0xb03..=0xb1f | 0x323..=0x33f => 0,
            SSTATUS => self.mstatus_read() & SSTATUS_MASK,
            SIE => c.mie & c.mideleg,
            STVEC => c.stvec,
            SCOUNTEREN => c.scounteren,
            SENVCFG | MENVCFG | MCOUNTINHIBIT => 0,
            SSCRATCH => c.sscratch,
            SEPC => c.sepc,
            SCAUSE => c.scause,
            STVAL => c.stval,
            SIP => self.mip() & c.mideleg,
            SATP => c.satp,
            MVENDORID | MARCHID | MIMPID | MHARTID | MCONFIGPTR => 0,
            MSTATUS => self.mstatus_read(),
            MISA => MISA_VALUE,
            MEDELEG => c.medeleg,
            MIDELEG => c.mideleg,
            MIE => c.mie,
            MTVEC => c.mtvec,
            MCOUNTEREN => c.mcounteren,
            MSCRATCH => c.mscratch,
            MEPC => c.mepc,
            MCAUSE => c.mcause,
            MTVAL => c.mtval,
            MIP => self.mip(),
            PMPCFG0..=PMPADDR63 => return c.pmp.read(csr),
            TSELECT..=TCONTROL => return c.triggers.read(csr),
            _ => return None,
        })
    }

    /// Writes a CSR without privilege checks; `false` if it does not exist or is read-only.
    pub(crate) fn csr_write_raw(&mut self, csr: u16, v: u64) -> bool {
        if csr >> 10 == 3 {
            return false;
        }
        let c = &mut self.csr;
        match csr {
            FFLAGS => {
                c.fflags = v & 0x1f;
                c.set_fs_dirty();
            }
            FRM => {
                c.frm = v & 7;
                c.set_fs_dirty();
            }
            FCSR => {
                c.fflags = v & 0x1f;
                c.frm = (v >> 5) & 7;
                c.set_fs_dirty();
            }
            // The write takes effect after this instruction retires (privileged spec
            // 3.1.11), so the next instruction reads exactly `v`.
            MCYCLE => c.mcycle_offset = v.wrapping_sub(self.instret.wrapping_add(1)),
            MINSTRET => c.minstret_offset = v.wrapping_sub(self.instret.wrapping_add(1)),
            0xb03..=0xb1f | 0x323..=0x33f => {}
            SSTATUS => {
                let m = (self.csr.mstatus & !SSTATUS_MASK) | (v & SSTATUS_MASK);
                self.mstatus_write(m);
            }
            SIE => c.mie = (c.mie & !c.mideleg) | (v & c.mideleg & MIE_WRITABLE),
            STVEC => {
                if v & 3 < 2 {
                    c.stvec = v;
                }
            }
            SCOUNTEREN => c.scounteren = v & 0xffff_ffff,
            SENVCFG | MENVCFG | MCOUNTINHIBIT => {}
            SSCRATCH => c.sscratch = v,
            SEPC => c.sepc = v & !1,
            SCAUSE => c.scause = v,
            STVAL => c.stval = v,
            // Only SSIP is writable through sip (privileged spec 4.1.3).
            SIP => {
                let mask = SSIP & c.mideleg;
                c.mip = (c.mip & !mask) | (v & mask);
            }
            SATP => {
                // Unsupported modes leave satp unchanged (privileged spec 4.1.11), which is
                // how Linux probes Sv57 and Sv48 before settling on Sv39.
                let mode = v >> 60;
                if mode == SATP_MODE_BARE || mode == SATP_MODE_SV39 {
                    c.satp = v & SATP_WRITABLE;
                    self.mmu.flush_all();
                }
            }
            MSTATUS => self.mstatus_write(v),
            MISA => {}
            MEDELEG => c.medeleg = v & MEDELEG_WRITABLE,
            MIDELEG => c.mideleg = v & MIDELEG_WRITABLE,
            MIE => c.mie = v & MIE_WRITABLE,
            MTVEC => {
                if v & 3 < 2 {
                    c.mtvec = v;
                }
            }
            MCOUNTEREN => c.mcounteren = v & 0xffff_ffff,
            MSCRATCH => c.mscratch = v,
            MEPC => c.mepc = v & !1,
            MCAUSE => c.mcause = v,
            MTVAL => c.mtval = v,
            MIP => c.mip = (c.mip & !MIP_WRITABLE) | (v & MIP_WRITABLE),
            PMPCFG0..=PMPADDR63 => {
                if !c.pmp.write(csr, v) {
                    return false;
                }
                // Cached translations hold PMP decisions. The spec (3.7.2) has software
                // follow a PMP change with sfence.vma; flushing here as well, as QEMU
                // does, makes the change take effect at the next access.
                self.mmu.flush_all();
            }
            TSELECT..=TCONTROL => return c.triggers.write(csr, v),
            _ => return false,
        }
        true
    }
}

/// The CSRs that only hold data for software (scratch, trap cause, value and pc): reading
/// or writing one changes nothing else, so its accesses need none of the checks `Hart::run`
/// makes between blocks. Each is a plain field of `Csr`.
pub(crate) const DATA_ONLY_CSRS: [u16; 8] =
    [SSCRATCH, SEPC, SCAUSE, STVAL, MSCRATCH, MEPC, MCAUSE, MTVAL];

/// Whether `csr` is one of `DATA_ONLY_CSRS`.
pub(crate) fn holds_data_only(csr: u16) -> bool {
    DATA_ONLY_CSRS.contains(&csr)
}
