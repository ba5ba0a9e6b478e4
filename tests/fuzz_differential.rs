//! Seeded differential fuzzing of the hart against QEMU: random valid straight-line RV64GC
//! programs (integer, M, A on a scratch buffer, F/D in every rounding mode, compressed,
//! bounded forward branches, and instructions that trap) run in M, S or U mode in both
//! machines; every x and f register, fcsr, the log of traps taken and the scratch buffer are
//! printed at the end and must match exactly. Each program also runs translated
//! (`--translate-after 1`), which must match QEMU too and pass through the interpreter's state digests.
//!
//! `UNDERSTUDY_FUZZ_SEED` (a number, or `random`) picks the seed, `UNDERSTUDY_FUZZ_PROGRAMS`
//! how many programs, `UNDERSTUDY_FUZZ_ONLY` a single program index to reproduce.

#[path = "../appliance/guest/isa/harness.rs"]
mod harness;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SEED_DEFAULT: u64 = 0x5eed_2026_0001;
const PROGRAMS_DEFAULT: u64 = 50;
/// Generated units per program; a unit is one to three instructions.
const UNITS_PER_PROGRAM: usize = 2000;
/// Bytes of the scratch buffer; sp points at its middle and is never written.
const SCRATCH_BYTES: i64 = 2048;
/// Privilege modes the body may run in (mstatus.MPP encodings).
const MODE_U: u64 = 0;
const MODE_S: u64 = 1;
const MODE_M: u64 = 3;
/// Traps recorded in full per program (all are counted).
const TRAP_LOG_ENTRIES: u64 = 64;
/// Unmapped in the QEMU virt memory map: accesses raise access faults.
const UNMAPPED_ADDRESS: u64 = 0x0080_0000;

/// Entry in M-mode: trap vector, FP on, one PMP entry opening all memory to S and U.
const PRELUDE: &str = ".option norelax
.section .text
.globl _start
_start:
    la t0, trap
    csrw mtvec, t0
    la t0, trap_save
    csrw mscratch, t0
    li t0, 0x2000
    csrs mstatus, t0
    li t0, -1
    srli t0, t0, 10
    csrw pmpaddr0, t0
    li t0, 0x1f
    csrw pmpcfg0, t0
";

/// Share of integer loads and stores given an arbitrary (usually misaligned) offset.
const MISALIGNED_PERCENT: u64 = 10;
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const INSTRUCTIONS_MAX: u64 = 10_000_000;

/// SplitMix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1) as u64) as i64
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Integer destination registers: everything but x0, sp (scratch base) and x31 (address temp).
fn int_rd(rng: &mut Rng) -> u32 {
    let candidates: Vec<u32> = (1..31).filter(|&r| r != 2).collect();
    *rng.pick(&candidates)
}
fn int_rs(rng: &mut Rng) -> u32 {
    rng.below(32) as u32
}
/// The compressed register set x8..x15.
fn creg(rng: &mut Rng) -> u32 {
    8 + rng.below(8) as u32
}
fn freg(rng: &mut Rng) -> u32 {
    rng.below(32) as u32
}

const ROUNDING: [&str; 6] = ["rne", "rtz", "rdn", "rup", "rmm", "dyn"];

const SPECIAL_INTS: [u64; 10] = [
    0,
    1,
    u64::MAX,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0xffff_ffff_8000_0000,
    31,
];
const SPECIAL_DOUBLES: [u64; 12] = [
    0,
    0x8000_0000_0000_0000,
    0x3ff0_0000_0000_0000,
    0xbff0_0000_0000_0000,
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000,
    0x7ff8_0000_0000_0000,
    0x7ff0_0000_0000_0001,
    0x0000_0000_0000_0001,
    0x7fef_ffff_ffff_ffff,
    0x0010_0000_0000_0000,
    0x41e0_0000_0000_0000,
];
const SPECIAL_SINGLES: [u32; 10] = [
    0,
    0x8000_0000,
    0x3f80_0000,
    0xbf80_0000,
    0x7f80_0000,
    0xff80_0000,
    0x7fc0_0000,
    0x7f80_0001,
    1,
    0x4f00_0000,
];

fn random_int(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => *rng.pick(&SPECIAL_INTS),
        1 => rng.range(-100, 100) as u64,
        _ => rng.next(),
    }
}

fn random_float_bits(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => *rng.pick(&SPECIAL_DOUBLES),
        1 => 0xffff_ffff_0000_0000 | u64::from(*rng.pick(&SPECIAL_SINGLES)),
        2 => 0xffff_ffff_0000_0000 | (rng.next() & 0xffff_ffff),
        // Small doubles so arithmetic stays in interesting ranges.
        3 => f64::to_bits(rng.range(-1000, 1000) as f64 / 8.0),
        4 => 0xffff_ffff_0000_0000 | u64::from(f32::to_bits(rng.range(-1000, 1000) as f32 / 8.0)),
        _ => rng.next(),
    }
}

/// One program's assembly text.
struct Generator {
    rng: Rng,
    body: String,
    labels: u64,
    /// Forward branch targets still to be placed: (label, units left before it).
    pending: Vec<(u64, u32)>,
    /// The privilege mode the body runs in.
    mode: u64,
}

impl Generator {
    fn emit(&mut self, line: &str) {
        self.body.push_str("    ");
        self.body.push_str(line);
        self.body.push('\n');
    }

    /// An sp-relative offset inside the scratch buffer, aligned to `align` bytes.
    fn offset(&mut self, align: i64) -> i64 {
        let half = SCRATCH_BYTES / 2;
        let offset = self.rng.range(-half, half - align);
        offset - offset.rem_euclid(align)
    }

    fn unit(&mut self) {
        let class = self.rng.below(100);
        match class {
            0..=17 => self.integer_register(),
            18..=29 => self.integer_immediate(),
            30..=35 => self.multiply_divide(),
            36..=43 => self.load_store(),
            44..=49 => self.atomic(),
            50..=71 => self.float(),
            72..=89 => self.compressed(),
            90..=94 => self.forward_branch(),
            95..=96 => self.trap(),
            _ => self.misc(),
        }
    }

    fn integer_register(&mut self) {
        let op = *self.rng.pick(&[
            "add", "sub", "sll", "slt", "sltu", "xor", "srl", "sra", "or", "and", "addw", "subw",
            "sllw", "srlw", "sraw",
        ]);
        let (rd, a, b) = (
            int_rd(&mut self.rng),
            int_rs(&mut self.rng),
            int_rs(&mut self.rng),
        );
        self.emit(&format!("{op} x{rd}, x{a}, x{b}"));
    }

    fn integer_immediate(&mut self) {
        let rd = int_rd(&mut self.rng);
        let rs = int_rs(&mut self.rng);
        match self.rng.below(6) {
            0 => {
                let op = *self
                    .rng
                    .pick(&["addi", "slti", "sltiu", "xori", "ori", "andi", "addiw"]);
                let imm = self.rng.range(-2048, 2047);
                self.emit(&format!("{op} x{rd}, x{rs}, {imm}"));
            }
            1 => {
                let op = *self.rng.pick(&["slli", "srli", "srai"]);
                let shamt = self.rng.below(64);
                self.emit(&format!("{op} x{rd}, x{rs}, {shamt}"));
            }
            2 => {
                let op = *self.rng.pick(&["slliw", "srliw", "sraiw"]);
                let shamt = self.rng.below(32);
                self.emit(&format!("{op} x{rd}, x{rs}, {shamt}"));
            }
            3 => {
                let imm = self.rng.below(1 << 20);
                self.emit(&format!("lui x{rd}, {imm:#x}"));
            }
            4 => {
                let imm = self.rng.below(1 << 20);
                self.emit(&format!("auipc x{rd}, {imm:#x}"));
            }
            _ => {
                let imm = self.rng.range(-2048, 2047);
                self.emit(&format!("addi x{rd}, x{rs}, {imm}"));
            }
        }
    }

    fn multiply_divide(&mut self) {
        let op = *self.rng.pick(&[
            "mul", "mulh", "mulhsu", "mulhu", "div", "divu", "rem", "remu", "mulw", "divw",
            "divuw", "remw", "remuw",
        ]);
        let (rd, a, b) = (
            int_rd(&mut self.rng),
            int_rs(&mut self.rng),
            int_rs(&mut self.rng),
        );
        self.emit(&format!("{op} x{rd}, x{a}, x{b}"));
    }

    fn load_store(&mut self) {
        let (op, width, store) = *self.rng.pick(&[
            ("lb", 1, false),
            ("lbu", 1, false),
            ("lh", 2, false),
            ("lhu", 2, false),
            ("lw", 4, false),
            ("lwu", 4, false),
            ("ld", 8, false),
            ("sb", 1, true),
            ("sh", 2, true),
            ("sw", 4, true),
            ("sd", 8, true),
        ]);
        // Some scalar accesses are misaligned: QEMU performs them, and so must we.
        let alignment = if self.rng.chance(MISALIGNED_PERCENT) {
            1
        } else {
            width
        };
        let offset = self.offset(alignment);
        if store {
            let rs = int_rs(&mut self.rng);
            self.emit(&format!("{op} x{rs}, {offset}(sp)"));
        } else {
            let rd = int_rd(&mut self.rng);
            self.emit(&format!("{op} x{rd}, {offset}(sp)"));
        }
    }

    fn atomic(&mut self) {
        let double = self.rng.chance(50);
        let (suffix, align) = if double { ("d", 8) } else { ("w", 4) };
        let ordering = *self.rng.pick(&["", ".aq", ".rl", ".aqrl"]);
        let offset = self.offset(align);
        self.emit(&format!("addi x31, sp, {offset}"));
        let rd = int_rd(&mut self.rng);
        let rs2 = int_rs(&mut self.rng);
        if self.rng.chance(20) {
            // LR immediately followed by SC to the same address: the SC succeeds in both.
            let rd2 = int_rd(&mut self.rng);
            self.emit(&format!("lr.{suffix}{ordering} x{rd}, (x31)"));
            self.emit(&format!("sc.{suffix}{ordering} x{rd2}, x{rs2}, (x31)"));
        } else {
            let op = *self.rng.pick(&[
                "amoswap", "amoadd", "amoxor", "amoand", "amoor", "amomin", "amomax", "amominu",
                "amomaxu",
            ]);
            self.emit(&format!("{op}.{suffix}{ordering} x{rd}, x{rs2}, (x31)"));
        }
    }

    fn float(&mut self) {
        let precision = if self.rng.chance(50) { "s" } else { "d" };
        let rm = *self.rng.pick(&ROUNDING);
        let (fd, f1, f2, f3) = (
            freg(&mut self.rng),
            freg(&mut self.rng),
            freg(&mut self.rng),
            freg(&mut self.rng),
        );
        match self.rng.below(12) {
            0..=2 => {
                let op = *self.rng.pick(&["fadd", "fsub", "fmul", "fdiv"]);
                self.emit(&format!("{op}.{precision} f{fd}, f{f1}, f{f2}, {rm}"));
            }
            3 => self.emit(&format!("fsqrt.{precision} f{fd}, f{f1}, {rm}")),
            4 => {
                let op = *self.rng.pick(&["fmadd", "fmsub", "fnmsub", "fnmadd"]);
                self.emit(&format!(
                    "{op}.{precision} f{fd}, f{f1}, f{f2}, f{f3}, {rm}"
                ));
            }
            5 => {
                let op = *self
                    .rng
                    .pick(&["fmin", "fmax", "fsgnj", "fsgnjn", "fsgnjx"]);
                self.emit(&format!("{op}.{precision} f{fd}, f{f1}, f{f2}"));
            }
            6 => {
                let op = *self.rng.pick(&["feq", "flt", "fle"]);
                let rd = int_rd(&mut self.rng);
                self.emit(&format!("{op}.{precision} x{rd}, f{f1}, f{f2}"));
            }
            7 => {
                let rd = int_rd(&mut self.rng);
                let integer = *self.rng.pick(&["w", "wu", "l", "lu"]);
                if self.rng.chance(50) {
                    self.emit(&format!("fcvt.{integer}.{precision} x{rd}, f{f1}, {rm}"));
                } else if precision == "d" && (integer == "w" || integer == "wu") {
                    // Exact: no rounding mode operand.
                    let rs = int_rs(&mut self.rng);
                    self.emit(&format!("fcvt.d.{integer} f{fd}, x{rs}"));
                } else {
                    let rs = int_rs(&mut self.rng);
                    self.emit(&format!("fcvt.{precision}.{integer} f{fd}, x{rs}, {rm}"));
                }
            }
            8 => {
                if self.rng.chance(50) {
                    self.emit(&format!("fcvt.s.d f{fd}, f{f1}, {rm}"));
                } else {
                    self.emit(&format!("fcvt.d.s f{fd}, f{f1}"));
                }
            }
            9 => {
                let rd = int_rd(&mut self.rng);
                let rs = int_rs(&mut self.rng);
                match self.rng.below(5) {
                    0 => self.emit(&format!("fmv.x.w x{rd}, f{f1}")),
                    1 => self.emit(&format!("fmv.x.d x{rd}, f{f1}")),
                    2 => self.emit(&format!("fmv.w.x f{fd}, x{rs}")),
                    3 => self.emit(&format!("fmv.d.x f{fd}, x{rs}")),
                    _ => self.emit(&format!("fclass.{precision} x{rd}, f{f1}")),
                }
            }
            _ => {
                let (op, width) = *self
                    .rng
                    .pick(&[("flw", 4), ("fld", 8), ("fsw", 4), ("fsd", 8)]);
                let offset = self.offset(width);
                self.emit(&format!("{op} f{fd}, {offset}(sp)"));
            }
        }
    }

    fn compressed(&mut self) {
        let rd = int_rd(&mut self.rng);
        let rs = int_rd(&mut self.rng);
        let (cd, cs) = (creg(&mut self.rng), creg(&mut self.rng));
        let nonzero6 = {
            let value = self.rng.range(-32, 30);
            if value >= 0 {
                value + 1
            } else {
                value
            }
        };
        match self.rng.below(20) {
            0 => self.emit(&format!("c.addi x{rd}, {nonzero6}")),
            1 => {
                let imm = self.rng.range(-32, 31);
                self.emit(&format!("c.addiw x{rd}, {imm}"));
            }
            2 => {
                let imm = self.rng.range(-32, 31);
                self.emit(&format!("c.li x{rd}, {imm}"));
            }
            3 => {
                let imm = if self.rng.chance(50) {
                    self.rng.range(1, 31)
                } else {
                    self.rng.range(0xfffe0, 0xfffff)
                };
                self.emit(&format!("c.lui x{rd}, {imm:#x}"));
            }
            4 => {
                let op = *self.rng.pick(&["c.srli", "c.srai"]);
                let shamt = self.rng.range(1, 63);
                self.emit(&format!("{op} x{cd}, {shamt}"));
            }
            5 => {
                let imm = self.rng.range(-32, 31);
                self.emit(&format!("c.andi x{cd}, {imm}"));
            }
            6 | 7 => {
                let op = *self
                    .rng
                    .pick(&["c.sub", "c.xor", "c.or", "c.and", "c.subw", "c.addw"]);
                self.emit(&format!("{op} x{cd}, x{cs}"));
            }
            8 => {
                let shamt = self.rng.range(1, 63);
                self.emit(&format!("c.slli x{rd}, {shamt}"));
            }
            9 => self.emit(&format!("c.mv x{rd}, x{rs}")),
            10 => self.emit(&format!("c.add x{rd}, x{rs}")),
            11 => {
                // sp-relative forms reach the upper half of the scratch buffer.
                let (op, scale, max, float, store) = *self.rng.pick(&[
                    ("c.lwsp", 4, 63, false, false),
                    ("c.ldsp", 8, 63, false, false),
                    ("c.fldsp", 8, 63, true, false),
                    ("c.swsp", 4, 63, false, true),
                    ("c.sdsp", 8, 63, false, true),
                    ("c.fsdsp", 8, 63, true, true),
                ]);
                let offset = self.rng.range(0, max) * scale;
                let register = if float {
                    format!("f{}", freg(&mut self.rng))
                } else if store {
                    format!("x{}", int_rs(&mut self.rng))
                } else {
                    format!("x{rd}")
                };
                self.emit(&format!("{op} {register}, {offset}(sp)"));
            }
            12 => {
                // Register-based compressed loads/stores through a base in x8..x15.
                let base = creg(&mut self.rng);
                let start = self.rng.range(0, 96) * 8;
                self.emit(&format!("addi x{base}, sp, {}", start - SCRATCH_BYTES / 2));
                let (op, scale, float) = *self.rng.pick(&[
                    ("c.lw", 4, false),
                    ("c.ld", 8, false),
                    ("c.fld", 8, true),
                    ("c.sw", 4, false),
                    ("c.sd", 8, false),
                    ("c.fsd", 8, true),
                ]);
                let offset = self.rng.range(0, 31) * scale;
                let register = if float {
                    format!("f{}", 8 + self.rng.below(8))
                } else {
                    format!("x{cs}")
                };
                self.emit(&format!("{op} {register}, {offset}(x{base})"));
            }
            13 => {
                let imm = self.rng.range(1, 255) * 4;
                self.emit(&format!("c.addi4spn x{cd}, sp, {imm}"));
            }
            14 => {
                let imm = self.rng.range(1, 31) * 16;
                self.emit(&format!("c.addi16sp sp, {imm}"));
                self.emit(&format!("c.addi16sp sp, -{imm}"));
            }
            15 => self.emit("c.nop"),
            _ => {
                let imm = self.rng.range(-32, 31);
                self.emit(&format!("c.li x{cd}, {imm}"));
            }
        }
    }

    fn forward_branch(&mut self) {
        self.labels += 1;
        let label = self.labels;
        let skip = 1 + self.rng.below(4) as u32;
        match self.rng.below(5) {
            0 | 1 => {
                let op = *self.rng.pick(&["beq", "bne", "blt", "bge", "bltu", "bgeu"]);
                let (a, b) = (int_rs(&mut self.rng), int_rs(&mut self.rng));
                self.emit(&format!("{op} x{a}, x{b}, .Lf{label}"));
            }
            2 => {
                let op = *self.rng.pick(&["c.beqz", "c.bnez"]);
                let register = creg(&mut self.rng);
                self.emit(&format!("{op} x{register}, .Lf{label}"));
            }
            3 => {
                // jal links pc + 4: an address, identical in both machines.
                let rd = int_rd(&mut self.rng);
                self.emit(&format!("jal x{rd}, .Lf{label}"));
            }
            _ => self.emit(&format!("c.j .Lf{label}")),
        }
        self.pending.push((label, skip));
    }

    /// An instruction that traps in some or all modes; the handler logs and skips it.
    fn trap(&mut self) {
        let rd = int_rd(&mut self.rng);
        match self.rng.below(11) {
            0 => self.emit("ecall"),
            1 => self.emit("ebreak"),
            2 => self.emit("c.ebreak"),
            3 => self.emit(".4byte 0x0000000b"),
            4 => self.emit(&format!("csrr x{rd}, mscratch")),
            5 => self.emit(&format!("csrr x{rd}, sscratch")),
            6 => self.emit("csrrw x0, cycle, x0"),
            7 => {
                let (f1, f2, f3) = (
                    freg(&mut self.rng),
                    freg(&mut self.rng),
                    freg(&mut self.rng),
                );
                let frm = self.rng.below(5);
                self.emit("csrwi frm, 5");
                self.emit(&format!("fadd.d f{f1}, f{f2}, f{f3}"));
                self.emit(&format!("csrwi frm, {frm}"));
            }
            8 => {
                self.emit(&format!("li x31, {UNMAPPED_ADDRESS:#x}"));
                if self.rng.chance(50) {
                    self.emit(&format!("ld x{rd}, 8(x31)"));
                } else {
                    let rs = int_rs(&mut self.rng);
                    self.emit(&format!("sw x{rs}, 4(x31)"));
                }
            }
            // mret is illegal below M and sret in U; in higher modes they would jump.
            9 if self.mode != MODE_M => self.emit("mret"),
            10 if self.mode == MODE_U => self.emit("sret"),
            _ => self.emit(&format!("csrr x{rd}, mhartid")),
        }
    }

    fn misc(&mut self) {
        match self.rng.below(4) {
            0 => {
                let frm = self.rng.below(5);
                self.emit(&format!("csrwi frm, {frm}"));
            }
            1 => {
                let rd = int_rd(&mut self.rng);
                self.emit(&format!("csrr x{rd}, fflags"));
            }
            2 => {
                let rd = int_rd(&mut self.rng);
                let bits = self.rng.below(32);
                self.emit(&format!("csrrci x{rd}, fflags, {bits}"));
            }
            _ => self.emit("fence"),
        }
    }

    /// Places the labels whose forward distance has run out.
    fn place_labels(&mut self) {
        let mut index = 0;
        while index < self.pending.len() {
            if self.pending[index].1 == 0 {
                let (label, _) = self.pending.remove(index);
                self.body.push_str(&format!(".Lf{label}:\n"));
            } else {
                self.pending[index].1 -= 1;
                index += 1;
            }
        }
    }
}

/// The fixed frame: entry, register initialisation, the generated body, the register dump
/// and printing, and a trap handler that reports any trap as a failure.
fn program_text(seed: u64) -> String {
    let mut rng = Rng(seed);
    let mut text = String::new();
    let _ = writeln!(text, "# fuzz program, seed {seed:#x}");
    // The body runs in M, S or U mode (satp = 0, so S and U see physical memory).
    let mode = *rng.pick(&[MODE_M, MODE_S, MODE_U]);
    let _ = writeln!(text, "# body runs in mode {mode}");
    text.push_str(PRELUDE);
    let _ = writeln!(text, "    li t0, {}\n    csrw fcsr, t0", rng.below(5) << 5);
    let _ = writeln!(
        text,
        "    li t0, 0x1800\n    csrc mstatus, t0\n    li t0, {}\n    csrs mstatus, t0",
        mode << 11
    );
    text.push_str("    la t0, body\n    csrw mepc, t0\n");
    // Scratch buffer contents, then the dump area right after it (reached from sp).
    let mut data = String::from(".section .data\n.balign 16\nscratch:\n");
    for _ in 0..SCRATCH_BYTES / 8 {
        let _ = writeln!(data, "    .dword {:#x}", random_int(&mut rng));
    }
    data.push_str(
        "dump:\n    .skip 8 * 66\n.balign 16\ntrap_save:\n    .skip 32\ntrap_log:\n    .skip 32 * TRAP_LOG_ENTRIES\n\
         .balign 16\nprint_stack:\n    .skip 256\nprint_stack_top:\n",
    );
    // Registers.
    for f in 0..32 {
        let _ = writeln!(
            text,
            "    li x31, {:#x}\n    fmv.d.x f{f}, x31",
            random_float_bits(&mut rng)
        );
    }
    for x in 1..32 {
        if x == 2 {
            continue;
        }
        let _ = writeln!(text, "    li x{x}, {:#x}", random_int(&mut rng));
    }
    let _ = writeln!(text, "    la sp, scratch + {}", SCRATCH_BYTES / 2);
    text.push_str("    mret\nbody:\n");
    let mut generator = Generator {
        rng,
        body: String::new(),
        labels: 0,
        pending: Vec::new(),
        mode,
    };
    for _ in 0..UNITS_PER_PROGRAM {
        generator.unit();
        generator.place_labels();
    }
    for (label, _) in std::mem::take(&mut generator.pending) {
        generator.body.push_str(&format!(".Lf{label}:\n"));
    }
    text.push_str(&generator.body);
    // Dump x1..x31, f0..f31 and fcsr through sp (legal in every mode: the dump area follows
    // the scratch buffer), then print them, the trap log and the scratch buffer.
    let dump = SCRATCH_BYTES / 2;
    for x in 1..32 {
        let _ = writeln!(text, "    sd x{x}, {}(sp)", dump + 8 * x);
    }
    for f in 0..32 {
        let _ = writeln!(text, "    fsd f{f}, {}(sp)", dump + 256 + 8 * f);
    }
    let _ = writeln!(text, "    csrr x1, fcsr\n    sd x1, {}(sp)", dump + 512);
    text.push_str(
        r#"    la sp, print_stack_top
    li s0, 1
    la s1, dump + 8
1:  li a0, 'x'
    call putc
    mv a0, s0
    call put_dec2
    ld a0, 0(s1)
    call put_value
    addi s0, s0, 1
    addi s1, s1, 8
    li t0, 32
    blt s0, t0, 1b
    li s0, 0
2:  li a0, 'f'
    call putc
    mv a0, s0
    call put_dec2
    ld a0, 0(s1)
    call put_value
    addi s0, s0, 1
    addi s1, s1, 8
    li t0, 32
    blt s0, t0, 2b
    li a0, 'c'
    call putc
    ld a0, 0(s1)
    call put_value
    # Trap log: count, then cause, epc, tval, previous mode of the first entries.
    la s1, trap_save
    li a0, 'n'
    call putc
    ld a0, 16(s1)
    call put_value
    ld s2, 16(s1)
    li t0, TRAP_LOG_ENTRIES
    bleu s2, t0, 11f
    mv s2, t0
11: la s1, trap_log
    li s0, 0
12: bgeu s0, s2, 13f
    li a0, 't'
    call putc
    mv a0, s0
    call put_dec2
    ld a0, 0(s1)
    call put_value
    li a0, 'e'
    call putc
    mv a0, s0
    call put_dec2
    ld a0, 8(s1)
    call put_value
    li a0, 'v'
    call putc
    mv a0, s0
    call put_dec2
    ld a0, 16(s1)
    call put_value
    li a0, 'p'
    call putc
    mv a0, s0
    call put_dec2
    ld a0, 24(s1)
    call put_value
    addi s0, s0, 1
    addi s1, s1, 32
    j 12b
13: la s1, scratch
    li s0, 0
3:  li a0, 'm'
    call putc
    mv a0, s0
    call put_dec2
    ld a0, 0(s1)
    call put_value
    addi s0, s0, 1
    addi s1, s1, 8
    li t0, SCRATCH_DWORDS
    blt s0, t0, 3b
    li t0, 0x100000
    li t1, 0x5555
    sw t1, 0(t0)
4:  j 4b

# Synchronous traps are logged (cause, epc, tval, previous mode) and skipped, preserving
# every register; mscratch points at trap_save. An interrupt is a failure: exit code 7.
# mtvec needs 4-byte alignment (its low bits are the mode).
    .balign 4
trap:
    csrrw x31, mscratch, x31
    sd x30, 0(x31)
    sd x29, 8(x31)
    csrr x30, mcause
    bltz x30, fatal
    ld x29, 16(x31)
    addi x30, x29, 1
    sd x30, 16(x31)
    li x30, TRAP_LOG_ENTRIES
    bgeu x29, x30, 14f
    slli x29, x29, 5
    la x30, trap_log
    add x29, x29, x30
    csrr x30, mcause
    sd x30, 0(x29)
    csrr x30, mepc
    sd x30, 8(x29)
    csrr x30, mtval
    sd x30, 16(x29)
    csrr x30, mstatus
    srli x30, x30, 11
    andi x30, x30, 3
    sd x30, 24(x29)
14: csrr x30, mepc
    lhu x29, 0(x30)
    andi x29, x29, 3
    addi x30, x30, 2
    li x31, 3
    bne x29, x31, 15f
    addi x30, x30, 2
15: csrw mepc, x30
    la x31, trap_save
    ld x30, 0(x31)
    ld x29, 8(x31)
    csrrw x31, mscratch, x31
    mret

fatal:
    la sp, print_stack_top
    li a0, 'i'
    call putc
    csrr a0, mcause
    call put_value
    li t0, 0x100000
    li t1, 0x73333
    sw t1, 0(t0)
5:  j 5b

# putc(a0): ns16550a THR once LSR.THRE is set.
putc:
    li t0, 0x10000000
6:  lbu t1, 5(t0)
    andi t1, t1, 0x20
    beqz t1, 6b
    sb a0, 0(t0)
    ret

# put_dec2(a0): decimal 0..999 without leading zeros.
put_dec2:
    addi sp, sp, -16
    sd ra, 0(sp)
    sd s2, 8(sp)
    mv s2, a0
    li t2, 100
    blt s2, t2, 7f
    divu a0, s2, t2
    addi a0, a0, '0'
    call putc
    remu s2, s2, t2
    li t2, 10
    divu a0, s2, t2
    addi a0, a0, '0'
    call putc
    j 8f
7:  li t2, 10
    blt s2, t2, 8f
    divu a0, s2, t2
    addi a0, a0, '0'
    call putc
8:  li t2, 10
    remu a0, s2, t2
    addi a0, a0, '0'
    call putc
    ld ra, 0(sp)
    ld s2, 8(sp)
    addi sp, sp, 16
    ret

# put_value(a0): " 0x" + 16 hex digits + newline.
put_value:
    addi sp, sp, -32
    sd ra, 0(sp)
    sd s2, 8(sp)
    sd s3, 16(sp)
    mv s2, a0
    li a0, ' '
    call putc
    li a0, '0'
    call putc
    li a0, 'x'
    call putc
    li s3, 60
9:  srl a0, s2, s3
    andi a0, a0, 15
    li t2, 10
    blt a0, t2, 10f
    addi a0, a0, 'a' - 10 - '0'
10: addi a0, a0, '0'
    call putc
    addi s3, s3, -4
    bgez s3, 9b
    li a0, '\n'
    call putc
    ld ra, 0(sp)
    ld s2, 8(sp)
    ld s3, 16(sp)
    addi sp, sp, 32
    ret
"#,
    );
    text.push_str(&data);
    text = text.replace("SCRATCH_DWORDS", &(SCRATCH_BYTES / 8).to_string());
    text = text.replace("TRAP_LOG_ENTRIES", &TRAP_LOG_ENTRIES.to_string());
    text
}

/// Everything at the start of RAM, where both machines enter ELF guests.
const LINKER_SCRIPT: &str =
    "ENTRY(_start)\nSECTIONS\n{\n    . = 0x80000000;\n    .text : { *(.text) }\n    \
                             .data : { *(.data) }\n    /DISCARD/ : { *(.riscv.attributes) }\n}\n";

fn build(source: &Path) -> Result<PathBuf, String> {
    let object = source.with_extension("o");
    let elf = source.with_extension("elf");
    let assembled = Command::new("riscv64-unknown-elf-as")
        .args([
            "-march=rv64gc_zicsr_zifencei",
            "-mabi=lp64d",
            "-mno-relax",
            "-o",
        ])
        .arg(&object)
        .arg(source)
        .output()
        .map_err(|error| format!("cannot run riscv64-unknown-elf-as: {error}"))?;
    if !assembled.status.success() {
        return Err(format!(
            "assembling {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&assembled.stderr)
        ));
    }
    // A script (not -Ttext) so the ELF headers are not loaded below RAM.
    let script = source.with_extension("ld");
    std::fs::write(&script, LINKER_SCRIPT)
        .map_err(|error| format!("cannot write {}: {error}", script.display()))?;
    let linked = Command::new("riscv64-unknown-elf-ld")
        .args(["-e", "_start", "--no-relax", "--no-warn-rwx-segments", "-T"])
        .arg(&script)
        .arg("-o")
        .arg(&elf)
        .arg(&object)
        .output()
        .map_err(|error| format!("cannot run riscv64-unknown-elf-ld: {error}"))?;
    if !linked.status.success() {
        return Err(format!(
            "linking {} failed:\n{}",
            object.display(),
            String::from_utf8_lossy(&linked.stderr)
        ));
    }
    Ok(elf)
}

fn parse_seed() -> u64 {
    match std::env::var("UNDERSTUDY_FUZZ_SEED") {
        Ok(text) if text == "random" => {
            // The seed only chooses programs; it never reaches a guest except through them.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos() as u64)
                .unwrap_or(SEED_DEFAULT);
            Rng(nanos).next()
        }
        Ok(text) => {
            let trimmed = text.trim();
            let parsed = match trimmed.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => trimmed.parse(),
            };
            parsed.unwrap_or_else(|_| {
                panic!("UNDERSTUDY_FUZZ_SEED={text} is not a number or `random`")
            })
        }
        Err(_) => SEED_DEFAULT,
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|text| {
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text} is not a number"))
    })
}

/// Per-program seed: a program is reproducible from (seed, index) alone.
fn program_seed(seed: u64, index: u64) -> u64 {
    Rng(seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93)).next()
}

#[test]
fn random_valid_instruction_sequences_match_qemu() {
    harness::require_tools(&[
        "riscv64-unknown-elf-as",
        "riscv64-unknown-elf-ld",
        "qemu-system-riscv64",
    ]);
    let seed = parse_seed();
    let programs = env_number("UNDERSTUDY_FUZZ_PROGRAMS").unwrap_or(PROGRAMS_DEFAULT);
    let only = env_number("UNDERSTUDY_FUZZ_ONLY");
    println!("fuzz seed {seed:#x}, {programs} programs of {UNITS_PER_PROGRAM} units");
    let dir = harness::cache_dir()
        .join("fuzz")
        .join(format!("{seed:016x}"));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
    let binary: &Path = env!("CARGO_BIN_EXE_understudy").as_ref();
    let mut failures = Vec::new();
    for index in 0..programs {
        if only.is_some_and(|only| only != index) {
            continue;
        }
        let source = dir.join(format!("program-{index:03}.S"));
        std::fs::write(&source, program_text(program_seed(seed, index)))
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", source.display()));
        let elf = build(&source)
            .unwrap_or_else(|error| panic!("seed {seed:#x} program {index}: {error}"));
        let qemu = harness::run_qemu(&elf, true, RUN_TIMEOUT);
        let ours = harness::run_understudy(binary, &elf, INSTRUCTIONS_MAX, false, RUN_TIMEOUT);
        let translated =
            harness::run_interpreted_and_translated(binary, &elf, INSTRUCTIONS_MAX, RUN_TIMEOUT)
                .and_then(|(_, translated)| {
                    harness::compare(&format!("program {index}, translated"), &qemu, &translated)
                });
        let compared = harness::compare(&format!("program {index}"), &qemu, &ours).and(translated);
        if let Err(report) = compared {
            println!("{report}");
            println!(
                "reproduce: UNDERSTUDY_FUZZ_SEED={seed:#x} UNDERSTUDY_FUZZ_ONLY={index} cargo test --release \
                 --test fuzz_differential (source: {})",
                source.display()
            );
            failures.push(index);
        } else {
            // Passing programs are not kept.
            for extension in ["S", "o", "ld", "elf"] {
                let _ = std::fs::remove_file(source.with_extension(extension));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz seed {seed:#x}: programs {failures:?} differ from QEMU (reports above; sources kept in {})",
        dir.display()
    );
}

#[test]
fn generator_is_deterministic_for_a_seed() {
    assert_eq!(
        program_text(program_seed(7, 3)),
        program_text(program_seed(7, 3))
    );
    assert_ne!(
        program_text(program_seed(7, 3)),
        program_text(program_seed(7, 4))
    );
}
