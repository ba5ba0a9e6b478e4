//! The Understudy appliance kernel: boots by PVH, brings up the machine, prints `ready`.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod boot;
mod heap;
mod pvh;
mod runtime;
mod serial;
mod tsc;

use core::panic::PanicInfo;
use pvh::PhysRange;

#[no_mangle]
extern "C" fn kernel_entry(start_info_paddr: u64) -> ! {
    serial::init();
    println!(
        "understudy: kernel entered by pvh, start info at {:#x}",
        start_info_paddr
    );
    arch::init();
    arch::mask_legacy_pic();
    let boot = match pvh::BootInfo::parse(start_info_paddr) {
        Ok(boot) => boot,
        Err(error) => fail(format_args!("{error}")),
    };
    let (kernel_start, kernel_end) = boot::kernel_image_range();
    let kernel = PhysRange {
        start: kernel_start,
        end: kernel_end,
    };
    let Some(heap_range) = heap::choose(&boot, kernel) else {
        fail(format_args!("no usable ram in the boot memory map"))
    };
    if heap_range.len() < heap::HEAP_BYTES_MIN {
        fail(format_args!(
            "largest free ram piece is {} KiB; need {} MiB: give the machine more memory",
            heap_range.len() >> 10,
            heap::HEAP_BYTES_MIN >> 20
        ));
    }
    // SAFETY: `choose` excluded the kernel image and every boot structure, and this is the
    // only call.
    unsafe { heap::init(heap_range) };
    println!(
        "understudy: heap {:#x}..{:#x} ({} MiB), kernel {:#x}..{:#x}",
        heap_range.start,
        heap_range.end,
        heap_range.len() >> 20,
        kernel_start,
        kernel_end
    );
    let (tsc_hz, source) = tsc::calibrate();
    println!("understudy: tsc {} kHz ({:?})", tsc_hz / 1000, source);
    println!("understudy ready role=primary");
    arch::halt_forever()
}

/// Prints a fatal boot error as an epitaph and halts.
fn fail(message: core::fmt::Arguments) -> ! {
    println!("understudy epitaph: {}", message);
    arch::halt_forever()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    serial::force_print(format_args!("understudy epitaph: {}\n", info));
    arch::halt_forever()
}
