//! `run-guest --record` and `replay`: a recorded run replays to the same digests; a changed
//! image or a damaged log is refused with a clear error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use understudy::record::{
    file_sha256, Frame, Header, ImageRef, ImageRole, LogWriter, RecordedEnding, ENTRIES_VERSION,
    LOG_VERSION,
};
use understudy_cpu::Op;
use understudy_ft::InstructionCount;
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

/// Runs `understudy ARGS` with stdin closed; `None` if it was still running after
/// `limit` (it is killed then).
fn understudy_within(args: &[&str], limit: Duration) -> Option<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("understudy starts");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}

/// A log with `header` and an end frame at instruction 0, as a crafted file could be.
fn crafted_log(dir: &Path, header: Header) -> PathBuf {
    let path = dir.join("crafted.log");
    let mut writer = LogWriter::create(&path, header).unwrap();
    writer
        .append(&Frame::End {
            at: InstructionCount(0),
            ending: RecordedEnding::Stopped,
        })
        .unwrap();
    writer.finish().unwrap();
    path
}

fn header_with(images: Vec<ImageRef>, instructions_per_tick: u64) -> Header {
    Header {
        version: LOG_VERSION,
        entries_version: ENTRIES_VERSION,
        memory_bytes: 128 << 20,
        instructions_per_tick,
        bootargs: String::new(),
        net_mac: None,
        entropy: false,
        images,
    }
}

/// Replays `log`; asserts a prompt failure with one line on stderr and returns it.
fn replay_error(log: &Path) -> String {
    let output = understudy_within(&["replay", log.to_str().unwrap()], Duration::from_secs(30))
        .expect("replay of a crafted log ends promptly");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn a_log_header_with_zero_instructions_per_tick_is_refused_with_one_line() {
    let dir = work_dir("zero-tick");
    let kernel = dir.join("off.elf");
    std::fs::write(&kernel, power_off_guest()).unwrap();
    let (sha256, bytes) = file_sha256(&kernel).unwrap();
    let image = ImageRef {
        role: ImageRole::Kernel,
        path: kernel,
        sha256,
        bytes,
    };
    let log = crafted_log(&dir, header_with(vec![image], 0));
    let stderr = replay_error(&log);
    assert!(stderr.contains("instructions per tick"), "{stderr}");
}

#[test]
fn a_log_header_naming_a_device_as_an_image_is_refused_with_one_line() {
    let dir = work_dir("dev-zero");
    let image = ImageRef {
        role: ImageRole::Kernel,
        path: PathBuf::from("/dev/zero"),
        sha256: [0; 32],
        bytes: 4096,
    };
    let log = crafted_log(&dir, header_with(vec![image], 10));
    let stderr = replay_error(&log);
    assert!(stderr.contains("/dev/zero"), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}
