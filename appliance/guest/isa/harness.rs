//! Shared host-side harness of the differential tests and the CPU benchmark: builds the guest
//! programs, runs them under QEMU (the reference) and under `understudy run-guest`, and
//! compares console output and exit status line by line.
//!
//! Included by path from `tests/isa_differential.rs`, `tests/fuzz_differential.rs` and
//! `benches/cpu_vs_qemu.rs`, so every user sees the same QEMU configuration.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The reference CPU: QEMU 7.2's `rv64` with everything beyond RV64GC + Zicsr + Zifencei +
/// PMP + Sdtrig turned off, so that WARL registers and feature probes read like our
/// machine's (QEMU enables H, Sstc, Zb*, Svpbmt, Svinval, Svnapot and others by default).
pub const QEMU_CPU: &str = "rv64,h=false,sstc=false,zba=false,zbb=false,zbc=false,zbs=false,\
svpbmt=false,svinval=false,svnapot=false,Zihintpause=false,Zfh=false,Zfhmin=false,debug=true,\
sscofpmf=false";

/// What a guest run produced.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The process exit status; `None` when it was killed (timeout or signal).
    pub status: Option<i32>,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// User plus system CPU time of the process (all its threads), when it could be read
    /// from /proc before the process was reaped; fairer than `elapsed` on a busy machine.
    pub cpu_time: Option<Duration>,
}

impl Outcome {
    pub fn describe_status(&self) -> String {
        if self.timed_out {
            "timed out".to_string()
        } else {
            match self.status {
                Some(code) => format!("exit status {code}"),
                None => "killed by a signal".to_string(),
            }
        }
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn isa_dir() -> PathBuf {
    repo_root().join("appliance/guest/isa")
}

/// `${UNDERSTUDY_CACHE:-$HOME/.cache/understudy}`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("UNDERSTUDY_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/understudy")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Fails (never skips) when the guest toolchain or QEMU is missing.
pub fn require_tools(tools: &[&str]) {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !on_path(tool))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {}: run tools/install-prerequisites (it installs gcc-riscv64-unknown-elf, \
         picolibc-riscv64-unknown-elf and qemu-system-misc)",
        missing.join(", ")
    );
}

/// Builds (or reuses) the ISA programs and benchmark guests; returns their directory.
pub fn build_programs() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        require_tools(&["riscv64-unknown-elf-gcc"]);
        let output = Command::new("bash")
            .arg(isa_dir().join("build.sh"))
            .stdin(Stdio::null())
            .output()
            .expect("cannot run appliance/guest/isa/build.sh");
        assert!(
            output.status.success(),
            "appliance/guest/isa/build.sh failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let dir = String::from_utf8_lossy(&output.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        let dir = PathBuf::from(dir);
        assert!(dir.is_dir(), "build.sh printed no output directory");
        dir
    })
    .clone()
}

/// Names of the ISA test programs (sources in appliance/guest/isa/programs), sorted.
pub fn program_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(isa_dir().join("programs"))
        .expect("cannot list appliance/guest/isa/programs")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let ext = path.extension()?.to_str()?;
            if ext == "c" || ext == "S" {
                Some(path.file_stem()?.to_str()?.to_string())
            } else {
                None
            }
        })
        .collect();
    names.sort();
    names
}

/// Runs a command with stdin closed, capturing output, killing it after `timeout`.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    // Drain both pipes on threads so a chatty guest cannot block on a full pipe.
    let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stdout_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut buffer);
        buffer
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut buffer);
        buffer
    });
    let mut timed_out = false;
    let mut cpu_time = None;
    let status = loop {
        // A finished child stays a zombie until reaped, with its final CPU times in /proc.
        if let Some((state, time)) = proc_state_and_cpu_time(child.id()) {
            cpu_time = Some(time);
            if state != 'Z' {
                if start.elapsed() > timeout {
                    timed_out = true;
                    let _ = child.kill();
                    break child.wait().expect("cannot wait for killed child");
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        }
        match child.try_wait().expect("cannot wait for child") {
            Some(status) => break status,
            None if start.elapsed() > timeout => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("cannot wait for killed child");
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let elapsed = start.elapsed();
    Outcome {
        stdout: stdout_reader.join().unwrap_or_default(),
        stderr: stderr_reader.join().unwrap_or_default(),
        status: if timed_out { None } else { status.code() },
        timed_out,
        elapsed,
        cpu_time,
    }
}

/// Linux reports process CPU time in clock ticks of this many per second (USER_HZ).
const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// State letter and utime + stime of a process from /proc/<pid>/stat (proc(5)).
fn proc_state_and_cpu_time(pid: u32) -> Option<(char, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let user_ticks: u64 = fields.get(11)?.parse().ok()?;
    let system_ticks: u64 = fields.get(12)?.parse().ok()?;
    let ticks = user_ticks + system_ticks;
    Some((
        state,
        Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SECOND),
    ))
}

/// QEMU `virt`, M-mode entry at the ELF entry point (`-bios none`). With `icount`, one
/// instruction is one virtual nanosecond, so instret and mtime are exact functions of the
/// instruction stream (the programs print instret deltas).
pub fn run_qemu(elf: &Path, icount: bool, timeout: Duration) -> Outcome {
    require_tools(&["qemu-system-riscv64"]);
    let mut command = Command::new("qemu-system-riscv64");
    command.args([
        "-M",
        "virt",
        "-cpu",
        QEMU_CPU,
        "-bios",
        "none",
        "-nographic",
        "-kernel",
    ]);
    command.arg(elf);
    if icount {
        command.args(["-icount", "shift=0"]);
    }
    run_with_timeout(&mut command, timeout)
}

/// Our machine, with guest time derived from the instruction count.
pub fn run_understudy(
    binary: &Path,
    elf: &Path,
    max_instructions: u64,
    stats: bool,
    timeout: Duration,
) -> Outcome {
    run_understudy_with(binary, elf, max_instructions, stats, &[], timeout)
}

/// `run_understudy` with more `run-guest` arguments (`--interpret`, `--digest-every N`).
pub fn run_understudy_with(
    binary: &Path,
    elf: &Path,
    max_instructions: u64,
    stats: bool,
    extra: &[&str],
    timeout: Duration,
) -> Outcome {
    let mut command = Command::new(binary);
    command.arg("run-guest").arg("--kernel").arg(elf);
    command.args(["--clock", "virtual", "--max-instructions"]);
    command.arg(max_instructions.to_string());
    if stats {
        command.arg("--stats");
    }
    command.args(extra);
    run_with_timeout(&mut command, timeout)
}

/// Instructions between state digests when a run is compared with a translated one.
pub const DIGEST_EVERY_INSTRUCTIONS: u64 = 1_000;

/// The `digest <count> <hex>` lines a run printed to stderr (`--digest-every`).
pub fn digests(outcome: &Outcome) -> Vec<String> {
    String::from_utf8_lossy(&outcome.stderr)
        .lines()
        .filter(|line| line.starts_with("digest "))
        .map(str::to_string)
        .collect()
}

/// Runs `elf` interpreted and translated, both with state digests every
/// `DIGEST_EVERY_INSTRUCTIONS`; returns both outcomes, or why their digests, exit
/// statuses or console output differ.
pub fn run_interpreted_and_translated(
    binary: &Path,
    elf: &Path,
    max_instructions: u64,
    timeout: Duration,
) -> Result<(Outcome, Outcome), String> {
    let every = DIGEST_EVERY_INSTRUCTIONS.to_string();
    let interpreted = run_understudy_with(
        binary,
        elf,
        max_instructions,
        false,
        &["--digest-every", &every, "--interpret"],
        timeout,
    );
    let translated = run_understudy_with(
        binary,
        elf,
        max_instructions,
        false,
        // Every block translated the first time it runs.
        &["--digest-every", &every, "--translate-after", "1"],
        timeout,
    );
    let (left, right) = (digests(&interpreted), digests(&translated));
    if left.is_empty() {
        return Err(format!("{}: the run printed no digests", elf.display()));
    }
    if left != right {
        let first = left
            .iter()
            .zip(&right)
            .position(|(a, b)| a != b)
            .unwrap_or(left.len().min(right.len()));
        return Err(format!(
            "{}: state digests part at checkpoint {first} of {} (interpreter {:?}, translator {:?})",
            elf.display(),
            left.len(),
            left.get(first),
            right.get(first)
        ));
    }
    if interpreted.status != translated.status || interpreted.stdout != translated.stdout {
        return Err(format!(
            "{}: interpreter {} but translator {}, or their console output differs",
            elf.display(),
            interpreted.describe_status(),
            translated.describe_status()
        ));
    }
    Ok((interpreted, translated))
}

/// Lines of context printed around a difference, and the most differing lines shown.
const DIFF_CONTEXT_LINES: usize = 3;
const DIFF_LINES_MAX: usize = 40;

/// A unified-diff-like report of the first differing region (common prefix and suffix
/// trimmed): enough to see which `name value` lines differ.
pub fn diff_report(expected: &str, actual: &str) -> String {
    let left: Vec<&str> = expected.lines().collect();
    let right: Vec<&str> = actual.lines().collect();
    let prefix = left.iter().zip(&right).take_while(|(a, b)| a == b).count();
    let suffix = left[prefix..]
        .iter()
        .rev()
        .zip(right[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let left_changed = &left[prefix..left.len() - suffix];
    let right_changed = &right[prefix..right.len() - suffix];
    let context_start = prefix.saturating_sub(DIFF_CONTEXT_LINES);
    let mut report = format!(
        "@@ -{},{} +{},{} @@ (qemu lines {}, understudy lines {})\n",
        prefix + 1,
        left_changed.len(),
        prefix + 1,
        right_changed.len(),
        left.len(),
        right.len()
    );
    for line in &left[context_start..prefix] {
        report.push_str(&format!(" {line}\n"));
    }
    // Pair lines up so `name value` differences sit next to each other.
    let paired = left_changed
        .len()
        .max(right_changed.len())
        .min(DIFF_LINES_MAX);
    for index in 0..paired {
        match (left_changed.get(index), right_changed.get(index)) {
            (Some(left_line), Some(right_line)) if left_line == right_line => {
                report.push_str(&format!(" {left_line}\n"));
            }
            (left_line, right_line) => {
                if let Some(line) = left_line {
                    report.push_str(&format!("-{line}\n"));
                }
                if let Some(line) = right_line {
                    report.push_str(&format!("+{line}\n"));
                }
            }
        }
    }
    if left_changed.len().max(right_changed.len()) > DIFF_LINES_MAX {
        report.push_str(&format!(
            "... ({} more differing lines)\n",
            left_changed.len().max(right_changed.len()) - DIFF_LINES_MAX
        ));
    }
    let context_end = (left.len() - suffix + DIFF_CONTEXT_LINES).min(left.len());
    for line in &left[left.len() - suffix..context_end] {
        report.push_str(&format!(" {line}\n"));
    }
    report
}

/// Compares our run against QEMU's: stdout byte for byte and the exit status.
pub fn compare(name: &str, qemu: &Outcome, ours: &Outcome) -> Result<(), String> {
    let expected = String::from_utf8_lossy(&qemu.stdout);
    let actual = String::from_utf8_lossy(&ours.stdout);
    let mut problems = String::new();
    if qemu.status != Some(0) {
        problems.push_str(&format!(
            "{name}: the reference run under QEMU failed ({}): the program itself is wrong\n",
            qemu.describe_status()
        ));
    }
    if qemu.status != ours.status || qemu.timed_out != ours.timed_out {
        problems.push_str(&format!(
            "{name}: qemu {} but understudy {}\n",
            qemu.describe_status(),
            ours.describe_status()
        ));
    }
    if expected != actual {
        problems.push_str(&format!("{name}: console output differs\n"));
        problems.push_str(&diff_report(&expected, &actual));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&ours.stderr);
        if !stderr.trim().is_empty() {
            let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
            problems.push_str("understudy stderr (last lines):\n");
            for line in tail.iter().rev() {
                problems.push_str(&format!("  {line}\n"));
            }
        }
        Err(problems)
    }
}
