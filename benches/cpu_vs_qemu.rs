//! CPU benchmark: the same CPU-bound guest (appliance/guest/isa/bench/coremark_like.c, about
//! 1.5 billion instructions of list, integer matrix, state machine, CRC and floating-point
//! work) runs in our machine and in `qemu-system-riscv64 -M virt` (TCG) in one run; prints
//! guest MIPS for both and their ratio. Run with `cargo bench --bench cpu_vs_qemu`.

#[path = "../appliance/guest/isa/harness.rs"]
mod harness;

use std::path::Path;
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(900);
const INSTRUCTIONS_MAX: u64 = 20_000_000_000;

/// The guest's own summary lines, `bench.<name> 0x<value>`.
fn guest_value(stdout: &[u8], name: &str) -> Option<u64> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("bench.{name} ")))?;
    let value = line.split_whitespace().nth(1)?;
    u64::from_str_radix(value.trim_start_matches("0x"), 16).ok()
}

/// `instructions <N>` from `run-guest --stats` on stderr.
fn stats_instructions(stderr: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .find_map(|line| line.strip_prefix("instructions ")?.trim().parse().ok())
}

fn mips(instructions: u64, elapsed: Duration) -> f64 {
    instructions as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
}

fn line(
    name: &str,
    wall: Duration,
    wall_mips: f64,
    cpu: Option<Duration>,
    cpu_mips: Option<f64>,
) -> String {
    let mut text = format!(
        "{name:<12} wall {:8.3} s {:8.1} MIPS",
        wall.as_secs_f64(),
        wall_mips
    );
    if let (Some(cpu), Some(cpu_mips)) = (cpu, cpu_mips) {
        text.push_str(&format!(
            "   cpu {:8.3} s {:8.1} MIPS",
            cpu.as_secs_f64(),
            cpu_mips
        ));
    }
    text
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that does not name us means "not this one".
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|filter| "cpu_vs_qemu".contains(filter.as_str()))
    {
        return;
    }
    harness::require_tools(&["riscv64-unknown-elf-gcc", "qemu-system-riscv64"]);
    let elf = harness::build_programs().join("coremark_like.elf");
    assert!(elf.is_file(), "{} was not built", elf.display());
    println!("guest: {}", elf.display());

    let qemu = harness::run_qemu(&elf, false, RUN_TIMEOUT);
    assert_eq!(
        qemu.status,
        Some(0),
        "QEMU run failed ({}): {}",
        qemu.describe_status(),
        String::from_utf8_lossy(&qemu.stderr)
    );

    let binary: &Path = env!("CARGO_BIN_EXE_understudy").as_ref();
    let ours = harness::run_understudy(binary, &elf, INSTRUCTIONS_MAX, true, RUN_TIMEOUT);
    let ours_ok = ours.status == Some(0);

    // The instruction count is a property of the program: our machine counts it exactly;
    // without a working run, QEMU in icount mode (slower, not timed) counts it instead.
    let instructions = if ours_ok {
        stats_instructions(&ours.stderr).or_else(|| guest_value(&ours.stdout, "instret"))
    } else {
        let counted = harness::run_qemu(&elf, true, RUN_TIMEOUT);
        guest_value(&counted.stdout, "instret")
    }
    .expect("no instruction count from either machine");

    println!("guest instructions: {instructions}");
    println!(
        "MIPS by wall time, and by the process's own CPU time (fairer when the host is busy):"
    );
    let qemu_mips = mips(instructions, qemu.elapsed);
    let qemu_cpu_mips = qemu.cpu_time.map(|time| mips(instructions, time));
    println!(
        "{}",
        line(
            "qemu (TCG)",
            qemu.elapsed,
            qemu_mips,
            qemu.cpu_time,
            qemu_cpu_mips
        )
    );
    if ours_ok {
        for name in ["crc", "float"] {
            assert_eq!(
                guest_value(&qemu.stdout, name),
                guest_value(&ours.stdout, name),
                "checksum {name} differs between QEMU and our machine"
            );
        }
        let ours_mips = mips(instructions, ours.elapsed);
        let ours_cpu_mips = ours.cpu_time.map(|time| mips(instructions, time));
        println!(
            "{}",
            line(
                "understudy",
                ours.elapsed,
                ours_mips,
                ours.cpu_time,
                ours_cpu_mips
            )
        );
        print!(
            "ratio understudy / qemu: {:.2} (wall)",
            ours_mips / qemu_mips
        );
        if let (Some(ours_cpu), Some(qemu_cpu)) = (ours_cpu_mips, qemu_cpu_mips) {
            print!(", {:.2} (cpu)", ours_cpu / qemu_cpu);
        }
        println!();
    } else {
        println!(
            "understudy: run failed ({}): {}",
            ours.describe_status(),
            String::from_utf8_lossy(&ours.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        std::process::exit(1);
    }
}
