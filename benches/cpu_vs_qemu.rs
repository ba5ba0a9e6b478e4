//! CPU benchmark: benchmark guests (appliance/guest/isa/bench/*.c) run in one go under
//! `qemu-system-riscv64 -M virt` with TCG, under QEMU with `-icount shift=0` (exact counting,
//! as ours), and in our machine interpreted (`run-guest --interpret`) and translated; prints
//! guest MIPS for each and the ratios of the translator to the others. Checksums must agree
//! between all four and a native build of the same source (gcc -O2 for the host, run as a
//! process: the bare-metal reference). The translator, both QEMUs and the native build run
//! `ROUNDS` times, interleaved, and each one's fastest round counts. Run with `cargo bench
//! --bench cpu_vs_qemu [-- GUEST...]`, GUEST among integer_heavy, memory_bound, fp_heavy,
//! coremark_like and crypto (default: all).

#[path = "../appliance/guest/isa/harness.rs"]
mod harness;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(900);
/// Interleaved rounds of the timed machines (all but the slow interpreter). The fastest of
/// each machine's rounds is the one least disturbed by other load on a shared host, whose
/// slowdowns of a tenth or more otherwise decide single runs.
const ROUNDS: usize = 3;
const INSTRUCTIONS_MAX: u64 = 20_000_000_000;
/// The guests, in the order measured, with what each stresses.
const GUESTS: [(&str, &str); 5] = [
    (
        "integer_heavy",
        "integer ALU, multiply, branches; cache resident",
    ),
    (
        "memory_bound",
        "pointer chase, strided sums, copies over 32 MiB",
    ),
    (
        "fp_heavy",
        "double matrix products, square roots, single polynomials",
    ),
    (
        "coremark_like",
        "lists, integer matrices, state machine, CRC, some FP",
    ),
    (
        "crypto",
        "SHA-256 rounds and bignum multiply-subtract: long blocks, many live values",
    ),
];

/// The guest's own summary lines, `bench.<name> 0x<value>`.
fn guest_value(stdout: &[u8], name: &str) -> Option<u64> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("bench.{name} ")))?;
    let value = line.split_whitespace().nth(1)?;
    u64::from_str_radix(value.trim_start_matches("0x"), 16).ok()
}

/// Every `bench.*` line except the instruction count (QEMU without icount counts
/// differently): the results that must agree.
fn checksums(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|line| line.starts_with("bench.") && !line.starts_with("bench.instret"))
        .map(str::to_string)
        .collect()
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

/// One machine's run of one guest.
struct Measured {
    name: &'static str,
    wall_mips: f64,
    cpu_mips: Option<f64>,
}

fn measure(name: &'static str, outcome: &harness::Outcome, instructions: u64) -> Measured {
    let measured = Measured {
        name,
        wall_mips: mips(instructions, outcome.elapsed),
        cpu_mips: outcome.cpu_time.map(|time| mips(instructions, time)),
    };
    let cpu = match (outcome.cpu_time, measured.cpu_mips) {
        (Some(time), Some(cpu_mips)) => {
            format!("   cpu {:8.3} s {:8.1} MIPS", time.as_secs_f64(), cpu_mips)
        }
        _ => String::new(),
    };
    println!(
        "  {name:<22} wall {:8.3} s {:8.1} MIPS{cpu}",
        outcome.elapsed.as_secs_f64(),
        measured.wall_mips
    );
    measured
}

fn ratio_line(ours: &Measured, other: &Measured, goal: Option<f64>) {
    let mut text = format!(
        "  ratio {} / {}: {:.2} (wall)",
        ours.name,
        other.name,
        ours.wall_mips / other.wall_mips
    );
    if let (Some(a), Some(b)) = (ours.cpu_mips, other.cpu_mips) {
        let cpu_ratio = a / b;
        text.push_str(&format!(", {cpu_ratio:.2} (cpu)"));
        if let Some(goal) = goal {
            let verdict = if cpu_ratio >= goal { "met" } else { "MISSED" };
            text.push_str(&format!("   goal >= {goal:.1}: {verdict}"));
        }
    }
    println!("{text}");
}

/// The time a run is ranked by: its CPU time, else its wall time.
fn time_of(outcome: &harness::Outcome) -> Duration {
    outcome.cpu_time.unwrap_or(outcome.elapsed)
}

/// Runs `round` `rounds` times; for each machine, its fastest successful run, or a failed
/// one (which the caller reports).
fn fastest_of<const N: usize>(
    rounds: usize,
    round: impl Fn() -> [harness::Outcome; N],
) -> [harness::Outcome; N] {
    let mut best = round();
    for _ in 1..rounds {
        for (kept, outcome) in best.iter_mut().zip(round()) {
            let kept_ok = kept.status == Some(0);
            if outcome.status != Some(0) || (kept_ok && time_of(&outcome) < time_of(kept)) {
                *kept = outcome;
            }
        }
    }
    best
}

fn bench_guest(dir: &Path, guest: &str, what: &str) -> Result<(), String> {
    let elf = dir.join(format!("{guest}.elf"));
    if !elf.is_file() {
        return Err(format!("{} was not built", elf.display()));
    }
    println!("guest {guest}: {what}");
    let binary: &Path = env!("CARGO_BIN_EXE_understudy").as_ref();
    let interpreted = harness::run_understudy_with(
        binary,
        &elf,
        INSTRUCTIONS_MAX,
        true,
        &["--interpret"],
        RUN_TIMEOUT,
    );
    let round = || {
        [
            harness::run_understudy_with(binary, &elf, INSTRUCTIONS_MAX, true, &[], RUN_TIMEOUT),
            harness::run_qemu(&elf, false, RUN_TIMEOUT),
            harness::run_qemu(&elf, true, RUN_TIMEOUT),
            harness::run_with_timeout(
                &mut Command::new(dir.join(format!("{guest}.native"))),
                RUN_TIMEOUT,
            ),
        ]
    };
    let [translated, tcg, icount, native] = fastest_of(ROUNDS, round);
    for (name, outcome) in [
        ("interpreter", &interpreted),
        ("translator", &translated),
        ("qemu tcg", &tcg),
        ("qemu icount", &icount),
        ("native", &native),
    ] {
        if outcome.status != Some(0) {
            return Err(format!(
                "{guest} under {name}: {} {}",
                outcome.describe_status(),
                String::from_utf8_lossy(&outcome.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
    }
    let expected = checksums(&icount.stdout);
    for (name, outcome) in [
        ("interpreter", &interpreted),
        ("translator", &translated),
        ("qemu tcg", &tcg),
        ("native", &native),
    ] {
        if checksums(&outcome.stdout) != expected {
            return Err(format!(
                "{guest}: {name} printed {:?}, qemu -icount {expected:?}",
                checksums(&outcome.stdout)
            ));
        }
    }
    // Our machine counts every instruction of the run; the guest's own count (minstret
    // around its work) must agree between us and QEMU in icount mode.
    let instructions = stats_instructions(&interpreted.stderr).ok_or("no instruction count")?;
    if stats_instructions(&translated.stderr) != Some(instructions) {
        return Err(format!(
            "{guest}: the translator retired {:?} instructions, the interpreter {instructions}",
            stats_instructions(&translated.stderr)
        ));
    }
    let guest_instret = guest_value(&interpreted.stdout, "instret");
    if guest_value(&icount.stdout, "instret") != guest_instret
        || guest_value(&translated.stdout, "instret") != guest_instret
    {
        return Err(format!("{guest}: the guest's own minstret deltas differ"));
    }
    println!("  guest instructions: {instructions}");
    let interpreter = measure("understudy interpreter", &interpreted, instructions);
    let translator = measure("understudy translator", &translated, instructions);
    let tcg = measure("qemu tcg", &tcg, instructions);
    let icount = measure("qemu -icount shift=0", &icount, instructions);
    // The same C source compiled for the host (build.sh: gcc -O2, no vectorizing), run as a
    // process: bare metal. Its "MIPS" are the guest's instructions over its time.
    let native = measure("native x86-64", &native, instructions);
    if let Some(line) = String::from_utf8_lossy(&translated.stderr)
        .lines()
        .find(|line| line.starts_with("translator "))
    {
        println!("  {line}");
    }
    ratio_line(&translator, &interpreter, None);
    ratio_line(&translator, &tcg, Some(1.0));
    ratio_line(&translator, &icount, Some(3.0));
    ratio_line(&translator, &native, None);
    // Where the -icount goal lies against bare metal: above 1.0 it asks for more than the
    // host CPU itself does with the same source.
    if let (Some(icount_cpu), Some(native_cpu)) = (icount.cpu_mips, native.cpu_mips) {
        println!(
            "  3x qemu -icount is {:.2}x native speed",
            3.0 * icount_cpu / native_cpu
        );
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; other words are guest names, or "cpu_vs_qemu" itself
    // when another bench target's filter was meant.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let selected: Vec<(&str, &str)> = GUESTS
        .iter()
        .copied()
        .filter(|(guest, _)| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| guest.contains(f.as_str()) || "cpu_vs_qemu".contains(f.as_str()))
        })
        .collect();
    if selected.is_empty() {
        return;
    }
    harness::require_tools(&["riscv64-unknown-elf-gcc", "qemu-system-riscv64"]);
    let dir = harness::build_programs();
    println!("guests: {}", dir.display());
    println!(
        "MIPS by wall time, and by the process's own CPU time (fairer when the host is busy;\n\
         QEMU's includes its I/O thread). The instruction count is our machine's, which equals\n\
         QEMU -icount's. All but the interpreter: the fastest of {ROUNDS} interleaved rounds."
    );
    let mut failed = false;
    for (guest, what) in selected {
        if let Err(problem) = bench_guest(&dir, guest, what) {
            println!("  FAILED: {problem}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
}
