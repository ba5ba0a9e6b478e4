//! The shared disk (`disk = shared`): one image both machines open, written only through
//! released outputs of the live replica (VMware FT's shared-disk design).
//!
//! [`SharedDisk`] is the machine's `BlockBackend` on both replicas. The runtime reaches it
//! through `Machine::block_backend_mut` and `BlockBackend::as_any_mut`.
//!
//! - **Live** (primary, solo): a guest write goes into an in-memory overlay, so the guest
//!   reads its own writes at once, and into a queue the runtime submits as outputs of the
//!   [`DISK`](crate::DISK) device (payload: the 8-byte little-endian byte offset, then the
//!   data). The driver writes an output to the image only once it is released (the backup has
//!   acknowledged it), then calls `Replica::disk_written`, which drops the overlay's sectors
//!   unless a later write to them is still outstanding. A guest read is served from the
//!   overlay, else from the image, and the bytes read are queued for the log: the backup
//!   cannot read the image, which the primary may have written since.
//! - **Replaying** (backup): the image is never touched. Reads are served from the logged
//!   read data, in order; an offset or length other than the primary's is a divergence.
//!   Writes go into the overlay too (after go-live the guest must see them) and are matched to
//!   the primary's output markers; the overlay forgets a write once the primary says it
//!   released it, and the node reissues at go-live exactly the writes it may not have.
//! - **Go-live**: the backend turns live; the reissued writes, still in the overlay, are
//!   written to the image by the driver in log order before any write of the new epoch.
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;

use understudy_ft::LogSequence;
use understudy_machine::devices::virtio::block::{BackendError, BlockBackend, SECTOR_BYTES};

/// Bytes of the offset that precedes the data in a disk output and in logged read data.
pub const DISK_OFFSET_BYTES: usize = 8;

/// Whose authority the disk follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskMode {
    /// Reads come from the overlay or the image, and are logged.
    Live,
    /// Reads come from the primary's log; the image is never read.
    Replaying,
}

/// Why a replaying disk could not serve a read as the primary did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskDivergence {
    /// The guest read where the primary's log has no read data (or less than it asked for).
    NoLoggedRead {
        /// The byte offset read.
        offset: u64,
        /// Bytes asked for.
        len: usize,
    },
    /// The logged read is of another place on the disk.
    OtherOffset {
        /// The byte offset this guest read.
        offset: u64,
        /// The byte offset the primary's guest read.
        logged: u64,
    },
}

impl fmt::Display for DiskDivergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskDivergence::NoLoggedRead { offset, len } => write!(
                f,
                "the guest read {len} bytes of the disk at {offset}, and the primary's log holds no such read"
            ),
            DiskDivergence::OtherOffset { offset, logged } => write!(
                f,
                "the guest read the disk at {offset}, and the primary's guest at {logged}"
            ),
        }
    }
}

/// One sector as the guest last wrote it, until the image holds it.
#[derive(Debug)]
struct OverlaySector {
    /// The write that put it here (a serial number of this backend).
    write: u64,
    data: Box<[u8]>,
}

/// A guest write not yet known to be on the image.
#[derive(Debug)]
struct Outstanding {
    write: u64,
    offset: u64,
    len: u64,
    /// Replaying: the position of the primary's output marker, once matched.
    position: Option<LogSequence>,
}

/// Read data waiting for the replaying guest: `data[consumed..]` is for `offset + consumed`.
#[derive(Debug)]
struct LoggedRead {
    offset: u64,
    data: Vec<u8>,
    consumed: usize,
}

/// The shared-disk backend (see the module documentation).
pub struct SharedDisk {
    /// The one image, read only: the driver writes released outputs to it, never this.
    image: Box<dyn BlockBackend + Send>,
    mode: DiskMode,
    overlay: BTreeMap<u64, OverlaySector>,
    next_write: u64,
    outstanding: VecDeque<Outstanding>,
    /// Writes the runtime has not taken yet (`take_writes`), as output payloads.
    new_writes: VecDeque<Vec<u8>>,
    /// Live: reads the runtime has not logged yet (`take_reads`), as (offset, data).
    new_reads: VecDeque<(u64, Vec<u8>)>,
    /// Replaying: the primary's read data not yet served.
    logged_reads: VecDeque<LoggedRead>,
    divergence: Option<DiskDivergence>,
}

impl SharedDisk {
    /// A shared disk over `image`. It starts replaying, so it touches nothing until the
    /// runtime knows this replica is live.
    pub fn new(image: Box<dyn BlockBackend + Send>) -> SharedDisk {
        SharedDisk {
            image,
            mode: DiskMode::Replaying,
            overlay: BTreeMap::new(),
            next_write: 0,
            outstanding: VecDeque::new(),
            new_writes: VecDeque::new(),
            new_reads: VecDeque::new(),
            logged_reads: VecDeque::new(),
            divergence: None,
        }
    }

    /// Live or replaying.
    pub fn mode(&self) -> DiskMode {
        self.mode
    }

    pub(crate) fn set_mode(&mut self, mode: DiskMode) {
        assert!(
            self.logged_reads
                .iter()
                .all(|read| read.consumed == read.data.len()),
            "fail-stop: the disk went live with logged read data unread"
        );
        self.logged_reads.clear();
        self.mode = mode;
    }

    /// Sectors held in memory because the image does not have them yet.
    pub fn overlay_sectors(&self) -> usize {
        self.overlay.len()
    }

    /// Writes not yet on the image (live) or not yet released by the primary (replaying).
    pub fn outstanding_writes(&self) -> usize {
        self.outstanding.len()
    }

    /// The guest's writes since the last call, as `DISK` output payloads, in order.
    pub(crate) fn take_writes(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.new_writes.drain(..)
    }

    /// Live: the data the guest read since the last call, (offset, bytes), in order.
    pub(crate) fn take_reads(&mut self) -> impl Iterator<Item = (u64, Vec<u8>)> + '_ {
        self.new_reads.drain(..)
    }

    /// Replaying: read data from the primary's log, for the guest's next reads.
    pub(crate) fn push_logged_read(&mut self, offset: u64, data: Vec<u8>) {
        self.logged_reads.push_back(LoggedRead {
            offset,
            data,
            consumed: 0,
        });
    }

    /// Replaying: why the last read could not be served, if it could not.
    pub(crate) fn take_divergence(&mut self) -> Option<DiskDivergence> {
        self.divergence.take()
    }

    /// Replaying: the oldest unmatched write belongs to the primary's marker at `position`.
    pub(crate) fn matched(&mut self, position: LogSequence) {
        let write = self
            .outstanding
            .iter_mut()
            .find(|write| write.position.is_none())
            .expect("fail-stop: a disk output marker with no write of this guest to match");
        write.position = Some(position);
    }

    /// Replaying: the primary released its outputs through `through`; their writes are on the
    /// image (the driver writes and syncs a released disk output before it sends anything
    /// more), so their sectors need not be kept.
    pub(crate) fn forget_released(&mut self, through: LogSequence) {
        while let Some(front) = self.outstanding.front() {
            match front.position {
                Some(position) if position <= through => {
                    let front = self.outstanding.pop_front().expect("front exists");
                    self.drop_sectors(&front);
                }
                _ => break,
            }
        }
    }

    /// Live: the driver wrote the write at `offset` of `len` bytes to the image. Released
    /// disk outputs come in the order they were written, so it is the oldest outstanding one.
    pub(crate) fn written(&mut self, offset: u64, len: u64) {
        let front = self
            .outstanding
            .pop_front()
            .expect("fail-stop: the driver wrote a disk output this disk never produced");
        assert!(
            front.offset == offset && front.len == len,
            "fail-stop: the driver wrote {len} bytes at {offset}, the oldest write held is {} at {}",
            front.len,
            front.offset
        );
        self.drop_sectors(&front);
    }

    fn drop_sectors(&mut self, write: &Outstanding) {
        let first = write.offset / SECTOR_BYTES;
        for sector in first..first + write.len / SECTOR_BYTES {
            // A later write to the sector keeps it: that one is not on the image yet.
            if self
                .overlay
                .get(&sector)
                .is_some_and(|kept| kept.write == write.write)
            {
                self.overlay.remove(&sector);
            }
        }
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), BackendError> {
        let end = offset
            .checked_add(len as u64)
            .ok_or(BackendError::OutOfRange)?;
        if end > self.image.len_bytes() {
            return Err(BackendError::OutOfRange);
        }
        // The block device transfers whole sectors only (virtio 1.2 5.2.6.2).
        if !offset.is_multiple_of(SECTOR_BYTES) || !(len as u64).is_multiple_of(SECTOR_BYTES) {
            return Err(BackendError::Io);
        }
        Ok(())
    }

    fn read_live(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let sector_bytes = SECTOR_BYTES as usize;
        for (index, piece) in buf.chunks_mut(sector_bytes).enumerate() {
            let at = offset + (index * sector_bytes) as u64;
            match self.overlay.get(&(at / SECTOR_BYTES)) {
                Some(kept) => piece.copy_from_slice(&kept.data),
                // The backup could not reproduce a storage error: fail-stop.
                None => self.image.read_at(at, piece).unwrap_or_else(|error| {
                    panic!("fail-stop: the shared image could not be read at {at}: {error}")
                }),
            }
        }
        self.new_reads.push_back((offset, buf.to_vec()));
        Ok(())
    }

    fn read_replaying(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let Some(front) = self.logged_reads.front_mut() else {
                self.divergence = Some(DiskDivergence::NoLoggedRead {
                    offset: at,
                    len: buf.len() - done,
                });
                return Err(BackendError::Io);
            };
            let logged = front.offset + front.consumed as u64;
            if logged != at {
                self.divergence = Some(DiskDivergence::OtherOffset { offset: at, logged });
                return Err(BackendError::Io);
            }
            let take = (front.data.len() - front.consumed).min(buf.len() - done);
            buf[done..done + take]
                .copy_from_slice(&front.data[front.consumed..front.consumed + take]);
            front.consumed += take;
            done += take;
            if front.consumed == front.data.len() {
                self.logged_reads.pop_front();
            }
        }
        Ok(())
    }
}

impl BlockBackend for SharedDisk {
    fn len_bytes(&self) -> u64 {
        self.image.len_bytes()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.check(offset, buf.len())?;
        match self.mode {
            DiskMode::Live => self.read_live(offset, buf),
            DiskMode::Replaying => self.read_replaying(offset, buf),
        }
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        self.check(offset, data.len())?;
        let write = self.next_write;
        self.next_write += 1;
        let sector_bytes = SECTOR_BYTES as usize;
        for (index, piece) in data.chunks(sector_bytes).enumerate() {
            self.overlay.insert(
                offset / SECTOR_BYTES + index as u64,
                OverlaySector {
                    write,
                    data: piece.into(),
                },
            );
        }
        self.outstanding.push_back(Outstanding {
            write,
            offset,
            len: data.len() as u64,
            position: None,
        });
        let mut payload = Vec::with_capacity(DISK_OFFSET_BYTES + data.len());
        payload.extend_from_slice(&offset.to_le_bytes());
        payload.extend_from_slice(data);
        self.new_writes.push_back(payload);
        Ok(())
    }

    /// The guest's flush completes at once: its writes are outputs, and an output is durable
    /// before anything released after it leaves (the driver syncs the image per batch of
    /// released writes), which is all a guest can observe of durability.
    fn flush(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        Some(self)
    }
}

/// A `DISK` output or logged read split into its byte offset and data.
pub fn split_disk_payload(payload: &[u8]) -> Option<(u64, &[u8])> {
    let (offset, data) = payload.split_at_checked(DISK_OFFSET_BYTES)?;
    Some((u64::from_le_bytes(offset.try_into().ok()?), data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_machine::devices::virtio::block::VecBackend;

    fn disk() -> SharedDisk {
        let image: Vec<u8> = (0..8 * 512).map(|i| (i / 512) as u8).collect();
        SharedDisk::new(Box::new(VecBackend::new(image)))
    }

    #[test]
    fn a_live_disk_reads_its_own_writes_until_the_image_has_them_and_logs_every_read() {
        let mut disk = disk();
        disk.set_mode(DiskMode::Live);
        disk.write_at(512, &[0xaa; 1024]).unwrap();
        disk.write_at(1024, &[0xbb; 512]).unwrap();
        let mut buf = [0u8; 1536];
        disk.read_at(0, &mut buf).unwrap();
        assert_eq!(buf[..512], [0; 512]);
        assert_eq!(buf[512..1024], [0xaa; 512]);
        assert_eq!(buf[1024..], [0xbb; 512]);
        let reads: Vec<_> = disk.take_reads().collect();
        assert_eq!(reads, [(0, buf.to_vec())]);
        let writes: Vec<_> = disk.take_writes().collect();
        assert_eq!(writes.len(), 2);
        assert_eq!(
            split_disk_payload(&writes[0]),
            Some((512, &[0xaa; 1024][..]))
        );
        // The first write reached the image: sector 1 is dropped, sector 2 is kept for the
        // second write, which has not.
        disk.written(512, 1024);
        assert_eq!(disk.overlay_sectors(), 1);
        disk.read_at(512, &mut buf[..1024]).unwrap();
        assert_eq!(
            buf[..512],
            [1; 512],
            "from the image, which the test did not write"
        );
        assert_eq!(buf[512..1024], [0xbb; 512]);
        disk.written(1024, 512);
        assert_eq!(disk.overlay_sectors(), 0);
    }

    #[test]
    fn a_replaying_disk_serves_logged_reads_in_order_and_never_the_image() {
        let mut disk = disk();
        disk.push_logged_read(512, alloc::vec![7; 1024]);
        let mut buf = [0u8; 512];
        disk.read_at(512, &mut buf).unwrap();
        disk.read_at(1024, &mut buf).unwrap();
        assert_eq!(buf, [7; 512], "the log's bytes, not the image's");
        assert_eq!(disk.read_at(1024, &mut buf), Err(BackendError::Io));
        assert_eq!(
            disk.take_divergence(),
            Some(DiskDivergence::NoLoggedRead {
                offset: 1024,
                len: 512
            })
        );
        disk.push_logged_read(0, alloc::vec![1; 512]);
        assert_eq!(disk.read_at(512, &mut buf), Err(BackendError::Io));
        assert_eq!(
            disk.take_divergence(),
            Some(DiskDivergence::OtherOffset {
                offset: 512,
                logged: 0
            })
        );
    }

    #[test]
    fn a_replaying_disk_forgets_only_writes_the_primary_released() {
        let mut disk = disk();
        disk.write_at(0, &[1; 512]).unwrap();
        disk.write_at(0, &[2; 512]).unwrap();
        disk.write_at(512, &[3; 512]).unwrap();
        disk.matched(LogSequence(10));
        disk.matched(LogSequence(12));
        disk.forget_released(LogSequence(11));
        assert_eq!((disk.outstanding_writes(), disk.overlay_sectors()), (2, 2));
        disk.forget_released(LogSequence(12));
        assert_eq!((disk.outstanding_writes(), disk.overlay_sectors()), (1, 1));
    }
}
