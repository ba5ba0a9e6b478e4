//! `run-guest --record` and `replay`: a recorded run replays to the same digests; a changed
//! image or a damaged log is refused with a clear error.

use std::path::{Path, PathBuf};

use understudy_cpu::Op;
use understudy_machine::loader::elf_executable;
use understudy_machine::program::{echo_guest, reg, Assembler};
use understudy_machine::RAM_BASE;

mod common;
use common::{digest_lines, understudy, work_dir};

/// Records the echo guest typing "record" on a wall clock; returns the log path and the
/// digest lines printed while recording.
fn record(dir: &Path) -> (PathBuf, Vec<String>) {
    let kernel = dir.join("echo.elf");
    std::fs::write(&kernel, echo_guest(6)).unwrap();
    let log = dir.join("run.log");
    let output = understudy(
        &[
            "run-guest",
            "--kernel",
            kernel.to_str().unwrap(),
            "--record",
            log.to_str().unwrap(),
            "--digest-every",
            "25",
        ],
        b"record",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"record");
    let digests = digest_lines(&output.stderr);
    assert!(
        digests.len() >= 2,
        "the run spans several checkpoints: {digests:?}"
    );
    (log, digests)
}

#[test]
fn replay_reaches_every_recorded_digest_with_no_input() {
    let dir = work_dir("same");
    let (log, recorded) = record(&dir);
    let output = understudy(
        &[
            "replay",
            log.to_str().unwrap(),
            "--digest-every",
            "25",
            "--console",
        ],
        b"ignored",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.stdout, b"record",
        "the replayed guest echoes the recorded bytes"
    );
    assert_eq!(digest_lines(&output.stderr), recorded);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("6 inputs") || stderr.contains(" inputs,"),
        "{stderr}"
    );
}

#[test]
fn replay_refuses_a_kernel_that_changed_since_the_recording() {
    let dir = work_dir("changed");
    let (log, _) = record(&dir);
    let kernel = dir.join("echo.elf");
    let mut bytes = std::fs::read(&kernel).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&kernel, bytes).unwrap();
    let output = understudy(&["replay", log.to_str().unwrap()], b"");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("has changed since the recording"),
        "{stderr}"
    );
    assert!(stderr.contains("echo.elf"), "{stderr}");
}

#[test]
fn a_truncated_log_is_refused_naming_the_point_of_damage() {
    let dir = work_dir("truncated");
    let (log, _) = record(&dir);
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, &bytes[..bytes.len() - 7]).unwrap();
    let output = understudy(&["replay", log.to_str().unwrap()], b"");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("truncated in frame"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_corrupted_log_is_refused_naming_the_point_of_damage() {
    let dir = work_dir("corrupt");
    let (log, _) = record(&dir);
    let mut bytes = std::fs::read(&log).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();
    let output = understudy(&["replay", log.to_str().unwrap()], b"");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("corrupt at frame") || stderr.contains("truncated in frame"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_file_that_is_not_a_log_is_refused() {
    let dir = work_dir("notlog");
    let path = dir.join("x.log");
    std::fs::write(&path, b"definitely not a log").unwrap();
    let output = understudy(&["replay", path.to_str().unwrap()], b"");
    assert!(String::from_utf8_lossy(&output.stderr).contains("not an understudy record log"));
    assert!(!output.status.success());
}

/// A guest that powers off at once: its fifth instruction is the store to the finisher.
fn power_off_guest() -> Vec<u8> {
    let mut a = Assembler::new();
    a.li(reg::T0, 0x10_0000);
    a.li(reg::T1, 0x5555);
    a.store(Op::Sw, reg::T1, reg::T0, 0);
    let forever = a.here();
    a.jump(forever);
    elf_executable(RAM_BASE, &a.finish())
}

#[test]
fn replay_accepts_a_power_off_that_lands_on_a_digest_checkpoint() {
    let dir = work_dir("poweroff-checkpoint");
    let kernel = dir.join("off.elf");
    std::fs::write(&kernel, power_off_guest()).unwrap();
    let log = dir.join("run.log");
    let output = understudy(
        &[
            "run-guest",
            "--kernel",
            kernel.to_str().unwrap(),
            "--record",
            log.to_str().unwrap(),
            "--digest-every",
            "5",
        ],
        b"",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let recorded = digest_lines(&output.stderr);
    let counts: Vec<&str> = recorded
        .iter()
        .map(|line| line.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(counts, ["5"], "power off at 5, a checkpoint");
    let output = understudy(&["replay", log.to_str().unwrap()], b"");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 digests checked, 5 instructions"),
        "{stderr}"
    );
}
