//! A hosted pair on one shared disk image: primary and backup as two `understudy run`
//! processes opening the same ext4 file; the minimal Linux guest writes a file to it and
//! powers off. Only the primary's released writes reach the image, and they all do.
//!
//! Needs the guest artifacts (`guest/build`), `mkfs.ext4` and `debugfs` (e2fsprogs).
mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{artifacts, ext4_image, free_port, work_dir};

const CONTENT: &str = "written once, by the primary, after the backup acknowledged it";

fn debugfs_cat(image: &Path, file: &str) -> String {
    let output = Command::new("debugfs")
        .args(["-R", &format!("cat {file}")])
        .arg(image)
        .output()
        .expect("debugfs runs (e2fsprogs)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_pair_on_one_shared_image_leaves_the_guests_file_on_it_exactly_once() {
    let dir = work_dir("pair-shared-disk");
    let paths = artifacts();
    let image = dir.join("shared.ext4");
    ext4_image(&image);
    let port = free_port();
    let keys = [
        "1111111111111111111111111111111111111111111111111111111111111111",
        "2222222222222222222222222222222222222222222222222222222222222222",
    ];
    for (index, role) in ["primary", "backup"].into_iter().enumerate() {
        let config = format!(
            "role = {role}\nprimary = 127.0.0.31/8\nbackup = 127.0.0.32/8\narbiter = 127.0.0.33:{port}\n\
             port = {port}\ndisk = shared\n\
             channel_key = 5c0f6f3e2a9b8d71c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b\n\
             guest_memory_mib = 128\n\
             guest_cmdline = console=ttyS0 understudy.services=0 understudy.init=\"echo '{CONTENT}' > /mnt/shared.txt && sync\"\n\
             guest_kernel = {}\nguest_initrd = {}\nguest_disk = shared.ext4\n\
             state_dir = {role}-state\narbiter_key = {}\n",
            paths["minimal_kernel"].display(),
            paths["minimal_initramfs"].display(),
            keys[index]
        );
        std::fs::write(dir.join(format!("{role}.conf")), config).unwrap();
    }
    let start = |role: &str| {
        Command::new(env!("CARGO_BIN_EXE_understudy"))
            .args(["run", "--wait-for-partner-s", "60", "--config"])
            .arg(dir.join(format!("{role}.conf")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("understudy starts")
    };
    let backup = start("backup");
    let primary = start("primary");
    let primary = primary.wait_with_output().unwrap();
    let backup = backup.wait_with_output().unwrap();
    let log = |output: &std::process::Output| String::from_utf8_lossy(&output.stderr).into_owned();
    // Both guests ran to the same power-off; only the primary's console reached stdout.
    assert_eq!(primary.status.code(), Some(0), "{}", log(&primary));
    assert_eq!(backup.status.code(), Some(0), "{}", log(&backup));
    let console = String::from_utf8_lossy(&primary.stdout);
    assert!(
        console
            .lines()
            .any(|l| l == "understudy-guest: init exited 0"),
        "{console}"
    );
    assert_eq!(backup.stdout, b"");
    // The file is on the shared image, and the file system is consistent.
    assert_eq!(debugfs_cat(&image, "/shared.txt"), format!("{CONTENT}\n"));
    let fsck = Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&image)
        .output()
        .expect("e2fsck runs");
    assert_eq!(
        fsck.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}
