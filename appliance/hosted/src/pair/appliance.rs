//! Drills on the appliance: primary, backup and arbiter as three QEMU machines (TCG) booting
//! the bare-metal kernel, instead of three `understudy run` processes. The service NICs join
//! the drill's bridge (where the client is); the replication NICs have a bridge of their own.
//!
//! As a user would: `tools/build-image` builds one image (kernel, UEFI loader, the pair's
//! config, the guest payload), which is copied three times and flipped with `mkimage
//! set-role`; each machine boots its copy on OVMF. A machine's figures come from the
//! `understudy status` lines on its serial console.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{ensure, Context, Result};

use super::drill::{ip, DrillOptions};

/// The replication network's bridge and the machines' ports on it.
const REPLICATION_BRIDGE: &str = "us-rep0";
const REPLICATION_TAPS: [(&str, &str); 3] = [
    ("primary", "us-rep-p"),
    ("backup", "us-rep-b"),
    ("arbiter", "us-rep-a"),
];
/// The machines' replication addresses.
const PRIMARY_CIDR: &str = "10.0.0.1/24";
const BACKUP_CIDR: &str = "10.0.0.2/24";
const ARBITER_ADDRESS: &str = "10.0.0.3:7100";
/// The etcd member of an etcd drill, on the drill's own replication address.
const ETCD_ADDRESS: &str = "10.0.0.10:2379";
/// How long the etcd member may take to answer its first health check.
const ETCD_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Where the drill reads the machines' status from.
const OPERATOR_CIDR: &str = "10.0.0.10/24";
/// The machines' status port (`metrics_port`).
const STATUS_PORT: u16 = 9464;
/// How long a status request may take.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// RAM of each QEMU machine: the guest's plus the appliance's own heap.
const MACHINE_MEMORY_MIB: u32 = 512;
/// Bytes of each replica's guest disk (an ext4 image the guest mounts at /mnt).
const GUEST_DISK_BYTES: u64 = 16 << 20;
/// Bytes of the arbiter's disk (its record takes one sector).
const ARBITER_DISK_BYTES: u64 = 1 << 20;
/// The last number of the guest's `/www/numbers.txt`: the appliance runs its guest under two
/// layers of emulation here, so the page is smaller than on the hosted pair.
pub const APPLIANCE_NUMBERS: u32 = 20_000;

/// The appliance drills' peer timeout: the protocol's default. Under TCG on a loaded host a
/// QEMU machine can be descheduled for a few hundred milliseconds, which the hosted drills'
/// 300 ms would count as a failure.
pub const APPLIANCE_PEER_TIMEOUT_MS: u64 = 1000;

/// OVMF's firmware and its variable store template (Debian's `ovmf`).
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

/// How the appliance drill runs.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The source tree (for `tools/build-image` and `mkimage`).
    pub source_root: PathBuf,
    /// `shared`: one guest disk both machines attach; `separate`: a copy each.
    pub disk: understudy_boot_config::DiskMode,
    /// The replicas ask an etcd member in the namespace instead of an arbiter machine.
    pub etcd: bool,
}

/// Adds the replication bridge and the three machines' ports to the current namespace.
pub fn make_network() -> Result<()> {
    ip(&["link", "add", REPLICATION_BRIDGE, "type", "bridge"])?;
    // The drill's own address on the replication network, to read the machines' status.
    ip(&["addr", "add", OPERATOR_CIDR, "dev", REPLICATION_BRIDGE])?;
    ip(&["link", "set", REPLICATION_BRIDGE, "up"])?;
    for (_, tap) in REPLICATION_TAPS {
        ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
        ip(&["link", "set", tap, "master", REPLICATION_BRIDGE])?;
        ip(&["link", "set", tap, "up"])?;
    }
    Ok(())
}

/// The nftables rules that drop every frame between the two replicas' ports (both still reach
/// the arbiter).
pub const CUT_LINK_RULES: &str = "table bridge understudy_cut {\n chain forward {\n  \
    type filter hook forward priority 0;\n  iifname \"us-rep-p\" oifname \"us-rep-b\" drop\n  \
    iifname \"us-rep-b\" oifname \"us-rep-p\" drop\n }\n}\n";

/// Writes the pair's config, the boot images and the disks into the work directory.
pub fn prepare(setup: &Setup, options: &DrillOptions, keys: &[String; 3]) -> Result<()> {
    let dir = &options.work_dir;
    let guest = &options.guest;
    let [channel_key, primary_key, backup_key] = keys;
    let config = format!(
        "role = primary\nprimary = {PRIMARY_CIDR}\nbackup = {BACKUP_CIDR}\narbiter = {ARBITER_ADDRESS}\n\
         port = 7000\ndisk = {}\nchannel_key = {channel_key}\narbiter_key_primary = {primary_key}\n\
         arbiter_key_backup = {backup_key}\npeer_timeout_ms = {}\nguest_memory_mib = {}\n\
         metrics_port = {STATUS_PORT}\nexecution = {}\n\
         guest_cmdline = console=ttyS0 understudy.ip=10.0.2.15/24 understudy.numbers={}\n",
        match setup.disk {
            understudy_boot_config::DiskMode::Shared => "shared",
            understudy_boot_config::DiskMode::Separate => "separate",
        },
        options.peer_timeout_ms,
        guest.memory_mib,
        options.execution,
        guest.numbers,
    );
    let config = if setup.etcd {
        format!(
            "{config}arbiter_backend = etcd\netcd_endpoints = http://{ETCD_ADDRESS}\n\
             etcd_prefix = /understudy/drill\n"
        )
    } else {
        config
    };
    understudy_boot_config::parse(&config).map_err(|e| anyhow::anyhow!("drill config: {e}"))?;
    let config_path = dir.join("pair.conf");
    std::fs::write(&config_path, config)?;
    make_images(setup, dir, &config_path)?;
    let disk = |name: &str, bytes: u64, ext4: bool| -> Result<()> {
        let path = dir.join(name);
        std::fs::File::create(&path)?.set_len(bytes)?;
        if ext4 {
            let status = Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&path)
                .status()
                .context("cannot run mkfs.ext4 (e2fsprogs)")?;
            ensure!(status.success(), "mkfs.ext4 failed");
        }
        Ok(())
    };
    disk("arbiter.disk", ARBITER_DISK_BYTES, false)?;
    disk("primary.disk", GUEST_DISK_BYTES, true)?;
    if setup.disk == understudy_boot_config::DiskMode::Separate {
        // The backup's copy must equal the primary's: the pair starts only when they match.
        std::fs::copy(dir.join("primary.disk"), dir.join("backup.disk"))?;
    }
    Ok(())
}

/// Downloads the crates `tools/build-image` builds with (the bootloader and mkimage
/// workspaces), to be run before the drill enters its namespace: inside, the crate
/// registry is out of reach, and a fresh machine has none of them yet.
pub fn fetch_crates(setup: &Setup) -> Result<()> {
    for workspace in ["bootloader", "tools/mkimage"] {
        run(
            Command::new("cargo")
                .arg("fetch")
                .current_dir(setup.source_root.join(workspace)),
            &format!("cargo fetch in {workspace}/"),
        )?;
    }
    Ok(())
}

/// One image for the pair, built by `tools/build-image` from the primary's config, copied
/// per machine and flipped to its role by `mkimage set-role`; the arbiter's first boot gets
/// `understudy.arbiter=init` on its command line (`mkimage set-cmdline`).
fn make_images(setup: &Setup, dir: &Path, config: &Path) -> Result<()> {
    let image = dir.join("primary.img");
    run(
        Command::new(setup.source_root.join("tools/build-image"))
            .arg("--config")
            .arg(config)
            .args(["--guest", "minimal", "--output"])
            .arg(&image)
            // Each workspace in its own target directory (bootloader/README.md).
            .env_remove("CARGO_TARGET_DIR"),
        "tools/build-image",
    )?;
    let mkimage = setup
        .source_root
        .join("tools/mkimage/target/release/mkimage");
    for (name, role) in [
        ("backup", "backup"),
        ("arbiter", "arbiter"),
        ("arbiter-init", "arbiter"),
    ] {
        let copy = dir.join(format!("{name}.img"));
        std::fs::copy(&image, &copy)?;
        run(
            Command::new(&mkimage)
                .args(["set-role", "--image"])
                .arg(&copy)
                .args(["--role", role]),
            "mkimage set-role",
        )?;
    }
    run(
        Command::new(&mkimage)
            .args(["set-cmdline", "--image"])
            .arg(dir.join("arbiter-init.img"))
            .args(["--cmdline", "understudy.arbiter=init"]),
        "mkimage set-cmdline",
    )
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    ensure!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Boots one machine; its console goes to `ROLE.log` in the work directory. With etcd the
/// arbiter is an etcd member instead of a machine.
pub fn spawn(setup: &Setup, dir: &Path, role: &str, init: bool) -> Result<Child> {
    if role == "arbiter" && setup.etcd {
        return start_etcd(dir, init);
    }
    let image = if role == "arbiter" && init {
        "arbiter-init.img"
    } else {
        &format!("{role}.img")
    };
    // A machine booted again keeps its earlier console as ROLE.log.1.
    let log = dir.join(format!("{role}.log"));
    if log.exists() {
        std::fs::rename(&log, dir.join(format!("{role}.log.1")))?;
    }
    // Fresh firmware variables per boot: the boot order is the image's fallback path.
    let variables = dir.join(format!("{role}-vars.fd"));
    std::fs::copy(OVMF_VARS, &variables)
        .with_context(|| format!("cannot read {OVMF_VARS} (install ovmf)"))?;
    let (index, tap) = REPLICATION_TAPS
        .iter()
        .enumerate()
        .find(|(_, (r, _))| *r == role)
        .map(|(i, (_, tap))| (i, *tap))
        .context("no such role")?;
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-accel", "tcg", "-M", "pc", "-cpu", "max", "-m"])
        .arg(format!("{MACHINE_MEMORY_MIB}M"))
        .args([
            "-display",
            "none",
            "-vga",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-serial")
        .arg(format!(
            "file:{}",
            dir.join(format!("{role}.log")).display()
        ))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", variables.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio",
            dir.join(image).display()
        ))
        .args(["-netdev"])
        .arg(format!(
            "tap,id=replication,ifname={tap},script=no,downscript=no"
        ))
        .args(["-device"])
        .arg(format!(
            "virtio-net-pci,netdev=replication,mac=52:54:00:00:00:{:02x}",
            index + 1
        ));
    let disk = match role {
        "arbiter" => "arbiter.disk",
        "backup" if setup.disk == understudy_boot_config::DiskMode::Separate => "backup.disk",
        _ => "primary.disk",
    };
    if role != "arbiter" {
        command
            .args(["-netdev"])
            .arg(format!(
                "tap,id=service,ifname={},script=no,downscript=no",
                super::drill::TAPS[index]
            ))
            .args(["-device"])
            .arg(format!(
                "virtio-net-pci,netdev=service,mac=52:54:00:00:01:{:02x}",
                index + 1
            ));
    }
    // One raw file attached to both machines for a shared disk: QEMU's own image locking
    // would refuse the second, and `share-rw` tells the device another writer exists.
    command
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=disk,cache=writethrough,file.locking=off",
            dir.join(disk).display()
        ))
        .args(["-device", "virtio-blk-pci,drive=disk,share-rw=on"]);
    command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{role}.qemu")))?)
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start QEMU for the {role} (qemu-system-x86)"))
}

/// A machine's last status line as `key=value` lines (the hosted status file's format), its
/// role words joined by `-` turned back into spaces; empty before the first line.
pub fn status_text(dir: &Path, role: &str) -> String {
    let log = std::fs::read(dir.join(format!("{role}.log"))).unwrap_or_default();
    let log = String::from_utf8_lossy(&log);
    let Some(line) = log.lines().rev().find_map(|line| {
        line.trim_end_matches('\r')
            .strip_prefix("understudy status ")
    }) else {
        return String::new();
    };
    line.split_whitespace()
        .map(|pair| match pair.strip_prefix("role=") {
            Some(role) => format!("role={}\n", role.replace('-', " ")),
            None => format!("{pair}\n"),
        })
        .collect()
}

/// Reads the primary's status over the replication network as an operator's tools would:
/// `/metrics` must pass `promtool check metrics`, `/status.json` must be JSON. Returns
/// `ok role=... epoch=... failover_available=...` from the JSON, or what went wrong.
pub fn check_primary_status() -> String {
    let result = (|| -> Result<String> {
        let metrics = http_get("/metrics")?;
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run promtool (install prometheus)")?;
        std::io::Write::write_all(
            &mut promtool.stdin.take().expect("piped"),
            metrics.as_bytes(),
        )?;
        let checked = promtool.wait_with_output()?;
        ensure!(
            checked.status.success(),
            "promtool refused the metrics: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        let status: serde_json::Value =
            serde_json::from_str(&http_get("/status.json")?).context("/status.json is not JSON")?;
        Ok(format!(
            "ok role={} epoch={} failover_available={}",
            status["role"].as_str().unwrap_or("?"),
            status["epoch"],
            status["failover_available"]
        ))
    })();
    result.unwrap_or_else(|error| format!("error: {error:#}").replace('\n', " "))
}

/// One GET to the primary's status port; the body of a 200 answer.
fn http_get(path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let address = std::net::SocketAddr::from(([10, 0, 0, 1], STATUS_PORT));
    let mut stream = std::net::TcpStream::connect_timeout(&address, STATUS_TIMEOUT)?;
    stream.set_read_timeout(Some(STATUS_TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: appliance\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("no HTTP answer")?;
    ensure!(
        head.starts_with("HTTP/1.1 200 OK"),
        "{path}: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_owned())
}

/// One etcd member for the replicas to ask; `fresh` empties its data directory first.
fn start_etcd(dir: &Path, fresh: bool) -> Result<Child> {
    let data = dir.join("etcd-data");
    if fresh {
        let _ = std::fs::remove_dir_all(&data);
    }
    let client = format!("http://{ETCD_ADDRESS}");
    let child = Command::new("etcd")
        .args(["--name", "drill", "--data-dir"])
        .arg(&data)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
        .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
        .args(["--initial-cluster", "drill=http://127.0.0.1:2380"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("arbiter.log"))?)
        .spawn()
        .context("cannot start etcd (install etcd-server)")?;
    let deadline = std::time::Instant::now() + ETCD_START_TIMEOUT;
    let address: std::net::SocketAddr = ETCD_ADDRESS.parse().expect("a socket address");
    while std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_millis(200))
        .is_err()
    {
        ensure!(
            std::time::Instant::now() < deadline,
            "etcd did not listen on {ETCD_ADDRESS} within {} s",
            ETCD_START_TIMEOUT.as_secs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(child)
}
