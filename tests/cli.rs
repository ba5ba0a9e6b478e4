//! The `understudy` command line: guests run with console I/O, and bad input gets one clear
//! line and a non-zero exit, never a panic.

use std::path::PathBuf;
use std::process::Output;

use understudy_machine::program::echo_guest;

mod common;
use common::understudy;

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("understudy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn assert_one_line_error(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "exit status must be non-zero; stderr: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line, got: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn run_guest_feeds_stdin_to_the_uart_and_prints_the_console() {
    let kernel = temp_file("echo.elf", &echo_guest(5));
    let output = understudy(
        &["run-guest", "--kernel", kernel.to_str().unwrap()],
        b"hello",
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn max_instructions_stops_a_guest_still_waiting_for_input() {
    // Waits for 5 bytes; stdin closes after 2, and the echo guest polls (no wfi) forever.
    let kernel = temp_file("echo2.elf", &echo_guest(5));
    let output = understudy(
        &[
            "run-guest",
            "--kernel",
            kernel.to_str().unwrap(),
            "--max-instructions",
            "200000",
        ],
        b"hi",
    );
    // How much of "hi" the guest saw before the limit depends on when the host delivered it.
    assert!(b"hi".starts_with(&output.stdout), "{:?}", output.stdout);
    assert_eq!(output.status.code(), Some(124));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stopped after 200000 instructions"),
        "{stderr}"
    );
}

#[test]
fn a_file_that_is_not_a_guest_image_is_refused() {
    let kernel = temp_file("script.sh", b"#!/bin/sh\necho hi\n");
    let output = understudy(&["run-guest", "--kernel", kernel.to_str().unwrap()], b"");
    assert_one_line_error(&output, "not a RISC-V ELF executable or Linux Image");
}

#[test]
fn a_missing_kernel_file_is_named() {
    let output = understudy(&["run-guest", "--kernel", "/nonexistent/kernel"], b"");
    assert_one_line_error(&output, "/nonexistent/kernel");
}

#[test]
fn a_guest_larger_than_memory_is_refused() {
    let mut big = echo_guest(5);
    // Grow the single segment's memory size to 8 MiB: too large for 4 MiB of RAM.
    let memory_bytes_offset = 64 + 40;
    big[memory_bytes_offset..memory_bytes_offset + 8].copy_from_slice(&(8u64 << 20).to_le_bytes());
    let kernel = temp_file("big.elf", &big);
    let output = understudy(
        &[
            "run-guest",
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory-mib",
            "4",
        ],
        b"",
    );
    assert_one_line_error(&output, "does not fit");
}

#[test]
fn bad_options_get_one_line_and_usage_status() {
    let output = understudy(&["run-guest", "--kernel", "x", "--memory-mib", "lots"], b"");
    assert_one_line_error(&output, "--memory-mib");
    assert_eq!(output.status.code(), Some(2));
    let output = understudy(&["run-guest", "--frobnicate"], b"");
    assert_one_line_error(&output, "--frobnicate");
    let output = understudy(&["run-guest", "--kernel", "x", "--memory-mib", "0"], b"");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn replay_demo_replays_the_built_in_guest_and_detects_a_flipped_bit() {
    let output = understudy(&["replay-demo"], b"");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("guest echoed \"understudy\""), "{stdout}");
    assert!(!stdout.contains("DIFFERENT"), "{stdout}");
    assert!(
        stdout.contains("digests agree up to the flip and part"),
        "{stdout}"
    );
}

#[test]
fn simulate_runs_seeds_and_prints_one_seeds_trace() {
    let output = understudy(&["simulate", "--seeds", "20"], b"");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("20 seeds passed"), "{stdout}");
    let output = understudy(&["simulate", "--seed", "3"], b"");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(stdout.contains("seed 3"), "{stdout}");
}

#[test]
fn perf_map_names_both_parts_of_every_translated_block_by_its_guest_pc() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let kernel = temp_file("echo-perf.elf", &echo_guest(5));
    let mut child = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["run-guest", "--kernel", kernel.to_str().unwrap()])
        .args(["--perf-map", "--stats", "--translate-after", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("understudy starts");
    let map_path = format!("/tmp/perf-{}.map", child.id());
    child.stdin.take().unwrap().write_all(b"hello").unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let blocks: usize = stderr
        .split("blocks_translated: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no translator stats in {stderr}"));
    let map = std::fs::read_to_string(&map_path).expect("the map was written");
    std::fs::remove_file(&map_path).unwrap();
    let mut ranges: Vec<(u64, u64, u64)> = map
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 3, "{line}");
            let start = u64::from_str_radix(fields[0], 16).unwrap();
            let size = u64::from_str_radix(fields[1], 16).unwrap();
            let pc = fields[2].strip_prefix("guest_").expect("named guest_PC");
            (start, size, u64::from_str_radix(pc, 16).unwrap())
        })
        .collect();
    assert!(blocks > 0, "{stderr}");
    // Each block's hot and cold parts lie apart, each under the block's name.
    assert_eq!(ranges.len(), 2 * blocks, "two lines a block:\n{map}");
    let mut names: Vec<u64> = ranges.iter().map(|&(_, _, pc)| pc).collect();
    names.sort();
    assert!(names.chunks(2).all(|pair| pair[0] == pair[1]), "{map}");
    ranges.sort();
    for pair in ranges.windows(2) {
        assert!(pair[0].0 + pair[0].1 <= pair[1].0, "overlap: {pair:?}");
    }
    // The echo guest is linked at the start of RAM (0x8000_0000) and is a few KiB long.
    for &(_, size, pc) in &ranges {
        assert!(
            size > 0 && (0x8000_0000..0x8001_0000).contains(&pc),
            "{pc:#x}"
        );
    }
}
