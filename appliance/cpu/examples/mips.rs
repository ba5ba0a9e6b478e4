//! Measures guest instructions per second on a synthetic integer loop (run with --release).

use std::time::Instant;

use understudy_cpu::{
    csr_numbers, encode, GuestPhysAddr, Hart, HartConfig, Instruction, InstructionCount, Op,
    Platform, Privilege, StopReason,
};

const RAM_BASE: u64 = 0x8000_0000;
const RAM_SIZE_BYTES: u64 = 64 << 20;
const INSTRUCTIONS_PER_RUN: u64 = 10_000_000;
const RUNS: u64 = 30;

struct NoDevices;
impl Platform for NoDevices {
    fn mmio_load(&mut self, _: GuestPhysAddr, _: u8, _: InstructionCount) -> Option<u64> {
        None
    }
    fn mmio_store(&mut self, _: GuestPhysAddr, _: u8, _: u64, _: InstructionCount) -> bool {
        false
    }
    fn time(&mut self, instret: InstructionCount) -> u64 {
        instret.0 / 100
    }
}

fn ins(op: Op, rd: u8, rs1: u8, rs2: u8, imm: i32) -> Instruction {
    Instruction {
        rd,
        rs1,
        rs2,
        imm,
        ..Instruction::new(op)
    }
}

/// An endless loop of ALU work, a load and a store, and a taken branch every 10 instructions.
fn program() -> Vec<u8> {
    use Op::*;
    let body = [
        ins(Addi, 10, 10, 0, 1),
        ins(Xor, 11, 11, 10, 0),
        ins(Slli, 12, 10, 0, 3),
        ins(Add, 13, 13, 12, 0),
        ins(Sd, 0, 2, 13, 0),
        ins(Ld, 14, 2, 0, 0),
        ins(Sub, 15, 14, 11, 0),
        ins(And, 16, 15, 10, 0),
        ins(Addi, 5, 5, 0, -1),
        ins(Bne, 0, 5, 0, -36),
        ins(Jal, 0, 0, 0, -40),
    ];
    body.iter()
        .flat_map(|i| encode(i).unwrap().to_le_bytes())
        .collect()
}

/// User CPU time of this process in seconds (Linux `/proc/self/stat`, clock ticks of 10 ms),
/// so the figure means something on a busy host; falls back to 0 elsewhere.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields after the name start at "state" (field 3); utime is field 14.
    fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 100.0
}

fn measure(name: &str, hart: &mut Hart) {
    let mut platform = NoDevices;
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let mut executed = 0;
    for _ in 0..RUNS {
        let out = hart.run(&mut platform, INSTRUCTIONS_PER_RUN);
        assert_eq!(out.stop, StopReason::BudgetExhausted, "{name}: {out:?}");
        executed += out.executed.0;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    println!(
        "{name}: {executed} instructions; {seconds:.3} s wall = {:.1} MIPS; {cpu:.2} s CPU = {:.1} MIPS",
        executed as f64 / seconds / 1e6,
        executed as f64 / cpu.max(0.01) / 1e6
    );
}

fn main() {
    let config = HartConfig {
        ram_base: GuestPhysAddr(RAM_BASE),
        ram_size_bytes: RAM_SIZE_BYTES,
        host_monitor: true,
    };

    let mut hart = Hart::new(config.clone());
    hart.write_phys(GuestPhysAddr(RAM_BASE), &program())
        .unwrap();
    hart.reset(RAM_BASE, Privilege::Machine, 0, 0);
    hart.set_x(2, RAM_BASE + 0x10_0000);
    measure("M-mode, bare", &mut hart);

    // S-mode under Sv39: one 1 GiB identity gigapage over RAM (root table at RAM + 1 MiB).
    let mut hart = Hart::new(config);
    hart.write_phys(GuestPhysAddr(RAM_BASE), &program())
        .unwrap();
    let root = RAM_BASE + 0x20_0000;
    let pte: u64 = (RAM_BASE >> 12) << 10 | 0xcf; // V R W X A D
    hart.write_phys(GuestPhysAddr(root + 2 * 8), &pte.to_le_bytes())
        .unwrap();
    assert!(hart.write_csr(csr_numbers::SATP, 8 << 60 | root >> 12));
    // PMP entry 0: NAPOT over every address with R, W and X, so S-mode may access memory.
    assert!(hart.write_csr(0x3b0, (1 << 54) - 1));
    assert!(hart.write_csr(0x3a0, 3 << 3 | 7));
    hart.reset(RAM_BASE, Privilege::Supervisor, 0, 0);
    hart.set_x(2, RAM_BASE + 0x10_0000);
    measure("S-mode, Sv39", &mut hart);
}
