//! The PVH start-of-day structure `hvm_start_info` (Xen `public/arch-x86/hvm/start_info.h`).

use core::fmt;

/// `XEN_HVM_START_MAGIC_VALUE`.
const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Entries of the memory map we look at; more are ignored (a PC has a dozen).
pub const MEMORY_REGIONS_MAX: usize = 64;
/// Memory-map entry type for usable RAM (`XEN_HVM_MEMMAP_TYPE_RAM`, the E820 numbering).
const MEMORY_TYPE_RAM: u32 = 1;
/// Longest command line we read, in bytes.
const COMMAND_LINE_BYTES_MAX: usize = 4096;

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

/// A physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// Why the start info cannot be used.
#[derive(Debug)]
pub enum StartInfoError {
    NoStartInfo,
    BadMagic(u32),
    NoMemoryMap { version: u32 },
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
    pub command_line: Option<PhysRange>,
    pub module_list: Option<PhysRange>,
    pub memory_map: PhysRange,
}

impl BootInfo {
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

    /// The usable RAM regions.
    pub fn ram(&self) -> &[PhysRange] {
        &self.ram[..self.ram_count]
    }

    /// Ranges the heap must not overlap: everything the boot loader handed us.
    pub fn reserved(&self) -> [Option<PhysRange>; 5] {
        [
            Some(self.start_info),
            self.initrd,
            self.command_line,
            self.module_list,
            Some(self.memory_map),
        ]
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
