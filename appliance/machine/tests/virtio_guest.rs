//! A bare-metal guest drives the virtio-blk device and the Goldfish RTC through the machine:
//! MMIO routing, queue work between run slices, the interrupt line at the PLIC, and the
//! determinism of it all (same disk and inputs, same digest, whatever the run budgets).

use std::sync::{Arc, Mutex};

use understudy_cpu::Op;
use understudy_machine::devices::virtio::{BackendError, BlockBackend, RxError};
use understudy_machine::loader::elf_executable;
use understudy_machine::program::{reg::*, Assembler};
use understudy_machine::{Exit, InjectError, Input, Machine, MachineConfig, RAM_BASE};

const SLOT0: i32 = 0x1000_1000;
const RTC: i32 = 0x10_1000;
const PLIC_PENDING: i32 = 0x0c00_1000;
/// Guest addresses of the queue and the request, inside the program's RAM.
const DESC: u64 = RAM_BASE + 0x10000;
const AVAIL: u64 = RAM_BASE + 0x10100;
const USED: u64 = RAM_BASE + 0x10200;
const HEADER: u64 = RAM_BASE + 0x11000;
const DATA: u64 = RAM_BASE + 0x12000;
const STATUS: u64 = RAM_BASE + 0x13000;
const RESULTS: u64 = RAM_BASE + 0x14000;
const WALL_CLOCK_BASE_NS: u64 = 1_764_000_000_000_000_000;

/// A disk shared with the test so it can look inside after the guest wrote it.
#[derive(Clone)]
struct SharedDisk(Arc<Mutex<Vec<u8>>>);

impl BlockBackend for SharedDisk {
    fn len_bytes(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let disk = self.0.lock().unwrap();
        let start = offset as usize;
        buf.copy_from_slice(
            disk.get(start..start + buf.len())
                .ok_or(BackendError::OutOfRange)?,
        );
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let mut disk = self.0.lock().unwrap();
        let start = offset as usize;
        disk.get_mut(start..start + data.len())
            .ok_or(BackendError::OutOfRange)?
            .copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// Loads a 64-bit address that fits in 32 bits unsigned (RAM is at 0x8000_0000).
fn li_address(a: &mut Assembler, rd: u8, address: u64) {
    a.li(rd, address as u32 as i32);
    a.i(Op::Slli, rd, rd, 32);
    a.i(Op::Srli, rd, rd, 32);
}

fn store_word(a: &mut Assembler, base: u8, offset: i32, value: i32) {
    a.li(T0, value);
    a.store(Op::Sw, T0, base, offset);
}

/// The guest: initialises the block device (virtio 1.2 section 3.1.1 over 4.2.3), reads
/// sector 1, writes what it read to sector 2, records the status, the data, the interrupt
/// state and the RTC time in RAM, and powers off.
fn guest() -> Vec<u8> {
    let mut a = Assembler::new();
    a.li(S0, SLOT0);
    store_word(&mut a, S0, 0x70, 0); // Status: reset
    store_word(&mut a, S0, 0x70, 1); // ACKNOWLEDGE
    store_word(&mut a, S0, 0x70, 3); // DRIVER
    store_word(&mut a, S0, 0x24, 1); // DriverFeaturesSel 1
    store_word(&mut a, S0, 0x20, 1); // VIRTIO_F_VERSION_1 (bit 32)
    store_word(&mut a, S0, 0x24, 0);
    store_word(&mut a, S0, 0x20, 0);
    store_word(&mut a, S0, 0x70, 0xb); // FEATURES_OK
    store_word(&mut a, S0, 0x30, 0); // QueueSel 0
    store_word(&mut a, S0, 0x38, 8); // QueueNum 8
    for (low, address) in [(0x80, DESC), (0x90, AVAIL), (0xa0, USED)] {
        store_word(&mut a, S0, low, address as u32 as i32);
        store_word(&mut a, S0, low + 4, 0);
    }
    store_word(&mut a, S0, 0x44, 1); // QueueReady
    store_word(&mut a, S0, 0x70, 0xf); // DRIVER_OK

    // Two requests: IN sector 1 into DATA, then OUT DATA to sector 2 (after the first
    // completes, so the write carries what the read returned).
    li_address(&mut a, S1, DESC);
    li_address(&mut a, S2, AVAIL);
    li_address(&mut a, S3, USED);
    li_address(&mut a, S4, HEADER);
    // (request, VIRTIO_BLK_T_IN/OUT, sector, flags of the data descriptor: NEXT|WRITE, NEXT)
    for (request, request_type, sector, data_flags) in [(0u16, 0, 1, 3), (1, 1, 2, 1)] {
        // Header: type, reserved, sector.
        a.li(T0, request_type);
        a.store(Op::Sw, T0, S4, 0);
        a.store(Op::Sw, ZERO, S4, 4);
        a.li(T0, sector);
        a.store(Op::Sd, T0, S4, 8);
        // Descriptors 0..3: header (readable), data (writable for IN), status (writable).
        for (index, (address, len, flags)) in
            [(HEADER, 16, 1), (DATA, 512, data_flags), (STATUS, 1, 2)]
                .into_iter()
                .enumerate()
        {
            let at = 16 * index as i32;
            li_address(&mut a, T1, address);
            a.store(Op::Sd, T1, S1, at);
            a.li(T0, len);
            a.store(Op::Sw, T0, S1, at + 8);
            a.li(T0, flags);
            a.store(Op::Sh, T0, S1, at + 12);
            a.li(T0, index as i32 + 1);
            a.store(Op::Sh, T0, S1, at + 14);
        }
        // avail.ring[request] = 0; avail.idx = request + 1.
        a.store(Op::Sh, ZERO, S2, 4 + 2 * i32::from(request));
        a.li(T0, i32::from(request) + 1);
        a.store(Op::Sh, T0, S2, 2);
        store_word(&mut a, S0, 0x50, 0); // QueueNotify
        let poll = a.here();
        a.i(Op::Lhu, T1, S3, 2); // used.idx
        a.li(T0, i32::from(request) + 1);
        a.branch(Op::Bne, T1, T0, poll);
    }
    // Results: status byte, first data byte, InterruptStatus, PLIC pending word, RTC time.
    li_address(&mut a, T3, RESULTS);
    li_address(&mut a, T1, STATUS);
    a.i(Op::Lbu, T0, T1, 0);
    a.store(Op::Sd, T0, T3, 0);
    li_address(&mut a, T1, DATA);
    a.i(Op::Lbu, T0, T1, 0);
    a.store(Op::Sd, T0, T3, 8);
    a.i(Op::Lw, T0, S0, 0x60); // InterruptStatus
    a.store(Op::Sd, T0, T3, 16);
    a.li(T1, PLIC_PENDING);
    a.i(Op::Lw, T0, T1, 0);
    a.store(Op::Sd, T0, T3, 24);
    a.i(Op::Lw, T0, S0, 0x60);
    a.store(Op::Sw, T0, S0, 0x64); // InterruptACK
    a.i(Op::Lw, T0, S0, 0x60); // InterruptStatus again: the device drops its line
    a.store(Op::Sd, T0, T3, 32);
    a.li(T1, RTC);
    a.i(Op::Lwu, T0, T1, 0); // TIME_LOW latches TIME_HIGH
    a.i(Op::Lwu, T2, T1, 4);
    a.i(Op::Slli, T2, T2, 32);
    a.r(Op::Or, T0, T0, T2);
    a.store(Op::Sd, T0, T3, 40);
    a.li(T0, 0x10_0000); // finisher: pass
    a.li(T1, 0x5555);
    a.store(Op::Sw, T1, T0, 0);
    let forever = a.here();
    a.jump(forever);
    elf_executable(RAM_BASE, &a.finish())
}

fn disk() -> SharedDisk {
    let mut bytes = vec![0u8; 64 * 512];
    bytes[512..1024].fill(0x5a);
    SharedDisk(Arc::new(Mutex::new(bytes)))
}

/// Runs the guest to power-off with run calls of `slice` instructions; returns the digest,
/// the instruction count and the guest's results.
fn run(disk: SharedDisk, slice: u64) -> ([u8; 32], u64, [u64; 6]) {
    let config = MachineConfig {
        memory_bytes: 8 << 20,
        // One tick (100 ns) per instruction: the few hundred instructions before the RTC
        // read move guest time by a visible amount.
        instructions_per_tick: 1,
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(&config, &guest(), None).unwrap();
    machine.attach_disk(Box::new(disk), b"guest-test");
    machine
        .inject(&Input::WallClockBase {
            ns: WALL_CLOCK_BASE_NS,
        })
        .unwrap();
    loop {
        let (_, exit) = machine.run(slice);
        match exit {
            Exit::BudgetExhausted => {}
            Exit::PowerOff { code: 0 } => break,
            other => panic!("guest stopped with {other:?}"),
        }
        assert!(machine.instret().0 < 1_000_000, "guest never finished");
    }
    let mut results = [0u64; 6];
    for (i, result) in results.iter_mut().enumerate() {
        let mut bytes = [0u8; 8];
        machine
            .hart()
            .read_phys(
                understudy_machine::GuestPhysAddr(RESULTS + 8 * i as u64),
                &mut bytes,
            )
            .unwrap();
        *result = u64::from_le_bytes(bytes);
    }
    (machine.digest(), machine.instret().0, results)
}

#[test]
fn guest_reads_and_writes_the_disk_through_virtio_blk_5_2() {
    let shared = disk();
    let (_, instructions, results) = run(shared.clone(), 1 << 20);
    assert_eq!(results[0], 0, "VIRTIO_BLK_S_OK");
    assert_eq!(results[1], 0x5a, "sector 1 read into guest memory");
    assert_eq!(results[2], 1, "InterruptStatus: used buffer");
    assert_eq!(
        results[3] & 0b10,
        0b10,
        "PLIC source 1 pending (latched until claimed)"
    );
    assert_eq!(
        results[4], 0,
        "acknowledged: InterruptStatus clear, line low"
    );
    let time_ns = results[5];
    assert!(
        time_ns > WALL_CLOCK_BASE_NS && time_ns < WALL_CLOCK_BASE_NS + instructions * 100,
        "RTC reads the wall clock base plus guest time"
    );
    let disk = shared.0.lock().unwrap();
    assert_eq!(
        &disk[1024..1536],
        &[0x5a; 512][..],
        "sector 2 written with what was read"
    );
}

#[test]
fn device_work_happens_at_the_same_instructions_whatever_the_run_budget() {
    let reference = run(disk(), 1 << 20);
    for slice in [1, 7, 1000] {
        assert_eq!(run(disk(), slice), reference, "slice {slice}");
    }
}

#[test]
fn inputs_for_absent_or_unready_devices_are_refused_without_changing_the_machine() {
    let config = MachineConfig {
        memory_bytes: 8 << 20,
        net_mac: Some([2, 0, 0, 0, 0, 1]),
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(&config, &guest(), None).unwrap();
    let before = machine.digest();
    let frame = vec![0xff; 60];
    assert_eq!(
        machine.inject(&Input::Frame(frame)),
        Err(InjectError::Frame(RxError::NotReady)),
        "the driver has not set DRIVER_OK"
    );
    assert_eq!(
        machine.inject(&Input::Frame(vec![0; 9000])),
        Err(InjectError::Frame(RxError::FrameSize { len_bytes: 9000 }))
    );
    assert_eq!(
        machine.inject(&Input::Entropy(vec![1, 2, 3])),
        Err(InjectError::NoDevice),
        "no entropy device configured"
    );
    assert_eq!(machine.wants_entropy(), 0);
    assert!(machine.take_transmitted().is_empty());
    assert_eq!(machine.digest(), before);
}

#[test]
fn the_device_tree_lists_eight_virtio_slots_and_the_rtc() {
    let config = MachineConfig {
        memory_bytes: 8 << 20,
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(&config, &guest(), None).unwrap();
    // The blob sits at the top of RAM, 2 MiB aligned (QEMU's placement); a1 points at it.
    let fdt_address = machine.hart().x(11);
    let mut blob = vec![0u8; 8192];
    machine
        .hart()
        .read_phys(understudy_machine::GuestPhysAddr(fdt_address), &mut blob)
        .unwrap();
    let count = |needle: &[u8]| blob.windows(needle.len()).filter(|w| w == &needle).count();
    assert_eq!(count(b"virtio,mmio\0"), 8);
    assert_eq!(count(b"virtio_mmio@10001000\0"), 1);
    assert_eq!(count(b"google,goldfish-rtc\0"), 1);
    let _ = machine.run(1);
}
