//! PCI enumeration through configuration mechanism #1 (I/O ports 0xcf8/0xcfc).
//!
//! PCI Local Bus Specification 3.0, section 3.2.2.3.2: a 32-bit write to 0xcf8 selects
//! bus/device/function/register, and 0xcfc reads or writes that register.

use crate::hal::KernelHal;
use crate::paging;
use crate::println;
use alloc::vec::Vec;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, PciRoot,
};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::SomeTransport;
use x86_64::instructions::port::Port;

const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
const CONFIG_DATA_PORT: u16 = 0xcfc;
/// Buses scanned: all of them, by brute force, so devices behind PCI-to-PCI bridges (as on
/// real machines and QEMU `q35` root ports) are found without walking the bridge hierarchy.
/// An absent function answers vendor 0xffff at once, so the scan costs milliseconds.
const BUSES_SCANNED: u16 = 256;

/// Configuration access through the legacy I/O ports.
pub struct PortConfigurationAccess;

impl PortConfigurationAccess {
    fn select(device_function: DeviceFunction, register_offset: u8) {
        let address = 0x8000_0000u32
            | u32::from(device_function.bus) << 16
            | u32::from(device_function.device) << 11
            | u32::from(device_function.function) << 8
            | u32::from(register_offset & 0xfc);
        // SAFETY: writing CONFIG_ADDRESS only selects a register; it has no memory effects.
        unsafe { Port::<u32>::new(CONFIG_ADDRESS_PORT).write(address) }
    }
}

impl ConfigurationAccess for PortConfigurationAccess {
    fn read_word(&self, device_function: DeviceFunction, register_offset: u8) -> u32 {
        Self::select(device_function, register_offset);
        // SAFETY: reading CONFIG_DATA returns the selected register; the kernel is single-
        // threaded with interrupts off, so the select-then-read pair is not interleaved.
        unsafe { Port::<u32>::new(CONFIG_DATA_PORT).read() }
    }

    fn write_word(&mut self, device_function: DeviceFunction, register_offset: u8, data: u32) {
        Self::select(device_function, register_offset);
        // SAFETY: as for `read_word`; configuration writes touch device registers only.
        unsafe { Port::<u32>::new(CONFIG_DATA_PORT).write(data) }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortConfigurationAccess
    }
}

/// A virtio device found on the bus, with its BARs mapped and bus mastering on.
pub struct VirtioFunction {
    pub device_function: DeviceFunction,
}

/// The transports of every virtio function on the bus, in bus order.
pub fn transports() -> Vec<SomeTransport<'static>> {
    let mut root = PciRoot::new(PortConfigurationAccess);
    let mut transports = Vec::new();
    for function in enumerate(&mut root) {
        match PciTransport::new::<KernelHal, _>(&mut root, function.device_function) {
            Ok(transport) => transports.push(SomeTransport::from(transport)),
            Err(error) => println!("understudy: virtio {}: {}", function.device_function, error),
        }
    }
    transports
}

/// Scans the bus, prints what it finds, and prepares every virtio function.
fn enumerate(root: &mut PciRoot<PortConfigurationAccess>) -> Vec<VirtioFunction> {
    let mut found = Vec::new();
    for bus in 0..BUSES_SCANNED {
        for (device_function, info) in root.enumerate_bus(bus as u8) {
            let Some(device_type) = virtio_device_type(&info) else {
                println!(
                    "understudy: pci {} {:04x}:{:04x} class {:02x}.{:02x}",
                    device_function, info.vendor_id, info.device_id, info.class, info.subclass
                );
                continue;
            };
            match prepare(root, device_function) {
                Ok(()) => {
                    println!(
                        "understudy: pci {} virtio {:?}",
                        device_function, device_type
                    );
                    found.push(VirtioFunction { device_function });
                }
                Err(error) => println!(
                    "understudy: pci {} virtio {:?} skipped: {}",
                    device_function, device_type, error
                ),
            }
        }
    }
    found
}

/// Maps the function's memory BARs and enables memory decoding and bus mastering (the device
/// must reach the virtqueues by DMA).
fn prepare(
    root: &mut PciRoot<PortConfigurationAccess>,
    device_function: DeviceFunction,
) -> Result<(), &'static str> {
    let bars = root.bars(device_function).map_err(|_| "cannot read bars")?;
    for bar in bars.iter().flatten() {
        if let BarInfo::Memory { address, size, .. } = *bar {
            if size == 0 {
                continue;
            }
            if address == 0 {
                // Firmware left it unassigned; the PVH path always runs SeaBIOS or qboot, which
                // assign every BAR, so this is not expected and the device is skipped.
                return Err("memory bar not assigned by firmware");
            }
            paging::map_identity(address, size).map_err(|_| "cannot map memory bar")?;
        }
    }
    let (_, command) = root.get_status_command(device_function);
    root.set_command(
        device_function,
        command | Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER,
    );
    Ok(())
}
