//! virtio-mmio devices named on the kernel command line, as transports beside the PCI ones.
//!
//! Firecracker has no PCI bus: it names each virtio device with a `virtio_mmio.device=
//! <size>@<base>:<irq>` word on the command line (QEMU `microvm` does the same with ACPI off).
//! The words are parsed by `understudy_boot_memory::virtio_mmio`, where the host tests them.
//! Each window is checked against the others (two transports on the same registers would
//! drive one device twice), mapped, and probed through its register header (virtio 1.2
//! section 4.2.2). Interrupt lines are ignored: devices are polled.

use crate::{paging, println};
use alloc::vec::Vec;
use core::ptr::NonNull;
use understudy_boot_memory::virtio_mmio::{self, MmioDevice};
use virtio_drivers::transport::mmio::{MmioError, MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceTypeError, SomeTransport, Transport};

/// The transports of every device the command line names, in command-line order. A malformed
/// word is fatal, with the word in the epitaph: the platform description is wrong, and running
/// on without one of its devices (perhaps the guest's disk) would hide that. A window that
/// overlaps another, cannot be mapped, or holds no virtio device is reported and skipped.
pub fn transports(command_line: &str) -> Vec<SomeTransport<'static>> {
    let mut taken: Vec<MmioDevice> = Vec::new();
    let mut transports = Vec::new();
    for (word, parsed) in virtio_mmio::words(command_line) {
        let device = match parsed {
            Ok(device) => device,
            Err(error) => crate::fail(format_args!(
                "kernel option `{word}`: {error}; the form is virtio_mmio.device=<size>@<base>:<irq>, for example virtio_mmio.device=4K@0xd0000000:5"
            )),
        };
        let registers = device.registers;
        let name = alloc::format!(
            "virtio-mmio {:#x} size {:#x} irq {}",
            registers.start,
            registers.len(),
            device.irq
        );
        if let Some(other) = taken
            .iter()
            .find(|other| other.registers.overlaps(&registers))
        {
            println!(
                "understudy: {name} skipped: it overlaps the device at {:#x}",
                other.registers.start
            );
            continue;
        }
        taken.push(device);
        if let Err(error) = paging::map_identity(registers.start, registers.len()) {
            println!("understudy: {name} skipped: {error}");
            continue;
        }
        let Some(header) = NonNull::new(registers.start as *mut VirtIOHeader) else {
            println!("understudy: {name} skipped: a device at address 0");
            continue;
        };
        // SAFETY: the window is identity-mapped device memory that stays mapped for the life
        // of the kernel, and no other transport covers any of it (checked above), so this
        // transport is the only user of its registers.
        match unsafe { MmioTransport::new(header, registers.len() as usize) } {
            Ok(transport) => {
                println!(
                    "understudy: {name} version {:?} virtio {:?}",
                    transport.version(),
                    transport.device_type()
                );
                transports.push(SomeTransport::from(transport));
            }
            // Device ID 0 marks a placeholder with no device behind it (virtio 1.2 section 4.2.2).
            Err(MmioError::InvalidDeviceID(DeviceTypeError::InvalidDeviceType(0))) => {
                println!("understudy: {name} holds no device");
            }
            Err(error) => println!("understudy: {name} skipped: {error}"),
        }
    }
    transports
}
