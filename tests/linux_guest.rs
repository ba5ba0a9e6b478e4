//! Unmodified Linux guests in our machine: the minimal 6.1 guest boots to user space, writes
//! to an ext4 disk that the host then reads, and a recorded boot replays to the same digests;
//! the Debian trixie kernel boots to its services. Guest artifacts come from `guest/build`
//! (the test command builds them first).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

mod common;
use common::{artifacts, digest_lines, ext4_image, work_dir};

fn understudy(args: &[&str]) -> Output {
    common::understudy(args, b"")
}

fn minimal_args<'a>(paths: &'a HashMap<String, PathBuf>, append: &'a str) -> Vec<&'a str> {
    vec![
        "run-guest",
        "--kernel",
        paths["minimal_kernel"].to_str().unwrap(),
        "--initrd",
        paths["minimal_initramfs"].to_str().unwrap(),
        "--append",
        append,
        "--clock",
        "virtual",
    ]
}

fn console(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn minimal_linux_boots_to_user_space_runs_init_and_powers_off() {
    let paths = artifacts();
    let append = "console=ttyS0 understudy.init='echo hello from init; cat /proc/cpuinfo'";
    let output = understudy(&minimal_args(&paths, append));
    let text = console(&output);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("Run /init as init process"), "{text}");
    assert!(text.contains("understudy-guest: ready"), "{text}");
    assert!(text.contains("hello from init"), "{text}");
    assert!(text.contains("isa\t\t: rv64imafdc"), "{text}");
    assert!(text.contains("understudy-guest: init exited 0"), "{text}");
}

#[test]
fn a_file_the_guest_writes_to_its_ext4_disk_is_in_the_host_image_after_power_off() {
    let paths = artifacts();
    let dir = work_dir("disk");
    let disk = dir.join("disk.ext4");
    ext4_image(&disk);
    let append = "console=ttyS0 understudy.init='echo written-by-the-guest > /mnt/proof && sync'";
    let mut args = minimal_args(&paths, append);
    args.extend(["--disk", disk.to_str().unwrap()]);
    let output = understudy(&args);
    let text = console(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("mounted /dev/vda at /mnt"), "{text}");
    assert!(text.contains("init exited 0"), "{text}");
    let read = Command::new("debugfs")
        .args(["-R", "cat /proof"])
        .arg(&disk)
        .output()
        .expect("debugfs runs");
    assert_eq!(
        String::from_utf8_lossy(&read.stdout),
        "written-by-the-guest\n"
    );
}

#[test]
fn a_recorded_linux_boot_with_disk_replays_to_identical_digests_and_leaves_the_disk_untouched() {
    let paths = artifacts();
    let dir = work_dir("record");
    let disk = dir.join("disk.ext4");
    ext4_image(&disk);
    let before = std::fs::read(&disk).unwrap();
    let log = dir.join("boot.log");
    // A wall clock, so time advances, the RTC base and entropy are real inputs in the log.
    let append = "console=ttyS0 understudy.init='date; head -c 16 /dev/urandom | od -x; echo x > /mnt/y; sync'";
    let mut args = minimal_args(&paths, append);
    args.truncate(args.len() - 2);
    args.extend([
        "--disk",
        disk.to_str().unwrap(),
        "--record",
        log.to_str().unwrap(),
        "--digest-every",
        "10000000",
    ]);
    let recorded = understudy(&args);
    assert!(recorded.status.success(), "{}", console(&recorded));
    let digests = |output: &Output| digest_lines(&output.stderr);
    let recorded_digests = digests(&recorded);
    assert!(recorded_digests.len() >= 5, "{recorded_digests:?}");
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        before,
        "recording writes to an overlay, never the image"
    );

    let replayed = understudy(&[
        "replay",
        log.to_str().unwrap(),
        "--digest-every",
        "10000000",
        "--console",
    ]);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(digests(&replayed), recorded_digests);
    assert_eq!(
        replayed.stdout, recorded.stdout,
        "the replayed console matches the recorded one"
    );
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        before,
        "replay never writes to the image"
    );
}

#[test]
fn the_debian_trixie_kernel_boots_to_its_services() {
    let paths = artifacts();
    let append = "console=ttyS0 earlycon no4lvl understudy.init='uname -r'";
    let output = understudy(&[
        "run-guest",
        "--kernel",
        paths["trixie_kernel"].to_str().unwrap(),
        "--initrd",
        paths["trixie_initramfs"].to_str().unwrap(),
        "--append",
        append,
        "--memory-mib",
        "512",
        "--clock",
        "virtual",
    ]);
    let text = console(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("understudy-guest: ready"), "{text}");
    assert!(text.contains("redis-server on port 6379"), "{text}");
    assert!(text.contains("httpd on port 80"), "{text}");
    assert!(text.contains("init exited 0"), "{text}");
}
