//! Typed RV64GC instructions: one table drives both `decode` and `encode` (Sail style).
//!
//! Every 32-bit instruction is described by its `Op` (named as the unprivileged spec
//! spells it), a `Format` saying which fields it carries, and the fixed bits. Compressed
//! instructions (unprivileged spec chapter 16) are expanded into the same `Instruction`
//! with `length_bytes == 2`.

/// The operation of an instruction, named after the specification's mnemonic.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Op {
    // RV64I (unprivileged spec chapters 2 and 5)
    Lui,
    Auipc,
    Jal,
    Jalr,
    Beq,
    Bne,
    Blt,
    Bge,
    Bltu,
    Bgeu,
    Lb,
    Lh,
    Lw,
    Ld,
    Lbu,
    Lhu,
    Lwu,
    Sb,
    Sh,
    Sw,
    Sd,
    Addi,
    Slti,
    Sltiu,
    Xori,
    Ori,
    Andi,
    Slli,
    Srli,
    Srai,
    Add,
    Sub,
    Sll,
    Slt,
    Sltu,
    Xor,
    Srl,
    Sra,
    Or,
    And,
    Addiw,
    Slliw,
    Srliw,
    Sraiw,
    Addw,
    Subw,
    Sllw,
    Srlw,
    Sraw,
    Fence,
    FenceI,
    Ecall,
    Ebreak,
    // Zicsr (chapter 9)
    Csrrw,
    Csrrs,
    Csrrc,
    Csrrwi,
    Csrrsi,
    Csrrci,
    // M (chapter 7)
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
    Mulw,
    Divw,
    Divuw,
    Remw,
    Remuw,
    // A (chapter 8)
    LrW,
    ScW,
    AmoswapW,
    AmoaddW,
    AmoxorW,
    AmoandW,
    AmoorW,
    AmominW,
    AmomaxW,
    AmominuW,
    AmomaxuW,
    LrD,
    ScD,
    AmoswapD,
    AmoaddD,
    AmoxorD,
    AmoandD,
    AmoorD,
    AmominD,
    AmomaxD,
    AmominuD,
    AmomaxuD,
    // Privileged (privileged spec 3.3, 4.2.1)
    Mret,
    Sret,
    Wfi,
    SfenceVma,
    // F (chapter 11)
    Flw,
    Fsw,
    FmaddS,
    FmsubS,
    FnmsubS,
    FnmaddS,
    FaddS,
    FsubS,
    FmulS,
    FdivS,
    FsqrtS,
    FsgnjS,
    FsgnjnS,
    FsgnjxS,
    FminS,
    FmaxS,
    FcvtWS,
    FcvtWuS,
    FcvtLS,
    FcvtLuS,
    FmvXW,
    FeqS,
    FltS,
    FleS,
    FclassS,
    FcvtSW,
    FcvtSWu,
    FcvtSL,
    FcvtSLu,
    FmvWX,
    // D (chapter 12)
    Fld,
    Fsd,
    FmaddD,
    FmsubD,
    FnmsubD,
    FnmaddD,
    FaddD,
    FsubD,
    FmulD,
    FdivD,
    FsqrtD,
    FsgnjD,
    FsgnjnD,
    FsgnjxD,
    FminD,
    FmaxD,
    FcvtSD,
    FcvtDS,
    FeqD,
    FltD,
    FleD,
    FclassD,
    FcvtWD,
    FcvtWuD,
    FcvtLD,
    FcvtLuD,
    FmvXD,
    FcvtDW,
    FcvtDWu,
    FcvtDL,
    FcvtDLu,
    FmvDX,
    /// Not a valid encoding; `imm` holds the raw instruction bits (for `mtval`).
    Illegal,
}

/// Which fields of `Instruction` an encoding carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// rd, rs1, rs2.
    R,
    /// rd, rs1, rs2 and a rounding mode in funct3.
    RRoundingMode,
    /// rd, rs1, rs2, rs3 and a rounding mode (fused multiply-add).
    R4,
    /// rd, rs1 and a rounding mode (rs2 is part of the opcode).
    R1RoundingMode,
    /// rd, rs1 (rs2 and funct3 are part of the opcode).
    R1,
    /// rd, rs1, rs2 and aq/rl in `rm` (bit 1 = aq, bit 0 = rl).
    Amo,
    /// rd, rs1 and aq/rl in `rm` (load-reserved).
    LoadReserved,
    /// rd, rs1, 12-bit signed immediate.
    I,
    /// rd, rs1, 6-bit shift amount in `imm`.
    Shift64,
    /// rd, rs1, 5-bit shift amount in `imm`.
    Shift32,
    /// rs1, rs2, 12-bit signed store offset.
    S,
    /// rs1, rs2, 13-bit signed even branch offset.
    B,
    /// rd, upper immediate (low 12 bits zero, sign-extended from bit 31).
    U,
    /// rd, 21-bit signed even jump offset.
    J,
    /// rd, rs1 (register or 5-bit zimm) and the CSR number (0..4096) in `imm`.
    Csr,
    /// No fields at all.
    Fixed,
    /// rs1, rs2 only (sfence.vma).
    Rs1Rs2,
}

/// One decoded instruction. Unused fields are zero so that equality is structural.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// The operation.
    pub op: Op,
    /// Destination register number.
    pub rd: u8,
    /// First source register number (or the 5-bit zimm of CSR*I).
    pub rs1: u8,
    /// Second source register number.
    pub rs2: u8,
    /// Third source register number (fused multiply-add).
    pub rs3: u8,
    /// Rounding mode field (FP), or aq/rl bits (AMO, LR/SC).
    pub rm: u8,
    /// 2 for a compressed encoding, 4 otherwise.
    pub length_bytes: u8,
    /// Immediate, already sign-extended and scaled as the instruction uses it; the CSR
    /// number for Zicsr; the raw bits for `Illegal`; pred/succ/fm bits for `fence`.
    pub imm: i32,
}

impl Instruction {
    /// A 32-bit instruction with all fields zero.
    pub const fn new(op: Op) -> Self {
        Instruction {
            op,
            rd: 0,
            rs1: 0,
            rs2: 0,
            rs3: 0,
            rm: 0,
            length_bytes: 4,
            imm: 0,
        }
    }
    const fn illegal(bits: u32, length_bytes: u8) -> Self {
        Instruction {
            op: Op::Illegal,
            rd: 0,
            rs1: 0,
            rs2: 0,
            rs3: 0,
            rm: 0,
            length_bytes,
            imm: bits as i32,
        }
    }
}

const fn r(funct7: u32, funct3: u32, opcode: u32) -> u32 {
    funct7 << 25 | funct3 << 12 | opcode
}
const fn i(funct3: u32, opcode: u32) -> u32 {
    funct3 << 12 | opcode
}
const fn fp(funct7: u32, rs2: u32, funct3: u32) -> u32 {
    funct7 << 25 | rs2 << 20 | funct3 << 12 | 0x53
}
const fn amo(funct5: u32, funct3: u32) -> u32 {
    funct5 << 27 | funct3 << 12 | 0x2f
}

const LOAD: u32 = 0x03;
const LOAD_FP: u32 = 0x07;
const MISC_MEM: u32 = 0x0f;
const OP_IMM: u32 = 0x13;
const OP_IMM_32: u32 = 0x1b;
const STORE: u32 = 0x23;
const STORE_FP: u32 = 0x27;
const OP: u32 = 0x33;
const OP_32: u32 = 0x3b;
const BRANCH: u32 = 0x63;
const SYSTEM: u32 = 0x73;

use Format as F;
use Op::*;

/// The encoding table: operation, format, fixed bits (unprivileged spec chapter 24).
pub const TABLE: &[(Op, Format, u32)] = &[
    (Lui, F::U, 0x37),
    (Auipc, F::U, 0x17),
    (Jal, F::J, 0x6f),
    (Jalr, F::I, i(0, 0x67)),
    (Beq, F::B, i(0, BRANCH)),
    (Bne, F::B, i(1, BRANCH)),
    (Blt, F::B, i(4, BRANCH)),
    (Bge, F::B, i(5, BRANCH)),
    (Bltu, F::B, i(6, BRANCH)),
    (Bgeu, F::B, i(7, BRANCH)),
    (Lb, F::I, i(0, LOAD)),
    (Lh, F::I, i(1, LOAD)),
    (Lw, F::I, i(2, LOAD)),
    (Ld, F::I, i(3, LOAD)),
    (Lbu, F::I, i(4, LOAD)),
    (Lhu, F::I, i(5, LOAD)),
    (Lwu, F::I, i(6, LOAD)),
    (Sb, F::S, i(0, STORE)),
    (Sh, F::S, i(1, STORE)),
    (Sw, F::S, i(2, STORE)),
    (Sd, F::S, i(3, STORE)),
    (Addi, F::I, i(0, OP_IMM)),
    (Slti, F::I, i(2, OP_IMM)),
    (Sltiu, F::I, i(3, OP_IMM)),
    (Xori, F::I, i(4, OP_IMM)),
    (Ori, F::I, i(6, OP_IMM)),
    (Andi, F::I, i(7, OP_IMM)),
    (Slli, F::Shift64, i(1, OP_IMM)),
    (Srli, F::Shift64, i(5, OP_IMM)),
    (Srai, F::Shift64, 0x4000_0000 | i(5, OP_IMM)),
    (Add, F::R, r(0, 0, OP)),
    (Sub, F::R, r(0x20, 0, OP)),
    (Sll, F::R, r(0, 1, OP)),
    (Slt, F::R, r(0, 2, OP)),
    (Sltu, F::R, r(0, 3, OP)),
    (Xor, F::R, r(0, 4, OP)),
    (Srl, F::R, r(0, 5, OP)),
    (Sra, F::R, r(0x20, 5, OP)),
    (Or, F::R, r(0, 6, OP)),
    (And, F::R, r(0, 7, OP)),
    (Addiw, F::I, i(0, OP_IMM_32)),
    (Slliw, F::Shift32, r(0, 1, OP_IMM_32)),
    (Srliw, F::Shift32, r(0, 5, OP_IMM_32)),
    (Sraiw, F::Shift32, r(0x20, 5, OP_IMM_32)),
    (Addw, F::R, r(0, 0, OP_32)),
    (Subw, F::R, r(0x20, 0, OP_32)),
    (Sllw, F::R, r(0, 1, OP_32)),
    (Srlw, F::R, r(0, 5, OP_32)),
    (Sraw, F::R, r(0x20, 5, OP_32)),
    (Fence, F::I, i(0, MISC_MEM)),
    (FenceI, F::I, i(1, MISC_MEM)),
    (Ecall, F::Fixed, 0x0000_0073),
    (Ebreak, F::Fixed, 0x0010_0073),
    (Csrrw, F::Csr, i(1, SYSTEM)),
    (Csrrs, F::Csr, i(2, SYSTEM)),
    (Csrrc, F::Csr, i(3, SYSTEM)),
    (Csrrwi, F::Csr, i(5, SYSTEM)),
    (Csrrsi, F::Csr, i(6, SYSTEM)),
    (Csrrci, F::Csr, i(7, SYSTEM)),
    (Mul, F::R, r(1, 0, OP)),
    (Mulh, F::R, r(1, 1, OP)),
    (Mulhsu, F::R, r(1, 2, OP)),
    (Mulhu, F::R, r(1, 3, OP)),
    (Div, F::R, r(1, 4, OP)),
    (Divu, F::R, r(1, 5, OP)),
    (Rem, F::R, r(1, 6, OP)),
    (Remu, F::R, r(1, 7, OP)),
    (Mulw, F::R, r(1, 0, OP_32)),
    (Divw, F::R, r(1, 4, OP_32)),
    (Divuw, F::R, r(1, 5, OP_32)),
    (Remw, F::R, r(1, 6, OP_32)),
    (Remuw, F::R, r(1, 7, OP_32)),
    (LrW, F::LoadReserved, amo(0x02, 2)),
    (ScW, F::Amo, amo(0x03, 2)),
    (AmoswapW, F::Amo, amo(0x01, 2)),
    (AmoaddW, F::Amo, amo(0x00, 2)),
    (AmoxorW, F::Amo, amo(0x04, 2)),
    (AmoandW, F::Amo, amo(0x0c, 2)),
    (AmoorW, F::Amo, amo(0x08, 2)),
    (AmominW, F::Amo, amo(0x10, 2)),
    (AmomaxW, F::Amo, amo(0x14, 2)),
    (AmominuW, F::Amo, amo(0x18, 2)),
    (AmomaxuW, F::Amo, amo(0x1c, 2)),
    (LrD, F::LoadReserved, amo(0x02, 3)),
    (ScD, F::Amo, amo(0x03, 3)),
    (AmoswapD, F::Amo, amo(0x01, 3)),
    (AmoaddD, F::Amo, amo(0x00, 3)),
    (AmoxorD, F::Amo, amo(0x04, 3)),
    (AmoandD, F::Amo, amo(0x0c, 3)),
    (AmoorD, F::Amo, amo(0x08, 3)),
    (AmominD, F::Amo, amo(0x10, 3)),
    (AmomaxD, F::Amo, amo(0x14, 3)),
    (AmominuD, F::Amo, amo(0x18, 3)),
    (AmomaxuD, F::Amo, amo(0x1c, 3)),
    (Mret, F::Fixed, 0x3020_0073),
    (Sret, F::Fixed, 0x1020_0073),
    (Wfi, F::Fixed, 0x1050_0073),
    (SfenceVma, F::Rs1Rs2, 0x1200_0073),
    (Flw, F::I, i(2, LOAD_FP)),
    (Fsw, F::S, i(2, STORE_FP)),
    (FmaddS, F::R4, 0x43),
    (FmsubS, F::R4, 0x47),
    (FnmsubS, F::R4, 0x4b),
    (FnmaddS, F::R4, 0x4f),
    (FaddS, F::RRoundingMode, fp(0x00, 0, 0)),
    (FsubS, F::RRoundingMode, fp(0x04, 0, 0)),
    (FmulS, F::RRoundingMode, fp(0x08, 0, 0)),
    (FdivS, F::RRoundingMode, fp(0x0c, 0, 0)),
    (FsqrtS, F::R1RoundingMode, fp(0x2c, 0, 0)),
    (FsgnjS, F::R, fp(0x10, 0, 0)),
    (FsgnjnS, F::R, fp(0x10, 0, 1)),
    (FsgnjxS, F::R, fp(0x10, 0, 2)),
    (FminS, F::R, fp(0x14, 0, 0)),
    (FmaxS, F::R, fp(0x14, 0, 1)),
    (FcvtWS, F::R1RoundingMode, fp(0x60, 0, 0)),
    (FcvtWuS, F::R1RoundingMode, fp(0x60, 1, 0)),
    (FcvtLS, F::R1RoundingMode, fp(0x60, 2, 0)),
    (FcvtLuS, F::R1RoundingMode, fp(0x60, 3, 0)),
    (FmvXW, F::R1, fp(0x70, 0, 0)),
    (FeqS, F::R, fp(0x50, 0, 2)),
    (FltS, F::R, fp(0x50, 0, 1)),
    (FleS, F::R, fp(0x50, 0, 0)),
    (FclassS, F::R1, fp(0x70, 0, 1)),
    (FcvtSW, F::R1RoundingMode, fp(0x68, 0, 0)),
    (FcvtSWu, F::R1RoundingMode, fp(0x68, 1, 0)),
    (FcvtSL, F::R1RoundingMode, fp(0x68, 2, 0)),
    (FcvtSLu, F::R1RoundingMode, fp(0x68, 3, 0)),
    (FmvWX, F::R1, fp(0x78, 0, 0)),
    (Fld, F::I, i(3, LOAD_FP)),
    (Fsd, F::S, i(3, STORE_FP)),
    (FmaddD, F::R4, 0x0200_0043),
    (FmsubD, F::R4, 0x0200_0047),
    (FnmsubD, F::R4, 0x0200_004b),
    (FnmaddD, F::R4, 0x0200_004f),
    (FaddD, F::RRoundingMode, fp(0x01, 0, 0)),
    (FsubD, F::RRoundingMode, fp(0x05, 0, 0)),
    (FmulD, F::RRoundingMode, fp(0x09, 0, 0)),
    (FdivD, F::RRoundingMode, fp(0x0d, 0, 0)),
    (FsqrtD, F::R1RoundingMode, fp(0x2d, 0, 0)),
    (FsgnjD, F::R, fp(0x11, 0, 0)),
    (FsgnjnD, F::R, fp(0x11, 0, 1)),
    (FsgnjxD, F::R, fp(0x11, 0, 2)),
    (FminD, F::R, fp(0x15, 0, 0)),
    (FmaxD, F::R, fp(0x15, 0, 1)),
    (FcvtSD, F::R1RoundingMode, fp(0x20, 1, 0)),
    (FcvtDS, F::R1RoundingMode, fp(0x21, 0, 0)),
    (FeqD, F::R, fp(0x51, 0, 2)),
    (FltD, F::R, fp(0x51, 0, 1)),
    (FleD, F::R, fp(0x51, 0, 0)),
    (FclassD, F::R1, fp(0x71, 0, 1)),
    (FcvtWD, F::R1RoundingMode, fp(0x61, 0, 0)),
    (FcvtWuD, F::R1RoundingMode, fp(0x61, 1, 0)),
    (FcvtLD, F::R1RoundingMode, fp(0x61, 2, 0)),
    (FcvtLuD, F::R1RoundingMode, fp(0x61, 3, 0)),
    (FmvXD, F::R1, fp(0x71, 0, 0)),
    (FcvtDW, F::R1RoundingMode, fp(0x69, 0, 0)),
    (FcvtDWu, F::R1RoundingMode, fp(0x69, 1, 0)),
    (FcvtDL, F::R1RoundingMode, fp(0x69, 2, 0)),
    (FcvtDLu, F::R1RoundingMode, fp(0x69, 3, 0)),
    (FmvDX, F::R1, fp(0x79, 0, 0)),
];

/// The bits an encoding of `format` does not use for operands.
pub const fn fixed_mask(format: Format) -> u32 {
    match format {
        F::R | F::Shift32 => 0xfe00_707f,
        F::RRoundingMode => 0xfe00_007f,
        F::R4 => 0x0600_007f,
        F::R1RoundingMode => 0xfff0_007f,
        F::R1 => 0xfff0_707f,
        F::Amo => 0xf800_707f,
        F::LoadReserved => 0xf9f0_707f,
        F::I | F::S | F::B | F::Csr => 0x0000_707f,
        F::Shift64 => 0xfc00_707f,
        F::U | F::J => 0x0000_007f,
        F::Fixed => 0xffff_ffff,
        F::Rs1Rs2 => 0xfe00_7fff,
    }
}

/// The format of `op`; `None` for `Illegal`.
pub fn format_of(op: Op) -> Option<(Format, u32)> {
    TABLE.iter().find(|e| e.0 == op).map(|e| (e.1, e.2))
}

/// Index of the first table entry for each major opcode (bits 6:2), so decode scans
/// only the entries that can match. Computed at compile time.
const fn bucket_bounds() -> [(u8, u8); 32] {
    let mut out = [(0u8, 0u8); 32];
    let mut b = 0;
    while b < 32 {
        // Entries are not sorted by opcode, so record the span [first, last+1).
        let mut first = 255usize;
        let mut last = 0usize;
        let mut k = 0;
        while k < TABLE.len() {
            if (TABLE[k].2 >> 2) & 0x1f == b as u32 {
                if first == 255 {
                    first = k;
                }
                last = k + 1;
            }
            k += 1;
        }
        if first == 255 {
            first = 0;
        }
        out[b] = (first as u8, last as u8);
        b += 1;
    }
    out
}
const BUCKETS: [(u8, u8); 32] = bucket_bounds();

const fn sext(value: u32, bits: u32) -> i32 {
    ((value << (32 - bits)) as i32) >> (32 - bits)
}

/// Decodes a 32-bit instruction (low two bits `11`).
pub fn decode(bits: u32) -> Instruction {
    if bits & 3 != 3 {
        return decode_compressed(bits as u16);
    }
    let (first, end) = BUCKETS[((bits >> 2) & 0x1f) as usize];
    for &(op, format, fixed) in &TABLE[first as usize..end as usize] {
        if bits & fixed_mask(format) == fixed {
            return fields(op, format, bits);
        }
    }
    Instruction::illegal(bits, 4)
}

fn fields(op: Op, format: Format, b: u32) -> Instruction {
    let rd = ((b >> 7) & 31) as u8;
    let rs1 = ((b >> 15) & 31) as u8;
    let rs2 = ((b >> 20) & 31) as u8;
    let mut inst = Instruction::new(op);
    match format {
        F::R => {
            inst.rd = rd;
            inst.rs1 = rs1;
            inst.rs2 = rs2;
        }
        F::RRoundingMode => {
            inst.rd = rd;
            inst.rs1 = rs1;
            inst.rs2 = rs2;
            inst.rm = ((b >> 12) & 7) as u8;
        }
        F::R4 => {
            inst.rd = rd;
            inst.rs1 = rs1;
            inst.rs2 = rs2;
            inst.rs3 = (b >> 27) as u8;
            inst.rm = ((b >> 12) & 7) as u8;
        }
        F::R1RoundingMode => {
            inst.rd = rd;
            inst.rs1 = rs1;
            inst.rm = ((b >> 12) & 7) as u8;
        }
        F::R1 => {
            inst.rd = rd;
            inst.rs1 = rs1;
        }
        F::Amo => {
            inst.rd = rd;
            inst.rs1 = rs1;
            inst.rs2 = rs2;
            inst.rm = ((b >> 25) & 3) as u8;
        }
        F::LoadReserved => {
            inst.rd = rd;
            inst.rs1 = rs1;
            inst.rm = ((b >> 25) & 3) as u8;
        }
        F::I => {
            inst.rd = rd;
            inst.rs1 = rs1;
            inst.imm = (b as i32) >> 20;
        }
        F::Shift64 => {
            inst.rd = rd;
            inst.rs1 = rs1;
            inst.imm = ((b >> 20) & 63) as i32;
        }
        F::Shift32 => {
            inst.rd = rd;
            inst.rs1 = rs1;
            inst.imm = ((b >> 20) & 31) as i32;
        }
        F::S => {
            inst.rs1 = rs1;
            inst.rs2 = rs2;
            inst.imm = ((b as i32) >> 25) << 5 | ((b >> 7) & 31) as i32;
        }
        F::B => {
            inst.rs1 = rs1;
            inst.rs2 = rs2;
            let v = (b >> 31) << 12
                | ((b >> 7) & 1) << 11
                | ((b >> 25) & 0x3f) << 5
                | ((b >> 8) & 0xf) << 1;
            inst.imm = sext(v, 13);
        }
        F::U => {
            inst.rd = rd;
            inst.imm = (b & 0xffff_f000) as i32;
        }
        F::J => {
            inst.rd = rd;
            let v = (b >> 31) << 20
                | ((b >> 12) & 0xff) << 12
                | ((b >> 20) & 1) << 11
                | ((b >> 21) & 0x3ff) << 1;
            inst.imm = sext(v, 21);
        }
        F::Csr => {
            inst.rd = rd;
            inst.rs1 = rs1;
            inst.imm = (b >> 20) as i32;
        }
        F::Fixed => {}
        F::Rs1Rs2 => {
            inst.rs1 = rs1;
            inst.rs2 = rs2;
        }
    }
    inst
}

/// Encodes a 32-bit instruction; `None` for `Illegal` or out-of-range fields.
pub fn encode(inst: &Instruction) -> Option<u32> {
    let (format, fixed) = format_of(inst.op)?;
    if inst.rd > 31 || inst.rs1 > 31 || inst.rs2 > 31 || inst.rs3 > 31 || inst.rm > 7 {
        return None;
    }
    let rd = (inst.rd as u32) << 7;
    let rs1 = (inst.rs1 as u32) << 15;
    let rs2 = (inst.rs2 as u32) << 20;
    let rm = (inst.rm as u32) << 12;
    let imm = inst.imm;
    let u = imm as u32;
    let fits = |bits: u32| imm == sext(u & ((1u32 << bits) - 1), bits);
    let operands = match format {
        F::R => rd | rs1 | rs2,
        F::RRoundingMode => rd | rs1 | rs2 | rm,
        F::R4 => rd | rs1 | rs2 | rm | (inst.rs3 as u32) << 27,
        F::R1RoundingMode => rd | rs1 | rm,
        F::R1 => rd | rs1,
        F::Amo | F::LoadReserved => {
            if inst.rm > 3 {
                return None;
            }
            let rs2 = if format == F::Amo { rs2 } else { 0 };
            rd | rs1 | rs2 | (inst.rm as u32) << 25
        }
        F::I => {
            if !fits(12) {
                return None;
            }
            rd | rs1 | (u & 0xfff) << 20
        }
        F::Shift64 => {
            if u > 63 {
                return None;
            }
            rd | rs1 | u << 20
        }
        F::Shift32 => {
            if u > 31 {
                return None;
            }
            rd | rs1 | u << 20
        }
        F::S => {
            if !fits(12) {
                return None;
            }
            rs1 | rs2 | (u & 0x1f) << 7 | ((u >> 5) & 0x7f) << 25
        }
        F::B => {
            if !fits(13) || u & 1 != 0 {
                return None;
            }
            rs1 | rs2
                | ((u >> 11) & 1) << 7
                | ((u >> 1) & 0xf) << 8
                | ((u >> 5) & 0x3f) << 25
                | ((u >> 12) & 1) << 31
        }
        F::U => {
            if u & 0xfff != 0 {
                return None;
            }
            rd | u
        }
        F::J => {
            if !fits(21) || u & 1 != 0 {
                return None;
            }
            rd | ((u >> 12) & 0xff) << 12
                | ((u >> 11) & 1) << 20
                | ((u >> 1) & 0x3ff) << 21
                | ((u >> 20) & 1) << 31
        }
        F::Csr => {
            if u > 0xfff {
                return None;
            }
            rd | rs1 | u << 20
        }
        F::Fixed => 0,
        F::Rs1Rs2 => rs1 | rs2,
    };
    Some(fixed | operands)
}

fn c_reg(bits: u16, low: u32) -> u8 {
    (((bits >> low) & 7) + 8) as u8
}

fn bit(bits: u16, from: u32, to: u32) -> u32 {
    (((bits >> from) & 1) as u32) << to
}

/// Expands a compressed instruction (unprivileged spec 16.3-16.8, RV64C) into the
/// equivalent 32-bit instruction with `length_bytes == 2`.
pub fn decode_compressed(bits: u16) -> Instruction {
    let illegal = Instruction::illegal(bits as u32, 2);
    let funct3 = bits >> 13;
    let rd = ((bits >> 7) & 31) as u8;
    let rs2 = ((bits >> 2) & 31) as u8;
    let imm6 = sext(bit(bits, 12, 5) | ((bits >> 2) & 31) as u32, 6);
    let mk = |op: Op, rd: u8, rs1: u8, rs2: u8, imm: i32| Instruction {
        op,
        rd,
        rs1,
        rs2,
        rs3: 0,
        rm: 0,
        length_bytes: 2,
        imm,
    };
    // Offsets of the load/store forms (16.3, 16.4).
    let ld_off = (((bits >> 10) & 7) << 3 | ((bits >> 5) & 3) << 6) as i32; // C.LD/C.SD/C.FLD/C.FSD
    let lw_off = (((bits >> 10) & 7) << 3) as i32 | bit(bits, 6, 2) as i32 | bit(bits, 5, 6) as i32;
    match (bits & 3, funct3) {
        (0, 0) => {
            let nzuimm = ((bits >> 11) & 3) << 4
                | ((bits >> 7) & 0xf) << 6
                | ((bits >> 6) & 1) << 2
                | ((bits >> 5) & 1) << 3;
            if nzuimm == 0 {
                return illegal;
            }
            mk(Addi, c_reg(bits, 2), 2, 0, nzuimm as i32)
        }
        (0, 1) => mk(Fld, c_reg(bits, 2), c_reg(bits, 7), 0, ld_off),
        (0, 2) => mk(Lw, c_reg(bits, 2), c_reg(bits, 7), 0, lw_off),
        (0, 3) => mk(Ld, c_reg(bits, 2), c_reg(bits, 7), 0, ld_off),
        (0, 5) => mk(Fsd, 0, c_reg(bits, 7), c_reg(bits, 2), ld_off),
        (0, 6) => mk(Sw, 0, c_reg(bits, 7), c_reg(bits, 2), lw_off),
        (0, 7) => mk(Sd, 0, c_reg(bits, 7), c_reg(bits, 2), ld_off),
        (1, 0) => mk(Addi, rd, rd, 0, imm6),
        (1, 1) => {
            if rd == 0 {
                return illegal;
            }
            mk(Addiw, rd, rd, 0, imm6)
        }
        (1, 2) => mk(Addi, rd, 0, 0, imm6),
        (1, 3) => {
            if rd == 2 {
                let v = bit(bits, 12, 9)
                    | bit(bits, 6, 4)
                    | bit(bits, 5, 6)
                    | (((bits >> 3) & 3) as u32) << 7
                    | bit(bits, 2, 5);
                let imm = sext(v, 10);
                if imm == 0 {
                    return illegal;
                }
                mk(Addi, 2, 2, 0, imm)
            } else {
                if imm6 == 0 {
                    return illegal;
                }
                mk(Lui, rd, 0, 0, imm6 << 12)
            }
        }
        (1, 4) => {
            let rdp = c_reg(bits, 7);
            let shamt = (bit(bits, 12, 5) | ((bits >> 2) & 31) as u32) as i32;
            match (bits >> 10) & 3 {
                0 => mk(Srli, rdp, rdp, 0, shamt),
                1 => mk(Srai, rdp, rdp, 0, shamt),
                2 => mk(Andi, rdp, rdp, 0, imm6),
                _ => {
                    let rs2p = c_reg(bits, 2);
                    let op = match ((bits >> 12) & 1, (bits >> 5) & 3) {
                        (0, 0) => Sub,
                        (0, 1) => Xor,
                        (0, 2) => Or,
                        (0, 3) => And,
                        (1, 0) => Subw,
                        (1, 1) => Addw,
                        _ => return illegal,
                    };
                    mk(op, rdp, rdp, rs2p, 0)
                }
            }
        }
        (1, 5) => {
            let v = bit(bits, 12, 11)
                | bit(bits, 11, 4)
                | (((bits >> 9) & 3) as u32) << 8
                | bit(bits, 8, 10)
                | bit(bits, 7, 6)
                | bit(bits, 6, 7)
                | (((bits >> 3) & 7) as u32) << 1
                | bit(bits, 2, 5);
            mk(Jal, 0, 0, 0, sext(v, 12))
        }
        (1, 6) | (1, 7) => {
            let v = bit(bits, 12, 8)
                | (((bits >> 10) & 3) as u32) << 3
                | (((bits >> 5) & 3) as u32) << 6
                | (((bits >> 3) & 3) as u32) << 1
                | bit(bits, 2, 5);
            let op = if funct3 == 6 { Beq } else { Bne };
            mk(op, 0, c_reg(bits, 7), 0, sext(v, 9))
        }
        (2, 0) => {
            let shamt = (bit(bits, 12, 5) | rs2 as u32) as i32;
            mk(Slli, rd, rd, 0, shamt)
        }
        (2, 1) => {
            let off = bit(bits, 12, 5)
                | (((bits >> 5) & 3) as u32) << 3
                | (((bits >> 2) & 7) as u32) << 6;
            mk(Fld, rd, 2, 0, off as i32)
        }
        (2, 2) => {
            if rd == 0 {
                return illegal;
            }
            let off = bit(bits, 12, 5)
                | (((bits >> 4) & 7) as u32) << 2
                | (((bits >> 2) & 3) as u32) << 6;
            mk(Lw, rd, 2, 0, off as i32)
        }
        (2, 3) => {
            if rd == 0 {
                return illegal;
            }
            let off = bit(bits, 12, 5)
                | (((bits >> 5) & 3) as u32) << 3
                | (((bits >> 2) & 7) as u32) << 6;
            mk(Ld, rd, 2, 0, off as i32)
        }
        (2, 4) => {
            let high = (bits >> 12) & 1;
            match (high, rd, rs2) {
                (0, 0, 0) => illegal,
                (0, _, 0) => mk(Jalr, 0, rd, 0, 0),
                (0, _, _) => mk(Add, rd, 0, rs2, 0),
                (1, 0, 0) => mk(Ebreak, 0, 0, 0, 0),
                (1, _, 0) => mk(Jalr, 1, rd, 0, 0),
                _ => mk(Add, rd, rd, rs2, 0),
            }
        }
        (2, 5) => {
            let off = (((bits >> 10) & 7) << 3 | ((bits >> 7) & 7) << 6) as i32;
            mk(Fsd, 0, 2, rs2, off)
        }
        (2, 6) => {
            let off = (((bits >> 9) & 0xf) << 2 | ((bits >> 7) & 3) << 6) as i32;
            mk(Sw, 0, 2, rs2, off)
        }
        (2, 7) => {
            let off = (((bits >> 10) & 7) << 3 | ((bits >> 7) & 7) << 6) as i32;
            mk(Sd, 0, 2, rs2, off)
        }
        _ => illegal,
    }
}
