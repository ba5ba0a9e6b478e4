//! Bad input to `understudy run`: a pair whose disks differ, a partner with another channel
//! key, a config with a wrong key. Each gets one clear line and a non-zero exit, and nothing is
//! written to any disk. The guest is the built-in echo program; the pair talks on loopback.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{free_port, work_dir};
use sha2::{Digest, Sha256};
use understudy_machine::program::echo_guest;

const CHANNEL_KEY: &str = "5c0f6f3e2a9b8d71c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b";
const OTHER_CHANNEL_KEY: &str = "6c0f6f3e2a9b8d71c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b";
const KEYS: [&str; 2] = [
    "1111111111111111111111111111111111111111111111111111111111111111",
    "2222222222222222222222222222222222222222222222222222222222222222",
];
const WAIT_S: &str = "4";
/// Both processes end within seconds; past this, they are killed.
const HANG_LIMIT_S: u64 = 60;

struct Pair {
    dir: PathBuf,
    port: u16,
    /// The last byte of this pair's loopback addresses (primary; backup +1, arbiter +2): each
    /// test has its own, so two pairs running at once can never hear each other.
    host: u8,
}

impl Pair {
    fn new(name: &str, host: u8) -> Pair {
        let dir = work_dir(name);
        std::fs::write(dir.join("echo.elf"), echo_guest(3)).unwrap();
        Pair {
            dir,
            port: free_port(),
            host,
        }
    }

    fn config(&self, role: &str, channel_key: &str, disk: Option<&str>) -> PathBuf {
        let index = usize::from(role == "backup");
        let mut text = format!(
            "role = {role}\nprimary = 127.0.0.{}/8\nbackup = 127.0.0.{}/8\narbiter = 127.0.0.{}:{}\n\
             port = {}\ndisk = separate\nchannel_key = {channel_key}\nguest_kernel = echo.elf\n\
             state_dir = {role}-state\narbiter_key = {}\n",
            self.host,
            self.host + 1,
            self.host + 2,
            self.port,
            self.port,
            KEYS[index]
        );
        if let Some(disk) = disk {
            text.push_str(&format!("guest_disk = {disk}\n"));
        }
        let path = self.dir.join(format!("{role}.conf"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs primary and backup together until both exit.
    fn run(&self, primary: &Path, backup: &Path) -> (Output, Output) {
        let start = |config: &Path| {
            Command::new(env!("CARGO_BIN_EXE_understudy"))
                .args(["run", "--wait-for-partner-s", WAIT_S, "--config"])
                .arg(config)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("understudy starts")
        };
        let backup = start(backup);
        let primary = start(primary);
        // A pair that formed by mistake would run the guest forever: end it, and let the
        // assertions say what happened.
        let pids = [primary.id().to_string(), backup.id().to_string()];
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(HANG_LIMIT_S));
            let _ = Command::new("kill").arg("-9").args(&pids).output();
        });
        (
            primary.wait_with_output().unwrap(),
            backup.wait_with_output().unwrap(),
        )
    }
}

fn sha256(path: &Path) -> [u8; 32] {
    Sha256::digest(std::fs::read(path).unwrap()).into()
}

fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn a_pair_whose_disks_differ_refuses_to_start_and_writes_nothing() {
    let pair = Pair::new("pair-disks", 21);
    std::fs::write(pair.dir.join("primary.img"), vec![0u8; 1 << 20]).unwrap();
    // Another size: one sector more.
    std::fs::write(pair.dir.join("backup.img"), vec![0u8; (1 << 20) + 512]).unwrap();
    let before = [
        sha256(&pair.dir.join("primary.img")),
        sha256(&pair.dir.join("backup.img")),
    ];
    let primary = pair.config("primary", CHANNEL_KEY, Some("primary.img"));
    let backup = pair.config("backup", CHANNEL_KEY, Some("backup.img"));
    let (primary, backup) = pair.run(&primary, &backup);
    assert_eq!(backup.status.code(), Some(3), "{}", last_line(&backup));
    assert_eq!(
        last_line(&backup),
        "understudy: halted: the disks differ by SHA-256; copy the primary's disk to the backup \
         before starting the pair"
    );
    assert_eq!(primary.status.code(), Some(2), "{}", last_line(&primary));
    assert_eq!(
        last_line(&primary),
        "error: no backup confirmed the pair within 4 s: start the backup with the same guest and \
         disk, and check that 127.0.0.22:"
            .to_owned()
            + &pair.port.to_string()
            + " is reachable"
    );
    // The guests never ran: no console output, and both disks are as they were.
    assert_eq!(primary.stdout, b"");
    assert_eq!(backup.stdout, b"");
    assert_eq!(sha256(&pair.dir.join("primary.img")), before[0]);
    assert_eq!(sha256(&pair.dir.join("backup.img")), before[1]);
}

#[test]
fn a_partner_with_another_channel_key_is_refused_in_one_line() {
    let pair = Pair::new("pair-key", 41);
    let primary = pair.config("primary", CHANNEL_KEY, None);
    let backup = pair.config("backup", OTHER_CHANNEL_KEY, None);
    let (primary, backup) = pair.run(&primary, &backup);
    let backup_log = String::from_utf8_lossy(&backup.stderr).into_owned();
    // One log line for the refusal, whatever its time: `ts=... level=warn ...`.
    assert_eq!(
        backup_log
            .lines()
            .filter(|l| l.contains(" event=frame_refused "))
            .map(|l| l.split_once(" level=").map_or(l, |(_, rest)| rest))
            .collect::<Vec<_>>(),
        ["warn event=frame_refused epoch=1 reason=\"frame failed authentication; check the pre-shared key\""],
        "{backup_log}"
    );
    assert_eq!(backup.status.code(), Some(2), "{backup_log}");
    assert_eq!(
        last_line(&backup),
        format!(
            "error: no primary was heard within 4 s: start it with the same channel_key and \
             version, and check that 127.0.0.41:{} is reachable",
            pair.port
        )
    );
    assert_eq!(primary.status.code(), Some(2));
    assert_eq!(primary.stdout, b"");
}

#[test]
fn a_config_with_a_wrong_key_is_refused_with_its_line_number() {
    let pair = Pair::new("pair-config", 61);
    let config = pair.config("primary", CHANNEL_KEY, None);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("colour = blue\n");
    std::fs::write(&config, &text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: {}: line 11: unknown key; known keys: role, primary, backup, arbiter, port, \
             gateway, disk, channel_key, guest_memory_mib, guest_cmdline, arbiter_key_primary, \
             arbiter_key_backup, arbiter_key, peer_timeout_ms, metrics_port, arbiter_backend, \
             etcd_endpoints, etcd_prefix, execution, guest_kernel, guest_initrd, \
             guest_disk, service_net, state_dir, metrics_address, log_level, log_format",
            config.display()
        )
    );
    // Nothing was created: the state directory is made only for a valid config.
    assert!(!pair.dir.join("primary-state").exists());
}

#[test]
fn a_backup_with_another_guest_image_halts_before_the_guest_runs() {
    let pair = Pair::new("pair-images", 81);
    let primary = pair.config("primary", CHANNEL_KEY, None);
    let backup = pair.config("backup", CHANNEL_KEY, None);
    // The backup's kernel echoes four bytes, the primary's three: another image.
    std::fs::write(pair.dir.join("other.elf"), echo_guest(4)).unwrap();
    let text = std::fs::read_to_string(&backup)
        .unwrap()
        .replace("guest_kernel = echo.elf", "guest_kernel = other.elf");
    std::fs::write(&backup, text).unwrap();
    let (primary, backup) = pair.run(&primary, &backup);
    assert_eq!(backup.status.code(), Some(3), "{}", last_line(&backup));
    assert_eq!(
        last_line(&backup),
        "understudy: halted: the primary runs other guest images (kernel, initrd, memory or \
         command line); give both machines the same"
    );
    assert_eq!(primary.status.code(), Some(2), "{}", last_line(&primary));
    assert_eq!(primary.stdout, b"");
    assert_eq!(backup.stdout, b"");
}
