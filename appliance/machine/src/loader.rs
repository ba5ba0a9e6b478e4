//! Guest image formats: RISC-V ELF executables and flat Linux `Image` files.
//!
//! ELF: System V gABI plus the RISC-V ELF psABI (EM_RISCV = 243). Linux `Image`:
//! Documentation/riscv/boot-image-header.rst (magic2 "RSC\x05" at offset 0x38).

use core::fmt;

use alloc::vec::Vec;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_RISCV: u16 = 243;
const PT_LOAD: u32 = 1;
const ELF_HEADER_BYTES: usize = 64;
const PROGRAM_HEADER_BYTES: usize = 56;
const IMAGE_MAGIC2: &[u8; 4] = b"RSC\x05";
const IMAGE_HEADER_BYTES: usize = 64;

/// One piece of a guest image, to be copied to guest physical memory.
#[derive(Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub address: u64,
    pub data: &'a [u8],
    /// Bytes past `data` up to this size are zero (ELF `.bss`; Linux `image_size`).
    pub memory_bytes: u64,
}

/// A parsed guest image.
#[derive(Debug, PartialEq, Eq)]
pub enum GuestImage<'a> {
    /// Entered in M-mode at `entry`, as QEMU does with `-bios none -kernel`.
    Elf {
        entry: u64,
        segments: Vec<Segment<'a>>,
    },
    /// A Linux kernel entered in S-mode at RAM base + `text_offset`.
    LinuxImage {
        text_offset: u64,
        image: Segment<'a>,
    },
}

/// Why a file is not a guest image this machine can start. The file is to blame.
#[derive(Debug, PartialEq, Eq)]
pub enum ImageError {
    UnknownFormat,
    NotRiscV64 { reason: &'static str },
    Truncated { what: &'static str },
    NoLoadableSegments,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::UnknownFormat => {
                write!(f, "not a RISC-V ELF executable or Linux Image file")
            }
            ImageError::NotRiscV64 { reason } => write!(f, "ELF file is not for RV64: {reason}"),
            ImageError::Truncated { what } => write!(f, "file is truncated: {what} is cut off"),
            ImageError::NoLoadableSegments => write!(f, "ELF file has no loadable segments"),
        }
    }
}

impl core::error::Error for ImageError {}

impl<'a> GuestImage<'a> {
    pub fn parse(file: &'a [u8]) -> Result<Self, ImageError> {
        if file.starts_with(ELF_MAGIC) {
            parse_elf(file)
        } else if file.len() >= IMAGE_HEADER_BYTES && &file[0x38..0x3c] == IMAGE_MAGIC2 {
            let text_offset = u64_at(file, 8);
            let image_size = u64_at(file, 16);
            Ok(GuestImage::LinuxImage {
                text_offset,
                image: Segment {
                    address: text_offset,
                    data: file,
                    memory_bytes: image_size.max(file.len() as u64),
                },
            })
        } else {
            Err(ImageError::UnknownFormat)
        }
    }
}

/// Wraps a flat program as an ELF executable that loads at `address` and starts there: the
/// form `Machine::new` takes for built-in guests assembled in Rust.
pub fn elf_executable(address: u64, code: &[u8]) -> Vec<u8> {
    let mut file = alloc::vec![0u8; ELF_HEADER_BYTES + PROGRAM_HEADER_BYTES];
    file[..4].copy_from_slice(ELF_MAGIC);
    file[4] = ELFCLASS64;
    file[5] = ELFDATA2LSB;
    file[6] = 1; // EV_CURRENT
    file[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
    file[18..20].copy_from_slice(&EM_RISCV.to_le_bytes());
    file[20..24].copy_from_slice(&1u32.to_le_bytes());
    file[24..32].copy_from_slice(&address.to_le_bytes());
    file[32..40].copy_from_slice(&(ELF_HEADER_BYTES as u64).to_le_bytes());
    file[52..54].copy_from_slice(&(ELF_HEADER_BYTES as u16).to_le_bytes());
    file[54..56].copy_from_slice(&(PROGRAM_HEADER_BYTES as u16).to_le_bytes());
    file[56..58].copy_from_slice(&1u16.to_le_bytes());
    let header = &mut file[ELF_HEADER_BYTES..];
    header[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
    header[4..8].copy_from_slice(&7u32.to_le_bytes()); // PF_R | PF_W | PF_X
    let offset = (ELF_HEADER_BYTES + PROGRAM_HEADER_BYTES) as u64;
    header[8..16].copy_from_slice(&offset.to_le_bytes());
    header[16..24].copy_from_slice(&address.to_le_bytes());
    header[24..32].copy_from_slice(&address.to_le_bytes());
    header[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    header[40..48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    file.extend_from_slice(code);
    file
}

fn parse_elf(file: &[u8]) -> Result<GuestImage<'_>, ImageError> {
    if file.len() < ELF_HEADER_BYTES {
        return Err(ImageError::Truncated { what: "ELF header" });
    }
    if file[4] != ELFCLASS64 {
        return Err(ImageError::NotRiscV64 {
            reason: "not ELFCLASS64",
        });
    }
    if file[5] != ELFDATA2LSB {
        return Err(ImageError::NotRiscV64 {
            reason: "not little-endian",
        });
    }
    if u16_at(file, 18) != EM_RISCV {
        return Err(ImageError::NotRiscV64 {
            reason: "e_machine is not EM_RISCV",
        });
    }
    if u16_at(file, 16) != ET_EXEC {
        return Err(ImageError::NotRiscV64 {
            reason: "not an executable (ET_EXEC)",
        });
    }
    let entry = u64_at(file, 24);
    let program_headers = u64_at(file, 32);
    let count = u16_at(file, 56) as u64;
    let entry_size = u16_at(file, 54) as u64;
    if entry_size < PROGRAM_HEADER_BYTES as u64 && count > 0 {
        return Err(ImageError::Truncated {
            what: "program header entry",
        });
    }
    let mut segments = Vec::new();
    for index in 0..count {
        let header = program_headers
            .checked_add(index * entry_size)
            .and_then(|start| slice(file, start, PROGRAM_HEADER_BYTES as u64))
            .ok_or(ImageError::Truncated {
                what: "program header table",
            })?;
        if u32_at(header, 0) != PT_LOAD {
            continue;
        }
        let offset = u64_at(header, 8);
        let physical = u64_at(header, 24);
        let file_bytes = u64_at(header, 32);
        let memory_bytes = u64_at(header, 40);
        let data = slice(file, offset, file_bytes).ok_or(ImageError::Truncated {
            what: "segment data",
        })?;
        if memory_bytes == 0 {
            continue;
        }
        segments.push(Segment {
            address: physical,
            data,
            memory_bytes: memory_bytes.max(file_bytes),
        });
    }
    if segments.is_empty() {
        return Err(ImageError::NoLoadableSegments);
    }
    Ok(GuestImage::Elf { entry, segments })
}

fn slice(file: &[u8], start: u64, len: u64) -> Option<&[u8]> {
    let end = start.checked_add(len)?;
    file.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal_elf(machine: u16, load_offset: u64, file_bytes: u64) -> Vec<u8> {
        let mut file = alloc::vec![0u8; 0x100];
        file[..4].copy_from_slice(ELF_MAGIC);
        file[4] = ELFCLASS64;
        file[5] = ELFDATA2LSB;
        file[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        file[18..20].copy_from_slice(&machine.to_le_bytes());
        file[24..32].copy_from_slice(&0x8000_0000u64.to_le_bytes());
        file[32..40].copy_from_slice(&64u64.to_le_bytes());
        file[54..56].copy_from_slice(&(PROGRAM_HEADER_BYTES as u16).to_le_bytes());
        file[56..58].copy_from_slice(&1u16.to_le_bytes());
        let header = &mut file[64..64 + PROGRAM_HEADER_BYTES];
        header[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        header[8..16].copy_from_slice(&load_offset.to_le_bytes());
        header[24..32].copy_from_slice(&0x8000_0000u64.to_le_bytes());
        header[32..40].copy_from_slice(&file_bytes.to_le_bytes());
        header[40..48].copy_from_slice(&(file_bytes + 16).to_le_bytes());
        file
    }

    #[test]
    fn a_riscv_elf_yields_its_entry_and_segments() {
        let file = minimal_elf(EM_RISCV, 0xc0, 0x20);
        let GuestImage::Elf { entry, segments } = GuestImage::parse(&file).unwrap() else {
            panic!("not parsed as ELF");
        };
        assert_eq!(entry, 0x8000_0000);
        assert_eq!(segments[0].data.len(), 0x20);
        assert_eq!(segments[0].memory_bytes, 0x30);
    }

    #[test]
    fn foreign_truncated_and_unknown_files_are_rejected_with_a_reason() {
        let x86 = minimal_elf(62, 0xc0, 0x20);
        assert!(matches!(
            GuestImage::parse(&x86),
            Err(ImageError::NotRiscV64 { .. })
        ));
        let beyond_end = minimal_elf(EM_RISCV, 0xf0, 0x20);
        assert_eq!(
            GuestImage::parse(&beyond_end),
            Err(ImageError::Truncated {
                what: "segment data"
            })
        );
        let overflow = minimal_elf(EM_RISCV, u64::MAX - 4, 0x20);
        assert!(GuestImage::parse(&overflow).is_err());
        assert_eq!(
            GuestImage::parse(b"#!/bin/sh\n"),
            Err(ImageError::UnknownFormat)
        );
        assert_eq!(
            GuestImage::parse(&ELF_MAGIC[..]),
            Err(ImageError::Truncated { what: "ELF header" })
        );
    }

    #[test]
    fn elf_executable_round_trips_through_parse() {
        let file = elf_executable(0x8000_0000, &[1, 2, 3, 4]);
        let GuestImage::Elf { entry, segments } = GuestImage::parse(&file).unwrap() else {
            panic!("not parsed as ELF");
        };
        assert_eq!(entry, 0x8000_0000);
        assert_eq!(
            segments,
            [Segment {
                address: 0x8000_0000,
                data: &[1, 2, 3, 4],
                memory_bytes: 4
            }]
        );
    }

    #[test]
    fn a_linux_image_header_is_recognised_by_magic2() {
        let mut file = alloc::vec![0u8; 0x1000];
        file[8..16].copy_from_slice(&0x20_0000u64.to_le_bytes());
        file[16..24].copy_from_slice(&0x8000u64.to_le_bytes());
        file[0x38..0x3c].copy_from_slice(IMAGE_MAGIC2);
        let GuestImage::LinuxImage { text_offset, image } = GuestImage::parse(&file).unwrap()
        else {
            panic!("not parsed as Image");
        };
        assert_eq!(text_offset, 0x20_0000);
        assert_eq!(image.memory_bytes, 0x8000);
    }
}
