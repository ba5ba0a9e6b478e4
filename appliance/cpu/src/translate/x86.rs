//! A small x86-64 encoder: just the instructions the translator's templates use.
//!
//! Encodings follow the Intel SDM volume 2 (chapter 2 for REX, ModRM and SIB; the opcode
//! tables of chapters 3-5 for each instruction). Memory operands use an 8- or 32-bit
//! displacement (ModRM mod = 01 or 10), never none, which sidesteps the special cases of
//! rbp/r13 as a base with mod = 00 at the cost of a byte.

use alloc::vec::Vec;

/// A 64-bit general-purpose register, numbered as in the ModRM encoding (SDM table 2-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reg(pub u8);

pub(crate) const RAX: Reg = Reg(0);
pub(crate) const RCX: Reg = Reg(1);
pub(crate) const RDX: Reg = Reg(2);
pub(crate) const RBX: Reg = Reg(3);
pub(crate) const RSP: Reg = Reg(4);
pub(crate) const RBP: Reg = Reg(5);
pub(crate) const RSI: Reg = Reg(6);
pub(crate) const RDI: Reg = Reg(7);
pub(crate) const R12: Reg = Reg(12);
pub(crate) const R13: Reg = Reg(13);
pub(crate) const R14: Reg = Reg(14);
pub(crate) const R15: Reg = Reg(15);

/// `[base + index + disp]` (scale 1).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mem {
    pub base: Reg,
    pub index: Option<Reg>,
    pub disp: i32,
}

/// `[base + disp]`.
pub(crate) fn at(base: Reg, disp: i32) -> Mem {
    Mem {
        base,
        index: None,
        disp,
    }
}

/// `[base + index + disp]`.
pub(crate) fn at_index(base: Reg, index: Reg, disp: i32) -> Mem {
    Mem {
        base,
        index: Some(index),
        disp,
    }
}

/// Condition codes (SDM appendix B.1.4.7), the low nibble of Jcc and SETcc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Cond {
    Below = 0x2,
    AboveOrEqual = 0x3,
    Equal = 0x4,
    NotEqual = 0x5,
    BelowOrEqual = 0x6,
    Above = 0x7,
    Parity = 0xa,
    NotParity = 0xb,
    Less = 0xc,
    GreaterOrEqual = 0xd,
}

impl Cond {
    /// The opposite condition (flip of the low bit, SDM B.1.4.7).
    pub fn negate(self) -> Cond {
        match self {
            Cond::Below => Cond::AboveOrEqual,
            Cond::AboveOrEqual => Cond::Below,
            Cond::Equal => Cond::NotEqual,
            Cond::NotEqual => Cond::Equal,
            Cond::BelowOrEqual => Cond::Above,
            Cond::Above => Cond::BelowOrEqual,
            Cond::Parity => Cond::NotParity,
            Cond::NotParity => Cond::Parity,
            Cond::Less => Cond::GreaterOrEqual,
            Cond::GreaterOrEqual => Cond::Less,
        }
    }
}

/// The two-operand integer operations of the 0x01-0x3B opcode rows (SDM "ADD", "OR", ...):
/// the value is the /digit of the 0x81 immediate form, and `8 * digit` the base opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Alu {
    Add = 0,
    Or = 1,
    And = 4,
    Sub = 5,
    Xor = 6,
    Cmp = 7,
}

/// Shift operations: the /digit of the C1 and D3 opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Shift {
    Shl = 4,
    Shr = 5,
    Sar = 7,
}

/// One-operand F7 group operations: the /digit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Unary {
    Not = 2,
    Neg = 3,
    Mul = 4,
    Imul = 5,
    Div = 6,
    Idiv = 7,
}

/// An SSE register (xmm0-xmm15), numbered as in ModRM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Xmm(pub u8);

pub(crate) const XMM0: Xmm = Xmm(0);
pub(crate) const XMM1: Xmm = Xmm(1);

/// Scalar SSE/SSE2 precision: the mandatory prefix of the scalar arithmetic forms (SDM
/// 2.1.2: F3 for single, F2 for double).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Precision {
    Single = 0xf3,
    Double = 0xf2,
}

/// Scalar SSE arithmetic: the second opcode byte after 0F (SDM "ADDSD", "SUBSD", ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum FloatOp {
    Sqrt = 0x51,
    Add = 0x58,
    Mul = 0x59,
    Sub = 0x5c,
    Min = 0x5d,
    Div = 0x5e,
    Max = 0x5f,
}

/// The fused forms `dst = ±(src1 * src2) ± dst` (the 231 operand order, SDM "VFMADD231SD"
/// and siblings): the opcode byte in the 0F38 map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Fused {
    /// a * b + c
    MulAdd = 0xb9,
    /// a * b - c
    MulSub = 0xbb,
    /// -(a * b) + c
    NegMulAdd = 0xbd,
    /// -(a * b) - c
    NegMulSub = 0xbf,
}

/// CMPSD/CMPSS predicates (SDM table 3-1): the ordered, quiet `EQ_OQ` and the ordered,
/// signalling `LT_OS` and `LE_OS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum FloatCompare {
    Equal = 0,
    Less = 1,
    LessOrEqual = 2,
}

/// Operand width of an integer instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Width {
    W32,
    W64,
}

/// Machine code being assembled, with its absolute address for rip-relative jumps.
pub(crate) struct Assembler {
    pub code: Vec<u8>,
    /// Where every rel32 of a jump or call lies, for moving part of the code elsewhere.
    pub rel32_sites: Vec<usize>,
}

impl Assembler {
    pub fn new() -> Assembler {
        Assembler::with_capacity(0)
    }

    /// An assembler with room for `bytes` of code before its buffer grows.
    pub fn with_capacity(bytes: usize) -> Assembler {
        Assembler {
            code: Vec::with_capacity(bytes),
            // A rel32 every 16 bytes or so.
            rel32_sites: Vec::with_capacity(bytes / 16),
        }
    }

    /// A rel32 of 0 at the end; returns its position.
    fn rel32(&mut self) -> usize {
        let at = self.len();
        self.rel32_sites.push(at);
        self.imm32(0);
        at
    }

    pub fn len(&self) -> usize {
        self.code.len()
    }

    fn byte(&mut self, b: u8) {
        self.code.push(b);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.code.extend_from_slice(b);
    }

    fn imm32(&mut self, v: i32) {
        self.bytes(&v.to_le_bytes());
    }

    /// A REX prefix (SDM 2.2.1) when any of W, R, X, B is needed or `force` (byte
    /// registers sil/dil need an empty REX).
    fn rex(&mut self, w: bool, reg: u8, index: u8, base: u8, force: bool) {
        let value = 0x40
            | (w as u8) << 3
            | ((reg >> 3) & 1) << 2
            | ((index >> 3) & 1) << 1
            | (base >> 3) & 1;
        if value != 0x40 || force {
            self.byte(value);
        }
    }

    /// ModRM (+ SIB) + disp32 for a memory operand (SDM tables 2-2 and 2-3).
    fn modrm_mem(&mut self, reg: u8, mem: Mem) {
        // mod = 01 (disp8) when the displacement fits, else 10 (disp32); never 00.
        let short = i8::try_from(mem.disp).is_ok();
        let mode = if short { 0x40 } else { 0x80 };
        match mem.index {
            None if mem.base.0 & 7 != 4 => {
                self.byte(mode | (reg & 7) << 3 | (mem.base.0 & 7));
            }
            None => {
                // rsp/r12 as a base need a SIB byte with no index (index = 100).
                self.byte(mode | (reg & 7) << 3 | 4);
                self.byte(4 << 3 | (mem.base.0 & 7));
            }
            Some(index) => {
                assert!(index != RSP, "rsp cannot be an index register");
                self.byte(mode | (reg & 7) << 3 | 4);
                self.byte((index.0 & 7) << 3 | (mem.base.0 & 7));
            }
        }
        if short {
            self.byte(mem.disp as i8 as u8);
        } else {
            self.imm32(mem.disp);
        }
    }

    fn modrm_reg(&mut self, reg: u8, rm: u8) {
        self.byte(0xc0 | (reg & 7) << 3 | (rm & 7));
    }

    fn rex_mem(&mut self, w: bool, reg: u8, mem: Mem, force: bool) {
        let index = mem.index.map_or(0, |r| r.0);
        self.rex(w, reg, index, mem.base.0, force);
    }

    /// `op reg, [mem]` / `op [mem], reg` with a one- or two-byte opcode.
    fn op_mem(&mut self, w: bool, opcode: &[u8], reg: u8, mem: Mem) {
        self.rex_mem(w, reg, mem, false);
        self.bytes(opcode);
        self.modrm_mem(reg, mem);
    }

    /// `op rm, reg` register form (`reg` in ModRM.reg).
    fn op_reg(&mut self, w: bool, opcode: &[u8], reg: u8, rm: u8) {
        self.rex(w, reg, 0, rm, false);
        self.bytes(opcode);
        self.modrm_reg(reg, rm);
    }

    /// `mov dst, [mem]`: 64-bit, or 32-bit zero-extending.
    pub fn load(&mut self, width: Width, dst: Reg, mem: Mem) {
        self.op_mem(width == Width::W64, &[0x8b], dst.0, mem);
    }

    /// `lea dst, [mem]`: a sum computed without touching the flags (32-bit: the low half
    /// of the sum, zero-extended).
    pub fn lea(&mut self, width: Width, dst: Reg, mem: Mem) {
        self.op_mem(width == Width::W64, &[0x8d], dst.0, mem);
    }

    /// `mov [mem], src` of 1, 2, 4 or 8 bytes.
    pub fn store_sized(&mut self, size_bytes: u64, mem: Mem, src: Reg) {
        match size_bytes {
            1 => self.op_mem_byte_store(mem, src),
            2 => {
                self.byte(0x66);
                self.op_mem(false, &[0x89], src.0, mem);
            }
            4 => self.op_mem(false, &[0x89], src.0, mem),
            _ => self.op_mem(true, &[0x89], src.0, mem),
        }
    }

    fn op_mem_byte_store(&mut self, mem: Mem, src: Reg) {
        // spl/bpl/sil/dil need a REX prefix to be addressable as bytes.
        let force = (4..8).contains(&src.0);
        self.rex_mem(false, src.0, mem, force);
        self.byte(0x88);
        self.modrm_mem(src.0, mem);
    }

    /// `mov [mem], src` (64-bit).
    pub fn store(&mut self, mem: Mem, src: Reg) {
        self.op_mem(true, &[0x89], src.0, mem);
    }

    /// A load of 1, 2, 4 or 8 bytes into `dst`, sign- or zero-extended to 64 bits.
    pub fn load_extend(&mut self, size_bytes: u64, signed: bool, dst: Reg, mem: Mem) {
        match (size_bytes, signed) {
            (1, false) => self.op_mem(false, &[0x0f, 0xb6], dst.0, mem),
            (1, true) => self.op_mem(true, &[0x0f, 0xbe], dst.0, mem),
            (2, false) => self.op_mem(false, &[0x0f, 0xb7], dst.0, mem),
            (2, true) => self.op_mem(true, &[0x0f, 0xbf], dst.0, mem),
            (4, false) => self.op_mem(false, &[0x8b], dst.0, mem),
            (4, true) => self.op_mem(true, &[0x63], dst.0, mem),
            _ => self.op_mem(true, &[0x8b], dst.0, mem),
        }
    }

    /// `mov dst, src`.
    pub fn mov(&mut self, width: Width, dst: Reg, src: Reg) {
        self.op_reg(width == Width::W64, &[0x89], src.0, dst.0);
    }

    /// `mov dst, imm64` using the shortest encoding for the value.
    pub fn mov_imm(&mut self, dst: Reg, value: u64) {
        if value <= u32::MAX as u64 {
            // mov r32, imm32 zero-extends (B8+r).
            self.rex(false, 0, 0, dst.0, false);
            self.byte(0xb8 | (dst.0 & 7));
            self.imm32(value as u32 as i32);
        } else if value as i64 == value as i32 as i64 {
            // REX.W C7 /0: sign-extended imm32.
            self.rex(true, 0, 0, dst.0, false);
            self.byte(0xc7);
            self.modrm_reg(0, dst.0);
            self.imm32(value as i32);
        } else {
            self.rex(true, 0, 0, dst.0, false);
            self.byte(0xb8 | (dst.0 & 7));
            self.bytes(&value.to_le_bytes());
        }
    }

    /// `op dst, src`.
    pub fn alu(&mut self, op: Alu, width: Width, dst: Reg, src: Reg) {
        self.op_reg(width == Width::W64, &[(op as u8) << 3 | 1], src.0, dst.0);
    }

    /// `op dst, [mem]`.
    pub fn alu_mem(&mut self, op: Alu, width: Width, dst: Reg, mem: Mem) {
        self.op_mem(width == Width::W64, &[(op as u8) << 3 | 3], dst.0, mem);
    }

    /// `op dst, imm32` (sign-extended to 64 bits in the 64-bit form).
    pub fn alu_imm(&mut self, op: Alu, width: Width, dst: Reg, imm: i32) {
        self.rex(width == Width::W64, 0, 0, dst.0, false);
        if (-128..128).contains(&imm) {
            self.byte(0x83);
            self.modrm_reg(op as u8, dst.0);
            self.byte(imm as i8 as u8);
        } else {
            self.byte(0x81);
            self.modrm_reg(op as u8, dst.0);
            self.imm32(imm);
        }
    }

    /// `shift dst, imm8`.
    pub fn shift_imm(&mut self, op: Shift, width: Width, dst: Reg, amount: u8) {
        self.rex(width == Width::W64, 0, 0, dst.0, false);
        self.byte(0xc1);
        self.modrm_reg(op as u8, dst.0);
        self.byte(amount);
    }

    /// `shift dst, cl` (the hardware masks the count to 5 or 6 bits, as RISC-V does).
    pub fn shift_cl(&mut self, op: Shift, width: Width, dst: Reg) {
        self.rex(width == Width::W64, 0, 0, dst.0, false);
        self.byte(0xd3);
        self.modrm_reg(op as u8, dst.0);
    }

    /// `imul dst, src` (low half of the product).
    pub fn imul(&mut self, width: Width, dst: Reg, src: Reg) {
        self.op_reg(width == Width::W64, &[0x0f, 0xaf], dst.0, src.0);
    }

    /// `imul dst, [mem]` (two-operand form: the low half of the product).
    pub fn imul_mem(&mut self, width: Width, dst: Reg, mem: Mem) {
        self.op_mem(width == Width::W64, &[0x0f, 0xaf], dst.0, mem);
    }

    /// F7-group one-operand instruction (`neg`, `mul`, `imul`, `div`, `idiv`).
    pub fn unary(&mut self, op: Unary, width: Width, rm: Reg) {
        self.op_reg(width == Width::W64, &[0xf7], op as u8, rm.0);
    }

    /// `cqo` (64-bit) or `cdq` (32-bit): sign-extend rax/eax into rdx/edx.
    pub fn sign_extend_into_rdx(&mut self, width: Width) {
        if width == Width::W64 {
            self.byte(0x48);
        }
        self.byte(0x99);
    }

    /// `movsxd dst, src32`.
    pub fn movsxd(&mut self, dst: Reg, src: Reg) {
        self.op_reg(true, &[0x63], dst.0, src.0);
    }

    /// `test a, b`.
    pub fn test(&mut self, width: Width, a: Reg, b: Reg) {
        self.op_reg(width == Width::W64, &[0x85], b.0, a.0);
    }

    /// `test reg8, imm8` for al, cl, dl, bl.
    pub fn test_low_byte(&mut self, reg: Reg, imm: u8) {
        assert!(reg.0 < 4, "only al, cl, dl and bl are encoded without REX");
        self.byte(0xf6);
        self.modrm_reg(0, reg.0);
        self.byte(imm);
    }

    /// `setcc byte8; movzx dst32, byte8` (byte among al, cl, dl, bl): dst = the condition
    /// as 0 or 1.
    pub fn set_cond(&mut self, cond: Cond, byte: Reg, dst: Reg) {
        assert!(byte.0 < 4, "only al, cl, dl and bl are encoded without REX");
        self.bytes(&[0x0f, 0x90 | cond as u8]);
        self.modrm_reg(0, byte.0);
        self.op_reg(false, &[0x0f, 0xb6], dst.0, byte.0);
    }

    /// `bts dst, bit` (register form): sets bit `bit & 63` of `dst`.
    pub fn bts(&mut self, dst: Reg, bit: Reg) {
        self.op_reg(true, &[0x0f, 0xab], bit.0, dst.0);
    }

    /// `bt value, bit` (register form): CF = bit `bit & 63` of `value`.
    pub fn bt(&mut self, value: Reg, bit: Reg) {
        self.op_reg(true, &[0x0f, 0xa3], bit.0, value.0);
    }

    /// `cmp qword [mem], imm32` (sign-extended).
    pub fn cmp_mem_imm(&mut self, mem: Mem, imm: i32) {
        self.rex_mem(true, 0, mem, false);
        self.byte(0x81);
        self.modrm_mem(Alu::Cmp as u8, mem);
        self.imm32(imm);
    }

    /// `or [mem], src` (64-bit).
    pub fn or_to_mem(&mut self, mem: Mem, src: Reg) {
        self.op_mem(true, &[0x09], src.0, mem);
    }

    pub fn push(&mut self, reg: Reg) {
        self.rex(false, 0, 0, reg.0, false);
        self.byte(0x50 | (reg.0 & 7));
    }

    pub fn pop(&mut self, reg: Reg) {
        self.rex(false, 0, 0, reg.0, false);
        self.byte(0x58 | (reg.0 & 7));
    }

    pub fn ret(&mut self) {
        self.byte(0xc3);
    }

    /// Clears the carry flag.
    pub fn clc(&mut self) {
        self.byte(0xf8);
    }

    /// Sets the carry flag.
    pub fn stc(&mut self) {
        self.byte(0xf9);
    }

    /// `count` bytes of no-operation, in as few instructions as the recommended multi-byte
    /// forms allow (SDM Vol. 2B, NOP: table 4-12).
    pub fn nops(&mut self, mut count: usize) {
        const FORMS: [&[u8]; 9] = [
            &[0x90],
            &[0x66, 0x90],
            &[0x0f, 0x1f, 0x00],
            &[0x0f, 0x1f, 0x40, 0x00],
            &[0x0f, 0x1f, 0x44, 0x00, 0x00],
            &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
            &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
            &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
            &[0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        ];
        while count > 0 {
            let form = FORMS[count.min(FORMS.len()) - 1];
            self.bytes(form);
            count -= form.len();
        }
    }

    /// `call [mem]` (an absolute address held in memory).
    pub fn call_mem(&mut self, mem: Mem) {
        self.rex_mem(false, 2, mem, false);
        self.byte(0xff);
        self.modrm_mem(2, mem);
    }

    /// `jmp reg`.
    pub fn jmp_reg(&mut self, reg: Reg) {
        self.rex(false, 0, 0, reg.0, false);
        self.byte(0xff);
        self.modrm_reg(4, reg.0);
    }

    /// `jcc rel32` with a zero displacement; returns the position of the rel32 to patch.
    pub fn jcc(&mut self, cond: Cond) -> usize {
        self.bytes(&[0x0f, 0x80 | cond as u8]);
        self.rel32()
    }

    /// `jmp rel32` with a zero displacement; returns the position of the rel32 to patch.
    /// `call rel32`; returns the position of the rel32 to patch (as `jmp`).
    pub fn call(&mut self) -> usize {
        self.byte(0xe8);
        self.rel32()
    }

    pub fn jmp(&mut self) -> usize {
        self.byte(0xe9);
        self.rel32()
    }

    /// `ud2`: raises #UD where execution must never arrive.
    pub fn ud2(&mut self) {
        self.bytes(&[0x0f, 0x0b]);
    }

    /// A legacy-SSE instruction `prefix [REX] 0F op` with a memory operand.
    fn sse_mem(&mut self, prefix: u8, w: bool, opcode: &[u8], reg: u8, mem: Mem) {
        self.byte(prefix);
        self.op_mem(w, opcode, reg, mem);
    }

    /// A legacy-SSE instruction `prefix [REX] 0F op` with a register operand.
    fn sse_reg(&mut self, prefix: u8, w: bool, opcode: &[u8], reg: u8, rm: u8) {
        self.byte(prefix);
        self.op_reg(w, opcode, reg, rm);
    }

    /// `movsd dst, [mem]` / `movss dst, [mem]` (zeroing the rest of dst).
    pub fn float_load(&mut self, precision: Precision, dst: Xmm, mem: Mem) {
        self.sse_mem(precision as u8, false, &[0x0f, 0x10], dst.0, mem);
    }

    /// `movsd [mem], src` / `movss [mem], src`.
    pub fn float_store(&mut self, precision: Precision, mem: Mem, src: Xmm) {
        self.sse_mem(precision as u8, false, &[0x0f, 0x11], src.0, mem);
    }

    /// `addsd dst, [mem]` and the other scalar operations (sqrt: dst = sqrt([mem])).
    pub fn float_op(&mut self, precision: Precision, op: FloatOp, dst: Xmm, mem: Mem) {
        self.sse_mem(precision as u8, false, &[0x0f, op as u8], dst.0, mem);
    }

    /// `vfmadd231sd dst, a, [mem]` and siblings (VEX.LIG.66.0F38.W1 for double, W0 for
    /// single; SDM 2.3.5 for the three-byte VEX prefix): dst = ±(a * [mem]) ± dst.
    pub fn fused(&mut self, precision: Precision, op: Fused, dst: Xmm, a: Xmm, mem: Mem) {
        let index = mem.index.map_or(0, |r| r.0);
        self.byte(0xc4);
        // R, X, B inverted; map 0F38 (m-mmmm = 00010).
        self.byte(
            (!(dst.0 >> 3) & 1) << 7 | (!(index >> 3) & 1) << 6 | (!(mem.base.0 >> 3) & 1) << 5 | 2,
        );
        // W, vvvv inverted, L = 0 (scalar), pp = 01 (66).
        let w = (precision == Precision::Double) as u8;
        self.byte(w << 7 | (!a.0 & 15) << 3 | 1);
        self.byte(op as u8);
        self.modrm_mem(dst.0, mem);
    }

    /// `ucomisd a, b` / `ucomiss a, b`: ZF, PF, CF from an unordered compare (PF = 1 when
    /// either is NaN); raises invalid only for signalling NaNs.
    pub fn float_unordered_compare(&mut self, precision: Precision, a: Xmm, b: Xmm) {
        if precision == Precision::Double {
            self.byte(0x66);
        }
        self.op_reg(false, &[0x0f, 0x2e], a.0, b.0);
    }

    /// `ucomisd a, [mem]` / `ucomiss a, [mem]`.
    pub fn float_unordered_compare_mem(&mut self, precision: Precision, a: Xmm, mem: Mem) {
        if precision == Precision::Double {
            self.byte(0x66);
        }
        self.op_mem(false, &[0x0f, 0x2e], a.0, mem);
    }

    /// `cmpsd dst, [mem], predicate` / `cmpss`: dst's low lane all ones when it holds.
    pub fn float_compare(
        &mut self,
        precision: Precision,
        predicate: FloatCompare,
        dst: Xmm,
        mem: Mem,
    ) {
        self.sse_mem(precision as u8, false, &[0x0f, 0xc2], dst.0, mem);
        self.byte(predicate as u8);
    }

    /// `movq dst, src` (W64) or `movd dst, src` (W32): xmm to general register.
    pub fn move_from_xmm(&mut self, width: Width, dst: Reg, src: Xmm) {
        self.sse_reg(0x66, width == Width::W64, &[0x0f, 0x7e], src.0, dst.0);
    }

    /// `cvtsi2sd dst, src` / `cvtsi2ss` from a 32- or 64-bit signed integer.
    pub fn float_from_int(&mut self, precision: Precision, width: Width, dst: Xmm, src: Reg) {
        self.sse_reg(
            precision as u8,
            width == Width::W64,
            &[0x0f, 0x2a],
            dst.0,
            src.0,
        );
    }

    /// `cvtss2sd dst, [mem]` (from single) or `cvtsd2ss dst, [mem]` (from double).
    pub fn float_convert(&mut self, from: Precision, dst: Xmm, mem: Mem) {
        self.sse_mem(from as u8, false, &[0x0f, 0x5a], dst.0, mem);
    }

    /// `xorps dst, dst`: zeroes dst (and breaks its dependency on earlier values).
    pub fn float_xor_self(&mut self, dst: Xmm) {
        self.op_reg(false, &[0x0f, 0x57], dst.0, dst.0);
    }

    /// `mov dword [mem], imm32`.
    pub fn store_imm32(&mut self, mem: Mem, imm: i32) {
        self.rex_mem(false, 0, mem, false);
        self.byte(0xc7);
        self.modrm_mem(0, mem);
        self.imm32(imm);
    }

    /// `ldmxcsr [mem]`.
    pub fn ldmxcsr(&mut self, mem: Mem) {
        self.op_mem(false, &[0x0f, 0xae], 2, mem);
    }

    /// `stmxcsr [mem]`.
    pub fn stmxcsr(&mut self, mem: Mem) {
        self.op_mem(false, &[0x0f, 0xae], 3, mem);
    }

    /// `cmp dword [mem], imm32`.
    pub fn cmp_mem32_imm(&mut self, mem: Mem, imm: i32) {
        self.rex_mem(false, 0, mem, false);
        self.byte(0x81);
        self.modrm_mem(Alu::Cmp as u8, mem);
        self.imm32(imm);
    }

    /// `test byte [mem], imm8`.
    pub fn test_mem_byte(&mut self, mem: Mem, imm: u8) {
        self.rex_mem(false, 0, mem, false);
        self.byte(0xf6);
        self.modrm_mem(0, mem);
        self.byte(imm);
    }

    /// `movsxd dst, dword [mem]`.
    pub fn load_sign_extended32(&mut self, dst: Reg, mem: Mem) {
        self.op_mem(true, &[0x63], dst.0, mem);
    }

    /// Points the rel32 at `site` (a position in this buffer) to position `target`, which
    /// may lie outside the buffer (negative: code placed before it).
    pub fn patch(&mut self, site: usize, target: i64) {
        let rel = target - (site as i64 + 4);
        let rel = i32::try_from(rel).expect("jump within one assembler buffer");
        self.code[site..site + 4].copy_from_slice(&rel.to_le_bytes());
    }

    /// Points the rel32 at `site` to the current end of the buffer.
    pub fn bind(&mut self, site: usize) {
        let here = self.len() as i64;
        self.patch(site, here);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(f: impl FnOnce(&mut Assembler)) -> Vec<u8> {
        let mut a = Assembler::new();
        f(&mut a);
        a.code
    }

    // Expected bytes are the encodings binutils' `as` produces for the same instruction
    // (with an 8-bit displacement of 0 where `as` would use none).
    #[test]
    fn memory_operands_encode_rsp_r12_and_r13_bases_and_index_registers() {
        // mov rax, [rbx+0x100] (a 32-bit displacement)
        assert_eq!(
            bytes(|a| a.load(Width::W64, RAX, at(RBX, 0x100))),
            [0x48, 0x8b, 0x83, 0, 1, 0, 0]
        );
        // mov rax, [rbx+0x10]
        assert_eq!(
            bytes(|a| a.load(Width::W64, RAX, at(RBX, 0x10))),
            [0x48, 0x8b, 0x43, 0x10]
        );
        // mov rcx, [r12+8]
        assert_eq!(
            bytes(|a| a.load(Width::W64, RCX, at(R12, 8))),
            [0x49, 0x8b, 0x4c, 0x24, 8]
        );
        // mov rax, [r13+0]
        assert_eq!(
            bytes(|a| a.load(Width::W64, RAX, at(R13, 0))),
            [0x49, 0x8b, 0x45, 0]
        );
        // mov rcx, [r15+rdx+8]
        assert_eq!(
            bytes(|a| a.load(Width::W64, RCX, at_index(R15, RDX, 8))),
            [0x49, 0x8b, 0x4c, 0x17, 8]
        );
        // lea rcx, [rax+7]
        assert_eq!(
            bytes(|a| a.lea(Width::W64, RCX, at(RAX, 7))),
            [0x48, 0x8d, 0x48, 7]
        );
        // lea r9d, [rbp+r12-8]: rbp as a base needs a displacement, r12 as an index a REX.X.
        assert_eq!(
            bytes(|a| a.lea(Width::W32, Reg(9), at_index(RBP, R12, -8))),
            [0x46, 0x8d, 0x4c, 0x25, 0xf8]
        );
        // mov [r12+rcx], al
        assert_eq!(
            bytes(|a| a.store_sized(1, at_index(R12, RCX, 0), RAX)),
            [0x41, 0x88, 0x44, 0x0c, 0]
        );
        // mov [r12+rcx], ax
        assert_eq!(
            bytes(|a| a.store_sized(2, at_index(R12, RCX, 0), RAX)),
            [0x66, 0x41, 0x89, 0x44, 0x0c, 0]
        );
    }

    #[test]
    fn carry_flag_instructions_are_one_byte() {
        assert_eq!(bytes(|a| a.clc()), [0xf8]);
        assert_eq!(bytes(|a| a.stc()), [0xf9]);
    }

    #[test]
    fn extending_loads_pick_movzx_movsx_and_movsxd() {
        // movsx rax, byte [r12+rcx]
        assert_eq!(
            bytes(|a| a.load_extend(1, true, RAX, at_index(R12, RCX, 0))),
            [0x49, 0x0f, 0xbe, 0x44, 0x0c, 0]
        );
        // movzx eax, word [r12+rcx]
        assert_eq!(
            bytes(|a| a.load_extend(2, false, RAX, at_index(R12, RCX, 0))),
            [0x41, 0x0f, 0xb7, 0x44, 0x0c, 0]
        );
        // movsxd rax, dword [r12+rcx]
        assert_eq!(
            bytes(|a| a.load_extend(4, true, RAX, at_index(R12, RCX, 0))),
            [0x49, 0x63, 0x44, 0x0c, 0]
        );
    }

    #[test]
    fn register_forms_set_rex_bits_for_high_registers() {
        // add rax, rcx
        assert_eq!(
            bytes(|a| a.alu(Alu::Add, Width::W64, RAX, RCX)),
            [0x48, 0x01, 0xc8]
        );
        // sub r13, 5 (imm8 form)
        assert_eq!(
            bytes(|a| a.alu_imm(Alu::Sub, Width::W64, R13, 5)),
            [0x49, 0x83, 0xed, 5]
        );
        // cmp r13, 0x1000 (imm32 form)
        assert_eq!(
            bytes(|a| a.alu_imm(Alu::Cmp, Width::W64, R13, 0x1000)),
            [0x49, 0x81, 0xfd, 0, 0x10, 0, 0]
        );
        // shl eax, cl
        assert_eq!(
            bytes(|a| a.shift_cl(Shift::Shl, Width::W32, RAX)),
            [0xd3, 0xe0]
        );
        // sar rax, 63
        assert_eq!(
            bytes(|a| a.shift_imm(Shift::Sar, Width::W64, RAX, 63)),
            [0x48, 0xc1, 0xf8, 63]
        );
        // imul rax, rcx
        assert_eq!(
            bytes(|a| a.imul(Width::W64, RAX, RCX)),
            [0x48, 0x0f, 0xaf, 0xc1]
        );
        // idiv rcx
        assert_eq!(
            bytes(|a| a.unary(Unary::Idiv, Width::W64, RCX)),
            [0x48, 0xf7, 0xf9]
        );
        // movsxd rax, eax
        assert_eq!(bytes(|a| a.movsxd(RAX, RAX)), [0x48, 0x63, 0xc0]);
        // setl al; movzx eax, al
        assert_eq!(
            bytes(|a| a.set_cond(Cond::Less, RAX, RAX)),
            [0x0f, 0x9c, 0xc0, 0x0f, 0xb6, 0xc0]
        );
        // setb al; movzx r10d, al
        assert_eq!(
            bytes(|a| a.set_cond(Cond::Below, RAX, Reg(10))),
            [0x0f, 0x92, 0xc0, 0x44, 0x0f, 0xb6, 0xd0]
        );
        // bts rax, rdx
        assert_eq!(bytes(|a| a.bts(RAX, RDX)), [0x48, 0x0f, 0xab, 0xd0]);
        // bt rsi, rdi
        assert_eq!(bytes(|a| a.bt(RSI, RDI)), [0x48, 0x0f, 0xa3, 0xfe]);
        // cmp qword [rax+0x10], 7
        assert_eq!(
            bytes(|a| a.cmp_mem_imm(at(RAX, 0x10), 7)),
            [0x48, 0x81, 0x78, 0x10, 7, 0, 0, 0]
        );
        // push r15; pop rbx
        assert_eq!(bytes(|a| a.push(R15)), [0x41, 0x57]);
        assert_eq!(bytes(|a| a.pop(RBX)), [0x5b]);
        // jmp rsi
        assert_eq!(bytes(|a| a.jmp_reg(RSI)), [0xff, 0xe6]);
        // call [r14+0x58]
        assert_eq!(
            bytes(|a| a.call_mem(at(R14, 0x58))),
            [0x41, 0xff, 0x56, 0x58]
        );
    }

    #[test]
    fn immediates_use_the_shortest_move() {
        assert_eq!(bytes(|a| a.mov_imm(RAX, 7)), [0xb8, 7, 0, 0, 0]);
        assert_eq!(
            bytes(|a| a.mov_imm(RCX, u64::MAX)),
            [0x48, 0xc7, 0xc1, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            bytes(|a| a.mov_imm(Reg(8), 0x1_0000_0000)),
            [0x49, 0xb8, 0, 0, 0, 0, 1, 0, 0, 0]
        );
    }

    #[test]
    fn padding_takes_the_longest_nops_first() {
        assert_eq!(
            bytes(|a| a.nops(11)),
            [0x66, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0, 0x66, 0x90]
        );
        assert_eq!(bytes(|a| a.nops(1)), [0x90]);
        assert!(bytes(|a| a.nops(0)).is_empty());
    }

    #[test]
    fn jumps_patch_to_their_targets() {
        let mut a = Assembler::new();
        let site = a.jcc(Cond::NotEqual);
        a.ret();
        a.bind(site);
        assert_eq!(a.code, [0x0f, 0x85, 1, 0, 0, 0, 0xc3]);
    }

    #[test]
    fn sse_fma_and_mxcsr_forms_encode_as_binutils_does() {
        let double = Precision::Double;
        let single = Precision::Single;
        // movsd xmm0, [rbx+0x108]
        assert_eq!(
            bytes(|a| a.float_load(double, XMM0, at(RBX, 0x108))),
            [0xf2, 0x0f, 0x10, 0x83, 0x08, 0x01, 0, 0]
        );
        // movss [rbx+0x10], xmm0
        assert_eq!(
            bytes(|a| a.float_store(single, at(RBX, 0x10), XMM0)),
            [0xf3, 0x0f, 0x11, 0x43, 0x10]
        );
        // addsd xmm0, [rbx+0x110]
        assert_eq!(
            bytes(|a| a.float_op(double, FloatOp::Add, XMM0, at(RBX, 0x110))),
            [0xf2, 0x0f, 0x58, 0x83, 0x10, 0x01, 0, 0]
        );
        // sqrtss xmm0, [rbx+0x10]
        assert_eq!(
            bytes(|a| a.float_op(single, FloatOp::Sqrt, XMM0, at(RBX, 0x10))),
            [0xf3, 0x0f, 0x51, 0x43, 0x10]
        );
        // vfmadd231sd xmm0, xmm1, [rbx+0x118]
        assert_eq!(
            bytes(|a| a.fused(double, Fused::MulAdd, XMM0, XMM1, at(RBX, 0x118))),
            [0xc4, 0xe2, 0xf1, 0xb9, 0x83, 0x18, 0x01, 0, 0]
        );
        // vfnmsub231ss xmm0, xmm1, [rbx+0x18]
        assert_eq!(
            bytes(|a| a.fused(single, Fused::NegMulSub, XMM0, XMM1, at(RBX, 0x18))),
            [0xc4, 0xe2, 0x71, 0xbf, 0x43, 0x18]
        );
        // ucomisd xmm0, xmm0; ucomiss xmm0, xmm0
        assert_eq!(
            bytes(|a| a.float_unordered_compare(double, XMM0, XMM0)),
            [0x66, 0x0f, 0x2e, 0xc0]
        );
        assert_eq!(
            bytes(|a| a.float_unordered_compare(single, XMM0, XMM0)),
            [0x0f, 0x2e, 0xc0]
        );
        // ucomisd xmm0, [rbx+0x10]; maxss xmm0, [rbx+0x10]
        assert_eq!(
            bytes(|a| a.float_unordered_compare_mem(double, XMM0, at(RBX, 0x10))),
            [0x66, 0x0f, 0x2e, 0x43, 0x10]
        );
        assert_eq!(
            bytes(|a| a.float_op(single, FloatOp::Max, XMM0, at(RBX, 0x10))),
            [0xf3, 0x0f, 0x5f, 0x43, 0x10]
        );
        // cmpltsd xmm0, [rbx+0x10]
        assert_eq!(
            bytes(|a| a.float_compare(double, FloatCompare::Less, XMM0, at(RBX, 0x10))),
            [0xf2, 0x0f, 0xc2, 0x43, 0x10, 1]
        );
        // movd eax, xmm0
        assert_eq!(
            bytes(|a| a.move_from_xmm(Width::W32, RAX, XMM0)),
            [0x66, 0x0f, 0x7e, 0xc0]
        );
        // cvtsi2sd xmm0, eax; cvtsi2ss xmm0, rax
        assert_eq!(
            bytes(|a| a.float_from_int(double, Width::W32, XMM0, RAX)),
            [0xf2, 0x0f, 0x2a, 0xc0]
        );
        assert_eq!(
            bytes(|a| a.float_from_int(single, Width::W64, XMM0, RAX)),
            [0xf3, 0x48, 0x0f, 0x2a, 0xc0]
        );
        // cvtss2sd xmm0, [rbx+0x10]; cvtsd2ss xmm0, [rbx+0x10]
        assert_eq!(
            bytes(|a| a.float_convert(single, XMM0, at(RBX, 0x10))),
            [0xf3, 0x0f, 0x5a, 0x43, 0x10]
        );
        assert_eq!(
            bytes(|a| a.float_convert(double, XMM0, at(RBX, 0x10))),
            [0xf2, 0x0f, 0x5a, 0x43, 0x10]
        );
        // ldmxcsr [r14+0x70]; stmxcsr [r14+0x74]
        assert_eq!(
            bytes(|a| a.ldmxcsr(at(R14, 0x70))),
            [0x41, 0x0f, 0xae, 0x56, 0x70]
        );
        assert_eq!(
            bytes(|a| a.stmxcsr(at(R14, 0x74))),
            [0x41, 0x0f, 0xae, 0x5e, 0x74]
        );
        // xorps xmm0, xmm0
        assert_eq!(bytes(|a| a.float_xor_self(XMM0)), [0x0f, 0x57, 0xc0]);
        // mov dword [rbx+0x114], -1
        assert_eq!(
            bytes(|a| a.store_imm32(at(RBX, 0x114), -1)),
            [0xc7, 0x83, 0x14, 0x01, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        // cmp dword [rbx+0x114], -1 (the imm32 form)
        assert_eq!(
            bytes(|a| a.cmp_mem32_imm(at(RBX, 0x114), -1)),
            [0x81, 0xbb, 0x14, 0x01, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        // test byte [rbx+0x201], 0x60
        assert_eq!(
            bytes(|a| a.test_mem_byte(at(RBX, 0x201), 0x60)),
            [0xf6, 0x83, 0x01, 0x02, 0, 0, 0x60]
        );
        // movsxd rax, dword [rbx+0x110]
        assert_eq!(
            bytes(|a| a.load_sign_extended32(RAX, at(RBX, 0x110))),
            [0x48, 0x63, 0x83, 0x10, 0x01, 0, 0]
        );
        // not ecx
        assert_eq!(
            bytes(|a| a.unary(Unary::Not, Width::W32, RCX)),
            [0xf7, 0xd1]
        );
    }
}
