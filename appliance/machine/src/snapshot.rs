//! Machine state transfer (re-protection): the hart and every device saved as bytes and
//! restored into a machine built from the same configuration, RAM copied page by page, and
//! the dirty page log that lets a sender copy RAM while the guest keeps running.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use understudy_cpu::{GuestPhysAddr, Hart};

use crate::devices::clint::Clint;
use crate::devices::finisher::FinisherRequest;
use crate::devices::plic::Plic;
use crate::devices::rtc::GoldfishRtc;
use crate::devices::uart::Uart;
use crate::devices::virtio::bus::SavedBus;
use crate::state::{RestoreError, StateReader, StateWriter};
use crate::{Devices, Machine, PAGE_BYTES, RAM_BASE};

/// The first word of `Machine::save_devices` output: "USMS" little-endian.
pub const SAVED_STATE_MAGIC: u32 = u32::from_le_bytes(*b"USMS");
/// The format of `Machine::save_devices`; a build that reads another one refuses the state.
pub const SAVED_STATE_VERSION: u32 = 1;
/// A bound on the hart's saved registers, so a damaged length allocates nothing big
/// (`Hart::write_state` writes well under 2 KiB).
const HART_STATE_BYTES_MAX: usize = 64 * 1024;

const FINISHER_NONE: u8 = 0;
const FINISHER_EXIT: u8 = 1;
const FINISHER_RESET: u8 = 2;

/// Why `Machine::write_ram_page` refused a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RamPageError {
    /// The page is past the end of RAM.
    Page { page: u32, page_count: u32 },
    /// The data is not exactly one page.
    Length { len_bytes: usize },
}

impl fmt::Display for RamPageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RamPageError::Page { page, page_count } => write!(
                f,
                "RAM page {page} is past the end of guest memory ({page_count} pages); build both machines with the same memory size"
            ),
            RamPageError::Length { len_bytes } => write!(
                f,
                "RAM page data of {len_bytes} bytes; send exactly {PAGE_BYTES} bytes per page"
            ),
        }
    }
}

impl core::error::Error for RamPageError {}

/// Pages the hart reported written (`Hart::take_dirty_pages`), kept for two consumers: the
/// digest and the dirty log. Whichever takes pages from the hart records them for the other,
/// so neither steals from the other.
pub(crate) struct DirtyPages {
    /// Pages written that the digest has not rehashed yet (one bit per page), collected
    /// while the log took pages from the hart.
    digest_pending: Vec<u64>,
    digest_pending_any: bool,
    /// Pages written since the log started or was last taken; `None` while it is off.
    log: Option<Vec<u64>>,
}

impl DirtyPages {
    pub(crate) fn new(ram_bytes: usize) -> Self {
        let pages = ram_bytes.div_ceil(PAGE_BYTES as usize);
        DirtyPages {
            digest_pending: vec![0; pages.div_ceil(64)],
            digest_pending_any: false,
            log: None,
        }
    }

    /// The pages to rehash for the digest: exactly what `take_dirty_pages` would have
    /// returned had the log never taken any.
    pub(crate) fn take_for_digest(&mut self, hart: &mut Hart) -> Vec<u32> {
        let pages = hart.take_dirty_pages();
        if let Some(log) = &mut self.log {
            mark(log, &pages);
        }
        if !self.digest_pending_any {
            return pages;
        }
        mark(&mut self.digest_pending, &pages);
        self.digest_pending_any = false;
        drain(&mut self.digest_pending)
    }

    /// Pages written before the start are handed to the digest alone.
    fn start_log(&mut self, hart: &mut Hart) {
        self.hold_for_digest(hart.take_dirty_pages());
        self.log = Some(vec![0; self.digest_pending.len()]);
    }

    fn hold_for_digest(&mut self, pages: Vec<u32>) {
        if !pages.is_empty() {
            mark(&mut self.digest_pending, &pages);
            self.digest_pending_any = true;
        }
    }

    fn take_for_log(&mut self, hart: &mut Hart) -> Vec<u32> {
        let Some(log) = &mut self.log else {
            return Vec::new();
        };
        let pages = hart.take_dirty_pages();
        mark(log, &pages);
        let taken = drain(log);
        self.hold_for_digest(pages);
        taken
    }

    fn stop_log(&mut self) {
        self.log = None;
    }
}

fn mark(bits: &mut [u64], pages: &[u32]) {
    for &page in pages {
        bits[page as usize / 64] |= 1 << (page % 64);
    }
}

/// The set pages in increasing order; clears the set.
fn drain(bits: &mut [u64]) -> Vec<u32> {
    let mut out = Vec::new();
    for (index, word) in bits.iter_mut().enumerate() {
        let mut w = *word;
        while w != 0 {
            out.push((index * 64) as u32 + w.trailing_zeros());
            w &= w - 1;
        }
        *word = 0;
    }
    out
}

/// Everything `Devices` holds, read and checked, not yet applied.
struct SavedDevices {
    clock_offset_ticks: u64,
    clint: Clint,
    plic: Plic,
    uart: Uart,
    sbi_timer_ticks: u64,
    finisher_request: Option<FinisherRequest>,
    rtc: GoldfishRtc,
    virtio: SavedBus,
}

impl Devices {
    fn save(&self, out: &mut StateWriter) {
        out.u64(self.clock.offset_ticks());
        self.clint.save(out);
        self.plic.save(out);
        self.uart.save(out);
        out.u64(self.sbi_timer_ticks);
        match self.finisher_request {
            None => out.u8(FINISHER_NONE),
            Some(FinisherRequest::Exit { code }) => {
                out.u8(FINISHER_EXIT);
                out.u16(code);
            }
            Some(FinisherRequest::Reset) => out.u8(FINISHER_RESET),
        }
        self.rtc.save(out);
        self.virtio.save(out);
    }

    fn parse_saved(&self, input: &mut StateReader) -> Result<SavedDevices, RestoreError> {
        let clock_offset_ticks = input.u64()?;
        let clint = Clint::restore(input)?;
        let plic = Plic::restore(input)?;
        let uart = Uart::restore(input)?;
        let sbi_timer_ticks = input.u64()?;
        let finisher_request = match input.u8()? {
            FINISHER_NONE => None,
            FINISHER_EXIT => Some(FinisherRequest::Exit { code: input.u16()? }),
            FINISHER_RESET => Some(FinisherRequest::Reset),
            value => {
                return Err(RestoreError::Invalid {
                    what: "finisher request",
                    value: u64::from(value),
                })
            }
        };
        let rtc = GoldfishRtc::restore(input)?;
        let virtio = self.virtio.parse_saved(input)?;
        Ok(SavedDevices {
            clock_offset_ticks,
            clint,
            plic,
            uart,
            sbi_timer_ticks,
            finisher_request,
            rtc,
            virtio,
        })
    }

    fn restore_saved(&mut self, saved: SavedDevices) {
        self.clock.set_offset_ticks(saved.clock_offset_ticks);
        self.clint = saved.clint;
        self.plic = saved.plic;
        self.uart = saved.uart;
        self.sbi_timer_ticks = saved.sbi_timer_ticks;
        self.finisher_request = saved.finisher_request;
        self.rtc = saved.rtc;
        self.virtio.restore_saved(saved.virtio);
    }
}

impl Machine {
    /// The hart (registers, CSRs, privilege, reservation, interrupt lines), every device
    /// (queues, FIFOs, pending interrupts, console output and transmitted frames the host has
    /// not taken yet) and the machine's own counters, as bytes for `restore_devices`. RAM is
    /// not included: copy it with `ram` and `write_ram_page`.
    ///
    /// The header names the format version and the configuration (memory size,
    /// instructions per tick, monitor, device tree, devices in each virtio slot), so only a
    /// machine built the same way accepts the state.
    ///
    /// Drops this hart's cached translations, as `restore_devices` does on the receiver: the
    /// TLBs decide when page-table A/D bits are set, so both sides must start empty to stay
    /// identical.
    pub fn save_devices(&mut self) -> Vec<u8> {
        self.hart.flush_translations();
        let mut out = StateWriter::default();
        self.write_header(&mut out);
        let mut hart = Vec::new();
        self.hart.write_state(&mut hart);
        out.sized_bytes(&hart);
        self.devices.save(&mut out);
        out.bytes
    }

    /// Restores what `save_devices` wrote on a machine built from the same configuration.
    /// Checks everything before changing anything: on error the machine is as it was. Drops
    /// the decoded blocks and translations derived from the old state. Never panics,
    /// whatever the bytes.
    pub fn restore_devices(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        let mut input = StateReader::new(bytes);
        self.check_header(&mut input)?;
        let hart = input.sized_bytes(HART_STATE_BYTES_MAX, "hart state length")?;
        let devices = self.devices.parse_saved(&mut input)?;
        input.finish()?;
        // Checks its input before it changes anything.
        self.hart.restore_state(hart).map_err(RestoreError::Hart)?;
        self.devices.restore_saved(devices);
        Ok(())
    }

    fn write_header(&self, out: &mut StateWriter) {
        out.u32(SAVED_STATE_MAGIC);
        out.u32(SAVED_STATE_VERSION);
        out.u64(self.hart.ram().len() as u64);
        out.u64(self.devices.clock.instructions_per_tick());
        out.u64(self.host_monitor as u64);
        out.bytes(&self.device_tree_sha256);
        for id in self.devices.virtio.device_ids() {
            out.u32(id);
        }
    }

    fn check_header(&self, input: &mut StateReader) -> Result<(), RestoreError> {
        let magic = input.u32()?;
        if magic != SAVED_STATE_MAGIC {
            return Err(RestoreError::Magic { found: magic });
        }
        let version = input.u32()?;
        if version != SAVED_STATE_VERSION {
            return Err(RestoreError::Version {
                expected: SAVED_STATE_VERSION,
                found: version,
            });
        }
        input.expect_u64(self.hart.ram().len() as u64, "memory size in bytes")?;
        input.expect_u64(
            self.devices.clock.instructions_per_tick(),
            "instructions per tick",
        )?;
        input.expect_u64(self.host_monitor as u64, "monitor (1: SBI on the host)")?;
        let device_tree: [u8; 32] = input.array()?;
        if device_tree != self.device_tree_sha256 {
            let word = |hash: &[u8; 32]| u64::from_be_bytes(hash[..8].try_into().expect("8"));
            return Err(RestoreError::Mismatch {
                what: "device tree (first 8 bytes of its SHA-256)",
                expected: word(&self.device_tree_sha256),
                found: word(&device_tree),
            });
        }
        for expected in self.devices.virtio.device_ids() {
            let found = input.u32()?;
            if found != expected {
                return Err(RestoreError::Mismatch {
                    what: "virtio device (ID; slots 0, 1, 2 hold disk, network, entropy)",
                    expected: u64::from(expected),
                    found: u64::from(found),
                });
            }
        }
        Ok(())
    }

    /// All of guest RAM (at `RAM_BASE`), page `n` at `n * PAGE_BYTES`.
    pub fn ram(&self) -> &[u8] {
        self.hart.ram()
    }

    /// RAM size in 4 KiB pages.
    pub fn ram_page_count(&self) -> u32 {
        (self.hart.ram().len() as u64 / PAGE_BYTES) as u32
    }

    /// Overwrites RAM page `page` (4 KiB, counted from `RAM_BASE`) with `bytes`, keeping
    /// decoded blocks coherent and the digest up to date. On error nothing is written.
    pub fn write_ram_page(&mut self, page: u32, bytes: &[u8]) -> Result<(), RamPageError> {
        let page_count = self.ram_page_count();
        if page >= page_count {
            return Err(RamPageError::Page { page, page_count });
        }
        if bytes.len() as u64 != PAGE_BYTES {
            return Err(RamPageError::Length {
                len_bytes: bytes.len(),
            });
        }
        let address = GuestPhysAddr(RAM_BASE + u64::from(page) * PAGE_BYTES);
        self.hart
            .write_phys(address, bytes)
            .expect("page checked to be inside RAM");
        Ok(())
    }

    /// Starts (or restarts, forgetting what it held) the dirty page log: `take_dirty_log`
    /// then returns the pages written since. The digest is unaffected.
    pub fn start_dirty_log(&mut self) {
        self.dirty.start_log(&mut self.hart);
    }

    /// The RAM pages (4 KiB, from `RAM_BASE`) written since `start_dirty_log` or the
    /// previous call, increasing; empty while the log is off.
    pub fn take_dirty_log(&mut self) -> Vec<u32> {
        self.dirty.take_for_log(&mut self.hart)
    }

    pub fn stop_dirty_log(&mut self) {
        self.dirty.stop_log();
    }

    /// Starts (or restarts) recording the disk sectors the guest writes (no disk: nothing).
    pub fn start_disk_write_log(&mut self) {
        if let Some(disk) = self.devices.virtio.block() {
            disk.device_mut().start_write_log();
        }
    }

    /// The 512-byte sector ranges the guest wrote since `start_disk_write_log` or the
    /// previous call, sorted and merged; empty while the log is off.
    pub fn take_disk_write_log(&mut self) -> Vec<Range<u64>> {
        self.devices
            .virtio
            .block()
            .map(|disk| disk.device_mut().take_write_log())
            .unwrap_or_default()
    }

    pub fn stop_disk_write_log(&mut self) {
        if let Some(disk) = self.devices.virtio.block() {
            disk.device_mut().stop_write_log();
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;
    use crate::devices::virtio::VecBackend;
    use crate::program::echo_guest;
    use crate::{Exit, Input, MachineConfig};
    use alloc::boxed::Box;

    const ECHO_BYTES: i32 = 8;

    fn config() -> MachineConfig {
        MachineConfig {
            memory_bytes: 4 << 20,
            net_mac: Some([2, 0, 0, 0, 0, 7]),
            entropy: true,
            ..MachineConfig::default()
        }
    }

    fn machine(config: &MachineConfig) -> Machine {
        let mut machine = Machine::new(config, &echo_guest(ECHO_BYTES), None).unwrap();
        machine.attach_disk(Box::new(VecBackend::new(vec![0; 64 * 1024])), b"disk");
        machine
    }

    /// Runs `instructions` and then feeds `byte` to the console.
    fn step(machine: &mut Machine, instructions: u64, byte: u8) -> Vec<u8> {
        let (executed, exit) = machine.run(instructions);
        assert_eq!((executed.0, exit), (instructions, Exit::BudgetExhausted));
        machine.inject(&Input::ConsoleByte(byte)).unwrap();
        machine.inject(&Input::AdvanceTime { ticks: 17 }).unwrap();
        machine.take_console_output()
    }

    fn copy_ram(from: &Machine, to: &mut Machine) {
        for (page, bytes) in from.ram().chunks(PAGE_BYTES as usize).enumerate() {
            to.write_ram_page(page as u32, bytes).unwrap();
        }
    }

    #[test]
    fn a_restored_machine_has_the_same_digest_and_runs_on_identically() {
        let mut source = machine(&config());
        step(&mut source, 3_000, b'a');
        step(&mut source, 2_000, b'b');
        // A byte still in the receive FIFO and an echo not taken travel with the state.
        source.run(40);
        source.inject(&Input::ConsoleByte(b'c')).unwrap();
        let saved = source.save_devices();
        let mut target = machine(&config());
        copy_ram(&source, &mut target);
        target.restore_devices(&saved).unwrap();
        assert_eq!(
            target.save_devices(),
            saved,
            "save, restore, save: same bytes"
        );
        assert_eq!(target.instret(), source.instret());
        assert_eq!(target.digest(), source.digest());
        let mut outputs = [Vec::new(), Vec::new()];
        for (machine, output) in [&mut source, &mut target].into_iter().zip(&mut outputs) {
            for byte in *b"defgh" {
                output.extend(step(machine, 1_500, byte));
            }
            let (_, exit) = machine.run(100_000);
            assert_eq!(exit, Exit::PowerOff { code: 0 });
            output.extend(machine.take_console_output());
        }
        assert_eq!(outputs[0], outputs[1]);
        assert_eq!(target.digest(), source.digest());
        assert_eq!(target.instret(), source.instret());
    }

    #[test]
    fn every_truncation_and_many_garbled_bytes_are_refused_without_a_change() {
        let mut source = machine(&config());
        step(&mut source, 3_000, b'a');
        let saved = source.save_devices();
        let mut target = machine(&config());
        target.run(100);
        let before = target.digest();
        let target_saved = target.save_devices();
        for len in 0..saved.len() {
            let error = target.restore_devices(&saved[..len]).unwrap_err();
            assert!(
                matches!(error, RestoreError::Truncated { .. }),
                "{len}: {error}"
            );
        }
        let mut longer = saved.clone();
        longer.push(0);
        assert_eq!(
            target.restore_devices(&longer),
            Err(RestoreError::TrailingBytes { len_bytes: 1 })
        );
        // A fixed pseudo-random sequence of single-byte changes: each is refused or gives a
        // machine that still runs; a refusal changes nothing.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut refused = 0;
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut garbled = saved.clone();
            let at = (seed % garbled.len() as u64) as usize;
            garbled[at] ^= 1 << (seed >> 60 & 7);
            let mut probe = machine(&config());
            probe.run(100);
            match probe.restore_devices(&garbled) {
                Err(_) => {
                    refused += 1;
                    assert_eq!(probe.digest(), before);
                    assert_eq!(probe.save_devices(), target_saved);
                }
                Ok(()) => {
                    probe.run(1_000);
                }
            }
        }
        assert!(refused > 100, "only {refused} garbled states refused");
        assert_eq!(target.digest(), before, "refusals changed nothing");
    }

    #[test]
    fn state_from_a_differently_built_machine_is_refused() {
        let mut source = machine(&config());
        let saved = source.save_devices();
        let refuse = |config: &MachineConfig, disk: bool| {
            let mut target = Machine::new(config, &echo_guest(ECHO_BYTES), None).unwrap();
            if disk {
                target.attach_disk(Box::new(VecBackend::new(vec![0; 64 * 1024])), b"disk");
            }
            target.restore_devices(&saved).unwrap_err()
        };
        let more_memory = MachineConfig {
            memory_bytes: 8 << 20,
            ..config()
        };
        assert_eq!(
            refuse(&more_memory, true),
            RestoreError::Mismatch {
                what: "memory size in bytes",
                expected: 8 << 20,
                found: 4 << 20
            }
        );
        let other_bootargs = MachineConfig {
            bootargs: "console=ttyS0".to_string(),
            ..config()
        };
        assert!(matches!(
            refuse(&other_bootargs, true),
            RestoreError::Mismatch {
                what: "device tree (first 8 bytes of its SHA-256)",
                ..
            }
        ));
        let error = refuse(&config(), false);
        assert_eq!(
            error,
            RestoreError::Mismatch {
                what: "virtio device (ID; slots 0, 1, 2 hold disk, network, entropy)",
                expected: 0,
                found: 2
            }
        );
        assert!(error.to_string().contains("same configuration"), "{error}");
        let other_mac = MachineConfig {
            net_mac: Some([2, 0, 0, 0, 0, 8]),
            ..config()
        };
        assert!(matches!(
            refuse(&other_mac, true),
            RestoreError::Mismatch {
                what: "network MAC address",
                ..
            }
        ));
        let mut version = saved.clone();
        version[4] = 9;
        assert_eq!(
            machine(&config()).restore_devices(&version),
            Err(RestoreError::Version {
                expected: SAVED_STATE_VERSION,
                found: 9
            })
        );
        assert_eq!(
            machine(&config()).restore_devices(b"not a machine state"),
            Err(RestoreError::Magic {
                found: u32::from_le_bytes(*b"not ")
            })
        );
    }

    #[test]
    fn ram_pages_outside_memory_or_of_the_wrong_size_are_refused() {
        let mut target = machine(&config());
        let pages = target.ram_page_count();
        assert_eq!(pages, 1024);
        assert_eq!(
            target.write_ram_page(pages, &[0; 4096]),
            Err(RamPageError::Page {
                page: pages,
                page_count: pages
            })
        );
        assert_eq!(
            target.write_ram_page(0, &[0; 4095]),
            Err(RamPageError::Length { len_bytes: 4095 })
        );
        target.write_ram_page(pages - 1, &[7; 4096]).unwrap();
        assert_eq!(target.ram()[(pages as usize - 1) * 4096], 7);
    }

    #[test]
    fn a_page_rewritten_with_code_runs_the_new_code() {
        // The decode cache must see a page written behind the hart's back: the second
        // machine first runs its own copy of the code, then gets another program's page.
        let mut a = machine(&config());
        step(&mut a, 2_000, b'x');
        let mut b = Machine::new(&config(), &echo_guest(1), None).unwrap();
        b.attach_disk(Box::new(VecBackend::new(vec![0; 64 * 1024])), b"disk");
        b.run(2_000);
        copy_ram(&a, &mut b);
        b.restore_devices(&a.save_devices()).unwrap();
        assert_eq!(b.digest(), a.digest());
        for machine in [&mut a, &mut b] {
            step(machine, 500, b'y');
            machine.run(5_000);
        }
        assert_eq!(b.digest(), a.digest());
    }

    #[test]
    fn the_dirty_log_sees_every_written_page_and_the_digest_does_not_change() {
        let mut plain = machine(&config());
        let mut logged = machine(&config());
        logged.start_dirty_log();
        let mut logged_pages = Vec::new();
        for round in 0..6u8 {
            for machine in [&mut plain, &mut logged] {
                step(machine, 1_000 + u64::from(round) * 300, b'0' + round);
                machine
                    .write_ram_page(900 + u32::from(round), &[round; 4096])
                    .unwrap();
            }
            if round % 2 == 0 {
                logged_pages.push(logged.take_dirty_log());
            }
            if round % 3 == 0 {
                assert_eq!(logged.digest(), plain.digest(), "round {round}");
            }
        }
        assert_eq!(logged.digest(), plain.digest());
        // The echo guest stores its hash for each byte it reads one page past its code
        // (page 1) in the step after the byte arrived; the host wrote page 900 + round.
        assert_eq!(
            logged_pages[0],
            vec![900],
            "no byte arrived yet, nothing stored"
        );
        assert_eq!(logged_pages[1], vec![1, 901, 902]);
        assert_eq!(logged_pages[2], vec![1, 903, 904]);
        assert_eq!(logged.take_dirty_log(), vec![1, 905]);
        assert_eq!(logged.take_dirty_log(), Vec::<u32>::new());
        logged.stop_dirty_log();
        logged.write_ram_page(3, &[1; 4096]).unwrap();
        assert_eq!(logged.take_dirty_log(), Vec::<u32>::new());
        logged.start_dirty_log();
        assert_eq!(
            logged.take_dirty_log(),
            Vec::<u32>::new(),
            "writes before start"
        );
        plain.write_ram_page(3, &[1; 4096]).unwrap();
        assert_eq!(logged.digest(), plain.digest());
    }
}
