//! Instruction semantics for RV64I, M, A, Zicsr, Zifencei and the privileged instructions.

use crate::csr::numbers::{FCSR, FFLAGS, FRM, MIE, MSTATUS, SIE, SSTATUS};
use crate::csr::{
    holds_data_only, MSTATUS_FS, MSTATUS_MIE, MSTATUS_MPIE, MSTATUS_MPP, MSTATUS_MPRV, MSTATUS_MXR,
    MSTATUS_SD, MSTATUS_SIE, MSTATUS_SPIE, MSTATUS_SPP, MSTATUS_SUM, MSTATUS_TSR, MSTATUS_TVM,
    MSTATUS_TW,
};
use crate::inst::{Instruction, Op};
use crate::{cause, Exception, Flow, Hart, Platform, Privilege, Reservation, StopReason};

impl Hart {
    #[inline(always)]
    pub(crate) fn reg(&self, r: u8) -> u64 {
        self.x[r as usize & 31]
    }

    #[inline(always)]
    pub(crate) fn set_reg(&mut self, r: u8, v: u64) {
        self.x[r as usize & 31] = v;
        self.x[0] = 0;
    }

    /// The illegal-instruction exception for the instruction at pc; `mtval` holds its bits,
    /// as QEMU does.
    #[cold]
    pub(crate) fn illegal(&mut self) -> Exception {
        let bits = self.fetch_raw(self.pc).unwrap_or(0);
        Exception {
            cause: cause::ILLEGAL_INSTRUCTION,
            tval: bits as u64,
        }
    }

    /// Executes one instruction. On `Flow::Next`/`EndBlock`/`Stop` the caller advances pc.
    #[inline(always)]
    pub(crate) fn execute(
        &mut self,
        p: &mut impl Platform,
        inst: &Instruction,
    ) -> Result<Flow, Exception> {
        use Op::*;
        let rd = inst.rd;
        let a = self.reg(inst.rs1);
        let b = self.reg(inst.rs2);
        let imm = inst.imm as i64 as u64;
        let v = match inst.op {
            Lui => imm,
            Auipc => self.pc.wrapping_add(imm),
            Addi => a.wrapping_add(imm),
            Slti => ((a as i64) < (imm as i64)) as u64,
            Sltiu => (a < imm) as u64,
            Xori => a ^ imm,
            Ori => a | imm,
            Andi => a & imm,
            Slli => a << (imm & 63),
            Srli => a >> (imm & 63),
            Srai => ((a as i64) >> (imm & 63)) as u64,
            Add => a.wrapping_add(b),
            Sub => a.wrapping_sub(b),
            Sll => a << (b & 63),
            Slt => ((a as i64) < (b as i64)) as u64,
            Sltu => (a < b) as u64,
            Xor => a ^ b,
            Srl => a >> (b & 63),
            Sra => ((a as i64) >> (b & 63)) as u64,
            Or => a | b,
            And => a & b,
            Addiw => sext32(a.wrapping_add(imm)),
            Slliw => sext32(a << (imm & 31)),
            Srliw => sext32((a as u32 >> (imm & 31)) as u64),
            Sraiw => ((a as i32) >> (imm & 31)) as i64 as u64,
            Addw => sext32(a.wrapping_add(b)),
            Subw => sext32(a.wrapping_sub(b)),
            Sllw => sext32(a << (b & 31)),
            Srlw => sext32((a as u32 >> (b & 31)) as u64),
            Sraw => ((a as i32) >> (b & 31)) as i64 as u64,
            Mul => a.wrapping_mul(b),
            Mulh => ((a as i64 as i128 * b as i64 as i128) >> 64) as u64,
            Mulhsu => ((a as i64 as i128).wrapping_mul(b as i128) >> 64) as u64,
            Mulhu => ((a as u128 * b as u128) >> 64) as u64,
            Div => div_signed(a as i64, b as i64) as u64,
            Divu => a.checked_div(b).unwrap_or(u64::MAX),
            Rem => rem_signed(a as i64, b as i64) as u64,
            Remu => {
                if b == 0 {
                    a
                } else {
                    a % b
                }
            }
            Mulw => sext32(a.wrapping_mul(b)),
            Divw => div_signed(a as i32 as i64, b as i32 as i64) as i32 as i64 as u64,
            Divuw => sext32((a as u32).checked_div(b as u32).unwrap_or(u32::MAX) as u64),
            Remw => rem_signed(a as i32 as i64, b as i32 as i64) as i32 as i64 as u64,
            Remuw => {
                let (a, b) = (a as u32, b as u32);
                sext32(if b == 0 { a } else { a % b } as u64)
            }
            Lb => {
                let v = self.load(p, a.wrapping_add(imm), 1)? as i8 as i64 as u64;
                return Ok(self.finish_load(rd, v));
            }
            Lh => {
                let v = self.load(p, a.wrapping_add(imm), 2)? as i16 as i64 as u64;
                return Ok(self.finish_load(rd, v));
            }
            Lw => {
                let v = self.load(p, a.wrapping_add(imm), 4)? as i32 as i64 as u64;
                return Ok(self.finish_load(rd, v));
            }
            Ld => {
                let v = self.load(p, a.wrapping_add(imm), 8)?;
                return Ok(self.finish_load(rd, v));
            }
            Lbu => {
                let v = self.load(p, a.wrapping_add(imm), 1)?;
                return Ok(self.finish_load(rd, v));
            }
            Lhu => {
                let v = self.load(p, a.wrapping_add(imm), 2)?;
                return Ok(self.finish_load(rd, v));
            }
            Lwu => {
                let v = self.load(p, a.wrapping_add(imm), 4)?;
                return Ok(self.finish_load(rd, v));
            }
            Sb => return self.store(p, a.wrapping_add(imm), 1, b),
            Sh => return self.store(p, a.wrapping_add(imm), 2, b),
            Sw => return self.store(p, a.wrapping_add(imm), 4, b),
            Sd => return self.store(p, a.wrapping_add(imm), 8, b),
            Jal => {
                let link = self.pc.wrapping_add(inst.length_bytes as u64);
                self.pc = self.pc.wrapping_add(imm);
                self.set_reg(rd, link);
                return Ok(Flow::Jumped);
            }
            Jalr => {
                let link = self.pc.wrapping_add(inst.length_bytes as u64);
                self.pc = a.wrapping_add(imm) & !1;
                self.set_reg(rd, link);
                return Ok(Flow::Jumped);
            }
            Beq => return Ok(self.branch(inst, a == b)),
            Bne => return Ok(self.branch(inst, a != b)),
            Blt => return Ok(self.branch(inst, (a as i64) < (b as i64))),
            Bge => return Ok(self.branch(inst, (a as i64) >= (b as i64))),
            Bltu => return Ok(self.branch(inst, a < b)),
            Bgeu => return Ok(self.branch(inst, a >= b)),
            Fence => return Ok(Flow::Next),
            // Stores keep the decode cache coherent, so fence.i only ends the block.
            FenceI => return Ok(Flow::Refetch),
            _ => return self.execute_rare(p, inst),
        };
        self.set_reg(rd, v);
        Ok(Flow::Next)
    }

    /// Writes a loaded value; a load from MMIO ends the run so the machine can update the
    /// interrupt lines before the next instruction (reads can change device state).
    #[inline(always)]
    pub(crate) fn finish_load(&mut self, rd: u8, value: u64) -> Flow {
        self.set_reg(rd, value);
        if self.mmio_loaded {
            self.mmio_loaded = false;
            return Flow::Stop(StopReason::MmioAccess);
        }
        Flow::Next
    }

    #[inline(always)]
    fn branch(&mut self, inst: &Instruction, taken: bool) -> Flow {
        // A branch not taken falls through inside its block (blocks continue past
        // conditional branches); a taken one leaves the block.
        if taken {
            self.pc = self.pc.wrapping_add(inst.imm as i64 as u64);
            Flow::Jumped
        } else {
            Flow::Next
        }
    }

    /// System, atomic and floating-point instructions.
    #[inline(never)]
    fn execute_rare(
        &mut self,
        p: &mut impl Platform,
        inst: &Instruction,
    ) -> Result<Flow, Exception> {
        use Op::*;
        match inst.op {
            Ecall => {
                if self.privilege == Privilege::Supervisor && self.host_monitor {
                    return Ok(Flow::Stop(StopReason::SupervisorEcall));
                }
                Err(Exception {
                    cause: cause::ECALL_FROM_U + self.privilege as u64,
                    tval: 0,
                })
            }
            // mtval = 0 for breakpoints, as QEMU 7.2 does (privileged spec 3.1.16 allows 0).
            Ebreak => Err(Exception {
                cause: cause::BREAKPOINT,
                tval: 0,
            }),
            Csrrw | Csrrs | Csrrc | Csrrwi | Csrrsi | Csrrci => self.execute_csr(p, inst),
            Mret => {
                if self.privilege != Privilege::Machine {
                    return Err(self.illegal());
                }
                let m = self.csr.mstatus;
                let previous = Privilege::from_bits(m >> 11);
                let mut new = m & !(MSTATUS_MIE | MSTATUS_MPP);
                new |= ((m & MSTATUS_MPIE) >> 7) << 3 | MSTATUS_MPIE;
                if previous != Privilege::Machine {
                    new &= !MSTATUS_MPRV;
                }
                self.csr.mstatus = new;
                self.csr.triggers.machine_return();
                self.privilege = previous;
                self.pc = self.csr.mepc;
                self.update_tlb_keys();
                Ok(Flow::Jumped)
            }
            Sret => {
                let trapped = match self.privilege {
                    Privilege::User => true,
                    Privilege::Supervisor => self.csr.mstatus & MSTATUS_TSR != 0,
                    Privilege::Machine => false,
                };
                if trapped {
                    return Err(self.illegal());
                }
                let m = self.csr.mstatus;
                let previous = if m & MSTATUS_SPP != 0 {
                    Privilege::Supervisor
                } else {
                    Privilege::User
                };
                let mut new = m & !(MSTATUS_SIE | MSTATUS_SPP | MSTATUS_MPRV);
                new |= ((m & MSTATUS_SPIE) >> 5) << 1 | MSTATUS_SPIE;
                self.csr.mstatus = new;
                self.privilege = previous;
                self.pc = self.csr.sepc;
                self.update_tlb_keys();
                Ok(Flow::Jumped)
            }
            Wfi => {
                let trapped = match self.privilege {
                    Privilege::User => true,
                    Privilege::Supervisor => self.csr.mstatus & MSTATUS_TW != 0,
                    Privilege::Machine => false,
                };
                if trapped {
                    return Err(self.illegal());
                }
                // wfi resumes when any locally enabled interrupt is pending, even if it is
                // globally disabled (privileged spec 3.3.3).
                if self.mip() & self.csr.mie == 0 {
                    Ok(Flow::Stop(StopReason::WaitForInterrupt))
                } else {
                    Ok(Flow::EndBlock)
                }
            }
            SfenceVma => {
                let trapped = match self.privilege {
                    Privilege::User => true,
                    Privilege::Supervisor => self.csr.mstatus & MSTATUS_TVM != 0,
                    Privilege::Machine => false,
                };
                if trapped {
                    return Err(self.illegal());
                }
                match inst.rs1 {
                    0 => self.mmu.flush_all(),
                    rs1 => self.mmu.flush_page(self.reg(rs1)),
                }
                Ok(Flow::Refetch)
            }
            LrW | LrD => {
                let size = if inst.op == LrW { 4 } else { 8 };
                let vaddr = self.reg(inst.rs1);
                if vaddr & (size - 1) != 0 {
                    return Err(Exception {
                        cause: cause::LOAD_ADDRESS_MISALIGNED,
                        tval: vaddr,
                    });
                }
                let raw = self.load(p, vaddr, size)?;
                self.reservation = Reservation { vaddr, value: raw };
                let v = if size == 4 { sext32(raw) } else { raw };
                Ok(self.finish_load(inst.rd, v))
            }
            ScW | ScD => {
                let size = if inst.op == ScW { 4 } else { 8 };
                let vaddr = self.reg(inst.rs1);
                let src = self.reg(inst.rs2);
                if vaddr & (size - 1) != 0 {
                    return Err(Exception {
                        cause: cause::STORE_ADDRESS_MISALIGNED,
                        tval: vaddr,
                    });
                }
                let reservation =
                    core::mem::replace(&mut self.reservation, Reservation::NONE).get();
                let mut flow = Flow::Next;
                let mut failed = 1;
                if let Some(r) = reservation.filter(|r| r.vaddr == vaddr) {
                    let mask = if size == 4 { 0xffff_ffff } else { u64::MAX };
                    let (old, f) = self.atomic_rmw(vaddr, size, |old| {
                        if old == r.value & mask {
                            Some(src)
                        } else {
                            None
                        }
                    })?;
                    flow = f;
                    failed = (old != r.value & mask) as u64;
                }
                self.set_reg(inst.rd, failed);
                Ok(flow)
            }
            AmoswapW | AmoaddW | AmoxorW | AmoandW | AmoorW | AmominW | AmomaxW | AmominuW
            | AmomaxuW => {
                let src = self.reg(inst.rs2);
                let op = inst.op;
                let (old, flow) = self.atomic_rmw(self.reg(inst.rs1), 4, |old| {
                    let (x, y) = (old as u32, src as u32);
                    Some(match op {
                        AmoswapW => y,
                        AmoaddW => x.wrapping_add(y),
                        AmoxorW => x ^ y,
                        AmoandW => x & y,
                        AmoorW => x | y,
                        AmominW => (x as i32).min(y as i32) as u32,
                        AmomaxW => (x as i32).max(y as i32) as u32,
                        AmominuW => x.min(y),
                        _ => x.max(y),
                    } as u64)
                })?;
                self.set_reg(inst.rd, sext32(old));
                Ok(flow)
            }
            AmoswapD | AmoaddD | AmoxorD | AmoandD | AmoorD | AmominD | AmomaxD | AmominuD
            | AmomaxuD => {
                let y = self.reg(inst.rs2);
                let op = inst.op;
                let (old, flow) = self.atomic_rmw(self.reg(inst.rs1), 8, |x| {
                    Some(match op {
                        AmoswapD => y,
                        AmoaddD => x.wrapping_add(y),
                        AmoxorD => x ^ y,
                        AmoandD => x & y,
                        AmoorD => x | y,
                        AmominD => (x as i64).min(y as i64) as u64,
                        AmomaxD => (x as i64).max(y as i64) as u64,
                        AmominuD => x.min(y),
                        _ => x.max(y),
                    })
                })?;
                self.set_reg(inst.rd, old);
                Ok(flow)
            }
            Illegal => Err(Exception {
                cause: cause::ILLEGAL_INSTRUCTION,
                tval: inst.imm as u32 as u64,
            }),
            _ => self.execute_fp(p, inst),
        }
    }

    /// Zicsr (unprivileged spec 9.1): csrrw with rd=x0 does not read, csrrs/csrrc with
    /// rs1=x0 (or zimm=0) do not write; both still check access.
    fn execute_csr(
        &mut self,
        p: &mut impl Platform,
        inst: &Instruction,
    ) -> Result<Flow, Exception> {
        use Op::*;
        let csr = (inst.imm as u32 & 0xfff) as u16;
        let source = match inst.op {
            Csrrw | Csrrs | Csrrc => self.reg(inst.rs1),
            _ => inst.rs1 as u64,
        };
        let writes = matches!(inst.op, Csrrw | Csrrwi) || inst.rs1 != 0;
        let old = match self.csr_read(p, csr, writes) {
            Ok(v) => v,
            Err(_) => return Err(self.illegal()),
        };
        let status_before = self.csr.mstatus;
        if writes {
            let new = match inst.op {
                Csrrw | Csrrwi => source,
                Csrrs | Csrrsi => old | source,
                _ => old & !source,
            };
            if !self.csr_write_raw(csr, new) {
                return Err(self.illegal());
            }
        }
        self.set_reg(inst.rd, old);
        // A CSR instruction ends its block (but reads of the FP CSRs, accesses of the
        // data-only ones and sets and clears of sstatus: `block::ends_block`), but only
        // those that may change whether an interrupt is pending and enabled, the
        // translation, the triggers or the FP state need the checks `Hart::run` makes
        // between blocks (EndBlock, which also ends a block the instruction does not end).
        // A read, or a write of a CSR that only holds data for software (scratch, trap
        // cause, value and pc), changes none of these, so translated code may go on past it
        // (Next).
        // Nor does a write that changes no more than interrupt enables (the global ones in
        // mstatus, the local ones in mie) when it leaves no interrupt takeable, the check
        // `run` would make: Linux's local_irq_save and local_irq_restore. Nor SUM and MXR
        // (Linux's user-access windows around every copy to or from user space): they
        // change only the load and store TLB keys, which the next access reads afresh
        // (translated code too: `translate::interpret` hands it the new keys, and inline
        // sets and clears of SUM and MXR write them).
        // Nor the FP CSRs (glibc saves and restores fflags around FP code): a write sets FS
        // to Dirty, never Off, and the next instruction starts a block whose entry checks
        // read FS and frm afresh (`float_entry_checks`).
        // A write of sstatus that also changes FS (Linux turns the FP unit off on every
        // trap entry and back on before the sret) or the fields only xRET reads (SPIE,
        // SPP, MPIE) changes nothing `run` checks either, but translated FP code checks FS
        // at its block's entry: the next instruction starts a block (Refetch).
        let data_only = holds_data_only(csr) || matches!(csr, FFLAGS | FRM | FCSR);
        let status_change = status_before ^ self.csr.mstatus;
        let enables = MSTATUS_SIE | MSTATUS_MIE | MSTATUS_SUM | MSTATUS_MXR;
        let enables_only =
            matches!(csr, MSTATUS | SSTATUS | MIE | SIE) && status_change & !enables == 0;
        let previous = MSTATUS_SPIE | MSTATUS_SPP | MSTATUS_MPIE;
        let status_only = matches!(csr, MSTATUS | SSTATUS)
            && status_change & !(enables | previous | MSTATUS_FS | MSTATUS_SD) == 0;
        let quiet = || self.pending_interrupt().is_none();
        Ok(if !writes || data_only || (enables_only && quiet()) {
            Flow::Next
        } else if status_only && quiet() {
            Flow::Refetch
        } else {
            Flow::EndBlock
        })
    }
}

#[inline(always)]
fn sext32(v: u64) -> u64 {
    v as i32 as i64 as u64
}

/// Signed division with the RISC-V results for division by zero and overflow (M 7.2).
#[inline(always)]
fn div_signed(a: i64, b: i64) -> i64 {
    if b == 0 {
        -1
    } else {
        a.wrapping_div(b)
    }
}

#[inline(always)]
fn rem_signed(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        a.wrapping_rem(b)
    }
}
