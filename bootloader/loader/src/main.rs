//! The Understudy UEFI loader: loads `\understudy\kernel.elf` and `\understudy\role.conf` from
//! its own FAT volume, builds a PVH `hvm_start_info` for the kernel, exits boot services and
//! enters the kernel's 64-bit entry (named by the kernel's "Understudy" ELF note).
//!
//! The kernel command line is the words of the optional `\understudy\cmdline`, then the
//! `understudy.` words of the load options the firmware or the UEFI shell passed
//! (`understudy_boot_memory::cmdline`).
#![no_std]
#![no_main]

#[path = "../../kernel/src/runtime.rs"]
mod runtime;

use core::arch::asm;
use core::ffi::c_void;
use core::fmt::{self, Write};
use core::ptr::null_mut;
use uefi_raw::protocol::console::SimpleTextOutputProtocol;
use uefi_raw::protocol::file_system::{
    FileAttribute, FileMode, FileProtocolV1, SimpleFileSystemProtocol,
};
use uefi_raw::protocol::loaded_image::LoadedImageProtocol;
use uefi_raw::table::boot::{BootServices, MemoryDescriptor, MemoryType};
use uefi_raw::table::system::SystemTable;
use uefi_raw::{Handle, Status};
use understudy_boot_memory::cmdline::{CommandLine, CommandLineError, COMMAND_LINE_FILE_BYTES_MAX};
use understudy_boot_memory::elf::{ElfError, KernelImage};

const KERNEL_PATH: &str = "\\understudy\\kernel.elf";
const CONFIG_PATH: &str = "\\understudy\\role.conf";
const GUEST_KERNEL_PATH: &str = "\\understudy\\guest\\kernel";
const GUEST_INITRD_PATH: &str = "\\understudy\\guest\\initrd";
const COMMAND_LINE_PATH: &str = "\\understudy\\cmdline";
/// Where the command line goes in the start-info page: after the start info (0), the module
/// list (512) and the module names (1024); the page is zeroed, so it ends with a NUL.
const COMMAND_LINE_PAGE_OFFSET: u64 = 2048;
/// Largest guest kernel or initrd we read, in bytes.
const GUEST_FILE_BYTES_MAX: u64 = 512 << 20;
/// Module names the kernel looks for (the module's command line in `hvm_start_info`); the
/// kernel reads module 0 as its role config whatever its name.
const MODULE_NAMES: [&[u8]; 3] = [b"role-config\0", b"guest-kernel\0", b"guest-initrd\0"];
/// Largest kernel ELF we read, in bytes.
const KERNEL_BYTES_MAX: u64 = 64 << 20;
/// Largest config we hand over (the kernel's parser refuses more than 16 KiB anyway).
const CONFIG_BYTES_MAX: u64 = 64 << 10;
/// Everything the kernel reads through its boot-time identity map must be below 4 GiB.
const BELOW_4_GIB: u64 = 0xffff_ffff;
/// Memory-map entries we can pass on (after merging adjacent RAM); 4 pages of 24-byte entries.
const MEMORY_MAP_PAGES: usize = 4;
const MEMORY_MAP_ENTRIES_MAX: usize =
    MEMORY_MAP_PAGES * 4096 / core::mem::size_of::<MemoryMapEntry>();
/// Extra descriptors of room when fetching the firmware memory map: allocating the buffer
/// itself can split a region.
const FIRMWARE_MAP_SLACK_ENTRIES: usize = 16;
/// `EFI_ALLOCATE_TYPE` values (UEFI 2.10 section 7.2.1).
const ALLOCATE_MAX_ADDRESS: u32 = 1;
const ALLOCATE_ADDRESS: u32 = 2;

// --- PVH structures (Xen public/arch-x86/hvm/start_info.h), as the kernel reads them. ---

#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    modules_count: u32,
    module_list_paddr: u64,
    command_line_paddr: u64,
    rsdp_paddr: u64,
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
#[derive(Clone, Copy)]
struct MemoryMapEntry {
    address: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

const START_INFO_MAGIC: u32 = 0x336e_c578;
/// E820 types used in the PVH memory map.
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const E820_ACPI: u32 = 3;
const E820_NVS: u32 = 4;

// --- console ---

static mut CONSOLE: *mut SimpleTextOutputProtocol = null_mut();

struct Console;

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // SAFETY: CONSOLE is set once in `efi_main` before any printing and cleared before
        // boot services exit; single-threaded.
        let console = unsafe { CONSOLE };
        if console.is_null() {
            return Ok(());
        }
        let mut buffer = [0u16; 128];
        let mut used = 0;
        let flush = |buffer: &mut [u16; 128], used: &mut usize| {
            buffer[*used] = 0;
            // SAFETY: a NUL-terminated UCS-2 string and the firmware's own console protocol.
            let _ = unsafe { ((*console).output_string)(console, buffer.as_ptr()) };
            *used = 0;
        };
        for c in text.chars() {
            if c == '\n' {
                buffer[used] = u16::from(b'\r');
                used += 1;
            }
            buffer[used] = if (c as u32) < 0x10000 {
                c as u32 as u16
            } else {
                u16::from(b'?')
            };
            used += 1;
            if used >= buffer.len() - 3 {
                flush(&mut buffer, &mut used);
            }
        }
        flush(&mut buffer, &mut used);
        Ok(())
    }
}

macro_rules! println {
    ($($arg:tt)*) => {{ let _ = writeln!(Console, $($arg)*); }};
}

/// Why loading stopped. Each says what to fix on the boot volume.
enum LoadError {
    Firmware {
        what: &'static str,
        status: Status,
    },
    Missing {
        path: &'static str,
        status: Status,
    },
    TooLarge {
        path: &'static str,
        bytes: u64,
        max: u64,
    },
    NotKernel(ElfError),
    KernelPlacement {
        address: u64,
        status: Status,
    },
    NoEntry,
    MemoryMapFull,
    CommandLineFile(CommandLineError),
    LoadOptions(CommandLineError),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Firmware { what, status } => write!(f, "firmware call {what} failed: {status:?}"),
            Self::Missing { path, status } => {
                write!(
                    f,
                    "cannot read {path} ({status:?}): rebuild the image with tools/mkimage"
                )
            }
            Self::TooLarge { path, bytes, max } => {
                write!(f, "{path} is {bytes} bytes, more than {max}")
            }
            Self::NotKernel(why) => write!(f, "{KERNEL_PATH} is not an understudy kernel: {why}"),
            Self::KernelPlacement { address, status } => {
                write!(
                    f,
                    "memory at {address:#x} for the kernel is taken ({status:?})"
                )
            }
            Self::NoEntry => write!(f, "{KERNEL_PATH} has no \"Understudy\" 64-bit entry note"),
            Self::MemoryMapFull => write!(
                f,
                "firmware memory map has more than {MEMORY_MAP_ENTRIES_MAX} ram runs"
            ),
            Self::CommandLineFile(error) => write!(
                f,
                "{COMMAND_LINE_PATH}: {error} (tools/mkimage set-cmdline rewrites it)"
            ),
            Self::LoadOptions(error) => {
                write!(
                    f,
                    "load options: {error} (the {COMMAND_LINE_PATH} words count too)"
                )
            }
        }
    }
}

fn check(what: &'static str, status: Status) -> Result<(), LoadError> {
    if status == Status::SUCCESS {
        Ok(())
    } else {
        Err(LoadError::Firmware { what, status })
    }
}

/// Applies the image's own R_X86_64_RELATIVE relocations (ELF gABI "Dynamic Section"; the
/// static-pie link leaves no other kind). Runs before anything reads a pointer from data.
///
/// # Safety
/// `base` is where the image was loaded and `dynamic` its `_DYNAMIC` array.
unsafe fn relocate(base: u64, dynamic: *const [u64; 2]) {
    const DT_NULL: u64 = 0;
    const DT_RELA: u64 = 7;
    const DT_RELASZ: u64 = 8;
    const DT_RELAENT: u64 = 9;
    const R_X86_64_RELATIVE: u64 = 8;
    let (mut rela, mut rela_bytes, mut rela_entry_bytes) = (0u64, 0u64, 24u64);
    let mut entry = dynamic;
    // SAFETY: `_DYNAMIC` is a DT_NULL-terminated array of (tag, value) pairs.
    unsafe {
        while (*entry)[0] != DT_NULL {
            match (*entry)[0] {
                DT_RELA => rela = (*entry)[1],
                DT_RELASZ => rela_bytes = (*entry)[1],
                DT_RELAENT => rela_entry_bytes = (*entry)[1],
                _ => {}
            }
            entry = entry.add(1);
        }
        let mut offset = 0;
        while rela != 0 && offset < rela_bytes {
            let record = (base + rela + offset) as *const u64;
            let (target, info, addend) = (*record, *record.add(1), *record.add(2));
            if info & 0xffff_ffff == R_X86_64_RELATIVE {
                ((base + target) as *mut u64).write_unaligned(base.wrapping_add(addend));
            }
            offset += rela_entry_bytes;
        }
    }
}

fn utf16_path(path: &str) -> [u16; 64] {
    let mut buffer = [0u16; 64];
    for (slot, c) in buffer.iter_mut().zip(path.chars()) {
        *slot = c as u16;
    }
    buffer
}

/// Reads a whole file into freshly allocated pages below 4 GiB.
///
/// # Safety
/// `root` is an open directory of the boot volume; boot services are active.
unsafe fn read_file(
    boot: &BootServices,
    root: *mut FileProtocolV1,
    path: &'static str,
    max: u64,
) -> Result<&'static [u8], LoadError> {
    // SAFETY: the caller's contract.
    match unsafe { read_optional_file(boot, root, path, max)? } {
        Some(bytes) => Ok(bytes),
        None => Err(LoadError::Missing {
            path,
            status: Status::NOT_FOUND,
        }),
    }
}

/// Like `read_file`, but a file that does not exist is `None`.
///
/// # Safety
/// As for `read_file`.
unsafe fn read_optional_file(
    boot: &BootServices,
    root: *mut FileProtocolV1,
    path: &'static str,
    max: u64,
) -> Result<Option<&'static [u8]>, LoadError> {
    let name = utf16_path(path);
    let mut file: *mut FileProtocolV1 = null_mut();
    // SAFETY (whole body): firmware protocol calls with valid pointers, per UEFI 2.10 13.5.
    unsafe {
        let status = ((*root).open)(
            root,
            &mut file,
            name.as_ptr(),
            FileMode::READ,
            FileAttribute::empty(),
        );
        if status == Status::NOT_FOUND {
            return Ok(None);
        }
        if status != Status::SUCCESS {
            return Err(LoadError::Missing { path, status });
        }
        // Seeking to u64::MAX moves to the end of the file (13.5.12), which gives its size.
        check("file set_position", ((*file).set_position)(file, u64::MAX))?;
        let mut size = 0u64;
        check("file get_position", ((*file).get_position)(file, &mut size))?;
        check("file set_position", ((*file).set_position)(file, 0))?;
        if size > max {
            return Err(LoadError::TooLarge {
                path,
                bytes: size,
                max,
            });
        }
        let pages = (size as usize).div_ceil(4096).max(1);
        let mut address = BELOW_4_GIB;
        check(
            "allocate_pages",
            (boot.allocate_pages)(
                ALLOCATE_MAX_ADDRESS,
                MemoryType::LOADER_DATA,
                pages,
                &mut address,
            ),
        )?;
        let buffer = core::slice::from_raw_parts_mut(address as *mut u8, size as usize);
        let mut done = 0usize;
        while done < buffer.len() {
            let mut chunk = buffer.len() - done;
            let status =
                ((*file).read)(file, &mut chunk, buffer[done..].as_mut_ptr() as *mut c_void);
            if status != Status::SUCCESS || chunk == 0 {
                return Err(LoadError::Missing { path, status });
            }
            done += chunk;
        }
        let _ = ((*file).close)(file);
        Ok(Some(buffer))
    }
}

/// Copies the PT_LOAD segments to their physical addresses (the kernel is linked to run
/// identity-mapped at 1 MiB) and returns the 64-bit entry.
///
/// # Safety
/// Boot services are active.
unsafe fn load_kernel(boot: &BootServices, elf: &[u8]) -> Result<u64, LoadError> {
    let image = KernelImage::parse(elf).map_err(LoadError::NotKernel)?;
    let entry = image
        .entry_notes()
        .map_err(LoadError::NotKernel)?
        .start64
        .ok_or(LoadError::NoEntry)?;
    for segment in image
        .load_segments(BELOW_4_GIB)
        .map_err(LoadError::NotKernel)?
    {
        let contents = image
            .file_bytes(&segment)
            .ok_or(LoadError::NotKernel(ElfError::SegmentOutsideFile))?;
        let start = segment.paddr & !0xfff;
        let pages = ((segment.paddr + segment.memory_bytes - start) as usize).div_ceil(4096);
        let mut address = start;
        // SAFETY: firmware call with valid pointers; on success we own [start, start+pages).
        let status = unsafe {
            (boot.allocate_pages)(
                ALLOCATE_ADDRESS,
                MemoryType::LOADER_DATA,
                pages,
                &mut address,
            )
        };
        if status != Status::SUCCESS {
            return Err(LoadError::KernelPlacement {
                address: start,
                status,
            });
        }
        // SAFETY: the destination was just allocated to us; `contents` is inside `elf` and no
        // longer than the segment (`load_segments` checked both).
        unsafe {
            let destination = segment.paddr as *mut u8;
            core::ptr::copy_nonoverlapping(contents.as_ptr(), destination, contents.len());
            core::ptr::write_bytes(
                destination.add(contents.len()),
                0,
                (segment.memory_bytes - segment.file_bytes) as usize,
            );
        }
    }
    Ok(entry)
}

fn e820_kind(kind: MemoryType) -> u32 {
    match kind {
        MemoryType::CONVENTIONAL
        | MemoryType::LOADER_CODE
        | MemoryType::LOADER_DATA
        | MemoryType::BOOT_SERVICES_CODE
        | MemoryType::BOOT_SERVICES_DATA => E820_RAM,
        MemoryType::ACPI_RECLAIM => E820_ACPI,
        MemoryType::ACPI_NON_VOLATILE => E820_NVS,
        _ => E820_RESERVED,
    }
}

/// Converts the firmware map to E820 entries, merging adjacent runs of one kind. Allocates
/// nothing, so it may run between GetMemoryMap and ExitBootServices.
fn convert_memory_map(
    firmware: &[u8],
    descriptor_bytes: usize,
    out: &mut [MemoryMapEntry; MEMORY_MAP_ENTRIES_MAX],
) -> Result<usize, LoadError> {
    let mut count = 0usize;
    for chunk in firmware.chunks_exact(descriptor_bytes) {
        // SAFETY: each chunk holds one descriptor of at least `size_of::<MemoryDescriptor>()`.
        let descriptor = unsafe { (chunk.as_ptr() as *const MemoryDescriptor).read_unaligned() };
        let entry = MemoryMapEntry {
            address: descriptor.phys_start,
            size: descriptor.page_count * 4096,
            kind: e820_kind(descriptor.ty),
            reserved: 0,
        };
        if count > 0 {
            let last = &mut out[count - 1];
            if last.kind == entry.kind && last.address + last.size == entry.address {
                last.size += entry.size;
                continue;
            }
        }
        if count == out.len() {
            return Err(LoadError::MemoryMapFull);
        }
        out[count] = entry;
        count += 1;
    }
    Ok(count)
}

/// The kernel command line: the words of `\understudy\cmdline`, then the `understudy.` words of
/// the load options (the UEFI shell's command line, or a boot entry's optional data).
///
/// # Safety
/// As for `read_file`; `loaded_image` is this image's loaded-image protocol.
unsafe fn command_line(
    boot: &BootServices,
    root: *mut FileProtocolV1,
    loaded_image: &LoadedImageProtocol,
) -> Result<CommandLine, LoadError> {
    let mut command_line = CommandLine::new();
    // SAFETY: the caller's contract.
    let file = unsafe {
        read_optional_file(
            boot,
            root,
            COMMAND_LINE_PATH,
            COMMAND_LINE_FILE_BYTES_MAX as u64,
        )?
    };
    if let Some(text) = file {
        command_line
            .push_file(text)
            .map_err(LoadError::CommandLineFile)?;
    }
    let options = loaded_image.load_options as *const u16;
    let units = loaded_image.load_options_size as usize / 2;
    if !options.is_null() && units > 0 && options.is_aligned() {
        // SAFETY: the firmware describes `load_options_size` bytes at `load_options` (UEFI
        // 2.10 section 9.1); they stay valid while boot services run.
        let options = unsafe { core::slice::from_raw_parts(options, units) };
        command_line
            .push_load_options(options)
            .map_err(LoadError::LoadOptions)?;
    }
    Ok(command_line)
}

/// Loads everything and enters the kernel; returns only on failure.
///
/// # Safety
/// Called once from `efi_main` with the firmware's arguments.
unsafe fn boot(
    image: Handle,
    system_table: *mut SystemTable,
) -> Result<core::convert::Infallible, LoadError> {
    // SAFETY (whole body): firmware tables and protocols are valid while boot services run,
    // and every call follows the UEFI 2.10 signatures that uefi-raw spells out.
    unsafe {
        let boot = &*(*system_table).boot_services;
        let mut loaded_image: *mut c_void = null_mut();
        check(
            "handle_protocol(loaded image)",
            (boot.handle_protocol)(image, &LoadedImageProtocol::GUID, &mut loaded_image),
        )?;
        let loaded_image = &*(loaded_image as *const LoadedImageProtocol);
        let device = loaded_image.device_handle;
        let mut file_system: *mut c_void = null_mut();
        check(
            "handle_protocol(file system)",
            (boot.handle_protocol)(device, &SimpleFileSystemProtocol::GUID, &mut file_system),
        )?;
        let file_system = file_system as *mut SimpleFileSystemProtocol;
        let mut root: *mut FileProtocolV1 = null_mut();
        check(
            "open_volume",
            ((*file_system).open_volume)(file_system, &mut root),
        )?;

        let kernel = read_file(boot, root, KERNEL_PATH, KERNEL_BYTES_MAX)?;
        let config = read_file(boot, root, CONFIG_PATH, CONFIG_BYTES_MAX)?;
        let guest_kernel = read_optional_file(boot, root, GUEST_KERNEL_PATH, GUEST_FILE_BYTES_MAX)?;
        let guest_initrd = match guest_kernel {
            Some(_) => read_optional_file(boot, root, GUEST_INITRD_PATH, GUEST_FILE_BYTES_MAX)?,
            None => None,
        };
        let command_line = command_line(boot, root, loaded_image)?;
        let entry = load_kernel(boot, kernel)?;
        println!(
            "understudy loader: kernel loaded, entry {entry:#x}, config {} bytes, guest kernel {} bytes, guest initrd {} bytes",
            config.len(),
            guest_kernel.map_or(0, |bytes| bytes.len()),
            guest_initrd.map_or(0, |bytes| bytes.len())
        );
        if !command_line.is_empty() {
            // Printable ASCII only, checked while it was assembled.
            let text = core::str::from_utf8(command_line.as_bytes()).unwrap_or("?");
            println!("understudy loader: kernel command line: {text}");
        }

        // One page for the start info and module list, four for the memory map.
        let mut handoff = BELOW_4_GIB;
        check(
            "allocate_pages",
            (boot.allocate_pages)(
                ALLOCATE_MAX_ADDRESS,
                MemoryType::LOADER_DATA,
                1 + MEMORY_MAP_PAGES,
                &mut handoff,
            ),
        )?;
        core::ptr::write_bytes(handoff as *mut u8, 0, (1 + MEMORY_MAP_PAGES) * 4096);
        let start_info = handoff as *mut StartInfo;
        // Page layout: start info at 0, module list at 512, module names at 1024, command line
        // at 2048.
        let module = (handoff + 512) as *mut ModuleEntry;
        let names = handoff + 1024;
        let command_line_paddr = if command_line.is_empty() {
            0
        } else {
            let at = handoff + COMMAND_LINE_PAGE_OFFSET;
            let bytes = command_line.as_bytes();
            assert!(COMMAND_LINE_PAGE_OFFSET as usize + bytes.len() < 4096);
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len());
            at
        };
        let memory_map = &mut *((handoff + 4096) as *mut [MemoryMapEntry; MEMORY_MAP_ENTRIES_MAX]);
        let mut modules_count = 0u32;
        let mut name_at = names;
        for (index, bytes) in [Some(config), guest_kernel, guest_initrd]
            .into_iter()
            .enumerate()
        {
            let Some(bytes) = bytes else { continue };
            let name = MODULE_NAMES[index];
            core::ptr::copy_nonoverlapping(name.as_ptr(), name_at as *mut u8, name.len());
            module.add(modules_count as usize).write(ModuleEntry {
                paddr: bytes.as_ptr() as u64,
                size: bytes.len() as u64,
                command_line_paddr: name_at,
                reserved: 0,
            });
            name_at += name.len() as u64;
            modules_count += 1;
        }

        // The firmware map, with room for the splits our own allocation causes.
        let (mut map_bytes, mut key, mut descriptor_bytes, mut version) =
            (0usize, 0usize, 0usize, 0u32);
        let _ = (boot.get_memory_map)(
            &mut map_bytes,
            null_mut(),
            &mut key,
            &mut descriptor_bytes,
            &mut version,
        );
        map_bytes += FIRMWARE_MAP_SLACK_ENTRIES * descriptor_bytes.max(48);
        let capacity = map_bytes;
        let mut firmware_map: *mut u8 = null_mut();
        check(
            "allocate_pool",
            (boot.allocate_pool)(MemoryType::LOADER_DATA, capacity, &mut firmware_map),
        )?;
        println!("understudy loader: exiting boot services");
        for attempt in 0..2 {
            map_bytes = capacity;
            check(
                "get_memory_map",
                (boot.get_memory_map)(
                    &mut map_bytes,
                    firmware_map as *mut MemoryDescriptor,
                    &mut key,
                    &mut descriptor_bytes,
                    &mut version,
                ),
            )?;
            let entries = convert_memory_map(
                core::slice::from_raw_parts(firmware_map, map_bytes),
                descriptor_bytes,
                memory_map,
            )?;
            start_info.write(StartInfo {
                magic: START_INFO_MAGIC,
                version: 1,
                flags: 0,
                modules_count,
                module_list_paddr: module as u64,
                command_line_paddr,
                rsdp_paddr: 0,
                memory_map_paddr: memory_map.as_ptr() as u64,
                memory_map_entries: entries as u32,
                reserved: 0,
            });
            // The first attempt can fail if the map changed since it was read (7.4.6).
            let status = (boot.exit_boot_services)(image, key);
            if status == Status::SUCCESS {
                CONSOLE = null_mut();
                asm!("cli", "jmp {entry}", entry = in(reg) entry, in("rdi") start_info as u64, options(noreturn));
            }
            if attempt == 1 {
                check("exit_boot_services", status)?;
            }
        }
        Err(LoadError::Firmware {
            what: "exit_boot_services",
            status: Status::ABORTED,
        })
    }
}

#[no_mangle]
extern "efiapi" fn efi_main(image: Handle, system_table: *mut SystemTable) -> Status {
    let (base, dynamic): (u64, u64);
    // SAFETY: PC-relative address computations only; no memory is read.
    unsafe {
        asm!("lea {base}, [rip + ImageBase]", "lea {dynamic}, [rip + _DYNAMIC]",
             base = out(reg) base, dynamic = out(reg) dynamic, options(nomem, nostack, preserves_flags));
    }
    // SAFETY: `base` and `dynamic` come from the linker script and the static-pie link, and
    // nothing has read a relocated pointer yet.
    unsafe { relocate(base, dynamic as *const [u64; 2]) };
    // SAFETY: the firmware passes a valid system table; single-threaded.
    unsafe { CONSOLE = (*system_table).stdout };
    println!("understudy loader: started");
    // SAFETY: called once with the firmware's arguments.
    let Err(error) = unsafe { boot(image, system_table) };
    println!("understudy loader: error: {error}");
    Status::LOAD_ERROR
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("understudy loader: panic: {}", info.message());
    loop {
        // SAFETY: stops the CPU; the loader cannot continue.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
