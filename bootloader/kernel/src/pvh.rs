//! What the boot loader tells the kernel: the PVH start-of-day structure `hvm_start_info`
//! (Xen `public/arch-x86/hvm/start_info.h`, also built by our UEFI loader) or the multiboot2
//! information structure (Multiboot2 specification section 3.6).

use core::fmt;

/// `XEN_HVM_START_MAGIC_VALUE`.
const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Entries of the memory map we look at; more are ignored (a PC has a dozen).
pub const MEMORY_REGIONS_MAX: usize = 64;
/// Memory-map entry type for usable RAM (`XEN_HVM_MEMMAP_TYPE_RAM`, the E820 numbering).
const MEMORY_TYPE_RAM: u32 = 1;
/// Longest command line we read, in bytes.
const COMMAND_LINE_BYTES_MAX: usize = 4096;
/// Boot modules we keep: the role config, the guest kernel and the guest initrd, and one spare.
pub const MODULES_MAX: usize = 4;
/// Longest module name (its command line) we read, in bytes.
const MODULE_NAME_BYTES_MAX: u64 = 256;

#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    modules_count: u32,
    module_list_paddr: u64,
    command_line_paddr: u64,
    rsdp_paddr: u64,
    // Present from version 1 on.
    memory_map_paddr: u64,
    memory_map_entries: u32,
    reserved: u32,
}

#[repr(C)]
struct ModuleEntry {
    paddr: u64,
    size: u64,
    command_line_paddr: u64,
    reserved: u64,
}

#[repr(C)]
struct MemoryMapEntry {
    address: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

pub use understudy_boot_memory::PhysRange;

/// Why the start info cannot be used.
#[derive(Debug)]
pub enum StartInfoError {
    NoStartInfo,
    BadMagic(u32),
    NoMemoryMap { version: u32 },
    Multiboot2TooLarge { bytes: u32 },
    Multiboot2NoMemoryMap,
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStartInfo => write!(f, "no hvm_start_info: boot by PVH (qemu -kernel)"),
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

/// What the boot loader told us, copied out of the start info.
pub struct BootInfo {
    pub start_info: PhysRange,
    pub ram: [PhysRange; MEMORY_REGIONS_MAX],
    pub ram_count: usize,
    /// The first module (QEMU `-initrd`), where the role config may arrive.
    pub initrd: Option<PhysRange>,
    /// Every module, with the range of its name string (the module's command line).
    pub modules: [Option<BootModule>; MODULES_MAX],
    pub command_line: Option<PhysRange>,
    pub module_list: Option<PhysRange>,
    pub memory_map: PhysRange,
}

/// One module the boot loader loaded.
#[derive(Clone, Copy, Debug)]
pub struct BootModule {
    pub range: PhysRange,
    pub name: Option<PhysRange>,
}

/// The length of the NUL-terminated string at `start`, at most `max` bytes.
fn string_length(start: u64, max: u64) -> u64 {
    let mut length = 0;
    // SAFETY: boot-loader strings are NUL-terminated in identity-mapped memory; the cap bounds
    // the walk over a missing terminator.
    while length < max && unsafe { ((start + length) as *const u8).read_volatile() } != 0 {
        length += 1;
    }
    length
}

impl BootInfo {
    /// The module whose name is `name` (our loaders name the guest payload `guest-kernel` and
    /// `guest-initrd`).
    pub fn module_named(&self, name: &str) -> Option<PhysRange> {
        self.modules.iter().flatten().find_map(|module| {
            let range = module.name?;
            // SAFETY: the name range was measured in boot-loader memory the heap excludes.
            (unsafe { bytes(range) } == name.as_bytes()).then_some(module.range)
        })
    }

    /// Reads the start info at `paddr` (identity-mapped).
    pub fn parse(paddr: u64) -> Result<Self, StartInfoError> {
        if paddr == 0 {
            return Err(StartInfoError::NoStartInfo);
        }
        // SAFETY: the PVH ABI hands us a valid `hvm_start_info` at `paddr`; the low 4 GiB are
        // identity-mapped; the read is unaligned-safe.
        let info = unsafe { (paddr as *const StartInfo).read_unaligned() };
        if info.magic != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic(info.magic));
        }
        if info.version < 1 || info.memory_map_paddr == 0 {
            return Err(StartInfoError::NoMemoryMap {
                version: info.version,
            });
        }
        let mut boot = BootInfo {
            start_info: PhysRange {
                start: paddr,
                end: paddr + core::mem::size_of::<StartInfo>() as u64,
            },
            ram: [PhysRange { start: 0, end: 0 }; MEMORY_REGIONS_MAX],
            ram_count: 0,
            initrd: None,
            modules: [None; MODULES_MAX],
            command_line: None,
            module_list: None,
            memory_map: PhysRange {
                start: info.memory_map_paddr,
                end: info.memory_map_paddr
                    + u64::from(info.memory_map_entries)
                        * core::mem::size_of::<MemoryMapEntry>() as u64,
            },
        };
        for index in 0..info.memory_map_entries as usize {
            // SAFETY: the memory map has `memory_map_entries` entries at `memory_map_paddr`.
            let entry = unsafe {
                (info.memory_map_paddr as *const MemoryMapEntry)
                    .add(index)
                    .read_unaligned()
            };
            if entry.kind == MEMORY_TYPE_RAM && boot.ram_count < MEMORY_REGIONS_MAX {
                boot.ram[boot.ram_count] = PhysRange {
                    start: entry.address,
                    end: entry.address.saturating_add(entry.size),
                };
                boot.ram_count += 1;
            }
        }
        if info.modules_count > 0 && info.module_list_paddr != 0 {
            let count = (info.modules_count as usize).min(MODULES_MAX);
            for index in 0..count {
                // SAFETY: `modules_count` entries live at `module_list_paddr`.
                let entry = unsafe {
                    (info.module_list_paddr as *const ModuleEntry)
                        .add(index)
                        .read_unaligned()
                };
                let name = (entry.command_line_paddr != 0).then(|| {
                    let start = entry.command_line_paddr;
                    PhysRange {
                        start,
                        end: start + string_length(start, MODULE_NAME_BYTES_MAX),
                    }
                });
                boot.modules[index] = Some(BootModule {
                    range: PhysRange {
                        start: entry.paddr,
                        end: entry.paddr + entry.size,
                    },
                    name,
                });
            }
            // SAFETY: `modules_count` entries live at `module_list_paddr`; we read the first.
            let module = unsafe { (info.module_list_paddr as *const ModuleEntry).read_unaligned() };
            boot.module_list = Some(PhysRange {
                start: info.module_list_paddr,
                end: info.module_list_paddr
                    + u64::from(info.modules_count) * core::mem::size_of::<ModuleEntry>() as u64,
            });
            if module.size > 0 {
                boot.initrd = Some(PhysRange {
                    start: module.paddr,
                    end: module.paddr + module.size,
                });
            }
        }
        if info.command_line_paddr != 0 {
            let start = info.command_line_paddr;
            let mut length = 0usize;
            // SAFETY: the command line is NUL-terminated; we stop at the cap regardless.
            while length < COMMAND_LINE_BYTES_MAX
                && unsafe { ((start as usize + length) as *const u8).read_volatile() } != 0
            {
                length += 1;
            }
            boot.command_line = Some(PhysRange {
                start,
                end: start + length as u64,
            });
        }
        Ok(boot)
    }

    /// Reads a multiboot2 information structure at `paddr` (identity-mapped): the memory map
    /// (tag 6), the first module (tag 3, where the role config may arrive) and the command line
    /// (tag 1).
    pub fn from_multiboot2(paddr: u64) -> Result<Self, StartInfoError> {
        /// Bounds the walk over a corrupt structure.
        const MULTIBOOT2_BYTES_MAX: u32 = 1 << 20;
        const TAG_END: u32 = 0;
        const TAG_COMMAND_LINE: u32 = 1;
        const TAG_MODULE: u32 = 3;
        const TAG_MEMORY_MAP: u32 = 6;
        if paddr == 0 {
            return Err(StartInfoError::NoStartInfo);
        }
        let read_u32 = |at: u64| {
            // SAFETY: `at` stays inside the information structure (every caller checks it
            // against `end`), which is identity-mapped boot-loader memory.
            unsafe { (at as *const u32).read_unaligned() }
        };
        let read_u64 = |at: u64| {
            // SAFETY: as for `read_u32`.
            unsafe { (at as *const u64).read_unaligned() }
        };
        let total = read_u32(paddr);
        if total > MULTIBOOT2_BYTES_MAX {
            return Err(StartInfoError::Multiboot2TooLarge { bytes: total });
        }
        let end = paddr + u64::from(total);
        let mut boot = BootInfo {
            start_info: PhysRange { start: paddr, end },
            ram: [PhysRange { start: 0, end: 0 }; MEMORY_REGIONS_MAX],
            ram_count: 0,
            initrd: None,
            modules: [None; MODULES_MAX],
            command_line: None,
            module_list: None,
            memory_map: PhysRange { start: paddr, end },
        };
        let mut seen_memory_map = false;
        let mut tag = paddr + 8;
        while tag + 8 <= end {
            let (kind, size) = (read_u32(tag), u64::from(read_u32(tag + 4)));
            if kind == TAG_END || size < 8 || tag + size > end {
                break;
            }
            match kind {
                TAG_COMMAND_LINE if size > 8 => {
                    // A NUL-terminated string fills the rest of the tag.
                    let start = tag + 8;
                    let mut length = 0;
                    // SAFETY: bounded by the tag, inside the structure.
                    while start + length < tag + size
                        && unsafe { ((start + length) as *const u8).read_volatile() } != 0
                    {
                        length += 1;
                    }
                    boot.command_line = Some(PhysRange {
                        start,
                        end: start + length,
                    });
                }
                TAG_MODULE if size >= 16 => {
                    let start = u64::from(read_u32(tag + 8));
                    let module_end = u64::from(read_u32(tag + 12));
                    let range = PhysRange {
                        start,
                        end: module_end.max(start),
                    };
                    if boot.initrd.is_none() && module_end > start {
                        boot.initrd = Some(range);
                    }
                    // The module's string fills the rest of the tag.
                    let name_start = tag + 16;
                    let name = PhysRange {
                        start: name_start,
                        end: name_start + string_length(name_start, size - 16),
                    };
                    if let Some(slot) = boot.modules.iter_mut().find(|slot| slot.is_none()) {
                        *slot = Some(BootModule {
                            range,
                            name: Some(name),
                        });
                    }
                }
                TAG_MEMORY_MAP if size >= 16 => {
                    seen_memory_map = true;
                    let entry_bytes = u64::from(read_u32(tag + 8)).max(24);
                    let mut entry = tag + 16;
                    while entry + 24 <= tag + size {
                        let (address, length) = (read_u64(entry), read_u64(entry + 8));
                        if read_u32(entry + 16) == MEMORY_TYPE_RAM
                            && boot.ram_count < MEMORY_REGIONS_MAX
                        {
                            boot.ram[boot.ram_count] = PhysRange {
                                start: address,
                                end: address.saturating_add(length),
                            };
                            boot.ram_count += 1;
                        }
                        entry += entry_bytes;
                    }
                }
                _ => {}
            }
            tag += (size + 7) & !7;
        }
        if !seen_memory_map {
            return Err(StartInfoError::Multiboot2NoMemoryMap);
        }
        Ok(boot)
    }

    /// The usable RAM regions.
    pub fn ram(&self) -> &[PhysRange] {
        &self.ram[..self.ram_count]
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

/// Borrows the bytes of a physical range.
///
/// # Safety
/// The range must be identity-mapped memory that nothing else writes while the slice lives.
pub unsafe fn bytes(range: PhysRange) -> &'static [u8] {
    // SAFETY: the caller guarantees the range.
    unsafe { core::slice::from_raw_parts(range.start as *const u8, range.len() as usize) }
}
