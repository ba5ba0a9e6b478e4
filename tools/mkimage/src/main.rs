//! `mkimage`: builds the bootable Understudy appliance image, and flips the role of a built one
//! (see the library docs).

use std::path::PathBuf;
use std::process::ExitCode;
use understudy_mkimage::{
    build, build_netboot, parse_netboot_roles, set_cmdline, set_role, show_role, ImageSpec,
    NetbootRole, ROLE_OPTION,
};

const USAGE: &str =
    "usage: mkimage --loader BOOTX64.EFI --kernel understudy-kernel --config role.conf \
[--guest-kernel Image [--guest-initrd initrd]] [--cmdline WORDS] [--size-mib N] [--output disk.img] \
[--netboot DIRECTORY [--netboot-role MAC=ROLE]...]
       mkimage show-role --image disk.img|/dev/sdX
       mkimage set-role --image disk.img|/dev/sdX --role primary|backup|arbiter
       mkimage set-cmdline --image disk.img|/dev/sdX --cmdline WORDS
  --output writes the GPT disk image (UEFI boot, e.g. a USB stick);
  --netboot writes a TFTP directory that boots the same kernel and config by PXE through GRUB;
  --netboot-role (repeated) gives the machine whose NIC has that MAC address its role; machines
    not named wait at GRUB's menu. Without it every machine boots the --config role;
  --cmdline gives the kernel command line (e.g. understudy.role=backup): in the image's
    /understudy/cmdline, and on the bundle's GRUB multiboot2 line.
  show-role prints the role the machine boots as: the one in /understudy/role.conf, or the
    understudy.role= word of /understudy/cmdline, which overrides it;
  set-role rewrites only the `role = ...` line of /understudy/role.conf, in an image file or on
    a USB stick it was written to (pass the whole device, e.g. /dev/sdb), without rebuilding;
  set-cmdline writes /understudy/cmdline the same way (--cmdline '' removes it).";

/// What the command line asks for.
enum Command {
    Build {
        spec: ImageSpec,
        netboot: Option<PathBuf>,
        machines: Vec<NetbootRole>,
    },
    ShowRole {
        image: PathBuf,
    },
    SetRole {
        image: PathBuf,
        role: String,
    },
    SetCmdline {
        image: PathBuf,
        cmdline: String,
    },
}

/// Walks `--flag value` pairs, calling `accept` with each; `accept` says whether it knew the flag.
fn flags(
    arguments: &[String],
    mut accept: impl FnMut(&str, &mut dyn FnMut() -> Result<String, String>) -> Result<bool, String>,
) -> Result<(), String> {
    let mut words = arguments.iter();
    while let Some(flag) = words.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let mut value = || {
            words
                .next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        if !accept(flag, &mut value)? {
            return Err(format!("unknown argument {flag}\n{USAGE}"));
        }
    }
    Ok(())
}

fn parse_build(arguments: &[String]) -> Result<Command, String> {
    let mut spec = ImageSpec {
        loader: PathBuf::new(),
        kernel: PathBuf::new(),
        config: PathBuf::new(),
        guest_kernel: None,
        guest_initrd: None,
        cmdline: None,
        output: PathBuf::new(),
        size_bytes: None,
    };
    let mut netboot: Option<PathBuf> = None;
    let mut netboot_roles: Vec<String> = Vec::new();
    flags(arguments, |flag, value| {
        match flag {
            "--loader" => spec.loader = value()?.into(),
            "--kernel" => spec.kernel = value()?.into(),
            "--config" => spec.config = value()?.into(),
            "--guest-kernel" => spec.guest_kernel = Some(value()?.into()),
            "--guest-initrd" => spec.guest_initrd = Some(value()?.into()),
            "--cmdline" => spec.cmdline = Some(value()?),
            "--output" => spec.output = value()?.into(),
            "--netboot" => netboot = Some(value()?.into()),
            "--netboot-role" => netboot_roles.push(value()?),
            "--size-mib" => {
                let mib: u64 = value()?
                    .parse()
                    .map_err(|_| "--size-mib needs a number".to_string())?;
                spec.size_bytes = Some(mib << 20);
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    for (name, path) in [
        ("--loader", &spec.loader),
        ("--kernel", &spec.kernel),
        ("--config", &spec.config),
    ] {
        if path.as_os_str().is_empty() {
            return Err(format!("{name} is required\n{USAGE}"));
        }
    }
    if spec.output.as_os_str().is_empty() && netboot.is_none() {
        return Err(format!("--output or --netboot is required\n{USAGE}"));
    }
    if !netboot_roles.is_empty() && netboot.is_none() {
        return Err(format!("--netboot-role needs --netboot\n{USAGE}"));
    }
    // Checked before anything is built.
    let machines = parse_netboot_roles(&netboot_roles).map_err(|error| error.to_string())?;
    Ok(Command::Build {
        spec,
        netboot,
        machines,
    })
}

/// The commands that edit a built image: `--image`, and the one value each sets.
fn parse_edit_command(name: &str, arguments: &[String]) -> Result<Command, String> {
    let value_flag = match name {
        "set-role" => Some("--role"),
        "set-cmdline" => Some("--cmdline"),
        _ => None,
    };
    let mut image: Option<PathBuf> = None;
    let mut setting: Option<String> = None;
    flags(arguments, |flag, value| {
        if flag == "--image" {
            image = Some(value()?.into());
        } else if Some(flag) == value_flag {
            setting = Some(value()?);
        } else {
            return Ok(false);
        }
        Ok(true)
    })?;
    let image = image.ok_or_else(|| format!("{name}: --image is required\n{USAGE}"))?;
    match (value_flag, setting) {
        (None, _) => Ok(Command::ShowRole { image }),
        (Some(flag), None) => Err(format!("{name}: {flag} is required\n{USAGE}")),
        (Some("--role"), Some(role)) => Ok(Command::SetRole { image, role }),
        (Some(_), Some(cmdline)) => Ok(Command::SetCmdline { image, cmdline }),
    }
}

fn parse(arguments: &[String]) -> Result<Command, String> {
    match arguments.first().map(String::as_str) {
        Some(name @ ("show-role" | "set-role" | "set-cmdline")) => {
            parse_edit_command(name, &arguments[1..])
        }
        _ => parse_build(arguments),
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Build {
            spec,
            netboot,
            machines,
        } => {
            if !spec.output.as_os_str().is_empty() {
                build(&spec).map_err(|error| error.to_string())?;
            }
            if let Some(directory) = &netboot {
                build_netboot(&spec, directory, &machines).map_err(|error| error.to_string())?;
            }
        }
        Command::ShowRole { image } => {
            let role = show_role(&image).map_err(|error| error.to_string())?;
            match role.command_line {
                Some(overriding) => {
                    println!("{overriding}");
                    eprintln!(
                        "mkimage: {}: role.conf says {}, and /understudy/cmdline overrides it with {ROLE_OPTION}{overriding}",
                        image.display(),
                        role.config
                    );
                }
                None => println!("{}", role.config),
            }
        }
        Command::SetCmdline { image, cmdline } => {
            set_cmdline(&image, &cmdline).map_err(|error| error.to_string())?;
            eprintln!(
                "mkimage: {}: kernel command line {:?}",
                image.display(),
                cmdline.trim()
            );
        }
        Command::SetRole { image, role } => {
            let change = set_role(&image, &role).map_err(|error| error.to_string())?;
            let previous = change
                .previous
                .map_or("an unknown role".to_string(), |role| role.to_string());
            if change.written {
                eprintln!("mkimage: {}: role {role} (was {previous})", image.display());
            } else {
                eprintln!(
                    "mkimage: {}: already {role}, nothing written",
                    image.display()
                );
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse(&arguments) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("mkimage: {message}");
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mkimage: error: {error}");
            ExitCode::FAILURE
        }
    }
}
