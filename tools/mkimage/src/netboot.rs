//! The network-boot bundle: a TFTP root from which GRUB boots the kernel by multiboot2.

use crate::{
    progress, validate, ImageSpec, MkimageError, CONFIG_PATH, GUEST_INITRD_PATH, GUEST_KERNEL_PATH,
    KERNEL_PATH, LOADER_PATH,
};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The GRUB configuration of the network-boot bundle: the kernel by multiboot2, the role
/// config as its first module (the kernel reads the first module as its config), the guest
/// payload as further modules. `--nounzip` keeps GRUB from decompressing a gzip initrd, so
/// the kernel receives the same bytes as from the disk image.
fn netboot_grub_config(guest_kernel: bool, guest_initrd: bool) -> String {
    let mut modules = format!("    module2 --nounzip /{CONFIG_PATH} role-config\n");
    if guest_kernel {
        modules += &format!("    module2 --nounzip /{GUEST_KERNEL_PATH} guest-kernel\n");
    }
    if guest_initrd {
        modules += &format!("    module2 --nounzip /{GUEST_INITRD_PATH} guest-initrd\n");
    }
    format!(
        "# Understudy network boot: GRUB loads the kernel by multiboot2 over TFTP.\n\
         set timeout=0\n\
         set default=0\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         menuentry \"understudy\" {{\n\
         \x20   multiboot2 /{KERNEL_PATH}\n\
         {modules}\
         \x20   boot\n\
         }}\n"
    )
}

/// Removes a temporary directory unless the bundle was completed.
struct PartialDirectory {
    path: PathBuf,
    done: bool,
}

impl Drop for PartialDirectory {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes the network-boot bundle: a TFTP root with GRUB's PXE program
/// (`boot/grub/i386-pc/core.0`, from `grub-mknetdir`), its configuration, the kernel, the role
/// config and the guest payload. Point the DHCP server's boot file at `core.0`.
pub fn build_netboot(spec: &ImageSpec, directory: &Path) -> Result<(), MkimageError> {
    progress(format_args!(
        "validating inputs for the network-boot bundle"
    ));
    let inputs = validate(spec)?;
    if directory.exists() {
        return Err(MkimageError::NetbootExists {
            path: directory.to_path_buf(),
        });
    }
    let write_error = |source: io::Error| MkimageError::Write {
        path: directory.to_path_buf(),
        source,
    };
    let parent = directory
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = directory
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "netboot".into());
    let mut partial = PartialDirectory {
        path: parent.join(format!(".{name}.partial-{}", std::process::id())),
        done: false,
    };
    fs::create_dir_all(partial.path.join("understudy/guest")).map_err(write_error)?;

    progress(format_args!("adding GRUB's PXE boot program"));
    let net_directory = format!("--net-directory={}", partial.path.display());
    let status = std::process::Command::new("grub-mknetdir")
        .args([
            net_directory.as_str(),
            "--subdir=boot/grub",
            "-d",
            "/usr/lib/grub/i386-pc",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|error| MkimageError::GrubMknetdir {
            detail: error.to_string(),
        })?;
    if !status.success() {
        return Err(MkimageError::GrubMknetdir {
            detail: status.to_string(),
        });
    }
    let files = [
        Some((KERNEL_PATH, inputs.kernel.as_slice())),
        Some((CONFIG_PATH, inputs.config_text.as_slice())),
        Some((LOADER_PATH, inputs.loader.as_slice())),
        inputs
            .guest_kernel
            .as_deref()
            .map(|bytes| (GUEST_KERNEL_PATH, bytes)),
        inputs
            .guest_initrd
            .as_deref()
            .map(|bytes| (GUEST_INITRD_PATH, bytes)),
    ];
    fs::create_dir_all(partial.path.join("EFI/BOOT")).map_err(write_error)?;
    for (path, bytes) in files.into_iter().flatten() {
        fs::write(partial.path.join(path), bytes).map_err(write_error)?;
        progress(format_args!("copied {path} ({} bytes)", bytes.len()));
    }
    let grub_config =
        netboot_grub_config(inputs.guest_kernel.is_some(), inputs.guest_initrd.is_some());
    fs::write(partial.path.join("boot/grub/grub.cfg"), grub_config).map_err(write_error)?;
    fs::rename(&partial.path, directory).map_err(write_error)?;
    partial.done = true;
    progress(format_args!(
        "wrote the network-boot bundle {}: serve it by TFTP with boot file boot/grub/i386-pc/core.0",
        directory.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netboot_grub_config_loads_kernel_then_config_module_first() {
        let text = netboot_grub_config(true, false);
        let kernel = text.find("multiboot2 /understudy/kernel.elf").unwrap();
        let config = text
            .find("module2 --nounzip /understudy/role.conf")
            .unwrap();
        let guest = text
            .find("module2 --nounzip /understudy/guest/kernel")
            .unwrap();
        assert!(kernel < config && config < guest, "{text}");
        assert!(!text.contains("guest/initrd"));
    }
}
