//! Seeded fuzzing of the virtio devices: arbitrary guest memory, rings and register writes
//! must never panic the host, and the devices write only where the driver allowed them to.
//!
//! Reproduce a failure with `VIRTQUEUE_FUZZ_SEED=<seed printed first> cargo test -p
//! understudy-machine --test virtqueue_fuzz`.

use understudy_machine::devices::virtio::mmio::{self, VirtioMmio};
use understudy_machine::devices::virtio::net::FRAME_BYTES_MAX;
use understudy_machine::devices::virtio::queue::{VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use understudy_machine::devices::virtio::{
    Block, GuestMemory, MemoryError, Net, Rng, VecBackend, VirtioDevice,
};
use understudy_machine::GuestPhysAddr;

const RAM_BASE: u64 = 0x8000_0000;
const MEMORY_BYTES: usize = 64 * 1024;
/// Rings live below this offset in structured cases; buffers above it.
const RING_AREA_BYTES: u64 = 0x2000;
const QUEUE_STRIDE_BYTES: u64 = 0x1000;
const QUEUE_SIZE: u16 = 16;
const CASES: u64 = 8000;
const STEPS_PER_CASE: usize = 60;

/// SplitMix64: small, seedable, and good enough to drive a fuzzer.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Guest memory that records every write it accepts and every access it refuses.
struct RecordingMemory {
    bytes: Vec<u8>,
    writes: Vec<(u64, usize)>,
    refused: u64,
}

impl RecordingMemory {
    fn offset(&self, addr: u64, len: usize) -> Option<usize> {
        let start = addr.checked_sub(RAM_BASE)?;
        let end = start.checked_add(len as u64)?;
        (end <= self.bytes.len() as u64).then_some(start as usize)
    }

    fn put(&mut self, addr: u64, data: &[u8]) {
        let at = (addr - RAM_BASE) as usize;
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }
}

impl GuestMemory for RecordingMemory {
    fn read(&self, addr: GuestPhysAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        match self.offset(addr.0, buf.len()) {
            Some(at) => {
                buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
                Ok(())
            }
            None => Err(MemoryError {
                addr,
                len_bytes: buf.len() as u64,
            }),
        }
    }

    fn write(&mut self, addr: GuestPhysAddr, data: &[u8]) -> Result<(), MemoryError> {
        match self.offset(addr.0, data.len()) {
            Some(at) => {
                self.bytes[at..at + data.len()].copy_from_slice(data);
                self.writes.push((addr.0, data.len()));
                Ok(())
            }
            None => {
                self.refused += 1;
                Err(MemoryError {
                    addr,
                    len_bytes: data.len() as u64,
                })
            }
        }
    }
}

fn queue_base(index: usize) -> u64 {
    RAM_BASE + QUEUE_STRIDE_BYTES * index as u64
}
fn desc_table(index: usize) -> u64 {
    queue_base(index)
}
fn avail_ring(index: usize) -> u64 {
    queue_base(index) + 16 * u64::from(QUEUE_SIZE)
}
fn used_ring(index: usize) -> u64 {
    queue_base(index) + 0x800
}

fn store(device: &mut dyn Target, offset: u64, value: u64) {
    device.device_store(offset, 4, value);
}

/// The driver initialisation of virtio 1.2 section 3.1.1, with the fuzzer's ring layout.
fn initialise(device: &mut dyn Target, queues: usize) {
    store(device, mmio::STATUS, 0);
    store(device, mmio::STATUS, 1);
    store(device, mmio::STATUS, 3);
    for select in 0..2 {
        store(device, mmio::DEVICE_FEATURES_SEL, select);
        let features = device.device_load(mmio::DEVICE_FEATURES, 4).unwrap();
        store(device, mmio::DRIVER_FEATURES_SEL, select);
        store(device, mmio::DRIVER_FEATURES, features);
    }
    store(device, mmio::STATUS, 0xb);
    for index in 0..queues {
        store(device, mmio::QUEUE_SEL, index as u64);
        store(device, mmio::QUEUE_NUM, u64::from(QUEUE_SIZE));
        store(
            device,
            mmio::QUEUE_DESC_LOW,
            desc_table(index) & 0xffff_ffff,
        );
        store(device, mmio::QUEUE_DESC_HIGH, desc_table(index) >> 32);
        store(
            device,
            mmio::QUEUE_DRIVER_LOW,
            avail_ring(index) & 0xffff_ffff,
        );
        store(device, mmio::QUEUE_DRIVER_HIGH, avail_ring(index) >> 32);
        store(
            device,
            mmio::QUEUE_DEVICE_LOW,
            used_ring(index) & 0xffff_ffff,
        );
        store(device, mmio::QUEUE_DEVICE_HIGH, used_ring(index) >> 32);
        store(device, mmio::QUEUE_READY, 1);
    }
    store(device, mmio::STATUS, 0xf);
    assert_eq!(device.device_load(mmio::STATUS, 4), Some(0xf));
}

/// Where a correct device may write in a structured case: the used rings, and the buffers
/// that the descriptor tables (as they are before the call) mark device-writable.
fn allowed_regions(memory: &RecordingMemory, queues: usize) -> Vec<(u64, u64)> {
    let mut regions = Vec::new();
    for index in 0..queues {
        regions.push((used_ring(index) + 2, 2 + 8 * u64::from(QUEUE_SIZE)));
        for d in 0..u64::from(QUEUE_SIZE) {
            let at = desc_table(index) + 16 * d;
            let mut raw = [0u8; 16];
            memory.read(GuestPhysAddr(at), &mut raw).unwrap();
            let addr = u64::from_le_bytes(raw[0..8].try_into().unwrap());
            let len = u64::from(u32::from_le_bytes(raw[8..12].try_into().unwrap()));
            let flags = u16::from_le_bytes([raw[12], raw[13]]);
            if flags & VIRTQ_DESC_F_WRITE != 0 {
                regions.push((addr, len));
            }
        }
    }
    regions
}

fn check_writes(memory: &RecordingMemory, allowed: &[(u64, u64)], context: &str) {
    for &(addr, len) in &memory.writes {
        let inside = allowed.iter().any(|&(start, size)| {
            addr >= start && addr.saturating_add(len as u64) <= start.saturating_add(size)
        });
        assert!(
            inside,
            "{context}: device wrote {len} bytes at {addr:#x}, not a writable buffer or used ring"
        );
    }
}

/// The driver side of the fuzzer: posts chains, some well formed and some not.
struct Driver {
    avail_idx: [u16; 2],
}

impl Driver {
    fn post(&mut self, rng: &mut Prng, memory: &mut RecordingMemory, queue: usize) {
        let chains = rng.below(4);
        for _ in 0..chains {
            let head = rng.below(u64::from(QUEUE_SIZE)) as u16;
            let length = 1 + rng.below(5) as u16;
            let mut index = head;
            for i in 0..length {
                let plausible = rng.chance(90);
                let addr = if plausible {
                    RAM_BASE + RING_AREA_BYTES + rng.below(MEMORY_BYTES as u64 - RING_AREA_BYTES)
                } else {
                    rng.next()
                };
                let len = match rng.below(10) {
                    0 => rng.next() as u32,
                    1..=3 => 16,
                    4 => 1,
                    _ => rng.below(2048) as u32,
                };
                let mut flags = if rng.chance(50) {
                    VIRTQ_DESC_F_WRITE
                } else {
                    0
                };
                if rng.chance(3) {
                    flags = rng.next() as u16;
                }
                let last = i + 1 == length;
                let next = if rng.below(100) != 0 {
                    (index + 1 + rng.below(3) as u16) % QUEUE_SIZE
                } else {
                    rng.next() as u16
                };
                if !last {
                    flags |= VIRTQ_DESC_F_NEXT;
                } else if flags & VIRTQ_DESC_F_NEXT != 0 && rng.chance(80) {
                    flags &= !VIRTQ_DESC_F_NEXT;
                }
                let mut raw = [0u8; 16];
                raw[0..8].copy_from_slice(&addr.to_le_bytes());
                raw[8..12].copy_from_slice(&len.to_le_bytes());
                raw[12..14].copy_from_slice(&flags.to_le_bytes());
                raw[14..16].copy_from_slice(&next.to_le_bytes());
                memory.put(desc_table(queue) + 16 * u64::from(index), &raw);
                index = next % QUEUE_SIZE;
            }
            let slot = u64::from(self.avail_idx[queue] % QUEUE_SIZE);
            memory.put(avail_ring(queue) + 4 + 2 * slot, &head.to_le_bytes());
            self.avail_idx[queue] = self.avail_idx[queue].wrapping_add(1);
        }
        let idx = if rng.below(200) == 0 {
            rng.next() as u16
        } else {
            self.avail_idx[queue]
        };
        memory.put(avail_ring(queue) + 2, &idx.to_le_bytes());
        let flags = if rng.chance(20) { 1u16 } else { 0 };
        memory.put(avail_ring(queue), &flags.to_le_bytes());
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Block,
    Net,
    Rng,
}

/// One device under one driver, type-erased so one loop drives all kinds.
trait Target {
    fn device_store(&mut self, offset: u64, size: u8, value: u64) -> bool;
    fn device_load(&mut self, offset: u64, size: u8) -> Option<u64>;
    fn process(&mut self, memory: &mut RecordingMemory);
    /// The device's own input (a frame, entropy), if it has one.
    fn input(&mut self, rng: &mut Prng, memory: &mut RecordingMemory);
    fn interrupt(&self) -> bool;
}

impl Target for VirtioMmio<Block> {
    fn device_store(&mut self, offset: u64, size: u8, value: u64) -> bool {
        self.mmio_store(offset, size, value)
    }
    fn device_load(&mut self, offset: u64, size: u8) -> Option<u64> {
        self.mmio_load(offset, size)
    }
    fn process(&mut self, memory: &mut RecordingMemory) {
        VirtioMmio::process(self, memory);
    }
    fn input(&mut self, _rng: &mut Prng, _memory: &mut RecordingMemory) {}
    fn interrupt(&self) -> bool {
        VirtioMmio::interrupt(self)
    }
}

impl Target for VirtioMmio<Net> {
    fn device_store(&mut self, offset: u64, size: u8, value: u64) -> bool {
        self.mmio_store(offset, size, value)
    }
    fn device_load(&mut self, offset: u64, size: u8) -> Option<u64> {
        self.mmio_load(offset, size)
    }
    fn process(&mut self, memory: &mut RecordingMemory) {
        VirtioMmio::process(self, memory);
        for frame in self.take_transmitted() {
            assert!(
                frame.len() <= FRAME_BYTES_MAX,
                "transmitted an oversized frame"
            );
        }
    }
    fn input(&mut self, rng: &mut Prng, memory: &mut RecordingMemory) {
        let mut frame = vec![0u8; rng.below(FRAME_BYTES_MAX as u64 + 64) as usize];
        rng.fill(&mut frame);
        let _ = self.receive(&frame, memory);
    }
    fn interrupt(&self) -> bool {
        VirtioMmio::interrupt(self)
    }
}

impl Target for VirtioMmio<Rng> {
    fn device_store(&mut self, offset: u64, size: u8, value: u64) -> bool {
        self.mmio_store(offset, size, value)
    }
    fn device_load(&mut self, offset: u64, size: u8) -> Option<u64> {
        self.mmio_load(offset, size)
    }
    fn process(&mut self, memory: &mut RecordingMemory) {
        VirtioMmio::process(self, memory);
    }
    fn input(&mut self, rng: &mut Prng, memory: &mut RecordingMemory) {
        let mut bytes = vec![0u8; rng.below(64) as usize];
        rng.fill(&mut bytes);
        let wanted = self.wants_entropy();
        let taken = self.supply_entropy(&bytes, memory);
        assert!(taken <= bytes.len());
        let _ = wanted;
    }
    fn interrupt(&self) -> bool {
        VirtioMmio::interrupt(self)
    }
}

/// What the fuzzer reached, so a change that makes it shallow shows.
#[derive(Default, Debug)]
struct Coverage {
    completions: u64,
    needs_reset: u64,
    refused_accesses: u64,
}

fn run_case(rng: &mut Prng, case: u64, coverage: &mut Coverage) {
    let kind = match rng.below(3) {
        0 => Kind::Block,
        1 => Kind::Net,
        _ => Kind::Rng,
    };
    let mut memory = RecordingMemory {
        bytes: vec![0; MEMORY_BYTES],
        writes: Vec::new(),
        refused: 0,
    };
    rng.fill(&mut memory.bytes);
    // Structured cases follow the initialisation protocol, so where the device may write is
    // known exactly; chaos cases start from arbitrary register writes.
    let mut structured = rng.chance(85);
    let (mut target, queues): (Box<dyn Target>, usize) = match kind {
        Kind::Block => {
            let mut disk = vec![0u8; 64 * 512];
            rng.fill(&mut disk);
            let mut backend = VecBackend::new(disk);
            backend.fail_io = rng.chance(10);
            let device = VirtioMmio::new(Block::new(Box::new(backend), b"fuzz"));
            (boxed(device, structured, 1), 1)
        }
        Kind::Net => (
            boxed(VirtioMmio::new(Net::new([2, 0, 0, 0, 0, 1])), structured, 2),
            2,
        ),
        Kind::Rng => (boxed(VirtioMmio::new(Rng::new()), structured, 1), 1),
    };
    let mut driver = Driver { avail_idx: [0; 2] };
    if structured {
        // The rings start empty, as a driver leaves them.
        restart(&mut *target, &mut memory, &mut driver, queues);
    }
    for step in 0..STEPS_PER_CASE {
        let context = format!("case {case} ({kind:?}) step {step}");
        let allowed = allowed_regions(&memory, queues);
        memory.writes.clear();
        match rng.below(10) {
            0 if rng.chance(60) => {
                let status = target.device_load(mmio::STATUS, 4).unwrap();
                if status != 0xf {
                    // The driver notices a broken device and starts over, from any state.
                    restart(&mut *target, &mut memory, &mut driver, queues);
                    structured = true;
                    memory.writes.clear();
                }
            }
            0 => {
                // A register write the protocol may not allow; afterwards anything goes.
                let offset = rng.below(0x120);
                let size = [1u8, 2, 4, 8][rng.below(4) as usize];
                let value = if rng.chance(50) {
                    rng.below(16)
                } else {
                    rng.next()
                };
                target.device_store(offset, size, value);
                structured &= offset >= mmio::CONFIG
                    || matches!(offset, mmio::INTERRUPT_ACK | mmio::QUEUE_NOTIFY)
                    || size != 4;
            }
            1 => {
                let offset = rng.below(0x120);
                let size = [1u8, 2, 4, 8][rng.below(4) as usize];
                target.device_load(offset, size);
            }
            2 => {
                let interrupt_status = target.device_load(mmio::INTERRUPT_STATUS, 4).unwrap();
                assert_eq!(target.interrupt(), interrupt_status != 0, "{context}");
                target.device_store(mmio::INTERRUPT_ACK, 4, interrupt_status);
                assert!(
                    !target.interrupt(),
                    "{context}: acknowledged interrupt stays up"
                );
            }
            3 | 4 => {
                if structured {
                    let queue = rng.below(queues as u64) as usize;
                    driver.post(rng, &mut memory, queue);
                } else {
                    let at = rng.below(MEMORY_BYTES as u64 - 16);
                    let mut junk = [0u8; 16];
                    rng.fill(&mut junk);
                    memory.put(RAM_BASE + at, &junk);
                }
                memory.writes.clear();
            }
            5 | 6 => {
                let queue = rng.below(queues as u64 + 1);
                target.device_store(mmio::QUEUE_NOTIFY, 4, queue);
                target.process(&mut memory);
            }
            7 | 8 => target.input(rng, &mut memory),
            _ => target.process(&mut memory),
        }
        if structured {
            check_writes(&memory, &allowed, &context);
        }
    }
    if structured {
        for queue in 0..queues {
            let mut idx = [0u8; 2];
            memory
                .read(GuestPhysAddr(used_ring(queue) + 2), &mut idx)
                .unwrap();
            coverage.completions += u64::from(u16::from_le_bytes(idx));
        }
    }
    let status = target.device_load(mmio::STATUS, 4).unwrap() as u32;
    coverage.needs_reset += u64::from(status & mmio::STATUS_DEVICE_NEEDS_RESET != 0);
    coverage.refused_accesses += memory.refused;
}

fn boxed<D: VirtioDevice + 'static>(
    device: VirtioMmio<D>,
    structured: bool,
    queues: usize,
) -> Box<dyn Target>
where
    VirtioMmio<D>: Target,
{
    let mut device: Box<dyn Target> = Box::new(device);
    if structured {
        initialise(&mut *device, queues);
    }
    device
}

/// Brings a device back after a reset or a protocol break: reset, initialise, empty rings.
fn restart(
    target: &mut dyn Target,
    memory: &mut RecordingMemory,
    driver: &mut Driver,
    queues: usize,
) {
    initialise(target, queues);
    for queue in 0..queues {
        memory.put(avail_ring(queue), &[0; 4]);
        memory.put(used_ring(queue), &[0; 4]);
    }
    driver.avail_idx = [0; 2];
}

#[test]
fn arbitrary_memory_rings_and_registers_never_panic_or_write_out_of_bounds() {
    let seed = std::env::var("VIRTQUEUE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    println!("virtqueue fuzz seed {seed}");
    let mut rng = Prng(seed);
    let mut coverage = Coverage::default();
    for case in 0..CASES {
        run_case(&mut rng, case, &mut coverage);
    }
    println!("{coverage:?}");
    // The fuzzer must get past the ring checks into the device models, and hit the error
    // paths too.
    assert!(coverage.completions > CASES, "{coverage:?}");
    assert!(
        coverage.needs_reset > 0 && coverage.refused_accesses > 0,
        "{coverage:?}"
    );
}
