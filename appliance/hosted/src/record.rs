//! Record files: the replication stream of a run saved to a file, which `understudy replay`
//! re-executes as a backup would.
//!
//! Layout: the 16-byte magic, then frames. A frame is a little-endian u32 length, that many
//! bytes of a postcard-encoded `Frame`, and a 32-byte chain hash
//! `SHA-256(previous chain || frame bytes)`, seeded with `SHA-256(magic)`. The first frame is
//! the `Header` (the machine configuration and the images, to rebuild the starting state);
//! then one `Frame::Entry` per `ft::LogEntry` the runtime recorded, in log order (the same
//! postcard encoding as in a `Log` frame on the wire); then `Frame::End`. The chain makes any
//! truncation, corruption or reordering visible at the first damaged frame.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use understudy_ft::wire::PROTOCOL_VERSION;
use understudy_ft::{InstructionCount, LogEntry};

use crate::disk::open_regular_file;

pub const LOG_MAGIC: &[u8; 16] = b"understudy-log\n\0";
/// Bumped on any change to `Frame` or `Header` that old readers cannot decode. (Version 1
/// logged machine inputs of its own kind; version 2 logs the replication stream.)
pub const LOG_VERSION: u32 = 2;
/// No frame is larger: a length beyond it means a damaged file, not a huge frame.
pub const FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024;
const CHAIN_BYTES: usize = 32;
/// The encoding of the entries: the `ft` protocol's (`Header::entries_version`).
pub const ENTRIES_VERSION: u8 = PROTOCOL_VERSION;

/// Which image of the run a file was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageRole {
    Kernel,
    Initrd,
    Disk,
}

/// A file the run started from, and its digest at the start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub role: ImageRole,
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub bytes: u64,
}

/// The machine configuration and images: everything needed to rebuild the starting state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    /// The `ft` protocol version whose `LogEntry` encoding the entries use.
    pub entries_version: u8,
    pub memory_bytes: u64,
    pub instructions_per_tick: u64,
    pub bootargs: String,
    pub net_mac: Option<[u8; 6]>,
    pub entropy: bool,
    pub images: Vec<ImageRef>,
}

/// How the recorded run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordedEnding {
    PowerOff { code: u16 },
    Stopped,
}

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    Header(Header),
    /// One entry of the replication log, as the runtime recorded it.
    Entry(LogEntry),
    /// The run ended at `at`: nothing follows, and replay must reach the same end.
    End {
        at: InstructionCount,
        ending: RecordedEnding,
    },
}

/// Why a log cannot be read. The file is to blame, and the error names where.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read log: {0}")]
    Io(#[from] io::Error),
    #[error("not an understudy record log (bad magic)")]
    BadMagic,
    #[error("log version {found} is not supported (this build reads version {LOG_VERSION})")]
    UnsupportedVersion { found: u32 },
    #[error("log entries of protocol version {found} are not supported (this build reads version {PROTOCOL_VERSION})")]
    UnsupportedEntries { found: u8 },
    #[error("log is truncated in frame {frame} at byte {offset}")]
    Truncated { frame: u64, offset: u64 },
    #[error("log is corrupt at frame {frame} (byte {offset}): {what}")]
    Corrupt {
        frame: u64,
        offset: u64,
        what: &'static str,
    },
    #[error("log does not start with a header frame")]
    NoHeader,
}

fn chain_seed() -> [u8; CHAIN_BYTES] {
    Sha256::digest(LOG_MAGIC).into()
}

fn chain_next(previous: &[u8; CHAIN_BYTES], frame: &[u8]) -> [u8; CHAIN_BYTES] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(frame);
    hasher.finalize().into()
}

/// Appends frames to a log file.
pub struct LogWriter {
    out: BufWriter<File>,
    chain: [u8; CHAIN_BYTES],
}

impl LogWriter {
    pub fn create(path: &Path, header: Header) -> io::Result<LogWriter> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(LOG_MAGIC)?;
        let mut writer = LogWriter {
            out,
            chain: chain_seed(),
        };
        writer.append(&Frame::Header(header))?;
        Ok(writer)
    }

    pub fn append(&mut self, frame: &Frame) -> io::Result<()> {
        let bytes = postcard::to_stdvec(frame).map_err(io::Error::other)?;
        assert!(
            bytes.len() as u64 <= u64::from(FRAME_BYTES_MAX),
            "log frame over FRAME_BYTES_MAX"
        );
        self.chain = chain_next(&self.chain, &bytes);
        self.out.write_all(&(bytes.len() as u32).to_le_bytes())?;
        self.out.write_all(&bytes)?;
        self.out.write_all(&self.chain)
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()
    }
}

/// Reads a log frame by frame, checking the chain.
pub struct LogReader {
    input: BufReader<File>,
    chain: [u8; CHAIN_BYTES],
    frame: u64,
    offset: u64,
    pub header: Header,
}

impl LogReader {
    pub fn open(path: &Path) -> Result<LogReader, LogError> {
        let mut input = BufReader::new(File::open(path)?);
        let mut magic = [0u8; 16];
        if input.read_exact(&mut magic).is_err() || &magic != LOG_MAGIC {
            return Err(LogError::BadMagic);
        }
        let mut reader = LogReader {
            input,
            chain: chain_seed(),
            frame: 0,
            offset: LOG_MAGIC.len() as u64,
            header: placeholder_header(),
        };
        let Some((bytes, frame, offset)) = reader.next_bytes()? else {
            return Err(LogError::NoHeader);
        };
        // The variant and the version lead the header, whatever the version: read them first,
        // so a log of another version is named as such rather than as undecodable.
        match postcard::take_from_bytes::<(u32, u32)>(&bytes) {
            Ok(((0, version), _)) if version != LOG_VERSION => {
                return Err(LogError::UnsupportedVersion { found: version })
            }
            Ok(((0, _), _)) => {}
            _ => return Err(LogError::NoHeader),
        }
        match decode(&bytes, frame, offset)? {
            Frame::Header(header) => {
                if header.entries_version != ENTRIES_VERSION {
                    return Err(LogError::UnsupportedEntries {
                        found: header.entries_version,
                    });
                }
                reader.header = header;
                Ok(reader)
            }
            _ => Err(LogError::NoHeader),
        }
    }

    /// The next frame, `None` at a clean end of file.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, LogError> {
        match self.next_bytes()? {
            Some((bytes, frame, offset)) => decode(&bytes, frame, offset).map(Some),
            None => Ok(None),
        }
    }

    /// The next frame's bytes, chain checked, with its number and offset.
    fn next_bytes(&mut self) -> Result<Option<(Vec<u8>, u64, u64)>, LogError> {
        let (frame, offset) = (self.frame, self.offset);
        let mut length = [0u8; 4];
        match read_full(&mut self.input, &mut length)? {
            0 => return Ok(None),
            4 => {}
            _ => return Err(LogError::Truncated { frame, offset }),
        }
        let length = u32::from_le_bytes(length);
        if length > FRAME_BYTES_MAX {
            return Err(LogError::Corrupt {
                frame,
                offset,
                what: "frame length out of range",
            });
        }
        let mut bytes = vec![0u8; length as usize];
        let mut chain = [0u8; CHAIN_BYTES];
        if read_full(&mut self.input, &mut bytes)? != bytes.len()
            || read_full(&mut self.input, &mut chain)? != CHAIN_BYTES
        {
            return Err(LogError::Truncated { frame, offset });
        }
        let expected = chain_next(&self.chain, &bytes);
        if chain != expected {
            return Err(LogError::Corrupt {
                frame,
                offset,
                what: "chain hash mismatch",
            });
        }
        self.chain = chain;
        self.frame += 1;
        self.offset += 4 + u64::from(length) + CHAIN_BYTES as u64;
        Ok(Some((bytes, frame, offset)))
    }
}

fn decode(bytes: &[u8], frame: u64, offset: u64) -> Result<Frame, LogError> {
    postcard::from_bytes(bytes).map_err(|_| LogError::Corrupt {
        frame,
        offset,
        what: "undecodable frame",
    })
}

fn placeholder_header() -> Header {
    Header {
        version: LOG_VERSION,
        entries_version: ENTRIES_VERSION,
        memory_bytes: 0,
        instructions_per_tick: 0,
        bootargs: String::new(),
        net_mac: None,
        entropy: false,
        images: Vec::new(),
    }
}

/// Reads until `buffer` is full or end of file; returns the bytes read.
fn read_full(input: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// SHA-256 of a file's contents, streamed. Only regular files: a log header or a command
/// line naming a device or a pipe would otherwise hash forever or block.
pub fn file_sha256(path: &Path) -> io::Result<([u8; 32], u64)> {
    let mut input = BufReader::new(open_regular_file(path, OpenOptions::new().read(true))?);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize().into(), total))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_ft::{DeviceId, Record};

    fn console_byte(at: u64, byte: u8) -> Frame {
        Frame::Entry(LogEntry {
            at: InstructionCount(at),
            record: Record::DeviceInput {
                device: DeviceId(1),
                bytes: vec![byte],
            },
        })
    }

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("run.log");
        let header = Header {
            bootargs: "console=ttyS0".into(),
            ..placeholder_header()
        };
        let mut writer = LogWriter::create(&path, header).unwrap();
        for i in 0..10u64 {
            writer
                .append(&console_byte(i * 100, b'a' + i as u8))
                .unwrap();
        }
        writer
            .append(&Frame::End {
                at: InstructionCount(1000),
                ending: RecordedEnding::PowerOff { code: 0 },
            })
            .unwrap();
        writer.finish().unwrap();
        path
    }

    fn read_all(path: &Path) -> Result<Vec<Frame>, LogError> {
        let mut reader = LogReader::open(path)?;
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("understudy-record-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn frames_read_back_in_order_with_the_header() {
        let path = sample(&temp_dir("roundtrip"));
        let reader = LogReader::open(&path).unwrap();
        assert_eq!(reader.header.bootargs, "console=ttyS0");
        let frames = read_all(&path).unwrap();
        assert_eq!(frames.len(), 11);
        assert_eq!(frames[3], console_byte(300, b'd'));
    }

    #[test]
    fn a_log_of_another_version_is_named_as_such() {
        let path = temp_dir("version").join("old.log");
        let header = Header {
            version: 1,
            ..placeholder_header()
        };
        LogWriter::create(&path, header).unwrap().finish().unwrap();
        assert!(matches!(
            LogReader::open(&path),
            Err(LogError::UnsupportedVersion { found: 1 })
        ));
    }

    #[test]
    fn truncation_is_reported_at_the_frame_where_it_happens() {
        let path = sample(&temp_dir("truncated"));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        match read_all(&path) {
            Err(LogError::Truncated { frame: 11, .. }) => {}
            other => panic!("expected truncation in frame 11, got {other:?}"),
        }
    }

    #[test]
    fn a_flipped_byte_is_reported_at_its_frame() {
        let path = sample(&temp_dir("corrupt"));
        let mut bytes = std::fs::read(&path).unwrap();
        // Frame 0 is the header; find the third input frame's payload and flip a bit in it.
        let mut offset = LOG_MAGIC.len();
        for _ in 0..4 {
            let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            offset += 4 + length + CHAIN_BYTES;
        }
        bytes[offset + 5] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let error = read_all(&path).unwrap_err();
        assert!(
            matches!(
                error,
                LogError::Corrupt { frame: 4, .. } | LogError::Truncated { frame: 4, .. }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("frame 4"), "{error}");
    }

    #[test]
    fn a_file_that_is_not_a_log_is_refused() {
        let path = temp_dir("magic").join("not.log");
        std::fs::write(&path, b"hello world, this is not a log").unwrap();
        assert!(matches!(LogReader::open(&path), Err(LogError::BadMagic)));
    }
}
