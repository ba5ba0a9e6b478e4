//! The network-boot bundle: a TFTP root from which GRUB boots the kernel by multiboot2, each
//! machine with the role its MAC address is given.
//!
//! The bundle carries the config as given (`understudy/role.conf`) and one config per role
//! (`understudy/role-<role>.conf`: the same file with only its `role` line rewritten). GRUB's
//! menu has an entry per role; the generated `grub.cfg` picks the default entry by the MAC of
//! the NIC GRUB booted from (`$net_default_mac`, GRUB manual "Network"). A machine the bundle
//! does not name stops at the menu with a message instead of booting a role that another
//! machine may already have; with no MAC given at all, every machine boots `role.conf`.

use crate::role::{config_with_role, RoleLineError, ROLES};
use crate::{
    progress, validate, ImageSpec, Inputs, MkimageError, CONFIG_PATH, GUEST_INITRD_PATH,
    GUEST_KERNEL_PATH, KERNEL_PATH, LOADER_PATH,
};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use understudy_boot_config::Role;

/// Seconds GRUB shows its menu before it boots the machine's entry: time for an operator at the
/// console to choose another role or edit the entry, at this cost on every network boot.
pub const NETBOOT_MENU_TIMEOUT_S: u32 = 3;
/// GRUB's configuration file in the bundle (`grub-mknetdir --subdir=boot/grub`).
const GRUB_CONFIG_PATH: &str = "boot/grub/grub.cfg";

/// An Ethernet MAC address; shown as GRUB shows `$net_default_mac` (lowercase, colons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// Six two-digit hex bytes separated by `:` or `-`, in either case.
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split([':', '-']);
        for byte in &mut bytes {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(MacAddress(bytes))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One machine of the bundle: the NIC it boots from and its role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetbootRole {
    pub mac: MacAddress,
    pub role: Role,
}

/// Parses `--netboot-role` values (`MAC=ROLE`, e.g. `52:54:00:12:34:56=backup`); a MAC may be
/// named once.
pub fn parse_netboot_roles(texts: &[String]) -> Result<Vec<NetbootRole>, MkimageError> {
    let mut roles: Vec<NetbootRole> = Vec::new();
    for text in texts {
        let bad = |why| MkimageError::BadNetbootRole {
            text: text.clone(),
            why,
        };
        let (mac, role) = text
            .split_once('=')
            .ok_or(bad("expected MAC=ROLE, e.g. 52:54:00:12:34:56=backup"))?;
        let mac = MacAddress::parse(mac.trim()).ok_or(bad(
            "the MAC address needs six two-digit hex bytes separated by `:`, e.g. 52:54:00:12:34:56",
        ))?;
        let role = crate::role::role_named(role.trim())
            .ok_or(bad("unknown role: expected primary, backup or arbiter"))?;
        roles.push(NetbootRole { mac, role });
    }
    check_unique(&roles)?;
    Ok(roles)
}

fn check_unique(roles: &[NetbootRole]) -> Result<(), MkimageError> {
    for (index, machine) in roles.iter().enumerate() {
        if roles[..index].iter().any(|other| other.mac == machine.mac) {
            return Err(MkimageError::DuplicateMac { mac: machine.mac });
        }
    }
    Ok(())
}

/// The per-role config's path in the bundle.
fn role_config_path(role: Role) -> String {
    format!("understudy/role-{role}.conf")
}

/// A word quoted for a GRUB command line: single quotes stop GRUB's `$` expansion and word
/// splitting (GRUB manual "Quoting"); a quote inside is closed, escaped and reopened.
fn grub_quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// What goes into the GRUB configuration.
struct GrubMenu<'a> {
    guest_kernel: bool,
    guest_initrd: bool,
    /// The kernel command line's words, separated by one space.
    command_line: Option<&'a str>,
    /// The role of the config as given, booted by machines when no MAC is named.
    config_role: Role,
    machines: &'a [NetbootRole],
}

impl GrubMenu<'_> {
    /// One menu entry: the kernel by multiboot2 with the command line, the role config as its
    /// first module (the kernel reads the first module as its config), the guest payload as
    /// further modules. `--nounzip` keeps GRUB from decompressing a gzip initrd, so the kernel
    /// receives the same bytes as from the disk image.
    fn entry(&self, title: &str, id: &str, config_path: &str) -> String {
        let mut kernel_line = format!("multiboot2 /{KERNEL_PATH}");
        for word in self
            .command_line
            .into_iter()
            .flat_map(str::split_ascii_whitespace)
        {
            kernel_line.push(' ');
            kernel_line.push_str(&grub_quoted(word));
        }
        let mut modules = format!("    module2 --nounzip /{config_path} role-config\n");
        if self.guest_kernel {
            modules += &format!("    module2 --nounzip /{GUEST_KERNEL_PATH} guest-kernel\n");
        }
        if self.guest_initrd {
            modules += &format!("    module2 --nounzip /{GUEST_INITRD_PATH} guest-initrd\n");
        }
        format!("menuentry \"{title}\" --id {id} {{\n    {kernel_line}\n{modules}    boot\n}}\n")
    }

    /// The whole `grub.cfg`.
    fn render(&self) -> String {
        let mut text = format!(
            "# Understudy network boot (tools/mkimage --netboot): GRUB loads the kernel by multiboot2\n\
             # over TFTP, with the role config its entry names. The default entry is chosen below\n\
             # by the MAC address of the NIC GRUB booted from. At the menu an operator can choose\n\
             # another role's entry, or press `e` to edit an entry (e.g. add understudy.role=backup\n\
             # to its multiboot2 line) and Ctrl-x to boot it.\n\
             serial --unit=0 --speed=115200\n\
             terminal_input serial console\n\
             terminal_output serial console\n\
             set timeout={NETBOOT_MENU_TIMEOUT_S}\n"
        );
        if self.machines.is_empty() {
            text += &format!(
                "set default=config\n\
                 echo \"understudy: machine $net_default_mac boots as {} ({CONFIG_PATH})\"\n",
                self.config_role
            );
        } else {
            text += "set default=unknown\n";
            for machine in self.machines {
                text += &format!(
                    "if [ \"$net_default_mac\" = \"{}\" ]; then set default={}; fi\n",
                    machine.mac, machine.role
                );
            }
            text += "if [ \"$default\" = unknown ]; then\n\
                     \x20   echo \"understudy: machine $net_default_mac has no role in this bundle: choose one in the menu, or rebuild the bundle with mkimage --netboot-role $net_default_mac=ROLE\"\n\
                     \x20   set timeout=-1\n\
                     else\n\
                     \x20   echo \"understudy: machine $net_default_mac boots as $default\"\n\
                     fi\n";
        }
        if self.machines.is_empty() {
            text += &self.entry(
                &format!("understudy ({CONFIG_PATH}: {})", self.config_role),
                "config",
                CONFIG_PATH,
            );
        }
        for role in ROLES {
            text += &self.entry(
                &format!("understudy as {role}"),
                role.as_str(),
                &role_config_path(role),
            );
        }
        text
    }
}

/// The bundle's files other than GRUB's own: the kernel, the configs, the loader, the guest
/// payload and `grub.cfg`, by path.
fn bundle_files(
    inputs: &Inputs,
    spec: &ImageSpec,
    machines: &[NetbootRole],
) -> Result<Vec<(String, Vec<u8>)>, MkimageError> {
    let mut files = vec![
        (KERNEL_PATH.to_string(), inputs.kernel.clone()),
        (CONFIG_PATH.to_string(), inputs.config_text.clone()),
    ];
    for role in ROLES {
        let text =
            config_with_role(&inputs.config_text, role).map_err(|error: RoleLineError| {
                MkimageError::RoleLine {
                    path: spec.config.clone(),
                    error,
                }
            })?;
        files.push((role_config_path(role), text));
    }
    files.push((LOADER_PATH.to_string(), inputs.loader.clone()));
    if let Some(bytes) = &inputs.guest_kernel {
        files.push((GUEST_KERNEL_PATH.to_string(), bytes.clone()));
    }
    if let Some(bytes) = &inputs.guest_initrd {
        files.push((GUEST_INITRD_PATH.to_string(), bytes.clone()));
    }
    let command_line = inputs
        .command_line
        .as_deref()
        .map(|words| std::str::from_utf8(words).expect("checked printable ASCII"));
    let menu = GrubMenu {
        guest_kernel: inputs.guest_kernel.is_some(),
        guest_initrd: inputs.guest_initrd.is_some(),
        command_line,
        config_role: inputs.config.role,
        machines,
    };
    files.push((GRUB_CONFIG_PATH.to_string(), menu.render().into_bytes()));
    Ok(files)
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
/// configs and the guest payload. Point the DHCP server's boot file at `core.0`. Each of
/// `machines` boots with its role; see the module docs for the others.
pub fn build_netboot(
    spec: &ImageSpec,
    directory: &Path,
    machines: &[NetbootRole],
) -> Result<(), MkimageError> {
    progress(format_args!(
        "validating inputs for the network-boot bundle"
    ));
    let inputs = validate(spec)?;
    check_unique(machines)?;
    let files = bundle_files(&inputs, spec, machines)?;
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
    fs::create_dir_all(partial.path.join("EFI/BOOT")).map_err(write_error)?;
    for (path, bytes) in &files {
        fs::write(partial.path.join(path), bytes).map_err(write_error)?;
        progress(format_args!("copied {path} ({} bytes)", bytes.len()));
    }
    fs::rename(&partial.path, directory).map_err(write_error)?;
    partial.done = true;
    for machine in machines {
        progress(format_args!(
            "machine {} boots as {}",
            machine.mac, machine.role
        ));
    }
    if machines.is_empty() {
        progress(format_args!(
            "every machine boots as {} ({CONFIG_PATH})",
            inputs.config.role
        ));
    } else {
        progress(format_args!(
            "other machines wait at GRUB's menu for an operator"
        ));
    }
    progress(format_args!(
        "wrote the network-boot bundle {}: serve it by TFTP with boot file boot/grub/i386-pc/core.0",
        directory.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::role_of;
    use crate::test_support::{Scratch, CONFIGS};

    fn files_of(spec: &ImageSpec, machines: &[NetbootRole]) -> Vec<(String, Vec<u8>)> {
        bundle_files(&validate(spec).unwrap(), spec, machines).unwrap()
    }

    fn file<'a>(files: &'a [(String, Vec<u8>)], path: &str) -> &'a str {
        let (_, bytes) = files.iter().find(|(p, _)| p == path).unwrap();
        std::str::from_utf8(bytes).unwrap()
    }

    fn machines(texts: &[&str]) -> Vec<NetbootRole> {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        parse_netboot_roles(&texts).unwrap()
    }

    #[test]
    fn each_entry_loads_the_kernel_then_its_role_config_then_the_guest() {
        let scratch = Scratch::new("netboot-entries");
        let mut spec = scratch.spec(
            Path::new(&format!("{CONFIGS}/backup-separate.conf")),
            "unused",
        );
        let guest = scratch.0.join("Image");
        let mut image = vec![0u8; 4096];
        image[56..60].copy_from_slice(b"RSC\x05");
        fs::write(&guest, image).unwrap();
        spec.guest_kernel = Some(guest);
        let files = files_of(&spec, &[]);
        let text = file(&files, GRUB_CONFIG_PATH);
        assert!(text.contains("set default=config\n"), "{text}");
        for (id, config) in [
            ("config", "understudy/role.conf"),
            ("primary", "understudy/role-primary.conf"),
            ("backup", "understudy/role-backup.conf"),
            ("arbiter", "understudy/role-arbiter.conf"),
        ] {
            let entry = &text[text.find(&format!("--id {id} {{")).unwrap()..];
            let entry = &entry[..entry.find("\n}\n").unwrap()];
            let kernel = entry.find("multiboot2 /understudy/kernel.elf\n").unwrap();
            let config = entry
                .find(&format!("module2 --nounzip /{config} role-config"))
                .unwrap();
            let guest = entry
                .find("module2 --nounzip /understudy/guest/kernel guest-kernel")
                .unwrap();
            assert!(kernel < config && config < guest, "{entry}");
            assert!(!entry.contains("guest/initrd"));
        }
    }

    #[test]
    fn role_configs_differ_from_the_given_config_only_in_the_role_line() {
        let scratch = Scratch::new("netboot-configs");
        let path = format!("{CONFIGS}/primary-separate.conf");
        let given = fs::read_to_string(&path).unwrap();
        let files = files_of(&scratch.spec(Path::new(&path), "unused"), &[]);
        assert_eq!(file(&files, CONFIG_PATH), given);
        for role in ROLES {
            let text = file(&files, &role_config_path(role));
            assert_eq!(role_of(text.as_bytes()), Ok(role));
            assert_eq!(
                text,
                given.replace("\nrole = primary\n", &format!("\nrole = {role}\n"))
            );
        }
    }

    #[test]
    fn each_named_mac_selects_its_role_and_other_machines_wait_at_the_menu() {
        let scratch = Scratch::new("netboot-macs");
        let spec = scratch.spec(
            Path::new(&format!("{CONFIGS}/primary-shared.conf")),
            "unused",
        );
        let named = machines(&[
            "52:54:00:00:00:01=primary",
            "52-54-00-00-00-0B=backup",
            " 52:54:00:00:00:0c = arbiter ",
        ]);
        let files = files_of(&spec, &named);
        let text = file(&files, GRUB_CONFIG_PATH);
        for line in [
            "if [ \"$net_default_mac\" = \"52:54:00:00:00:01\" ]; then set default=primary; fi",
            "if [ \"$net_default_mac\" = \"52:54:00:00:00:0b\" ]; then set default=backup; fi",
            "if [ \"$net_default_mac\" = \"52:54:00:00:00:0c\" ]; then set default=arbiter; fi",
            "    set timeout=-1",
            "set default=unknown",
        ] {
            assert!(text.contains(line), "no `{line}` in\n{text}");
        }
        // The entry booting role.conf exists only when no machine is named.
        assert!(!text.contains("--id config"), "{text}");
        assert!(text.contains("has no role in this bundle"), "{text}");
    }

    #[test]
    fn the_command_line_goes_on_every_multiboot2_line_quoted() {
        let scratch = Scratch::new("netboot-cmdline");
        let mut spec = scratch.spec(
            Path::new(&format!("{CONFIGS}/primary-shared.conf")),
            "unused",
        );
        spec.cmdline = Some("understudy.selftest=disk  it's$x".into());
        let files = files_of(&spec, &[]);
        let text = file(&files, GRUB_CONFIG_PATH);
        let line = "multiboot2 /understudy/kernel.elf 'understudy.selftest=disk' 'it'\\''s$x'\n";
        assert_eq!(text.matches(line).count(), 4, "{text}");
    }

    #[test]
    fn bad_netboot_roles_are_refused() {
        for bad in [
            "52:54:00:00:00:01",
            "52:54:00:00:00=backup",
            "52:54:00:00:00:01:02=backup",
            "52:54:00:00:00:1=backup",
            "52:54:00:00:00:zz=backup",
            "52:54:00:00:00:01=leader",
        ] {
            let error = parse_netboot_roles(&[bad.to_string()]).unwrap_err();
            assert!(
                matches!(error, MkimageError::BadNetbootRole { .. }),
                "{bad}: {error}"
            );
        }
        let twice = [
            "52:54:00:00:00:01=primary".to_string(),
            "52:54:00:00:00:01=backup".to_string(),
        ];
        assert!(matches!(
            parse_netboot_roles(&twice),
            Err(MkimageError::DuplicateMac { .. })
        ));
    }
}
