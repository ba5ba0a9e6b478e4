//! Built-in guest programs, assembled with the hart's own encoder (no cross toolchain).
//!
//! They serve the `understudy demo` command and the determinism tests: small M-mode programs
//! for the `virt` memory map that read console input and the clock, so their state depends
//! on exactly the inputs that pass through the nondeterminism port.

use alloc::vec::Vec;

use understudy_cpu::{encode, Instruction, Op};

use crate::loader::elf_executable;
use crate::RAM_BASE;

/// ABI register numbers (RISC-V psABI, integer register convention).
pub mod reg {
    pub const ZERO: u8 = 0;
    pub const RA: u8 = 1;
    pub const T0: u8 = 5;
    pub const T1: u8 = 6;
    pub const T2: u8 = 7;
    pub const S0: u8 = 8;
    pub const S1: u8 = 9;
    pub const A0: u8 = 10;
    pub const A1: u8 = 11;
    pub const S2: u8 = 18;
    pub const S3: u8 = 19;
    pub const S4: u8 = 20;
    pub const T3: u8 = 28;
    pub const T4: u8 = 29;
    pub const T5: u8 = 30;
}

/// A label: a position in the program, bound once.
#[derive(Clone, Copy)]
pub struct Label(usize);

/// A two-pass-free assembler: branches to labels are patched when the program is finished.
#[derive(Default)]
pub struct Assembler {
    words: Vec<Instruction>,
    labels: Vec<Option<usize>>,
    /// (instruction index, label) pairs whose offset is filled in by `finish`.
    fixups: Vec<(usize, Label)>,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    pub fn bind(&mut self, label: Label) {
        assert!(self.labels[label.0].is_none(), "label bound twice");
        self.labels[label.0] = Some(self.words.len());
    }

    pub fn here(&mut self) -> Label {
        let label = self.label();
        self.bind(label);
        label
    }

    fn push(&mut self, op: Op, rd: u8, rs1: u8, rs2: u8, imm: i32) {
        self.words.push(Instruction {
            rd,
            rs1,
            rs2,
            imm,
            ..Instruction::new(op)
        });
    }

    /// rd = rs1 op imm (I-type arithmetic, loads, jalr, shifts by immediate).
    pub fn i(&mut self, op: Op, rd: u8, rs1: u8, imm: i32) {
        self.push(op, rd, rs1, 0, imm);
    }

    /// rd = rs1 op rs2.
    pub fn r(&mut self, op: Op, rd: u8, rs1: u8, rs2: u8) {
        self.push(op, rd, rs1, rs2, 0);
    }

    /// Store rs2 at imm(rs1).
    pub fn store(&mut self, op: Op, rs2: u8, rs1: u8, imm: i32) {
        self.push(op, 0, rs1, rs2, imm);
    }

    /// lui/auipc with the upper 20 bits already in place (`imm` is a multiple of 4096).
    pub fn upper(&mut self, op: Op, rd: u8, imm: i32) {
        self.push(op, rd, 0, 0, imm);
    }

    /// Loads a 32-bit signed constant.
    pub fn li(&mut self, rd: u8, value: i32) {
        let low = (value << 20) >> 20;
        let high = value.wrapping_sub(low);
        if high != 0 {
            self.upper(Op::Lui, rd, high);
            self.i(Op::Addiw, rd, rd, low);
        } else {
            self.i(Op::Addi, rd, reg::ZERO, low);
        }
    }

    pub fn branch(&mut self, op: Op, rs1: u8, rs2: u8, target: Label) {
        self.fixups.push((self.words.len(), target));
        self.push(op, 0, rs1, rs2, 0);
    }

    pub fn jump(&mut self, target: Label) {
        self.jump_and_link(reg::ZERO, target);
    }

    /// `jal rd, target`: rd gets the address of the next instruction.
    pub fn jump_and_link(&mut self, rd: u8, target: Label) {
        self.fixups.push((self.words.len(), target));
        self.push(Op::Jal, rd, 0, 0, 0);
    }

    pub fn csr(&mut self, op: Op, rd: u8, rs1: u8, csr: u16) {
        self.push(op, rd, rs1, 0, i32::from(csr));
    }

    pub fn fixed(&mut self, op: Op) {
        self.push(op, 0, 0, 0, 0);
    }

    /// Encodes the program; panics on an unbound label or an unencodable instruction, both
    /// bugs in the built-in program itself.
    pub fn finish(mut self) -> Vec<u8> {
        for (index, label) in core::mem::take(&mut self.fixups) {
            let target = self.labels[label.0].expect("label never bound");
            self.words[index].imm = (target as i32 - index as i32) * 4;
        }
        self.words
            .iter()
            .flat_map(|inst| {
                encode(inst)
                    .expect("built-in program encodes")
                    .to_le_bytes()
            })
            .collect()
    }
}

/// The echo guest: reads console bytes by polling the UART, folds each into a running hash
/// stored in RAM, echoes it, and records the clock (mtime) between bytes; powers off after
/// `bytes` bytes. Its final state depends on every byte and on when each arrived.
pub fn echo_guest(bytes: i32) -> Vec<u8> {
    use reg::*;
    let mut a = Assembler::new();
    a.li(S0, 0x1000_0000); // UART
    a.upper(Op::Auipc, S3, 0x1000); // S3: a log buffer one page past the code
    a.li(S1, 0); // hash
    a.li(S2, 0); // bytes seen
    a.li(S4, 0x0200_c000); // CLINT mtime is at 0x200bff8
    let poll = a.here();
    let got_byte = a.label();
    let done = a.label();
    a.i(Op::Lbu, T0, S0, 5); // LSR
    a.i(Op::Andi, T0, T0, 1);
    a.branch(Op::Bne, T0, ZERO, got_byte);
    a.i(Op::Ld, T5, S4, -8); // mtime
    a.r(Op::Xor, S1, S1, T5);
    a.jump(poll);
    a.bind(got_byte);
    a.i(Op::Lbu, T1, S0, 0); // RBR
    a.i(Op::Slli, T2, S1, 5);
    a.r(Op::Sub, T2, T2, S1);
    a.r(Op::Add, S1, T2, T1); // hash = hash * 31 + byte
    a.store(Op::Sd, S1, S3, 0);
    a.i(Op::Addi, S3, S3, 8);
    a.store(Op::Sb, T1, S0, 0); // echo
    a.i(Op::Addi, S2, S2, 1);
    a.li(T3, bytes);
    a.branch(Op::Beq, S2, T3, done);
    a.jump(poll);
    a.bind(done);
    a.li(T0, 0x10_0000); // finisher
    a.li(T1, 0x5555);
    a.store(Op::Sw, T1, T0, 0);
    let forever = a.here();
    a.jump(forever);
    elf_executable(RAM_BASE, &a.finish())
}

/// A guest that exits through the SiFive test finisher's fail command with `code` in the
/// upper 16 bits (`0x3333 | code << 16`), as `exit(code)` of a bare-metal program does.
pub fn finisher_exit_guest(code: u16) -> Vec<u8> {
    use reg::*;
    let mut a = Assembler::new();
    a.li(T0, 0x10_0000); // finisher
    a.li(T1, (u32::from(code) << 16 | 0x3333) as i32);
    a.store(Op::Sw, T1, T0, 0);
    let forever = a.here();
    a.jump(forever);
    elf_executable(RAM_BASE, &a.finish())
}
