//! The guest's disk: `understudy_machine`'s `BlockBackend` over one of the appliance's
//! virtio-blk disks, and the check that keeps the appliance's own boot disk from the guest.
//!
//! Errors are sorted by who is to blame. An access outside the disk is the guest's doing: the
//! same log replayed on a backup asks for the same access, so it is refused with an error the
//! guest sees (`BackendError::OutOfRange`), and the appliance runs on. An error from the host's
//! own disk is not: a backup replaying the log would not meet it, and a guest that saw it would
//! diverge from its backup, so it stops the appliance with an epitaph (fail-stop) and the
//! backup takes over.

use crate::hal::KernelHal;
use alloc::vec;
use alloc::vec::Vec;
use understudy_machine::devices::virtio::{BackendError, BlockBackend};
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::SomeTransport;

/// A virtio-blk disk of the appliance, over PCI or virtio-mmio.
pub type Disk = VirtIOBlk<KernelHal, SomeTransport<'static>>;

/// Sectors moved per device request. The guest's requests reach the backend in pieces of at
/// most the machine's 64 KiB bounce buffer; this bounds one request of ours the same way.
const SECTORS_PER_REQUEST_MAX: usize = 128;
/// The partition type GUID of an EFI System Partition (UEFI 2.10 section 5.3.3, table 5.7) in
/// its on-disk byte order: C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
const ESP_TYPE_GUID: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];
/// GPT partition entries examined when looking for an ESP; mkimage writes the ESP first.
const GPT_ENTRIES_CHECKED_MAX: u32 = 128;

/// Whether `disk` holds a GPT with an EFI System Partition: the disk the appliance booted
/// from (mkimage's image), which must never be handed to the guest.
pub fn is_boot_disk(disk: &mut Disk) -> bool {
    let mut header = [0u8; SECTOR_SIZE];
    // The GPT header is at LBA 1 (UEFI 2.10 section 5.3.2).
    if disk.read_blocks(1, &mut header).is_err() || &header[..8] != b"EFI PART" {
        return false;
    }
    let field_u64 = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
    let field_u32 = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
    let entries_lba = field_u64(72);
    let entries = field_u32(80).min(GPT_ENTRIES_CHECKED_MAX);
    let entry_bytes = field_u32(84) as usize;
    if !(128..=SECTOR_SIZE).contains(&entry_bytes) || SECTOR_SIZE % entry_bytes != 0 {
        // Not a GPT we understand; treat it as the boot disk rather than risk overwriting it.
        return true;
    }
    let per_sector = (SECTOR_SIZE / entry_bytes) as u32;
    let mut sector = [0u8; SECTOR_SIZE];
    for index in 0..entries {
        if index % per_sector == 0 {
            let lba = entries_lba + u64::from(index / per_sector);
            if disk.read_blocks(lba as usize, &mut sector).is_err() {
                return true;
            }
        }
        let at = (index % per_sector) as usize * entry_bytes;
        if sector[at..at + 16] == ESP_TYPE_GUID {
            return true;
        }
    }
    false
}

/// The guest's disk: byte accesses mapped onto whole-sector virtio-blk requests.
pub struct GuestDisk {
    disk: Disk,
    len_bytes: u64,
    /// Whole sectors for the partial first and last sector of unaligned accesses.
    bounce: Vec<u8>,
}

// SAFETY: the kernel runs on one CPU with interrupts masked, so the disk is only ever used by
// the one thread of control that owns the machine; `Machine::attach_disk` asks for `Send`
// because hosted drivers may move the machine between threads.
unsafe impl Send for GuestDisk {}

impl GuestDisk {
    pub fn new(disk: Disk) -> Self {
        let len_bytes = disk.capacity() * SECTOR_SIZE as u64;
        GuestDisk {
            disk,
            len_bytes,
            bounce: vec![0; SECTORS_PER_REQUEST_MAX * SECTOR_SIZE],
        }
    }

    /// Refuses an access that does not lie wholly inside the disk: the guest asked for it, so
    /// it gets the error. Every access that passes names sectors the disk has.
    fn check(&self, offset: u64, len: usize) -> Result<(), BackendError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len_bytes => Ok(()),
            _ => Err(BackendError::OutOfRange),
        }
    }
}

/// Stops the appliance after its own disk failed `operation`, an access in range.
fn host_disk_failed(operation: core::fmt::Arguments, error: virtio_drivers::Error) -> ! {
    crate::fail(format_args!(
        "host disk {operation} failed: {error}; a guest that saw the error would diverge from \
         its backup, so the appliance stops: check or replace the disk"
    ))
}

/// One piece of an access at `offset` with `remaining` bytes left: its first sector, the
/// byte offset into that sector, and how many bytes of the access it covers (the piece spans
/// at most `SECTORS_PER_REQUEST_MAX` sectors).
fn piece(offset: u64, remaining: usize) -> (usize, usize, usize) {
    let sector = (offset / SECTOR_SIZE as u64) as usize;
    let skip = (offset % SECTOR_SIZE as u64) as usize;
    let take = remaining.min(SECTORS_PER_REQUEST_MAX * SECTOR_SIZE - skip);
    (sector, skip, take)
}

/// Bytes of whole sectors that hold `take` bytes starting `skip` bytes into the first one.
fn span_bytes(skip: usize, take: usize) -> usize {
    (skip + take).div_ceil(SECTOR_SIZE) * SECTOR_SIZE
}

impl BlockBackend for GuestDisk {
    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    fn read_at(&mut self, mut offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.check(offset, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let (sector, skip, take) = piece(offset, buf.len() - done);
            let span = span_bytes(skip, take);
            if let Err(error) = self.disk.read_blocks(sector, &mut self.bounce[..span]) {
                host_disk_failed(
                    format_args!("read of {} sectors at sector {sector}", span / SECTOR_SIZE),
                    error,
                );
            }
            buf[done..done + take].copy_from_slice(&self.bounce[skip..skip + take]);
            done += take;
            offset += take as u64;
        }
        Ok(())
    }

    fn write_at(&mut self, mut offset: u64, data: &[u8]) -> Result<(), BackendError> {
        self.check(offset, data.len())?;
        let mut done = 0;
        while done < data.len() {
            let (sector, skip, take) = piece(offset, data.len() - done);
            let span = span_bytes(skip, take);
            // A partial first or last sector keeps its other bytes: read it first.
            if skip != 0 || take != span {
                if let Err(error) = self.disk.read_blocks(sector, &mut self.bounce[..span]) {
                    host_disk_failed(
                        format_args!("read of {} sectors at sector {sector}", span / SECTOR_SIZE),
                        error,
                    );
                }
            }
            self.bounce[skip..skip + take].copy_from_slice(&data[done..done + take]);
            if let Err(error) = self.disk.write_blocks(sector, &self.bounce[..span]) {
                host_disk_failed(
                    format_args!("write of {} sectors at sector {sector}", span / SECTOR_SIZE),
                    error,
                );
            }
            done += take;
            offset += take as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        if let Err(error) = self.disk.flush() {
            host_disk_failed(format_args!("flush"), error);
        }
        Ok(())
    }
}
