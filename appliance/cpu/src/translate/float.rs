//! Templates for the F and D instructions translated inline: SSE2 scalar arithmetic, and FMA3
//! where the host has it, with every case SSE cannot give bit for bit left to the interpreter.
//!
//! Exactness, instruction by instruction, against `fp.rs` over `understudy-softfloat`:
//! - Rounding: only round-to-nearest-even is translated (static rm = 0, or DYN with frm = 0,
//!   checked at the block's entry); MXCSR holds RC = nearest while translated code runs.
//! - Flags: SSE raises the IEEE 754 exceptions under the same conditions as RISC-V for the
//!   operations translated here, with tininess detected after rounding and, underflow being
//!   masked, UE only when the result is also inexact (SDM vol. 1 4.9.1.5 and 11.5.2.5;
//!   unprivileged spec 11.2). MXCSR's sticky flags accrue while translated code runs and are
//!   folded into fflags (`accrue`) at every way out and before every call into the
//!   interpreter, which may read fflags. DE (denormal operand) has no RISC-V counterpart.
//! - NaNs: RISC-V returns the canonical NaN (11.3) where SSE returns its default NaN or
//!   propagates a payload, and fused multiply-add must raise NV for inf * 0 + qNaN (11.6)
//!   where FMA3 need not. An arithmetic NaN result therefore never reaches an f register
//!   from here: translated code hands the instruction to the interpreter instead (its
//!   operands are untouched, and the flags SSE raised for it, invalid at most, are a subset
//!   of the ones the interpreter raises again). Moves and sign injection copy NaNs as bits,
//!   as RISC-V does.
//! - NaN boxing (12.2): a single operand whose upper 32 bits are not all ones reads as the
//!   canonical NaN; translated code hands such instructions to the interpreter too.
//! - mstatus.FS (privileged 3.1.6.6): a block with inline FP instructions leaves for the
//!   interpreter at its entry when FS is Off, so the instruction traps there; the first
//!   f register write of a block sets FS = Dirty and SD, as `Csr::set_fs_dirty` does (the
//!   later ones in the same block cannot be reached without passing it).
//!
//! FS and frm cannot change inside a block: every CSR instruction that may write them ends
//! its block (`block::ends_block`), so the code after a write of fflags, frm or fcsr (which
//! goes on in translated code) is another block, whose entry checks read FS and frm afresh;
//! every other CSR write but those of
//! data-only CSRs and those that change only interrupt enables, SUM or MXR
//! (`Hart::execute_csr`, and the inline sstatus accesses that follow it), every trap and
//! xRET ends the interpreter's block with a flow other than "next", which leaves
//! translated code; interpreted FP instructions only accrue flags and set FS to Dirty.

use core::mem::offset_of;

use super::super::x86::{
    at, Alu, Cond, FloatCompare, FloatOp, Fused, Mem, Precision, Shift, Unary, Width, R14, RAX,
    RBX, RCX, RDX, XMM0, XMM1,
};
use super::super::{Exit, Frame};
use super::{Emitter, RegisterCache};
use crate::block::reads_float_csr;
use crate::csr::numbers::{FFLAGS, FRM};
use crate::csr::{MSTATUS_FS, MSTATUS_SD};
use crate::inst::{Instruction, Op};
use crate::Hart;

/// MXCSR while translated code runs (SDM vol. 1 10.2.3): every exception masked (bits
/// 7-12), rounding to nearest even (RC = 00), DAZ and FTZ off, no flag raised.
pub(crate) const MXCSR_TRANSLATED: u32 = 0x1f80;

/// MXCSR exception flags (SDM vol. 1 figure 10-3) and the fflags bits they fold into
/// (unprivileged spec 11.2, figure 11.2). DE (bit 1) has no RISC-V counterpart.
const FLAG_FOLD: [(u32, u64); 5] = [
    (1 << 0, 0x10), // IE -> NV
    (1 << 2, 0x08), // ZE -> DZ
    (1 << 3, 0x04), // OE -> OF
    (1 << 4, 0x02), // UE -> UF
    (1 << 5, 0x01), // PE -> NX
];

/// mstatus.FS is bits 13-14 of mstatus: bits 5-6 of its second byte.
const FS_BYTE: u8 = (MSTATUS_FS >> 8) as u8;
const _: () = assert!((FS_BYTE as u64) << 8 == MSTATUS_FS);

/// Whether the translator emits the FP CSR access `inst` inline: a read of fflags, frm or
/// fcsr (`block::reads_float_csr`), or a write of fflags that reads nothing back (glibc's
/// `fsflags` restoring the flags after FP code).
pub(super) fn csr_inline(inst: &Instruction) -> bool {
    let csr = (inst.imm as u32 & 0xfff) as u16;
    reads_float_csr(inst)
        || matches!(inst.op, Op::Csrrw | Op::Csrrwi) && inst.rd == 0 && csr == FFLAGS
}

/// The upper half of a NaN-boxed single (unprivileged spec 12.2).
const BOX_HIGH: i32 = -1;
const SIGN32: u64 = 1 << 31;
const SIGN64: u64 = 1 << 63;

/// Folds MXCSR's exception flags into fflags exactly as `Hart::accrue` does for the same
/// flags: FS becomes Dirty only when a flag is new.
pub(crate) fn accrue(hart: &mut Hart, mxcsr: u32) {
    let bits = FLAG_FOLD
        .iter()
        .filter(|(flag, _)| mxcsr & flag != 0)
        .fold(0, |bits, (_, fflag)| bits | fflag);
    if bits & !hart.csr.fflags != 0 {
        hart.csr.fflags |= bits;
        hart.csr.set_fs_dirty();
    }
}

/// MXCSR as translated code left it (called by the interpreter helper), reset to
/// `MXCSR_TRANSLATED` so that flags are folded once. The reset is skipped when no flag is
/// raised: ldmxcsr costs far more than stmxcsr, and the helper runs for every load or store
/// off the inline path.
pub(crate) fn take_mxcsr() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        let mut value: u32 = 0;
        // SAFETY: stmxcsr writes the four bytes of a live local.
        unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack)) };
        if value != MXCSR_TRANSLATED {
            // SAFETY: ldmxcsr loads a valid MXCSR (reserved bits clear), the state
            // translated code runs in.
            unsafe {
                core::arch::asm!("ldmxcsr [{}]", in(reg) &MXCSR_TRANSLATED, options(nostack))
            };
        }
        value
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        MXCSR_TRANSLATED
    }
}

/// Whether the host runs FMA3 instructions: CPUID.1:ECX.FMA[12] and AVX[28], and the OS
/// (or our own kernel) has enabled the SSE and AVX state in XCR0 (OSXSAVE[27], then
/// XGETBV bits 1 and 2; SDM vol. 1 14.3 and 14.5.3), without which VEX-encoded
/// instructions fault.
pub(crate) fn host_has_fused_multiply_add() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        const FMA: u32 = 1 << 12;
        const OSXSAVE: u32 = 1 << 27;
        const AVX: u32 = 1 << 28;
        const XCR0_SSE_AVX: u32 = 0b110;
        let leaf1 = core::arch::x86_64::__cpuid(1);
        if leaf1.ecx & (FMA | OSXSAVE | AVX) != FMA | OSXSAVE | AVX {
            return false;
        }
        let xcr0: u32;
        // SAFETY: xgetbv with ecx = 0 is defined once CPUID reports OSXSAVE (checked
        // above); it only reads XCR0 into edx:eax.
        unsafe {
            core::arch::asm!("xgetbv", in("ecx") 0, out("eax") xcr0, out("edx") _,
                options(nomem, nostack, preserves_flags));
        }
        xcr0 & XCR0_SSE_AVX == XCR0_SSE_AVX
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Loads and stores of f registers (through the integer load and store templates).
pub(super) fn is_float_access(op: Op) -> bool {
    matches!(op, Op::Flw | Op::Fld | Op::Fsw | Op::Fsd)
}

/// Operations that round (and whose rm is therefore checked).
fn rounds(op: Op) -> bool {
    use Op::*;
    matches!(
        op,
        FaddS
            | FsubS
            | FmulS
            | FdivS
            | FsqrtS
            | FaddD
            | FsubD
            | FmulD
            | FdivD
            | FsqrtD
            | FmaddS
            | FmsubS
            | FnmsubS
            | FnmaddS
            | FmaddD
            | FmsubD
            | FnmsubD
            | FnmaddD
            | FcvtSW
            | FcvtSWu
            | FcvtSL
            | FcvtDW
            | FcvtDWu
            | FcvtDL
            | FcvtSD
            | FcvtDS
    )
}

fn fused(op: Op) -> bool {
    use Op::*;
    matches!(
        op,
        FmaddS | FmsubS | FnmsubS | FnmaddS | FmaddD | FmsubD | FnmsubD | FnmaddD
    )
}

/// Whether `inst` is an FP instruction translated inline (on a host with FMA3 or not).
pub(super) fn inline(inst: &Instruction, fused_multiply_add: bool) -> bool {
    use Op::*;
    let handled = rounds(inst.op)
        || is_float_access(inst.op)
        || matches!(
            inst.op,
            FsgnjS
                | FsgnjnS
                | FsgnjxS
                | FsgnjD
                | FsgnjnD
                | FsgnjxD
                | FminS
                | FmaxS
                | FminD
                | FmaxD
                | FeqS
                | FltS
                | FleS
                | FeqD
                | FltD
                | FleD
                | FmvXW
                | FmvWX
                | FmvXD
                | FmvDX
        );
    // rm = 0 (RNE) or 7 (DYN, with frm = 0 checked at run time); the others round
    // otherwise, or are reserved (illegal).
    let nearest = !rounds(inst.op) || inst.rm == 0 || inst.rm == 7;
    handled && nearest && (fused_multiply_add || !fused(inst.op))
}

/// Whether translated code may hand `op` to the interpreter (an operand not NaN-boxed, a
/// NaN result, a load or store off the inline path).
pub(super) fn has_slow_path(op: Op) -> bool {
    use Op::*;
    is_float_access(op)
        || (rounds(op) && !matches!(op, FcvtSW | FcvtSWu | FcvtSL | FcvtDW | FcvtDWu | FcvtDL))
        || matches!(
            op,
            FsgnjS | FsgnjnS | FsgnjxS | FeqS | FltS | FleS | FminS | FmaxS | FminD | FmaxD
        )
}

impl Emitter {
    fn freg(&self, r: u8) -> Mem {
        at(RBX, self.layout.f + (r as i32 & 31) * 8)
    }

    /// The checks at the entry of a block with inline FP instructions: FS not Off, and frm
    /// = RNE when one of them rounds dynamically; otherwise the interpreter runs the block.
    pub(super) fn float_entry_checks(&mut self, ops: &[Instruction], pc: u64) {
        let fma = self.layout.fused_multiply_add;
        let inline_ops = || {
            ops.iter()
                .filter(move |i| !super::super::translates(i.op) && inline(i, fma))
        };
        if inline_ops().next().is_none() {
            return;
        }
        self.a
            .test_mem_byte(at(RBX, self.layout.mstatus + 1), FS_BYTE);
        self.jcc_leave(
            Cond::Equal,
            pc,
            0,
            Exit::FloatState,
            RegisterCache::default(),
        );
        if inline_ops().any(|i| rounds(i.op) && i.rm == 7) {
            self.a.cmp_mem_imm(at(RBX, self.layout.frm), 0);
            self.jcc_leave(
                Cond::NotEqual,
                pc,
                0,
                Exit::FloatState,
                RegisterCache::default(),
            );
        }
    }

    /// An FP CSR access of `csr_inline`, as `Hart::execute_csr` does it; FS Off (the access
    /// is illegal) takes the interpreter path. The frame's MXCSR of translated code is
    /// scratch here: the way out stores it afresh.
    pub(super) fn float_csr(&mut self, inst: &Instruction) {
        self.a
            .test_mem_byte(at(RBX, self.layout.mstatus + 1), FS_BYTE);
        self.jcc_slow(Cond::Equal);
        if reads_float_csr(inst) {
            self.float_csr_read(inst);
            return;
        }
        // fflags = the source's five low bits. The flags raised by translated code since
        // the last fold would be folded into the old value and overwritten: they are
        // dropped, which resets MXCSR to `MXCSR_TRANSLATED`.
        if inst.op == Op::Csrrwi {
            self.a.mov_imm(RAX, inst.rs1 as u64 & 0x1f);
        } else {
            self.read(RAX, inst.rs1);
            self.a.alu_imm(Alu::And, Width::W32, RAX, 0x1f);
        }
        self.a.store(at(RBX, self.layout.fflags), RAX);
        let (_, guest_mxcsr) = mxcsr_fields();
        self.a
            .store_imm32(at(R14, guest_mxcsr), MXCSR_TRANSLATED as i32);
        self.a.ldmxcsr(at(R14, guest_mxcsr));
        self.float_written();
    }

    /// A read of fflags, frm or fcsr: rd = the CSR. Flags that translated code raised
    /// since the last fold take the interpreter path, as the read must see them (`accrue`).
    fn float_csr_read(&mut self, inst: &Instruction) {
        let csr = (inst.imm as u32 & 0xfff) as u16;
        if csr != FRM {
            let (_, guest_mxcsr) = mxcsr_fields();
            let raised = FLAG_FOLD.iter().fold(0, |bits, (flag, _)| bits | flag);
            self.a.stmxcsr(at(R14, guest_mxcsr));
            self.a.test_mem_byte(at(R14, guest_mxcsr), raised as u8);
            self.jcc_slow(Cond::NotEqual);
        }
        let (fflags, frm) = (at(RBX, self.layout.fflags), at(RBX, self.layout.frm));
        match csr {
            FFLAGS => self.a.load(Width::W64, RAX, fflags),
            FRM => self.a.load(Width::W64, RAX, frm),
            _ => {
                self.a.load(Width::W64, RAX, frm);
                self.a.shift_imm(Shift::Shl, Width::W64, RAX, 5);
                self.a.alu_mem(Alu::Or, Width::W64, RAX, fflags);
            }
        }
        self.write_rax(inst.rd);
    }

    /// FS = Dirty and SD after the first f register write of the block.
    fn float_written(&mut self) {
        if !self.float_dirty {
            self.a.mov_imm(RAX, MSTATUS_FS | MSTATUS_SD);
            self.a.or_to_mem(at(RBX, self.layout.mstatus), RAX);
            self.float_dirty = true;
        }
    }

    /// To the interpreter unless f[r] holds a NaN-boxed single.
    fn require_boxed(&mut self, r: u8) {
        let mut high = self.freg(r);
        high.disp += 4;
        self.a.cmp_mem32_imm(high, BOX_HIGH);
        self.jcc_slow(Cond::NotEqual);
    }

    /// To the interpreter when xmm0 holds a NaN.
    fn nan_to_interpreter(&mut self, precision: Precision) {
        self.a.float_unordered_compare(precision, XMM0, XMM0);
        self.jcc_slow(Cond::Parity);
    }

    /// f[rd] = xmm0 (a single NaN-boxed).
    fn float_result(&mut self, precision: Precision, rd: u8) {
        let mem = self.freg(rd);
        self.a.float_store(precision, mem, XMM0);
        if precision == Precision::Single {
            self.box_high(rd);
        }
        self.float_written();
    }

    fn box_high(&mut self, rd: u8) {
        let mut high = self.freg(rd);
        high.disp += 4;
        self.a.store_imm32(high, BOX_HIGH);
    }

    /// After an inline load of an f register (value in rax).
    pub(super) fn float_loaded(&mut self, inst: &Instruction) {
        let mem = self.freg(inst.rd);
        if inst.op == Op::Flw {
            self.a.store_sized(4, mem, RAX);
            self.box_high(inst.rd);
        } else {
            self.a.store(mem, RAX);
        }
        self.float_written();
    }

    /// rax = the raw bits of f[rs2] for an inline store (stores do not unbox, 12.2).
    pub(super) fn float_store_source(&mut self, inst: &Instruction) {
        let mem = self.freg(inst.rs2);
        self.a.load(Width::W64, RAX, mem);
    }

    /// One inline FP instruction.
    pub(super) fn float(&mut self, inst: &Instruction) {
        use Op::*;
        use Precision::{Double, Single};
        match inst.op {
            Flw => self.load(inst, 4, false),
            Fld => self.load(inst, 8, false),
            Fsw => self.store(inst, 4),
            Fsd => self.store(inst, 8),
            FaddS => self.float_arithmetic(inst, Single, FloatOp::Add),
            FsubS => self.float_arithmetic(inst, Single, FloatOp::Sub),
            FmulS => self.float_arithmetic(inst, Single, FloatOp::Mul),
            FdivS => self.float_arithmetic(inst, Single, FloatOp::Div),
            FsqrtS => self.float_arithmetic(inst, Single, FloatOp::Sqrt),
            FaddD => self.float_arithmetic(inst, Double, FloatOp::Add),
            FsubD => self.float_arithmetic(inst, Double, FloatOp::Sub),
            FmulD => self.float_arithmetic(inst, Double, FloatOp::Mul),
            FdivD => self.float_arithmetic(inst, Double, FloatOp::Div),
            FsqrtD => self.float_arithmetic(inst, Double, FloatOp::Sqrt),
            // RISC-V fnmsub is -(a * b) + c and fnmadd -(a * b) - c (11.6).
            FmaddS => self.float_fused(inst, Single, Fused::MulAdd),
            FmsubS => self.float_fused(inst, Single, Fused::MulSub),
            FnmsubS => self.float_fused(inst, Single, Fused::NegMulAdd),
            FnmaddS => self.float_fused(inst, Single, Fused::NegMulSub),
            FmaddD => self.float_fused(inst, Double, Fused::MulAdd),
            FmsubD => self.float_fused(inst, Double, Fused::MulSub),
            FnmsubD => self.float_fused(inst, Double, Fused::NegMulAdd),
            FnmaddD => self.float_fused(inst, Double, Fused::NegMulSub),
            FminS => self.min_max(inst, Single, FloatOp::Min),
            FmaxS => self.min_max(inst, Single, FloatOp::Max),
            FminD => self.min_max(inst, Double, FloatOp::Min),
            FmaxD => self.min_max(inst, Double, FloatOp::Max),
            FsgnjS | FsgnjnS | FsgnjxS => self.sign_injection(inst, Single),
            FsgnjD | FsgnjnD | FsgnjxD => self.sign_injection(inst, Double),
            // feq is quiet (NV for signalling NaNs only), flt and fle signal on any NaN
            // (11.8), as the EQ_OQ, LT_OS and LE_OS predicates do.
            FeqS => self.float_compare(inst, Single, FloatCompare::Equal),
            FltS => self.float_compare(inst, Single, FloatCompare::Less),
            FleS => self.float_compare(inst, Single, FloatCompare::LessOrEqual),
            FeqD => self.float_compare(inst, Double, FloatCompare::Equal),
            FltD => self.float_compare(inst, Double, FloatCompare::Less),
            FleD => self.float_compare(inst, Double, FloatCompare::LessOrEqual),
            // Moves copy raw bits (11.7, 12.5): fmv.x.w sign-extends, fmv.w.x boxes.
            FmvXW => {
                let mem = self.freg(inst.rs1);
                self.a.load_sign_extended32(RAX, mem);
                self.write_rax(inst.rd);
            }
            FmvXD => {
                let mem = self.freg(inst.rs1);
                self.a.load(Width::W64, RAX, mem);
                self.write_rax(inst.rd);
            }
            FmvWX => {
                self.read(RAX, inst.rs1);
                let mem = self.freg(inst.rd);
                self.a.store_sized(4, mem, RAX);
                self.box_high(inst.rd);
                self.float_written();
            }
            FmvDX => {
                self.read(RAX, inst.rs1);
                let mem = self.freg(inst.rd);
                self.a.store(mem, RAX);
                self.float_written();
            }
            FcvtSW => self.float_from_integer(inst, Single, Width::W32, false),
            FcvtSWu => self.float_from_integer(inst, Single, Width::W32, true),
            FcvtSL => self.float_from_integer(inst, Single, Width::W64, false),
            FcvtDW => self.float_from_integer(inst, Double, Width::W32, false),
            FcvtDWu => self.float_from_integer(inst, Double, Width::W32, true),
            FcvtDL => self.float_from_integer(inst, Double, Width::W64, false),
            FcvtDS => {
                self.require_boxed(inst.rs1);
                let mem = self.freg(inst.rs1);
                self.a.float_convert(Single, XMM0, mem);
                self.nan_to_interpreter(Double);
                self.float_result(Double, inst.rd);
            }
            FcvtSD => {
                let mem = self.freg(inst.rs1);
                self.a.float_convert(Double, XMM0, mem);
                self.nan_to_interpreter(Single);
                self.float_result(Single, inst.rd);
            }
            _ => unreachable!("float::inline admits only the ops above"),
        }
    }

    fn float_arithmetic(&mut self, inst: &Instruction, precision: Precision, op: FloatOp) {
        let single = precision == Precision::Single;
        if single {
            self.require_boxed(inst.rs1);
            if op != FloatOp::Sqrt {
                self.require_boxed(inst.rs2);
            }
        }
        if op == FloatOp::Sqrt {
            let mem = self.freg(inst.rs1);
            self.a.float_op(precision, op, XMM0, mem);
        } else {
            let (a, b) = (self.freg(inst.rs1), self.freg(inst.rs2));
            self.a.float_load(precision, XMM0, a);
            self.a.float_op(precision, op, XMM0, b);
        }
        self.nan_to_interpreter(precision);
        self.float_result(precision, inst.rd);
    }

    fn float_fused(&mut self, inst: &Instruction, precision: Precision, op: Fused) {
        if precision == Precision::Single {
            for r in [inst.rs1, inst.rs2, inst.rs3] {
                self.require_boxed(r);
            }
        }
        // xmm0 = c, then xmm0 = ±(a * b) ± xmm0 (the 231 form).
        let (a, b, c) = (
            self.freg(inst.rs1),
            self.freg(inst.rs2),
            self.freg(inst.rs3),
        );
        self.a.float_load(precision, XMM0, c);
        self.a.float_load(precision, XMM1, a);
        self.a.fused(precision, op, XMM0, XMM1, b);
        self.nan_to_interpreter(precision);
        self.float_result(precision, inst.rd);
    }

    /// fmin, fmax (11.6): MINSD and MAXSD agree with RISC-V only for two ordered, unequal
    /// operands (they return the second operand for NaNs, raising invalid even for quiet
    /// ones, and for -0 against +0; SDM "MINSD"); a NaN or an equality goes to the
    /// interpreter before MINSD runs. The unordered compare raises invalid only for a
    /// signalling NaN, for which the interpreter raises NV too.
    fn min_max(&mut self, inst: &Instruction, precision: Precision, op: FloatOp) {
        if precision == Precision::Single {
            self.require_boxed(inst.rs1);
            self.require_boxed(inst.rs2);
        }
        let (a, b) = (self.freg(inst.rs1), self.freg(inst.rs2));
        self.a.float_load(precision, XMM0, a);
        self.a.float_unordered_compare_mem(precision, XMM0, b);
        // ZF is set for equal and for unordered operands alike (SDM "UCOMISD").
        self.jcc_slow(Cond::Equal);
        self.a.float_op(precision, op, XMM0, b);
        self.float_result(precision, inst.rd);
    }

    /// fsgnj, fsgnjn, fsgnjx (11.6): bit operations, no flags.
    fn sign_injection(&mut self, inst: &Instruction, precision: Precision) {
        use Op::*;
        let (width, sign) = match precision {
            Precision::Single => {
                self.require_boxed(inst.rs1);
                self.require_boxed(inst.rs2);
                (Width::W32, SIGN32)
            }
            Precision::Double => (Width::W64, SIGN64),
        };
        let (a, b) = (self.freg(inst.rs1), self.freg(inst.rs2));
        let asm = &mut self.a;
        asm.load(width, RAX, a);
        asm.load(width, RCX, b);
        asm.mov_imm(RDX, sign);
        match inst.op {
            FsgnjS | FsgnjD | FsgnjnS | FsgnjnD => {
                if matches!(inst.op, FsgnjnS | FsgnjnD) {
                    asm.unary(Unary::Not, width, RCX);
                }
                asm.alu(Alu::And, width, RCX, RDX);
                asm.unary(Unary::Not, width, RDX);
                asm.alu(Alu::And, width, RAX, RDX);
                asm.alu(Alu::Or, width, RAX, RCX);
            }
            _ => {
                asm.alu(Alu::And, width, RCX, RDX);
                asm.alu(Alu::Xor, width, RAX, RCX);
            }
        }
        let mem = self.freg(inst.rd);
        if precision == Precision::Single {
            self.a.store_sized(4, mem, RAX);
            self.box_high(inst.rd);
        } else {
            self.a.store(mem, RAX);
        }
        self.float_written();
    }

    /// feq, flt, fle: x[rd] = 0 or 1; the flags accrue even when rd is x0.
    fn float_compare(&mut self, inst: &Instruction, precision: Precision, predicate: FloatCompare) {
        if precision == Precision::Single {
            self.require_boxed(inst.rs1);
            self.require_boxed(inst.rs2);
        }
        let (a, b) = (self.freg(inst.rs1), self.freg(inst.rs2));
        self.a.float_load(precision, XMM0, a);
        self.a.float_compare(precision, predicate, XMM0, b);
        self.a.move_from_xmm(Width::W32, RAX, XMM0);
        self.a.alu_imm(Alu::And, Width::W32, RAX, 1);
        self.write_rax(inst.rd);
    }

    /// fcvt.{s,d}.{w,wu,l}: the 32-bit unsigned source zero-extended and converted as a
    /// 64-bit signed one (exact either way); fcvt.{s,d}.lu stays interpreted (SSE2 has no
    /// unsigned 64-bit conversion).
    fn float_from_integer(
        &mut self,
        inst: &Instruction,
        precision: Precision,
        width: Width,
        unsigned: bool,
    ) {
        self.read(RAX, inst.rs1);
        let width = if unsigned {
            self.a.mov(Width::W32, RAX, RAX);
            Width::W64
        } else {
            width
        };
        // A zeroed xmm0 first: cvtsi2sd writes only the low lane and would otherwise wait
        // for the previous value of xmm0.
        self.a.float_xor_self(XMM0);
        self.a.float_from_int(precision, width, XMM0, RAX);
        self.float_result(precision, inst.rd);
    }
}

/// The `Frame` fields the trampoline saves and loads MXCSR through.
pub(super) fn mxcsr_fields() -> (i32, i32) {
    (
        offset_of!(Frame, host_mxcsr) as i32,
        offset_of!(Frame, guest_mxcsr) as i32,
    )
}
