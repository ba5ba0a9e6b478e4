//! The virtio block device (virtio 1.2 section 5.2) over a `BlockBackend`.
//!
//! Requests complete synchronously inside `process`: disk contents are replicated state, not
//! a nondeterministic input, so a backup that replays the same requests at the same
//! instructions holds the same disk. Every request the device cannot carry out, whatever the
//! driver got wrong, completes with VIRTIO_BLK_S_IOERR or VIRTIO_BLK_S_UNSUPP; only a chain
//! with no byte to put the status in sets DEVICE_NEEDS_RESET.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use super::queue::{DescriptorChain, Queue};
use super::{read_config_bytes, GuestMemory, QueueWork, VirtioDevice, DEVICE_ID_BLOCK};
use crate::state::{RestoreError, StateReader, StateWriter};

/// Feature bits (5.2.3).
pub const VIRTIO_BLK_F_SIZE_MAX: u64 = 1 << 1;
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

/// Request types (5.2.6).
pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

/// Request status (5.2.6).
pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Sectors are 512 bytes whatever the block size (5.2.6: "sector ... 512-byte").
pub const SECTOR_BYTES: u64 = 512;
/// QueueNumMax of the one request queue.
pub const BLOCK_QUEUE_SIZE: u16 = 256;
/// seg_max: data descriptors per request, leaving room for header and status as QEMU does.
pub const BLOCK_SEGMENTS_MAX: u32 = BLOCK_QUEUE_SIZE as u32 - 2;
/// size_max: bytes per data descriptor.
pub const BLOCK_SEGMENT_BYTES_MAX: u32 = 64 * 1024;
/// The largest request the driver can build within seg_max and size_max; larger ones are
/// refused with IOERR, so one request never stalls the machine for long.
pub const BLOCK_REQUEST_DATA_BYTES_MAX: u64 =
    BLOCK_SEGMENTS_MAX as u64 * BLOCK_SEGMENT_BYTES_MAX as u64;
/// Data moves between the backend and guest memory through a bounce buffer of this size.
pub const BLOCK_BOUNCE_BYTES: usize = 64 * 1024;
/// The GET_ID answer is 20 bytes, not NUL-terminated if all are used (5.2.6).
pub const BLOCK_ID_BYTES: usize = 20;

/// The write log merges its ranges when it holds this many, so a guest that writes
/// scattered sectors between two `take_write_log` calls cannot grow it without bound.
pub const DISK_WRITE_LOG_RANGES_COMPACT_AT: usize = 64 * 1024;

/// `struct virtio_blk_req` header: type, reserved, sector (5.2.6).
const REQUEST_HEADER_BYTES: u64 = 16;
/// Configuration space fields we fill (5.2.4): capacity, size_max, seg_max.
const CONFIG_BYTES: usize = 16;

const REQUEST_QUEUE: usize = 0;

/// Why a backend could not carry out an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// The host's storage failed.
    Io,
    /// The access reaches past the end of the disk.
    OutOfRange,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Io => write!(f, "disk input/output error"),
            BackendError::OutOfRange => write!(f, "disk access past the end of the image"),
        }
    }
}

impl core::error::Error for BackendError {}

/// The disk behind the device: the hosted program implements it over a file.
pub trait BlockBackend {
    fn len_bytes(&self) -> u64;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError>;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError>;
    fn flush(&mut self) -> Result<(), BackendError>;

    /// The backend as `Any`, so that a runtime that installed a backend of its own type can
    /// reach it again behind the machine (`Machine::block_backend_mut`; the replica's shared
    /// disk). `None`, the default, for backends nobody needs to reach.
    fn as_any_mut(&mut self) -> Option<&mut dyn core::any::Any> {
        None
    }
}

/// A disk in memory (tests, and images small enough to hold).
#[derive(Clone, Debug, Default)]
pub struct VecBackend {
    pub bytes: Vec<u8>,
    /// Every access fails with `BackendError::Io` while set.
    pub fail_io: bool,
    pub flushes: u64,
}

impl VecBackend {
    pub fn new(bytes: Vec<u8>) -> Self {
        VecBackend {
            bytes,
            fail_io: false,
            flushes: 0,
        }
    }

    fn range(&self, offset: u64, len: usize) -> Result<core::ops::Range<usize>, BackendError> {
        if self.fail_io {
            return Err(BackendError::Io);
        }
        let end = offset
            .checked_add(len as u64)
            .ok_or(BackendError::OutOfRange)?;
        if end > self.bytes.len() as u64 {
            return Err(BackendError::OutOfRange);
        }
        Ok(offset as usize..end as usize)
    }
}

impl BlockBackend for VecBackend {
    fn len_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let range = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let range = self.range(offset, data.len())?;
        self.bytes[range].copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        if self.fail_io {
            return Err(BackendError::Io);
        }
        self.flushes += 1;
        Ok(())
    }
}

/// The block device model.
pub struct Block {
    backend: Box<dyn BlockBackend + Send>,
    capacity_sectors: u64,
    id: [u8; BLOCK_ID_BYTES],
    bounce: Vec<u8>,
    /// Requests completed with an error status (for the driver's statistics; deterministic).
    pub errors: u64,
    /// Sector ranges (start..end) the guest wrote since the log started or was last taken;
    /// `None` while the log is off. Host bookkeeping, not guest state: not saved.
    write_log: Option<Vec<Range<u64>>>,
}

impl Block {
    /// A disk of `backend.len_bytes() / 512` sectors (a trailing partial sector is not
    /// visible) answering GET_ID with `id` (truncated to 20 bytes).
    pub fn new(backend: Box<dyn BlockBackend + Send>, id: &[u8]) -> Self {
        let capacity_sectors = backend.len_bytes() / SECTOR_BYTES;
        let mut id_bytes = [0u8; BLOCK_ID_BYTES];
        let len = id.len().min(BLOCK_ID_BYTES);
        id_bytes[..len].copy_from_slice(&id[..len]);
        Block {
            backend,
            capacity_sectors,
            id: id_bytes,
            bounce: vec![0; BLOCK_BOUNCE_BYTES],
            errors: 0,
            write_log: None,
        }
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    pub fn backend(&self) -> &dyn BlockBackend {
        &*self.backend
    }

    pub fn backend_mut(&mut self) -> &mut dyn BlockBackend {
        &mut *self.backend
    }

    /// Starts (or restarts, forgetting what it held) recording the sectors the guest writes,
    /// whatever the backend.
    pub fn start_write_log(&mut self) {
        self.write_log = Some(Vec::new());
    }

    /// The sector ranges written since `start_write_log` or the previous call, sorted, with
    /// overlapping and adjacent ranges merged; empty while the log is off. A request that
    /// failed part way counts as written: some of its sectors may have reached the disk.
    pub fn take_write_log(&mut self) -> Vec<Range<u64>> {
        match &mut self.write_log {
            Some(log) => {
                let mut ranges = core::mem::take(log);
                merge_ranges(&mut ranges);
                ranges
            }
            None => Vec::new(),
        }
    }

    pub fn stop_write_log(&mut self) {
        self.write_log = None;
    }

    fn note_write(&mut self, sectors: Range<u64>) {
        if let Some(log) = &mut self.write_log {
            if sectors.is_empty() {
                return;
            }
            log.push(sectors);
            if log.len() >= DISK_WRITE_LOG_RANGES_COMPACT_AT {
                merge_ranges(log);
            }
        }
    }

    fn config(&self) -> [u8; CONFIG_BYTES] {
        let mut config = [0u8; CONFIG_BYTES];
        config[0..8].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        config[8..12].copy_from_slice(&BLOCK_SEGMENT_BYTES_MAX.to_le_bytes());
        config[12..16].copy_from_slice(&BLOCK_SEGMENTS_MAX.to_le_bytes());
        config
    }

    /// Carries out one request; returns (status, bytes written into the writable buffers
    /// before the status byte).
    fn execute(&mut self, chain: &DescriptorChain, memory: &mut dyn GuestMemory) -> (u8, u64) {
        if !chain.is_well_ordered() {
            return (VIRTIO_BLK_S_IOERR, 0);
        }
        let readable = chain.readable_len();
        // The status byte is the last writable byte; the caller checked there is one.
        let writable_data = chain.writable_len() - 1;
        let mut header = [0u8; REQUEST_HEADER_BYTES as usize];
        if chain.read_at(memory, 0, &mut header).is_err() {
            return (VIRTIO_BLK_S_IOERR, 0);
        }
        let request_type = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        match request_type {
            VIRTIO_BLK_T_IN if readable == REQUEST_HEADER_BYTES => {
                match self.check_range(sector, writable_data) {
                    Some(offset) => (
                        self.read(chain, memory, offset, writable_data),
                        writable_data,
                    ),
                    None => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            VIRTIO_BLK_T_OUT if writable_data == 0 => {
                let data = readable - REQUEST_HEADER_BYTES;
                match self.check_range(sector, data) {
                    Some(offset) => {
                        self.note_write(sector..sector + data / SECTOR_BYTES);
                        (self.write(chain, memory, offset, data), 0)
                    }
                    None => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            VIRTIO_BLK_T_FLUSH if readable == REQUEST_HEADER_BYTES && writable_data == 0 => {
                match self.backend.flush() {
                    Ok(()) => (VIRTIO_BLK_S_OK, 0),
                    Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            VIRTIO_BLK_T_GET_ID if readable == REQUEST_HEADER_BYTES => {
                let len = writable_data.min(BLOCK_ID_BYTES as u64) as usize;
                match chain.write_at(memory, 0, &self.id[..len]) {
                    Ok(()) => (VIRTIO_BLK_S_OK, len as u64),
                    Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_FLUSH | VIRTIO_BLK_T_GET_ID => {
                // A known request with buffers of the wrong direction or size.
                (VIRTIO_BLK_S_IOERR, 0)
            }
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        }
    }

    /// The disk offset of a `len`-byte transfer at `sector`, if it is whole sectors, no
    /// larger than the request limit and inside the disk (5.2.6.2: the device fails such
    /// requests).
    fn check_range(&self, sector: u64, len: u64) -> Option<u64> {
        if !len.is_multiple_of(SECTOR_BYTES) || len > BLOCK_REQUEST_DATA_BYTES_MAX {
            return None;
        }
        let end_sector = sector.checked_add(len / SECTOR_BYTES)?;
        (end_sector <= self.capacity_sectors).then_some(sector * SECTOR_BYTES)
    }

    fn read(
        &mut self,
        chain: &DescriptorChain,
        memory: &mut dyn GuestMemory,
        offset: u64,
        len: u64,
    ) -> u8 {
        let mut done = 0u64;
        while done < len {
            let piece = (len - done).min(BLOCK_BOUNCE_BYTES as u64) as usize;
            if self
                .backend
                .read_at(offset + done, &mut self.bounce[..piece])
                .is_err()
                || chain.write_at(memory, done, &self.bounce[..piece]).is_err()
            {
                return VIRTIO_BLK_S_IOERR;
            }
            done += piece as u64;
        }
        VIRTIO_BLK_S_OK
    }

    fn write(
        &mut self,
        chain: &DescriptorChain,
        memory: &mut dyn GuestMemory,
        offset: u64,
        len: u64,
    ) -> u8 {
        let mut done = 0u64;
        while done < len {
            let piece = (len - done).min(BLOCK_BOUNCE_BYTES as u64) as usize;
            if chain
                .read_at(
                    memory,
                    REQUEST_HEADER_BYTES + done,
                    &mut self.bounce[..piece],
                )
                .is_err()
                || self
                    .backend
                    .write_at(offset + done, &self.bounce[..piece])
                    .is_err()
            {
                return VIRTIO_BLK_S_IOERR;
            }
            done += piece as u64;
        }
        VIRTIO_BLK_S_OK
    }
}

/// Sorts `ranges` and merges the ones that overlap or touch.
fn merge_ranges(ranges: &mut Vec<Range<u64>>) {
    ranges.sort_unstable_by_key(|range| range.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges.drain(..) {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    *ranges = merged;
}

impl VirtioDevice for Block {
    fn device_id(&self) -> u32 {
        DEVICE_ID_BLOCK
    }

    fn device_features(&self) -> u64 {
        VIRTIO_BLK_F_SIZE_MAX | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[BLOCK_QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn process(
        &mut self,
        queues: &mut [Queue],
        _features: u64,
        memory: &mut dyn GuestMemory,
    ) -> QueueWork {
        let queue = &mut queues[REQUEST_QUEUE];
        let mut work = QueueWork::default();
        if !queue.has_work() {
            return work;
        }
        let mut used = false;
        loop {
            let chain = match queue.pop(memory) {
                Ok(Some(chain)) => chain,
                Ok(None) => {
                    queue.clear_work();
                    break;
                }
                Err(_) => {
                    work.needs_reset = true;
                    return work;
                }
            };
            let writable = chain.writable_len();
            if writable == 0 {
                // Nowhere to put a status: the device cannot answer this request (5.2.6).
                work.needs_reset = true;
                return work;
            }
            let (status, data_written) = self.execute(&chain, memory);
            if status != VIRTIO_BLK_S_OK {
                self.errors += 1;
            }
            let status_written = chain.write_at(memory, writable - 1, &[status]).is_ok();
            if !status_written {
                work.needs_reset = true;
                return work;
            }
            // 2.7.8: len is the number of bytes written, data plus the status byte.
            let len = (data_written + 1).min(u64::from(u32::MAX)) as u32;
            if queue.add_used(memory, chain.head, len).is_err() {
                work.needs_reset = true;
                return work;
            }
            used = true;
        }
        if used {
            match queue.interrupts_suppressed(memory) {
                Ok(suppressed) => work.notify_driver = !suppressed,
                Err(_) => work.needs_reset = true,
            }
        }
        work
    }

    fn reset(&mut self) {}

    fn write_state(&self, out: &mut StateWriter) {
        out.u64(self.capacity_sectors);
        out.bytes(&self.id);
        out.u64(self.errors);
    }

    /// Requests complete inside `process`, so nothing is ever in flight between runs: the
    /// model's state is its error count, plus its identity (size, GET_ID answer).
    type Saved = u64;

    fn save(&self, out: &mut StateWriter) {
        self.write_state(out);
    }

    fn parse_saved(&self, input: &mut StateReader) -> Result<u64, RestoreError> {
        input.expect_u64(self.capacity_sectors, "disk size in sectors")?;
        let id: [u8; BLOCK_ID_BYTES] = input.array()?;
        if id != self.id {
            let first_word = |id: &[u8; BLOCK_ID_BYTES]| {
                u64::from_le_bytes(id[..8].try_into().expect("8 bytes"))
            };
            return Err(RestoreError::Mismatch {
                what: "disk id",
                expected: first_word(&self.id),
                found: first_word(&id),
            });
        }
        input.u64()
    }

    fn restore_saved(&mut self, errors: u64) {
        self.errors = errors;
    }
}

#[cfg(test)]
mod tests {
    use super::super::mmio::{VirtioMmio, CONFIG};
    use super::super::test_driver::{
        acknowledge_interrupt, initialise, notify, TestMemory, TestQueue, RAM_BASE,
    };
    use super::*;

    const DISK_SECTORS: u64 = 64;
    const HEADER: u64 = RAM_BASE + 0x10000;
    const DATA: u64 = RAM_BASE + 0x20000;
    const STATUS: u64 = RAM_BASE + 0x30000;

    struct Fixture {
        device: VirtioMmio<Block>,
        memory: TestMemory,
        queue: TestQueue,
    }

    fn disk_pattern() -> Vec<u8> {
        (0..DISK_SECTORS * SECTOR_BYTES)
            .map(|i| (i * 7 % 251) as u8)
            .collect()
    }

    fn setup_with(backend: VecBackend) -> Fixture {
        let mut device = VirtioMmio::new(Block::new(Box::new(backend), b"understudy-disk"));
        let memory = TestMemory::new(1 << 20);
        let queue = TestQueue::new(RAM_BASE, 16);
        initialise(&mut device, core::slice::from_ref(&queue));
        Fixture {
            device,
            memory,
            queue,
        }
    }

    fn setup() -> Fixture {
        setup_with(VecBackend::new(disk_pattern()))
    }

    impl Fixture {
        fn header(&mut self, request_type: u32, sector: u64) {
            let mut header = [0u8; 16];
            header[0..4].copy_from_slice(&request_type.to_le_bytes());
            header[8..16].copy_from_slice(&sector.to_le_bytes());
            self.memory.poke(HEADER, &header);
            self.memory.poke(STATUS, &[0xff]);
        }

        /// Submits a chain, kicks, processes; returns (used len, status byte).
        fn submit(&mut self, buffers: &[(u64, u32, bool)]) -> (u32, u8) {
            let head = self.queue.add_chain(&mut self.memory, buffers);
            notify(&mut self.device, 0);
            self.device.process(&mut self.memory);
            let used = self.queue.used(&self.memory);
            assert_eq!(used.len(), 1, "one completion");
            assert_eq!(used[0].0, u32::from(head));
            (used[0].1, self.memory.peek(STATUS, 1)[0])
        }
    }

    fn read_disk(device: &mut VirtioMmio<Block>, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        device
            .device_mut()
            .backend_mut()
            .read_at(offset, &mut buf)
            .unwrap();
        buf
    }

    #[test]
    fn capacity_size_max_and_seg_max_in_config_space_5_2_4() {
        let mut f = setup();
        assert_eq!(f.device.mmio_load(CONFIG, 4), Some(DISK_SECTORS));
        assert_eq!(f.device.mmio_load(CONFIG, 8), Some(DISK_SECTORS));
        assert_eq!(
            f.device.mmio_load(CONFIG + 8, 4),
            Some(u64::from(BLOCK_SEGMENT_BYTES_MAX))
        );
        assert_eq!(
            f.device.mmio_load(CONFIG + 12, 4),
            Some(u64::from(BLOCK_SEGMENTS_MAX))
        );
        assert_eq!(f.device.mmio_load(CONFIG + 0x40, 4), Some(0));
    }

    #[test]
    fn read_spanning_descriptors_returns_disk_data_5_2_6() {
        let mut f = setup();
        f.header(VIRTIO_BLK_T_IN, 3);
        let (len, status) = f.submit(&[
            (HEADER, 16, false),
            (DATA, 512, true),
            (DATA + 0x1000, 512, true),
            (STATUS, 1, true),
        ]);
        assert_eq!((len, status), (1025, VIRTIO_BLK_S_OK));
        let expected = disk_pattern();
        assert_eq!(f.memory.peek(DATA, 512), &expected[3 * 512..4 * 512]);
        assert_eq!(
            f.memory.peek(DATA + 0x1000, 512),
            &expected[4 * 512..5 * 512]
        );
        assert_eq!(acknowledge_interrupt(&mut f.device), 1);
    }

    #[test]
    fn write_reaches_the_backend_and_flush_flushes_it() {
        let mut f = setup();
        f.memory.poke(DATA, &[0x5a; 1024]);
        f.header(VIRTIO_BLK_T_OUT, 10);
        let (len, status) =
            f.submit(&[(HEADER, 16, false), (DATA, 1024, false), (STATUS, 1, true)]);
        assert_eq!((len, status), (1, VIRTIO_BLK_S_OK));
        assert_eq!(read_disk(&mut f.device, 10 * 512, 1024), vec![0x5a; 1024]);
        f.header(VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            f.submit(&[(HEADER, 16, false), (STATUS, 1, true)]).1,
            VIRTIO_BLK_S_OK
        );
    }

    #[test]
    fn header_and_status_may_share_descriptors_with_data() {
        // 2.6.4: no assumptions about framing. Header and data in one readable descriptor.
        let mut f = setup();
        let mut request = vec![0u8; 16 + 512];
        request[0..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
        request[8..16].copy_from_slice(&1u64.to_le_bytes());
        request[16..].fill(0x33);
        f.memory.poke(HEADER, &request);
        f.memory.poke(STATUS, &[0xff]);
        let (_, status) = f.submit(&[(HEADER, 16 + 512, false), (STATUS, 1, true)]);
        assert_eq!(status, VIRTIO_BLK_S_OK);
        assert_eq!(read_disk(&mut f.device, 512, 512), vec![0x33; 512]);
    }

    #[test]
    fn get_id_answers_20_bytes() {
        let mut f = setup();
        f.header(VIRTIO_BLK_T_GET_ID, 0);
        let (len, status) = f.submit(&[(HEADER, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
        assert_eq!((len, status), (21, VIRTIO_BLK_S_OK));
        assert_eq!(&f.memory.peek(DATA, 20)[..15], b"understudy-disk");
    }

    #[test]
    fn unknown_request_type_is_unsupported() {
        let mut f = setup();
        f.header(11, 0); // DISCARD, not offered.
        assert_eq!(
            f.submit(&[(HEADER, 16, false), (STATUS, 1, true)]).1,
            VIRTIO_BLK_S_UNSUPP
        );
    }

    #[test]
    fn read_past_the_end_of_the_disk_is_ioerr() {
        let mut f = setup();
        f.header(VIRTIO_BLK_T_IN, DISK_SECTORS - 1);
        let (len, status) = f.submit(&[(HEADER, 16, false), (DATA, 1024, true), (STATUS, 1, true)]);
        assert_eq!((len, status), (1, VIRTIO_BLK_S_IOERR));
        f.header(VIRTIO_BLK_T_IN, u64::MAX);
        assert_eq!(
            f.submit(&[(HEADER, 16, false), (DATA, 512, true), (STATUS, 1, true)])
                .1,
            VIRTIO_BLK_S_IOERR
        );
    }

    #[test]
    fn partial_sector_transfer_is_ioerr() {
        let mut f = setup();
        f.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            f.submit(&[(HEADER, 16, false), (DATA, 100, true), (STATUS, 1, true)])
                .1,
            VIRTIO_BLK_S_IOERR
        );
    }

    #[test]
    fn oversized_request_is_ioerr_without_touching_the_disk() {
        let backend = VecBackend::new(vec![0; 2 * BLOCK_REQUEST_DATA_BYTES_MAX as usize]);
        let mut f = setup_with(backend);
        f.memory = TestMemory::new(2 << 20);
        f.header(VIRTIO_BLK_T_OUT, 0);
        // Fourteen descriptors aliasing all of memory: 28 MiB, past the limit.
        let mut buffers = vec![(HEADER, 16, false)];
        buffers.extend([(RAM_BASE, 2 << 20, false); 14]);
        buffers.push((STATUS, 1, true));
        const { assert!(14 * (2 << 20) > BLOCK_REQUEST_DATA_BYTES_MAX) };
        assert_eq!(f.submit(&buffers).1, VIRTIO_BLK_S_IOERR);
        assert_eq!(read_disk(&mut f.device, 0, 4096), vec![0; 4096]);
        // Exactly at the limit is allowed.
        let block = f.device.device();
        assert_eq!(block.check_range(0, BLOCK_REQUEST_DATA_BYTES_MAX), Some(0));
        assert_eq!(
            block.check_range(0, BLOCK_REQUEST_DATA_BYTES_MAX + 512),
            None
        );
    }

    #[test]
    fn data_buffer_outside_guest_memory_is_ioerr() {
        let mut f = setup();
        f.header(VIRTIO_BLK_T_IN, 0);
        let (_, status) = f.submit(&[(HEADER, 16, false), (0x1000, 512, true), (STATUS, 1, true)]);
        assert_eq!(status, VIRTIO_BLK_S_IOERR);
        assert_eq!(f.memory.refused_writes(), 1);
        assert!(!f.device.needs_reset());
    }

    #[test]
    fn wrong_direction_is_ioerr() {
        let mut f = setup();
        // A read whose data buffer is device-readable.
        f.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            f.submit(&[(HEADER, 16, false), (DATA, 512, false), (STATUS, 1, true)])
                .1,
            VIRTIO_BLK_S_IOERR
        );
        // A write whose data buffer is device-writable.
        f.header(VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            f.submit(&[(HEADER, 16, false), (DATA, 512, true), (STATUS, 1, true)])
                .1,
            VIRTIO_BLK_S_IOERR
        );
        // Readable after writable (2.7.4.2).
        f.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            f.submit(&[
                (HEADER, 16, false),
                (DATA, 512, true),
                (DATA + 0x1000, 16, false),
                (STATUS, 1, true)
            ])
            .1,
            VIRTIO_BLK_S_IOERR
        );
    }

    #[test]
    fn short_header_is_ioerr() {
        let mut f = setup();
        f.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            f.submit(&[(HEADER, 8, false), (STATUS, 1, true)]).1,
            VIRTIO_BLK_S_IOERR
        );
    }

    #[test]
    fn backend_failure_is_ioerr() {
        let mut backend = VecBackend::new(disk_pattern());
        backend.fail_io = true;
        let mut f = setup_with(backend);
        f.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            f.submit(&[(HEADER, 16, false), (DATA, 512, true), (STATUS, 1, true)])
                .1,
            VIRTIO_BLK_S_IOERR
        );
        f.header(VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            f.submit(&[(HEADER, 16, false), (STATUS, 1, true)]).1,
            VIRTIO_BLK_S_IOERR
        );
        assert_eq!(f.device.device().errors, 2);
    }

    #[test]
    fn chain_without_a_status_byte_sets_needs_reset() {
        let mut f = setup();
        f.header(VIRTIO_BLK_T_IN, 0);
        f.queue.add_chain(&mut f.memory, &[(HEADER, 16, false)]);
        notify(&mut f.device, 0);
        f.device.process(&mut f.memory);
        assert!(f.device.needs_reset());
        assert!(f.queue.used(&f.memory).is_empty());
    }

    #[test]
    fn nothing_happens_until_the_driver_notifies() {
        let mut f = setup();
        f.header(VIRTIO_BLK_T_IN, 0);
        f.queue.add_chain(
            &mut f.memory,
            &[(HEADER, 16, false), (DATA, 512, true), (STATUS, 1, true)],
        );
        f.device.process(&mut f.memory);
        assert!(f.queue.used(&f.memory).is_empty(), "no notify, no work");
        notify(&mut f.device, 0);
        f.device.process(&mut f.memory);
        assert_eq!(f.queue.used(&f.memory).len(), 1);
    }

    fn write_sectors(f: &mut Fixture, sector: u64, count: u32) -> u8 {
        f.header(VIRTIO_BLK_T_OUT, sector);
        let bytes = count * SECTOR_BYTES as u32;
        f.submit(&[(HEADER, 16, false), (DATA, bytes, false), (STATUS, 1, true)])
            .1
    }

    #[test]
    fn the_write_log_returns_sorted_merged_sector_ranges_since_the_last_take() {
        let mut f = setup();
        assert_eq!(write_sectors(&mut f, 1, 1), VIRTIO_BLK_S_OK);
        f.device.device_mut().start_write_log();
        assert_eq!(write_sectors(&mut f, 20, 2), VIRTIO_BLK_S_OK);
        assert_eq!(write_sectors(&mut f, 4, 2), VIRTIO_BLK_S_OK);
        assert_eq!(write_sectors(&mut f, 6, 1), VIRTIO_BLK_S_OK);
        assert_eq!(write_sectors(&mut f, 21, 3), VIRTIO_BLK_S_OK);
        assert_eq!(write_sectors(&mut f, 40, 1), VIRTIO_BLK_S_OK);
        assert_eq!(
            write_sectors(&mut f, DISK_SECTORS, 1),
            VIRTIO_BLK_S_IOERR,
            "past the end: refused before any byte moves, so not logged"
        );
        f.header(VIRTIO_BLK_T_IN, 50);
        f.submit(&[(HEADER, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        assert_eq!(
            f.device.device_mut().take_write_log(),
            vec![4..7, 20..24, 40..41]
        );
        assert_eq!(f.device.device_mut().take_write_log(), vec![]);
        assert_eq!(write_sectors(&mut f, 63, 1), VIRTIO_BLK_S_OK);
        assert_eq!(f.device.device_mut().take_write_log(), vec![63..64]);
        f.device.device_mut().stop_write_log();
        assert_eq!(write_sectors(&mut f, 0, 1), VIRTIO_BLK_S_OK);
        assert_eq!(f.device.device_mut().take_write_log(), vec![]);
    }

    #[test]
    fn merge_keeps_disjoint_ranges_and_joins_touching_ones() {
        let mut ranges = vec![9..12, 0..1, 1..3, 5..6, 10..11, 12..13];
        merge_ranges(&mut ranges);
        assert_eq!(ranges, vec![0..3, 5..6, 9..13]);
    }

    fn saved(device: &VirtioMmio<Block>) -> Vec<u8> {
        let mut out = StateWriter::default();
        device.save(&mut out);
        out.bytes
    }

    #[test]
    fn saved_state_restores_into_a_fresh_device_on_the_same_disk() {
        let mut f = setup();
        f.header(VIRTIO_BLK_T_IN, DISK_SECTORS);
        f.submit(&[(HEADER, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        assert_eq!(f.device.device().errors, 1);
        let bytes = saved(&f.device);
        let mut fresh = VirtioMmio::new(Block::new(
            Box::new(VecBackend::new(disk_pattern())),
            b"understudy-disk",
        ));
        let parsed = fresh
            .parse_saved(&mut StateReader::new(&bytes))
            .expect("same disk");
        fresh.restore_saved(parsed);
        assert_eq!(saved(&fresh), bytes);
        // The restored queue continues where the old one stopped.
        f.device = fresh;
        f.memory.poke(DATA, &[0x11; 512]);
        assert_eq!(write_sectors(&mut f, 2, 1), VIRTIO_BLK_S_OK);
        assert_eq!(read_disk(&mut f.device, 2 * 512, 512), vec![0x11; 512]);
    }

    #[test]
    fn saved_state_of_another_disk_or_damaged_bytes_is_refused() {
        let f = setup();
        let bytes = saved(&f.device);
        let other = VirtioMmio::new(Block::new(
            Box::new(VecBackend::new(vec![0; 2 * 4096])),
            b"understudy-disk",
        ));
        assert_eq!(
            other.parse_saved(&mut StateReader::new(&bytes)).err(),
            Some(RestoreError::Mismatch {
                what: "disk size in sectors",
                expected: 16,
                found: DISK_SECTORS
            })
        );
        let other_id = VirtioMmio::new(Block::new(
            Box::new(VecBackend::new(disk_pattern())),
            b"another-disk",
        ));
        assert!(matches!(
            other_id.parse_saved(&mut StateReader::new(&bytes)),
            Err(RestoreError::Mismatch {
                what: "disk id",
                ..
            })
        ));
        let mut status = bytes.clone();
        status[4] = 5;
        assert_eq!(
            f.device.parse_saved(&mut StateReader::new(&status)).err(),
            Some(RestoreError::Invalid {
                what: "virtio status",
                value: 5
            })
        );
        for len in 0..bytes.len() {
            assert!(f
                .device
                .parse_saved(&mut StateReader::new(&bytes[..len]))
                .is_err());
        }
    }
}
