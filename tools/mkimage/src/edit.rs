//! Editing a built image, or a USB stick it was written to, in place: the machine's role and
//! the kernel command line.
//!
//! The image is found the way firmware finds it: the GPT names the EFI system partition, and the
//! files are read from its FAT volume. A block device works like an image file (it is opened
//! read-write without truncation, and only the changed file's clusters and directory entry are
//! written). Everything is read and checked before the first write, so bad input changes
//! nothing.

use crate::role::{self, RoleLineError};
use crate::{
    command_line_words, PartitionWindow, CMDLINE_PATH, CONFIG_PATH, FIXED_TIME, SECTOR_BYTES,
};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use understudy_boot_config::{ConfigError, Role, CONFIG_BYTES_MAX};
use understudy_boot_memory::cmdline::{CommandLineError, COMMAND_LINE_FILE_BYTES_MAX};

/// The kernel option that overrides the config's role at boot.
pub const ROLE_OPTION: &str = "understudy.role=";

/// Why an image was not read or changed. Each names the image and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{path}: cannot open: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: not a GPT disk ({detail}): pass an image built by mkimage, or the whole USB stick (e.g. /dev/sdb, not /dev/sdb1)")]
    NotGpt { path: PathBuf, detail: String },
    #[error(
        "{path}: the partition table has no EFI system partition: is this an understudy image?"
    )]
    NoEsp { path: PathBuf },
    #[error("{path}: the EFI system partition ends at byte {end}, past the end of the disk ({disk_bytes} bytes): was the image written completely?")]
    EspOutsideDisk {
        path: PathBuf,
        end: u64,
        disk_bytes: u64,
    },
    #[error("{path}: the EFI system partition is not a FAT volume ({source}): rebuild the image with mkimage")]
    NotFat { path: PathBuf, source: io::Error },
    #[error(
        "{path}: no /{file} on the EFI system partition: rebuild the image with mkimage --config"
    )]
    Missing { path: PathBuf, file: &'static str },
    #[error("{path}: /{file} is larger than {max} bytes: is this an understudy image?")]
    TooLarge {
        path: PathBuf,
        file: &'static str,
        max: usize,
    },
    #[error("{path}: /{CONFIG_PATH}: {error}")]
    Config { path: PathBuf, error: ConfigError },
    #[error("{path}: /{CONFIG_PATH}: {error}")]
    RoleLine { path: PathBuf, error: RoleLineError },
    #[error("unknown role `{name}`: expected primary, backup or arbiter")]
    UnknownRole { name: String },
    #[error("{path}: /{CMDLINE_PATH} sets {ROLE_OPTION}{role}, which overrides role.conf at boot: drop that word first with mkimage set-cmdline --image {path} --cmdline '...'")]
    RoleOverridden { path: PathBuf, role: String },
    #[error("{path}: /{CMDLINE_PATH}: {error}")]
    CmdlineFile {
        path: PathBuf,
        error: CommandLineError,
    },
    #[error("--cmdline: {0}")]
    Cmdline(CommandLineError),
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: /{file} reads back different from what was written: the disk may be failing")]
    ReadBack { path: PathBuf, file: &'static str },
}

/// The EFI system partition of an opened disk: a byte window of the image or device.
struct Esp {
    file: File,
    start: u64,
    length: u64,
}

impl Esp {
    /// Opens `path` and finds its EFI system partition through the GPT. Reads only.
    fn open(path: &Path, writable: bool) -> Result<Self, EditError> {
        let mut file = File::options()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|source| EditError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        // A block device's metadata says 0 bytes; its end is where seeking stops.
        let disk_bytes = file
            .seek(SeekFrom::End(0))
            .map_err(|source| EditError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let not_gpt = |detail: String| EditError::NotGpt {
            path: path.to_path_buf(),
            detail,
        };
        if disk_bytes < 34 * SECTOR_BYTES {
            return Err(not_gpt(format!("only {disk_bytes} bytes")));
        }
        let disk = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
            .open_from_device(&mut file)
            .map_err(|error| not_gpt(error.to_string()))?;
        let esp = disk
            .partitions()
            .values()
            .find(|partition| partition.part_type_guid == gpt::partition_types::EFI)
            .ok_or_else(|| EditError::NoEsp {
                path: path.to_path_buf(),
            })?;
        let start = esp.first_lba * SECTOR_BYTES;
        let end = (esp.last_lba + 1) * SECTOR_BYTES;
        drop(disk);
        if end > disk_bytes || end <= start {
            return Err(EditError::EspOutsideDisk {
                path: path.to_path_buf(),
                end,
                disk_bytes,
            });
        }
        Ok(Esp {
            file,
            start,
            length: end - start,
        })
    }

    /// Mounts the FAT volume. File times written by an edit are the image's fixed date, so an
    /// edited image has the same bytes as one built with the edited files.
    fn volume(&mut self, path: &Path) -> Result<fatfs::FileSystem<PartitionWindow<'_>>, EditError> {
        let window = PartitionWindow {
            file: &mut self.file,
            start: self.start,
            length: self.length,
            position: 0,
        };
        fatfs::FileSystem::new(window, fatfs::FsOptions::new().time_provider(&FIXED_TIME)).map_err(
            |source| EditError::NotFat {
                path: path.to_path_buf(),
                source,
            },
        )
    }
}

/// Reads `file` from the volume, or `None` when it does not exist.
fn read_optional(
    volume: &fatfs::FileSystem<PartitionWindow<'_>>,
    path: &Path,
    file: &'static str,
    max: usize,
) -> Result<Option<Vec<u8>>, EditError> {
    let read_error = |source| EditError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut handle = match volume.root_dir().open_file(file) {
        Ok(handle) => handle,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(source)),
    };
    let mut bytes = Vec::new();
    (&mut handle)
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() > max {
        return Err(EditError::TooLarge {
            path: path.to_path_buf(),
            file,
            max,
        });
    }
    Ok(Some(bytes))
}

/// Replaces the contents of `file` in place: it keeps its first cluster and directory entry,
/// so only the file's data, its size and (when it shrinks past a cluster) the FAT change. The
/// bytes a shorter text leaves behind are zeroed, as in a freshly built image.
fn write_in_place(
    volume: &fatfs::FileSystem<PartitionWindow<'_>>,
    file: &str,
    bytes: &[u8],
    old_bytes: usize,
) -> io::Result<()> {
    let mut handle = volume.root_dir().create_file(file)?;
    handle.write_all(bytes)?;
    let stale = old_bytes.saturating_sub(bytes.len());
    if stale > 0 {
        handle.write_all(&vec![0u8; stale])?;
        handle.seek(SeekFrom::Start(bytes.len() as u64))?;
    }
    // Cuts what is left of a longer old text.
    handle.truncate()?;
    handle.flush()
}

/// The role config of an image.
fn read_config(
    volume: &fatfs::FileSystem<PartitionWindow<'_>>,
    path: &Path,
) -> Result<Vec<u8>, EditError> {
    read_optional(volume, path, CONFIG_PATH, CONFIG_BYTES_MAX)?.ok_or_else(|| EditError::Missing {
        path: path.to_path_buf(),
        file: CONFIG_PATH,
    })
}

/// The value of the last `understudy.role=` word of a command line, the one the kernel obeys.
fn role_option(words: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(words).ok()?;
    text.split(' ')
        .filter_map(|word| word.strip_prefix(ROLE_OPTION))
        .next_back()
        .map(str::to_string)
}

/// The image's command line words, or `None` when it has no `/understudy/cmdline`.
fn read_command_line(
    volume: &fatfs::FileSystem<PartitionWindow<'_>>,
    path: &Path,
) -> Result<Option<Vec<u8>>, EditError> {
    let Some(bytes) = read_optional(volume, path, CMDLINE_PATH, COMMAND_LINE_FILE_BYTES_MAX)?
    else {
        return Ok(None);
    };
    let error = |error| EditError::CmdlineFile {
        path: path.to_path_buf(),
        error,
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| error(CommandLineError::NotPrintable { line: 1 }))?;
    command_line_words(text).map_err(error)
}

/// An image's role: the one in `role.conf`, and the one its command line sets, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRole {
    pub config: Role,
    /// The value of the image's `understudy.role=` word, which the kernel takes over `config`.
    pub command_line: Option<String>,
}

/// The role the image's `role.conf` names (checked by the kernel's parser), and the role its
/// `/understudy/cmdline` sets.
pub fn show_role(image: &Path) -> Result<ImageRole, EditError> {
    let mut esp = Esp::open(image, false)?;
    let volume = esp.volume(image)?;
    let text = read_config(&volume, image)?;
    let config = role::role_of(&text).map_err(|error| EditError::Config {
        path: image.to_path_buf(),
        error,
    })?;
    let command_line = read_command_line(&volume, image)?
        .as_deref()
        .and_then(role_option);
    Ok(ImageRole {
        config,
        command_line,
    })
}

/// What `set_role` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleChange {
    /// The role before, when the old config named a valid one.
    pub previous: Option<Role>,
    /// False when the image already had the role, and nothing was written.
    pub written: bool,
}

/// Sets the role in the image's `role.conf`: only the value of its `role` line changes. The new
/// config is checked before anything is written, and read back after.
pub fn set_role(image: &Path, role_name: &str) -> Result<RoleChange, EditError> {
    let role = role::role_named(role_name).ok_or_else(|| EditError::UnknownRole {
        name: role_name.to_string(),
    })?;
    let (old, new) = {
        let mut esp = Esp::open(image, false)?;
        let volume = esp.volume(image)?;
        if let Some(role) = read_command_line(&volume, image)?
            .as_deref()
            .and_then(role_option)
        {
            return Err(EditError::RoleOverridden {
                path: image.to_path_buf(),
                role,
            });
        }
        let old = read_config(&volume, image)?;
        let new = role::config_with_role(&old, role).map_err(|error| EditError::RoleLine {
            path: image.to_path_buf(),
            error,
        })?;
        (old, new)
    };
    let previous = role::role_of(&old).ok();
    if old == new {
        return Ok(RoleChange {
            previous,
            written: false,
        });
    }
    let write_error = |source| EditError::Write {
        path: image.to_path_buf(),
        source,
    };
    {
        let mut esp = Esp::open(image, true)?;
        let volume = esp.volume(image)?;
        write_in_place(&volume, CONFIG_PATH, &new, old.len()).map_err(write_error)?;
        volume.unmount().map_err(write_error)?;
        esp.file.sync_all().map_err(write_error)?;
    }
    let mut esp = Esp::open(image, false)?;
    let volume = esp.volume(image)?;
    if read_config(&volume, image)? != new {
        return Err(EditError::ReadBack {
            path: image.to_path_buf(),
            file: CONFIG_PATH,
        });
    }
    Ok(RoleChange {
        previous,
        written: true,
    })
}

/// Sets the kernel command line the loader passes: `/understudy/cmdline` holds the words of
/// `text`; no words remove the file. Checked by the loader's rules before anything is written.
pub fn set_cmdline(image: &Path, text: &str) -> Result<(), EditError> {
    let words = command_line_words(text).map_err(EditError::Cmdline)?;
    let old = {
        let mut esp = Esp::open(image, false)?;
        let volume = esp.volume(image)?;
        // An image that cannot boot is not edited: it needs a role config.
        read_config(&volume, image)?;
        read_optional(&volume, image, CMDLINE_PATH, COMMAND_LINE_FILE_BYTES_MAX)?
    };
    let new = words.map(|mut words| {
        words.push(b'\n');
        words
    });
    if old == new {
        return Ok(());
    }
    let write_error = |source| EditError::Write {
        path: image.to_path_buf(),
        source,
    };
    let mut esp = Esp::open(image, true)?;
    let volume = esp.volume(image)?;
    match &new {
        Some(bytes) => {
            let old_bytes = old.as_ref().map_or(0, Vec::len);
            write_in_place(&volume, CMDLINE_PATH, bytes, old_bytes).map_err(write_error)?;
        }
        None => volume
            .root_dir()
            .remove(CMDLINE_PATH)
            .map_err(write_error)?,
    }
    volume.unmount().map_err(write_error)?;
    esp.file.sync_all().map_err(write_error)?;
    drop(esp);
    let mut esp = Esp::open(image, false)?;
    let volume = esp.volume(image)?;
    if read_optional(&volume, image, CMDLINE_PATH, COMMAND_LINE_FILE_BYTES_MAX)? != new {
        return Err(EditError::ReadBack {
            path: image.to_path_buf(),
            file: CMDLINE_PATH,
        });
    }
    Ok(())
}

/// Reads one file back from an image's EFI system partition.
pub fn read_file(image: &Path, file: &'static str, max: usize) -> Result<Vec<u8>, EditError> {
    let mut esp = Esp::open(image, false)?;
    let volume = esp.volume(image)?;
    read_optional(&volume, image, file, max)?.ok_or_else(|| EditError::Missing {
        path: image.to_path_buf(),
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;
    use crate::test_support::{Scratch, CONFIGS};
    use std::fs;

    /// Builds the image of `config` (a file in configs/) as `name` in the scratch directory.
    fn image(scratch: &Scratch, config: &str, name: &str) -> PathBuf {
        let spec = scratch.spec(Path::new(&format!("{CONFIGS}/{config}")), name);
        build(&spec).unwrap();
        spec.output
    }

    /// Changes the image behind mkimage's back, to make inputs it would never build.
    fn tamper(image: &Path, file: &str, contents: Option<&[u8]>) {
        let mut esp = Esp::open(image, true).unwrap();
        let volume = esp.volume(image).unwrap();
        match contents {
            Some(bytes) => write_in_place(&volume, file, bytes, 0).unwrap(),
            None => volume.root_dir().remove(file).unwrap(),
        }
        volume.unmount().unwrap();
    }

    /// Fails with the first offsets where two images differ.
    fn assert_same_bytes(a: &Path, b: &Path) {
        let (a_bytes, b_bytes) = (fs::read(a).unwrap(), fs::read(b).unwrap());
        assert_eq!(a_bytes.len(), b_bytes.len());
        let differing: Vec<String> = (0..a_bytes.len())
            .filter(|&i| a_bytes[i] != b_bytes[i])
            .take(8)
            .map(|i| format!("{i:#x}: {:#04x} != {:#04x}", a_bytes[i], b_bytes[i]))
            .collect();
        assert!(
            differing.is_empty(),
            "{} and {} differ at {differing:?}",
            a.display(),
            b.display()
        );
    }

    #[test]
    fn set_role_gives_the_bytes_of_an_image_built_with_that_role() {
        let scratch = Scratch::new("set-role");
        let primary = image(&scratch, "primary-separate.conf", "primary.img");
        let text = fs::read_to_string(format!("{CONFIGS}/primary-separate.conf")).unwrap();
        let backup_config = scratch.0.join("backup.conf");
        fs::write(
            &backup_config,
            text.replace("\nrole = primary\n", "\nrole = backup\n"),
        )
        .unwrap();
        let backup = scratch.spec(&backup_config, "backup.img");
        build(&backup).unwrap();
        let backup = backup.output;
        let flipped = scratch.0.join("flipped.img");
        fs::copy(&primary, &flipped).unwrap();
        assert_eq!(show_role(&flipped).unwrap().config, Role::Primary);

        let change = set_role(&flipped, "backup").unwrap();
        assert_eq!(
            change,
            RoleChange {
                previous: Some(Role::Primary),
                written: true
            }
        );
        assert_eq!(show_role(&flipped).unwrap().config, Role::Backup);
        // Only role.conf's data and directory entry changed, exactly as a build with the
        // backup's config lays them out: every other byte of the image is the same.
        assert_same_bytes(&flipped, &backup);

        set_role(&flipped, "arbiter").unwrap();
        assert_eq!(show_role(&flipped).unwrap().config, Role::Arbiter);
        set_role(&flipped, "primary").unwrap();
        assert_same_bytes(&flipped, &primary);
    }

    #[test]
    fn set_role_to_the_role_the_image_has_writes_nothing() {
        let scratch = Scratch::new("same-role");
        let primary = image(&scratch, "primary-shared.conf", "primary.img");
        let before = fs::read(&primary).unwrap();
        let change = set_role(&primary, "primary").unwrap();
        assert!(!change.written);
        assert!(fs::read(&primary).unwrap() == before);
    }

    #[test]
    fn set_role_works_on_a_disk_larger_than_the_image() {
        // A USB stick the image was written to: the same bytes, then the rest of the stick.
        let scratch = Scratch::new("stick");
        let primary = image(&scratch, "primary-separate.conf", "primary.img");
        let stick = scratch.0.join("stick");
        fs::copy(&primary, &stick).unwrap();
        let image_bytes = fs::metadata(&primary).unwrap().len();
        File::options()
            .write(true)
            .open(&stick)
            .unwrap()
            .set_len(image_bytes + (32 << 20))
            .unwrap();
        set_role(&stick, "backup").unwrap();
        assert_eq!(show_role(&stick).unwrap().config, Role::Backup);
        let bytes = fs::read(&stick).unwrap();
        assert_eq!(bytes.len() as u64, image_bytes + (32 << 20));
        assert!(bytes[image_bytes as usize..].iter().all(|&b| b == 0));
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let scratch = Scratch::new("set-role-refused");
        let primary = image(&scratch, "primary-separate.conf", "primary.img");
        let original = fs::read(&primary).unwrap();
        let unchanged = |path: &Path, expected: &[u8]| {
            assert!(
                fs::read(path).unwrap() == expected,
                "{} changed",
                path.display()
            );
        };

        let error = set_role(&primary, "leader").unwrap_err();
        assert!(matches!(error, EditError::UnknownRole { .. }), "{error}");
        unchanged(&primary, &original);

        let missing = scratch.0.join("missing.img");
        assert!(matches!(
            set_role(&missing, "backup"),
            Err(EditError::Open { .. })
        ));
        assert!(!missing.exists());

        let zeros = scratch.0.join("zeros.img");
        fs::write(&zeros, vec![0u8; 4 << 20]).unwrap();
        let error = set_role(&zeros, "backup").unwrap_err();
        assert!(matches!(error, EditError::NotGpt { .. }), "{error}");
        assert!(error.to_string().contains("not a GPT disk"), "{error}");
        unchanged(&zeros, &vec![0u8; 4 << 20]);
        fs::write(&zeros, b"short").unwrap();
        assert!(matches!(
            set_role(&zeros, "backup"),
            Err(EditError::NotGpt { .. })
        ));

        // A GPT disk whose only partition is not an EFI system partition.
        let linux = scratch.0.join("linux.img");
        fs::copy(&primary, &linux).unwrap();
        {
            let mut file = File::options().read(true).write(true).open(&linux).unwrap();
            let mut disk = gpt::GptConfig::new()
                .writable(true)
                .open_from_device(&mut file)
                .unwrap();
            let mut partitions = disk.partitions().clone();
            partitions.get_mut(&1).unwrap().part_type_guid = gpt::partition_types::LINUX_FS;
            disk.update_partitions(partitions).unwrap();
            disk.write().unwrap();
        }
        let linux_bytes = fs::read(&linux).unwrap();
        let error = set_role(&linux, "backup").unwrap_err();
        assert!(matches!(error, EditError::NoEsp { .. }), "{error}");
        unchanged(&linux, &linux_bytes);

        let no_config = scratch.0.join("no-config.img");
        fs::copy(&primary, &no_config).unwrap();
        tamper(&no_config, CONFIG_PATH, None);
        let no_config_bytes = fs::read(&no_config).unwrap();
        let error = set_role(&no_config, "backup").unwrap_err();
        assert!(matches!(error, EditError::Missing { .. }), "{error}");
        assert!(matches!(
            show_role(&no_config),
            Err(EditError::Missing { .. })
        ));
        unchanged(&no_config, &no_config_bytes);

        let no_role = scratch.0.join("no-role.img");
        fs::copy(&primary, &no_role).unwrap();
        let text = fs::read_to_string(format!("{CONFIGS}/primary-separate.conf")).unwrap();
        tamper(
            &no_role,
            CONFIG_PATH,
            Some(text.replace("role = primary", "").as_bytes()),
        );
        let no_role_bytes = fs::read(&no_role).unwrap();
        let error = set_role(&no_role, "backup").unwrap_err();
        assert!(
            matches!(
                error,
                EditError::RoleLine {
                    error: RoleLineError::NoRoleLine,
                    ..
                }
            ),
            "{error}"
        );
        unchanged(&no_role, &no_role_bytes);
        assert!(matches!(
            show_role(&no_role),
            Err(EditError::Config {
                error: ConfigError::MissingKey { key: "role" },
                ..
            })
        ));
    }

    #[test]
    fn set_cmdline_gives_the_bytes_of_an_image_built_with_that_cmdline() {
        let scratch = Scratch::new("set-cmdline");
        let config = PathBuf::from(format!("{CONFIGS}/primary-shared.conf"));
        let plain = scratch.spec(&config, "plain.img");
        build(&plain).unwrap();
        let mut with_cmdline = scratch.spec(&config, "with-cmdline.img");
        with_cmdline.cmdline = Some("understudy.role=backup".into());
        build(&with_cmdline).unwrap();

        set_cmdline(&plain.output, "  understudy.role=backup  # from the test\n").unwrap();
        assert_same_bytes(&plain.output, &with_cmdline.output);
        assert_eq!(
            read_file(&plain.output, CMDLINE_PATH, 4096).unwrap(),
            b"understudy.role=backup\n"
        );
        assert_eq!(
            show_role(&plain.output).unwrap(),
            ImageRole {
                config: Role::Primary,
                command_line: Some("backup".into())
            }
        );

        set_cmdline(&plain.output, "understudy.selftest=disk").unwrap();
        assert_eq!(
            read_file(&plain.output, CMDLINE_PATH, 4096).unwrap(),
            b"understudy.selftest=disk\n"
        );
        assert_eq!(show_role(&plain.output).unwrap().command_line, None);
        set_cmdline(&plain.output, "").unwrap();
        assert!(matches!(
            read_file(&plain.output, CMDLINE_PATH, 4096),
            Err(EditError::Missing { .. })
        ));
    }

    #[test]
    fn set_role_is_refused_while_the_command_line_overrides_the_role() {
        let scratch = Scratch::new("overridden");
        let primary = image(&scratch, "primary-separate.conf", "primary.img");
        set_cmdline(&primary, "understudy.selftest=disk understudy.role=arbiter").unwrap();
        let before = fs::read(&primary).unwrap();
        let error = set_role(&primary, "backup").unwrap_err();
        assert!(
            matches!(&error, EditError::RoleOverridden { role, .. } if role == "arbiter"),
            "{error}"
        );
        assert!(error.to_string().contains("set-cmdline"), "{error}");
        assert!(fs::read(&primary).unwrap() == before);

        set_cmdline(&primary, "understudy.selftest=disk").unwrap();
        set_role(&primary, "backup").unwrap();
        assert_eq!(show_role(&primary).unwrap().config, Role::Backup);
    }

    #[test]
    fn a_bad_command_line_is_refused_and_changes_nothing() {
        let scratch = Scratch::new("bad-cmdline");
        let primary = image(&scratch, "primary-separate.conf", "primary.img");
        let before = fs::read(&primary).unwrap();
        for bad in ["understudy.role=b\u{e4}ckup", &"x".repeat(3000)] {
            let error = set_cmdline(&primary, bad).unwrap_err();
            assert!(matches!(error, EditError::Cmdline(_)), "{error}");
            assert!(fs::read(&primary).unwrap() == before);
        }
        let mut spec = scratch.spec(
            Path::new(&format!("{CONFIGS}/primary-separate.conf")),
            "bad.img",
        );
        spec.cmdline = Some("understudy.role=b\u{e4}ckup".into());
        assert!(matches!(
            build(&spec),
            Err(crate::MkimageError::Cmdline(
                CommandLineError::NotPrintable { line: 1 }
            ))
        ));
        assert!(!spec.output.exists());
    }
}
