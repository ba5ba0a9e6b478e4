//! `mkimage`: builds the bootable Understudy appliance image (see the library docs).

use std::path::PathBuf;
use std::process::ExitCode;
use understudy_mkimage::{build, build_netboot, ImageSpec};

const USAGE: &str =
    "usage: mkimage --loader BOOTX64.EFI --kernel understudy-kernel --config role.conf \
[--guest-kernel Image [--guest-initrd initrd]] [--size-mib N] [--output disk.img] [--netboot DIRECTORY]
  --output writes the GPT disk image (UEFI boot, e.g. a USB stick);
  --netboot writes a TFTP directory that boots the same kernel and config by PXE through GRUB.";

fn parse(arguments: &[String]) -> Result<(ImageSpec, Option<PathBuf>), String> {
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
    let mut words = arguments.iter();
    while let Some(flag) = words.next() {
        let mut value = || {
            words
                .next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
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
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
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
    Ok((spec, netboot))
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let (spec, netboot) = match parse(&arguments) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("mkimage: {message}");
            return ExitCode::from(2);
        }
    };
    let image = if spec.output.as_os_str().is_empty() {
        Ok(())
    } else {
        build(&spec)
    };
    let result = image.and_then(|()| match &netboot {
        Some(directory) => build_netboot(&spec, directory),
        None => Ok(()),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mkimage: error: {error}");
            ExitCode::FAILURE
        }
    }
}
