//! Checks on the guest payload shared by `mkimage` (before writing an image) and the kernel
//! (before running what the boot loader handed it).

/// The guest kernel is placed 2 MiB into guest RAM (the RISC-V Linux boot convention,
/// Documentation/arch/riscv/boot.rst).
pub const GUEST_LOAD_OFFSET_BYTES: u64 = 2 << 20;
/// Guest RAM that must stay free beyond kernel and initrd for the guest to run at all.
pub const GUEST_RUNNING_BYTES_MIN: u64 = 16 << 20;

/// What kind of guest kernel a payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKernelKind {
    /// A riscv64 Linux `Image` (Documentation/arch/riscv/boot-image-header.rst).
    LinuxImage,
    /// A RISC-V ELF executable (e_machine 243), for bare-metal guests.
    Elf,
}

/// Identifies the guest kernel, or says why it is not one.
pub fn check_guest_kernel(bytes: &[u8]) -> Result<GuestKernelKind, &'static str> {
    // The Image header's magic2 "RSC\x05" sits at byte 56.
    if bytes.get(56..60) == Some(b"RSC\x05") {
        return Ok(GuestKernelKind::LinuxImage);
    }
    if bytes.get(..4) == Some(b"\x7fELF") {
        let machine = bytes.get(18..20).map(|m| u16::from_le_bytes([m[0], m[1]]));
        return if machine == Some(243) {
            Ok(GuestKernelKind::Elf)
        } else {
            Err("an ELF file, but not for RISC-V")
        };
    }
    Err("neither a riscv64 Linux Image nor a RISC-V ELF")
}

/// Guest RAM the payload needs, in bytes: load offset, kernel, initrd and room to run.
pub fn guest_memory_needed_bytes(kernel_bytes: u64, initrd_bytes: u64) -> u64 {
    GUEST_LOAD_OFFSET_BYTES + kernel_bytes + initrd_bytes + GUEST_RUNNING_BYTES_MIN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_image_and_riscv_elf_are_recognised_and_others_refused() {
        let mut image = [0u8; 64];
        image[56..60].copy_from_slice(b"RSC\x05");
        assert_eq!(check_guest_kernel(&image), Ok(GuestKernelKind::LinuxImage));
        let mut elf = [0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[18..20].copy_from_slice(&243u16.to_le_bytes());
        assert_eq!(check_guest_kernel(&elf), Ok(GuestKernelKind::Elf));
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        assert!(check_guest_kernel(&elf).is_err());
        assert!(check_guest_kernel(b"#!/bin/sh\n").is_err());
        assert!(check_guest_kernel(&[]).is_err());
    }

    #[test]
    fn needed_memory_counts_offset_payload_and_running_room() {
        assert_eq!(
            guest_memory_needed_bytes(4 << 20, 1 << 20),
            (2 + 4 + 1 + 16) << 20
        );
    }
}
