//! Machine state transfer on a running Linux guest: a second machine built from the same
//! configuration, given the first one's RAM and `save_devices`, has the same digest and goes
//! on exactly as the first does, whether RAM was copied at once or in pre-copy rounds while
//! the guest kept running; the dirty page log leaves the digest sequence as it was.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use understudy_machine::devices::virtio::{BackendError, BlockBackend};
use understudy_machine::{Exit, Input, Machine, MachineConfig, PAGE_BYTES};

mod common;
use common::{artifacts, ext4_image, work_dir};

/// Instructions from power-on to a guest well into user space: its init loop is writing to
/// the disk and the console, the entropy and network devices are up.
const BOOT_INSTRUCTIONS: u64 = 400_000_000;
/// What both machines run after the transfer, with the same inputs.
const AFTER_INSTRUCTIONS: u64 = 50_000_000;
/// Pre-copy: rounds of RAM copying while the source runs this many instructions each.
const PRECOPY_ROUNDS: usize = 3;
const PRECOPY_ROUND_INSTRUCTIONS: u64 = 10_000_000;
const SECTOR_BYTES: usize = 512;
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// A disk in memory that the test can read and copy behind the machine.
#[derive(Clone)]
struct SharedDisk(Arc<Mutex<Vec<u8>>>);

impl BlockBackend for SharedDisk {
    fn len_bytes(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let disk = self.0.lock().unwrap();
        let range = offset as usize..offset as usize + buf.len();
        buf.copy_from_slice(disk.get(range).ok_or(BackendError::OutOfRange)?);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let mut disk = self.0.lock().unwrap();
        let range = offset as usize..offset as usize + data.len();
        disk.get_mut(range)
            .ok_or(BackendError::OutOfRange)?
            .copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

impl SharedDisk {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
    fn copy_sectors_from(&self, other: &SharedDisk, sectors: &Range<u64>) {
        let range = sectors.start as usize * SECTOR_BYTES..sectors.end as usize * SECTOR_BYTES;
        let source = other.0.lock().unwrap();
        self.0.lock().unwrap()[range.clone()].copy_from_slice(&source[range]);
    }
}

struct Guest {
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    config: MachineConfig,
    disk_image: Vec<u8>,
}

fn guest(name: &str) -> Guest {
    let paths: HashMap<String, PathBuf> = artifacts();
    let dir = work_dir(name);
    let disk = dir.join("disk.ext4");
    ext4_image(&disk);
    // Disk, console, entropy and network all keep working: the loop appends to a file and
    // syncs, reads /dev/urandom, and pings a neighbour nobody answers (ARP requests leave).
    // Short: the kernel hands the command's words to init as arguments, and more than 32
    // (its MAX_INIT_ARGS) make it panic before its console comes up.
    let init = "while true; do date; echo x >> /mnt/log; sync; head -c 8 /dev/urandom | od -x; \
                ping -c 1 -W 1 10.0.2.2; done";
    Guest {
        kernel: std::fs::read(&paths["minimal_kernel"]).unwrap(),
        initrd: std::fs::read(&paths["minimal_initramfs"]).unwrap(),
        config: MachineConfig {
            bootargs: format!(
                "console=ttyS0 understudy.ip=10.0.2.15/24 understudy.services=0 understudy.init='{init}'"
            ),
            net_mac: Some(GUEST_MAC),
            entropy: true,
            ..MachineConfig::default()
        },
        disk_image: std::fs::read(&disk).unwrap(),
    }
}

impl Guest {
    fn machine(&self, disk: &[u8]) -> (Machine, SharedDisk) {
        let mut machine = Machine::new(&self.config, &self.kernel, Some(&self.initrd)).unwrap();
        let disk = SharedDisk(Arc::new(Mutex::new(disk.to_vec())));
        machine.attach_disk(Box::new(disk.clone()), b"understudy-disk");
        (machine, disk)
    }
}

/// What a machine sent out while it ran.
#[derive(Default, Debug, PartialEq)]
struct Outputs {
    console: Vec<u8>,
    frames: Vec<Vec<u8>>,
}

/// Runs exactly `instructions` more, giving the guest the inputs a virtual-clock driver
/// would: time skips to the next timer when it idles, and entropy that is a function of the
/// instruction count. The inputs depend only on the machine's state, so two machines in the
/// same state get the same ones.
fn drive(machine: &mut Machine, instructions: u64, outputs: &mut Outputs) {
    let target = machine.instret().0 + instructions;
    while machine.instret().0 < target {
        let wanted = machine.wants_entropy();
        if wanted > 0 {
            let seed = machine.instret().0;
            let bytes = (0..wanted as u64)
                .map(|i| (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (i % 57)) as u8 ^ i as u8)
                .collect();
            machine.inject(&Input::Entropy(bytes)).unwrap();
        }
        let (_, exit) = machine.run(target - machine.instret().0);
        outputs.console.extend(machine.take_console_output());
        outputs.frames.extend(machine.take_transmitted());
        match exit {
            Exit::Idle {
                wake_at_ticks: Some(wake),
            } => {
                let ticks = wake - machine.time_ticks();
                machine.inject(&Input::AdvanceTime { ticks }).unwrap();
            }
            Exit::Idle {
                wake_at_ticks: None,
            } => panic!("the guest sleeps forever"),
            Exit::PowerOff { .. } | Exit::Reset | Exit::GuestCrashed { .. } => {
                panic!(
                    "the guest stopped: {exit:?}\n{}",
                    String::from_utf8_lossy(&outputs.console)
                )
            }
            Exit::BudgetExhausted | Exit::ConsoleOutputFull | Exit::NetOutputFull => {}
        }
    }
}

fn copy_pages(from: &Machine, to: &mut Machine, pages: impl IntoIterator<Item = u32>) -> usize {
    let page_bytes = PAGE_BYTES as usize;
    let mut copied = 0;
    for page in pages {
        let start = page as usize * page_bytes;
        to.write_ram_page(page, &from.ram()[start..start + page_bytes])
            .unwrap();
        copied += 1;
    }
    copied
}

/// Boots the source and checks it reached the loop with every device in use.
fn boot(guest: &Guest) -> (Machine, SharedDisk, Outputs) {
    let (mut source, disk) = guest.machine(&guest.disk_image);
    let mut outputs = Outputs::default();
    drive(&mut source, BOOT_INSTRUCTIONS, &mut outputs);
    let console = String::from_utf8_lossy(&outputs.console).into_owned();
    assert!(console.contains("understudy-guest: ready"), "{console}");
    assert!(console.contains("mounted /dev/vda at /mnt"), "{console}");
    assert!(console.matches("0000010").count() >= 2, "{console}");
    assert!(
        !outputs.frames.is_empty(),
        "no frame left the guest:\n{console}"
    );
    (source, disk, outputs)
}

/// Runs both machines on with the same inputs and asserts they stay identical.
fn assert_identical_from_here(
    source: &mut Machine,
    source_disk: &SharedDisk,
    target: &mut Machine,
    target_disk: &SharedDisk,
) {
    assert_eq!(
        target.digest(),
        source.digest(),
        "digest right after restore"
    );
    assert_eq!(target.instret(), source.instret());
    assert_eq!(target_disk.bytes(), source_disk.bytes(), "disks differ");
    let mut source_outputs = Outputs::default();
    let mut target_outputs = Outputs::default();
    for _ in 0..5 {
        drive(source, AFTER_INSTRUCTIONS / 5, &mut source_outputs);
        drive(target, AFTER_INSTRUCTIONS / 5, &mut target_outputs);
        assert_eq!(
            target.digest(),
            source.digest(),
            "at {:?}",
            source.instret()
        );
    }
    assert!(
        String::from_utf8_lossy(&source_outputs.console).contains("0000010"),
        "the guest kept working"
    );
    assert_eq!(target_outputs, source_outputs);
    assert_eq!(target_disk.bytes(), source_disk.bytes(), "disks differ");
}

#[test]
fn a_linux_guest_restored_from_saved_devices_and_copied_ram_runs_on_identically() {
    let guest = guest("state-copy");
    let (mut source, source_disk, _) = boot(&guest);
    let started = Instant::now();
    let saved = source.save_devices();
    let save_time = started.elapsed();
    let (mut target, target_disk) = guest.machine(&source_disk.bytes());
    let started = Instant::now();
    copy_pages(&source, &mut target, 0..source.ram_page_count());
    let copy_time = started.elapsed();
    let started = Instant::now();
    target.restore_devices(&saved).unwrap();
    let restore_time = started.elapsed();
    eprintln!(
        "save_devices: {} bytes in {save_time:?}; restore_devices {restore_time:?}; RAM copy {} pages in {copy_time:?}",
        saved.len(),
        source.ram_page_count()
    );
    assert!(
        target.save_devices() == saved,
        "save, restore, save: other bytes"
    );
    assert_identical_from_here(&mut source, &source_disk, &mut target, &target_disk);
}

#[test]
fn pre_copy_rounds_while_the_guest_runs_give_an_identical_machine_and_leave_the_digests_alone() {
    let guest = guest("state-precopy");
    let (mut source, source_disk, _) = boot(&guest);
    // A twin that never logs anything: the source's digests must stay the twin's.
    let (mut twin, _twin_disk) = guest.machine(&guest.disk_image);
    drive(&mut twin, BOOT_INSTRUCTIONS, &mut Outputs::default());
    assert_eq!(twin.digest(), source.digest());

    source.start_dirty_log();
    source.start_disk_write_log();
    let (mut target, target_disk) = guest.machine(&source_disk.bytes());
    copy_pages(&source, &mut target, 0..source.ram_page_count());
    let mut sectors_copied = 0;
    for round in 0..PRECOPY_ROUNDS {
        drive(
            &mut source,
            PRECOPY_ROUND_INSTRUCTIONS,
            &mut Outputs::default(),
        );
        drive(
            &mut twin,
            PRECOPY_ROUND_INSTRUCTIONS,
            &mut Outputs::default(),
        );
        assert_eq!(source.digest(), twin.digest(), "round {round}");
        let dirty = source.take_dirty_log();
        assert!(
            !dirty.is_empty() && dirty.len() < source.ram_page_count() as usize,
            "round {round}: {} dirty pages",
            dirty.len()
        );
        assert!(dirty.windows(2).all(|w| w[0] < w[1]), "increasing");
        let pages = copy_pages(&source, &mut target, dirty);
        let mut sectors = 0;
        for range in source.take_disk_write_log() {
            sectors += range.end - range.start;
            target_disk.copy_sectors_from(&source_disk, &range);
        }
        eprintln!("pre-copy round {round}: {pages} dirty pages, {sectors} written sectors");
        sectors_copied += sectors;
    }
    assert!(sectors_copied > 0, "the guest wrote its disk");
    drive(&mut source, 1_000_000, &mut Outputs::default());
    drive(&mut twin, 1_000_000, &mut Outputs::default());
    let dirty = source.take_dirty_log();
    copy_pages(&source, &mut target, dirty);
    for range in source.take_disk_write_log() {
        target_disk.copy_sectors_from(&source_disk, &range);
    }
    source.stop_dirty_log();
    source.stop_disk_write_log();
    assert_eq!(source.digest(), twin.digest(), "after the last round");
    let saved = source.save_devices();
    target.restore_devices(&saved).unwrap();
    assert_identical_from_here(&mut source, &source_disk, &mut target, &target_disk);
}
