//! The F and D extensions (unprivileged spec chapters 11-12): NaN boxing, rounding-mode
//! selection, accrued flags and FS tracking; the arithmetic is `understudy-softfloat`.

use understudy_softfloat::{Flags, RoundingMode, F32, F64};

use crate::inst::{Instruction, Op};
use crate::{Exception, Flow, Hart, Platform};

/// Upper half of a properly NaN-boxed single (unprivileged spec 12.2).
const BOX: u64 = 0xffff_ffff_0000_0000;
const SIGN32: u32 = 1 << 31;
const SIGN64: u64 = 1 << 63;

impl Hart {
    /// The rounding mode for `inst`: its static rm, or frm for DYN (7). Reserved values
    /// (5, 6, or DYN with frm >= 5) are illegal instructions (11.2).
    fn rounding(&mut self, inst: &Instruction) -> Result<RoundingMode, Exception> {
        let rm = if inst.rm == 7 {
            self.csr.frm as u8
        } else {
            inst.rm
        };
        match RoundingMode::from_rm(rm) {
            Some(mode) => Ok(mode),
            None => Err(self.illegal()),
        }
    }

    /// A single read from an f register: improperly boxed values read as the canonical NaN.
    #[inline]
    fn fs(&self, r: u8) -> F32 {
        let v = self.f[r as usize & 31];
        if v & BOX == BOX {
            F32(v as u32)
        } else {
            F32::CANONICAL_NAN
        }
    }

    #[inline]
    fn fd(&self, r: u8) -> F64 {
        F64(self.f[r as usize & 31])
    }

    #[inline]
    fn set_fs(&mut self, r: u8, v: F32) {
        self.f[r as usize & 31] = BOX | v.0 as u64;
        self.csr.set_fs_dirty();
    }

    #[inline]
    fn set_fd(&mut self, r: u8, v: F64) {
        self.f[r as usize & 31] = v.0;
        self.csr.set_fs_dirty();
    }

    #[inline]
    fn accrue(&mut self, flags: Flags) {
        let bits = flags.0 as u64 & 0x1f;
        if bits & !self.csr.fflags != 0 {
            self.csr.fflags |= bits;
            self.csr.set_fs_dirty();
        }
    }

    /// An FP load from MMIO ends the run like an integer one (see `finish_load`).
    fn finish_fp_load(&mut self) -> Flow {
        if self.mmio_loaded {
            self.mmio_loaded = false;
            return Flow::Stop(crate::StopReason::MmioAccess);
        }
        Flow::Next
    }

    fn put_s(&mut self, rd: u8, (v, flags): (F32, Flags)) {
        self.accrue(flags);
        self.set_fs(rd, v);
    }

    fn put_d(&mut self, rd: u8, (v, flags): (F64, Flags)) {
        self.accrue(flags);
        self.set_fd(rd, v);
    }

    fn put_x(&mut self, rd: u8, v: u64, flags: Flags) {
        self.accrue(flags);
        self.set_reg(rd, v);
    }

    /// Executes an F or D instruction (FS=Off makes all of them illegal, privileged 3.1.6.6).
    pub(crate) fn execute_fp(
        &mut self,
        p: &mut impl Platform,
        inst: &Instruction,
    ) -> Result<Flow, Exception> {
        use Op::*;
        if self.csr.fs_off() {
            return Err(self.illegal());
        }
        let (rd, rs1, rs2, rs3) = (inst.rd, inst.rs1, inst.rs2, inst.rs3);
        let address = self.reg(rs1).wrapping_add(inst.imm as i64 as u64);
        match inst.op {
            Flw => {
                let v = self.load(p, address, 4)?;
                self.set_fs(rd, F32(v as u32));
                return Ok(self.finish_fp_load());
            }
            Fld => {
                let v = self.load(p, address, 8)?;
                self.set_fd(rd, F64(v));
                return Ok(self.finish_fp_load());
            }
            // Stores move the raw register bits (no unboxing).
            Fsw => return self.store(p, address, 4, self.f[rs2 as usize & 31]),
            Fsd => return self.store(p, address, 8, self.f[rs2 as usize & 31]),

            FmaddS | FmsubS | FnmsubS | FnmaddS => {
                let rm = self.rounding(inst)?;
                let (mut a, b, mut c) = (self.fs(rs1), self.fs(rs2), self.fs(rs3));
                if matches!(inst.op, FnmsubS | FnmaddS) {
                    a = F32(a.0 ^ SIGN32);
                }
                if matches!(inst.op, FmsubS | FnmaddS) {
                    c = F32(c.0 ^ SIGN32);
                }
                self.put_s(rd, a.mul_add(b, c, rm));
            }
            FmaddD | FmsubD | FnmsubD | FnmaddD => {
                let rm = self.rounding(inst)?;
                let (mut a, b, mut c) = (self.fd(rs1), self.fd(rs2), self.fd(rs3));
                if matches!(inst.op, FnmsubD | FnmaddD) {
                    a = F64(a.0 ^ SIGN64);
                }
                if matches!(inst.op, FmsubD | FnmaddD) {
                    c = F64(c.0 ^ SIGN64);
                }
                self.put_d(rd, a.mul_add(b, c, rm));
            }
            FaddS => {
                let rm = self.rounding(inst)?;
                self.put_s(rd, self.fs(rs1).add(self.fs(rs2), rm));
            }
            FsubS => {
                let rm = self.rounding(inst)?;
                self.put_s(rd, self.fs(rs1).sub(self.fs(rs2), rm));
            }
            FmulS => {
                let rm = self.rounding(inst)?;
                self.put_s(rd, self.fs(rs1).mul(self.fs(rs2), rm));
            }
            FdivS => {
                let rm = self.rounding(inst)?;
                self.put_s(rd, self.fs(rs1).div(self.fs(rs2), rm));
            }
            FsqrtS => {
                let rm = self.rounding(inst)?;
                self.put_s(rd, self.fs(rs1).sqrt(rm));
            }
            FaddD => {
                let rm = self.rounding(inst)?;
                self.put_d(rd, self.fd(rs1).add(self.fd(rs2), rm));
            }
            FsubD => {
                let rm = self.rounding(inst)?;
                self.put_d(rd, self.fd(rs1).sub(self.fd(rs2), rm));
            }
            FmulD => {
                let rm = self.rounding(inst)?;
                self.put_d(rd, self.fd(rs1).mul(self.fd(rs2), rm));
            }
            FdivD => {
                let rm = self.rounding(inst)?;
                self.put_d(rd, self.fd(rs1).div(self.fd(rs2), rm));
            }
            FsqrtD => {
                let rm = self.rounding(inst)?;
                self.put_d(rd, self.fd(rs1).sqrt(rm));
            }
            // Sign injection (11.6) works on unboxed operands and raises no flags.
            FsgnjS | FsgnjnS | FsgnjxS => {
                let (a, b) = (self.fs(rs1).0, self.fs(rs2).0);
                let sign = match inst.op {
                    FsgnjS => b & SIGN32,
                    FsgnjnS => !b & SIGN32,
                    _ => (a ^ b) & SIGN32,
                };
                self.set_fs(rd, F32((a & !SIGN32) | sign));
            }
            FsgnjD | FsgnjnD | FsgnjxD => {
                let (a, b) = (self.fd(rs1).0, self.fd(rs2).0);
                let sign = match inst.op {
                    FsgnjD => b & SIGN64,
                    FsgnjnD => !b & SIGN64,
                    _ => (a ^ b) & SIGN64,
                };
                self.set_fd(rd, F64((a & !SIGN64) | sign));
            }
            FminS => self.put_s(rd, self.fs(rs1).min(self.fs(rs2))),
            FmaxS => self.put_s(rd, self.fs(rs1).max(self.fs(rs2))),
            FminD => self.put_d(rd, self.fd(rs1).min(self.fd(rs2))),
            FmaxD => self.put_d(rd, self.fd(rs1).max(self.fd(rs2))),
            FeqS | FltS | FleS => {
                let (a, b) = (self.fs(rs1), self.fs(rs2));
                let (r, flags) = match inst.op {
                    FeqS => a.eq(b),
                    FltS => a.lt(b),
                    _ => a.le(b),
                };
                self.put_x(rd, r as u64, flags);
            }
            FeqD | FltD | FleD => {
                let (a, b) = (self.fd(rs1), self.fd(rs2));
                let (r, flags) = match inst.op {
                    FeqD => a.eq(b),
                    FltD => a.lt(b),
                    _ => a.le(b),
                };
                self.put_x(rd, r as u64, flags);
            }
            FclassS => self.set_reg(rd, self.fs(rs1).classify() as u64),
            FclassD => self.set_reg(rd, self.fd(rs1).classify() as u64),
            // fmv.x.w moves the low 32 bits as they are, sign-extended (11.7).
            FmvXW => self.set_reg(rd, self.f[rs1 as usize & 31] as u32 as i32 as i64 as u64),
            FmvWX => self.set_fs(rd, F32(self.reg(rs1) as u32)),
            FmvXD => self.set_reg(rd, self.f[rs1 as usize & 31]),
            FmvDX => self.set_fd(rd, F64(self.reg(rs1))),
            // Integer results of 32-bit conversions are sign-extended, even fcvt.wu (11.7).
            FcvtWS | FcvtWuS | FcvtLS | FcvtLuS => {
                let rm = self.rounding(inst)?;
                let a = self.fs(rs1);
                let (v, flags) = match inst.op {
                    FcvtWS => {
                        let (v, f) = a.to_i32(rm);
                        (v as i64 as u64, f)
                    }
                    FcvtWuS => {
                        let (v, f) = a.to_u32(rm);
                        (v as i32 as i64 as u64, f)
                    }
                    FcvtLS => {
                        let (v, f) = a.to_i64(rm);
                        (v as u64, f)
                    }
                    _ => a.to_u64(rm),
                };
                self.put_x(rd, v, flags);
            }
            FcvtWD | FcvtWuD | FcvtLD | FcvtLuD => {
                let rm = self.rounding(inst)?;
                let a = self.fd(rs1);
                let (v, flags) = match inst.op {
                    FcvtWD => {
                        let (v, f) = a.to_i32(rm);
                        (v as i64 as u64, f)
                    }
                    FcvtWuD => {
                        let (v, f) = a.to_u32(rm);
                        (v as i32 as i64 as u64, f)
                    }
                    FcvtLD => {
                        let (v, f) = a.to_i64(rm);
                        (v as u64, f)
                    }
                    _ => a.to_u64(rm),
                };
                self.put_x(rd, v, flags);
            }
            FcvtSW | FcvtSWu | FcvtSL | FcvtSLu => {
                let rm = self.rounding(inst)?;
                let x = self.reg(rs1);
                let r = match inst.op {
                    FcvtSW => F32::from_i32(x as i32, rm),
                    FcvtSWu => F32::from_u32(x as u32, rm),
                    FcvtSL => F32::from_i64(x as i64, rm),
                    _ => F32::from_u64(x, rm),
                };
                self.put_s(rd, r);
            }
            FcvtDW | FcvtDWu | FcvtDL | FcvtDLu => {
                let rm = self.rounding(inst)?;
                let x = self.reg(rs1);
                let r = match inst.op {
                    FcvtDW => F64::from_i32(x as i32, rm),
                    FcvtDWu => F64::from_u32(x as u32, rm),
                    FcvtDL => F64::from_i64(x as i64, rm),
                    _ => F64::from_u64(x, rm),
                };
                self.put_d(rd, r);
            }
            FcvtSD => {
                let rm = self.rounding(inst)?;
                self.put_s(rd, self.fd(rs1).to_f32(rm));
            }
            FcvtDS => {
                self.rounding(inst)?;
                self.put_d(rd, self.fs(rs1).to_f64());
            }
            _ => return Err(self.illegal()),
        }
        Ok(Flow::Next)
    }
}
