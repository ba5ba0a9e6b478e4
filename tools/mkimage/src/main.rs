//! `mkimage`: builds the bootable Understudy appliance image, and flips the role of a built one
//! (see the library docs).

use std::path::PathBuf;
use std::process::ExitCode;
use understudy_mkimage::{build, build_netboot, set_role, show_role, ImageSpec};

const USAGE: &str =
    "usage: mkimage --loader BOOTX64.EFI --kernel understudy-kernel --config role.conf \
[--guest-kernel Image [--guest-initrd initrd]] [--size-mib N] [--output disk.img] [--netboot DIRECTORY]
       mkimage show-role --image disk.img|/dev/sdX
       mkimage set-role --image disk.img|/dev/sdX --role primary|backup|arbiter
  --output writes the GPT disk image (UEFI boot, e.g. a USB stick);
  --netboot writes a TFTP directory that boots the same kernel and config by PXE through GRUB.
  show-role prints the role in the image's /understudy/role.conf;
  set-role rewrites only that file's `role = ...` line, in an image file or on a USB stick it
  was written to (pass the whole device, e.g. /dev/sdb), without rebuilding.";

/// What the command line asks for.
enum Command {
    Build {
        spec: ImageSpec,
        netboot: Option<PathBuf>,
    },
    ShowRole {
        image: PathBuf,
    },
    SetRole {
        image: PathBuf,
        role: String,
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
        output: PathBuf::new(),
        size_bytes: None,
    };
    let mut netboot: Option<PathBuf> = None;
    flags(arguments, |flag, value| {
        match flag {
            "--loader" => spec.loader = value()?.into(),
            "--kernel" => spec.kernel = value()?.into(),
            "--config" => spec.config = value()?.into(),
            "--guest-kernel" => spec.guest_kernel = Some(value()?.into()),
            "--guest-initrd" => spec.guest_initrd = Some(value()?.into()),
            "--output" => spec.output = value()?.into(),
            "--netboot" => netboot = Some(value()?.into()),
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
    Ok(Command::Build { spec, netboot })
}

/// `show-role` and `set-role`: `--image`, and `--role` for set-role.
fn parse_role_command(name: &str, arguments: &[String]) -> Result<Command, String> {
    let mut image: Option<PathBuf> = None;
    let mut role: Option<String> = None;
    let wants_role = name == "set-role";
    flags(arguments, |flag, value| {
        match flag {
            "--image" => image = Some(value()?.into()),
            "--role" if wants_role => role = Some(value()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let image = image.ok_or_else(|| format!("{name}: --image is required\n{USAGE}"))?;
    match role {
        Some(role) => Ok(Command::SetRole { image, role }),
        None if wants_role => Err(format!("set-role: --role is required\n{USAGE}")),
        None => Ok(Command::ShowRole { image }),
    }
}

fn parse(arguments: &[String]) -> Result<Command, String> {
    match arguments.first().map(String::as_str) {
        Some(name @ ("show-role" | "set-role")) => parse_role_command(name, &arguments[1..]),
        _ => parse_build(arguments),
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Build { spec, netboot } => {
            if !spec.output.as_os_str().is_empty() {
                build(&spec).map_err(|error| error.to_string())?;
            }
            if let Some(directory) = &netboot {
                build_netboot(&spec, directory).map_err(|error| error.to_string())?;
            }
        }
        Command::ShowRole { image } => {
            let role = show_role(&image).map_err(|error| error.to_string())?;
            println!("{role}");
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
