//! What the boot loader tells the kernel: the PVH start-of-day structure `hvm_start_info`
//! (Xen `public/arch-x86/hvm/start_info.h`, also built by our UEFI loader) or the multiboot2
//! information structure (Multiboot2 specification section 3.6).
//!
//! Parsing reads physical memory through [`PhysMemory`], so the host tests can feed it
//! hand-built and random structures; every walk is bounded, and bad input is an error, never
//! a panic or an endless loop.

use crate::PhysRange;
use core::fmt;

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// The multiboot2 loader's `%eax` on entry (Multiboot2 specification 3.3).
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36d7_6289;
/// RAM regions we keep; more are ignored (a PC has a dozen).
pub const MEMORY_REGIONS_MAX: usize = 64;
/// Memory-map entries we look at, bounding the walk over a corrupt count.
pub const MEMORY_MAP_ENTRIES_MAX: u32 = 1024;
/// Memory-map entry type for usable RAM (`XEN_HVM_MEMMAP_TYPE_RAM`, the E820 numbering;
/// multiboot2 uses the same value).
pub const MEMORY_TYPE_RAM: u32 = 1;
/// Longest command line we read, in bytes.
pub const COMMAND_LINE_BYTES_MAX: u64 = 4096;
/// Boot modules we keep: the role config, the guest kernel and the guest initrd, and one spare.
pub const MODULES_MAX: usize = 4;
/// Longest module name (its command line) we read, in bytes.
pub const MODULE_NAME_BYTES_MAX: u64 = 256;
/// Largest multiboot2 information structure we accept, in bytes.
pub const MULTIBOOT2_BYTES_MAX: u32 = 1 << 20;

/// Size of `struct hvm_start_info` (version 1) and of its list entries.
const START_INFO_BYTES: u64 = 56;
const MODULE_ENTRY_BYTES: u64 = 32;
const MEMORY_MAP_ENTRY_BYTES: u64 = 24;

/// Read access to physical memory.
pub trait PhysMemory {
    /// Fills `buffer` from `address`; false when that memory cannot be read.
    fn read(&self, address: u64, buffer: &mut [u8]) -> bool;

    fn read_u32(&self, address: u64) -> Option<u32> {
        let mut bytes = [0u8; 4];
        self.read(address, &mut bytes)
            .then(|| u32::from_le_bytes(bytes))
    }

    fn read_u64(&self, address: u64) -> Option<u64> {
        let mut bytes = [0u8; 8];
        self.read(address, &mut bytes)
            .then(|| u64::from_le_bytes(bytes))
    }

    /// The range of the NUL-terminated string at `start`, at most `max` bytes long.
    fn string(&self, start: u64, max: u64) -> Option<PhysRange> {
        let mut length = 0;
        let mut byte = [0u8; 1];
        while length < max {
            if !self.read(start + length, &mut byte) {
                return None;
            }
            if byte[0] == 0 {
                break;
            }
            length += 1;
        }
        Some(PhysRange {
            start,
            end: start + length,
        })
    }
}

/// Why the boot information cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    NoStartInfo,
    Unreadable { address: u64 },
    BadMagic(u32),
    NoMemoryMap { version: u32 },
    Multiboot2TooLarge { bytes: u32 },
    Multiboot2NoMemoryMap,
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStartInfo => write!(
                f,
                "no boot information: boot by PVH, multiboot2 or our UEFI loader"
            ),
            Self::Unreadable { address } => {
                write!(f, "boot information at {address:#x} is outside memory")
            }
            Self::BadMagic(magic) => write!(f, "hvm_start_info magic {magic:#x} is wrong"),
            Self::NoMemoryMap { version } => {
                write!(
                    f,
                    "hvm_start_info version {version} has no memory map (need version 1)"
                )
            }
            Self::Multiboot2TooLarge { bytes } => {
                write!(
                    f,
                    "multiboot2 information of {bytes} bytes is implausibly large"
                )
            }
            Self::Multiboot2NoMemoryMap => {
                write!(f, "multiboot2 information has no memory map tag (type 6)")
            }
        }
    }
}

/// One module the boot loader loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootModule {
    pub range: PhysRange,
    /// The module's command line, which our loaders use as its name.
    pub name: Option<PhysRange>,
}

/// What the boot loader told us, as physical ranges.
#[derive(Clone, Debug)]
pub struct BootInfo {
    pub start_info: PhysRange,
    ram: [PhysRange; MEMORY_REGIONS_MAX],
    ram_count: usize,
    /// The first module (QEMU `-initrd`), where the role config may arrive.
    pub initrd: Option<PhysRange>,
    pub modules: [Option<BootModule>; MODULES_MAX],
    pub command_line: Option<PhysRange>,
    pub module_list: Option<PhysRange>,
    pub memory_map: PhysRange,
}

impl BootInfo {
    fn new(start_info: PhysRange, memory_map: PhysRange) -> Self {
        BootInfo {
            start_info,
            ram: [PhysRange::EMPTY; MEMORY_REGIONS_MAX],
            ram_count: 0,
            initrd: None,
            modules: [None; MODULES_MAX],
            command_line: None,
            module_list: None,
            memory_map,
        }
    }

    fn add_ram(&mut self, address: u64, length: u64) {
        if self.ram_count < MEMORY_REGIONS_MAX && length > 0 {
            self.ram[self.ram_count] = PhysRange {
                start: address,
                end: address.saturating_add(length),
            };
            self.ram_count += 1;
        }
    }

    fn add_module(&mut self, module: BootModule) {
        if self.initrd.is_none() && !module.range.is_empty() {
            self.initrd = Some(module.range);
        }
        if let Some(slot) = self.modules.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(module);
        }
    }

    /// The usable RAM regions.
    pub fn ram(&self) -> &[PhysRange] {
        &self.ram[..self.ram_count]
    }

    /// The module whose name is `name` (our loaders name the guest payload `guest-kernel` and
    /// `guest-initrd`).
    pub fn module_named(&self, memory: &impl PhysMemory, name: &str) -> Option<PhysRange> {
        self.modules.iter().flatten().find_map(|module| {
            let range = module.name?;
            if range.len() != name.len() as u64 {
                return None;
            }
            let mut buffer = [0u8; MODULE_NAME_BYTES_MAX as usize];
            let buffer = &mut buffer[..name.len()];
            (memory.read(range.start, buffer) && buffer == name.as_bytes()).then_some(module.range)
        })
    }

    /// Ranges the heap must not overlap: everything the boot loader handed us.
    pub fn reserved(&self) -> [Option<PhysRange>; 5 + 2 * MODULES_MAX] {
        let mut reserved = [None; 5 + 2 * MODULES_MAX];
        reserved[..5].copy_from_slice(&[
            Some(self.start_info),
            self.initrd,
            self.command_line,
            self.module_list,
            Some(self.memory_map),
        ]);
        for (index, module) in self.modules.iter().flatten().enumerate() {
            reserved[5 + 2 * index] = Some(module.range);
            reserved[6 + 2 * index] = module.name;
        }
        reserved
    }
}

/// Reads an `hvm_start_info` (version 1, with memory map) at `paddr`.
pub fn parse_hvm_start_info(
    memory: &impl PhysMemory,
    paddr: u64,
) -> Result<BootInfo, BootInfoError> {
    if paddr == 0 {
        return Err(BootInfoError::NoStartInfo);
    }
    let field32 = |offset: u64| {
        memory
            .read_u32(paddr + offset)
            .ok_or(BootInfoError::Unreadable { address: paddr })
    };
    let field64 = |offset: u64| {
        memory
            .read_u64(paddr + offset)
            .ok_or(BootInfoError::Unreadable { address: paddr })
    };
    let magic = field32(0)?;
    if magic != START_INFO_MAGIC {
        return Err(BootInfoError::BadMagic(magic));
    }
    let version = field32(4)?;
    let modules_count = field32(12)?;
    let module_list = field64(16)?;
    let command_line = field64(24)?;
    let memory_map_paddr = field64(40)?;
    let memory_map_entries = field32(48)?.min(MEMORY_MAP_ENTRIES_MAX);
    if version < 1 || memory_map_paddr == 0 {
        return Err(BootInfoError::NoMemoryMap { version });
    }
    let mut boot = BootInfo::new(
        PhysRange {
            start: paddr,
            end: paddr + START_INFO_BYTES,
        },
        PhysRange {
            start: memory_map_paddr,
            end: memory_map_paddr
                .saturating_add(u64::from(memory_map_entries) * MEMORY_MAP_ENTRY_BYTES),
        },
    );
    for index in 0..u64::from(memory_map_entries) {
        let entry = memory_map_paddr.saturating_add(index * MEMORY_MAP_ENTRY_BYTES);
        let unreadable = BootInfoError::Unreadable { address: entry };
        let address = memory.read_u64(entry).ok_or(unreadable)?;
        let size = memory.read_u64(entry + 8).ok_or(unreadable)?;
        if memory.read_u32(entry + 16).ok_or(unreadable)? == MEMORY_TYPE_RAM {
            boot.add_ram(address, size);
        }
    }
    if modules_count > 0 && module_list != 0 {
        let count = u64::from(modules_count).min(MODULES_MAX as u64);
        boot.module_list = Some(PhysRange {
            start: module_list,
            end: module_list + count * MODULE_ENTRY_BYTES,
        });
        for index in 0..count {
            let entry = module_list + index * MODULE_ENTRY_BYTES;
            let unreadable = BootInfoError::Unreadable { address: entry };
            let start = memory.read_u64(entry).ok_or(unreadable)?;
            let size = memory.read_u64(entry + 8).ok_or(unreadable)?;
            let name_paddr = memory.read_u64(entry + 16).ok_or(unreadable)?;
            let name = if name_paddr == 0 {
                None
            } else {
                memory.string(name_paddr, MODULE_NAME_BYTES_MAX)
            };
            boot.add_module(BootModule {
                range: PhysRange {
                    start,
                    end: start.saturating_add(size),
                },
                name,
            });
        }
    }
    if command_line != 0 {
        boot.command_line = memory.string(command_line, COMMAND_LINE_BYTES_MAX);
    }
    Ok(boot)
}

/// Reads a multiboot2 information structure at `paddr`: the memory map (tag 6), the modules
/// (tag 3) and the command line (tag 1).
pub fn parse_multiboot2(memory: &impl PhysMemory, paddr: u64) -> Result<BootInfo, BootInfoError> {
    const TAG_END: u32 = 0;
    const TAG_COMMAND_LINE: u32 = 1;
    const TAG_MODULE: u32 = 3;
    const TAG_MEMORY_MAP: u32 = 6;
    if paddr == 0 {
        return Err(BootInfoError::NoStartInfo);
    }
    let total = memory
        .read_u32(paddr)
        .ok_or(BootInfoError::Unreadable { address: paddr })?;
    if total > MULTIBOOT2_BYTES_MAX {
        return Err(BootInfoError::Multiboot2TooLarge { bytes: total });
    }
    let end = paddr + u64::from(total);
    let mut boot = BootInfo::new(
        PhysRange { start: paddr, end },
        PhysRange { start: paddr, end },
    );
    let mut seen_memory_map = false;
    let mut tag = paddr + 8;
    while tag + 8 <= end {
        let unreadable = BootInfoError::Unreadable { address: tag };
        let kind = memory.read_u32(tag).ok_or(unreadable)?;
        let size = u64::from(memory.read_u32(tag + 4).ok_or(unreadable)?);
        if kind == TAG_END || size < 8 || tag + size > end {
            break;
        }
        match kind {
            TAG_COMMAND_LINE => boot.command_line = memory.string(tag + 8, size - 8),
            TAG_MODULE if size >= 16 => {
                let start = u64::from(memory.read_u32(tag + 8).ok_or(unreadable)?);
                let module_end = u64::from(memory.read_u32(tag + 12).ok_or(unreadable)?);
                let name = memory.string(tag + 16, size - 16);
                boot.add_module(BootModule {
                    range: PhysRange {
                        start,
                        end: module_end.max(start),
                    },
                    name,
                });
            }
            TAG_MEMORY_MAP if size >= 16 => {
                seen_memory_map = true;
                let entry_bytes = u64::from(memory.read_u32(tag + 8).ok_or(unreadable)?)
                    .max(MEMORY_MAP_ENTRY_BYTES);
                let mut entry = tag + 16;
                while entry + MEMORY_MAP_ENTRY_BYTES <= tag + size {
                    let unreadable = BootInfoError::Unreadable { address: entry };
                    let address = memory.read_u64(entry).ok_or(unreadable)?;
                    let length = memory.read_u64(entry + 8).ok_or(unreadable)?;
                    if memory.read_u32(entry + 16).ok_or(unreadable)? == MEMORY_TYPE_RAM {
                        boot.add_ram(address, length);
                    }
                    entry += entry_bytes;
                }
            }
            _ => {}
        }
        tag += size.next_multiple_of(8);
    }
    if !seen_memory_map {
        return Err(BootInfoError::Multiboot2NoMemoryMap);
    }
    Ok(boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Physical memory for tests: `bytes` mapped at address 0.
    struct TestMemory(Vec<u8>);

    impl PhysMemory for TestMemory {
        fn read(&self, address: u64, buffer: &mut [u8]) -> bool {
            let Ok(start) = usize::try_from(address) else {
                return false;
            };
            match start
                .checked_add(buffer.len())
                .and_then(|end| self.0.get(start..end))
            {
                Some(source) => {
                    buffer.copy_from_slice(source);
                    true
                }
                None => false,
            }
        }
    }

    impl TestMemory {
        fn put(&mut self, address: usize, bytes: &[u8]) {
            self.0[address..address + bytes.len()].copy_from_slice(bytes);
        }
        fn put32(&mut self, address: usize, value: u32) {
            self.put(address, &value.to_le_bytes());
        }
        fn put64(&mut self, address: usize, value: u64) {
            self.put(address, &value.to_le_bytes());
        }
    }

    const MIB: u64 = 1 << 20;

    /// An hvm_start_info at 0x1000 as QEMU builds it, with our loader's named modules.
    fn pvh_memory() -> TestMemory {
        let mut memory = TestMemory(vec![0; 0x10000]);
        memory.put32(0x1000, START_INFO_MAGIC);
        memory.put32(0x1004, 1);
        memory.put32(0x100c, 2); // modules
        memory.put64(0x1010, 0x2000); // module list
        memory.put64(0x1018, 0x3000); // command line
        memory.put64(0x1028, 0x4000); // memory map
        memory.put32(0x1030, 3);
        memory.put64(0x2000, 0x8000);
        memory.put64(0x2008, 100);
        memory.put64(0x2010, 0x3100);
        memory.put64(0x2020, 0x9000);
        memory.put64(0x2028, 200);
        memory.put64(0x2030, 0x3200);
        memory.put(0x3000, b"understudy.selftest=disk\0");
        memory.put(0x3100, b"role-config\0");
        memory.put(0x3200, b"guest-kernel\0");
        for (index, (address, length, kind)) in [
            (0u64, 0x9fc00u64, 1u32),
            (0xf0000, 0x10000, 2),
            (MIB, 255 * MIB, 1),
        ]
        .into_iter()
        .enumerate()
        {
            let entry = 0x4000 + index * 24;
            memory.put64(entry, address);
            memory.put64(entry + 8, length);
            memory.put32(entry + 16, kind);
        }
        memory
    }

    #[test]
    fn hvm_start_info_gives_ram_modules_names_and_command_line() {
        let memory = pvh_memory();
        let boot = parse_hvm_start_info(&memory, 0x1000).unwrap();
        assert_eq!(
            boot.ram(),
            &[
                PhysRange {
                    start: 0,
                    end: 0x9fc00
                },
                PhysRange {
                    start: MIB,
                    end: 256 * MIB
                }
            ]
        );
        assert_eq!(
            boot.initrd,
            Some(PhysRange {
                start: 0x8000,
                end: 0x8064
            })
        );
        assert_eq!(
            boot.command_line,
            Some(PhysRange {
                start: 0x3000,
                end: 0x3018
            })
        );
        assert_eq!(
            boot.module_named(&memory, "guest-kernel"),
            Some(PhysRange {
                start: 0x9000,
                end: 0x90c8
            })
        );
        assert_eq!(boot.module_named(&memory, "guest-initrd"), None);
        let reserved: Vec<PhysRange> = boot.reserved().into_iter().flatten().collect();
        for must in [
            boot.start_info,
            boot.memory_map,
            PhysRange {
                start: 0x9000,
                end: 0x90c8,
            },
            PhysRange {
                start: 0x3200,
                end: 0x320c,
            },
        ] {
            assert!(reserved.contains(&must), "{must:?} not reserved");
        }
    }

    #[test]
    fn hvm_start_info_errors_are_typed() {
        let mut memory = pvh_memory();
        assert_eq!(
            parse_hvm_start_info(&memory, 0).unwrap_err(),
            BootInfoError::NoStartInfo
        );
        assert_eq!(
            parse_hvm_start_info(&memory, 0xffff_0000).unwrap_err(),
            BootInfoError::Unreadable {
                address: 0xffff_0000
            }
        );
        memory.put32(0x1004, 0);
        assert_eq!(
            parse_hvm_start_info(&memory, 0x1000).unwrap_err(),
            BootInfoError::NoMemoryMap { version: 0 }
        );
        memory.put32(0x1000, 0x1234);
        assert_eq!(
            parse_hvm_start_info(&memory, 0x1000).unwrap_err(),
            BootInfoError::BadMagic(0x1234)
        );
        let mut memory = pvh_memory();
        // A corrupt entry count is capped, so the walk is bounded.
        memory.put32(0x1030, u32::MAX);
        let boot = parse_hvm_start_info(&memory, 0x1000).unwrap();
        assert_eq!(
            boot.memory_map.len(),
            u64::from(MEMORY_MAP_ENTRIES_MAX) * 24
        );
        // A memory map that runs off the end of memory is an error.
        memory.put64(0x1028, 0xff00);
        assert!(matches!(
            parse_hvm_start_info(&memory, 0x1000),
            Err(BootInfoError::Unreadable { .. })
        ));
    }

    fn multiboot2_memory() -> TestMemory {
        let mut memory = TestMemory(vec![0; 0x10000]);
        let mut tag = 0x1008;
        let mut push = |memory: &mut TestMemory, kind: u32, body: &[u8]| {
            memory.put32(tag, kind);
            memory.put32(tag + 4, 8 + body.len() as u32);
            memory.put(tag + 8, body);
            tag += (8 + body.len()).next_multiple_of(8);
        };
        push(&mut memory, 1, b"quiet\0");
        let mut module = Vec::new();
        module.extend(0x8000u32.to_le_bytes());
        module.extend(0x8400u32.to_le_bytes());
        module.extend(b"role-config\0");
        push(&mut memory, 3, &module);
        let mut map = Vec::new();
        map.extend(24u32.to_le_bytes());
        map.extend(0u32.to_le_bytes());
        for (address, length, kind) in [
            (0u64, 0x9fc00u64, 1u32),
            (MIB, 511 * MIB, 1),
            (0xfffc_0000, 0x40000, 2),
        ] {
            map.extend(address.to_le_bytes());
            map.extend(length.to_le_bytes());
            map.extend(kind.to_le_bytes());
            map.extend(0u32.to_le_bytes());
        }
        push(&mut memory, 6, &map);
        push(&mut memory, 0, &[]);
        memory.put32(0x1000, (tag - 0x1000) as u32);
        memory
    }

    #[test]
    fn multiboot2_gives_ram_config_module_and_command_line() {
        let memory = multiboot2_memory();
        let boot = parse_multiboot2(&memory, 0x1000).unwrap();
        assert_eq!(
            boot.ram(),
            &[
                PhysRange {
                    start: 0,
                    end: 0x9fc00
                },
                PhysRange {
                    start: MIB,
                    end: 512 * MIB
                }
            ]
        );
        assert_eq!(
            boot.initrd,
            Some(PhysRange {
                start: 0x8000,
                end: 0x8400
            })
        );
        assert_eq!(
            boot.module_named(&memory, "role-config"),
            Some(PhysRange {
                start: 0x8000,
                end: 0x8400
            })
        );
        assert_eq!(boot.command_line.map(|r| r.len()), Some(5));
    }

    #[test]
    fn multiboot2_without_memory_map_or_oversized_is_refused() {
        let mut memory = TestMemory(vec![0; 0x2000]);
        memory.put32(0x1000, 16);
        assert_eq!(
            parse_multiboot2(&memory, 0x1000).unwrap_err(),
            BootInfoError::Multiboot2NoMemoryMap
        );
        memory.put32(0x1000, MULTIBOOT2_BYTES_MAX + 1);
        assert_eq!(
            parse_multiboot2(&memory, 0x1000).unwrap_err(),
            BootInfoError::Multiboot2TooLarge {
                bytes: MULTIBOOT2_BYTES_MAX + 1
            }
        );
    }

    #[test]
    fn random_bytes_never_panic_or_hang_either_parser() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for seed in 0..3000u64 {
            let mut memory = if seed % 2 == 0 {
                pvh_memory()
            } else {
                multiboot2_memory()
            };
            // Corrupt a few bytes of the structures (they live in the first 0x5000 bytes).
            for _ in 0..1 + seed % 16 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = ((state >> 20) % 0x5000) as usize;
                memory.0[at] = (state >> 8) as u8;
            }
            let _ = parse_hvm_start_info(&memory, 0x1000);
            let _ = parse_multiboot2(&memory, 0x1000);
        }
    }
}
