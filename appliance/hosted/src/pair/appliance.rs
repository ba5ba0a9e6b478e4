//! Drills on the appliance: primary, backup and arbiter as three QEMU machines (TCG) booting
//! the bare-metal kernel, instead of three `understudy run` processes. The service NICs join
//! the drill's bridge (where the client is); the replication NICs have a bridge of their own.
//!
//! Every machine boots the same GRUB image (kernel, one role config, the guest payload); the
//! role is flipped at boot with `understudy.role=` on the kernel command line, the override
//! for machines whose disk cannot be edited. A machine's figures come from the `understudy
//! status` lines on its serial console.
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

/// How the appliance drill runs.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The appliance kernel (`understudy-kernel`, built in `bootloader/`).
    pub kernel: PathBuf,
    /// `shared`: one guest disk both machines attach; `separate`: a copy each.
    pub disk: understudy_boot_config::DiskMode,
}

/// Builds the appliance kernel in `bootloader/` (its own cargo workspace) and returns its path.
pub fn build_kernel(source_root: &Path) -> Result<PathBuf> {
    let bootloader = source_root.join("bootloader");
    eprintln!("drill: building the appliance kernel (bootloader/)");
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "understudy-boot"])
        .current_dir(&bootloader)
        // The root workspace's target directory would mix the kernel's `no_std` build with
        // hosted features (bootloader/README.md).
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("cannot run cargo")?;
    ensure!(status.success(), "the appliance kernel did not build");
    Ok(bootloader.join("target/release/understudy-kernel"))
}

/// Adds the replication bridge and the three machines' ports to the current namespace.
pub fn make_network() -> Result<()> {
    ip(&["link", "add", REPLICATION_BRIDGE, "type", "bridge"])?;
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
         guest_cmdline = console=ttyS0 understudy.ip=10.0.2.15/24 understudy.numbers={}\n",
        match setup.disk {
            understudy_boot_config::DiskMode::Shared => "shared",
            understudy_boot_config::DiskMode::Separate => "separate",
        },
        options.peer_timeout_ms,
        guest.memory_mib,
        guest.numbers,
    );
    understudy_boot_config::parse(&config).map_err(|e| anyhow::anyhow!("drill config: {e}"))?;
    for (name, kernel_words) in [
        ("primary", "understudy.role=primary"),
        ("backup", "understudy.role=backup"),
        ("arbiter", "understudy.role=arbiter"),
        ("arbiter-init", "understudy.role=arbiter understudy.arbiter=init"),
    ] {
        make_iso(setup, options, &config, name, kernel_words)?;
    }
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

/// A GRUB image (BIOS, multiboot2) that boots the kernel with `kernel_words`, the config and
/// the guest.
fn make_iso(
    setup: &Setup,
    options: &DrillOptions,
    config: &str,
    name: &str,
    kernel_words: &str,
) -> Result<()> {
    let tree = options.work_dir.join(format!("{name}-iso"));
    let boot = tree.join("boot");
    std::fs::create_dir_all(boot.join("grub"))?;
    std::fs::copy(&setup.kernel, boot.join("kernel.elf"))
        .with_context(|| format!("cannot read the kernel {}", setup.kernel.display()))?;
    std::fs::write(boot.join("role.conf"), config)?;
    std::fs::copy(&options.guest.kernel, boot.join("guest-kernel"))?;
    std::fs::copy(&options.guest.initrd, boot.join("guest-initrd"))?;
    std::fs::write(
        boot.join("grub/grub.cfg"),
        format!(
            "set timeout=0\nset default=0\nmenuentry \"understudy\" {{\n    multiboot2 /boot/kernel.elf {kernel_words}\n    \
             module2 --nounzip /boot/role.conf role-config\n    module2 --nounzip /boot/guest-kernel guest-kernel\n    \
             module2 --nounzip /boot/guest-initrd guest-initrd\n    boot\n}}\n"
        ),
    )?;
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(options.work_dir.join(format!("{name}.iso")))
        .arg(&tree)
        .output()
        .context("cannot run grub-mkrescue (grub-pc-bin, grub-common, xorriso)")?;
    ensure!(
        output.status.success(),
        "grub-mkrescue failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

/// Boots one machine; its console goes to `ROLE.log` in the work directory.
pub fn spawn(setup: &Setup, dir: &Path, role: &str, init: bool) -> Result<Child> {
    let iso = if role == "arbiter" && init {
        "arbiter-init.iso"
    } else {
        &format!("{role}.iso")
    };
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
        .args(["-display", "none", "-vga", "none", "-no-reboot", "-nodefaults"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-serial")
        .arg(format!("file:{}", dir.join(format!("{role}.log")).display()))
        .arg("-cdrom")
        .arg(dir.join(iso))
        .args(["-netdev"])
        .arg(format!("tap,id=replication,ifname={tap},script=no,downscript=no"))
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
    let Some(line) = log
        .lines()
        .rev()
        .find_map(|line| line.trim_end_matches('\r').strip_prefix("understudy status "))
    else {
        return String::new();
    };
    line.split_whitespace()
        .map(|pair| match pair.strip_prefix("role=") {
            Some(role) => format!("role={}\n", role.replace('-', " ")),
            None => format!("{pair}\n"),
        })
        .collect()
}
