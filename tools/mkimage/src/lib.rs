//! Builds the bootable appliance image: a GPT disk whose FAT EFI system partition holds the
//! UEFI loader, the kernel, the role config and the guest payload.
//!
//! Everything is validated before the first byte is written, the image is written to a
//! temporary file next to the output and renamed into place only when complete, and the
//! result is deterministic: the same inputs give the same bytes, so two machines' images differ
//! only where their configs differ.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use understudy_boot_config::{self as config, Config, ConfigError};
use understudy_boot_memory::cmdline::{CommandLine, CommandLineError};
use understudy_boot_memory::elf::{ElfError, KernelImage};

mod edit;
mod netboot;
mod role;
#[cfg(test)]
mod test_support;
pub use edit::{set_cmdline, set_role, show_role, EditError, ImageRole, RoleChange, ROLE_OPTION};
pub use netboot::{
    build_netboot, parse_netboot_roles, MacAddress, NetbootRole, NETBOOT_MENU_TIMEOUT_S,
};
pub use role::{config_with_role, role_named, RoleLineError, ROLES};

/// Where the files go on the ESP. The loader reads the kernel and config from these paths.
pub const LOADER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
pub const KERNEL_PATH: &str = "understudy/kernel.elf";
pub const CONFIG_PATH: &str = "understudy/role.conf";
pub const GUEST_KERNEL_PATH: &str = "understudy/guest/kernel";
pub const GUEST_INITRD_PATH: &str = "understudy/guest/initrd";
/// The optional kernel command line; the loader reads it (`understudy_boot_memory::cmdline`).
pub const CMDLINE_PATH: &str = "understudy/cmdline";

const MIB: u64 = 1 << 20;
const SECTOR_BYTES: u64 = 512;
/// The ESP starts at 1 MiB (LBA 2048), the usual alignment for flash media.
const ESP_START_BYTES: u64 = MIB;
/// Room after the ESP for the backup GPT (33 sectors), rounded to a MiB.
const GPT_TAIL_BYTES: u64 = MIB;
/// Smallest ESP we make; below this some firmware refuses FAT as an ESP.
const ESP_BYTES_MIN: u64 = 64 * MIB;
/// Free room left in the ESP beyond the files, so configs can be edited in place.
const ESP_SLACK_BYTES: u64 = 8 * MIB;
/// Copy granularity, and the step of progress reports.
const COPY_CHUNK_BYTES: usize = MIB as usize;
/// Larger files get a progress line per 10%.
const PROGRESS_FILE_BYTES_MIN: u64 = 8 * MIB;

/// What to build.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub loader: PathBuf,
    pub kernel: PathBuf,
    pub config: PathBuf,
    pub guest_kernel: Option<PathBuf>,
    pub guest_initrd: Option<PathBuf>,
    /// Words for the kernel command line (e.g. `understudy.role=backup`): the image carries them
    /// in `/understudy/cmdline`, the network-boot bundle on GRUB's `multiboot2` line.
    pub cmdline: Option<String>,
    pub output: PathBuf,
    /// Total image size; when absent, the smallest that fits.
    pub size_bytes: Option<u64>,
}

/// Why an image was not built. Each names the input and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MkimageError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {error}")]
    Config { path: PathBuf, error: ConfigError },
    #[error("{path}: not an understudy kernel: {why} (build bootloader/ and pass target/release/understudy-kernel)")]
    NotKernel { path: PathBuf, why: ElfError },
    #[error("{path}: not a UEFI x86_64 application: {why} (pass the loader converted by objcopy)")]
    NotLoader { path: PathBuf, why: &'static str },
    #[error("{path}: {why}")]
    NotGuest { path: PathBuf, why: &'static str },
    #[error(
        "guest payload needs {needed_mib} MiB of guest memory (kernel and initrd, 2 MiB load offset, 16 MiB to run) but the config gives guest_memory_mib = {configured_mib}: raise it or use a smaller guest"
    )]
    GuestTooLarge {
        needed_mib: u64,
        configured_mib: u32,
    },
    #[error("--cmdline: {0}")]
    Cmdline(CommandLineError),
    #[error("--guest-initrd needs --guest-kernel")]
    InitrdWithoutKernel,
    #[error("image size {requested_mib} MiB is too small: the files need {needed_mib} MiB")]
    TooSmall { requested_mib: u64, needed_mib: u64 },
    #[error("{path}: cannot write the image: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot write the partition table: {0}")]
    Gpt(String),
    #[error("{path}: {error}")]
    RoleLine { path: PathBuf, error: RoleLineError },
    #[error("--netboot-role {text}: {why}")]
    BadNetbootRole { text: String, why: &'static str },
    #[error("--netboot-role names {mac} twice: keep one")]
    DuplicateMac { mac: MacAddress },
    #[error("{path} already exists: remove it or choose another --netboot directory")]
    NetbootExists { path: PathBuf },
    #[error("grub-mknetdir failed ({detail}): install grub-pc-bin and grub-common")]
    GrubMknetdir { detail: String },
}

fn read(path: &Path) -> Result<Vec<u8>, MkimageError> {
    fs::read(path).map_err(|source| MkimageError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Checks that `bytes` is our kernel: an x86_64 ELF executable carrying both the PVH note and
/// the "Understudy" 64-bit entry note the loader needs, with load segments inside the file and
/// below 4 GiB (the same checks the UEFI loader makes).
pub fn check_kernel(bytes: &[u8]) -> Result<(), ElfError> {
    let image = KernelImage::parse(bytes)?;
    image.check_understudy_kernel()?;
    // Validation walks every segment; the iterator it returns is not needed here.
    let _segments = image.load_segments(1 << 32)?;
    Ok(())
}

/// Checks that `bytes` is a PE32+ EFI application for x86_64 (PE/COFF specification:
/// "MS-DOS stub", "COFF file header", "optional header" subsystem field).
pub fn check_loader(bytes: &[u8]) -> Result<(), &'static str> {
    if bytes.get(..2) != Some(b"MZ") {
        return Err("no MZ header");
    }
    let pe = u32_at(bytes, 0x3c).ok_or("truncated MZ header")? as usize;
    if bytes.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err("no PE signature");
    }
    if u16_at(bytes, pe + 4) != Some(0x8664) {
        return Err("not for x86_64");
    }
    let optional = pe + 24;
    if u16_at(bytes, optional) != Some(0x20b) {
        return Err("not PE32+");
    }
    if u16_at(bytes, optional + 68) != Some(10) {
        return Err("subsystem is not EFI application (10)");
    }
    Ok(())
}

/// Checks the guest kernel (the same check the appliance kernel makes at boot).
pub fn check_guest_kernel(bytes: &[u8]) -> Result<(), &'static str> {
    config::payload::check_guest_kernel(bytes).map(|_| ())
}

/// Everything read and validated, ready to write.
struct Inputs {
    loader: Vec<u8>,
    kernel: Vec<u8>,
    config_text: Vec<u8>,
    config: Config,
    guest_kernel: Option<Vec<u8>>,
    guest_initrd: Option<Vec<u8>>,
    /// The kernel command line's words, separated by one space; `None` when there are none.
    command_line: Option<Vec<u8>>,
}

/// The words of a kernel command line as the UEFI loader will pass them (one space between
/// words, `#` comments dropped), checked by the loader's own rules; `None` when there are none.
pub fn command_line_words(text: &str) -> Result<Option<Vec<u8>>, CommandLineError> {
    let mut line = CommandLine::new();
    line.push_file(text.as_bytes())?;
    Ok((!line.is_empty()).then(|| line.as_bytes().to_vec()))
}

fn validate(spec: &ImageSpec) -> Result<Inputs, MkimageError> {
    let config_text = read(&spec.config)?;
    let config = config::parse_bytes(&config_text).map_err(|error| MkimageError::Config {
        path: spec.config.clone(),
        error,
    })?;
    let command_line = match &spec.cmdline {
        Some(text) => command_line_words(text).map_err(MkimageError::Cmdline)?,
        None => None,
    };
    let kernel = read(&spec.kernel)?;
    check_kernel(&kernel).map_err(|why| MkimageError::NotKernel {
        path: spec.kernel.clone(),
        why,
    })?;
    let loader = read(&spec.loader)?;
    check_loader(&loader).map_err(|why| MkimageError::NotLoader {
        path: spec.loader.clone(),
        why,
    })?;
    if spec.guest_initrd.is_some() && spec.guest_kernel.is_none() {
        return Err(MkimageError::InitrdWithoutKernel);
    }
    let guest_kernel = spec.guest_kernel.as_deref().map(read).transpose()?;
    if let (Some(bytes), Some(path)) = (&guest_kernel, &spec.guest_kernel) {
        check_guest_kernel(bytes).map_err(|why| MkimageError::NotGuest {
            path: path.clone(),
            why,
        })?;
    }
    let guest_initrd = spec.guest_initrd.as_deref().map(read).transpose()?;
    if let Some(kernel_bytes) = &guest_kernel {
        let needed = config::payload::guest_memory_needed_bytes(
            kernel_bytes.len() as u64,
            guest_initrd.as_ref().map_or(0, |b| b.len() as u64),
        );
        if needed > u64::from(config.guest_memory_mib) * MIB {
            return Err(MkimageError::GuestTooLarge {
                needed_mib: needed.div_ceil(MIB),
                configured_mib: config.guest_memory_mib,
            });
        }
    }
    Ok(Inputs {
        loader,
        kernel,
        config_text,
        config,
        guest_kernel,
        guest_initrd,
        command_line,
    })
}

/// A window of a file, so the FAT formatter sees the partition as its whole device.
struct PartitionWindow<'a> {
    file: &'a mut File,
    start: u64,
    length: u64,
    position: u64,
}

impl Read for PartitionWindow<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let room = self.length.saturating_sub(self.position) as usize;
        let count = buffer.len().min(room);
        self.file
            .seek(SeekFrom::Start(self.start + self.position))?;
        let count = self.file.read(&mut buffer[..count])?;
        self.position += count as u64;
        Ok(count)
    }
}

impl Write for PartitionWindow<'_> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let room = self.length.saturating_sub(self.position) as usize;
        if room == 0 && !buffer.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let count = buffer.len().min(room);
        self.file
            .seek(SeekFrom::Start(self.start + self.position))?;
        let count = self.file.write(&buffer[..count])?;
        self.position += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for PartitionWindow<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.length.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        match target {
            Some(target) if target <= self.length => {
                self.position = target;
                Ok(target)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

/// Removes the temporary file unless the image was completed.
struct PartialFile {
    path: PathBuf,
    done: bool,
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A deterministic 128-bit identifier from text (two FNV-1a 64-bit hashes), so rebuilding an
/// image gives the same bytes and the two machines of a pair share disk identifiers.
fn stable_id(text: &[u8], salt: u64) -> [u8; 16] {
    let hash = |seed: u64| {
        text.iter().fold(seed ^ salt, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&hash(0xcbf2_9ce4_8422_2325).to_le_bytes());
    id[8..].copy_from_slice(&hash(0x8422_2325_cbf2_9ce4).to_le_bytes());
    // RFC 9562 section 5.8: version 8 (custom), variant 10.
    id[6] = (id[6] & 0x0f) | 0x80;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// The config text without its `role` line: what the two machines of a pair share.
fn pair_identity(config_text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(config_text);
    text.lines()
        .filter(|line| !line.trim_start().starts_with("role"))
        .flat_map(|line| line.bytes().chain([b'\n']))
        .collect()
}

/// File times in the image: a fixed, valid FAT date (FAT dates start in 1980) instead of the
/// build time, so rebuilding gives the same bytes.
#[derive(Debug)]
struct FixedTime;

/// The timestamp every file in the image carries.
const IMAGE_DATE: fatfs::Date = fatfs::Date {
    year: 2000,
    month: 1,
    day: 1,
};

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        IMAGE_DATE
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: IMAGE_DATE,
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static FIXED_TIME: FixedTime = FixedTime;

fn progress(message: fmt::Arguments) {
    eprintln!("mkimage: {message}");
}

/// Builds the image described by `spec`. Prints progress on stderr.
pub fn build(spec: &ImageSpec) -> Result<(), MkimageError> {
    progress(format_args!("validating inputs"));
    let inputs = validate(spec)?;
    let command_line_file = inputs.command_line.as_ref().map(|words| {
        let mut file = words.clone();
        file.push(b'\n');
        file
    });
    // The command line goes last, so `set-cmdline` on an image built without one lays it out
    // exactly as a build with it does.
    let files: Vec<(&str, &[u8])> = [
        Some((LOADER_PATH, inputs.loader.as_slice())),
        Some((KERNEL_PATH, inputs.kernel.as_slice())),
        Some((CONFIG_PATH, inputs.config_text.as_slice())),
        inputs
            .guest_kernel
            .as_deref()
            .map(|bytes| (GUEST_KERNEL_PATH, bytes)),
        inputs
            .guest_initrd
            .as_deref()
            .map(|bytes| (GUEST_INITRD_PATH, bytes)),
        command_line_file
            .as_deref()
            .map(|bytes| (CMDLINE_PATH, bytes)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let file_bytes: u64 = files.iter().map(|(_, bytes)| bytes.len() as u64).sum();
    // FAT overhead (tables, directories, cluster rounding) stays well under 10%.
    let esp_needed = (file_bytes + file_bytes / 10 + ESP_SLACK_BYTES)
        .max(ESP_BYTES_MIN)
        .next_multiple_of(MIB);
    let needed = ESP_START_BYTES + esp_needed + GPT_TAIL_BYTES;
    let total = match spec.size_bytes {
        Some(requested) if requested < needed => {
            return Err(MkimageError::TooSmall {
                requested_mib: requested / MIB,
                needed_mib: needed.div_ceil(MIB),
            })
        }
        Some(requested) => requested / SECTOR_BYTES * SECTOR_BYTES,
        None => needed,
    };
    let esp_bytes = (total - ESP_START_BYTES - GPT_TAIL_BYTES) / MIB * MIB;
    progress(format_args!(
        "role {} ({} disks), {} files, {:.1} MiB; image {} MiB",
        inputs.config.role,
        inputs.config.disk,
        files.len(),
        file_bytes as f64 / MIB as f64,
        total / MIB
    ));

    let output = &spec.output;
    let write_error = |source: io::Error| MkimageError::Write {
        path: output.clone(),
        source,
    };
    let directory = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let mut partial = PartialFile {
        path: directory.join(format!(".{name}.partial-{}", std::process::id())),
        done: false,
    };
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&partial.path)
        .map_err(write_error)?;
    file.set_len(total).map_err(write_error)?;

    progress(format_args!("writing the partition table"));
    let identity = pair_identity(&inputs.config_text);
    write_partition_table(&mut file, total, esp_bytes, &identity)?;

    progress(format_args!(
        "formatting the EFI system partition ({} MiB)",
        esp_bytes / MIB
    ));
    let volume_id = u32::from_le_bytes(stable_id(&identity, 3)[..4].try_into().expect("4 bytes"));
    {
        let mut window = PartitionWindow {
            file: &mut file,
            start: ESP_START_BYTES,
            length: esp_bytes,
            position: 0,
        };
        fatfs::format_volume(
            &mut window,
            fatfs::FormatVolumeOptions::new()
                .volume_id(volume_id)
                .volume_label(*b"UNDERSTUDY "),
        )
        .map_err(write_error)?;
        window.seek(SeekFrom::Start(0)).map_err(write_error)?;
        let volume = fatfs::FileSystem::new(
            &mut window,
            fatfs::FsOptions::new().time_provider(&FIXED_TIME),
        )
        .map_err(write_error)?;
        let root = volume.root_dir();
        for directory in ["EFI", "EFI/BOOT", "understudy", "understudy/guest"] {
            if directory != "understudy/guest" || inputs.guest_kernel.is_some() {
                root.create_dir(directory).map_err(write_error)?;
            }
        }
        for (path, bytes) in &files {
            let mut target = root.create_file(path).map_err(write_error)?;
            let show = bytes.len() as u64 >= PROGRESS_FILE_BYTES_MIN;
            let mut reported = 0;
            for (index, chunk) in bytes.chunks(COPY_CHUNK_BYTES).enumerate() {
                target.write_all(chunk).map_err(write_error)?;
                let percent =
                    ((index + 1) * COPY_CHUNK_BYTES).min(bytes.len()) * 100 / bytes.len().max(1);
                if show && percent >= reported + 10 {
                    reported = percent / 10 * 10;
                    progress(format_args!("copying {path}: {percent}%"));
                }
            }
            target.flush().map_err(write_error)?;
            if !show {
                progress(format_args!("copied {path} ({} bytes)", bytes.len()));
            }
        }
        drop(root);
        volume.unmount().map_err(write_error)?;
    }
    file.sync_all().map_err(write_error)?;
    drop(file);
    fs::rename(&partial.path, output).map_err(write_error)?;
    partial.done = true;
    progress(format_args!(
        "wrote {} ({} MiB)",
        output.display(),
        total / MIB
    ));
    Ok(())
}

fn write_partition_table(
    file: &mut File,
    total: u64,
    esp_bytes: u64,
    identity: &[u8],
) -> Result<(), MkimageError> {
    let gpt_error = |error: &dyn fmt::Display| MkimageError::Gpt(error.to_string());
    let sectors = total / SECTOR_BYTES;
    // UEFI 2.10 section 5.2.3: a protective MBR covering the disk (capped at 2^32 - 1 sectors).
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(file).map_err(|e| gpt_error(&e))?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(
            &mut *file,
            Some(uuid::Uuid::from_bytes(stable_id(identity, 1))),
        )
        .map_err(|e| gpt_error(&e))?;
    let partition = gpt::partition::Partition {
        part_type_guid: gpt::partition_types::EFI,
        part_guid: uuid::Uuid::from_bytes(stable_id(identity, 2)),
        first_lba: ESP_START_BYTES / SECTOR_BYTES,
        last_lba: (ESP_START_BYTES + esp_bytes) / SECTOR_BYTES - 1,
        flags: 0,
        name: "EFI system partition".into(),
    };
    disk.update_partitions([(1, partition)].into_iter().collect())
        .map_err(|e| gpt_error(&e))?;
    disk.write().map_err(|e| gpt_error(&e))?;
    Ok(())
}

/// Largest file `read_file_from_image` returns, in bytes (the loader reads guest files of up to
/// 512 MiB).
const READ_BACK_BYTES_MAX: usize = 1 << 30;

/// Reads one file back from an image's ESP, found through the image's GPT.
pub fn read_file_from_image(image: &Path, path: &'static str) -> Result<Vec<u8>, EditError> {
    edit::read_file(image, path, READ_BACK_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::{fake_kernel, fake_loader, Scratch, CONFIGS};

    #[test]
    fn images_of_a_pair_differ_only_in_the_role_config() {
        let scratch = Scratch::new("pair");
        let primary_text = fs::read_to_string(format!("{CONFIGS}/primary-separate.conf")).unwrap();
        let backup_text = primary_text.replace("\nrole = primary\n", "\nrole = backup\n");
        assert_ne!(primary_text, backup_text);
        fs::write(scratch.0.join("primary.conf"), &primary_text).unwrap();
        fs::write(scratch.0.join("backup.conf"), &backup_text).unwrap();
        build(&scratch.spec(&scratch.0.join("primary.conf"), "primary.img")).unwrap();
        build(&scratch.spec(&scratch.0.join("backup.conf"), "backup.img")).unwrap();
        let primary = fs::read(scratch.0.join("primary.img")).unwrap();
        let backup = fs::read(scratch.0.join("backup.img")).unwrap();
        assert_eq!(primary.len(), backup.len());

        // The config file's data and its directory entry (which holds the file size) are the
        // only places the two images may differ.
        let config_at = primary
            .windows(primary_text.len())
            .position(|w| w == primary_text.as_bytes())
            .unwrap();
        let config_cluster = config_at..config_at + 4096;
        let entry_at = primary
            .windows(11)
            .position(|w| w == b"ROLE~1  CON")
            .unwrap();
        let directory_entry = entry_at..entry_at + 32;
        let differing: Vec<usize> = (0..primary.len())
            .filter(|&i| primary[i] != backup[i])
            .collect();
        assert!(!differing.is_empty());
        for offset in differing {
            assert!(
                config_cluster.contains(&offset) || directory_entry.contains(&offset),
                "images differ at {offset:#x}, outside the role config"
            );
        }
        let read_back = read_file_from_image(&scratch.0.join("backup.img"), CONFIG_PATH).unwrap();
        assert_eq!(read_back, backup_text.as_bytes());
        assert_eq!(
            read_file_from_image(&scratch.0.join("backup.img"), KERNEL_PATH).unwrap(),
            fake_kernel()
        );
        assert_eq!(
            read_file_from_image(&scratch.0.join("backup.img"), LOADER_PATH).unwrap(),
            fake_loader()
        );
    }

    #[test]
    fn rebuilding_gives_identical_bytes() {
        let scratch = Scratch::new("repeat");
        let config = PathBuf::from(format!("{CONFIGS}/arbiter.conf"));
        build(&scratch.spec(&config, "a.img")).unwrap();
        build(&scratch.spec(&config, "b.img")).unwrap();
        assert!(
            fs::read(scratch.0.join("a.img")).unwrap()
                == fs::read(scratch.0.join("b.img")).unwrap()
        );
    }

    #[test]
    fn bad_inputs_are_refused_before_anything_is_written() {
        let scratch = Scratch::new("refuse");
        let good = PathBuf::from(format!("{CONFIGS}/primary-shared.conf"));
        let text = fs::read_to_string(&good).unwrap();
        let before = scratch.entries();

        let missing = scratch.spec(&scratch.0.join("nonexistent.conf"), "out.img");
        assert!(matches!(build(&missing), Err(MkimageError::Read { .. })));

        fs::write(
            scratch.0.join("role.conf"),
            text.replace("role = primary", "role = leader"),
        )
        .unwrap();
        let error = build(&scratch.spec(&scratch.0.join("role.conf"), "out.img")).unwrap_err();
        assert!(error.to_string().contains("unknown role"), "{error}");

        fs::write(
            scratch.0.join("address.conf"),
            text.replace("backup = 10.0.0.2/24", "backup = 10.0.2/24"),
        )
        .unwrap();
        let error = build(&scratch.spec(&scratch.0.join("address.conf"), "out.img")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`backup` is not a valid address"),
            "{error}"
        );

        let mut not_kernel = scratch.spec(&good, "out.img");
        not_kernel.kernel = not_kernel.loader.clone();
        assert!(matches!(
            build(&not_kernel),
            Err(MkimageError::NotKernel { .. })
        ));

        let mut not_loader = scratch.spec(&good, "out.img");
        not_loader.loader = not_loader.kernel.clone();
        assert!(matches!(
            build(&not_loader),
            Err(MkimageError::NotLoader { .. })
        ));

        // A 300 MiB "guest" cannot fit the examples' 256 MiB of guest memory. The file is
        // sparse, so the test stays cheap.
        let guest = scratch.0.join("Image");
        let mut header = vec![0u8; 64];
        header[56..60].copy_from_slice(b"RSC\x05");
        fs::write(&guest, &header).unwrap();
        File::options()
            .write(true)
            .open(&guest)
            .unwrap()
            .set_len(300 << 20)
            .unwrap();
        let mut too_large = scratch.spec(&good, "out.img");
        too_large.guest_kernel = Some(guest.clone());
        match build(&too_large) {
            Err(MkimageError::GuestTooLarge {
                needed_mib,
                configured_mib: 256,
            }) => assert_eq!(needed_mib, 318),
            other => panic!("expected GuestTooLarge, got {other:?}"),
        }
        fs::remove_file(&guest).unwrap();

        fs::write(&guest, b"#!/bin/sh\n").unwrap();
        let mut not_guest = scratch.spec(&good, "out.img");
        not_guest.guest_kernel = Some(guest.clone());
        assert!(matches!(
            build(&not_guest),
            Err(MkimageError::NotGuest { .. })
        ));
        fs::remove_file(&guest).unwrap();

        let mut too_small = scratch.spec(&good, "out.img");
        too_small.size_bytes = Some(8 << 20);
        assert!(matches!(
            build(&too_small),
            Err(MkimageError::TooSmall { .. })
        ));

        fs::remove_file(scratch.0.join("role.conf")).unwrap();
        fs::remove_file(scratch.0.join("address.conf")).unwrap();
        assert_eq!(
            scratch.entries(),
            before,
            "a refused build left files behind"
        );
    }

    #[test]
    fn a_failed_write_leaves_no_partial_image() {
        let scratch = Scratch::new("partial");
        let config = PathBuf::from(format!("{CONFIGS}/primary-shared.conf"));
        // The output path names a directory, so the final rename fails after everything else
        // was written; the temporary image must be gone and the directory untouched.
        fs::create_dir(scratch.0.join("out.img")).unwrap();
        fs::write(scratch.0.join("out.img").join("keep"), b"x").unwrap();
        let before = scratch.entries();
        assert!(matches!(
            build(&scratch.spec(&config, "out.img")),
            Err(MkimageError::Write { .. })
        ));
        assert_eq!(scratch.entries(), before);
        assert!(scratch.0.join("out.img").join("keep").exists());
    }

    #[test]
    fn guest_payload_is_placed_under_understudy_guest() {
        let scratch = Scratch::new("guest");
        let config = PathBuf::from(format!("{CONFIGS}/backup-shared.conf"));
        let mut image = vec![0u8; 4096];
        image[56..60].copy_from_slice(b"RSC\x05");
        fs::write(scratch.0.join("Image"), &image).unwrap();
        fs::write(scratch.0.join("initrd"), b"070701 cpio").unwrap();
        let mut spec = scratch.spec(&config, "guest.img");
        spec.guest_kernel = Some(scratch.0.join("Image"));
        spec.guest_initrd = Some(scratch.0.join("initrd"));
        build(&spec).unwrap();
        assert_eq!(
            read_file_from_image(&spec.output, GUEST_KERNEL_PATH).unwrap(),
            image
        );
        assert_eq!(
            read_file_from_image(&spec.output, GUEST_INITRD_PATH).unwrap(),
            b"070701 cpio"
        );
    }
}
