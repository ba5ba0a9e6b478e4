//! Helpers shared by the integration tests: running the `understudy` binary, scratch
//! directories, the guest artifacts and digest lines.
// Each test file uses a different subset.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs `understudy ARGS` with `stdin` as its standard input (closed after it).
pub fn understudy(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("understudy starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// A fresh scratch directory for one test.
pub fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("understudy-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The guest artifacts by name (`minimal_kernel`, `trixie_initramfs`, ...), from
/// `guest/build --print-paths`; fails with instructions when they are missing.
pub fn artifacts() -> HashMap<String, PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("guest/build"))
        .arg("--print-paths")
        .output()
        .expect("guest/build runs");
    assert!(
        output.status.success(),
        "guest artifacts are missing; run guest/build first: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, path)| (name.to_owned(), PathBuf::from(path)))
        .collect()
}

/// The `digest <count> <hex>` lines a run printed to stderr.
pub fn digest_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with("digest "))
        .map(String::from)
        .collect()
}

/// A TCP port on loopback that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A 16 MiB ext4 image made by `mkfs.ext4` (e2fsprogs).
pub fn ext4_image(path: &Path) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(path)
        .status()
        .expect("mkfs.ext4 runs");
    assert!(status.success());
}
