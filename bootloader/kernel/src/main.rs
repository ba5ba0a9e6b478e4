//! The Understudy appliance kernel: boots by PVH, brings up the machine, prints `ready`.
//!
//! Boot order: serial, GDT/IDT, boot info, heap, TSC, the idle timer, role config, PCI and
//! virtio devices, the replication network, then `understudy ready role=<role>`; `run` then
//! serves the role: the arbiter (`arbiter.rs`), or the primary or backup of the protected
//! guest, which runs on the hypervisor (`appliance/machine`) through the replica runtime
//! (`guest.rs`).
#![no_std]
#![no_main]

extern crate alloc;

mod arbiter;
mod arch;
mod boot;
mod bootinfo;
mod channel;
mod cmos;
mod code;
mod dhcp;
mod guest;
mod guestdisk;
mod hal;
mod heap;
mod idle;
mod mmio;
mod net;
mod paging;
mod pci;
mod runtime;
mod selftest;
mod serial;
mod tsc;

use alloc::string::String;
use alloc::vec::Vec;
use bootinfo::{BootInfo, IdentityMemory, PhysRange};
use channel::LogChannel;
use core::panic::PanicInfo;
use guestdisk::{Disk, GuestDisk};
use hal::KernelHal;
use net::NetDevice;
use smoltcp::iface::{Config as InterfaceConfig, Interface};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use understudy_boot_config::{self as config, Config, Role};
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::{DeviceType, Transport};

/// Bytes the built-in echo guest (`understudy.guest=echo`) reads before it powers off.
const ECHO_GUEST_BYTES: i32 = 10;
/// RAM of the built-in echo guest.
const ECHO_GUEST_MEMORY_BYTES: u64 = 16 << 20;
/// Heap the appliance keeps for itself beside the guest's RAM: virtqueues, socket buffers,
/// the hart's decode cache and device bounce buffers.
const APPLIANCE_HEAP_RESERVE_BYTES: u64 = 32 << 20;

/// How long the DHCP self test waits for a lease.
const DHCP_TIMEOUT_MS: u64 = 20_000;

/// Options for the kernel itself on the command line, as `understudy.<name>=<value>`.
#[derive(Default)]
struct BootOptions {
    selftest_disk: bool,
    selftest_replication: bool,
    /// Acquire a DHCP lease on the replication NIC.
    selftest_dhcp: bool,
    /// Panic after `ready`, to test the panic epitaph.
    selftest_panic: bool,
    /// Touch unmapped memory after `ready`, to test the exception epitaph on its IST stack.
    selftest_fault: bool,
    /// Halt while idle until a console byte arrives, to test `idle::halt_until`.
    selftest_idle: bool,
    /// Check the guest disk's backend on the first disk (which it takes from the guest).
    selftest_guest_disk: bool,
    /// Run the built-in echo guest instead of a payload (`understudy.guest=echo`).
    echo_guest: bool,
    /// Run the payload guest without a partner (`understudy.unprotected`): every output
    /// leaves at once.
    unprotected: bool,
    /// The role, overriding the config's (`understudy.role=backup`): for machines whose disk
    /// cannot be edited.
    role: Option<Role>,
    /// Create the arbiter's record on an empty disk (`understudy.arbiter=init`).
    arbiter_init: bool,
    /// The least severe event line printed (`understudy.log_level=warn`; info by default).
    log_level: Option<guest::LogLevel>,
}

impl BootOptions {
    fn parse(command_line: &str) -> Result<Self, &str> {
        let mut options = BootOptions::default();
        for word in command_line.split_ascii_whitespace() {
            let Some(option) = word.strip_prefix("understudy.") else {
                continue;
            };
            match option.split_once('=') {
                Some(("selftest", tests)) => {
                    for test in tests.split(',') {
                        match test {
                            "disk" => options.selftest_disk = true,
                            "replication" => options.selftest_replication = true,
                            "dhcp" => options.selftest_dhcp = true,
                            "panic" => options.selftest_panic = true,
                            "fault" => options.selftest_fault = true,
                            "idle" => options.selftest_idle = true,
                            "guestdisk" => options.selftest_guest_disk = true,
                            _ => return Err(word),
                        }
                    }
                }
                Some(("guest", "echo")) => options.echo_guest = true,
                Some(("role", role)) => {
                    options.role = Some(match role {
                        "primary" => Role::Primary,
                        "backup" => Role::Backup,
                        "arbiter" => Role::Arbiter,
                        _ => return Err(word),
                    })
                }
                Some(("arbiter", "init")) => options.arbiter_init = true,
                Some(("log_level", level)) => {
                    options.log_level = Some(guest::LogLevel::parse(level).ok_or(word)?)
                }
                None if option == "unprotected" => options.unprotected = true,
                _ => return Err(word),
            }
        }
        Ok(options)
    }
}

/// How the kernel was entered; the boot assembly passes it to `kernel_entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BootProtocol {
    /// The 32-bit PVH entry (QEMU `-kernel`, Firecracker, cloud-hypervisor).
    Pvh,
    /// The 64-bit entry, from our own UEFI loader.
    UnderstudyLoader,
    /// The 32-bit entry shared with PVH, from a multiboot2 loader such as GRUB.
    Multiboot2,
    Unknown(u32),
}

impl BootProtocol {
    fn from_boot_code(value: u32) -> Self {
        match value {
            1 => Self::Pvh,
            2 => Self::UnderstudyLoader,
            3 => Self::Multiboot2,
            other => Self::Unknown(other),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Pvh => "pvh",
            Self::UnderstudyLoader => "the understudy uefi loader",
            Self::Multiboot2 => "multiboot2",
            Self::Unknown(_) => "an unknown boot path",
        }
    }
}

#[no_mangle]
extern "C" fn kernel_entry(start_info_paddr: u64, protocol: u32) -> ! {
    let entered = tsc::read();
    serial::init();
    let protocol = BootProtocol::from_boot_code(protocol);
    println!(
        "understudy: kernel entered by {}, start info at {:#x}",
        protocol.name(),
        start_info_paddr
    );
    arch::init();
    arch::mask_legacy_pic();
    let boot_info = match protocol {
        BootProtocol::Multiboot2 => bootinfo::parse_multiboot2(&IdentityMemory, start_info_paddr),
        _ => bootinfo::parse_hvm_start_info(&IdentityMemory, start_info_paddr),
    };
    let boot = match boot_info {
        Ok(boot) => boot,
        Err(error) => fail(format_args!("{error}")),
    };
    init_heap(&boot);
    if let Err(error) = tsc::calibrate() {
        fail(format_args!("{error}"));
    }
    idle::init();

    // SAFETY: the command line is boot-loader memory that the heap excludes and nothing writes.
    let command_line = boot
        .command_line
        .map(|range| unsafe { bootinfo::bytes(range) })
        .unwrap_or(&[]);
    let command_line = core::str::from_utf8(command_line).unwrap_or("");
    let options = match BootOptions::parse(command_line) {
        Ok(options) => options,
        Err(word) => fail(format_args!(
            "unknown kernel option `{word}`; known: understudy.selftest=disk,replication,dhcp,panic,fault,idle,guestdisk understudy.guest=echo understudy.unprotected understudy.role=primary|backup|arbiter understudy.arbiter=init understudy.log_level=error|warn|info"
        )),
    };
    if let Some(level) = options.log_level {
        guest::set_log_level(level);
    }
    let mut config = load_config(&boot, command_line);
    if let Some(role) = options.role {
        config.role = role;
    }
    println!(
        "understudy: role {} address {} peer {} arbiter {} disk {}",
        config.role,
        config.own_address(),
        config
            .peer()
            .map_or(alloc::string::String::from("none"), |p| alloc::format!(
                "{p}"
            )),
        config.arbiter,
        config.disk
    );

    let guest = load_guest_payload(&boot, &config);

    // Devices on PCI first, then virtio-mmio devices the command line names (Firecracker).
    let mut transports = pci::transports();
    transports.extend(mmio::transports(command_line));
    let mut disks = Vec::new();
    let mut replication_nic = None;
    let mut service_nic = None;
    for transport in transports {
        match transport.device_type() {
            DeviceType::Block => match VirtIOBlk::<KernelHal, _>::new(transport) {
                Ok(blk) => {
                    println!("understudy: disk {} sectors of 512 bytes", blk.capacity());
                    disks.push(blk);
                }
                Err(error) => println!("understudy: virtio-blk: {error}"),
            },
            // The first NIC carries the appliance's own traffic (replication); the second is
            // the service NIC, bridged to the guest.
            DeviceType::Network if replication_nic.is_none() || service_nic.is_none() => {
                match VirtIONetRaw::<KernelHal, _, { net::QUEUE_SIZE }>::new(transport) {
                    Ok(raw) if replication_nic.is_none() => {
                        replication_nic = Some(NetDevice::new(raw))
                    }
                    Ok(raw) => {
                        let device = NetDevice::new(raw);
                        let mac: Vec<String> = device
                            .mac_address()
                            .iter()
                            .map(|b| alloc::format!("{b:02x}"))
                            .collect();
                        println!("understudy: service nic {}", mac.join(":"));
                        service_nic = Some(device);
                    }
                    Err(error) => println!("understudy: virtio-net: {error}"),
                }
            }
            other => println!("understudy: virtio {:?} not used", other),
        }
    }
    let replication = replication_nic.map(|mut device| {
        let iface = replication_interface(&config, &mut device);
        Network { device, iface }
    });

    println!("understudy: heap in use {} KiB", heap::used_bytes() >> 10);
    let kernel_ms = (tsc::read().0 - entered.0) * 1000 / tsc::hz();
    println!("understudy: kernel entry to ready {kernel_ms} ms");
    println!("understudy ready role={}", config.role);
    run(
        Platform {
            config,
            guest,
            disks,
            replication,
            service_nic,
        },
        &options,
    )
}

/// The replication NIC with its TCP/IP interface (boxed: the IPv4 fragmentation buffers make
/// it large).
struct Network {
    device: NetDevice,
    iface: alloc::boxed::Box<Interface>,
}

/// What the kernel brought up: the inputs of the appliance runtime.
struct Platform {
    config: Config,
    /// The guest kernel and initrd the boot loader handed over, when it did.
    guest: Option<GuestPayload>,
    /// The virtio-blk disks in PCI order; the first that is not the boot disk is the guest's.
    disks: Vec<Disk>,
    replication: Option<Network>,
    /// The NIC of the guest's own network, bridged at layer 2 to its virtio-net.
    service_nic: Option<NetDevice>,
}

/// Runs the appliance on the platform: the boot-time self tests the kernel options ask for,
/// then its role: the arbiter, or the protected guest as primary or backup (or unprotected).
fn run(mut platform: Platform, options: &BootOptions) -> ! {
    if options.selftest_panic {
        panic!("selftest asked for a panic");
    }
    if options.selftest_fault {
        // Above the 4 GiB identity map and never mapped: a page fault (vector 14).
        let unmapped = 0x7f_0000_0000u64 as *const u64;
        // SAFETY: deliberately unsound: the read must fault, and the fault handler halts.
        let value = unsafe { unmapped.read_volatile() };
        println!("understudy: read {value:#x} from unmapped memory, no fault taken");
    }
    let mut passed = true;
    if options.selftest_disk {
        passed &= match platform.disks.first_mut() {
            Some(blk) => selftest::disk(blk),
            None => {
                println!("understudy: disk selftest failed: no virtio-blk disk");
                false
            }
        };
    }
    if options.selftest_replication {
        passed &= match platform.replication.as_mut() {
            Some(Network { device, iface }) => {
                let ok = selftest::replication(&platform.config, iface, device);
                let counters = device.counters();
                println!(
                    "understudy: nic frames received {} sent {} errors rx {} tx {}",
                    counters.frames_received,
                    counters.frames_sent,
                    counters.receive_errors,
                    counters.transmit_errors
                );
                ok
            }
            None => {
                println!("understudy: replication selftest failed: no virtio-net nic");
                false
            }
        };
    }
    if options.selftest_dhcp {
        passed &= match platform.replication.as_mut() {
            Some(Network { device, iface }) => {
                match dhcp::acquire_lease(iface, device, DHCP_TIMEOUT_MS) {
                    Ok(lease) => {
                        let router = lease
                            .router
                            .map_or(alloc::string::String::from("none"), |r| {
                                alloc::format!("{r}")
                            });
                        println!(
                            "understudy: dhcp lease {} router {} from {}",
                            lease.address, router, lease.server
                        );
                        true
                    }
                    Err(error) => {
                        println!("understudy: dhcp selftest failed: {error}");
                        false
                    }
                }
            }
            None => {
                println!("understudy: dhcp selftest failed: no virtio-net nic");
                false
            }
        };
    }
    if options.selftest_idle {
        passed &= selftest::idle();
    }
    if options.selftest_guest_disk {
        passed &= selftest::guest_disk(&mut platform.disks);
    }
    if options.selftest_disk
        || options.selftest_replication
        || options.selftest_dhcp
        || options.selftest_idle
        || options.selftest_guest_disk
    {
        println!(
            "understudy selftest {}",
            if passed { "passed" } else { "failed" }
        );
    }
    if options.echo_guest {
        let kernel = understudy_machine::program::echo_guest(ECHO_GUEST_BYTES);
        let spec = guest::GuestSpec {
            kernel: &kernel,
            initrd: None,
            bootargs: String::new(),
            memory_bytes: ECHO_GUEST_MEMORY_BYTES,
            disk: None,
            disk_mode: config::DiskMode::Separate,
            service_nic: None,
            execution: platform.config.execution,
        };
        run_guest(spec, guest::Protection::Unprotected)
    }
    if platform.config.role == Role::Arbiter {
        if let config::ArbiterBackend::Etcd { .. } = platform.config.arbiter_backend {
            fail(format_args!(
                "with arbiter_backend = etcd there is no arbiter machine: the replicas ask etcd"
            ));
        }
        let Some(disk) = take_guest_disk(&mut platform.disks) else {
            fail(format_args!(
                "the arbiter needs a disk of its own for its record: attach one (a few sectors suffice)"
            ))
        };
        let port = platform.config.arbiter.port;
        let channel = log_channel(&mut platform, port);
        arbiter::run(&platform.config, disk, channel, options.arbiter_init)
    }
    if let Some(payload) = platform.guest.take() {
        let memory_bytes = u64::from(platform.config.guest_memory_mib) << 20;
        let free = heap::free_bytes() as u64;
        if free < memory_bytes + APPLIANCE_HEAP_RESERVE_BYTES {
            fail(format_args!(
                "guest_memory_mib {} needs {} MiB of free heap but {} MiB is free: give the machine more memory",
                platform.config.guest_memory_mib,
                (memory_bytes + APPLIANCE_HEAP_RESERVE_BYTES) >> 20,
                free >> 20
            ));
        }
        let disk = take_guest_disk(&mut platform.disks);
        let protection = if options.unprotected {
            guest::Protection::Unprotected
        } else {
            let port = platform.config.port;
            guest::Protection::Pair {
                config: platform.config,
                channel: log_channel(&mut platform, port),
            }
        };
        let spec = guest::GuestSpec {
            kernel: payload.kernel,
            initrd: payload.initrd,
            bootargs: payload.bootargs,
            memory_bytes,
            disk,
            disk_mode: platform.config.disk,
            service_nic: platform.service_nic.take(),
            execution: platform.config.execution,
        };
        run_guest(spec, protection)
    }
    arch::halt_forever()
}

/// The log channel on the replication NIC, bound to `port`; without that NIC the role cannot
/// be served.
fn log_channel(platform: &mut Platform, port: u16) -> LogChannel {
    let Some(Network { device, iface }) = platform.replication.take() else {
        fail(format_args!(
            "role {} needs the replication nic (the first virtio-net device); none was found",
            platform.config.role
        ))
    };
    let mut channel = LogChannel::bind(device, iface, port);
    if let Some(status_port) = platform.config.metrics_port {
        channel.serve_status(status_port);
        println!(
            "understudy: status and metrics on http://{}:{status_port}/ (/metrics, /status, /status.json)",
            platform.config.own_address().address
        );
    }
    channel
}

/// The first disk that is not the appliance's boot disk, for the guest.
fn take_guest_disk(disks: &mut Vec<Disk>) -> Option<GuestDisk> {
    let index = disks.iter_mut().position(|disk| {
        let boot = guestdisk::is_boot_disk(disk);
        if boot {
            println!("understudy: a disk holds an EFI system partition: kept from the guest");
        }
        !boot
    })?;
    let disk = disks.remove(index);
    println!(
        "understudy: guest disk {} sectors of 512 bytes",
        disk.capacity()
    );
    Some(GuestDisk::new(disk))
}

/// Runs the guest to its end, reports how it ended and powers off.
fn run_guest(spec: guest::GuestSpec, protection: guest::Protection) -> ! {
    println!(
        "understudy: guest starting, {} MiB, bootargs \"{}\"",
        spec.memory_bytes >> 20,
        spec.bootargs
    );
    let summary = guest::run(spec, protection);
    if summary.frames_dropped > 0 {
        println!(
            "understudy: {} service-network frames dropped (the guest could not take them)",
            summary.frames_dropped
        );
    }
    let mips = summary.instructions / summary.elapsed_ms.max(1) / 1000;
    println!();
    let code = match summary.ending {
        guest::Ending::PowerOff { code } => {
            println!(
                "understudy: guest powered off with code {code} after {} instructions in {} ms ({mips} MIPS, {} blocks translated)",
                summary.instructions, summary.elapsed_ms, summary.blocks_translated
            );
            code
        }
        guest::Ending::Reset => {
            println!("understudy: guest asked for a reset; the appliance stops");
            0
        }
        guest::Ending::Crashed { cause, tval, pc } => {
            println!(
                "understudy: guest crashed: trap cause {cause:#x} tval {tval:#x} at pc {pc:#x} was not delegated to the guest"
            );
            1
        }
        guest::Ending::Halted(reason) => fail(format_args!("{reason}")),
    };
    arch::power_off(code.min(0x7f) as u8)
}

/// The protected guest's kernel and initrd, in boot-loader memory the heap excludes.
struct GuestPayload {
    kernel: &'static [u8],
    initrd: Option<&'static [u8]>,
    /// Its kernel command line: the text of the `guest-cmdline` module, else the config's
    /// `guest_cmdline`, else the default.
    bootargs: String,
}

/// Finds the guest payload among the boot modules (`guest-kernel`, `guest-initrd`), checks it
/// is what it claims and fits the configured guest memory; a bad payload is fatal.
fn load_guest_payload(boot: &BootInfo, config: &Config) -> Option<GuestPayload> {
    let kernel_range = boot.module_named(&IdentityMemory, "guest-kernel")?;
    // SAFETY (both): module memory is excluded from the heap and nothing writes it.
    let kernel = unsafe { bootinfo::bytes(kernel_range) };
    let initrd = boot
        .module_named(&IdentityMemory, "guest-initrd")
        .map(|range| unsafe { bootinfo::bytes(range) });
    let kind = match config::payload::check_guest_kernel(kernel) {
        Ok(kind) => kind,
        Err(why) => fail(format_args!("guest kernel module: {why}")),
    };
    let initrd_bytes = initrd.map_or(0, |bytes| bytes.len() as u64);
    let needed = config::payload::guest_memory_needed_bytes(kernel.len() as u64, initrd_bytes);
    if needed > u64::from(config.guest_memory_mib) << 20 {
        fail(format_args!(
            "guest payload needs {} MiB of guest memory but guest_memory_mib is {}",
            needed.div_ceil(1 << 20),
            config.guest_memory_mib
        ));
    }
    println!(
        "understudy: guest payload {:?} kernel {} bytes, initrd {} bytes",
        kind,
        kernel.len(),
        initrd_bytes
    );
    let bootargs = match boot.module_named(&IdentityMemory, "guest-cmdline") {
        // SAFETY: module memory is excluded from the heap and nothing writes it.
        Some(range) => match core::str::from_utf8(unsafe { bootinfo::bytes(range) }) {
            Ok(text) => String::from(text.trim()),
            Err(_) => fail(format_args!("guest-cmdline module is not utf-8 text")),
        },
        None => String::from(
            config
                .guest_cmdline
                .as_ref()
                .map_or(guest::DEFAULT_BOOTARGS, |cmdline| cmdline.as_str()),
        ),
    };
    Some(GuestPayload {
        kernel,
        initrd,
        bootargs,
    })
}

/// Takes the heap from the boot memory map, avoiding the kernel image and boot structures.
fn init_heap(boot: &BootInfo) {
    let (kernel_start, kernel_end) = boot::kernel_image_range();
    let kernel = PhysRange {
        start: kernel_start,
        end: kernel_end,
    };
    let Some(heap_range) = heap::choose(boot, kernel) else {
        fail(format_args!("no usable ram in the boot memory map"))
    };
    if heap_range.len() < heap::HEAP_BYTES_MIN {
        fail(format_args!(
            "largest free ram piece is {} KiB; need {} MiB: give the machine more memory",
            heap_range.len() >> 10,
            heap::HEAP_BYTES_MIN >> 20
        ));
    }
    // SAFETY: `choose` excluded the kernel image and every boot structure; called once.
    unsafe { heap::init(heap_range) };
    println!(
        "understudy: heap {:#x}..{:#x} ({} MiB), kernel {:#x}..{:#x}",
        heap_range.start,
        heap_range.end,
        heap_range.len() >> 20,
        kernel_start,
        kernel_end
    );
}

/// The role config comes from the first boot module (QEMU `-initrd`), or else from
/// `key=value` words on the kernel command line. Any error is fatal and says what to fix.
fn load_config(boot: &BootInfo, command_line: &str) -> Config {
    if let Some(initrd) = boot.initrd {
        // SAFETY: the module is boot-loader memory that the heap excludes and nothing writes.
        let bytes = unsafe { bootinfo::bytes(initrd) };
        return match config::parse_bytes(bytes) {
            Ok(config) => config,
            Err(error) => fail(format_args!("config (initrd): {error}")),
        };
    }
    let has_config_words = command_line.split_ascii_whitespace().any(|word| {
        word.split_once('=')
            .is_some_and(|(key, _)| !key.contains('.'))
    });
    if !has_config_words {
        fail(format_args!(
            "no role config: pass the config file as the initrd, or its keys as key=value words on the command line"
        ));
    }
    match config::parse_command_line(command_line) {
        Ok(config) => config,
        Err(error) => fail(format_args!("config (command line, word numbers): {error}")),
    }
}

/// Configures smoltcp on the replication NIC with the address the role selects.
fn replication_interface(config: &Config, device: &mut NetDevice) -> alloc::boxed::Box<Interface> {
    let mac = device.mac_address();
    let mut interface_config =
        InterfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    // The initial TCP sequence numbers of the appliance's own connections; never guest-visible.
    interface_config.random_seed = tsc::read().0;
    let now = smoltcp::time::Instant::from_micros(tsc::now().0 as i64);
    let mut iface = alloc::boxed::Box::new(Interface::new(interface_config, device, now));
    let own = config.own_address();
    let [a, b, c, d] = own.address.0;
    iface.update_ip_addrs(|addresses| {
        addresses
            .push(IpCidr::new(IpAddress::v4(a, b, c, d), own.prefix_len))
            .expect("an empty address list has room for one");
    });
    if let Some(gateway) = config.gateway {
        let [a, b, c, d] = gateway.0;
        if iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(a, b, c, d))
            .is_err()
        {
            println!("understudy: cannot add default route");
        }
    }
    let mac: Vec<alloc::string::String> = mac.iter().map(|b| alloc::format!("{b:02x}")).collect();
    println!(
        "understudy: replication nic {} address {}",
        mac.join(":"),
        own
    );
    iface
}

/// Prints a fatal error as an epitaph and stops: fail-stop, the partner takes over. Under
/// QEMU with `isa-debug-exit` the emulator then exits with status 5 (code 2), so a test or a
/// supervisor sees the stop; elsewhere the CPU halts with the epitaph on the console.
pub fn fail(message: core::fmt::Arguments) -> ! {
    println!("understudy epitaph: {}", message);
    arch::power_off(EPITAPH_EXIT_CODE)
}

/// The `isa-debug-exit` code of an appliance that stopped with an epitaph (QEMU status 5).
const EPITAPH_EXIT_CODE: u8 = 2;

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    // One line, so that a log scraper sees the location and message together.
    match info.location() {
        Some(location) => serial::force_print(format_args!(
            "understudy epitaph: panic at {}:{}: {}\n",
            location.file(),
            location.line(),
            info.message()
        )),
        None => serial::force_print(format_args!(
            "understudy epitaph: panic: {}\n",
            info.message()
        )),
    }
    arch::halt_forever()
}
