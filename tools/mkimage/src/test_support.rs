//! Test inputs shared by the unit tests: the smallest kernel and loader mkimage accepts, and a
//! scratch directory that removes itself.

use crate::ImageSpec;
use std::fs;
use std::path::{Path, PathBuf};

pub const CONFIGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs");

/// The smallest ELF the kernel check accepts: a header, one PT_NOTE with both notes.
pub fn fake_kernel() -> Vec<u8> {
    let mut notes = Vec::new();
    for (name, kind, descriptor) in [
        (&b"Xen\0"[..], 18u32, &[0u8; 4][..]),
        (&b"Understudy\0"[..], 1, &[0u8; 8][..]),
    ] {
        notes.extend((name.len() as u32).to_le_bytes());
        notes.extend((descriptor.len() as u32).to_le_bytes());
        notes.extend(kind.to_le_bytes());
        notes.extend(name);
        notes.resize(notes.len().next_multiple_of(4), 0);
        notes.extend(descriptor);
    }
    let mut elf = vec![0u8; 64 + 56];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[16..18].copy_from_slice(&2u16.to_le_bytes());
    elf[18..20].copy_from_slice(&62u16.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes());
    elf[54..56].copy_from_slice(&56u16.to_le_bytes());
    elf[56..58].copy_from_slice(&1u16.to_le_bytes());
    elf[64..68].copy_from_slice(&4u32.to_le_bytes());
    elf[72..80].copy_from_slice(&120u64.to_le_bytes());
    elf[96..104].copy_from_slice(&(notes.len() as u64).to_le_bytes());
    elf.extend(notes);
    elf
}

/// The smallest PE32+ header the loader check accepts.
pub fn fake_loader() -> Vec<u8> {
    let mut pe = vec![0u8; 512];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
    pe[0x98..0x9a].copy_from_slice(&0x20bu16.to_le_bytes());
    pe[0x98 + 68..0x98 + 70].copy_from_slice(&10u16.to_le_bytes());
    pe
}

pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("mkimage-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        fs::write(path.join("kernel.elf"), fake_kernel()).unwrap();
        fs::write(path.join("BOOTX64.EFI"), fake_loader()).unwrap();
        Scratch(path)
    }

    pub fn spec(&self, config: &Path, output: &str) -> ImageSpec {
        ImageSpec {
            loader: self.0.join("BOOTX64.EFI"),
            kernel: self.0.join("kernel.elf"),
            config: config.to_path_buf(),
            guest_kernel: None,
            guest_initrd: None,
            cmdline: None,
            output: self.0.join(output),
            size_bytes: None,
        }
    }

    /// Names in the directory, so a test can see that no partial image is left behind.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
