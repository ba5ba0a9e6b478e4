//! Unit tests for the hart: instruction classes, traps, interrupts, Sv39, counters, cache.

extern crate std;

use std::collections::BTreeMap;
use std::format;
use std::vec::Vec;

use crate::inst::{format_of, Format, TABLE};
use crate::mmu::Access;
use crate::*;

pub(crate) const RAM_BASE: u64 = 0x8000_0000;
pub(crate) const RAM_SIZE: u64 = 1 << 20;
const MMIO_BASE: u64 = 0x1000_0000;

/// A deterministic pseudo-random generator (xorshift64*) for property tests.
pub(crate) struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A platform with 256 bytes of MMIO scratch at MMIO_BASE; time = 10 * instret.
#[derive(Default)]
pub(crate) struct Bus {
    pub mmio: BTreeMap<u64, u8>,
    pub stores: Vec<(u64, u8, u64)>,
}
impl Platform for Bus {
    fn mmio_load(
        &mut self,
        addr: GuestPhysAddr,
        size_bytes: u8,
        _now: InstructionCount,
    ) -> Option<u64> {
        if !(MMIO_BASE..MMIO_BASE + 0x100).contains(&addr.0) {
            return None;
        }
        let mut v = 0;
        for i in 0..size_bytes as u64 {
            v |= (*self.mmio.get(&(addr.0 + i)).unwrap_or(&0) as u64) << (8 * i);
        }
        Some(v)
    }
    fn mmio_store(
        &mut self,
        addr: GuestPhysAddr,
        size_bytes: u8,
        value: u64,
        _now: InstructionCount,
    ) -> bool {
        if !(MMIO_BASE..MMIO_BASE + 0x100).contains(&addr.0) {
            return false;
        }
        for i in 0..size_bytes as u64 {
            self.mmio.insert(addr.0 + i, (value >> (8 * i)) as u8);
        }
        self.stores.push((addr.0, size_bytes, value));
        true
    }
    fn time(&mut self, instret: InstructionCount) -> u64 {
        5 + instret.0 / 3
    }
    fn linear_time(&self) -> Option<crate::LinearTime> {
        Some(crate::LinearTime {
            offset_ticks: 5,
            instructions_per_tick: 3,
        })
    }
}

pub(crate) fn ins(op: Op, rd: u8, rs1: u8, rs2: u8, imm: i32) -> Instruction {
    Instruction {
        op,
        rd,
        rs1,
        rs2,
        rs3: 0,
        rm: 0,
        length_bytes: 4,
        imm,
    }
}
/// An FP instruction with a rounding mode.
fn fpr(op: Op, rd: u8, rs1: u8, rs2: u8, rm: u8) -> Instruction {
    Instruction {
        op,
        rd,
        rs1,
        rs2,
        rs3: 0,
        rm,
        length_bytes: 4,
        imm: 0,
    }
}
fn csr(op: Op, rd: u8, rs1: u8, csr: u16) -> Instruction {
    ins(op, rd, rs1, 0, csr as i32)
}
fn ebreak() -> Instruction {
    ins(Op::Ebreak, 0, 0, 0, 0)
}

pub(crate) fn assemble(program: &[Instruction]) -> Vec<u8> {
    program
        .iter()
        .flat_map(|i| encode(i).expect("encodable").to_le_bytes())
        .collect()
}

/// A hart whose PMP grants S and U mode all of memory, as firmware leaves it.
pub(crate) fn hart(host_monitor: bool) -> Hart {
    let mut h = hart_without_pmp_entries(host_monitor);
    grant_all_memory(&mut h);
    h
}

/// A hart as reset leaves it: every PMP entry off, so S and U mode can reach nothing.
pub(crate) fn hart_without_pmp_entries(host_monitor: bool) -> Hart {
    Hart::new(HartConfig {
        ram_base: GuestPhysAddr(RAM_BASE),
        ram_size_bytes: RAM_SIZE,
        host_monitor,
    })
}

/// PMP entry 15 as NAPOT over every address with R, W and X (privileged spec 3.7.1: with
/// PMP implemented, an S or U access that no entry matches fails).
pub(crate) fn grant_all_memory(h: &mut Hart) {
    assert!(h.write_csr(PMPADDR0 + 15, (1 << 54) - 1));
    assert!(h.write_csr(PMPCFG0 + 2, (PMP_NAPOT | 7) << 56));
}

const PMPCFG0: u16 = 0x3a0;
const PMPADDR0: u16 = 0x3b0;
const PMP_TOR: u64 = 1 << 3;
const PMP_NA4: u64 = 2 << 3;
const PMP_NAPOT: u64 = 3 << 3;
const PMP_L: u64 = 1 << 7;

/// A host-monitor hart in M-mode with `program` at the RAM base; ebreak ends a test.
fn boot(program: &[Instruction]) -> (Hart, Bus) {
    let mut h = hart(true);
    h.write_phys(GuestPhysAddr(RAM_BASE), &assemble(program))
        .unwrap();
    h.reset(RAM_BASE, Privilege::Machine, 0, 0);
    (h, Bus::default())
}

/// Runs until the test's final ebreak (a MonitorTrap with cause 3).
fn run_to_break(h: &mut Hart, bus: &mut Bus) -> RunOutcome {
    let out = h.run(bus, 100_000);
    match out.stop {
        StopReason::MonitorTrap { cause: 3, .. } => out,
        other => panic!("expected ebreak, got {other:?} at pc {:#x}", h.pc()),
    }
}

// ---------------------------------------------------------------- decode / encode

/// (encoding, operation) pairs produced by GNU as 2.40 for rv64gc.
const GOLDEN: &[(u32, Op)] = &[
    (0x12345537, Op::Lui),
    (0xfffff317, Op::Auipc),
    (0x001000ef, Op::Jal),
    (0xff4582e7, Op::Jalr),
    (0x80b50063, Op::Beq),
    (0x7e941fe3, Op::Bne),
    (0x00d64463, Op::Blt),
    (0xfef75ce3, Op::Bge),
    (0x01de6863, Op::Bltu),
    (0x01ff7a63, Op::Bgeu),
    (0x80010503, Op::Lb),
    (0x7ff11583, Op::Lh),
    (0x00452603, Op::Lw),
    (0xff853683, Op::Ld),
    (0x0015c703, Op::Lbu),
    (0x0025d783, Op::Lhu),
    (0x0035e803, Op::Lwu),
    (0xfea10fa3, Op::Sb),
    (0x7eb41fa3, Op::Sh),
    (0x80c4a023, Op::Sw),
    (0x00d13823, Op::Sd),
    (0xfff58513, Op::Addi),
    (0x0055a513, Op::Slti),
    (0xffb5b513, Op::Sltiu),
    (0x7ff5c513, Op::Xori),
    (0x8005e513, Op::Ori),
    (0x0ff5f513, Op::Andi),
    (0x03f59513, Op::Slli),
    (0x0215d513, Op::Srli),
    (0x4015d513, Op::Srai),
    (0x00c58533, Op::Add),
    (0x40c58533, Op::Sub),
    (0x00c59533, Op::Sll),
    (0x00c5a533, Op::Slt),
    (0x00c5b533, Op::Sltu),
    (0x00c5c533, Op::Xor),
    (0x00c5d533, Op::Srl),
    (0x40c5d533, Op::Sra),
    (0x00c5e533, Op::Or),
    (0x00c5f533, Op::And),
    (0xff95851b, Op::Addiw),
    (0x01f5951b, Op::Slliw),
    (0x0035d51b, Op::Srliw),
    (0x41e5d51b, Op::Sraiw),
    (0x00c5853b, Op::Addw),
    (0x40c5853b, Op::Subw),
    (0x00c5953b, Op::Sllw),
    (0x00c5d53b, Op::Srlw),
    (0x40c5d53b, Op::Sraw),
    (0x0310000f, Op::Fence),
    (0x0000100f, Op::FenceI),
    (0x00000073, Op::Ecall),
    (0x00100073, Op::Ebreak),
    (0x30059573, Op::Csrrw),
    (0x1005a573, Op::Csrrs),
    (0xfff5b573, Op::Csrrc),
    (0x305fd573, Op::Csrrwi),
    (0x1800e573, Op::Csrrsi),
    (0x00317573, Op::Csrrci),
    (0x02c58533, Op::Mul),
    (0x02c59533, Op::Mulh),
    (0x02c5a533, Op::Mulhsu),
    (0x02c5b533, Op::Mulhu),
    (0x02c5c533, Op::Div),
    (0x02c5d533, Op::Divu),
    (0x02c5e533, Op::Rem),
    (0x02c5f533, Op::Remu),
    (0x02c5853b, Op::Mulw),
    (0x02c5c53b, Op::Divw),
    (0x02c5d53b, Op::Divuw),
    (0x02c5e53b, Op::Remw),
    (0x02c5f53b, Op::Remuw),
    (0x1405a52f, Op::LrW),
    (0x1ac5a52f, Op::ScW),
    (0x0ec5a52f, Op::AmoswapW),
    (0x00c5a52f, Op::AmoaddW),
    (0x20c5a52f, Op::AmoxorW),
    (0x60c5a52f, Op::AmoandW),
    (0x40c5a52f, Op::AmoorW),
    (0x80c5a52f, Op::AmominW),
    (0xa0c5a52f, Op::AmomaxW),
    (0xc0c5a52f, Op::AmominuW),
    (0xe0c5a52f, Op::AmomaxuW),
    (0x1005b52f, Op::LrD),
    (0x18c5b52f, Op::ScD),
    (0x08c5b52f, Op::AmoswapD),
    (0x00c5b52f, Op::AmoaddD),
    (0x20c5b52f, Op::AmoxorD),
    (0x60c5b52f, Op::AmoandD),
    (0x40c5b52f, Op::AmoorD),
    (0x80c5b52f, Op::AmominD),
    (0xa0c5b52f, Op::AmomaxD),
    (0xc0c5b52f, Op::AmominuD),
    (0xe0c5b52f, Op::AmomaxuD),
    (0x30200073, Op::Mret),
    (0x10200073, Op::Sret),
    (0x10500073, Op::Wfi),
    (0x12b50073, Op::SfenceVma),
    (0x00c52507, Op::Flw),
    (0xfeb5ae27, Op::Fsw),
    (0x68c58543, Op::FmaddS),
    (0x68c59547, Op::FmsubS),
    (0x68c5a54b, Op::FnmsubS),
    (0x68c5b54f, Op::FnmaddS),
    (0x00c5c553, Op::FaddS),
    (0x08c5f553, Op::FsubS),
    (0x10c5f553, Op::FmulS),
    (0x18c5f553, Op::FdivS),
    (0x5805f553, Op::FsqrtS),
    (0x20c58553, Op::FsgnjS),
    (0x20c59553, Op::FsgnjnS),
    (0x20c5a553, Op::FsgnjxS),
    (0x28c58553, Op::FminS),
    (0x28c59553, Op::FmaxS),
    (0xc0059553, Op::FcvtWS),
    (0xc015f553, Op::FcvtWuS),
    (0xc025f553, Op::FcvtLS),
    (0xc035f553, Op::FcvtLuS),
    (0xe0058553, Op::FmvXW),
    (0xa0c5a553, Op::FeqS),
    (0xa0c59553, Op::FltS),
    (0xa0c58553, Op::FleS),
    (0xe0059553, Op::FclassS),
    (0xd005f553, Op::FcvtSW),
    (0xd015f553, Op::FcvtSWu),
    (0xd025f553, Op::FcvtSL),
    (0xd035f553, Op::FcvtSLu),
    (0xf0058553, Op::FmvWX),
    (0x00813507, Op::Fld),
    (0xfeb13827, Op::Fsd),
    (0x6ac5f543, Op::FmaddD),
    (0x6ac5f547, Op::FmsubD),
    (0x6ac5f54b, Op::FnmsubD),
    (0x6ac5f54f, Op::FnmaddD),
    (0x02c5f553, Op::FaddD),
    (0x0ac5f553, Op::FsubD),
    (0x12c5f553, Op::FmulD),
    (0x1ac5f553, Op::FdivD),
    (0x5a05f553, Op::FsqrtD),
    (0x22c58553, Op::FsgnjD),
    (0x22c59553, Op::FsgnjnD),
    (0x22c5a553, Op::FsgnjxD),
    (0x2ac58553, Op::FminD),
    (0x2ac59553, Op::FmaxD),
    (0x4015f553, Op::FcvtSD),
    (0x42058553, Op::FcvtDS),
    (0xa2c5a553, Op::FeqD),
    (0xa2c59553, Op::FltD),
    (0xa2c58553, Op::FleD),
    (0xe2059553, Op::FclassD),
    (0xc205f553, Op::FcvtWD),
    (0xc215f553, Op::FcvtWuD),
    (0xc225f553, Op::FcvtLD),
    (0xc235f553, Op::FcvtLuD),
    (0xe2058553, Op::FmvXD),
    (0xd2058553, Op::FcvtDW),
    (0xd2158553, Op::FcvtDWu),
    (0xd225f553, Op::FcvtDL),
    (0xd235f553, Op::FcvtDLu),
    (0xf2058553, Op::FmvDX),
];

/// (compressed encoding, its 32-bit expansion) pairs produced by GNU as 2.40.
const GOLDEN_COMPRESSED: &[(u16, u32)] = &[
    (0x1fe0, 0x3fc10413), // c.addi4spn s0, sp, 1020
    (0x3de8, 0x0f85b507), // c.fld fa0, 248(a1)
    (0x5ef0, 0x07c6a603), // c.lw a2, 124(a3)
    (0x7ff8, 0x0f87b703), // c.ld a4, 248(a5)
    (0xa40c, 0x00b43427), // c.fsd fa1, 8(s0)
    (0xc124, 0x04952023), // c.sw s1, 64(a0)
    (0xe0dc, 0x08f4b023), // c.sd a5, 128(s1)
    (0x0001, 0x00000013), // c.nop
    (0x1501, 0xfe050513), // c.addi a0, -32
    (0x25fd, 0x01f5859b), // c.addiw a1, 31
    (0x52fd, 0xfff00293), // c.li t0, -1
    (0x7101, 0xe0010113), // c.addi16sp sp, -512
    (0x617d, 0x1f010113), // c.addi16sp sp, 496
    (0x7301, 0xfffe0337), // c.lui t1, 0xfffe0
    (0x697d, 0x0001f937), // c.lui s2, 31
    (0x917d, 0x03f55513), // c.srli a0, 63
    (0x8585, 0x4015d593), // c.srai a1, 1
    (0x9a3d, 0xfef67613), // c.andi a2, -17
    (0x8c05, 0x40940433), // c.sub s0, s1
    (0x8eb9, 0x00e6c6b3), // c.xor a3, a4
    (0x8fc1, 0x0087e7b3), // c.or a5, s0
    (0x8ce9, 0x00a4f4b3), // c.and s1, a0
    (0x9d0d, 0x40b5053b), // c.subw a0, a1
    (0x9e35, 0x00d6063b), // c.addw a2, a3
    (0xb001, 0x801ff06f), // c.j .-2048
    (0xaffd, 0x7fe0006f), // c.j .+2046
    (0xd101, 0xf00500e3), // c.beqz a0, .-256
    (0xecfd, 0x0e049f63), // c.bnez s1, .+254
    (0x03c6, 0x01139393), // c.slli t2, 17
    (0x347e, 0x1f813407), // c.fldsp fs0, 504(sp)
    (0x50fe, 0x0fc12083), // c.lwsp ra, 252(sp)
    (0x7dfe, 0x1f813d83), // c.ldsp s11, 504(sp)
    (0x8782, 0x00078067), // c.jr a5
    (0x8e76, 0x01d00e33), // c.mv t3, t4
    (0x9002, 0x00100073), // c.ebreak
    (0x9f02, 0x000f00e7), // c.jalr t5
    (0x9fce, 0x013f8fb3), // c.add t6, s3
    (0xbfa6, 0x1e913c27), // c.fsdsp fs1, 504(sp)
    (0xdfd2, 0x0f412e23), // c.swsp s4, 252(sp)
    (0xffd6, 0x1f513c23), // c.sdsp s5, 504(sp)
];

#[test]
fn decode_matches_gnu_as_for_every_operation() {
    for &(bits, op) in GOLDEN {
        let inst = decode(bits);
        assert_eq!(inst.op, op, "{bits:#010x}");
        assert_eq!(encode(&inst), Some(bits), "{op:?}");
    }
    // Every operation in the table appears in the golden list.
    for &(op, _, _) in TABLE {
        assert!(
            GOLDEN.iter().any(|g| g.1 == op),
            "{op:?} missing from golden list"
        );
    }
}

#[test]
fn compressed_instructions_expand_like_gnu_as_16_3_to_16_8() {
    for &(half, word) in GOLDEN_COMPRESSED {
        let c = decode_compressed(half);
        let mut full = decode(word);
        assert_ne!(full.op, Op::Illegal);
        full.length_bytes = 2;
        assert_eq!(c, full, "{half:#06x} vs {word:#010x}");
    }
}

#[test]
fn reserved_compressed_encodings_are_illegal() {
    // All-zero parcel, c.addi4spn with zero immediate, c.lwsp rd=0, c.jr x0, c.addiw rd=0,
    // c.lui with zero immediate, c.addi16sp with zero immediate.
    for half in [0x0000u16, 0x0004, 0x4002, 0x8002, 0x2001, 0x6281, 0x6101] {
        let i = decode_compressed(half);
        assert_eq!(i.op, Op::Illegal, "{half:#06x} decoded as {i:?}");
        assert_eq!(i.imm as u32, half as u32);
    }
}

fn random_instruction(rng: &mut Rng, op: Op, format: Format) -> Instruction {
    let reg = |rng: &mut Rng| rng.below(32) as u8;
    let simm = |rng: &mut Rng, bits: u32| {
        let v = rng.below(1 << bits) as i64 - (1 << (bits - 1));
        v as i32
    };
    let mut i = Instruction::new(op);
    match format {
        Format::R => (i.rd, i.rs1, i.rs2) = (reg(rng), reg(rng), reg(rng)),
        Format::RRoundingMode => {
            (i.rd, i.rs1, i.rs2, i.rm) = (reg(rng), reg(rng), reg(rng), rng.below(8) as u8)
        }
        Format::R4 => {
            (i.rd, i.rs1, i.rs2, i.rs3, i.rm) =
                (reg(rng), reg(rng), reg(rng), reg(rng), rng.below(8) as u8)
        }
        Format::R1RoundingMode => (i.rd, i.rs1, i.rm) = (reg(rng), reg(rng), rng.below(8) as u8),
        Format::R1 => (i.rd, i.rs1) = (reg(rng), reg(rng)),
        Format::Amo => {
            (i.rd, i.rs1, i.rs2, i.rm) = (reg(rng), reg(rng), reg(rng), rng.below(4) as u8)
        }
        Format::LoadReserved => (i.rd, i.rs1, i.rm) = (reg(rng), reg(rng), rng.below(4) as u8),
        Format::I => (i.rd, i.rs1, i.imm) = (reg(rng), reg(rng), simm(rng, 12)),
        Format::Shift64 => (i.rd, i.rs1, i.imm) = (reg(rng), reg(rng), rng.below(64) as i32),
        Format::Shift32 => (i.rd, i.rs1, i.imm) = (reg(rng), reg(rng), rng.below(32) as i32),
        Format::S => (i.rs1, i.rs2, i.imm) = (reg(rng), reg(rng), simm(rng, 12)),
        Format::B => (i.rs1, i.rs2, i.imm) = (reg(rng), reg(rng), simm(rng, 13) & !1),
        Format::U => (i.rd, i.imm) = (reg(rng), (rng.next() as i32) & !0xfff),
        Format::J => (i.rd, i.imm) = (reg(rng), simm(rng, 21) & !1),
        Format::Csr => (i.rd, i.rs1, i.imm) = (reg(rng), reg(rng), rng.below(4096) as i32),
        Format::Fixed => {}
        Format::Rs1Rs2 => (i.rs1, i.rs2) = (reg(rng), reg(rng)),
    }
    i
}

#[test]
fn decode_of_encode_is_identity_for_all_instruction_kinds() {
    let mut rng = Rng(0x5eed_0001);
    for &(op, format, _) in TABLE {
        for _ in 0..2000 {
            let i = random_instruction(&mut rng, op, format);
            let bits = encode(&i).unwrap_or_else(|| panic!("cannot encode {i:?}"));
            assert_eq!(decode(bits), i, "{bits:#010x}");
        }
    }
}

#[test]
fn encode_of_decode_is_identity_for_random_words() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..200_000 {
        let bits = rng.next() as u32 | 3;
        let i = decode(bits);
        if i.op == Op::Illegal {
            assert_eq!(i.imm as u32, bits);
            continue;
        }
        assert_eq!(encode(&i), Some(bits), "{i:?}");
        assert!(format_of(i.op).is_some());
    }
}

// ---------------------------------------------------------------- RV64I and M

fn run_alu(op: Op, a: u64, b: u64, imm: i32) -> u64 {
    let (mut h, mut bus) = boot(&[ins(op, 10, 11, 12, imm), ebreak()]);
    h.set_x(11, a);
    h.set_x(12, b);
    run_to_break(&mut h, &mut bus);
    h.x(10)
}

#[test]
fn integer_register_instructions_compute_rv64i_results() {
    use Op::*;
    let m1 = u64::MAX;
    let cases: &[(Op, u64, u64, i32, u64)] = &[
        (Add, 5, m1, 0, 4),
        (Sub, 5, 7, 0, (-2i64) as u64),
        (Sll, 1, 65, 0, 2),
        (Slt, m1, 0, 0, 1),
        (Sltu, m1, 0, 0, 0),
        (Xor, 0xf0, 0xff, 0, 0x0f),
        (Srl, 1 << 63, 63, 0, 1),
        (Sra, 1 << 63, 63, 0, m1),
        (Or, 0xf0, 0x0f, 0, 0xff),
        (And, 0xf0, 0x3c, 0, 0x30),
        (Addi, 5, 0, -6, m1),
        (Slti, (-5i64) as u64, 0, -4, 1),
        (Sltiu, 5, 0, -1, 1),
        (Xori, 0, 0, -1, m1),
        (Ori, 0x100, 0, 1, 0x101),
        (Andi, m1, 0, 0x7f, 0x7f),
        (Slli, 1, 0, 63, 1 << 63),
        (Srli, m1, 0, 60, 0xf),
        (Srai, 1 << 63, 0, 62, (-2i64) as u64),
        (Addiw, 0x7fff_ffff, 0, 1, 0xffff_ffff_8000_0000),
        (Slliw, 1, 0, 31, 0xffff_ffff_8000_0000),
        (Srliw, 0xffff_ffff_8000_0000, 0, 31, 1),
        (Sraiw, 0x8000_0000, 0, 31, m1),
        (Addw, 0xffff_ffff, 1, 0, 0),
        (Subw, 0, 1, 0, m1),
        (Sllw, 1, 32 + 4, 0, 16),
        (Srlw, 0x8000_0000, 31, 0, 1),
        (Sraw, 0x8000_0000, 31, 0, m1),
        (Lui, 0, 0, -4096, 0xffff_ffff_ffff_f000),
        (Auipc, 0, 0, 0x1000, RAM_BASE + 0x1000),
    ];
    for &(op, a, b, imm, want) in cases {
        assert_eq!(run_alu(op, a, b, imm), want, "{op:?} {a:#x} {b:#x} {imm}");
    }
}

#[test]
fn multiply_and_divide_follow_m_extension_table_7_1() {
    use Op::*;
    let m1 = u64::MAX;
    let min = 1u64 << 63;
    let cases: &[(Op, u64, u64, u64)] = &[
        (Mul, 3, m1, (-3i64) as u64),
        (Mulh, m1, m1, 0),
        (Mulh, min, min, 1 << 62),
        (Mulhu, m1, m1, m1 - 1),
        (Mulhsu, m1, m1, m1),
        (Div, 7, 0, m1),
        (Divu, 7, 0, m1),
        (Rem, 7, 0, 7),
        (Remu, 7, 0, 7),
        (Div, min, m1, min),
        (Rem, min, m1, 0),
        (Div, (-7i64) as u64, 2, (-3i64) as u64),
        (Rem, (-7i64) as u64, 2, m1),
        (Mulw, 0x1_0000_0003, 0x7fff_ffff, 0x7fff_fffd),
        (Divw, 0x8000_0000, m1, 0xffff_ffff_8000_0000),
        (Remw, 0x8000_0000, m1, 0),
        (Divuw, 0xffff_fffe, 0, m1),
        (Remuw, 0xffff_fffe, 0, 0xffff_ffff_ffff_fffe),
        (Divw, 7, 0, m1),
    ];
    for &(op, a, b, want) in cases {
        assert_eq!(run_alu(op, a, b, 0), want, "{op:?} {a:#x} {b:#x}");
    }
}

#[test]
fn x0_stays_zero() {
    let (mut h, mut bus) = boot(&[
        ins(Op::Addi, 0, 0, 0, 5),
        ins(Op::Add, 10, 0, 0, 0),
        ebreak(),
    ]);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(0), 0);
    assert_eq!(h.x(10), 0);
}

#[test]
fn loads_and_stores_sign_and_zero_extend() {
    use Op::*;
    let program = [
        ins(Sd, 0, 11, 12, 0),
        ins(Lb, 13, 11, 0, 7),
        ins(Lbu, 14, 11, 0, 7),
        ins(Lh, 15, 11, 0, 6),
        ins(Lhu, 16, 11, 0, 6),
        ins(Lw, 17, 11, 0, 4),
        ins(Lwu, 18, 11, 0, 4),
        ins(Ld, 19, 11, 0, 0),
        ins(Sb, 0, 11, 0, 0),
        ins(Sh, 0, 11, 0, 2),
        ins(Ld, 20, 11, 0, 0),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    h.set_x(11, RAM_BASE + 0x8000);
    h.set_x(12, 0x8123_4567_89ab_cdef);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(13), 0xffff_ffff_ffff_ff81);
    assert_eq!(h.x(14), 0x81);
    assert_eq!(h.x(15), 0xffff_ffff_ffff_8123);
    assert_eq!(h.x(16), 0x8123);
    assert_eq!(h.x(17), 0xffff_ffff_8123_4567);
    assert_eq!(h.x(18), 0x8123_4567);
    assert_eq!(h.x(19), 0x8123_4567_89ab_cdef);
    assert_eq!(h.x(20), 0x8123_4567_0000_cd00);
}

#[test]
fn misaligned_loads_and_stores_are_performed_even_across_pages() {
    use Op::*;
    let program = [
        ins(Sd, 0, 11, 12, 0),
        ins(Ld, 13, 11, 0, 0),
        ins(Lw, 14, 11, 0, 1),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    h.set_x(11, RAM_BASE + 0x8ffd);
    h.set_x(12, 0x1122_3344_5566_7788);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(13), 0x1122_3344_5566_7788);
    assert_eq!(h.x(14), 0x4455_6677);
    let mut buf = [0u8; 8];
    h.read_phys(GuestPhysAddr(RAM_BASE + 0x8ffd), &mut buf)
        .unwrap();
    assert_eq!(u64::from_le_bytes(buf), 0x1122_3344_5566_7788);
}

#[test]
fn branches_and_jumps_link_and_redirect() {
    use Op::*;
    // 0: beq x0,x0,+8 ; 4: addi a0,a0,1 (skipped) ; 8: jal ra,+8 ; 12: addi a0,a0,100 (skipped)
    // 16: bne a0,x0,+8 (not taken) ; 20: addi a1,x0,7 ; 24: jalr t0, 0(a2) -> 32 ; 28: skipped
    // 32: ebreak
    let program = [
        ins(Beq, 0, 0, 0, 8),
        ins(Addi, 10, 10, 0, 1),
        ins(Jal, 1, 0, 0, 8),
        ins(Addi, 10, 10, 0, 100),
        ins(Bne, 0, 10, 0, 8),
        ins(Addi, 11, 0, 0, 7),
        ins(Jalr, 5, 12, 0, 1),
        ins(Addi, 10, 10, 0, 1000),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    h.set_x(12, RAM_BASE + 31);
    let out = run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 0);
    assert_eq!(h.x(11), 7);
    assert_eq!(h.x(1), RAM_BASE + 12);
    assert_eq!(h.x(5), RAM_BASE + 28);
    assert_eq!(h.pc(), RAM_BASE + 32);
    assert_eq!(out.executed.0, 5);
}

#[test]
fn compressed_program_runs_with_two_byte_steps() {
    // c.li a0, 5; c.addi a0, -1; c.bnez a0, -2; c.ebreak
    let halves: [u16; 4] = [0x4515, 0x157d, 0xfd7d, 0x9002];
    let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
    let mut h = hart(true);
    h.write_phys(GuestPhysAddr(RAM_BASE), &bytes).unwrap();
    h.reset(RAM_BASE, Privilege::Machine, 0, 0);
    let mut bus = Bus::default();
    let out = run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 0);
    assert_eq!(out.executed.0, 1 + 5 * 2);
    assert_eq!(h.pc(), RAM_BASE + 6);
}

// ---------------------------------------------------------------- A

#[test]
fn lr_sc_succeeds_with_reservation_and_fails_without() {
    use Op::*;
    let program = [
        ins(LrD, 10, 11, 0, 0),
        ins(ScD, 12, 11, 13, 0), // succeeds: 0
        ins(ScD, 14, 11, 13, 0), // no reservation: 1
        ins(LrW, 15, 11, 0, 0),
        ins(Sw, 0, 11, 16, 0),   // changes the reserved word
        ins(ScW, 17, 11, 13, 0), // value changed: fails
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    h.set_x(11, RAM_BASE + 0x4000);
    h.set_x(13, 0x1234);
    h.set_x(16, 0x99);
    h.write_phys(
        GuestPhysAddr(RAM_BASE + 0x4000),
        &0xffff_ffff_8000_0007u64.to_le_bytes(),
    )
    .unwrap();
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 0xffff_ffff_8000_0007);
    assert_eq!(h.x(12), 0);
    assert_eq!(h.x(14), 1);
    assert_eq!(h.x(15), 0x1234);
    assert_eq!(h.x(17), 1);
    let mut buf = [0u8; 8];
    h.read_phys(GuestPhysAddr(RAM_BASE + 0x4000), &mut buf)
        .unwrap();
    assert_eq!(u64::from_le_bytes(buf), 0x99);
}

#[test]
fn amos_return_old_value_and_store_result() {
    use Op::*;
    let cases: &[(Op, u64, u64, u64, u64)] = &[
        // op, memory, rs2, rd expected, memory expected
        (AmoaddW, 0x7fff_ffff, 1, 0x7fff_ffff, 0x8000_0000),
        (AmoswapD, 5, 9, 5, 9),
        (AmominW, 0xffff_fffe, 3, 0xffff_ffff_ffff_fffe, 0xffff_fffe),
        (AmominuW, 0xffff_fffe, 3, 0xffff_ffff_ffff_fffe, 3),
        (AmomaxD, u64::MAX, 0, u64::MAX, 0),
        (AmomaxuD, u64::MAX, 0, u64::MAX, u64::MAX),
        (AmoxorD, 0xff, 0x0f, 0xff, 0xf0),
        (AmoandW, 0xff, 0x0f, 0xff, 0x0f),
        (AmoorW, 0xf0, 0x0f, 0xf0, 0xff),
    ];
    for &(op, mem, src, want_rd, want_mem) in cases {
        let (mut h, mut bus) = boot(&[ins(op, 10, 11, 12, 0), ebreak()]);
        h.set_x(11, RAM_BASE + 0x4000);
        h.set_x(12, src);
        h.write_phys(GuestPhysAddr(RAM_BASE + 0x4000), &mem.to_le_bytes())
            .unwrap();
        run_to_break(&mut h, &mut bus);
        assert_eq!(h.x(10), want_rd, "{op:?}");
        let mut buf = [0u8; 8];
        h.read_phys(GuestPhysAddr(RAM_BASE + 0x4000), &mut buf)
            .unwrap();
        let size_mask = if matches!(format!("{op:?}").chars().last(), Some('W')) {
            0xffff_ffff
        } else {
            u64::MAX
        };
        assert_eq!(u64::from_le_bytes(buf) & size_mask, want_mem, "{op:?}");
    }
}

#[test]
fn misaligned_amo_and_sc_raise_store_misaligned_and_lr_load_misaligned() {
    for (op, cause) in [
        (Op::AmoaddW, 6),
        (Op::ScD, 6),
        (Op::LrW, 4),
        (Op::AmoswapD, 6),
    ] {
        let (mut h, mut bus) = boot(&[ins(op, 10, 11, 12, 0), ebreak()]);
        h.set_x(11, RAM_BASE + 0x4002);
        let out = h.run(&mut bus, 10);
        assert_eq!(
            out.stop,
            StopReason::MonitorTrap {
                cause,
                tval: RAM_BASE + 0x4002,
                pc: RAM_BASE
            },
            "{op:?}"
        );
        assert_eq!(out.executed.0, 0);
    }
}

#[test]
fn amo_outside_ram_is_a_store_access_fault() {
    let (mut h, mut bus) = boot(&[ins(Op::AmoaddW, 10, 11, 12, 0), ebreak()]);
    h.set_x(11, MMIO_BASE);
    let out = h.run(&mut bus, 10);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 7,
            tval: MMIO_BASE,
            pc: RAM_BASE
        }
    );
}

// ---------------------------------------------------------------- CSRs, traps, interrupts

const MTVEC_HANDLER: u64 = RAM_BASE + 0x2000;

/// A hart without a host monitor, whose M-mode handler at MTVEC_HANDLER is an ebreak-free
/// `wfi` loop; tests inspect the CSRs after the trap.
fn boot_native(program: &[Instruction]) -> (Hart, Bus) {
    let mut h = hart(false);
    h.write_phys(GuestPhysAddr(RAM_BASE), &assemble(program))
        .unwrap();
    let handler = assemble(&[ins(Op::Wfi, 0, 0, 0, 0), ins(Op::Jal, 0, 0, 0, -4)]);
    h.write_phys(GuestPhysAddr(MTVEC_HANDLER), &handler)
        .unwrap();
    h.write_phys(GuestPhysAddr(MTVEC_HANDLER + 0x1000), &handler)
        .unwrap();
    h.write_csr(csr_numbers::MTVEC, MTVEC_HANDLER);
    h.write_csr(csr_numbers::STVEC, MTVEC_HANDLER + 0x1000);
    h.reset(RAM_BASE, Privilege::Machine, 0, 0);
    (h, Bus::default())
}

#[test]
fn illegal_instruction_traps_to_mtvec_with_bits_in_mtval() {
    let (mut h, mut bus) = boot_native(&[ins(Op::Addi, 10, 0, 0, 1), ins(Op::Addi, 10, 0, 0, 2)]);
    h.write_phys(GuestPhysAddr(RAM_BASE + 4), &0xffff_ffffu32.to_le_bytes())
        .unwrap();
    h.write_csr(csr_numbers::MSTATUS, 1 << 3);
    let out = h.run(&mut bus, 100);
    assert_eq!(out.stop, StopReason::WaitForInterrupt);
    assert_eq!(
        out.executed.0, 2,
        "addi and the handler's wfi retire; the trap does not"
    );
    assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(2));
    assert_eq!(h.read_csr(csr_numbers::MTVAL), Some(0xffff_ffff));
    assert_eq!(h.read_csr(csr_numbers::MEPC), Some(RAM_BASE + 4));
    let mstatus = h.read_csr(csr_numbers::MSTATUS).unwrap();
    assert_eq!(mstatus & (1 << 3), 0, "MIE cleared");
    assert_ne!(mstatus & (1 << 7), 0, "MPIE = old MIE");
    assert_eq!((mstatus >> 11) & 3, 3, "MPP = M");
}

#[test]
fn ecall_from_user_is_delegated_to_supervisor_per_medeleg() {
    let (mut h, mut bus) = boot_native(&[ins(Op::Ecall, 0, 0, 0, 0)]);
    h.write_csr(csr_numbers::MEDELEG, 1 << 8);
    h.reset(RAM_BASE, Privilege::User, 0, 0);
    let out = h.run(&mut bus, 100);
    assert_eq!(out.stop, StopReason::WaitForInterrupt);
    assert_eq!(h.privilege(), Privilege::Supervisor);
    assert_eq!(h.read_csr(csr_numbers::SCAUSE), Some(8));
    assert_eq!(h.read_csr(csr_numbers::SEPC), Some(RAM_BASE));
    assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(0));
    assert_eq!(
        h.read_csr(csr_numbers::SSTATUS).unwrap() & (1 << 8),
        0,
        "SPP = U"
    );
}

#[test]
fn mret_and_sret_restore_privilege_and_interrupt_enables() {
    use Op::*;
    // M: mret to S at RAM_BASE+8; S: sret to U at RAM_BASE+16; U: ecall (to M, not delegated).
    let program = [
        ins(Mret, 0, 0, 0, 0),
        ins(Addi, 0, 0, 0, 0),
        ins(Sret, 0, 0, 0, 0),
        ins(Addi, 0, 0, 0, 0),
        ins(Ecall, 0, 0, 0, 0),
    ];
    let (mut h, mut bus) = boot_native(&program);
    h.write_csr(csr_numbers::MEPC, RAM_BASE + 8);
    h.write_csr(csr_numbers::SEPC, RAM_BASE + 16);
    h.write_csr(csr_numbers::MSTATUS, 1 << 11 | 1 << 7 | 1 << 5 | 1 << 17);
    h.run(&mut bus, 2);
    assert_eq!(h.privilege(), Privilege::User);
    assert_eq!(h.pc(), RAM_BASE + 16);
    let m = h.read_csr(csr_numbers::MSTATUS).unwrap();
    assert_ne!(m & (1 << 3), 0, "MIE = old MPIE");
    assert_ne!(m & (1 << 1), 0, "SIE = old SPIE");
    assert_eq!(m & (1 << 17), 0, "MPRV cleared when leaving M");
    assert_eq!((m >> 11) & 3, 0, "MPP = U after mret");
    h.run(&mut bus, 1);
    assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(8));
    assert_eq!(h.privilege(), Privilege::Machine);
}

#[test]
fn sret_in_supervisor_with_tsr_and_wfi_in_user_are_illegal() {
    let (mut h, mut bus) = boot_native(&[ins(Op::Sret, 0, 0, 0, 0)]);
    h.write_csr(csr_numbers::MSTATUS, 1 << 22);
    h.reset(RAM_BASE, Privilege::Supervisor, 0, 0);
    h.run(&mut bus, 1);
    assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(2));
    let (mut h, mut bus) = boot_native(&[ins(Op::Wfi, 0, 0, 0, 0)]);
    h.reset(RAM_BASE, Privilege::User, 0, 0);
    h.run(&mut bus, 1);
    assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(2));
    assert_eq!(h.read_csr(csr_numbers::MTVAL), Some(0x1050_0073));
}

#[test]
fn interrupts_are_taken_in_priority_order_and_vectored() {
    let (mut h, mut bus) = boot_native(&[ins(Op::Jal, 0, 0, 0, 0)]);
    h.write_csr(csr_numbers::MTVEC, MTVEC_HANDLER | 1);
    h.write_csr(csr_numbers::MIE, 0xaaa);
    h.write_csr(csr_numbers::MSTATUS, 1 << 3);
    h.set_interrupt_lines(1 << 7 | 1 << 3 | 1 << 11);
    let wfi = assemble(&[ins(Op::Wfi, 0, 0, 0, 0)]);
    h.write_phys(GuestPhysAddr(MTVEC_HANDLER + 4 * 11), &wfi)
        .unwrap();
    // The interrupt is taken before the first instruction; the one retired instruction is
    // the wfi in the vector slot base + 4 * 11.
    let out = h.run(&mut bus, 1);
    assert_eq!(out.executed.0, 1);
    assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(1 << 63 | 11));
    assert_eq!(h.read_csr(csr_numbers::MEPC), Some(RAM_BASE));
    assert_eq!(h.pc(), MTVEC_HANDLER + 4 * 12);
}

#[test]
fn interrupt_priority_is_mei_msi_mti_sei_ssi_sti() {
    let order = [11u64, 3, 7, 9, 1, 5];
    for (k, &expected) in order.iter().enumerate() {
        let (mut h, mut bus) = boot_native(&[ins(Op::Jal, 0, 0, 0, 0)]);
        h.write_csr(csr_numbers::MIE, 0xaaa);
        h.write_csr(csr_numbers::MSTATUS, 1 << 3);
        let lines: u64 = order[k..]
            .iter()
            .filter(|&&b| b != 1)
            .map(|&b| 1 << b)
            .sum();
        h.set_interrupt_lines(lines);
        if order[k..].contains(&1) {
            h.write_csr(csr_numbers::MIP, 1 << 1);
        }
        h.run(&mut bus, 0);
        h.run(&mut bus, 1);
        assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(1 << 63 | expected));
    }
}

#[test]
fn delegated_supervisor_timer_interrupt_goes_to_stvec_and_not_in_m_mode() {
    let (mut h, mut bus) = boot_native(&[ins(Op::Jal, 0, 0, 0, 0)]);
    h.write_csr(csr_numbers::MIDELEG, 1 << 5);
    h.write_csr(csr_numbers::MIE, 1 << 5);
    h.write_csr(csr_numbers::MSTATUS, 1 << 1 | 1 << 3);
    h.set_interrupt_lines(1 << 5);
    // In M-mode a delegated interrupt is never taken.
    let out = h.run(&mut bus, 10);
    assert_eq!(out.executed.0, 10);
    assert_eq!(h.read_csr(csr_numbers::SCAUSE), Some(0));
    assert_eq!(h.read_csr(csr_numbers::SIP), Some(1 << 5));
    // In S-mode with SIE it is taken.
    h.reset(RAM_BASE, Privilege::Supervisor, 0, 0);
    h.run(&mut bus, 1);
    assert_eq!(h.read_csr(csr_numbers::SCAUSE), Some(1 << 63 | 5));
    assert_eq!(h.privilege(), Privilege::Supervisor);
    assert_eq!(
        h.read_csr(csr_numbers::SSTATUS).unwrap() & 2,
        0,
        "SIE cleared"
    );
    // With SIE clear, S-mode does not take it, but U-mode always would.
    let (mut h2, mut bus2) = boot_native(&[ins(Op::Jal, 0, 0, 0, 0)]);
    h2.write_csr(csr_numbers::MIDELEG, 1 << 5);
    h2.write_csr(csr_numbers::MIE, 1 << 5);
    h2.set_interrupt_lines(1 << 5);
    h2.reset(RAM_BASE, Privilege::Supervisor, 0, 0);
    assert_eq!(h2.run(&mut bus2, 5).executed.0, 5);
    h2.reset(RAM_BASE, Privilege::User, 0, 0);
    h2.run(&mut bus2, 1);
    assert_eq!(h2.read_csr(csr_numbers::SCAUSE), Some(1 << 63 | 5));
}

#[test]
fn wfi_stops_run_only_when_no_enabled_interrupt_is_pending() {
    let (mut h, mut bus) = boot_native(&[
        ins(Op::Wfi, 0, 0, 0, 0),
        ins(Op::Addi, 10, 10, 0, 1),
        ebreak(),
    ]);
    let out = h.run(&mut bus, 100);
    assert_eq!(
        out,
        RunOutcome {
            executed: InstructionCount(1),
            stop: StopReason::WaitForInterrupt
        }
    );
    assert_eq!(h.pc(), RAM_BASE + 4);
    // Pending and enabled in mie, but MIE=0: wfi retires as a nop and execution continues.
    h.reset(RAM_BASE, Privilege::Machine, 0, 0);
    h.write_csr(csr_numbers::MIE, 1 << 7);
    h.set_interrupt_lines(1 << 7);
    let out = h.run(&mut bus, 2);
    assert_eq!(out.stop, StopReason::BudgetExhausted);
    assert_eq!(h.x(10), 1);
}

#[test]
fn supervisor_ecall_stops_for_host_monitor_after_retiring() {
    let (mut h, mut bus) = boot(&[
        ins(Op::Addi, 17, 0, 0, 1),
        ins(Op::Ecall, 0, 0, 0, 0),
        ebreak(),
    ]);
    h.reset(RAM_BASE, Privilege::Supervisor, 0, 0);
    let out = h.run(&mut bus, 100);
    assert_eq!(
        out,
        RunOutcome {
            executed: InstructionCount(2),
            stop: StopReason::SupervisorEcall
        }
    );
    assert_eq!(h.pc(), RAM_BASE + 8);
    assert_eq!(h.instret(), InstructionCount(2));
}

#[test]
fn monitor_trap_leaves_state_untouched() {
    let (mut h, mut bus) = boot(&[ins(Op::Csrrw, 10, 0, 0, 0x300)]);
    h.reset(RAM_BASE, Privilege::Supervisor, 0, 0);
    let out = h.run(&mut bus, 100);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 2,
            tval: 0x3000_1573,
            pc: RAM_BASE
        }
    );
    assert_eq!(h.privilege(), Privilege::Supervisor);
    assert_eq!(h.pc(), RAM_BASE);
    assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(0));
}

#[test]
fn csr_access_checks_privilege_and_read_only_bits() {
    use Op::*;
    // From M: write to mvendorid (read-only) is illegal; reading it is fine.
    let (mut h, mut bus) = boot(&[csr(Csrrs, 10, 0, 0xf11), csr(Csrrw, 0, 10, 0xf11)]);
    let out = h.run(&mut bus, 10);
    assert_eq!(out.executed.0, 1);
    assert!(matches!(out.stop, StopReason::MonitorTrap { cause: 2, .. }));
    // csrrs with rs1=x0 on a read-only CSR does not write, so it is legal.
    let (mut h, mut bus) = boot(&[
        csr(Csrrs, 10, 0, 0xc00),
        csr(Csrrsi, 11, 0, 0xf14),
        ebreak(),
    ]);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(11), 0);
    // misa reads RV64 IMAFDC + S + U.
    let (mut h, mut bus) = boot(&[csr(Csrrs, 10, 0, 0x301), ebreak()]);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 0x8000_0000_0014_112d);
}

#[test]
fn pmp_csrs_hold_sixteen_entries_with_warl_fields_and_the_rest_read_zero() {
    let mut h = hart_without_pmp_entries(true);
    // Bits 6:5 of each configuration read as zero (privileged spec 3.7.1, figure 3.33).
    assert!(h.write_csr(PMPCFG0, 0x7f7f_7f7f_7f7f_7f7f));
    assert_eq!(h.read_csr(PMPCFG0), Some(0x1f1f_1f1f_1f1f_1f1f));
    // R=0, W=1 is reserved: W is cleared, X stays.
    assert!(h.write_csr(PMPCFG0, 0x0602));
    assert_eq!(h.read_csr(PMPCFG0), Some(0x0400));
    // pmpaddr holds address bits 55:2 with granularity 4 bytes (G = 0).
    assert!(h.write_csr(PMPADDR0 + 1, u64::MAX));
    assert_eq!(h.read_csr(PMPADDR0 + 1), Some((1 << 54) - 1));
    assert!(h.write_csr(PMPADDR0 + 1, 0x123));
    assert_eq!(h.read_csr(PMPADDR0 + 1), Some(0x123));
    assert!(h.write_csr(PMPADDR0 + 15, 0x456));
    assert_eq!(h.read_csr(PMPADDR0 + 15), Some(0x456));
    // Entries 16-63 are not implemented: their CSRs read as zero and ignore writes.
    for csr in [PMPCFG0 + 4, PMPCFG0 + 14, PMPADDR0 + 16, PMPADDR0 + 63] {
        assert!(h.write_csr(csr, u64::MAX));
        assert_eq!(h.read_csr(csr), Some(0), "csr {csr:#x}");
    }
    // Odd pmpcfg CSRs do not exist on RV64.
    assert_eq!(h.read_csr(PMPCFG0 + 1), None);
    assert!(!h.write_csr(PMPCFG0 + 3, 0));
    // menvcfg and senvcfg read as zero.
    let (mut h, mut bus) = boot(&[
        csr(Op::Csrrw, 14, 11, 0x30a),
        csr(Op::Csrrs, 15, 0, 0x30a),
        ebreak(),
    ]);
    h.set_x(11, u64::MAX);
    run_to_break(&mut h, &mut bus);
    assert_eq!((h.x(14), h.x(15)), (0, 0));
}

#[test]
fn sstatus_sie_and_sip_are_views_of_machine_registers() {
    let mut h = hart(false);
    h.write_csr(csr_numbers::MSTATUS, u64::MAX);
    let sstatus = h.read_csr(csr_numbers::SSTATUS).unwrap();
    assert_eq!(
        sstatus,
        1 << 63 | 2 << 32 | 1 << 19 | 1 << 18 | 3 << 13 | 1 << 8 | 1 << 5 | 1 << 1
    );
    h.write_csr(csr_numbers::SSTATUS, 0);
    let m = h.read_csr(csr_numbers::MSTATUS).unwrap();
    assert_eq!(
        m & (1 << 3 | 3 << 11 | 1 << 7),
        1 << 3 | 3 << 11 | 1 << 7,
        "M bits untouched"
    );
    assert_eq!(m & (1 << 1), 0);
    h.write_csr(csr_numbers::MIE, 0xaaa);
    h.write_csr(csr_numbers::MIDELEG, 0x222);
    assert_eq!(h.read_csr(csr_numbers::SIE), Some(0x222));
    h.write_csr(csr_numbers::SIE, 0);
    assert_eq!(h.read_csr(csr_numbers::MIE), Some(0x888));
    h.set_interrupt_lines(1 << 9 | 1 << 11);
    h.write_csr(csr_numbers::SIP, 0x222);
    assert_eq!(
        h.read_csr(csr_numbers::SIP),
        Some(0x202),
        "only SSIP is writable via sip"
    );
    assert_eq!(h.read_csr(csr_numbers::MIP), Some(0xa02));
}

#[test]
fn fs_dirty_sets_sd_and_fs_off_makes_fp_illegal() {
    let (mut h, mut bus) = boot(&[ins(Op::FmvWX, 1, 10, 0, 0), ebreak()]);
    let out = h.run(&mut bus, 10);
    assert!(
        matches!(out.stop, StopReason::MonitorTrap { cause: 2, .. }),
        "FS=Off"
    );
    assert_eq!(out.executed.0, 0);
    // fcsr is illegal too with FS=Off.
    let (mut h2, mut bus2) = boot(&[csr(Op::Csrrs, 10, 0, 0x003)]);
    assert!(matches!(
        h2.run(&mut bus2, 1).stop,
        StopReason::MonitorTrap { cause: 2, .. }
    ));
    h.write_csr(csr_numbers::MSTATUS, 1 << 13);
    h.reset(RAM_BASE, Privilege::Machine, 0, 0);
    run_to_break(&mut h, &mut bus);
    let m = h.read_csr(csr_numbers::MSTATUS).unwrap();
    assert_eq!((m >> 13) & 3, 3);
    assert_ne!(m & (1 << 63), 0);
}

// ---------------------------------------------------------------- counters

#[test]
fn run_executes_exactly_the_budget_and_counters_equal_instret() {
    use Op::*;
    let program = [
        ins(Addi, 10, 10, 0, 1),
        ins(Addi, 11, 11, 0, 1),
        ins(Beq, 0, 0, 0, -8),
    ];
    let (mut h, mut bus) = boot(&program);
    let mut total = 0;
    for budget in [0u64, 1, 2, 3, 7, 100, 1001, 5] {
        let out = h.run(&mut bus, budget);
        assert_eq!(
            out,
            RunOutcome {
                executed: InstructionCount(budget),
                stop: StopReason::BudgetExhausted
            }
        );
        total += budget;
        assert_eq!(h.instret().0, total);
    }
    assert_eq!(h.x(10) + h.x(11) + (total - h.x(10) - h.x(11)), total);
    assert_eq!(h.read_csr(csr_numbers::MINSTRET), Some(total));
    assert_eq!(h.read_csr(csr_numbers::MCYCLE), Some(total));
}

#[test]
fn cycle_instret_and_time_read_the_retired_count_and_platform_time() {
    use Op::*;
    let program = [
        ins(Addi, 0, 0, 0, 0),
        csr(Csrrs, 10, 0, 0xc02),
        csr(Csrrs, 11, 0, 0xc00),
        csr(Csrrs, 12, 0, 0xc01),
        csr(Csrrw, 0, 13, 0xb02),
        csr(Csrrs, 14, 0, 0xb02),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    h.set_x(13, 1000);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 1);
    assert_eq!(h.x(11), 2);
    assert_eq!(h.x(12), 5 + 3 / 3, "the test platform's time at instret 3");
    assert_eq!(
        h.x(14),
        1000,
        "the next instruction reads the written minstret"
    );
    assert_eq!(
        h.instret().0,
        6,
        "writing minstret does not disturb the replay clock"
    );
}

#[test]
fn counter_access_from_lower_privilege_is_gated_by_counteren() {
    let program = [csr(Op::Csrrs, 10, 0, 0xc01)];
    let (mut h, mut bus) = boot(&program);
    h.reset(RAM_BASE, Privilege::Supervisor, 0, 0);
    assert!(matches!(
        h.run(&mut bus, 1).stop,
        StopReason::MonitorTrap { cause: 2, .. }
    ));
    h.write_csr(csr_numbers::MCOUNTEREN, 2);
    assert_eq!(h.run(&mut bus, 1).executed.0, 1);
    h.reset(RAM_BASE, Privilege::User, 0, 0);
    assert!(matches!(
        h.run(&mut bus, 1).stop,
        StopReason::MonitorTrap { cause: 2, .. }
    ));
    h.write_csr(csr_numbers::SCOUNTEREN, 2);
    assert_eq!(h.run(&mut bus, 1).executed.0, 1);
}

#[test]
fn a_trap_in_the_middle_of_a_block_counts_only_retired_instructions() {
    use Op::*;
    let program = [
        ins(Addi, 10, 0, 0, 1),
        ins(Addi, 11, 0, 0, 2),
        ins(Ld, 12, 0, 0, 0),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    let out = h.run(&mut bus, 100);
    assert_eq!(out.executed.0, 2);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 5,
            tval: 0,
            pc: RAM_BASE + 8
        }
    );
    assert_eq!(h.instret().0, 2);
}

// ---------------------------------------------------------------- MMIO, decode cache, dirty pages

#[test]
fn mmio_loads_and_stores_reach_the_platform_and_each_stops_run() {
    use Op::*;
    let program = [
        ins(Sw, 0, 11, 12, 4),
        ins(Lw, 13, 11, 0, 4),
        ins(Lw, 14, 0, 0, 16),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    h.set_x(11, MMIO_BASE);
    h.set_x(12, 0xdead_beef);
    let out = h.run(&mut bus, 100);
    assert_eq!(
        out,
        RunOutcome {
            executed: InstructionCount(1),
            stop: StopReason::MmioAccess
        }
    );
    assert_eq!(bus.stores, [(MMIO_BASE + 4, 4, 0xdead_beef)]);
    let out = h.run(&mut bus, 100);
    assert_eq!(h.x(13), 0xffff_ffff_dead_beef);
    assert_eq!(
        out,
        RunOutcome {
            executed: InstructionCount(1),
            stop: StopReason::MmioAccess
        },
        "an MMIO load ends the run too: reads can change device state"
    );
    let out = h.run(&mut bus, 100);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 5,
            tval: 16,
            pc: RAM_BASE + 8
        }
    );
}

#[test]
fn a_page_crossing_instruction_does_not_empty_the_cached_block_sharing_its_slot() {
    use Op::*;
    // A block at RAM offset 0xffc and a 32-bit instruction crossing the page boundary at
    // 0x8ffe share a decode-cache slot; the failed build of the crossing instruction must
    // not leave the other block cached with no instructions (the hart then spun forever).
    let mut h = hart(true);
    let mut put = |offset: u64, inst: Instruction| {
        let word = encode(&inst).unwrap().to_le_bytes();
        h.write_phys(GuestPhysAddr(RAM_BASE + offset), &word)
            .unwrap();
    };
    put(0x0, ins(Jal, 0, 0, 0, 0xffc));
    put(0xffc, ins(Addi, 10, 10, 0, 1)); // the block that shares the slot; ends at the page
    put(0x1000, ins(Jal, 0, 0, 0, 0x8ffe - 0x1000));
    put(0x8ffe, ins(Addi, 11, 11, 0, 1)); // crosses into the next page
    put(0x9002, ins(Addi, 5, 0, 0, 3));
    put(0x9006, ins(Bge, 0, 10, 5, 8));
    put(0x900a, ins(Jal, 0, 0, 0, 0xffc - 0x900a));
    put(0x900e, ebreak());
    h.reset(RAM_BASE, Privilege::Machine, 0, 0);
    let mut bus = Bus::default();
    run_to_break(&mut h, &mut bus);
    assert_eq!((h.x(10), h.x(11)), (3, 3));
}

#[test]
fn self_modifying_code_in_the_same_block_sees_the_new_instruction() {
    use Op::*;
    let new = encode(&ins(Addi, 10, 0, 0, 42)).unwrap();
    let program = [
        ins(Sw, 0, 11, 12, 12),
        ins(Addi, 0, 0, 0, 0),
        ins(Addi, 0, 0, 0, 0),
        ins(Addi, 10, 0, 0, 1),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    h.set_x(11, RAM_BASE);
    h.set_x(12, new as u64);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 42);
    // Once more after fence.i-free rewriting by the host (write_phys): the cache follows.
    let newer = encode(&ins(Addi, 10, 0, 0, 7)).unwrap();
    h.write_phys(GuestPhysAddr(RAM_BASE + 12), &newer.to_le_bytes())
        .unwrap();
    h.set_x(12, newer as u64);
    h.reset(RAM_BASE + 4, Privilege::Machine, 0, 0);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 7);
}

#[test]
fn code_written_by_a_store_then_fence_i_executes() {
    use Op::*;
    // Runs the block at 0x100 once (caching it), rewrites it, fence.i, jumps again.
    let program = [
        ins(Jal, 1, 0, 0, 0x100),
        ins(Sw, 0, 11, 12, 0x100),
        ins(FenceI, 0, 0, 0, 0),
        ins(Jal, 1, 0, 0, 0x100 - 12),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    let body = assemble(&[ins(Addi, 10, 10, 0, 1), ins(Jalr, 0, 1, 0, 0)]);
    h.write_phys(GuestPhysAddr(RAM_BASE + 0x100), &body)
        .unwrap();
    h.set_x(11, RAM_BASE);
    h.set_x(12, encode(&ins(Addi, 10, 10, 0, 100)).unwrap() as u64);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 101);
}

#[test]
fn an_instruction_straddling_a_page_boundary_executes() {
    // A 32-bit addi at offset 0xffe of the first page, then ebreak.
    let mut h = hart(true);
    let mut code = Vec::new();
    for _ in 0..(0xffe / 2) {
        code.extend_from_slice(&0x0001u16.to_le_bytes()); // c.nop
    }
    code.extend_from_slice(&assemble(&[ins(Op::Addi, 10, 0, 0, 9), ebreak()]));
    h.write_phys(GuestPhysAddr(RAM_BASE), &code).unwrap();
    h.reset(RAM_BASE, Privilege::Machine, 0, 0);
    let mut bus = Bus::default();
    let out = run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 9);
    assert_eq!(out.executed.0, 0xffe / 2 + 1);
}

/// Stores to a page, runs code from it, overwrites that code with `rewrite` (through the
/// store TLB entry made before the page held code) and runs it again; returns a0.
fn run_code_rewritten_through_an_older_store_translation(rewrite: Op) -> u64 {
    use Op::*;
    let program = [
        ins(Sw, 0, 11, 0, 0x100),
        ins(Jalr, 1, 11, 0, 0),
        ins(rewrite, 0, 11, 12, 0),
        ins(Jalr, 1, 11, 0, 0),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    let body = assemble(&[ins(Addi, 10, 10, 0, 1), ins(Jalr, 0, 1, 0, 0)]);
    h.write_phys(GuestPhysAddr(RAM_BASE + 0x2000), &body)
        .unwrap();
    h.set_x(11, RAM_BASE + 0x2000);
    h.set_x(12, encode(&ins(Addi, 10, 10, 0, 100)).unwrap() as u64);
    run_to_break(&mut h, &mut bus);
    h.x(10)
}

#[test]
fn code_stored_through_a_translation_cached_before_the_page_held_code_executes() {
    assert_eq!(
        run_code_rewritten_through_an_older_store_translation(Op::Sw),
        101
    );
    assert_eq!(
        run_code_rewritten_through_an_older_store_translation(Op::AmoswapW),
        101
    );
}

#[test]
fn dirty_pages_are_reported_once_in_order() {
    use Op::*;
    let program = [ins(Sd, 0, 13, 0, 0), ins(Sb, 0, 12, 0, 0), ebreak()];
    let (mut h, mut bus) = boot(&program);
    assert_eq!(h.take_dirty_pages(), [0]);
    h.set_x(13, RAM_BASE + 9 * 4096);
    h.set_x(12, RAM_BASE + 3 * 4096 + 5);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.take_dirty_pages(), [3, 9]);
    assert_eq!(h.take_dirty_pages(), Vec::<u32>::new());
    h.reset(RAM_BASE, Privilege::Machine, 0, 0);
    run_to_break(&mut h, &mut bus);
    assert_eq!(
        h.take_dirty_pages(),
        [3, 9],
        "store TLB hits mark their pages again"
    );
}

#[test]
fn write_phys_and_read_phys_reject_ranges_outside_ram() {
    let mut h = hart(false);
    assert!(h.write_phys(GuestPhysAddr(RAM_BASE - 1), &[0]).is_err());
    assert!(h
        .write_phys(GuestPhysAddr(RAM_BASE + RAM_SIZE - 1), &[0, 0])
        .is_err());
    assert!(h.read_phys(GuestPhysAddr(u64::MAX), &mut [0]).is_err());
    assert!(h
        .write_phys(GuestPhysAddr(RAM_BASE + RAM_SIZE - 2), &[1, 2])
        .is_ok());
}

#[test]
fn write_state_is_deterministic_and_reflects_registers() {
    let a = hart(false);
    let mut b = hart(false);
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    a.write_state(&mut sa);
    b.write_state(&mut sb);
    assert_eq!(sa, sb);
    b.set_x(5, 1);
    sb.clear();
    b.write_state(&mut sb);
    assert_ne!(sa, sb);
}

#[test]
fn fetch_outside_ram_is_an_instruction_access_fault() {
    let mut h = hart(true);
    h.reset(0x1000, Privilege::Machine, 0, 0);
    let out = h.run(&mut Bus::default(), 10);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 1,
            tval: 0x1000,
            pc: 0x1000
        }
    );
}

// ---------------------------------------------------------------- Sv39

const PTE_V: u64 = 1;
const PTE_R: u64 = 2;
const PTE_W: u64 = 4;
const PTE_X: u64 = 8;
const PTE_U: u64 = 16;
const PTE_A: u64 = 64;
const PTE_D: u64 = 128;
pub(crate) const ROOT: u64 = RAM_BASE + 0x40000;

pub(crate) fn write_u64(h: &mut Hart, pa: u64, v: u64) {
    h.write_phys(GuestPhysAddr(pa), &v.to_le_bytes()).unwrap();
}
pub(crate) fn read_u64(h: &Hart, pa: u64) -> u64 {
    let mut b = [0u8; 8];
    h.read_phys(GuestPhysAddr(pa), &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// Maps one 4 KiB page using tables at ROOT, ROOT+0x1000 (level 1), ROOT+0x2000 (level 0);
/// code at RAM_BASE is identity-mapped by a 1 GiB gigapage (vpn2 = 2).
pub(crate) fn sv39_hart(va: u64, pa: u64, flags: u64) -> Hart {
    let mut h = hart(true);
    write_u64(
        &mut h,
        ROOT + 2 * 8,
        (RAM_BASE >> 12) << 10 | PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D,
    );
    let l1 = ROOT + 0x1000;
    let l0 = ROOT + 0x2000;
    write_u64(
        &mut h,
        ROOT + ((va >> 30) & 0x1ff) * 8,
        (l1 >> 12) << 10 | PTE_V,
    );
    write_u64(
        &mut h,
        l1 + ((va >> 21) & 0x1ff) * 8,
        (l0 >> 12) << 10 | PTE_V,
    );
    write_u64(
        &mut h,
        l0 + ((va >> 12) & 0x1ff) * 8,
        (pa >> 12) << 10 | flags,
    );
    assert!(h.write_csr(csr_numbers::SATP, 8 << 60 | ROOT >> 12));
    h
}

fn sv39_run(h: &mut Hart, program: &[Instruction], privilege: Privilege) -> RunOutcome {
    h.write_phys(GuestPhysAddr(RAM_BASE), &assemble(program))
        .unwrap();
    h.reset(RAM_BASE, privilege, 0, 0);
    h.run(&mut Bus::default(), 1000)
}

const VA: u64 = 0x4000_3000;
const PA: u64 = RAM_BASE + 0x9000;

#[test]
fn sv39_load_sets_accessed_and_store_sets_dirty_in_the_pte() {
    let mut h = sv39_hart(VA, PA, PTE_V | PTE_R | PTE_W);
    let l0_pte = ROOT + 0x2000 + 3 * 8;
    h.set_x(13, VA);
    let out = sv39_run(
        &mut h,
        &[ins(Op::Ld, 10, 13, 0, 8), ebreak()],
        Privilege::Supervisor,
    );
    assert!(matches!(out.stop, StopReason::MonitorTrap { cause: 3, .. }));
    assert_eq!(read_u64(&h, l0_pte) & (PTE_A | PTE_D), PTE_A);
    h.set_x(13, VA);
    h.set_x(12, 0x77);
    sv39_run(
        &mut h,
        &[ins(Op::Sd, 0, 13, 12, 8), ebreak()],
        Privilege::Supervisor,
    );
    assert_eq!(read_u64(&h, l0_pte) & (PTE_A | PTE_D), PTE_A | PTE_D);
    assert_eq!(read_u64(&h, PA + 8), 0x77);
}

/// Stores to VA, clears the D bit of its PTE with a plain store (no sfence.vma), stops at
/// an ebreak, optionally takes the dirty pages there (what a state digest does), stores to
/// VA again and returns the leaf PTE and the dirty pages of the second part.
fn pte_after_clearing_dirty_without_sfence(take_dirty_pages_between: bool) -> (u64, Vec<u32>) {
    let mut h = sv39_hart(VA, PA, PTE_V | PTE_R | PTE_W | PTE_A);
    let l0_pte = ROOT + 0x2000 + 3 * 8;
    h.set_x(13, VA);
    h.set_x(12, 0x77);
    h.set_x(14, l0_pte);
    h.set_x(15, (PA >> 12) << 10 | PTE_V | PTE_R | PTE_W | PTE_A);
    let out = sv39_run(
        &mut h,
        &[
            ins(Op::Sd, 0, 13, 12, 0),
            ins(Op::Sd, 0, 14, 15, 0),
            ebreak(),
            ins(Op::Sd, 0, 13, 12, 8),
            ebreak(),
        ],
        Privilege::Supervisor,
    );
    assert_eq!(out.executed.0, 2);
    assert_eq!(read_u64(&h, l0_pte) & (PTE_A | PTE_D), PTE_A);
    if take_dirty_pages_between {
        assert_eq!(h.take_dirty_pages(), [0, 9, 64, 65, 66]);
    }
    h.set_pc(RAM_BASE + 12);
    let out = h.run(&mut Bus::default(), 1000);
    assert_eq!(out.executed.0, 1);
    assert_eq!(read_u64(&h, PA + 8), 0x77);
    (read_u64(&h, l0_pte), h.take_dirty_pages())
}

#[test]
fn taking_dirty_pages_does_not_make_a_cached_store_walk_the_page_table_again() {
    // The guest may clear D without sfence.vma; the hart may keep using the cached
    // translation (privileged spec 4.3.2). Whether it does must not depend on where the host
    // took a digest, or guest RAM would.
    let cleared = (PA >> 12) << 10 | PTE_V | PTE_R | PTE_W | PTE_A;
    let (without, dirty_without) = pte_after_clearing_dirty_without_sfence(false);
    let (with, dirty_with) = pte_after_clearing_dirty_without_sfence(true);
    assert_eq!(without, cleared);
    assert_eq!(
        with, cleared,
        "the digest made the store walk and set D again"
    );
    assert_eq!(dirty_without, [0, 9, 64, 65, 66]);
    assert_eq!(
        dirty_with,
        [9],
        "the second store still marks its page dirty"
    );
}

#[test]
fn a_page_that_becomes_code_keeps_its_cached_store_translation() {
    // Whether a page holds decoded code is host bookkeeping (a restored backup starts with an
    // empty decode cache), so it must not decide whether a store walks the page table.
    let cleared = (PA >> 12) << 10 | PTE_V | PTE_R | PTE_W | PTE_A;
    let mut h = sv39_hart(VA, PA, PTE_V | PTE_R | PTE_W | PTE_A);
    let l0_pte = ROOT + 0x2000 + 3 * 8;
    h.write_phys(
        GuestPhysAddr(PA + 0x100),
        &assemble(&[ins(Op::Jalr, 0, 1, 0, 0)]),
    )
    .unwrap();
    h.set_x(13, VA);
    h.set_x(12, 0x77);
    h.set_x(14, l0_pte);
    h.set_x(15, cleared);
    h.set_x(16, PA + 0x100);
    let out = sv39_run(
        &mut h,
        &[
            ins(Op::Sd, 0, 13, 12, 0),
            ins(Op::Sd, 0, 14, 15, 0),
            ins(Op::Jalr, 1, 16, 0, 0),
            ins(Op::Sd, 0, 13, 12, 8),
            ebreak(),
        ],
        Privilege::Supervisor,
    );
    assert_eq!(out.executed.0, 5);
    assert_eq!(read_u64(&h, PA + 8), 0x77);
    assert_eq!(read_u64(&h, l0_pte), cleared);
}

#[test]
fn sfence_vma_with_an_address_drops_that_page_and_keeps_the_others() {
    // Privileged spec 4.2.1: with rs1 != x0 only translations of that address must go;
    // others may stay cached (as in QEMU), so a PTE cleared without its own sfence.vma
    // keeps working until it gets one.
    let mut h = sv39_hart(VA, PA, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
    write_u64(&mut h, PA, 0x5a5a);
    h.set_x(13, VA);
    h.set_x(14, ROOT + 0x2000 + 3 * 8);
    h.set_x(17, VA + 0x1000);
    let out = sv39_run(
        &mut h,
        &[
            ins(Op::Ld, 10, 13, 0, 0),
            ins(Op::Sd, 0, 14, 0, 0),
            ins(Op::SfenceVma, 0, 17, 0, 0),
            ins(Op::Ld, 11, 13, 0, 0),
            ins(Op::SfenceVma, 0, 13, 0, 0),
            ins(Op::Ld, 12, 13, 0, 0),
            ebreak(),
        ],
        Privilege::Supervisor,
    );
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 13,
            tval: VA,
            pc: RAM_BASE + 20
        }
    );
    assert_eq!((h.x(10), h.x(11), h.x(12)), (0x5a5a, 0x5a5a, 0));
}

#[test]
fn sfence_vma_with_an_address_in_a_superpage_drops_all_of_the_superpage() {
    // A megapage at 0x4020_0000 onto RAM_BASE: both of its first two 4 KiB pages are read
    // (two cached translations), the megapage's PTE is cleared and only the first page
    // fenced. The superpage's translation is gone, so the second page faults too.
    const MEGAPAGE: u64 = 0x4020_0000;
    let mut h = hart(true);
    write_u64(
        &mut h,
        ROOT + 2 * 8,
        (RAM_BASE >> 12) << 10 | PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D,
    );
    write_u64(&mut h, ROOT + 8, ((ROOT + 0x1000) >> 12) << 10 | PTE_V);
    let leaf = ROOT + 0x1000 + 8;
    write_u64(
        &mut h,
        leaf,
        (RAM_BASE >> 12) << 10 | PTE_V | PTE_R | PTE_W | PTE_A | PTE_D,
    );
    assert!(h.write_csr(csr_numbers::SATP, 8 << 60 | ROOT >> 12));
    h.set_x(13, MEGAPAGE);
    h.set_x(14, MEGAPAGE + 0x1000);
    h.set_x(16, leaf);
    let out = sv39_run(
        &mut h,
        &[
            ins(Op::Ld, 10, 13, 0, 0),
            ins(Op::Ld, 11, 14, 0, 0),
            ins(Op::Sd, 0, 16, 0, 0),
            ins(Op::SfenceVma, 0, 13, 0, 0),
            ins(Op::Ld, 12, 14, 0, 0),
            ebreak(),
        ],
        Privilege::Supervisor,
    );
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 13,
            tval: MEGAPAGE + 0x1000,
            pc: RAM_BASE + 16
        }
    );
    assert_eq!(out.executed.0, 4);
}

#[test]
fn sv39_faults_report_the_virtual_address_in_stval() {
    // Unmapped page: load page fault.
    let mut h = sv39_hart(VA, PA, PTE_V | PTE_R);
    h.set_x(13, VA + 0x1000);
    let out = sv39_run(&mut h, &[ins(Op::Lw, 10, 13, 0, 4)], Privilege::Supervisor);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 13,
            tval: VA + 0x1004,
            pc: RAM_BASE
        }
    );
    // Read-only page: store page fault.
    h.set_x(13, VA);
    let out = sv39_run(&mut h, &[ins(Op::Sw, 0, 13, 0, 4)], Privilege::Supervisor);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 15,
            tval: VA + 4,
            pc: RAM_BASE
        }
    );
    // Non-canonical address.
    h.set_x(13, 1 << 40);
    let out = sv39_run(&mut h, &[ins(Op::Ld, 10, 13, 0, 0)], Privilege::Supervisor);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 13,
            tval: 1 << 40,
            pc: RAM_BASE
        }
    );
    // Fetch from a non-executable page: instruction page fault.
    h.reset(VA, Privilege::Supervisor, 0, 0);
    let out = h.run(&mut Bus::default(), 10);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 12,
            tval: VA,
            pc: VA
        }
    );
}

#[test]
fn sv39_misaligned_access_across_pages_faults_on_the_second_page_start() {
    let mut h = sv39_hart(VA, PA, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D);
    h.set_x(13, VA + 0xffc);
    let out = sv39_run(&mut h, &[ins(Op::Sd, 0, 13, 12, 0)], Privilege::Supervisor);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 15,
            tval: VA + 0x1000,
            pc: RAM_BASE
        }
    );
    assert_eq!(
        read_u64(&h, PA + 0xff8),
        0,
        "nothing written when the second page faults"
    );
}

#[test]
fn sv39_sum_gates_supervisor_access_to_user_pages_and_fetch_is_never_allowed() {
    let mut h = sv39_hart(VA, PA, PTE_V | PTE_R | PTE_X | PTE_U);
    h.set_x(13, VA);
    let out = sv39_run(&mut h, &[ins(Op::Ld, 10, 13, 0, 0)], Privilege::Supervisor);
    assert!(matches!(
        out.stop,
        StopReason::MonitorTrap { cause: 13, .. }
    ));
    h.write_csr(csr_numbers::SSTATUS, 1 << 18);
    h.set_x(13, VA);
    let out = sv39_run(
        &mut h,
        &[ins(Op::Ld, 10, 13, 0, 0), ebreak()],
        Privilege::Supervisor,
    );
    assert!(matches!(out.stop, StopReason::MonitorTrap { cause: 3, .. }));
    h.reset(VA, Privilege::Supervisor, 0, 0);
    let out = h.run(&mut Bus::default(), 1);
    assert!(matches!(
        out.stop,
        StopReason::MonitorTrap { cause: 12, .. }
    ));
}

#[test]
fn sv39_mxr_makes_execute_only_pages_readable() {
    let mut h = sv39_hart(VA, PA, PTE_V | PTE_X);
    h.set_x(13, VA);
    let out = sv39_run(&mut h, &[ins(Op::Ld, 10, 13, 0, 0)], Privilege::Supervisor);
    assert!(matches!(
        out.stop,
        StopReason::MonitorTrap { cause: 13, .. }
    ));
    h.write_csr(csr_numbers::SSTATUS, 1 << 19);
    h.set_x(13, VA);
    let out = sv39_run(
        &mut h,
        &[ins(Op::Ld, 10, 13, 0, 0), ebreak()],
        Privilege::Supervisor,
    );
    assert!(matches!(out.stop, StopReason::MonitorTrap { cause: 3, .. }));
}

#[test]
fn sv39_user_mode_cannot_touch_supervisor_pages() {
    let mut h = sv39_hart(VA, PA, PTE_V | PTE_R | PTE_W | PTE_X);
    // The code gigapage is not a user page either, so U-mode faults on its first fetch.
    let out = sv39_run(&mut h, &[ebreak()], Privilege::User);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 12,
            tval: RAM_BASE,
            pc: RAM_BASE
        }
    );
}

#[test]
fn mprv_translates_machine_mode_data_accesses_with_mpp() {
    let mut h = sv39_hart(VA, PA, PTE_V | PTE_R | PTE_W);
    write_u64(&mut h, PA, 0x1234);
    h.write_csr(csr_numbers::MSTATUS, 1 << 17 | 1 << 11);
    h.set_x(13, VA);
    let out = sv39_run(
        &mut h,
        &[ins(Op::Ld, 10, 13, 0, 0), ebreak()],
        Privilege::Machine,
    );
    assert!(
        matches!(out.stop, StopReason::MonitorTrap { cause: 3, .. }),
        "fetch stays untranslated"
    );
    assert_eq!(h.x(10), 0x1234);
    // MPP = U: the supervisor page is not accessible.
    h.write_csr(csr_numbers::MSTATUS, 1 << 17);
    h.set_x(13, VA);
    let out = sv39_run(
        &mut h,
        &[ins(Op::Ld, 10, 13, 0, 0), ebreak()],
        Privilege::Machine,
    );
    assert!(matches!(
        out.stop,
        StopReason::MonitorTrap { cause: 13, .. }
    ));
}

#[test]
fn satp_writes_with_unsupported_modes_are_ignored() {
    use Op::*;
    let program = [
        csr(Csrrw, 0, 11, 0x180),
        csr(Csrrs, 10, 0, 0x180),
        csr(Csrrw, 0, 12, 0x180),
        csr(Csrrs, 13, 0, 0x180),
        csr(Csrrw, 0, 14, 0x180),
        csr(Csrrs, 15, 0, 0x180),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    h.set_x(13, 10 << 60 | 0x1234); // Sv57
    h.set_x(12, 9 << 60 | 0x1234); // Sv48
    h.set_x(14, 8 << 60 | 0x1234); // Sv39
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 0);
    assert_eq!(h.x(13), 0);
    assert_eq!(h.x(15), 8 << 60 | 0x1234);
}

#[test]
fn sv39_misaligned_superpage_is_a_page_fault() {
    let mut h = hart(true);
    // Megapage at vpn2=1, vpn1=0 whose PPN is not 2 MiB aligned.
    write_u64(
        &mut h,
        ROOT + 2 * 8,
        (RAM_BASE >> 12) << 10 | PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D,
    );
    write_u64(&mut h, ROOT + 8, ((ROOT + 0x1000) >> 12) << 10 | PTE_V);
    write_u64(
        &mut h,
        ROOT + 0x1000,
        ((RAM_BASE + 0x1000) >> 12) << 10 | PTE_V | PTE_R | PTE_A,
    );
    h.write_csr(csr_numbers::SATP, 8 << 60 | ROOT >> 12);
    h.set_x(13, 0x4000_0000);
    let out = sv39_run(&mut h, &[ins(Op::Ld, 10, 13, 0, 0)], Privilege::Supervisor);
    assert!(matches!(
        out.stop,
        StopReason::MonitorTrap { cause: 13, .. }
    ));
}

/// An independent Sv39 walker (privileged spec 4.3.2) without A/D updates: Ok(paddr) or
/// Err(cause).
fn reference_walk(
    h: &Hart,
    va: u64,
    access: Access,
    privilege: u64,
    sum: bool,
    mxr: bool,
) -> Result<u64, u64> {
    let (page_fault, access_fault) = match access {
        Access::Fetch => (12, 1),
        Access::Load => (13, 5),
        Access::Store => (15, 7),
    };
    let top = va >> 38;
    if top != 0 && top != (1 << 26) - 1 {
        return Err(page_fault);
    }
    let mut a = ROOT;
    let mut level = 2i32;
    loop {
        let pte_addr = a + ((va >> (12 + 9 * level)) & 0x1ff) * 8;
        if !(RAM_BASE..RAM_BASE + RAM_SIZE).contains(&pte_addr) {
            return Err(access_fault);
        }
        let pte = read_u64(h, pte_addr);
        let (v, r, w, x, u) = (
            pte & PTE_V != 0,
            pte & PTE_R != 0,
            pte & PTE_W != 0,
            pte & PTE_X != 0,
            pte & PTE_U != 0,
        );
        if !v || (!r && w) || pte >> 54 != 0 {
            return Err(page_fault);
        }
        if r || x {
            let ok = match access {
                Access::Fetch => x && if privilege == 0 { u } else { !u },
                Access::Load => (r || (mxr && x)) && if privilege == 0 { u } else { !u || sum },
                Access::Store => w && if privilege == 0 { u } else { !u || sum },
            };
            if !ok {
                return Err(page_fault);
            }
            let ppn = (pte >> 10) & ((1 << 44) - 1);
            for i in 0..level {
                if (ppn >> (9 * i)) & 0x1ff != 0 {
                    return Err(page_fault);
                }
            }
            let mask = (1u64 << (12 + 9 * level)) - 1;
            return Ok((ppn << 12) & !mask | va & mask);
        }
        level -= 1;
        if level < 0 {
            return Err(page_fault);
        }
        a = ((pte >> 10) & ((1 << 44) - 1)) << 12;
    }
}

fn random_pte(rng: &mut Rng, next_table: Option<u64>, level: u32) -> u64 {
    let flags = rng.next() & 0xff | PTE_V;
    match rng.below(8) {
        0 => 0,
        1..=3 if next_table.is_some() => (next_table.unwrap() >> 12) << 10 | PTE_V,
        4 => flags | 1 << 60, // reserved bits set
        _ => {
            let page = if rng.below(12) == 0 {
                // Outside RAM: MMIO or nothing.
                if rng.below(2) == 0 {
                    MMIO_BASE
                } else {
                    0x2000_0000
                }
            } else if level > 0 {
                // A superpage, aligned or not.
                if rng.below(2) == 0 {
                    RAM_BASE
                } else {
                    RAM_BASE + 0x1000 * rng.below(256)
                }
            } else {
                RAM_BASE + 0x80000 + 0x1000 * rng.below(0x80)
            };
            (page >> 12) << 10 | flags
        }
    }
}

#[test]
fn tlb_path_agrees_with_a_reference_page_walk_over_random_tables() {
    let seed = 0x5eed_0003;
    let mut rng = Rng(seed);
    for round in 0..40 {
        let mut h = hart(true);
        let mut bus = Bus::default();
        // Tables: root at ROOT; level-1 tables at ROOT + 0x1000 * (1..=4); level-0 tables at
        // ROOT + 0x1000 * (5..=12). Entries 0..4 of each table are populated.
        for e in 0..4u64 {
            let pte = random_pte(&mut rng, Some(ROOT + 0x1000 * (1 + e)), 2);
            write_u64(&mut h, ROOT + e * 8, pte);
            write_u64(
                &mut h,
                ROOT + (508 + e) * 8,
                random_pte(&mut rng, Some(ROOT + 0x1000 * (1 + e)), 2),
            );
            for f in 0..4u64 {
                let l0 = ROOT + 0x1000 * (5 + (e * 4 + f) % 8);
                write_u64(
                    &mut h,
                    ROOT + 0x1000 * (1 + e) + f * 8,
                    random_pte(&mut rng, Some(l0), 1),
                );
                for g in 0..4u64 {
                    write_u64(&mut h, l0 + g * 8, random_pte(&mut rng, None, 0));
                }
            }
        }
        h.write_csr(csr_numbers::SATP, 8 << 60 | ROOT >> 12);
        for _ in 0..400 {
            let vpn2 = match rng.below(3) {
                0 => rng.below(4),
                1 => 508 + rng.below(4),
                _ => rng.below(512),
            };
            let mut va =
                vpn2 << 30 | rng.below(4) << 21 | rng.below(4) << 12 | (rng.below(512) * 8);
            if vpn2 >= 256 {
                va |= !((1u64 << 39) - 1);
            }
            if rng.below(20) == 0 {
                va ^= 1 << 50; // non-canonical
            }
            let (privilege, mprv) = match rng.below(4) {
                0 => (Privilege::User, false),
                1 | 2 => (Privilege::Supervisor, false),
                _ => (Privilege::Machine, true),
            };
            let sum = rng.below(2) == 0;
            let mxr = rng.below(2) == 0;
            let mpp = if rng.below(2) == 0 { 1u64 } else { 0 };
            let mstatus =
                (sum as u64) << 18 | (mxr as u64) << 19 | (mprv as u64) << 17 | mpp << 11 | 1 << 13;
            h.write_csr(csr_numbers::MSTATUS, mstatus);
            h.reset(0, privilege, 0, 0);
            let effective = if mprv { mpp } else { privilege as u64 };
            let mut access = match rng.below(3) {
                0 => Access::Fetch,
                1 => Access::Load,
                _ => Access::Store,
            };
            if access == Access::Fetch && mprv {
                access = Access::Load; // M-mode fetches are never translated
            }
            let expected = reference_walk(&h, va, access, effective, sum, mxr);
            // Stores into the page tables would legitimately leave stale TLB entries; skip.
            if access == Access::Store
                && matches!(expected, Ok(pa) if (RAM_BASE..RAM_BASE + 0x80000).contains(&pa))
            {
                access = Access::Load;
            }
            let expected = reference_walk(&h, va, access, effective, sum, mxr);
            for attempt in 0..2 {
                let context = format!("seed {seed:#x} round {round} va {va:#x} {access:?} {privilege:?} mprv {mprv} mpp {mpp} sum {sum} mxr {mxr} attempt {attempt}");
                let value = rng.next();
                let got: Result<u64, Exception> = match access {
                    Access::Fetch => h.fetch_offset(va).map(|o| RAM_BASE + o as u64),
                    Access::Load => h.load(&mut bus, va, 8),
                    Access::Store => h.store(&mut bus, va, 8, value).map(|_| 0),
                };
                match (expected, got) {
                    (Err(cause), Err(e)) => {
                        assert_eq!(e, Exception { cause, tval: va }, "{context}");
                    }
                    (Ok(pa), got) => {
                        let in_ram = (RAM_BASE..RAM_BASE + RAM_SIZE).contains(&pa);
                        let in_mmio = (MMIO_BASE..MMIO_BASE + 0x100).contains(&pa);
                        match (access, got) {
                            (_, Err(e)) => {
                                // Instructions are fetched from RAM only.
                                let fetch_from_mmio = access == Access::Fetch && in_mmio;
                                assert!(
                                    !in_ram && (!in_mmio || fetch_from_mmio),
                                    "{context}: unexpected {e:?}"
                                );
                                let cause = match access {
                                    Access::Fetch => 1,
                                    Access::Load => 5,
                                    Access::Store => 7,
                                };
                                assert_eq!(e, Exception { cause, tval: va }, "{context}");
                            }
                            (Access::Fetch, Ok(got_pa)) => assert_eq!(got_pa, pa, "{context}"),
                            (Access::Load, Ok(v)) => {
                                if in_ram {
                                    assert_eq!(v, read_u64(&h, pa), "{context}");
                                }
                            }
                            (Access::Store, Ok(_)) => {
                                if in_ram {
                                    assert_eq!(read_u64(&h, pa), value, "{context}");
                                }
                            }
                        }
                    }
                    (Err(cause), Ok(v)) => {
                        panic!("{context}: expected cause {cause}, got Ok({v:#x})")
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- F and D

fn fp_hart(program: &[Instruction]) -> (Hart, Bus) {
    let (mut h, bus) = boot(program);
    h.write_csr(csr_numbers::MSTATUS, 1 << 13);
    (h, bus)
}

const BOXED: u64 = 0xffff_ffff_0000_0000;

#[test]
fn single_arithmetic_nan_boxes_results_and_accrues_flags() {
    use Op::*;
    let program = [
        fpr(FaddS, 3, 1, 2, 0),
        fpr(FaddS, 4, 5, 2, 0), // f5 improperly boxed: reads as canonical NaN
        fpr(FdivD, 6, 7, 8, 7), // 1.0 / 0.0 with dynamic rounding
        ebreak(),
    ];
    let (mut h, mut bus) = fp_hart(&program);
    h.f[1] = BOXED | 1.5f32.to_bits() as u64;
    h.f[2] = BOXED | 2.25f32.to_bits() as u64;
    h.f[5] = 1.0f32.to_bits() as u64;
    h.f[7] = 1.0f64.to_bits();
    h.f[8] = 0;
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.f(3), BOXED | 3.75f32.to_bits() as u64);
    assert_eq!(h.f(4), BOXED | 0x7fc0_0000);
    assert_eq!(h.f(6), f64::INFINITY.to_bits());
    assert_eq!(h.read_csr(csr_numbers::FFLAGS), Some(0x08));
    let m = h.read_csr(csr_numbers::MSTATUS).unwrap();
    assert_eq!((m >> 13) & 3, 3, "FS dirty");
}

#[test]
fn reserved_rounding_modes_are_illegal_and_dynamic_uses_frm() {
    use Op::*;
    for rm in [5u8, 6] {
        let (mut h, mut bus) = fp_hart(&[fpr(FaddD, 1, 2, 3, rm)]);
        assert!(
            matches!(
                h.run(&mut bus, 1).stop,
                StopReason::MonitorTrap { cause: 2, .. }
            ),
            "rm {rm}"
        );
    }
    let (mut h, mut bus) = fp_hart(&[fpr(FdivS, 1, 2, 3, 7), ebreak()]);
    h.write_csr(csr_numbers::FRM, 5);
    assert!(matches!(
        h.run(&mut bus, 1).stop,
        StopReason::MonitorTrap { cause: 2, .. }
    ));
    // frm = RTZ: 1/3 rounds down in the last place; RNE rounds up.
    h.write_csr(csr_numbers::FRM, 1);
    h.f[2] = BOXED | 1.0f32.to_bits() as u64;
    h.f[3] = BOXED | 3.0f32.to_bits() as u64;
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.f(1), BOXED | 0x3eaa_aaaa);
    assert_eq!(h.read_csr(csr_numbers::FCSR), Some(1 << 5 | 0x01));
}

#[test]
fn moves_sign_injection_class_and_conversions() {
    use Op::*;
    let program = [
        ins(FmvXW, 10, 1, 0, 0),
        ins(FsgnjnS, 2, 1, 1, 0),
        ins(FclassS, 11, 2, 0, 0),
        ins(FclassS, 12, 9, 0, 0),
        fpr(FcvtWuS, 13, 3, 0, 1),
        fpr(FcvtWS, 14, 4, 0, 0),
        ins(FmvDX, 5, 15, 0, 0),
        ins(FmvXD, 16, 5, 0, 0),
        fpr(FcvtDL, 6, 17, 0, 0),
        fpr(FcvtSD, 7, 6, 0, 0),
        ebreak(),
    ];
    let (mut h, mut bus) = fp_hart(&program);
    h.f[1] = BOXED | 0x8000_0000; // -0.0
    h.f[3] = BOXED | 3.0e9f32.to_bits() as u64;
    h.f[4] = BOXED | 0x7fc0_0000; // NaN
    h.f[9] = BOXED | f32::NEG_INFINITY.to_bits() as u64;
    h.set_x(15, 0x0123_4567_89ab_cdef);
    h.set_x(17, (-3i64) as u64);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 0xffff_ffff_8000_0000, "fmv.x.w sign-extends");
    assert_eq!(h.f(2), BOXED, "fsgnjn of -0 with itself is +0");
    assert_eq!(h.x(11), 1 << 4, "+0 class");
    assert_eq!(h.x(12), 1 << 0, "-inf class");
    assert_eq!(
        h.x(13),
        3_000_000_000u32 as i32 as i64 as u64,
        "fcvt.wu.s sign-extends"
    );
    assert_eq!(h.x(14), 0x7fff_ffff, "NaN converts to the maximum");
    assert_eq!(h.x(16), 0x0123_4567_89ab_cdef);
    assert_eq!(h.f(6), (-3.0f64).to_bits());
    assert_eq!(h.f(7), BOXED | (-3.0f32).to_bits() as u64);
    assert_eq!(
        h.read_csr(csr_numbers::FFLAGS),
        Some(0x10),
        "NV from the NaN conversion"
    );
}

#[test]
fn fp_loads_box_singles_and_stores_move_raw_bits() {
    use Op::*;
    let program = [
        ins(Flw, 1, 11, 0, 0),
        ins(Fsd, 0, 11, 1, 8),
        ins(Fsw, 0, 11, 2, 16),
        ins(Fld, 3, 11, 0, 8),
        ebreak(),
    ];
    let (mut h, mut bus) = fp_hart(&program);
    h.set_x(11, RAM_BASE + 0x5000);
    write_u64(&mut h, RAM_BASE + 0x5000, 0x3f80_0000);
    h.f[2] = 0x1234_5678_9abc_def0;
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.f(1), BOXED | 0x3f80_0000);
    assert_eq!(read_u64(&h, RAM_BASE + 0x5008), BOXED | 0x3f80_0000);
    assert_eq!(read_u64(&h, RAM_BASE + 0x5010), 0x9abc_def0);
    assert_eq!(h.f(3), BOXED | 0x3f80_0000);
}

#[test]
fn fused_multiply_add_variants_negate_the_right_terms() {
    use Op::*;
    let f = |op| Instruction {
        op,
        rd: 4,
        rs1: 1,
        rs2: 2,
        rs3: 3,
        rm: 0,
        length_bytes: 4,
        imm: 0,
    };
    for (op, want) in [
        (FmaddD, 7.0),
        (FmsubD, -1.0),
        (FnmsubD, 1.0),
        (FnmaddD, -7.0),
    ] {
        let (mut h, mut bus) = fp_hart(&[f(op), ebreak()]);
        h.f[1] = 2.0f64.to_bits();
        h.f[2] = 1.5f64.to_bits();
        h.f[3] = 4.0f64.to_bits();
        run_to_break(&mut h, &mut bus);
        assert_eq!(f64::from_bits(h.f(4)), want, "{op:?}");
    }
}

#[test]
fn fp_loads_and_lr_from_mmio_also_end_the_run() {
    for op in [Op::Flw, Op::Fld, Op::LrW] {
        let (mut h, mut bus) = fp_hart(&[ins(op, 1, 13, 0, 0), ins(Op::Ld, 2, 14, 0, 0), ebreak()]);
        h.set_x(13, MMIO_BASE);
        h.set_x(14, RAM_BASE);
        let out = h.run(&mut bus, 100);
        assert_eq!(out.stop, StopReason::MmioAccess, "{op:?}");
        assert_eq!(out.executed.0, 1);
        // The following RAM load does not inherit the stop.
        assert_eq!(run_to_break(&mut h, &mut bus).executed.0, 1);
    }
}

#[test]
fn stores_next_to_code_in_the_same_page_keep_its_blocks_and_stores_into_it_drop_them() {
    use Op::*;
    // A loop that stores to a data word in its own page, 0x800 bytes away from the code.
    let program = [
        ins(Sd, 0, 13, 10, 0x7f8),
        ins(Addi, 10, 10, 0, 1),
        ins(Blt, 0, 10, 12, -8),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    h.set_x(12, 1000);
    h.set_x(13, RAM_BASE + 8);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 1000);
    assert_eq!(read_u64(&h, RAM_BASE + 0x800), 999);
    let page_generation = h.blocks.page_generations[0];
    assert!(h.blocks.is_code_page(0));
    // A store into the code chunk bumps the page generation.
    h.write_phys(
        GuestPhysAddr(RAM_BASE + 4),
        &encode(&ins(Addi, 10, 10, 0, 2)).unwrap().to_le_bytes(),
    )
    .unwrap();
    assert_eq!(h.blocks.page_generations[0], page_generation + 1);
    assert!(!h.blocks.is_code_page(0));
    h.reset(RAM_BASE, Privilege::Machine, 0, 0);
    h.set_x(13, RAM_BASE + 8);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 1000);
    assert_eq!(read_u64(&h, RAM_BASE + 0x800), 998);
}

#[test]
fn random_programs_never_panic_the_host() {
    let seed = 0x5eed_0004;
    let mut rng = Rng(seed);
    for round in 0..60 {
        let mut h = hart(round % 2 == 0);
        let mut bus = Bus::default();
        let mut code = Vec::new();
        for _ in 0..(64 * 1024 / 4) {
            // Mostly valid-looking encodings: random words with the low bits of a 32-bit or
            // compressed instruction.
            code.extend_from_slice(&(rng.next() as u32).to_le_bytes());
        }
        h.write_phys(GuestPhysAddr(RAM_BASE), &code).unwrap();
        // Random page tables over the same random bytes, sometimes enabled.
        if rng.below(2) == 0 {
            h.write_csr(
                csr_numbers::SATP,
                8 << 60 | (RAM_BASE + 0x1000 * rng.below(16)) >> 12,
            );
        }
        h.write_csr(csr_numbers::MTVEC, RAM_BASE + rng.below(0x10000));
        h.write_csr(csr_numbers::STVEC, RAM_BASE + rng.below(0x10000));
        h.write_csr(csr_numbers::MEDELEG, rng.next());
        h.write_csr(csr_numbers::MIDELEG, rng.next());
        h.write_csr(csr_numbers::MIE, rng.next());
        h.write_csr(csr_numbers::MSTATUS, rng.next());
        for r in 1..32 {
            h.set_x(
                r,
                if rng.below(2) == 0 {
                    RAM_BASE + rng.below(RAM_SIZE)
                } else {
                    rng.next()
                },
            );
        }
        let privilege =
            [Privilege::User, Privilege::Supervisor, Privilege::Machine][rng.below(3) as usize];
        h.reset(
            RAM_BASE + 2 * rng.below(0x8000),
            privilege,
            rng.next(),
            rng.next(),
        );
        let mut executed = 0;
        for _ in 0..50 {
            h.set_interrupt_lines(rng.next());
            let before = h.instret().0;
            let out = h.run(&mut bus, rng.below(2000));
            assert_eq!(
                h.instret().0 - before,
                out.executed.0,
                "seed {seed:#x} round {round}"
            );
            executed += out.executed.0;
            if let StopReason::MonitorTrap { .. } = out.stop {
                // Resume somewhere else, as a monitor might.
                h.reset(RAM_BASE + 2 * rng.below(0x8000), privilege, 0, 0);
            }
        }
        let mut state = Vec::new();
        h.write_state(&mut state);
        assert!(executed > 0 || !state.is_empty());
    }
}

#[test]
fn a_trap_handler_that_cannot_be_fetched_stops_run_instead_of_spinning() {
    // mtvec outside RAM: every trap faults again on the handler's fetch.
    let (mut h, mut bus) = boot_native(&[ins(Op::Addi, 10, 0, 0, 1), ins(Op::Ecall, 0, 0, 0, 0)]);
    h.write_csr(csr_numbers::MTVEC, 0x1000);
    let out = h.run(&mut bus, 1_000_000);
    assert_eq!(out.executed.0, 1);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 1,
            tval: 0x1000,
            pc: 0x1000
        }
    );
    assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(1));
}

#[test]
fn restore_state_reproduces_a_running_hart_exactly() {
    use Op::*;
    let program = [
        ins(Addi, 10, 10, 0, 3),
        ins(LrD, 12, 13, 0, 0),
        ins(Mul, 11, 10, 10, 0),
        ins(Sd, 0, 13, 11, 8),
        ins(Beq, 0, 0, 0, -16),
    ];
    let (mut a, mut bus) = fp_hart(&program);
    a.set_x(13, RAM_BASE + 0x6000);
    a.write_csr(csr_numbers::MSCRATCH, 0x1234);
    a.run(&mut bus, 1002);
    let mut state = Vec::new();
    a.write_state(&mut state);
    let mut b = hart(true);
    b.write_phys(GuestPhysAddr(RAM_BASE), a.ram()).unwrap();
    b.restore_state(&state).unwrap();
    let mut again = Vec::new();
    b.write_state(&mut again);
    assert_eq!(state, again);
    a.flush_translations();
    a.run(&mut bus, 5000);
    b.run(&mut Bus::default(), 5000);
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    a.write_state(&mut sa);
    b.write_state(&mut sb);
    assert_eq!(sa, sb);
    assert_eq!(a.ram(), b.ram());
}

#[test]
fn restore_state_drops_decoded_code_and_runs_the_restored_ram() {
    use Op::*;
    // The receiver ran other code at the same address before the restore.
    let (mut b, mut bus) = boot(&[ins(Addi, 10, 0, 0, 1), ebreak()]);
    run_to_break(&mut b, &mut bus);
    assert_eq!(b.x(10), 1);
    assert!(b.blocks.is_code_page(0));
    let (a, _) = boot(&[ins(Addi, 10, 0, 0, 2), ebreak()]);
    let mut state = Vec::new();
    a.write_state(&mut state);
    b.restore_state(&state).unwrap();
    assert!(
        (0..(RAM_SIZE / PAGE_SIZE_BYTES) as usize).all(|page| !b.blocks.is_code_page(page)),
        "a restored hart starts with no decoded code, whatever order RAM arrives in"
    );
    b.write_phys(GuestPhysAddr(RAM_BASE), a.ram()).unwrap();
    run_to_break(&mut b, &mut bus);
    assert_eq!(b.x(10), 2);
}

#[test]
fn restore_state_rejects_malformed_input_and_changes_nothing() {
    let mut h = hart(false);
    let mut state = Vec::new();
    h.write_state(&mut state);
    let before = state.clone();
    assert!(matches!(
        h.restore_state(&state[..state.len() - 8]),
        Err(StateError::Length { .. })
    ));
    assert!(matches!(
        h.restore_state(&state[..7]),
        Err(StateError::Length { .. })
    ));
    let mut bad = state.clone();
    bad[8] = 2;
    assert_eq!(
        h.restore_state(&bad),
        Err(StateError::Privilege { value: 2 })
    );
    let mut bad = state.clone();
    let n = bad.len();
    bad[n - 8] = 7;
    assert_eq!(
        h.restore_state(&bad),
        Err(StateError::Reservation { flag: 7 })
    );
    let mut after = Vec::new();
    h.write_state(&mut after);
    assert_eq!(before, after);
}

#[test]
fn blocks_continue_past_branches_not_taken_and_count_exactly() {
    use Op::*;
    // bne not taken, beq not taken, then a faulting load: three retire, the load traps.
    let program = [
        ins(Bne, 0, 0, 0, 64),
        ins(Beq, 0, 10, 0, 64),
        ins(Addi, 11, 0, 0, 5),
        ins(Ld, 12, 0, 0, 0),
        ebreak(),
    ];
    let (mut h, mut bus) = boot(&program);
    h.set_x(10, 1);
    let out = h.run(&mut bus, 100);
    assert_eq!(out.executed.0, 3);
    assert_eq!(
        out.stop,
        StopReason::MonitorTrap {
            cause: 5,
            tval: 0,
            pc: RAM_BASE + 12
        }
    );
    assert_eq!(h.x(11), 5);
    // A budget that ends right after a branch not taken stops there.
    h.reset(RAM_BASE, Privilege::Machine, 1, 0);
    let out = h.run(&mut bus, 2);
    assert_eq!(
        out,
        RunOutcome {
            executed: InstructionCount(2),
            stop: StopReason::BudgetExhausted
        }
    );
    assert_eq!(h.pc(), RAM_BASE + 8);
}

// ---------------------------------------------------------------- PMP (privileged spec 3.7)

/// Puts the hart in `privilege` at the RAM base (no program needed: the tests call the
/// access paths directly).
fn at_privilege(h: &mut Hart, privilege: Privilege) {
    h.reset(RAM_BASE, privilege, 0, 0);
}

fn cause_of<T: core::fmt::Debug>(result: Result<T, Exception>) -> u64 {
    result.expect_err("the access faults").cause
}

const PMP_PAGE: u64 = RAM_BASE + 0x8000;

#[test]
fn supervisor_and_user_accesses_fail_when_no_pmp_entry_matches_and_machine_accesses_succeed() {
    let mut h = hart_without_pmp_entries(true);
    let mut bus = Bus::default();
    at_privilege(&mut h, Privilege::Machine);
    assert_eq!(h.load(&mut bus, PMP_PAGE, 8), Ok(0));
    assert_eq!(h.store(&mut bus, PMP_PAGE, 8, 1), Ok(Flow::Next));
    assert!(h.fetch_offset(PMP_PAGE).is_ok());
    for privilege in [Privilege::Supervisor, Privilege::User] {
        at_privilege(&mut h, privilege);
        assert_eq!(cause_of(h.load(&mut bus, PMP_PAGE, 8)), 5);
        assert_eq!(cause_of(h.store(&mut bus, PMP_PAGE, 8, 1)), 7);
        assert_eq!(cause_of(h.fetch_offset(PMP_PAGE)), 1);
        assert_eq!(
            cause_of(h.load(&mut bus, MMIO_BASE, 1)),
            5,
            "MMIO is checked too"
        );
    }
}

#[test]
fn tor_na4_and_napot_entries_match_their_ranges_and_the_lowest_numbered_entry_decides() {
    let mut h = hart(true);
    let mut bus = Bus::default();
    // Entry 0: NA4 read-only at PMP_PAGE. Entry 1: TOR from PMP_PAGE to PMP_PAGE + 0x1000,
    // read-write. Entry 2: NAPOT execute-only over the next 4 KiB. Entry 15: everything.
    h.write_csr(PMPADDR0, PMP_PAGE >> 2);
    h.write_csr(PMPADDR0 + 1, (PMP_PAGE + 0x1000) >> 2);
    h.write_csr(PMPADDR0 + 2, (PMP_PAGE + 0x1000) >> 2 | 0x1ff);
    h.write_csr(
        PMPCFG0,
        (PMP_NAPOT | 4) << 16 | (PMP_TOR | 3) << 8 | (PMP_NA4 | 1),
    );
    at_privilege(&mut h, Privilege::Supervisor);
    assert_eq!(h.load(&mut bus, PMP_PAGE, 4), Ok(0));
    assert_eq!(
        cause_of(h.store(&mut bus, PMP_PAGE, 4, 1)),
        7,
        "entry 0 decides"
    );
    assert_eq!(
        cause_of(h.load(&mut bus, PMP_PAGE, 8)),
        5,
        "entry 0 matches only half of the access"
    );
    assert_eq!(h.store(&mut bus, PMP_PAGE + 4, 4, 1), Ok(Flow::Next));
    assert_eq!(h.load(&mut bus, PMP_PAGE + 0xff8, 8), Ok(0));
    assert_eq!(cause_of(h.fetch_offset(PMP_PAGE + 8)), 1);
    assert_eq!(
        cause_of(h.load(&mut bus, PMP_PAGE + 0xffc, 8)),
        5,
        "an access across the end of the TOR range"
    );
    assert_eq!(cause_of(h.load(&mut bus, PMP_PAGE + 0x1000, 8)), 5);
    assert!(h.fetch_offset(PMP_PAGE + 0x1ffe).is_ok());
    assert_eq!(h.load(&mut bus, PMP_PAGE + 0x2000, 8), Ok(0), "entry 15");
    // An entry turned off matches nothing.
    h.write_csr(PMPCFG0, (PMP_TOR | 3) << 8);
    at_privilege(&mut h, Privilege::Supervisor);
    assert_eq!(h.store(&mut bus, PMP_PAGE, 4, 1), Ok(Flow::Next));
    // A TOR entry whose top is not above the entry below it matches nothing.
    h.write_csr(PMPADDR0, (PMP_PAGE + 0x1000) >> 2);
    h.write_csr(PMPCFG0, PMP_TOR << 8);
    at_privilege(&mut h, Privilege::Supervisor);
    assert_eq!(h.load(&mut bus, PMP_PAGE, 4), Ok(0x0000_0001));
}

#[test]
fn a_locked_entry_binds_machine_mode_and_its_registers_until_reset() {
    let mut h = hart(true);
    let mut bus = Bus::default();
    // Entry 0 unlocked and without permissions: M-mode is not bound by it.
    h.write_csr(PMPADDR0, PMP_PAGE >> 2);
    h.write_csr(PMPCFG0, PMP_NA4);
    at_privilege(&mut h, Privilege::Machine);
    assert_eq!(h.store(&mut bus, PMP_PAGE, 4, 7), Ok(Flow::Next));
    // Entry 1 locked TOR over [PMP_PAGE, PMP_PAGE + 0x1000), read-only.
    h.write_csr(PMPADDR0 + 1, (PMP_PAGE + 0x1000) >> 2);
    h.write_csr(PMPCFG0, (PMP_L | PMP_TOR | 1) << 8);
    at_privilege(&mut h, Privilege::Machine);
    assert_eq!(h.load(&mut bus, PMP_PAGE + 8, 8), Ok(0));
    assert_eq!(cause_of(h.store(&mut bus, PMP_PAGE + 8, 8, 1)), 7);
    assert_eq!(cause_of(h.fetch_offset(PMP_PAGE + 8)), 1);
    assert_eq!(h.store(&mut bus, PMP_PAGE + 0x1000, 8, 1), Ok(Flow::Next));
    // The locked entry's configuration and address ignore writes, and so does the address
    // below it, its TOR lower bound; other entries stay writable.
    h.write_csr(PMPCFG0, 0x0707);
    assert_eq!(h.read_csr(PMPCFG0), Some((PMP_L | PMP_TOR | 1) << 8 | 7));
    h.write_csr(PMPADDR0 + 1, 0);
    h.write_csr(PMPADDR0, 0);
    assert_eq!(h.read_csr(PMPADDR0 + 1), Some((PMP_PAGE + 0x1000) >> 2));
    assert_eq!(h.read_csr(PMPADDR0), Some(PMP_PAGE >> 2));
    h.write_csr(PMPADDR0 + 2, 0x55);
    assert_eq!(h.read_csr(PMPADDR0 + 2), Some(0x55));
}

#[test]
fn mprv_applies_the_pmp_to_machine_mode_loads_and_stores_as_mpp() {
    let mut h = hart(true);
    let mut bus = Bus::default();
    h.write_csr(PMPADDR0, PMP_PAGE >> 2 | 0x1ff);
    h.write_csr(PMPCFG0, PMP_NAPOT | 4);
    at_privilege(&mut h, Privilege::Machine);
    assert_eq!(h.load(&mut bus, PMP_PAGE, 8), Ok(0));
    // MPRV with MPP = S: loads and stores are S-mode accesses; fetches stay M-mode.
    h.write_csr(csr_numbers::MSTATUS, 1 << 17 | 1 << 11);
    assert_eq!(cause_of(h.load(&mut bus, PMP_PAGE, 8)), 5);
    assert_eq!(cause_of(h.store(&mut bus, PMP_PAGE, 8, 1)), 7);
    assert!(h.fetch_offset(PMP_PAGE).is_ok());
    h.write_csr(csr_numbers::MSTATUS, 1 << 11);
    assert_eq!(h.load(&mut bus, PMP_PAGE, 8), Ok(0));
}

#[test]
fn page_table_walks_are_checked_as_supervisor_reads_and_ad_updates_as_writes() {
    let l0 = ROOT + 0x2000;
    let mut h = sv39_hart(VA, PA, PTE_V | PTE_R | PTE_W);
    let mut bus = Bus::default();
    // M-mode may read the level-0 table (entry 0 is not locked), S-mode may not.
    h.write_csr(PMPADDR0, l0 >> 2 | 0x1ff);
    h.write_csr(PMPCFG0, PMP_NAPOT);
    at_privilege(&mut h, Privilege::Supervisor);
    assert_eq!(
        h.load(&mut bus, VA, 8),
        Err(Exception { cause: 5, tval: VA })
    );
    assert_eq!(
        h.store(&mut bus, VA, 8, 1),
        Err(Exception { cause: 7, tval: VA })
    );
    // MPRV with MPP = S walks as S-mode too.
    at_privilege(&mut h, Privilege::Machine);
    h.write_csr(csr_numbers::MSTATUS, 1 << 17 | 1 << 11);
    assert_eq!(cause_of(h.load(&mut bus, VA, 8)), 5);
    // A read-only table: the walk reads it, but setting A is a store to it.
    h.write_csr(csr_numbers::MSTATUS, 0);
    h.write_csr(PMPCFG0, PMP_NAPOT | 1);
    at_privilege(&mut h, Privilege::Supervisor);
    assert_eq!(cause_of(h.load(&mut bus, VA, 8)), 5);
    let pte_addr = l0 + ((VA >> 12) & 0x1ff) * 8;
    assert_eq!(read_u64(&h, pte_addr) & PTE_A, 0, "the PTE is unchanged");
    write_u64(
        &mut h,
        pte_addr,
        (PA >> 12) << 10 | PTE_V | PTE_R | PTE_W | PTE_A,
    );
    assert_eq!(h.load(&mut bus, VA, 8), Ok(0));
}

#[test]
fn a_page_with_a_pmp_boundary_inside_is_never_cached_and_pmp_writes_flush_cached_pages() {
    let mut h = hart(true);
    let mut bus = Bus::default();
    at_privilege(&mut h, Privilege::Supervisor);
    assert_eq!(h.load(&mut bus, PMP_PAGE, 8), Ok(0), "caches the page");
    // Deny 4 bytes in the middle of the page: the cached translation must not stand.
    h.write_csr(PMPADDR0, (PMP_PAGE + 0x100) >> 2);
    h.write_csr(PMPCFG0, PMP_NA4);
    at_privilege(&mut h, Privilege::Supervisor);
    assert_eq!(h.load(&mut bus, PMP_PAGE, 8), Ok(0));
    assert_eq!(cause_of(h.load(&mut bus, PMP_PAGE + 0x100, 4)), 5);
    assert_eq!(h.store(&mut bus, PMP_PAGE + 0x104, 4, 9), Ok(Flow::Next));
    assert_eq!(cause_of(h.store(&mut bus, PMP_PAGE + 0x100, 4, 9)), 7);
    assert_eq!(h.load(&mut bus, PMP_PAGE + 0x104, 4), Ok(9));
    // Allowing it again takes effect at the next access.
    h.write_csr(PMPCFG0, PMP_NA4 | 3);
    assert_eq!(h.load(&mut bus, PMP_PAGE + 0x100, 4), Ok(0));
}

#[test]
fn code_running_into_a_pmp_boundary_inside_its_page_faults_there_with_an_exact_count() {
    // Eight addi in a row at RAM_BASE + 0x3000, of which only the first four (16 bytes) may
    // be executed in U-mode: NA4 entries cannot cover 16 bytes, so NAPOT 16 bytes RX, then
    // NAPOT for the rest of the page without X.
    let code = RAM_BASE + 0x3000;
    let (mut h, mut bus) = boot_native(&[]);
    grant_all_memory(&mut h);
    let program: Vec<Instruction> = (0..8).map(|i| ins(Op::Addi, 10, 10, 0, i + 1)).collect();
    h.write_phys(GuestPhysAddr(code), &assemble(&program))
        .unwrap();
    h.write_csr(PMPADDR0, code >> 2 | 0b1);
    h.write_csr(PMPADDR0 + 1, code >> 2 | 0x1ff);
    h.write_csr(PMPCFG0, (PMP_NAPOT | 1) << 8 | (PMP_NAPOT | 5));
    h.reset(code, Privilege::User, 0, 0);
    let out = h.run(&mut bus, 100);
    assert_eq!(out.stop, StopReason::WaitForInterrupt);
    assert_eq!(out.executed.0, 5, "four addi and the handler's wfi");
    assert_eq!(h.x(10), 1 + 2 + 3 + 4);
    assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(1));
    assert_eq!(h.read_csr(csr_numbers::MEPC), Some(code + 16));
    assert_eq!(h.read_csr(csr_numbers::MTVAL), Some(code + 16));
}

// ---------------------------------------------------------------- Sdtrig (debug spec 1.0 ch. 5)

const TSELECT: u16 = 0x7a0;
const TDATA1: u16 = 0x7a1;
const TDATA2: u16 = 0x7a2;
const TDATA3: u16 = 0x7a3;
const TINFO: u16 = 0x7a4;
const TCONTROL: u16 = 0x7a5;
const MCONTROL: u64 = 2 << 60;
const MCONTROL6: u64 = 6 << 60;
const T_LOAD: u64 = 1;
const T_STORE: u64 = 2;
const T_EXECUTE: u64 = 4;
const T_U: u64 = 1 << 3;
const T_S: u64 = 1 << 4;
const T_M: u64 = 1 << 6;

fn set_trigger(h: &mut Hart, index: u64, tdata1: u64, tdata2: u64) {
    assert!(h.write_csr(TSELECT, index));
    assert!(h.write_csr(TDATA2, tdata2));
    assert!(h.write_csr(TDATA1, tdata1));
}

#[test]
fn trigger_csrs_select_two_address_match_triggers_with_warl_fields() {
    let mut h = hart(true);
    assert_eq!(h.read_csr(TSELECT), Some(0));
    assert_eq!(
        h.read_csr(TDATA1),
        Some(MCONTROL),
        "type 2, no mode enabled"
    );
    assert_eq!(h.read_csr(TINFO), Some(1 << 24 | 1 << 6 | 1 << 2));
    assert!(h.write_csr(TSELECT, 1));
    assert!(h.write_csr(TSELECT, 2));
    assert_eq!(
        h.read_csr(TSELECT),
        Some(1),
        "past the last trigger is ignored"
    );
    // match, chain, action, size, timing, select, hit, dmode and maskmax read as zero.
    assert!(h.write_csr(TDATA1, MCONTROL | ((1 << 60) - 1)));
    assert_eq!(h.read_csr(TDATA1), Some(MCONTROL | 0x5f));
    assert!(h.write_csr(TDATA1, MCONTROL6 | ((1 << 60) - 1)));
    assert_eq!(h.read_csr(TDATA1), Some(MCONTROL6 | 0x5f));
    assert!(h.write_csr(TDATA1, 3 << 60 | 0x5f));
    assert_eq!(
        h.read_csr(TDATA1),
        Some(MCONTROL6 | 0x5f),
        "type 3 is ignored"
    );
    assert!(h.write_csr(TDATA1, 0));
    assert_eq!(h.read_csr(TDATA1), Some(15 << 60), "0 disables the trigger");
    assert!(h.write_csr(TDATA2, 0x1234_5678));
    assert_eq!(h.read_csr(TDATA2), Some(0x1234_5678));
    assert!(h.write_csr(TDATA3, u64::MAX));
    assert_eq!(h.read_csr(TDATA3), Some(0));
    assert!(h.write_csr(TSELECT, 0));
    assert_eq!(
        h.read_csr(TDATA2),
        Some(0),
        "each trigger has its own tdata2"
    );
    assert!(h.write_csr(TCONTROL, u64::MAX));
    assert_eq!(h.read_csr(TCONTROL), Some(1 << 7 | 1 << 3), "mpte and mte");
    // The trigger CSRs are M-mode only.
    let (mut h, mut bus) = boot_native(&[csr(Op::Csrrs, 10, 0, TSELECT)]);
    h.reset(RAM_BASE, Privilege::Supervisor, 0, 0);
    h.run(&mut bus, 10);
    assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(2));
}

#[test]
fn an_execute_trigger_raises_a_breakpoint_before_the_instruction_retires() {
    let program: Vec<Instruction> = (0..6).map(|i| ins(Op::Addi, 10, 10, 0, 1 << i)).collect();
    for (tdata1, fires) in [
        (MCONTROL | T_U | T_EXECUTE, true),
        (MCONTROL6 | T_U | T_EXECUTE, true),
        (MCONTROL | T_S | T_M | T_EXECUTE, false),
        (MCONTROL | T_U | T_LOAD | T_STORE, false),
    ] {
        let (mut h, mut bus) = boot_native(&program);
        grant_all_memory(&mut h);
        set_trigger(&mut h, 1, tdata1, RAM_BASE + 12);
        h.reset(RAM_BASE, Privilege::User, 0, 0);
        let out = h.run(&mut bus, 100);
        if fires {
            assert_eq!(out.stop, StopReason::WaitForInterrupt);
            assert_eq!(out.executed.0, 4, "three addi and the handler's wfi");
            assert_eq!(h.x(10), 0b111);
            assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(3));
            assert_eq!(h.read_csr(csr_numbers::MEPC), Some(RAM_BASE + 12));
            assert_eq!(h.read_csr(csr_numbers::MTVAL), Some(RAM_BASE + 12));
        } else {
            assert_eq!(h.x(10), 0b11_1111, "tdata1 {tdata1:#x}");
        }
    }
}

#[test]
fn load_and_store_triggers_fire_on_any_accessed_byte_before_the_access() {
    let data = RAM_BASE + 0x6000;
    let program = [
        ins(Op::Ld, 11, 12, 0, 0),
        ins(Op::Sd, 0, 12, 13, 0),
        ins(Op::Ecall, 0, 0, 0, 0),
    ];
    for (tdata1, tdata2, faulting_pc) in [
        (MCONTROL | T_S | T_LOAD, data + 4, Some(RAM_BASE)),
        (MCONTROL6 | T_S | T_STORE, data + 7, Some(RAM_BASE + 4)),
        (MCONTROL | T_S | T_STORE, data + 8, None),
        (MCONTROL | T_U | T_LOAD | T_STORE, data, None),
    ] {
        let (mut h, mut bus) = boot_native(&program);
        grant_all_memory(&mut h);
        write_u64(&mut h, data, 0x77);
        set_trigger(&mut h, 0, tdata1, tdata2);
        h.reset(RAM_BASE, Privilege::Supervisor, 0, 0);
        h.set_x(12, data);
        h.set_x(13, 0x99);
        h.run(&mut bus, 100);
        match faulting_pc {
            Some(pc) => {
                assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(3));
                assert_eq!(h.read_csr(csr_numbers::MEPC), Some(pc));
                assert_eq!(h.read_csr(csr_numbers::MTVAL), Some(data));
                assert_eq!(read_u64(&h, data), 0x77, "the store did not happen");
                assert_eq!(h.instret().0, (pc - RAM_BASE) / 4 + 1);
            }
            None => {
                assert_eq!(
                    h.read_csr(csr_numbers::MCAUSE),
                    Some(9),
                    "tdata1 {tdata1:#x}"
                );
                assert_eq!(read_u64(&h, data), 0x99);
            }
        }
    }
}

#[test]
fn machine_mode_triggers_fire_only_while_tcontrol_mte_is_set_and_a_trap_clears_it() {
    let program = [
        ins(Op::Addi, 10, 10, 0, 1),
        ins(Op::Addi, 10, 10, 0, 2),
        ins(Op::Ebreak, 0, 0, 0, 0),
    ];
    let (mut h, mut bus) = boot(&program);
    set_trigger(&mut h, 0, MCONTROL | T_M | T_EXECUTE, RAM_BASE + 4);
    run_to_break(&mut h, &mut bus);
    assert_eq!(h.x(10), 3, "mte = 0: the trigger does not fire in M-mode");
    let (mut h, mut bus) = boot_native(&program);
    set_trigger(&mut h, 0, MCONTROL | T_M | T_EXECUTE, RAM_BASE + 4);
    h.write_csr(TCONTROL, 1 << 3);
    h.run(&mut bus, 100);
    assert_eq!(h.x(10), 1);
    assert_eq!(h.read_csr(csr_numbers::MCAUSE), Some(3));
    assert_eq!(h.read_csr(csr_numbers::MEPC), Some(RAM_BASE + 4));
    assert_eq!(
        h.read_csr(TCONTROL),
        Some(1 << 7),
        "mpte = 1, mte = 0 in the handler"
    );
    // mret restores mte from mpte.
    let (mut h, mut bus) = boot_native(&[ins(Op::Mret, 0, 0, 0, 0)]);
    h.write_csr(TCONTROL, 1 << 7);
    h.write_csr(csr_numbers::MSTATUS, 3 << 11);
    h.write_csr(csr_numbers::MEPC, MTVEC_HANDLER);
    h.run(&mut bus, 100);
    assert_eq!(h.read_csr(TCONTROL), Some(1 << 7 | 1 << 3));
}

#[test]
fn pmp_and_trigger_state_travel_with_the_hart_state() {
    let mut h = hart(true);
    h.write_csr(PMPADDR0, 0x2000_1000);
    h.write_csr(PMPCFG0, PMP_L | PMP_NA4 | 1);
    set_trigger(&mut h, 1, MCONTROL6 | T_S | T_LOAD, 0x8000_1234);
    h.write_csr(TCONTROL, 1 << 3);
    let mut state = Vec::new();
    h.write_state(&mut state);
    let mut other = hart_without_pmp_entries(true);
    other.restore_state(&state).unwrap();
    for csr in [
        PMPCFG0,
        PMPCFG0 + 2,
        PMPADDR0,
        PMPADDR0 + 15,
        TSELECT,
        TDATA1,
        TDATA2,
        TCONTROL,
    ] {
        assert_eq!(other.read_csr(csr), h.read_csr(csr), "csr {csr:#x}");
    }
    let mut again = Vec::new();
    other.write_state(&mut again);
    assert_eq!(again, state);
    // The restored lock still binds: entry 0 ignores writes.
    other.write_csr(PMPCFG0, 0);
    assert_eq!(other.read_csr(PMPCFG0), Some(PMP_L | PMP_NA4 | 1));
}
