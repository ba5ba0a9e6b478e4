//! Translator tests: every run with the translator must leave the same architectural state,
//! RAM, counts and stop reasons as the interpreter, at every budget.

extern crate std;

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use std::format;

use super::ExecutableMemory;
use crate::csr::{MSTATUS_MXR, MSTATUS_SIE, MSTATUS_SUM, STIP};
use crate::csr_numbers::{
    MEPC, MIE, MSCRATCH, MSTATUS, MTVEC, SCAUSE, SEPC, SSCRATCH, SSTATUS, STVAL,
};
use crate::inst::{encode, Instruction, Op};
use crate::tests::{assemble, hart, ins, Bus, Rng, RAM_BASE};
use crate::{GuestPhysAddr, Hart, Privilege, RunOutcome};

/// Code region for tests: 4 MiB mapped read, write and execute.
struct Mapped {
    ptr: *mut u8,
    len_bytes: usize,
}

const TEST_REGION_BYTES: usize = 4 << 20;

impl Mapped {
    fn new(len_bytes: usize) -> Mapped {
        // SAFETY: an anonymous private mapping with no address hint has no preconditions;
        // the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            ptr != libc::MAP_FAILED,
            "mmap of the test code region failed"
        );
        Mapped {
            ptr: ptr.cast(),
            len_bytes,
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: ptr/len_bytes are exactly the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len_bytes) };
    }
}

// SAFETY: the mapping is owned by this object alone and moves with it.
unsafe impl Send for Mapped {}

// SAFETY: `new` maps len_bytes RWX bytes that stay mapped until drop.
unsafe impl ExecutableMemory for Mapped {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }
    fn len_bytes(&self) -> usize {
        self.len_bytes
    }
}

/// The translator forced on: every block translated the first time it runs.
fn translating(mut h: Hart) -> Hart {
    h.enable_translator_after(Box::new(Mapped::new(TEST_REGION_BYTES)), 1)
        .expect("translator available on x86-64");
    h
}

/// Unmapped physical address (outside RAM and the test bus's MMIO window).
const UNMAPPED: u64 = 0x4000_0000;
const MMIO: u64 = 0x1000_0000;
const HANDLER: u64 = RAM_BASE + 0x1000;
const CODE: u64 = RAM_BASE + 0x2000;
const SCRATCH: u64 = RAM_BASE + 0x10_000;

/// An M-mode trap handler that skips the trapping 4-byte instruction (x5 is its scratch).
fn handler() -> Vec<Instruction> {
    use Op::*;
    vec![
        ins(Csrrs, 5, 0, 0, MEPC as i32),
        ins(Addi, 5, 5, 0, 4),
        ins(Csrrw, 0, 5, 0, MEPC as i32),
        ins(Mret, 0, 0, 0, 0),
    ]
}

/// A hart with the handler installed, `program` at CODE, sp (x2) in the scratch page,
/// x3 at an unmapped address, x4 at the code and x6 at MMIO.
fn machine(program: &[Instruction]) -> Hart {
    let mut h = hart(false);
    h.write_phys(GuestPhysAddr(HANDLER), &assemble(&handler()))
        .unwrap();
    h.write_phys(GuestPhysAddr(CODE), &assemble(program))
        .unwrap();
    h.write_csr(MTVEC, HANDLER);
    h.reset(CODE, Privilege::Machine, 0, 0);
    h.set_x(2, SCRATCH + 0x800);
    h.set_x(3, UNMAPPED);
    h.set_x(4, CODE);
    h.set_x(6, MMIO);
    h
}

fn state(h: &Hart) -> Vec<u8> {
    let mut out = Vec::new();
    h.write_state(&mut out);
    out
}

/// Runs both harts with the same budgets; every outcome, the registers, CSRs and RAM must
/// agree after every run. Returns the translating hart for further checks.
fn lockstep(reference: &mut Hart, translated: &mut Hart, budgets: &[u64], what: &str) {
    let mut bus_reference = Bus::default();
    let mut bus_translated = Bus::default();
    for (step, &budget) in budgets.iter().enumerate() {
        let expected: RunOutcome = reference.run(&mut bus_reference, budget);
        let actual = translated.run(&mut bus_translated, budget);
        assert_eq!(
            actual, expected,
            "{what}: outcome of run {step} (budget {budget})"
        );
        assert_eq!(
            translated.pc(),
            reference.pc(),
            "{what}: pc after run {step} (budget {budget})"
        );
        assert!(
            state(translated) == state(reference),
            "{what}: state after run {step} (budget {budget}): {:?} vs {:?}",
            translated,
            reference
        );
        assert!(
            translated.ram() == reference.ram(),
            "{what}: RAM after run {step} (budget {budget})"
        );
        assert_eq!(
            bus_translated.stores, bus_reference.stores,
            "{what}: MMIO stores after run {step}"
        );
    }
    assert_eq!(
        translated.take_dirty_pages(),
        reference.take_dirty_pages(),
        "{what}: dirty pages"
    );
}

/// `lockstep` of `program` in a reference hart and a translating one, both set up by
/// `setup`; returns the translating hart.
fn lockstep_from(
    program: &[Instruction],
    setup: impl Fn(&mut Hart),
    budgets: &[u64],
    what: &str,
) -> Hart {
    let mut reference = machine(program);
    let mut translated = translating(machine(program));
    setup(&mut reference);
    setup(&mut translated);
    lockstep(&mut reference, &mut translated, budgets, what);
    translated
}

/// Sv39 page tables at `tests::ROOT`, and satp pointing at them: RAM identity-mapped by a
/// gigapage with PTE flags `ram_flags`, and the 4 KiB pages from `va` on (within one 2 MiB
/// region) onto the RAM pages `pages`, each with its flags.
fn map_sv39(h: &mut Hart, ram_flags: u64, va: u64, pages: &[(u64, u64)]) {
    use crate::csr_numbers::SATP;
    use crate::tests::{write_u64, ROOT};
    write_u64(h, ROOT + 2 * 8, (RAM_BASE >> 12) << 10 | ram_flags);
    if !pages.is_empty() {
        let (l1, l0) = (ROOT + 0x1000, ROOT + 0x2000);
        write_u64(h, ROOT + (va >> 30) * 8, (l1 >> 12) << 10 | 1);
        write_u64(h, l1 + ((va >> 21) & 0x1ff) * 8, (l0 >> 12) << 10 | 1);
        for (page, &(ram, flags)) in pages.iter().enumerate() {
            let entry = l0 + ((va >> 12) + page as u64) % 512 * 8;
            write_u64(h, entry, (ram >> 12) << 10 | flags);
        }
    }
    h.write_csr(SATP, 8 << 60 | ROOT >> 12);
}

#[path = "float_tests.rs"]
mod float;

fn entries(h: &Hart) -> u64 {
    h.translator_stats().expect("translator on").entries
}

#[test]
fn every_integer_operation_matches_the_interpreter_on_special_values() {
    use Op::*;
    let specials: [u64; 10] = [
        0,
        1,
        u64::MAX,
        i64::MAX as u64,
        i64::MIN as u64,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0xffff_ffff_8000_0000,
        63,
    ];
    let ops = [
        Add, Sub, Sll, Slt, Sltu, Xor, Srl, Sra, Or, And, Addw, Subw, Sllw, Srlw, Sraw, Mul, Mulh,
        Mulhsu, Mulhu, Div, Divu, Rem, Remu, Mulw, Divw, Divuw, Remw, Remuw,
    ];
    let immediates = [
        Addi, Slti, Sltiu, Xori, Ori, Andi, Slli, Srli, Srai, Addiw, Slliw, Srliw, Sraiw,
    ];
    // x10..x19 hold the specials (and x0 its zero); each result goes to x20 and is stored
    // to a fresh slot, so every result is compared, not only the last one in each register.
    // Each operation also runs with its destination as its first and as its second source
    // (copies in x21 and x22), which translated code computes in place.
    let mut program = Vec::new();
    let record = |program: &mut Vec<Instruction>, inst: Instruction| {
        program.push(inst);
        program.push(ins(Sd, 0, 2, inst.rd, 0));
        program.push(ins(Addi, 2, 2, 0, 8));
    };
    let copies = |program: &mut Vec<Instruction>, rs1: u8, rs2: u8| {
        program.push(ins(Addi, 21, rs1, 0, 0));
        program.push(ins(Addi, 22, rs2, 0, 0));
    };
    let sources: Vec<u8> = core::iter::once(0).chain(10..20).collect();
    for &rs1 in &sources {
        for &rs2 in &sources {
            for &op in &ops {
                record(&mut program, ins(op, 20, rs1, rs2, 0));
                copies(&mut program, rs1, rs2);
                record(&mut program, ins(op, 21, 21, 22, 0));
                copies(&mut program, rs1, rs2);
                record(&mut program, ins(op, 22, 21, 22, 0));
            }
        }
    }
    for i in 0..specials.len() as u8 {
        for &op in &immediates {
            for imm in [0, 1, -1, 31, 2047, -2048] {
                let imm = match op {
                    Slli | Srli | Srai => imm & 63,
                    Slliw | Srliw | Sraiw => imm & 31,
                    _ => imm,
                };
                record(&mut program, ins(op, 20, 10 + i, 0, imm));
                copies(&mut program, 10 + i, 0);
                record(&mut program, ins(op, 21, 21, 0, imm));
            }
        }
    }
    program.push(ins(Jal, 0, 0, 0, 0));
    // The results go above the program, which is too long for the scratch area.
    let results = RAM_BASE + 0x8_0000;
    let stores = program.iter().filter(|inst| inst.op == Sd).count() as u64;
    assert!(CODE + 4 * program.len() as u64 <= results);
    assert!(results + 8 * stores <= RAM_BASE + crate::tests::RAM_SIZE);
    let setup = |h: &mut Hart| {
        for (i, &v) in specials.iter().enumerate() {
            h.set_x(10 + i, v);
        }
        h.set_x(2, results);
    };
    let mut reference = machine(&program);
    setup(&mut reference);
    let mut translated = translating(machine(&program));
    setup(&mut translated);
    lockstep(
        &mut reference,
        &mut translated,
        &[program.len() as u64 + 10],
        "specials",
    );
    assert!(entries(&translated) > 0, "the translator ran nothing");
}

/// A random program: integer ALU and M operations, loads, stores, AMOs, LR and SC (some faulting,
/// some misaligned, some crossing a page, some to MMIO, a few into the code itself), forward
/// and backward branches, jumps, and instructions the translator leaves to the
/// interpreter (CSR reads, fence.i, ecall).
fn random_program(rng: &mut Rng, length: usize) -> Vec<Instruction> {
    use Op::*;
    let alu = [
        Add, Sub, Sll, Slt, Sltu, Xor, Srl, Sra, Or, And, Addw, Subw, Sllw, Srlw, Sraw, Mul, Mulh,
        Mulhsu, Mulhu, Div, Divu, Rem, Remu, Mulw, Divw, Divuw, Remw, Remuw,
    ];
    let alu_imm = [Addi, Slti, Sltiu, Xori, Ori, Andi, Addiw];
    let shifts = [Slli, Srli, Srai];
    let shifts_w = [Slliw, Srliw, Sraiw];
    let loads = [Lb, Lh, Lw, Ld, Lbu, Lhu, Lwu];
    let stores = [Sb, Sh, Sw, Sd];
    let branches = [Beq, Bne, Blt, Bge, Bltu, Bgeu];
    let amos = [
        (AmoswapW, 4),
        (AmoaddW, 4),
        (AmoxorW, 4),
        (AmoandW, 4),
        (AmoorW, 4),
        (AmominW, 4),
        (AmomaxuW, 4),
        (AmoswapD, 8),
        (AmoaddD, 8),
        (AmoxorD, 8),
        (AmoandD, 8),
        (AmoorD, 8),
        (AmomaxD, 8),
        (AmominuD, 8),
        (LrW, 4),
        (ScW, 4),
        (LrD, 8),
        (ScD, 8),
        (ScD, 8),
    ];
    // Destinations avoid x0 (kept interesting elsewhere), x2, x3, x4, x6 (bases) and x5
    // (the handler's scratch).
    let rd = |rng: &mut Rng| -> u8 {
        loop {
            let r = rng.below(32) as u8;
            if ![0, 2, 3, 4, 5, 6].contains(&r) {
                return r;
            }
        }
    };
    let rs = |rng: &mut Rng| -> u8 { rng.below(32) as u8 };
    let mut program = Vec::with_capacity(length);
    while program.len() < length {
        let roll = rng.below(100);
        let here = program.len() as i32;
        let inst = match roll {
            0..=34 => ins(*pick(rng, &alu), rd(rng), rs(rng), rs(rng), 0),
            35..=44 => ins(
                *pick(rng, &alu_imm),
                rd(rng),
                rs(rng),
                0,
                rng.below(4096) as i32 - 2048,
            ),
            45..=49 => ins(
                *pick(rng, &shifts),
                rd(rng),
                rs(rng),
                0,
                rng.below(64) as i32,
            ),
            50..=52 => ins(
                *pick(rng, &shifts_w),
                rd(rng),
                rs(rng),
                0,
                rng.below(32) as i32,
            ),
            53..=54 => ins(Lui, rd(rng), 0, 0, (rng.next() as i32) & !0xfff),
            55 => ins(Auipc, rd(rng), 0, 0, (rng.next() as i32) & !0xfff),
            56..=61 => {
                // A run of loads or stores through one base (as a function's saves and
                // restores of registers, some with operations between), which translated
                // code probes once: in the
                // scratch page, across its end, in the code (stores there write decoded
                // code), at MMIO or unmapped.
                let stores_run = rng.below(2) == 0;
                let (base, center) = match rng.below(12) {
                    0 => (3, 0),
                    1 => (6, 32),
                    // (Within 12-bit offsets: the code's first 2 KiB.)
                    2 => (4, ((rng.below(length as u64) * 4) as i32 & 0x7f8) - 32),
                    3 | 4 => {
                        program.push(ins(Addi, 7, 2, 0, 0x7f0));
                        (7, 0)
                    }
                    _ => (2, rng.below(3000) as i32 - 1500),
                };
                let count = 2 + rng.below(5);
                for _ in 1..count {
                    if rng.below(3) == 0 {
                        // An operation between accesses (which may write x7, a base).
                        program.push(ins(*pick(rng, &alu), rd(rng), rs(rng), rs(rng), 0));
                    }
                    let offset = center + rng.below(48) as i32 - 24;
                    program.push(if stores_run {
                        ins(*pick(rng, &stores), 0, base, rs(rng), offset)
                    } else {
                        ins(*pick(rng, &loads), rd(rng), base, 0, offset)
                    });
                }
                let offset = center + rng.below(48) as i32 - 24;
                if stores_run {
                    ins(*pick(rng, &stores), 0, base, rs(rng), offset)
                } else {
                    ins(*pick(rng, &loads), rd(rng), base, 0, offset)
                }
            }
            62..=67 => {
                let base = match rng.below(40) {
                    0 => 3,
                    1 => 6,
                    _ => 2,
                };
                ins(
                    *pick(rng, &loads),
                    rd(rng),
                    base,
                    0,
                    rng.below(4096) as i32 - 2048,
                )
            }
            68..=77 => {
                let (base, offset) = match rng.below(60) {
                    0 => (3, 0),
                    1 => (6, rng.below(64) as i32),
                    // Into the program itself, ahead of or behind this store.
                    2 => (4, (rng.below(length as u64) * 4) as i32 & 0x7fc),
                    _ => (2, rng.below(4096) as i32 - 2048),
                };
                ins(*pick(rng, &stores), 0, base, rs(rng), offset)
            }
            78..=88 => {
                // Mostly forward; a few backward (loops end with the budget).
                let delta = if rng.below(8) == 0 {
                    -(rng.below(here.min(12) as u64 + 1) as i32)
                } else {
                    1 + rng.below(8) as i32
                };
                ins(*pick(rng, &branches), 0, rs(rng), rs(rng), delta * 4)
            }
            89..=91 => ins(Jal, rd(rng), 0, 0, (1 + rng.below(6) as i32) * 4),
            92 => {
                // jalr to the next-but-one instruction through a register set just before.
                program.push(ins(Auipc, 7, 0, 0, 0));
                ins(Jalr, rd(rng), 7, 0, 8)
            }
            93 => {
                let counter = *pick(
                    rng,
                    &[crate::csr_numbers::INSTRET, crate::csr_numbers::TIME],
                );
                ins(Csrrs, rd(rng), 0, 0, counter as i32)
            }
            94 => {
                // Trap entry and exit CSRs and sstatus, read, written, set and cleared.
                let csr = *pick(
                    rng,
                    &[MSCRATCH, MEPC, SSCRATCH, SEPC, SCAUSE, STVAL, SSTATUS],
                );
                let op = *pick(rng, &[Csrrw, Csrrs, Csrrc, Csrrwi, Csrrsi, Csrrci]);
                ins(op, rd(rng), rs(rng), 0, csr as i32)
            }
            95 => ins(FenceI, 0, 0, 0, 0),
            96 => ins(Fence, 0, 0, 0, 0),
            97 => ins(Ecall, 0, 0, 0, 0),
            _ => {
                // An AMO, LR or SC at x7 = base + offset: mostly aligned data, some
                // misaligned, some faulting, MMIO or into the code itself.
                let (op, size) = *pick(rng, &amos);
                let (base, offset) = match rng.below(40) {
                    0 => (3, 0),
                    1 => (6, 0),
                    2 => (4, (rng.below(length as u64) * 4) as i32 & 0x7f8),
                    3 => (2, rng.below(4096) as i32 - 2048),
                    _ => (2, (rng.below(4096) as i32 - 2048) & -size),
                };
                program.push(ins(Addi, 7, base, 0, offset));
                let source = if matches!(op, LrW | LrD) { 0 } else { rs(rng) };
                ins(op, rd(rng), 7, source, 0)
            }
        };
        program.push(inst);
    }
    program.push(ins(Jal, 0, 0, 0, 0));
    program
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

/// Same random registers in both harts.
fn seed_registers(h: &mut Hart, rng: &mut Rng) {
    for r in [1, 7, 8, 9] {
        h.set_x(r, rng.next());
    }
    for r in 10..32 {
        h.set_x(
            r,
            match rng.below(4) {
                0 => rng.below(16),
                1 => (rng.below(16) as i64 - 8) as u64,
                _ => rng.next(),
            },
        );
    }
}

#[test]
fn random_programs_match_the_interpreter_at_random_budgets() {
    const SEED: u64 = 0x7a11_51a7_e000_0001;
    const PROGRAMS: u64 = 60;
    const PROGRAM_INSTRUCTIONS: usize = 1500;
    std::println!("seed {SEED:#x}");
    let mut total_entries = 0;
    for program_index in 0..PROGRAMS {
        let mut rng = Rng(SEED ^ program_index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let program = random_program(&mut rng, PROGRAM_INSTRUCTIONS);
        let mut reference = machine(&program);
        let mut translated = translating(machine(&program));
        if program_index % 3 == 2 {
            // Some in S-mode, where sstatus changes run inline and M-level CSRs trap.
            for h in [&mut reference, &mut translated] {
                h.reset(CODE, Privilege::Supervisor, 0, 0);
            }
        }
        let mut registers = Rng(rng.next() | 1);
        seed_registers(&mut reference, &mut Rng(registers.0));
        seed_registers(&mut translated, &mut registers);
        let budgets: Vec<u64> = (0..40).map(|_| 1 + rng.below(300)).collect();
        lockstep(
            &mut reference,
            &mut translated,
            &budgets,
            &format!("program {program_index} of seed {SEED:#x}"),
        );
        total_entries += entries(&translated);
    }
    assert!(
        total_entries > 1000,
        "translated code barely ran: {total_entries} entries"
    );
}

#[test]
fn amos_in_a_loop_match_the_interpreter() {
    use Op::*;
    // Each AMO on its own doubleword of the scratch page (the .w forms on alternate halves)
    // with an operand that changes every round; the old values are summed in x15, and an
    // amoor.d with rd = x0 (Linux's set_bit) ends the round.
    let amos = [
        AmoswapW, AmoaddW, AmoxorW, AmoandW, AmoorW, AmominW, AmomaxuW, AmoswapD, AmoaddD, AmoxorD,
        AmoandD, AmoorD, AmomaxD, AmominuD,
    ];
    let mut program = vec![
        ins(Addi, 10, 10, 0, 0x123),
        ins(Slli, 11, 10, 0, 29),
        ins(Xor, 11, 11, 10, 0),
    ];
    for (k, &op) in amos.iter().enumerate() {
        let upper_half = if k < 7 && k % 2 == 1 { 4 } else { 0 };
        program.push(ins(Addi, 8, 2, 0, 8 * k as i32 + upper_half));
        program.push(ins(op, 12, 8, 11, 0));
        program.push(ins(Add, 15, 15, 12, 0));
    }
    program.push(ins(AmoorD, 0, 2, 10, 0));
    program.push(ins(Addi, 7, 7, 0, -1));
    let back = -4 * program.len() as i32;
    program.push(ins(Bne, 0, 7, 0, back));
    program.push(ins(Jal, 0, 0, 0, 0));
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    for h in [&mut reference, &mut translated] {
        h.set_x(7, 60);
    }
    lockstep(
        &mut reference,
        &mut translated,
        &[3, 500, 41, 1200, 700, 999],
        "amo loop",
    );
    assert_eq!(translated.x(7), 0, "the loop ran to its end");
    assert!(entries(&translated) > 0, "nothing translated");
}

#[test]
fn lr_and_sc_in_a_loop_match_the_interpreter() {
    use Op::*;
    // x2, x8 = x2 + 8 and x9 = x2 + 16 are three reservable doublewords. Each round: an
    // lr.d/sc.d and an lr.w/sc.w pair that succeed; an lr.w whose word a store changes (to
    // x10, a new value every round) before the sc.w; an SC without a reservation; an SC to
    // another address than the LR's, then one to the LR's address (the reservation is
    // gone). x15 sums the SC results: four failures a round. A wfi after the second lr.w
    // stops each run (no interrupt is enabled) with the reservation translated code set.
    let mut program = vec![
        ins(Addi, 10, 10, 0, 1),
        ins(LrD, 12, 2, 0, 0),
        ins(Add, 13, 12, 10, 0),
        ins(ScD, 14, 2, 13, 0),
        ins(Add, 15, 15, 14, 0),
        ins(LrW, 12, 8, 0, 0),
        ins(Sub, 13, 12, 10, 0),
        ins(ScW, 14, 8, 13, 0),
        ins(Add, 15, 15, 14, 0),
        ins(LrW, 12, 8, 0, 0),
        ins(Wfi, 0, 0, 0, 0),
        ins(Sw, 0, 8, 10, 0),
        ins(ScW, 14, 8, 13, 0),
        ins(Add, 15, 15, 14, 0),
        ins(ScD, 14, 2, 13, 0),
        ins(Add, 15, 15, 14, 0),
        ins(LrD, 12, 9, 0, 0),
        ins(ScD, 14, 2, 12, 0),
        ins(Add, 15, 15, 14, 0),
        ins(ScD, 14, 9, 12, 0),
        ins(Add, 15, 15, 14, 0),
        ins(Addi, 7, 7, 0, -1),
    ];
    let back = -4 * program.len() as i32;
    program.push(ins(Bne, 0, 7, 0, back));
    program.push(ins(Jal, 0, 0, 0, 0));
    let rounds = 200;
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    for h in [&mut reference, &mut translated] {
        h.set_x(7, rounds);
        // Words with bit 31 set from round 129 on: the .w forms sign-extend rd only.
        h.set_x(10, 0x7fff_ff80);
        h.set_x(8, SCRATCH + 0x808);
        h.set_x(9, SCRATCH + 0x810);
    }
    let mut budgets = vec![5, 3, 11];
    budgets.resize(rounds as usize + 3, 1000);
    lockstep(&mut reference, &mut translated, &budgets, "lr/sc loop");
    assert_eq!(translated.x(7), 0, "the loop ran to its end");
    assert_eq!(translated.x(15), rounds * 4);
    assert!(entries(&translated) > 0, "nothing translated");
}

#[test]
fn every_budget_across_a_loop_gives_the_interpreters_state() {
    use Op::*;
    // A loop of ten instructions with a load and a store, run 1..=120 instructions at a
    // time from a fresh start: every cut point inside and between blocks.
    let program = [
        ins(Addi, 10, 10, 0, 1),
        ins(Xor, 11, 11, 10, 0),
        ins(Slli, 12, 10, 0, 3),
        ins(Add, 13, 13, 12, 0),
        ins(Sd, 0, 2, 13, 0),
        ins(Ld, 14, 2, 0, 0),
        ins(Sub, 15, 14, 11, 0),
        ins(Mul, 16, 15, 10, 0),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -36),
        ins(Addi, 7, 0, 0, 5),
        ins(Jal, 0, 0, 0, -44),
    ];
    every_budget_to_120(&program, 12, &[]);
}

/// Runs `program` (x7 = 5, and the `registers` given) interpreted and translated with every
/// budget from 1 to 120, each eight times over, comparing states after each run; translated
/// code must have run once the budget reaches `translated_from`.
fn every_budget_to_120(program: &[Instruction], translated_from: u64, registers: &[(usize, u64)]) {
    for budget in 1..=120u64 {
        let mut reference = machine(program);
        let mut translated = translating(machine(program));
        for h in [&mut reference, &mut translated] {
            h.set_x(7, 5);
            for &(r, value) in registers {
                h.set_x(r, value);
            }
        }
        // The same budget again and again: the cut moves through every position.
        let budgets = [budget; 8];
        lockstep(
            &mut reference,
            &mut translated,
            &budgets,
            &format!("budget {budget}"),
        );
        if budget >= translated_from {
            assert!(
                entries(&translated) > 0,
                "budget {budget}: nothing translated"
            );
        }
    }
}

#[test]
fn branches_inside_a_block_stay_in_it_and_count_exactly_at_every_budget() {
    use Op::*;
    // One block: a forward branch over two instructions (taken every other round) and a
    // branch back to its second instruction, then a jump back to its start. Both branches
    // stay inside the translated block (no chained jump is ever needed), and every cut
    // point must leave the interpreter's state.
    let program = [
        ins(Addi, 10, 10, 0, 1),
        ins(Andi, 11, 10, 0, 1),
        ins(Beq, 0, 11, 0, 12),
        ins(Addi, 12, 12, 0, 3),
        ins(Xor, 13, 13, 10, 0),
        ins(Add, 14, 14, 10, 0),
        ins(Addi, 10, 10, 0, 1),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -28),
        ins(Addi, 7, 0, 0, 5),
        ins(Jal, 0, 0, 0, -40),
    ];
    every_budget_to_120(&program, program.len() as u64, &[]);
    // Run in one go from the start, the block is entered once and never leaves.
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    lockstep(&mut reference, &mut translated, &[1000], "one run");
    let stats = translated.translator_stats().expect("translator on");
    assert_eq!((stats.entries, stats.chains), (1, 0), "{stats:?}");
}

#[test]
fn results_of_32_bit_operations_read_as_64_bits_are_sign_extended_everywhere() {
    use Op::*;
    // The 32-bit operations here have results with bit 31 set or operands with other
    // upper halves: every reader of all 64 bits must see them sign-extended (the register
    // cache, a spill, a join, a loop's jump back, an exit), including readers of bitwise
    // results of a word and a register that is none.
    let mut program = vec![
        ins(Addw, 10, 11, 12, 0),  // 0xffffffff80000000
        ins(Add, 17, 10, 12, 0),   // lea from two cache registers: the base
        ins(Sllw, 13, 11, 0, 0),   // 0x7fffffff (rs2 = x0)
        ins(Slliw, 14, 12, 0, 31), // 0xffffffff80000000
        ins(Add, 3, 12, 14, 0),    // and the index
        ins(Or, 15, 10, 14, 0),    // two words, by halves
        ins(Xori, 16, 15, 0, -1),  // and an immediate: 0x7fffffff
        ins(Srli, 18, 16, 0, 4),   // from another register
        ins(Sw, 0, 2, 15, 0),      // the low half
        ins(Sd, 0, 2, 16, 8),
        ins(Lwu, 19, 2, 0, 0), // 0x80000000, zero-extended: no word
        ins(Or, 19, 19, 13, 0),
        ins(Slt, 6, 10, 0, 0),
        ins(Or, 20, 13, 12, 0), // x12 is no word, so neither is x20
        ins(Addw, 21, 11, 11, 0),
        ins(Xor, 20, 20, 21, 0),
        ins(Xor, 21, 12, 13, 0), // nor as the first operand
        ins(Mulw, 21, 10, 12, 0),
        ins(Mul, 22, 12, 21, 0), // from the second operand's register
        ins(Mulw, 21, 10, 12, 0),
        ins(Csrrw, 0, 21, 0, MSCRATCH as i32),
        ins(Mulw, 21, 10, 12, 0),
        ins(Mul, 21, 21, 12, 0), // in place
        ins(Subw, 23, 0, 12, 0),
        ins(AmoaddD, 24, 2, 23, 0),
        ins(Addw, 25, 25, 11, 0),
        ins(Srai, 25, 25, 0, 1), // in place
        ins(Addiw, 9, 11, 0, 1),
        ins(Add, 9, 9, 12, 0), // in place
        ins(Add, 26, 11, 12, 0),
        ins(Blt, 0, 26, 0, 8), // taken: x26 is negative, and no word
        ins(Addiw, 26, 26, 0, 5),
        ins(Add, 27, 26, 12, 0), // the join: x26 as the branch left it
        ins(Addiw, 1, 11, 0, 1),
        ins(Bge, 0, 26, 0, 8), // not taken: the straight path's x1 is extended at the join
        ins(Addi, 8, 8, 0, 1),
        ins(Add, 4, 1, 12, 0),
        ins(Sraw, 28, 11, 12, 0),
        ins(Addiw, 29, 11, 0, 1),
        // A base: extended, the address is not RAM, and the load faults.
        ins(Addiw, 1, 2, 0, 8),
        ins(Ld, 30, 1, 0, 8),
    ];
    // Twelve other registers written and read, then x29, which is read last and so was
    // evicted on the way.
    program.extend((13..25).map(|r| ins(Addi, r, r, 0, 1)));
    program.extend((13..25).map(|r| ins(Add, 8, 8, r, 0)));
    let end = program.len() as i32;
    program.extend([
        ins(Add, 30, 29, 12, 0),
        // A loop whose header reads x31 whole, which its body writes with a 32-bit
        // operation.
        ins(Add, 9, 9, 31, 0),
        ins(Addw, 31, 31, 11, 0),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -12),
        ins(Addiw, 28, 11, 0, 3), // written back at the exit
        ins(Addi, 7, 0, 0, 5),
        ins(Jal, 0, 0, 0, -4 * (end + 7)),
    ]);
    let registers = [
        (11, 0x1234_5678_7fff_ffff),
        (12, 0xabcd_0000_0000_0001),
        (25, 0x5555_5555_0000_0000),
        (31, 0x1111_0000_7fff_fff0),
    ];
    every_budget_to_120(&program, program.len() as u64, &registers);
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    for h in [&mut reference, &mut translated] {
        h.set_x(7, 5);
        for &(r, value) in &registers {
            h.set_x(r, value);
        }
    }
    // Once through (not the instruction branched over nor the load that faulted, but
    // the four of the trap handler), twice, and three times more.
    let once = end as u64 - 2 + 4 + 1 + 5 * 4 + 3;
    lockstep(
        &mut reference,
        &mut translated,
        &[once, once, 3 * once],
        "passes",
    );
    assert_eq!(translated.pc(), CODE);
    for (r, value) in [
        (10, 0xffff_ffff_8000_0000),
        (16, 0x7fff_ffff + 1),
        (17, 0xabcc_ffff_8000_0001 + 1),
        (19, 0xffff_ffff + 1),
        (20, (0xabcd_0000_7fff_ffff ^ 0xffff_ffff_ffff_fffe) + 1),
        (3, 0xabcc_ffff_8000_0001),
        (4, 0xabcc_ffff_8000_0001),
        (6, 1),
        (27, 0x69ce_5678_8000_0001),
        (28, 0xffff_ffff_8000_0002),
        (30, 0xabcc_ffff_8000_0001),
    ] {
        assert_eq!(translated.x(r), value, "x{r}");
    }
}

#[test]
fn a_loop_after_code_that_fills_the_register_cache_moves_no_register_on_its_jump_back() {
    use Op::*;
    // The shape of mpihelp_submul_1: a block that first writes eight registers (filling
    // the cache), then loops over other ones from its ninth instruction. The loop's header
    // must take the registers the loop body leaves cached, not the ones the straight path
    // brings, or every iteration stores and loads them again. The program also runs, to
    // the interpreter's state.
    let mut program: Vec<Instruction> = (20..28).map(|r| ins(Addi, r, 0, 0, r as i32)).collect();
    program.extend([
        ins(Add, 10, 10, 11, 0),
        ins(Xor, 11, 11, 12, 0),
        ins(Mul, 12, 12, 13, 0),
        ins(Addi, 13, 13, 0, 3),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -20),
        ins(Jal, 0, 0, 0, -4 * 14),
    ]);
    let h = machine(&program);
    let at = super::emit::Placement {
        pc: CODE,
        ram_offset: CODE - RAM_BASE,
        generation: 0,
        origin: 0x1_0000_0000,
        epilogue: 0x1_0000_0000,
        lookup: 0x1_0000_0000,
        flagged_store: [0x1_0000_0000; 4],
        first_interpreted: 0,
        layout: super::emit::HartLayout::of(&h, false),
    };
    assert_eq!(super::emit::back_edge_moves(&program, at), 0);
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    reference.set_x(7, 1000);
    translated.set_x(7, 1000);
    lockstep(&mut reference, &mut translated, &[37, 500, 4000], "loop");
}

#[test]
fn a_page_stored_to_again_after_its_dirty_bit_was_taken_is_reported_again() {
    use Op::*;
    // Stores through a cached store translation: the first marks the page; once
    // `take_dirty_pages` has cleared it, the next store through the same entry must mark
    // it again, interpreted and translated alike.
    let program = [
        ins(Sd, 0, 2, 10, 0),
        ins(Addi, 10, 10, 0, 1),
        ins(Jal, 0, 0, 0, -8),
    ];
    let scratch_page = ((SCRATCH + 0x800 - RAM_BASE) / crate::PAGE_SIZE_BYTES) as u32;
    for translate in [false, true] {
        let mut h = machine(&program);
        if translate {
            h = translating(h);
        }
        let mut bus = Bus::default();
        h.take_dirty_pages();
        for round in 0..4 {
            // One store, then several through the same entry.
            h.run(&mut bus, [3, 30, 3, 300][round]);
            assert_eq!(
                h.take_dirty_pages(),
                [scratch_page],
                "translate {translate}, round {round}"
            );
        }
        // No store, no page: the store, then the two instructions after it.
        h.run(&mut bus, 1);
        h.take_dirty_pages();
        h.run(&mut bus, 2);
        assert_eq!(h.pc(), CODE, "translate {translate}");
        assert!(h.take_dirty_pages().is_empty(), "translate {translate}");
        if translate {
            assert!(entries(&h) > 0, "nothing translated");
        }
    }
}

#[test]
fn a_fault_in_every_position_of_a_block_stops_the_count_at_the_faulting_instruction() {
    use Op::*;
    const BLOCK: usize = 24;
    for position in 0..BLOCK {
        for faulting in [Ld, Sw, Lbu, Sd] {
            // Loads and stores in sp's page; the one at `position` uses x3 (unmapped).
            let mut program = Vec::new();
            for i in 0..BLOCK {
                let base = if i == position { 3 } else { 2 };
                let op = if i == position {
                    faulting
                } else if i % 2 == 0 {
                    Ld
                } else {
                    Sd
                };
                program.push(match op {
                    Sw | Sd => ins(op, 0, base, 10 + (i % 8) as u8, (i * 8) as i32),
                    _ => ins(op, 10 + (i % 8) as u8, base, 0, (i * 8) as i32),
                });
                program.push(ins(Addi, 20, 20, 0, 1));
            }
            program.push(ins(Jal, 0, 0, 0, -(program.len() as i32 * 4)));
            let mut reference = machine(&program);
            let mut translated = translating(machine(&program));
            let what = format!("{faulting:?} at position {position}");
            // First run: up to and including the fault and the handler.
            lockstep(
                &mut reference,
                &mut translated,
                &[2 * position as u64 + 1, 1, 4, 200, 3, 77],
                &what,
            );
            // The handler stepped mepc past the faulting instruction.
            assert_eq!(
                translated.read_csr(MEPC),
                Some(CODE + 8 * position as u64 + 4),
                "{what}: mepc"
            );
        }
    }
}

#[test]
fn self_modifying_code_and_fence_i_run_the_new_instructions() {
    use Op::*;
    // The loop body's third instruction is rewritten each round: `addi x10, x10, 1` becomes
    // `addi x10, x10, 100` (stored from x11), with and without fence.i.
    let patched = crate::encode(&ins(Addi, 10, 10, 0, 100)).unwrap() as u64;
    for fence in [true, false] {
        let mut program = vec![
            ins(Addi, 12, 12, 0, 1),
            ins(Addi, 13, 13, 0, 3),
            ins(Addi, 10, 10, 0, 1),
            ins(Sw, 0, 4, 11, 8),
        ];
        program.push(if fence {
            ins(FenceI, 0, 0, 0, 0)
        } else {
            ins(Fence, 0, 0, 0, 0)
        });
        program.push(ins(Jal, 0, 0, 0, -20));
        let setup = |h: &mut Hart| h.set_x(11, patched);
        let mut reference = machine(&program);
        let mut translated = translating(machine(&program));
        setup(&mut reference);
        setup(&mut translated);
        lockstep(
            &mut reference,
            &mut translated,
            &[3, 50, 1, 1, 1, 1000, 7],
            &format!("fence.i {fence}"),
        );
        // Six instructions a round: an increment of 1 in the first round, then 100 in
        // every later one that reached its third instruction.
        let retired = translated.instret().0;
        let (rounds, partial) = (retired / 6, retired % 6);
        let expected = 1 + 100 * (rounds - 1) + if partial >= 3 { 100 } else { 0 };
        assert_eq!(translated.x(10), expected, "fence.i {fence}");
    }
}

#[test]
fn code_written_from_outside_between_runs_is_translated_again() {
    use Op::*;
    let program = [ins(Addi, 10, 10, 0, 1), ins(Jal, 0, 0, 0, -4)];
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    lockstep(&mut reference, &mut translated, &[100], "before");
    let replacement = assemble(&[ins(Addi, 10, 10, 0, -7)]);
    for h in [&mut reference, &mut translated] {
        h.write_phys(GuestPhysAddr(CODE), &replacement).unwrap();
    }
    lockstep(&mut reference, &mut translated, &[100], "after");
    assert_eq!(
        translated.x(10),
        50u64.wrapping_add(50u64.wrapping_mul(-7i64 as u64))
    );
}

/// A loop that reads mscratch and writes it, and after x7 rounds sets the bits of x12 in
/// mstatus (`csrs`), then starts over with eight rounds.
fn csr_loop() -> [Instruction; 8] {
    use Op::*;
    [
        ins(Addi, 10, 10, 0, 1),
        ins(Csrrs, 13, 0, 0, MSCRATCH as i32),
        ins(Csrrw, 0, 10, 0, MSCRATCH as i32),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -16),
        ins(Csrrs, 0, 12, 0, MSTATUS as i32),
        ins(Addi, 7, 0, 0, 8),
        ins(Jal, 0, 0, 0, -28),
    ]
}

#[test]
fn csr_reads_and_scratch_writes_stay_in_translated_code() {
    let mut reference = machine(&csr_loop());
    let mut translated = translating(machine(&csr_loop()));
    for h in [&mut reference, &mut translated] {
        h.set_x(7, 1 << 40);
    }
    lockstep(&mut reference, &mut translated, &[20_000], "csr loop");
    // One entry, and one more after each first jump between its blocks (to link it).
    let stats = translated.translator_stats().expect("translator on");
    assert!(stats.entries <= 1 + stats.chains, "{stats:?}");
    assert_eq!(translated.read_csr(MSCRATCH), Some(translated.x(10)));
}

#[test]
fn csr_writes_that_leave_no_interrupt_takeable_stay_in_translated_code() {
    use Op::*;
    // Each round clears MIE in mstatus (csrrci, as local_irq_save), writes mstatus back
    // unchanged (csrrs with x14 = 0, as the restore of a disabled state), sets MIE again
    // (as the restore of an enabled state) and clears the timer enable in mie; no
    // interrupt line is raised.
    let program = [
        ins(Addi, 10, 10, 0, 1),
        ins(Csrrci, 13, 8, 0, MSTATUS as i32),
        ins(Csrrs, 0, 14, 0, MSTATUS as i32),
        ins(Csrrsi, 0, 8, 0, MSTATUS as i32),
        ins(Csrrc, 0, 15, 0, MIE as i32),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -24),
    ];
    let setup = |h: &mut Hart| {
        h.write_csr(MSTATUS, 1 << 3);
        h.write_csr(MIE, 1 << 7);
        h.set_x(7, 1 << 40);
        h.set_x(15, 1 << 7);
    };
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    setup(&mut reference);
    setup(&mut translated);
    lockstep(
        &mut reference,
        &mut translated,
        &[3, 20_000],
        "enable and disable loop",
    );
    let stats = translated.translator_stats().expect("translator on");
    assert!(stats.entries <= 2 + stats.chains, "{stats:?}");
    assert_eq!(translated.x(10), 20_003 / 7 + 1);
    assert_eq!(
        translated.read_csr(MSTATUS).map(|m| m & 1 << 3),
        Some(1 << 3)
    );
    assert_eq!(translated.read_csr(MIE), Some(0));
}

#[test]
fn a_csr_write_that_enables_a_pending_interrupt_leaves_translated_code_at_once() {
    // The timer interrupt is pending and enabled in mie; the loop's write of mstatus sets
    // MIE every eight rounds, and the handler returns with MIE clear (it clears MPIE, with
    // x21 = 1 << 7, before mret). Once linked, the loop's blocks chain into each other, so
    // only the write's own exit lets `Hart::run` take the interrupt at once.
    let handler_program = [
        ins(Op::Addi, 20, 20, 0, 1),
        ins(Op::Csrrc, 0, 21, 0, MSTATUS as i32),
        ins(Op::Mret, 0, 0, 0, 0),
    ];
    let setup = |h: &mut Hart| {
        h.write_phys(GuestPhysAddr(HANDLER), &assemble(&handler_program))
            .unwrap();
        h.write_csr(MIE, 1 << 7);
        h.set_interrupt_lines(1 << 7);
        h.set_x(7, 8);
        h.set_x(12, 1 << 3);
        h.set_x(21, 1 << 7);
    };
    let mut reference = machine(&csr_loop());
    let mut translated = translating(machine(&csr_loop()));
    setup(&mut reference);
    setup(&mut translated);
    lockstep(
        &mut reference,
        &mut translated,
        &[500, 37, 1000, 3],
        "mstatus writes",
    );
    assert!(translated.x(20) > 10, "interrupts were taken");
    assert!(entries(&translated) > 0);
}

#[test]
fn a_block_written_from_outside_is_not_entered_through_the_jump_cache() {
    use Op::*;
    // A (at CODE) jumps to E (the next page), which jumps back through x8: both jumps go
    // through the lookup and its jump cache. E is then rewritten from outside between
    // runs; the next run starts at A, whose page is unchanged, and A's jump finds E's old
    // translation in the jump cache: it must leave at once and E be translated again.
    let mut program = vec![ins(Addi, 10, 10, 0, 1), ins(Jal, 0, 0, 0, 0xffc)];
    program.resize(1024, ins(Addi, 0, 0, 0, 0));
    program.push(ins(Addi, 11, 11, 0, 1));
    program.push(ins(Jalr, 0, 8, 0, 0));
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    for h in [&mut reference, &mut translated] {
        h.set_x(8, CODE);
    }
    // 25 rounds of A and E: the run ends back at A.
    lockstep(&mut reference, &mut translated, &[100], "before");
    assert_eq!((translated.pc(), translated.x(11)), (CODE, 25));
    let replacement = assemble(&[ins(Addi, 11, 11, 0, 100)]);
    for h in [&mut reference, &mut translated] {
        h.write_phys(GuestPhysAddr(CODE + 0x1000), &replacement)
            .unwrap();
    }
    lockstep(&mut reference, &mut translated, &[100], "after");
    assert_eq!(translated.x(11), 25 + 25 * 100);
}

#[test]
fn a_jump_in_a_block_reached_from_another_page_is_linked_at_its_first_exit() {
    use Op::*;
    // The page at CODE holds S (addi x10; beq x10, x9 to L; jal to T), and at its end L
    // and T (writes of mtvec, which leave translated code). The next instruction, E, starts
    // the next page and jumps back to S through x8. S first runs entered directly (after
    // E's lookup missed it) and takes the branch to L; from then on every entry is at E,
    // so S's jump to T first exits while the entry block lies in another page than S.
    let mut program = vec![
        ins(Addi, 10, 10, 0, 1),
        ins(Beq, 0, 10, 9, 0xff4),
        ins(Jal, 0, 0, 0, 0xff4),
    ];
    program.resize(1022, ins(Addi, 0, 0, 0, 0));
    program.push(ins(Csrrw, 0, 0, 0, MTVEC as i32));
    program.push(ins(Csrrw, 0, 0, 0, MTVEC as i32));
    program.push(ins(Jalr, 0, 8, 0, 0));
    let setup = |h: &mut Hart| {
        h.set_pc(CODE + 0x1000);
        h.set_x(8, CODE);
        h.set_x(9, 1);
    };
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    setup(&mut reference);
    setup(&mut translated);
    // Rounds of E, S (three instructions) and T after the first.
    lockstep(&mut reference, &mut translated, &[500], "rounds");
    assert!(reference.x(10) > 90, "{}", reference.x(10));
    let stats = translated.translator_stats().expect("translator on");
    // Both of S's jumps are linked, and each round enters once (at E).
    assert_eq!(stats.chains, 2, "{stats:?}");
    assert!(stats.entries <= reference.x(10) + 5, "{stats:?}");
}

#[test]
fn interrupts_raised_between_runs_are_taken_at_the_same_count() {
    use Op::*;
    // A counting loop with the machine timer interrupt enabled; the line is raised and
    // lowered between runs of varying length, so interrupts arrive at block boundaries
    // and in the middle of blocks.
    let program = [
        ins(Addi, 10, 10, 0, 1),
        ins(Addi, 11, 11, 0, 2),
        ins(Add, 12, 12, 10, 0),
        ins(Jal, 0, 0, 0, -12),
    ];
    let handler_program = [
        ins(Addi, 20, 20, 0, 1),
        ins(Csrrw, 0, 0, 0, MIE as i32),
        ins(Mret, 0, 0, 0, 0),
    ];
    let setup = |h: &mut Hart| {
        h.write_phys(GuestPhysAddr(HANDLER), &assemble(&handler_program))
            .unwrap();
        h.write_csr(MSTATUS, 1 << 3);
    };
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    setup(&mut reference);
    setup(&mut translated);
    let mut rng = Rng(0x1e7_0001);
    let mut bus_reference = Bus::default();
    let mut bus_translated = Bus::default();
    for round in 0..400 {
        let raise = rng.below(3) == 0;
        let budget = 1 + rng.below(40);
        for h in [&mut reference, &mut translated] {
            if raise {
                h.write_csr(MIE, 1 << 7);
                h.set_interrupt_lines(1 << 7);
            } else {
                h.set_interrupt_lines(0);
            }
        }
        let expected = reference.run(&mut bus_reference, budget);
        let actual = translated.run(&mut bus_translated, budget);
        assert_eq!(actual, expected, "round {round}");
        assert!(state(&translated) == state(&reference), "round {round}");
    }
    assert!(translated.x(20) > 10, "interrupts were taken");
    assert!(entries(&translated) > 0);
}

#[test]
fn a_region_of_the_wrong_size_is_refused() {
    let mut h = hart(false);
    let result = h.enable_translator(Box::new(Mapped::new(4096)));
    assert_eq!(
        result,
        Err(super::TranslatorError::RegionSize { len_bytes: 4096 })
    );
    assert!(h.translator_stats().is_none());
}

#[test]
fn a_full_code_cache_is_emptied_and_translation_goes_on() {
    use Op::*;
    // Many distinct blocks (each ends in a jal to the next) in the smallest region.
    let mut program = Vec::new();
    for i in 0..20_000i32 {
        program.push(ins(Addi, 10, 10, 0, i % 100));
        program.push(ins(Mul, 11, 10, 10, 0));
        program.push(ins(Jal, 0, 0, 0, 4));
    }
    program.push(ins(Jal, 0, 0, 0, 0));
    let mut reference = machine(&program);
    let mut translated = machine(&program);
    translated
        .enable_translator_after(Box::new(Mapped::new(super::CODE_BYTES_MIN)), 1)
        .unwrap();
    lockstep(
        &mut reference,
        &mut translated,
        &[30_000, 30_000, 1, 30_000],
        "small cache",
    );
    let stats = translated.translator_stats().unwrap();
    assert!(stats.cache_flushes > 0, "{stats:?}");
}

#[test]
fn jumps_through_the_lookup_after_the_code_cache_was_emptied_find_no_old_code() {
    use Op::*;
    // A loop that calls a function on another page (through the lookup and its jump
    // cache), then runs through enough distinct blocks to empty the smallest code cache
    // several times before it calls again.
    const CHAIN_BLOCKS: i32 = 8_000;
    let mut program = vec![ins(Jal, 1, 0, 0, (CHAIN_BLOCKS * 3 + 2) * 4)];
    for i in 0..CHAIN_BLOCKS {
        program.push(ins(Addi, 10, 10, 0, i % 100));
        program.push(ins(Mul, 11, 10, 10, 0));
        program.push(ins(Jal, 0, 0, 0, 4));
    }
    program.push(ins(Jal, 0, 0, 0, -(CHAIN_BLOCKS * 3 + 1) * 4));
    program.push(ins(Addi, 12, 12, 0, 1));
    program.push(ins(Jalr, 0, 1, 0, 0));
    let mut reference = machine(&program);
    let mut translated = machine(&program);
    translated
        .enable_translator_after(Box::new(Mapped::new(super::CODE_BYTES_MIN)), 1)
        .unwrap();
    lockstep(
        &mut reference,
        &mut translated,
        &[50_000, 50_000, 7, 50_000],
        "jumps after flushes",
    );
    // 24,004 instructions a round, each round one call.
    assert_eq!(translated.x(12), 150_007 / 24_004 + 1);
    let stats = translated.translator_stats().unwrap();
    assert!(stats.cache_flushes >= 6, "{stats:?}");
}

#[test]
fn stores_beside_code_in_its_page_stay_in_translated_code_and_stores_into_it_do_not() {
    use Op::*;
    // Data in the code's own page (as small programs link .data right after .text): the
    // loop stores next to itself 2000 times, then once over its own next instruction.
    let program = [
        ins(Sd, 0, 4, 10, 0x7f8),
        ins(Sw, 0, 4, 10, 0x7f0),
        ins(Sb, 0, 4, 10, 0x7ff),
        ins(Addi, 10, 10, 0, 1),
        ins(Blt, 0, 10, 11, -16),
        ins(Sw, 0, 4, 12, 24),
        ins(Addi, 13, 13, 0, 1),
        ins(Jal, 0, 0, 0, 0),
    ];
    let nop = crate::encode(&ins(Addi, 0, 0, 0, 0)).unwrap() as u64;
    let setup = |h: &mut Hart| {
        h.set_x(11, 2000);
        h.set_x(12, nop);
    };
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    setup(&mut reference);
    setup(&mut translated);
    lockstep(
        &mut reference,
        &mut translated,
        &[5000, 10, 100],
        "stores beside code",
    );
    // The store over `addi x13` turned it into a nop before it ran.
    assert_eq!(translated.x(13), 0);
    let stats = translated.translator_stats().unwrap();
    assert!(
        stats.interpreted < 20,
        "stores beside code went through the interpreter: {stats:?}"
    );
}

#[test]
fn flagged_stores_keep_every_cached_register() {
    use Op::*;
    // Nine registers change before the stores and are summed after them, so every host
    // register of the cache holds one across the stores' out-of-line paths: the scratch
    // page's first store after its dirty bit was taken (marking it), and a store beside
    // the code in its own page (checked against the decoded chunks).
    let mut program: Vec<Instruction> = (10..19)
        .map(|r| ins(Addi, r, r, 0, 2 * r as i32 + 1))
        .collect();
    program.push(ins(Sd, 0, 2, 10, 0));
    program.push(ins(Sd, 0, 4, 11, 0x7f8));
    program.push(ins(Add, 19, 10, 11, 0));
    for r in 12..19 {
        program.push(ins(Add, 19, 19, r, 0));
    }
    program.push(ins(Jal, 0, 0, 0, -4 * program.len() as i32));
    // Each run is 13 rounds of the loop; lockstep takes the dirty pages after each, so the
    // next run's first store marks the page again.
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    let budget = 13 * program.len() as u64;
    for run in 1..=6u64 {
        lockstep(
            &mut reference,
            &mut translated,
            &[budget],
            &format!("run {run}"),
        );
        let rounds = 13 * run;
        let sum: u64 = (10..19u64).map(|r| rounds * (2 * r + 1)).sum();
        assert_eq!(translated.x(19), sum, "run {run}");
    }
    assert!(entries(&translated) > 0, "nothing translated");
}

#[test]
fn two_blocks_whose_pcs_share_a_table_slot_both_stay_translated() {
    use Op::*;
    // Block A at CODE jumps to block B, in another page, and B back to A. Each run of two
    // instructions enters one of them through `Hart::run`'s table lookup, alternately.
    let slot = super::Translator::counter_index;
    let b_pc = (CODE + 0x2_0000..RAM_BASE + 0xf_0000)
        .step_by(4)
        .find(|&pc| slot(pc) == slot(CODE))
        .expect("a pc in RAM that shares CODE's table slot");
    let a = [
        ins(Addi, 10, 10, 0, 1),
        ins(Jal, 0, 0, 0, (b_pc - CODE - 4) as i32),
    ];
    let b = [
        ins(Addi, 11, 11, 0, 1),
        ins(Jal, 0, 0, 0, CODE.wrapping_sub(b_pc + 4) as i32),
    ];
    let mut h = translating(machine(&a));
    h.write_phys(GuestPhysAddr(b_pc), &assemble(&b)).unwrap();
    let mut bus = Bus::default();
    for _ in 0..100 {
        h.run(&mut bus, 2);
    }
    assert_eq!((h.x(10), h.x(11)), (50, 50));
    let stats = h.translator_stats().unwrap();
    assert_eq!(stats.blocks_translated, 2, "{stats:?}");
}

#[test]
fn by_default_only_blocks_run_often_enough_are_translated() {
    use Op::*;
    let program = [
        ins(Addi, 10, 10, 0, 1),
        ins(Blt, 0, 10, 11, -4),
        ins(Jal, 0, 0, 0, 0),
    ];
    let setup = |h: &mut Hart| h.set_x(11, 1000);
    let mut reference = machine(&program);
    let mut translated = machine(&program);
    translated
        .enable_translator(Box::new(Mapped::new(TEST_REGION_BYTES)))
        .unwrap();
    setup(&mut reference);
    setup(&mut translated);
    // Fewer runs of the loop than the threshold: nothing is translated yet.
    let cold = 2 * (super::HOT_EXECUTIONS_DEFAULT as u64 - 2);
    lockstep(&mut reference, &mut translated, &[cold], "cold");
    assert_eq!(translated.translator_stats().unwrap().blocks_translated, 0);
    lockstep(&mut reference, &mut translated, &[2000, 50], "hot");
    let stats = translated.translator_stats().unwrap();
    assert!(
        stats.blocks_translated >= 1 && stats.entries >= 1,
        "{stats:?}"
    );
}

#[test]
fn an_indirect_jump_into_a_remapped_page_runs_what_the_new_mapping_holds() {
    use crate::tests::{sv39_hart, write_u64, ROOT};
    use Op::*;
    // S-mode code at one virtual page that jumps back to its start through x5 (the jump
    // cache, probed inline by translated code), fencing the TLB every round; the page
    // table then maps the page to other code. The jump cache still holds the start's
    // translation at the old physical page, which the jump must not take.
    const VA: u64 = 0x4000_0000;
    const PAGE_A: u64 = RAM_BASE + 0x20_000;
    const PAGE_B: u64 = RAM_BASE + 0x21_000;
    let flags = 0xcb; // V R X A D (privileged spec 4.3.1)
    let code = |step: i32, counter: u8| {
        assemble(&[
            ins(Addi, 10, 10, 0, step),
            ins(Addi, counter, counter, 0, 1),
            ins(SfenceVma, 0, 0, 0, 0),
            ins(Jalr, 0, 5, 0, 0),
        ])
    };
    let leaf = ROOT + 0x2000 + ((VA >> 12) & 0x1ff) * 8;
    let build = || {
        let mut h = sv39_hart(VA, PAGE_A, flags);
        h.write_phys(GuestPhysAddr(PAGE_A), &code(1, 11)).unwrap();
        h.write_phys(GuestPhysAddr(PAGE_B), &code(100, 12)).unwrap();
        h.reset(VA, Privilege::Supervisor, 0, 0);
        h.set_x(5, VA);
        h
    };
    let mut reference = build();
    let mut translated = translating(build());
    lockstep(&mut reference, &mut translated, &[400, 401], "page A");
    for h in [&mut reference, &mut translated] {
        write_u64(h, leaf, (PAGE_B >> 12) << 10 | flags);
    }
    lockstep(&mut reference, &mut translated, &[400, 7, 400], "page B");
    assert!(
        translated.x(12) > 150,
        "page B ran {} times",
        translated.x(12)
    );
    assert!(entries(&translated) > 0, "nothing translated");
}

#[test]
fn code_on_a_page_that_gets_remapped_runs_what_the_new_mapping_holds() {
    use crate::tests::{sv39_hart, write_u64, ROOT};
    use Op::*;
    // S-mode code at one virtual page, first backed by physical page A, then (after the
    // page table changes) by page B, with and without the TLB flush that makes the change
    // visible; translated blocks are keyed by the physical page, so neither may leak.
    const VA: u64 = 0x4000_0000;
    const PAGE_A: u64 = RAM_BASE + 0x20_000;
    const PAGE_B: u64 = RAM_BASE + 0x21_000;
    let flags = 0xcb; // V R X A D (privileged spec 4.3.1)
    let code_a = assemble(&[
        ins(Addi, 10, 10, 0, 1),
        ins(Addi, 11, 11, 0, 1),
        ins(Jal, 0, 0, 0, -8),
    ]);
    let code_b = assemble(&[
        ins(Addi, 10, 10, 0, 100),
        ins(Addi, 12, 12, 0, 1),
        ins(Jal, 0, 0, 0, -8),
    ]);
    let leaf = ROOT + 0x2000 + ((VA >> 12) & 0x1ff) * 8;
    let build = || {
        let mut h = sv39_hart(VA, PAGE_A, flags);
        h.write_phys(GuestPhysAddr(PAGE_A), &code_a).unwrap();
        h.write_phys(GuestPhysAddr(PAGE_B), &code_b).unwrap();
        h.reset(VA, Privilege::Supervisor, 0, 0);
        h
    };
    for flush in [true, false] {
        let mut reference = build();
        let mut translated = translating(build());
        let what = format!("remap, flush {flush}");
        lockstep(&mut reference, &mut translated, &[300, 301], &what);
        for h in [&mut reference, &mut translated] {
            write_u64(h, leaf, (PAGE_B >> 12) << 10 | flags);
            if flush {
                h.flush_translations();
            }
        }
        lockstep(&mut reference, &mut translated, &[300, 7, 300], &what);
        let b_runs = translated.x(12);
        if flush {
            assert!(b_runs > 200, "{what}: page B ran {b_runs} times");
        } else {
            // The cached translation still maps page A, as the spec allows until sfence.vma.
            assert_eq!(b_runs, 0, "{what}: page B ran without a flush");
        }
        assert!(entries(&translated) > 0, "{what}: nothing translated");
    }
}

#[test]
fn a_jump_chained_across_pages_follows_the_target_page_when_it_is_remapped() {
    use crate::tests::{sv39_hart, write_u64, ROOT};
    use Op::*;
    // S-mode code on two virtual pages that jump to each other directly: the jumps are
    // chained. The second page is then mapped to other code (with the TLB flush that makes
    // that visible), and its chained entry must not run the old page's translation.
    const VA: u64 = 0x4000_0000;
    const PAGE_A: u64 = RAM_BASE + 0x20_000;
    const PAGE_B: u64 = RAM_BASE + 0x21_000;
    const PAGE_C: u64 = RAM_BASE + 0x22_000;
    let flags = 0xcb; // V R X A D (privileged spec 4.3.1)
    let code = |counter: u8, to: i32| {
        assemble(&[ins(Addi, counter, counter, 0, 1), ins(Jal, 0, 0, 0, to)])
    };
    let second = ROOT + 0x2000 + (((VA + 0x1000) >> 12) & 0x1ff) * 8;
    let build = || {
        let mut h = sv39_hart(VA, PAGE_A, flags);
        write_u64(&mut h, second, (PAGE_B >> 12) << 10 | flags);
        h.write_phys(GuestPhysAddr(PAGE_A), &code(10, 0x1000 - 4))
            .unwrap();
        h.write_phys(GuestPhysAddr(PAGE_B), &code(11, -0x1000 - 4))
            .unwrap();
        h.write_phys(GuestPhysAddr(PAGE_C), &code(12, -0x1000 - 4))
            .unwrap();
        h.reset(VA, Privilege::Supervisor, 0, 0);
        h
    };
    let mut reference = build();
    let mut translated = translating(build());
    lockstep(&mut reference, &mut translated, &[400, 401], "page B");
    let stats = translated.translator_stats().expect("translator on");
    // Both jumps linked at their first exits (two entries), then one entry a run.
    assert_eq!((stats.chains, stats.entries), (2, 4), "{stats:?}");
    assert_eq!((translated.x(10), translated.x(11)), (201, 200));
    for h in [&mut reference, &mut translated] {
        write_u64(h, second, (PAGE_C >> 12) << 10 | flags);
        h.flush_translations();
    }
    lockstep(&mut reference, &mut translated, &[400, 7, 400], "page C");
    // From A's jump on: 201 rounds of four instructions and two of a 202nd.
    assert_eq!((translated.x(11), translated.x(12)), (200, 202));
}

#[test]
fn an_instruction_that_crosses_into_the_next_page_runs_in_translated_code() {
    use Op::*;
    // A loop at the end of the page at CODE: three addi, a c.nop, then an addi whose four
    // bytes straddle the page boundary, and on the next page the jump back. No block can
    // hold the straddling instruction (its bytes come from two pages, each mapped on its
    // own), so it is a block of its own that fetches it afresh every time it runs.
    let start = CODE + 0xff0;
    let mut bytes = assemble(&vec![ins(Addi, 0, 0, 0, 0); 0xff0 / 4]);
    bytes.extend(assemble(&[
        ins(Addi, 10, 10, 0, 1),
        ins(Addi, 12, 12, 0, 2),
        ins(Addi, 13, 13, 0, 5),
    ]));
    bytes.extend(0x0001u16.to_le_bytes()); // c.nop
    bytes.extend(assemble(&[
        ins(Addi, 11, 11, 0, 3),
        ins(Jal, 0, 0, 0, start as i32 - (CODE + 0x1002) as i32),
    ]));
    let load = |h: &mut Hart| {
        h.write_phys(GuestPhysAddr(CODE), &bytes).unwrap();
        h.set_pc(start);
    };
    let mut reference = machine(&[]);
    let mut translated = translating(machine(&[]));
    load(&mut reference);
    load(&mut translated);
    // 100 rounds of 6 instructions, in runs that end inside and between rounds.
    lockstep(&mut reference, &mut translated, &[7, 293, 300], "rounds");
    assert_eq!(
        (reference.x(10), reference.x(11)),
        (100, 300),
        "rounds run by the interpreter"
    );
    // Each run enters translated code once or twice, not once a round (the straddling
    // instruction used to end every round in `Hart::run`).
    let stats = translated.translator_stats().expect("translator on");
    assert!(stats.entries <= 6, "{stats:?}");
    // The half in the next page holds the immediate: rewriting it (from outside, which
    // bumps only that page's generation) changes what the straddling instruction adds.
    let high_half = (encode(&ins(Addi, 11, 11, 0, 7)).expect("encodable") >> 16) as u16;
    for h in [&mut reference, &mut translated] {
        h.write_phys(GuestPhysAddr(CODE + 0x1000), &high_half.to_le_bytes())
            .unwrap();
    }
    lockstep(&mut reference, &mut translated, &[600], "rewritten");
    assert_eq!(reference.x(11), 300 + 7 * 100, "the new immediate");
}

#[test]
fn fences_go_on_through_the_lookup_without_leaving_translated_code() {
    use Op::*;
    // sfence.vma of a data page and fence.i end their blocks (the next instruction is
    // fetched afresh), but change nothing `Hart::run` checks: translated code goes on at
    // the next instruction through its lookup.
    let program = [
        ins(Addi, 10, 10, 0, 1),
        ins(SfenceVma, 0, 15, 0, 0),
        ins(Addi, 11, 11, 0, 1),
        ins(FenceI, 0, 0, 0, 0),
        ins(Addi, 12, 12, 0, 1),
        ins(Jal, 0, 0, 0, -20),
    ];
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    for h in [&mut reference, &mut translated] {
        h.set_x(15, SCRATCH);
    }
    lockstep(&mut reference, &mut translated, &[7, 293, 300], "rounds");
    assert_eq!(
        (reference.x(10), reference.x(11), reference.x(12)),
        (100, 100, 100)
    );
    // Three runs, and a few first jumps to blocks not translated yet.
    let stats = translated.translator_stats().expect("translator on");
    assert!(stats.entries <= 8, "{stats:?}");
    assert_eq!(stats.interpreted, 200, "{stats:?}");
}

#[test]
fn sstatus_accesses_run_inline_within_one_block_and_trap_from_user_mode() {
    use Op::*;
    // Linux's local_irq_save (csrrci with SIE), its save of the flags (csrr), an enable
    // (csrrsi), a restore (csrrs) and an enable that change nothing, then a user-access
    // window as `__enable_user_access` opens and closes it (csrs and csrc of SUM, here
    // with MXR, from a register). No interrupt is pending, so none of them needs the
    // interpreter or ends the block: the loop is one block. FS is Dirty, so the reads see
    // SD set; in U-mode every sstatus access is an illegal instruction, which the handler
    // skips.
    let program = [
        ins(Addi, 10, 10, 0, 1),
        ins(Csrrci, 13, 2, 0, SSTATUS as i32),
        ins(Csrrs, 14, 0, 0, SSTATUS as i32),
        ins(Csrrsi, 0, 2, 0, SSTATUS as i32),
        ins(Csrrs, 0, 13, 0, SSTATUS as i32),
        ins(Csrrsi, 15, 2, 0, SSTATUS as i32),
        ins(Csrrs, 0, 16, 0, SSTATUS as i32),
        ins(Csrrc, 17, 16, 0, SSTATUS as i32),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -36),
    ];
    for mode in [Privilege::Supervisor, Privilege::User] {
        let setup = |h: &mut Hart| {
            h.write_csr(MSTATUS, 3 << 13 | 1 << 1);
            h.reset(CODE, mode, 0, 0);
            h.set_x(7, 1 << 40);
            h.set_x(16, MSTATUS_SUM | MSTATUS_MXR);
        };
        let translated = lockstep_from(&program, setup, &[5, 9_995], "sstatus loop");
        let stats = translated.translator_stats().expect("translator on");
        if mode == Privilege::Supervisor {
            assert_eq!(translated.x(10), 1_000);
            let status = 1 << 63 | 2 << 32 | 3 << 13;
            assert_eq!(translated.x(14), status, "SD, UXL = 64, FS");
            assert_eq!(translated.x(15), status | 1 << 1, "and SIE");
            assert_eq!(
                translated.x(17),
                status | 1 << 1 | MSTATUS_SUM | MSTATUS_MXR
            );
            // The block at the first run's stop and the loop's block.
            assert_eq!(
                (stats.interpreted, stats.blocks_translated),
                (0, 2),
                "{stats:?}"
            );
        } else {
            assert_eq!(
                (translated.x(14), translated.x(17)),
                (0, 0),
                "the reads trapped"
            );
        }
    }
}

#[test]
fn sstatus_writes_key_the_load_tlb_by_mode_sum_and_mxr() {
    use Op::*;
    // M-mode sets SUM in sstatus and loads from RAM (no translation), then returns to
    // S-mode, where RAM is mapped execute-only: the same load faults there (privileged
    // spec 4.3.1; the handler skips it), succeeds with MXR set and faults again once it is
    // clear. The M-mode load must not fill the load TLB under the key S-mode uses, nor a
    // load with MXR under the key without it, or a later load would hit it. Last, a loop
    // clears MXR together with FS, a write the interpreter runs and translated code goes
    // on after through its lookup: with the new keys, or the load after it would hit.
    let program = [
        ins(Csrrs, 0, 9, 0, SSTATUS as i32),
        ins(Ld, 10, 8, 0, 0),
        ins(Csrrw, 0, 11, 0, MEPC as i32),
        ins(Mret, 0, 0, 0, 0),
        ins(Ld, 12, 8, 0, 0),
        ins(Csrrs, 0, 13, 0, SSTATUS as i32),
        ins(Ld, 14, 8, 0, 0),
        ins(Csrrc, 0, 13, 0, SSTATUS as i32),
        ins(Ld, 15, 8, 0, 0),
        ins(Csrrs, 0, 19, 0, SSTATUS as i32),
        ins(Csrrs, 0, 13, 0, SSTATUS as i32),
        ins(Ld, 16, 8, 0, 0),
        ins(Csrrc, 0, 17, 0, SSTATUS as i32),
        ins(Ld, 18, 8, 0, 0),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -24),
        ins(Jal, 0, 0, 0, 0),
    ];
    let setup = |h: &mut Hart| {
        // RAM identity-mapped by a gigapage (V X A D).
        map_sv39(h, 0xc9, 0, &[]);
        h.write_phys(GuestPhysAddr(SCRATCH), &0x5au64.to_le_bytes())
            .unwrap();
        h.write_csr(MSTATUS, 1 << 11);
        h.set_x(7, 3);
        h.set_x(8, SCRATCH);
        h.set_x(9, MSTATUS_SUM);
        h.set_x(11, CODE + 16);
        h.set_x(13, MSTATUS_MXR);
        h.set_x(17, MSTATUS_MXR | 1 << 13);
        h.set_x(19, 1 << 13);
    };
    let translated = lockstep_from(&program, setup, &[100], "M-mode then S-mode");
    let loaded = [10, 12, 14, 15, 16, 18].map(|r| translated.x(r));
    assert_eq!(loaded, [0x5a, 0, 0x5a, 0, 0x5a, 0]);
}

#[test]
fn reads_of_time_run_inline_where_the_counter_is_enabled() {
    use crate::csr_numbers::{MCOUNTEREN, TIME};
    use Op::*;
    // A loop that reads `time` (the test platform's is 5 + instret / 3) and sums it. In
    // S-mode with mcounteren.TM set every read runs inline at the interpreter's count; in
    // U-mode scounteren.TM is clear and every read is an illegal instruction.
    let program = [
        ins(Addi, 12, 12, 0, 1),
        ins(Csrrs, 10, 0, 0, TIME as i32),
        ins(Add, 11, 11, 10, 0),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -16),
        ins(Jal, 0, 0, 0, 0),
    ];
    for mode in [Privilege::Supervisor, Privilege::User] {
        let setup = |h: &mut Hart| {
            h.write_csr(MCOUNTEREN, 1 << 1);
            h.reset(CODE, mode, 0, 0);
            h.set_x(7, 1000);
        };
        let translated = lockstep_from(&program, setup, &[5, 4_001, 1_000], "time reads");
        let stats = translated.translator_stats().expect("translator on");
        if mode == Privilege::Supervisor {
            // Round k reads at instret 5k + 1.
            let sum: u64 = (0..1000u64).map(|k| 5 + (5 * k + 1) / 3).sum();
            assert_eq!((translated.x(10), translated.x(11)), (5 + 4996 / 3, sum));
            assert_eq!(stats.interpreted, 0, "{stats:?}");
        } else {
            assert_eq!(
                (translated.x(10), translated.x(11)),
                (0, 0),
                "the reads trapped"
            );
        }
    }
}

#[test]
fn enabling_sie_with_a_delegated_interrupt_pending_takes_it_at_once() {
    use crate::csr_numbers::{MIDELEG, SIE, STVEC};
    use Op::*;
    // An S-mode loop disables SIE every round and enables it every fourth round: from a
    // register after enabling the supervisor timer interrupt in sie (every eighth round),
    // from an immediate otherwise. The timer interrupt is delegated and its line stays
    // raised; the S-mode handler counts, disables it in sie and returns with SIE clear
    // (it clears SPIE first). So every enable from the register makes the interrupt
    // takeable and must leave translated code at once, for `Hart::run` to take it at the
    // same count as the interpreter, although it also turns FS on (which the handler turns
    // off); the enables from the immediate find nothing pending and enabled and run
    // inline.
    let program = [
        ins(Addi, 10, 10, 0, 1),
        ins(Csrrci, 0, 2, 0, SSTATUS as i32),
        ins(Andi, 11, 10, 0, 3),
        ins(Bne, 0, 11, 0, 28),
        ins(Andi, 11, 10, 0, 4),
        ins(Beq, 0, 11, 0, 12),
        ins(Csrrsi, 0, 2, 0, SSTATUS as i32),
        ins(Jal, 0, 0, 0, 12),
        ins(Csrrs, 0, 22, 0, SIE as i32),
        ins(Csrrs, 0, 12, 0, SSTATUS as i32),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -44),
        ins(Jal, 0, 0, 0, 0),
    ];
    let handler = [
        ins(Addi, 20, 20, 0, 1),
        ins(Csrrc, 0, 22, 0, SIE as i32),
        ins(Csrrc, 0, 21, 0, SSTATUS as i32),
        ins(Sret, 0, 0, 0, 0),
    ];
    let setup = |h: &mut Hart| {
        h.write_phys(GuestPhysAddr(HANDLER + 0x100), &assemble(&handler))
            .unwrap();
        h.write_csr(STVEC, HANDLER + 0x100);
        h.write_csr(MIDELEG, STIP);
        h.set_interrupt_lines(STIP);
        h.reset(CODE, Privilege::Supervisor, 0, 0);
        h.set_x(7, 3_000);
        h.set_x(12, MSTATUS_SIE | 1 << 13);
        h.set_x(21, 1 << 5 | 1 << 13);
        h.set_x(22, STIP);
    };
    let translated = lockstep_from(&program, setup, &[3, 700, 19, 30_000], "enables");
    assert_eq!((translated.x(7), translated.x(20)), (0, 375));
    // Each eighth round five instructions go to the interpreter: the write of sie, the
    // enable that makes the interrupt takeable, and the handler's two clears and sret.
    let stats = translated.translator_stats().expect("translator on");
    assert_eq!(stats.interpreted, 5 * 375, "{stats:?}");
}

#[test]
fn data_csr_accesses_run_inline_and_trap_below_their_privilege() {
    use Op::*;
    // A trap entry and exit as Linux's: swap sp with sscratch, read sepc, scause and stval,
    // write sepc back odd (bit 0 reads back clear), set and clear bits of sscratch from a
    // register and an immediate, a set with nothing to set, the swap back, and a read of
    // mscratch, which only M-mode may access (the M-mode handler skips it).
    let program = [
        ins(Addi, 10, 10, 0, 1),
        ins(Csrrw, 2, 2, 0, SSCRATCH as i32),
        ins(Csrrs, 11, 0, 0, SEPC as i32),
        ins(Csrrs, 12, 0, 0, SCAUSE as i32),
        ins(Csrrs, 13, 0, 0, STVAL as i32),
        ins(Addi, 11, 11, 0, 5),
        ins(Csrrw, 0, 11, 0, SEPC as i32),
        ins(Csrrs, 14, 15, 0, SSCRATCH as i32),
        ins(Csrrci, 16, 3, 0, SSCRATCH as i32),
        ins(Csrrsi, 18, 0, 0, SSCRATCH as i32),
        ins(Csrrw, 2, 2, 0, SSCRATCH as i32),
        ins(Csrrs, 17, 0, 0, MSCRATCH as i32),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -52),
        ins(Jal, 0, 0, 0, 0),
    ];
    for mode in [Privilege::Supervisor, Privilege::User] {
        let setup = |h: &mut Hart| {
            h.reset(CODE, mode, 0, 0);
            h.write_csr(SSCRATCH, 0x1000);
            h.write_csr(SCAUSE, 8);
            h.write_csr(STVAL, 0x55);
            h.write_csr(MSCRATCH, 0x77);
            h.set_x(7, 50);
            h.set_x(15, 0xf0);
            h.set_x(17, 0x99);
        };
        let translated = lockstep_from(&program, setup, &[5, 3_000], "data csr loop");
        let stats = translated.translator_stats().expect("translator on");
        if mode == Privilege::Supervisor {
            assert_eq!((translated.x(7), translated.x(10)), (0, 50));
            // sepc gains 5 a round, bit 0 cleared: 0, 4, 8, ... read back before the add.
            assert_eq!(translated.x(11), 49 * 4 + 5);
            assert_eq!((translated.x(12), translated.x(13)), (8, 0x55));
            assert_eq!(translated.x(17), 0x99, "the read of mscratch trapped");
            // Each round only the read of mscratch and the handler's mret go to the
            // interpreter.
            assert_eq!(stats.interpreted, 100, "{stats:?}");
        } else {
            // Every access trapped: x11 only gained its 5 a round.
            assert_eq!((translated.x(7), translated.x(11)), (0, 250));
            let read = [12, 13, 14, 16, 17, 18].map(|r| translated.x(r));
            assert_eq!(read, [0, 0, 0, 0, 0x99, 0], "the reads trapped");
        }
    }
}

#[test]
fn calls_and_returns_through_the_host_stack_match_the_interpreter() {
    use Op::*;
    // Each round calls F, which recurses 40 deep (more frames than translated code keeps)
    // and fences a data page at the bottom (a refetch, which drops the frames), then calls
    // G, which returns past its call (to a return address its caller did not push).
    let program = [
        ins(Addi, 10, 0, 0, 40),
        ins(Jal, 1, 0, 0, 20), // call F
        ins(Jal, 1, 0, 0, 56), // call G
        ins(Addi, 13, 13, 0, 100),
        ins(Addi, 11, 11, 0, 1), // G returns here
        ins(Jal, 0, 0, 0, -20),
        // F:
        ins(Addi, 2, 2, 0, -16),
        ins(Sd, 0, 2, 1, 0),
        ins(Addi, 10, 10, 0, -1),
        ins(Beq, 0, 10, 0, 12),
        ins(Jal, 1, 0, 0, -16), // call F
        ins(Jal, 0, 0, 0, 8),
        ins(SfenceVma, 0, 15, 0, 0),
        ins(Ld, 1, 2, 0, 0),
        ins(Addi, 2, 2, 0, 16),
        ins(Jalr, 0, 1, 0, 0), // return
        // G:
        ins(Addi, 1, 1, 0, 4),
        ins(Jalr, 0, 1, 0, 0), // return, 4 bytes past the call's return address
    ];
    let prime_budgets = [
        1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 97, 389,
    ];
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    for h in [&mut reference, &mut translated] {
        h.set_x(15, SCRATCH);
    }
    lockstep(
        &mut reference,
        &mut translated,
        &prime_budgets,
        "short runs",
    );
    lockstep(&mut reference, &mut translated, &[20_000], "a long run");
    // 39 levels of 9 instructions and the bottom's 8, 2 in G, 5 in the loop (x11 counts
    // near the end of a round).
    let round = 39 * 9 + 8 + 2 + 5;
    let total: u64 = prime_budgets.iter().sum::<u64>() + 20_000;
    assert_eq!(reference.x(11), total / round);
    assert_eq!(
        reference.x(13),
        0,
        "G skipped the instruction after its call"
    );
}

#[test]
fn sum_toggles_stay_in_translated_code_and_change_what_s_mode_may_load() {
    use Op::*;
    // Linux's user-access windows: csrs sstatus.SUM, a load from a U page, csrc SUM. The
    // writes change the TLB keys, not anything `Hart::run` checks, so translated code goes
    // on past them with the new keys: a load from the U page right after SUM is cleared
    // faults (privileged spec 4.3.1; the handler skips it) in every round, although the
    // load TLB holds the page under the key with SUM, also in runs entered with SUM set.
    const VA: u64 = 0x4000_0000;
    const USER_PAGE: u64 = RAM_BASE + 0x20_000;
    let program = [
        ins(Csrrs, 0, 9, 0, SSTATUS as i32),
        ins(Ld, 10, 8, 0, 0),
        ins(Addi, 11, 11, 0, 1),
        ins(Csrrc, 0, 9, 0, SSTATUS as i32),
        ins(Ld, 12, 8, 0, 0),
        ins(Jal, 0, 0, 0, -20),
    ];
    let build = || {
        let mut h = machine(&program);
        // RAM identity-mapped by a gigapage (V R W X A D); VA onto USER_PAGE (V R W U A D).
        map_sv39(&mut h, 0xcf, VA, &[(USER_PAGE, 0xd7)]);
        h.write_phys(GuestPhysAddr(USER_PAGE), &0x5au64.to_le_bytes())
            .unwrap();
        h.reset(CODE, Privilege::Supervisor, 0, 0);
        h.set_x(8, VA);
        h.set_x(9, 1 << 18);
        h
    };
    let mut reference = build();
    let mut translated = translating(build());
    // Runs of 7 instructions end at every point of the 9 a round retires (with the
    // handler's 4; the faulting load retires none), so some enter translated code with
    // SUM set and clear it there.
    lockstep(&mut reference, &mut translated, &[7; 300], "short runs");
    lockstep(&mut reference, &mut translated, &[10_000], "a long run");
    assert_eq!(reference.x(10), 0x5a);
    assert_eq!(reference.x(11), (7 * 300 + 10_000) / 9 + 1);
    assert_eq!(translated.x(12), 0, "the loads without SUM faulted");

    // Without the faulting load, a thousand rounds stay in translated code.
    let mut program = program;
    program[4] = ins(Addi, 7, 7, 0, -1);
    program[5] = ins(Bne, 0, 7, 0, -20);
    let mut reference = machine(&program);
    let mut translated = translating(machine(&program));
    for h in [&mut reference, &mut translated] {
        h.reset(CODE, Privilege::Supervisor, 0, 0);
        h.set_x(7, 1000);
        h.set_x(8, SCRATCH);
        h.set_x(9, 1 << 18);
    }
    lockstep(
        &mut reference,
        &mut translated,
        &[6_000],
        "rounds without a fault",
    );
    assert_eq!(reference.x(11), 1000);
    let stats = translated.translator_stats().expect("translator on");
    assert!(stats.entries <= 8, "{stats:?}");
    // Only the first load goes to the interpreter, to fill the TLB.
    assert_eq!(stats.interpreted, 1, "{stats:?}");
}
#[test]
fn saves_and_restores_on_the_stack_match_the_interpreter_within_a_page_and_across_its_end() {
    use Op::*;
    // A function's frame as compilers lay it out, in S-mode: stores of five registers
    // through sp, work, loads of them back, with operations between that use the host's
    // shift-count and divide registers; the load of x2 itself ends their group (it loads
    // sp + 8, and the next load goes through it). Translated code probes each run
    // of stores or loads once. The stack's two virtual pages map to RAM pages apart: with
    // sp just past the first page's end the frame straddles them and each access is
    // probed on its own. Between runs the dirty pages are taken, so that the stores of
    // the next run must mark them again.
    const STACK: u64 = 0x4000_0000;
    let program = [
        ins(Addi, 2, 2, 0, -64),
        ins(Addi, 11, 2, 0, 8),
        ins(Sd, 0, 2, 1, 56),
        ins(Sll, 12, 8, 7, 0),
        ins(Sd, 0, 2, 8, 48),
        ins(Sw, 0, 2, 9, 40),
        ins(Divu, 13, 9, 7, 0),
        ins(Sh, 0, 2, 18, 34),
        ins(Sd, 0, 2, 11, 24),
        ins(Addi, 8, 8, 0, 3),
        ins(Addi, 9, 9, 0, -1),
        ins(Ld, 1, 2, 0, 56),
        ins(Lw, 9, 2, 0, 40),
        ins(Mulhu, 14, 9, 12, 0),
        ins(Lh, 18, 2, 0, 34),
        ins(Ld, 20, 2, 0, 48),
        ins(Srl, 15, 20, 7, 0),
        ins(Ld, 2, 2, 0, 24),
        ins(Ld, 21, 2, 0, 16),
        ins(Addi, 2, 2, 0, 56),
        ins(Add, 10, 10, 20, 0),
        ins(Addi, 7, 7, 0, -1),
        ins(Bne, 0, 7, 0, -88),
        ins(Jal, 0, 0, 0, 0),
    ];
    for (sp, what) in [(STACK + 0x800, "within a page"), (STACK + 0x1020, "across")] {
        let build = || {
            let mut h = machine(&program);
            // RAM identity-mapped by a gigapage (V R W X A D); the stack's pages onto RAM
            // 64 KiB apart (V R W A D).
            let stack_pages = [(RAM_BASE + 0x20_000, 0xc7), (RAM_BASE + 0x30_000, 0xc7)];
            map_sv39(&mut h, 0xcf, STACK, &stack_pages);
            h.reset(CODE, Privilege::Supervisor, 0, 0);
            h.set_x(1, 0x1111);
            h.set_x(2, sp);
            h.set_x(7, 500);
            h.set_x(8, 7);
            h.set_x(9, 0x8000_0005);
            h.set_x(18, 0xffff_9876);
            h
        };
        let mut reference = build();
        let mut translated = translating(build());
        lockstep(&mut reference, &mut translated, &[5, 997], what);
        let dirty = reference.take_dirty_pages();
        assert_eq!(translated.take_dirty_pages(), dirty, "{what}");
        lockstep(&mut reference, &mut translated, &[12_000], what);
        // x8 was stored before it gained 3 and reloaded into x20 each round: x10 sums
        // 7, 10, 13 and so on; x9 and x18 come back sign-extended from 32 and 16 bits.
        assert_eq!(translated.x(10), 7 * 500 + 3 * 499 * 500 / 2, "{what}");
        assert_eq!(translated.x(8), 7 + 3 * 500, "{what}");
        assert_eq!(translated.x(9), 0xffff_ffff_8000_0005, "{what}");
        assert_eq!(translated.x(18), 0xffff_ffff_ffff_9876, "{what}");
        assert_eq!((translated.x(2), translated.x(21)), (sp, sp - 56), "{what}");
    }
}
