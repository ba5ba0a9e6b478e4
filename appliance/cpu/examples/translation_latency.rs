//! Measures the translator's latency (time to translate a block) and its break-even against
//! the interpreter: 4000 distinct blocks of 16 typical instructions each run once, then
//! again from a warm code cache (run with --release).

use std::time::Instant;

use understudy_cpu::{
    encode, ExecutableMemory, GuestPhysAddr, Hart, HartConfig, Instruction, InstructionCount, Op,
    Platform, Privilege, StopReason,
};

const RAM_BASE: u64 = 0x8000_0000;
const RAM_SIZE_BYTES: u64 = 64 << 20;
const BLOCKS: usize = 4000;
/// Bytes of the code region handed to the translator.
const CODE_BYTES: usize = 64 << 20;

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

struct Mapped(*mut u8);
// SAFETY: the mapping is owned by this object alone.
unsafe impl Send for Mapped {}
// SAFETY: `map` returns CODE_BYTES of RWX memory that is never unmapped (the process ends).
unsafe impl ExecutableMemory for Mapped {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0
    }
    fn len_bytes(&self) -> usize {
        CODE_BYTES
    }
}

fn map() -> Mapped {
    // SAFETY: an anonymous private mapping with no address hint; checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            CODE_BYTES,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(ptr != libc::MAP_FAILED, "mmap failed");
    Mapped(ptr.cast())
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

/// BLOCKS blocks, each: ALU work, a load, a store, a multiply, a branch not taken, and a
/// jal to the next block; the last jumps back to the first.
fn program() -> (Vec<u8>, u64) {
    use Op::*;
    let mut code = Vec::new();
    let body = [
        ins(Addi, 10, 10, 0, 1),
        ins(Xor, 11, 11, 10, 0),
        ins(Slli, 12, 10, 0, 3),
        ins(Add, 13, 13, 12, 0),
        ins(Sd, 0, 2, 13, 8),
        ins(Ld, 14, 2, 0, 16),
        ins(Sub, 15, 14, 11, 0),
        ins(And, 16, 15, 10, 0),
        ins(Mul, 17, 16, 13, 0),
        ins(Srai, 18, 17, 0, 7),
        ins(Sltu, 19, 18, 17, 0),
        ins(Beq, 0, 0, 5, 8),
        ins(Or, 20, 19, 18, 0),
        ins(Addiw, 21, 20, 0, -5),
        ins(Sw, 0, 2, 21, 24),
    ];
    for block in 0..BLOCKS {
        for inst in &body {
            code.extend(encode(inst).unwrap().to_le_bytes());
        }
        let back = -((BLOCKS as i32 - 1) * 64 + 60);
        let jump = if block + 1 == BLOCKS { back } else { 4 };
        code.extend(encode(&ins(Jal, 0, 0, 0, jump)).unwrap().to_le_bytes());
    }
    (code, (BLOCKS * 16) as u64)
}

fn hart(code: &[u8]) -> Hart {
    let mut hart = Hart::new(HartConfig {
        ram_base: GuestPhysAddr(RAM_BASE),
        ram_size_bytes: RAM_SIZE_BYTES,
        host_monitor: false,
    });
    hart.write_phys(GuestPhysAddr(RAM_BASE), code).unwrap();
    hart.reset(RAM_BASE, Privilege::Machine, 0, 0);
    hart.set_x(2, RAM_BASE + 0x200_0000);
    hart.set_x(5, 1);
    hart
}

fn timed(hart: &mut Hart, instructions: u64) -> f64 {
    let start = Instant::now();
    let out = hart.run(&mut NoDevices, instructions);
    assert_eq!(out.stop, StopReason::BudgetExhausted);
    start.elapsed().as_secs_f64()
}

fn main() {
    let (code, pass) = program();
    let mut interpreted = hart(&code);
    let cold_interpreter = timed(&mut interpreted, pass);
    let warm_interpreter = timed(&mut interpreted, pass);
    let mut translated = hart(&code);
    // Forced on (every block translated the first time it runs), to time translation.
    translated
        .enable_translator_after(Box::new(map()), 1)
        .unwrap();
    let cold = timed(&mut translated, pass);
    let warm = timed(&mut translated, pass);
    let stats = translated.translator_stats().unwrap();
    println!("{stats:?}");
    let blocks = stats.blocks_translated as f64;
    println!(
        "{} blocks, {} guest instructions translated, {} bytes of x86-64 ({:.1} bytes per guest instruction)",
        stats.blocks_translated,
        stats.instructions_translated,
        stats.code_bytes_emitted,
        stats.code_bytes_emitted as f64 / stats.instructions_translated as f64
    );
    println!(
        "interpreter: first pass {:.2} ms (decoding), second {:.2} ms",
        cold_interpreter * 1e3,
        warm_interpreter * 1e3
    );
    println!(
        "translator:  first pass {:.2} ms (translating), second {:.2} ms",
        cold * 1e3,
        warm * 1e3
    );
    println!(
        "translation latency: {:.2} us per block, {:.0} ns per guest instruction",
        (cold - warm) / blocks * 1e6,
        (cold - warm) / stats.instructions_translated as f64 * 1e9
    );
    println!(
        "one run of a block: interpreted {:.0} ns, translated {:.0} ns (both with {} blocks \
         to keep in the host's caches)",
        warm_interpreter / blocks * 1e9,
        warm / blocks * 1e9,
        BLOCKS
    );
}
