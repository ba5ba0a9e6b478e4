//! The kernel image as an ELF-64 file (System V gABI, "ELF Header", "Program Header",
//! "Note Section"): its load segments and the notes that name its entries. Used by the UEFI
//! loader (to load it) and by mkimage (to refuse a file that is not our kernel). The file
//! comes from a disk, so every offset is checked and bad input is an error, never a panic.

use core::fmt;

pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;
/// Xen's `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit PVH entry.
pub const NOTE_XEN_PHYS32_ENTRY: u32 = 18;
/// Our note naming the 64-bit entry the UEFI loader jumps to.
pub const NOTE_UNDERSTUDY_START64: u32 = 1;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const PROGRAM_HEADER_BYTES_MIN: usize = 56;

/// Why a file is not a usable kernel image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    NotElf64,
    NotX86_64Executable,
    Truncated,
    ProgramHeadersOutsideFile,
    NoteOutsideFile,
    SegmentOutsideFile,
    SegmentTooHigh { end: u64, limit: u64 },
    NoPvhEntry,
    NoStart64Entry,
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotElf64 => write!(f, "not a little-endian ELF64 file"),
            Self::NotX86_64Executable => write!(f, "not an x86_64 executable"),
            Self::Truncated => write!(f, "the ELF header is truncated"),
            Self::ProgramHeadersOutsideFile => write!(f, "program headers lie outside the file"),
            Self::NoteOutsideFile => write!(f, "a note segment lies outside the file"),
            Self::SegmentOutsideFile => write!(f, "a load segment lies outside the file"),
            Self::SegmentTooHigh { end, limit } => {
                write!(f, "a load segment ends at {end:#x}, above {limit:#x}")
            }
            Self::NoPvhEntry => write!(f, "no PVH entry note"),
            Self::NoStart64Entry => write!(f, "no \"Understudy\" 64-bit entry note"),
        }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// One program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub kind: u32,
    pub offset: u64,
    pub paddr: u64,
    pub file_bytes: u64,
    pub memory_bytes: u64,
}

/// The entries the kernel's notes name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryNotes {
    pub pvh32: Option<u32>,
    pub start64: Option<u64>,
}

/// A checked view of a kernel ELF file.
#[derive(Clone, Copy, Debug)]
pub struct KernelImage<'a> {
    bytes: &'a [u8],
    table: usize,
    entry_bytes: usize,
    count: usize,
}

impl<'a> KernelImage<'a> {
    /// Checks the ELF header and that the program header table lies inside the file.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        if bytes.get(..4) != Some(b"\x7fELF")
            || bytes.get(4) != Some(&2)
            || bytes.get(5) != Some(&1)
        {
            return Err(ElfError::NotElf64);
        }
        if u16_at(bytes, 16) != Some(ET_EXEC) || u16_at(bytes, 18) != Some(EM_X86_64) {
            return Err(ElfError::NotX86_64Executable);
        }
        let table = usize::try_from(u64_at(bytes, 32).ok_or(ElfError::Truncated)?)
            .map_err(|_| ElfError::ProgramHeadersOutsideFile)?;
        let entry_bytes = usize::from(u16_at(bytes, 54).ok_or(ElfError::Truncated)?);
        let count = usize::from(u16_at(bytes, 56).ok_or(ElfError::Truncated)?);
        let inside = table
            .checked_add(count * entry_bytes)
            .is_some_and(|end| end <= bytes.len());
        if (count > 0 && entry_bytes < PROGRAM_HEADER_BYTES_MIN) || !inside {
            return Err(ElfError::ProgramHeadersOutsideFile);
        }
        Ok(KernelImage {
            bytes,
            table,
            entry_bytes,
            count,
        })
    }

    /// Every program header.
    pub fn segments(&self) -> impl Iterator<Item = Segment> + 'a {
        let (bytes, table, entry_bytes) = (self.bytes, self.table, self.entry_bytes);
        (0..self.count).filter_map(move |index| {
            let at = table + index * entry_bytes;
            Some(Segment {
                kind: u32_at(bytes, at)?,
                offset: u64_at(bytes, at + 8)?,
                paddr: u64_at(bytes, at + 24)?,
                file_bytes: u64_at(bytes, at + 32)?,
                memory_bytes: u64_at(bytes, at + 40)?,
            })
        })
    }

    /// The non-empty PT_LOAD segments, each checked to lie inside the file and to end at or
    /// below `paddr_limit`.
    pub fn load_segments(
        &self,
        paddr_limit: u64,
    ) -> Result<impl Iterator<Item = Segment> + 'a, ElfError> {
        let length = self.bytes.len() as u64;
        for segment in self
            .segments()
            .filter(|s| s.kind == PT_LOAD && s.memory_bytes > 0)
        {
            let in_file = segment.file_bytes <= segment.memory_bytes
                && segment
                    .offset
                    .checked_add(segment.file_bytes)
                    .is_some_and(|end| end <= length);
            if !in_file {
                return Err(ElfError::SegmentOutsideFile);
            }
            match segment.paddr.checked_add(segment.memory_bytes) {
                Some(end) if end <= paddr_limit => {}
                end => {
                    return Err(ElfError::SegmentTooHigh {
                        end: end.unwrap_or(u64::MAX),
                        limit: paddr_limit,
                    })
                }
            }
        }
        Ok(self
            .segments()
            .filter(|s| s.kind == PT_LOAD && s.memory_bytes > 0))
    }

    /// The bytes a segment holds in the file (valid for segments `load_segments` accepted).
    pub fn file_bytes(&self, segment: &Segment) -> Option<&'a [u8]> {
        let start = usize::try_from(segment.offset).ok()?;
        let end = start.checked_add(usize::try_from(segment.file_bytes).ok()?)?;
        self.bytes.get(start..end)
    }

    /// Reads the entries named by the Xen PVH note and our 64-bit entry note.
    pub fn entry_notes(&self) -> Result<EntryNotes, ElfError> {
        let mut found = EntryNotes::default();
        for segment in self.segments().filter(|s| s.kind == PT_NOTE) {
            let notes = self.file_bytes(&segment).ok_or(ElfError::NoteOutsideFile)?;
            let mut at = 0usize;
            while at + 12 <= notes.len() {
                let name_bytes = u32_at(notes, at).unwrap_or(0) as usize;
                let descriptor_bytes = u32_at(notes, at + 4).unwrap_or(0) as usize;
                let kind = u32_at(notes, at + 8).unwrap_or(0);
                let name_at = at + 12;
                let Some(descriptor_at) = name_bytes
                    .checked_next_multiple_of(4)
                    .and_then(|n| name_at.checked_add(n))
                else {
                    break;
                };
                let name = notes.get(name_at..name_at.saturating_add(name_bytes));
                match (name, kind, descriptor_bytes) {
                    (Some(b"Xen\0"), NOTE_XEN_PHYS32_ENTRY, 4) => {
                        found.pvh32 = u32_at(notes, descriptor_at)
                    }
                    (Some(b"Xen\0"), NOTE_XEN_PHYS32_ENTRY, 8) => {
                        found.pvh32 =
                            u64_at(notes, descriptor_at).and_then(|e| u32::try_from(e).ok())
                    }
                    (Some(b"Understudy\0"), NOTE_UNDERSTUDY_START64, 8) => {
                        found.start64 = u64_at(notes, descriptor_at)
                    }
                    _ => {}
                }
                match descriptor_bytes
                    .checked_next_multiple_of(4)
                    .and_then(|n| descriptor_at.checked_add(n))
                {
                    Some(next) => at = next,
                    None => break,
                }
            }
        }
        Ok(found)
    }

    /// Checks that the file is our kernel: both entry notes present.
    pub fn check_understudy_kernel(&self) -> Result<EntryNotes, ElfError> {
        let notes = self.entry_notes()?;
        if notes.pvh32.is_none() {
            return Err(ElfError::NoPvhEntry);
        }
        if notes.start64.is_none() {
            return Err(ElfError::NoStart64Entry);
        }
        Ok(notes)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal kernel: ELF header, a PT_NOTE with both notes, and one PT_LOAD of 16 bytes
    /// (8 in the file) at 1 MiB.
    pub(crate) fn fake_kernel() -> Vec<u8> {
        let mut notes = Vec::new();
        for (name, kind, descriptor) in [
            (&b"Xen\0"[..], 18u32, &0x10_0000u32.to_le_bytes()[..]),
            (&b"Understudy\0"[..], 1, &0x10_0100u64.to_le_bytes()[..]),
        ] {
            notes.extend((name.len() as u32).to_le_bytes());
            notes.extend((descriptor.len() as u32).to_le_bytes());
            notes.extend(kind.to_le_bytes());
            notes.extend(name);
            notes.resize(notes.len().next_multiple_of(4), 0);
            notes.extend(descriptor);
        }
        let headers = 64 + 2 * 56;
        let mut elf = vec![0u8; headers];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[16..18].copy_from_slice(&2u16.to_le_bytes());
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&2u16.to_le_bytes());
        let mut header =
            |index: usize, kind: u32, offset: u64, paddr: u64, file: u64, memory: u64| {
                let at = 64 + index * 56;
                elf[at..at + 4].copy_from_slice(&kind.to_le_bytes());
                elf[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
                elf[at + 24..at + 32].copy_from_slice(&paddr.to_le_bytes());
                elf[at + 32..at + 40].copy_from_slice(&file.to_le_bytes());
                elf[at + 40..at + 48].copy_from_slice(&memory.to_le_bytes());
            };
        header(
            0,
            PT_NOTE,
            headers as u64,
            0,
            notes.len() as u64,
            notes.len() as u64,
        );
        let load_at = (headers + notes.len()) as u64;
        header(1, PT_LOAD, load_at, 0x10_0000, 8, 16);
        elf.extend(&notes);
        elf.extend(b"KERNEL!!");
        elf
    }

    #[test]
    fn fake_kernel_has_both_entries_and_one_load_segment() {
        let bytes = fake_kernel();
        let image = KernelImage::parse(&bytes).unwrap();
        assert_eq!(
            image.check_understudy_kernel().unwrap(),
            EntryNotes {
                pvh32: Some(0x10_0000),
                start64: Some(0x10_0100)
            }
        );
        let loads: Vec<Segment> = image.load_segments(1 << 32).unwrap().collect();
        assert_eq!(loads.len(), 1);
        assert_eq!(image.file_bytes(&loads[0]), Some(&b"KERNEL!!"[..]));
        assert_eq!(loads[0].memory_bytes, 16);
    }

    #[test]
    fn segments_above_the_limit_or_outside_the_file_are_refused() {
        let bytes = fake_kernel();
        let image = KernelImage::parse(&bytes).unwrap();
        assert!(matches!(
            image.load_segments(0x10_0008),
            Err(ElfError::SegmentTooHigh { end: 0x10_0010, .. })
        ));
        let truncated = &bytes[..bytes.len() - 4];
        let image = KernelImage::parse(truncated).unwrap();
        assert_eq!(
            image.load_segments(1 << 32).err(),
            Some(ElfError::SegmentOutsideFile)
        );
    }

    #[test]
    fn other_files_are_named_for_what_they_lack() {
        assert_eq!(
            KernelImage::parse(b"MZ\x90\x00").unwrap_err(),
            ElfError::NotElf64
        );
        let mut bytes = fake_kernel();
        bytes[18] = 183; // aarch64
        assert_eq!(
            KernelImage::parse(&bytes).unwrap_err(),
            ElfError::NotX86_64Executable
        );
        let mut bytes = fake_kernel();
        bytes[56] = 200; // 200 program headers do not fit
        assert_eq!(
            KernelImage::parse(&bytes).unwrap_err(),
            ElfError::ProgramHeadersOutsideFile
        );
        let mut bytes = fake_kernel();
        let at = bytes
            .windows(11)
            .position(|w| w == b"Understudy\0")
            .unwrap();
        bytes[at] = b'X';
        assert_eq!(
            KernelImage::parse(&bytes)
                .unwrap()
                .check_understudy_kernel()
                .unwrap_err(),
            ElfError::NoStart64Entry
        );
    }

    #[test]
    fn random_corruption_never_panics() {
        let original = fake_kernel();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut bytes = original.clone();
            for _ in 0..1 + (state >> 60) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = ((state >> 24) as usize) % bytes.len();
                bytes[at] = (state >> 16) as u8;
            }
            if let Ok(image) = KernelImage::parse(&bytes) {
                let _ = image.entry_notes();
                if let Ok(segments) = image.load_segments(1 << 32) {
                    for segment in segments {
                        assert!(image.file_bytes(&segment).is_some());
                    }
                }
            }
        }
    }
}
