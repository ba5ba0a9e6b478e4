//! Disk backends for the guest's virtio-blk device: a file, or a file under a copy-on-write
//! overlay that leaves the file untouched (recording and replay start from the same bytes).
//!
//! Disk contents are replicated state, not nondeterministic input, so a failure of the
//! host's storage cannot be shown to the guest (the backup would not see it): it is
//! fail-stop, and the process ends with an epitaph naming the file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use understudy_machine::devices::virtio::block::{BackendError, BlockBackend};

/// Overlay granularity: the guest's writes are kept in chunks of this size.
const OVERLAY_CHUNK_BYTES: u64 = 4096;

fn fail_stop(path: &Path, what: &str, error: std::io::Error) -> ! {
    panic!(
        "fail-stop: host disk {} {what} failed: {error}",
        path.display()
    )
}

/// Opens `path` with `options` if it is a regular file. Anything else is refused before it
/// is opened (opening a FIFO blocks, a device has no length, reading a directory fails
/// later), and the opened file is checked again in case the path changed in between.
pub fn open_regular_file(path: &Path, options: &OpenOptions) -> std::io::Result<File> {
    let not_regular = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a directory, device or pipe); give an image file",
        )
    };
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

fn check_range(len_bytes: u64, offset: u64, len: usize) -> Result<(), BackendError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= len_bytes => Ok(()),
        _ => Err(BackendError::OutOfRange),
    }
}

/// The guest writes straight into the file.
pub struct FileDisk {
    file: File,
    path: PathBuf,
    len_bytes: u64,
}

impl FileDisk {
    pub fn open(path: &Path) -> std::io::Result<FileDisk> {
        let file = open_regular_file(path, OpenOptions::new().read(true).write(true))?;
        let len_bytes = file.metadata()?.len();
        Ok(FileDisk {
            file,
            path: path.to_owned(),
            len_bytes,
        })
    }
}

impl BlockBackend for FileDisk {
    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        check_range(self.len_bytes, offset, buf.len())?;
        self.file
            .read_exact_at(buf, offset)
            .unwrap_or_else(|e| fail_stop(&self.path, "read", e));
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        check_range(self.len_bytes, offset, data.len())?;
        self.file
            .write_all_at(data, offset)
            .unwrap_or_else(|e| fail_stop(&self.path, "write", e));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        self.file
            .sync_data()
            .unwrap_or_else(|e| fail_stop(&self.path, "flush", e));
        Ok(())
    }
}

/// Reads come from the file unless the guest wrote the chunk; writes stay in memory.
pub struct OverlayDisk {
    base: File,
    path: PathBuf,
    len_bytes: u64,
    chunks: BTreeMap<u64, Box<[u8]>>,
}

impl OverlayDisk {
    pub fn open(path: &Path) -> std::io::Result<OverlayDisk> {
        let base = open_regular_file(path, OpenOptions::new().read(true))?;
        let len_bytes = base.metadata()?.len();
        Ok(OverlayDisk {
            base,
            path: path.to_owned(),
            len_bytes,
            chunks: BTreeMap::new(),
        })
    }

    /// Bytes the guest has written so far (whole chunks).
    pub fn overlay_bytes(&self) -> u64 {
        self.chunks.len() as u64 * OVERLAY_CHUNK_BYTES
    }

    fn chunk(&mut self, index: u64) -> &mut [u8] {
        let (base, path, len_bytes) = (&self.base, &self.path, self.len_bytes);
        self.chunks.entry(index).or_insert_with(|| {
            let start = index * OVERLAY_CHUNK_BYTES;
            let len = OVERLAY_CHUNK_BYTES.min(len_bytes - start) as usize;
            let mut chunk = vec![0u8; len].into_boxed_slice();
            base.read_exact_at(&mut chunk, start)
                .unwrap_or_else(|e| fail_stop(path, "read", e));
            chunk
        })
    }
}

impl BlockBackend for OverlayDisk {
    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        check_range(self.len_bytes, offset, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let index = at / OVERLAY_CHUNK_BYTES;
            let within = (at % OVERLAY_CHUNK_BYTES) as usize;
            let take = (OVERLAY_CHUNK_BYTES as usize - within).min(buf.len() - done);
            match self.chunks.get(&index) {
                Some(chunk) => {
                    buf[done..done + take].copy_from_slice(&chunk[within..within + take])
                }
                None => self
                    .base
                    .read_exact_at(&mut buf[done..done + take], at)
                    .unwrap_or_else(|e| fail_stop(&self.path, "read", e)),
            }
            done += take;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        check_range(self.len_bytes, offset, data.len())?;
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let within = (at % OVERLAY_CHUNK_BYTES) as usize;
            let take = (OVERLAY_CHUNK_BYTES as usize - within).min(data.len() - done);
            self.chunk(at / OVERLAY_CHUNK_BYTES)[within..within + take]
                .copy_from_slice(&data[done..done + take]);
            done += take;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_reads_its_own_writes_and_leaves_the_file_untouched() {
        let path = std::env::temp_dir().join(format!("understudy-overlay-{}", std::process::id()));
        let original: Vec<u8> = (0..3 * OVERLAY_CHUNK_BYTES).map(|i| i as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let mut disk = OverlayDisk::open(&path).unwrap();
        disk.write_at(4000, &[0xaa; 200]).unwrap(); // spans two chunks
        let mut read = vec![0u8; 300];
        disk.read_at(3950, &mut read).unwrap();
        assert_eq!(&read[..50], &original[3950..4000]);
        assert!(read[50..250].iter().all(|&b| b == 0xaa));
        assert_eq!(&read[250..], &original[4200..4250]);
        assert_eq!(
            disk.write_at(3 * OVERLAY_CHUNK_BYTES - 1, &[0, 0]),
            Err(BackendError::OutOfRange)
        );
        assert_eq!(std::fs::read(&path).unwrap(), original);
        assert_eq!(disk.overlay_bytes(), 2 * OVERLAY_CHUNK_BYTES);
    }

    /// A directory, a FIFO and a character device, none of them a disk image.
    fn not_regular_files(name: &str) -> Vec<PathBuf> {
        let dir = std::env::temp_dir().join(format!("understudy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
        vec![dir, fifo, PathBuf::from("/dev/zero")]
    }

    fn assert_refused(result: std::io::Result<()>, path: &Path) {
        let error = result.expect_err("refused");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{path:?}");
        assert_eq!(
            error.to_string(),
            "not a regular file (a directory, device or pipe); give an image file"
        );
    }

    #[test]
    fn only_regular_files_open_as_disks() {
        for path in not_regular_files("not-a-disk") {
            assert_refused(FileDisk::open(&path).map(drop), &path);
            assert_refused(OverlayDisk::open(&path).map(drop), &path);
        }
    }

    #[test]
    fn file_disk_writes_reach_the_file() {
        let path = std::env::temp_dir().join(format!("understudy-filedisk-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let mut disk = FileDisk::open(&path).unwrap();
        disk.write_at(512, b"hello").unwrap();
        disk.flush().unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[512..517], b"hello");
        let mut past_end = [0u8; 2];
        assert_eq!(
            disk.read_at(8191, &mut past_end),
            Err(BackendError::OutOfRange)
        );
    }
}
