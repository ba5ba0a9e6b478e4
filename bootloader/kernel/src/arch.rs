//! GDT with a TSS, an IDT whose every vector runs on an IST stack, and the trap epitaph.
//!
//! Every IDT entry switches to an Interrupt Stack Table stack (Intel SDM vol. 3A 6.14.5):
//! Rust code is compiled for the host ABI with a 128-byte red zone below `rsp`, and an
//! interrupt delivered on the interrupted stack would overwrite it.

use core::arch::global_asm;
use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::control::Cr2;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// Size of each IST stack, in bytes.
const IST_STACK_BYTES: usize = 32 * 1024;
/// IST slots (1-based in the IDT, 0-based in the TSS): ordinary vectors, double fault, NMI,
/// machine check. Separate stacks let a fault taken while handling another still print.
const IST_GENERAL: u16 = 0;
const IST_DOUBLE_FAULT: u16 = 1;
const IST_NMI: u16 = 2;
const IST_MACHINE_CHECK: u16 = 3;
const IST_STACKS: usize = 4;
/// Bytes between consecutive entry stubs in `isr_stubs` (see the assembly below).
const ISR_STUB_BYTES: u64 = 16;

#[repr(C, align(16))]
struct IstStacks([[u8; IST_STACK_BYTES]; IST_STACKS]);

static mut IST_STACK_MEMORY: IstStacks = IstStacks([[0; IST_STACK_BYTES]; IST_STACKS]);

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, SegmentSelector, SegmentSelector)> = Once::new();
static IDT: Once<InterruptDescriptorTable> = Once::new();

// One 16-byte stub per vector pushes a zero error code when the CPU does not push one (SDM 3A
// table 6-1: vectors 8, 10-14, 17, 21, 29, 30 push one), then the vector number, and joins the
// common path that saves the general and SSE registers and calls `trap_dispatch`.
global_asm!(
    r#"
    .section .text.isr, "ax"
    .p2align 4
    .global isr_stubs
isr_stubs:
    .set vector, 0
    .rept 256
    .p2align 4
    .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    pushq $0
    .endif
    pushq $vector
    jmp isr_common
    .set vector, vector + 1
    .endr

isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $512, %rsp
    fxsave64 (%rsp)
    leaq 512(%rsp), %rdi
    cld
    call trap_dispatch
    fxrstor64 (%rsp)
    addq $512, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
"#,
    options(att_syntax)
);

extern "C" {
    static isr_stubs: u8;
}

/// The registers saved by `isr_common`, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Exception names, SDM vol. 3A table 6-1.
const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "nmi",
    "breakpoint",
    "overflow",
    "bound range exceeded",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid tss",
    "segment not present",
    "stack-segment fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 floating point",
    "alignment check",
    "machine check",
    "simd floating point",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "vmm communication",
    "security",
    "reserved",
];

#[no_mangle]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector as usize;
    if vector < 32 {
        let cr2 = if vector == 14 { Cr2::read_raw() } else { 0 };
        crate::serial::force_print(format_args!(
            "understudy epitaph: cpu exception {} ({}) error={:#x} rip={:#x} rsp={:#x} cr2={:#x}\n",
            vector, EXCEPTION_NAMES[vector], frame.error_code, frame.rip, frame.rsp, cr2
        ));
        halt_forever();
    }
    if vector == usize::from(crate::idle::WAKE_VECTOR) {
        crate::idle::wake_interrupt();
        return;
    }
    // Interrupts are on only while `idle` halts, for its timer (devices are polled); another
    // vector here is spurious. It is reported and ignored rather than fatal: a stray interrupt
    // must not stop the appliance.
    crate::println!("understudy: spurious interrupt vector {}", vector);
}

/// Loads the GDT (code segment + TSS) and the IDT.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        for slot in 0..IST_STACKS {
            // SAFETY: the stacks are only ever used by the CPU on interrupt entry; Rust never
            // creates a reference to them.
            let base = unsafe { core::ptr::addr_of!(IST_STACK_MEMORY.0[slot]) } as u64;
            tss.interrupt_stack_table[slot] = VirtAddr::new(base + IST_STACK_BYTES as u64);
        }
        tss
    });
    let (gdt, code, tss_selector) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let tss_selector = gdt.append(Descriptor::tss_segment(tss));
        (gdt, code, tss_selector)
    });
    gdt.load();
    // SAFETY: the selectors come from the GDT just loaded; a null data selector is valid in
    // 64-bit mode at ring 0 (SDM 3A 5.4.1.1).
    unsafe {
        CS::set_reg(*code);
        SS::set_reg(SegmentSelector(0));
        DS::set_reg(SegmentSelector(0));
        ES::set_reg(SegmentSelector(0));
        load_tss(*tss_selector);
    }

    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        let stubs = core::ptr::addr_of!(isr_stubs) as u64;
        let stub = |vector: u64| VirtAddr::new(stubs + vector * ISR_STUB_BYTES);
        // SAFETY (all `set_handler_addr` below): each stub is the entry for its own vector and
        // handles the error code the CPU pushes for that vector; `set_stack_index` names an IST
        // slot the TSS above fills in.
        unsafe {
            macro_rules! set {
                ($entry:expr, $vector:expr, $ist:expr) => {
                    $entry.set_handler_addr(stub($vector)).set_stack_index($ist);
                };
            }
            set!(idt.double_fault, 8, IST_DOUBLE_FAULT);
            set!(idt.invalid_tss, 10, IST_GENERAL);
            set!(idt.segment_not_present, 11, IST_GENERAL);
            set!(idt.stack_segment_fault, 12, IST_GENERAL);
            set!(idt.general_protection_fault, 13, IST_GENERAL);
            set!(idt.page_fault, 14, IST_GENERAL);
            set!(idt.alignment_check, 17, IST_GENERAL);
            set!(idt.machine_check, 18, IST_MACHINE_CHECK);
            set!(idt.cp_protection_exception, 21, IST_GENERAL);
            set!(idt.vmm_communication_exception, 29, IST_GENERAL);
            set!(idt.security_exception, 30, IST_GENERAL);
            for vector in [0u8, 1, 2, 3, 4, 5, 6, 7, 9, 16, 19, 20, 28] {
                let ist = if vector == 2 { IST_NMI } else { IST_GENERAL };
                set!(idt[vector], u64::from(vector), ist);
            }
            for vector in 32..=255u8 {
                set!(idt[vector], u64::from(vector), IST_GENERAL);
            }
        }
        idt
    });
    idt.load();
}

/// Masks both legacy 8259 PICs: devices are polled, and a PIC interrupt would otherwise arrive
/// on vectors 8-15, which alias CPU exceptions.
pub fn mask_legacy_pic() {
    // SAFETY: writing the interrupt mask registers of the 8259 pair has no memory effects.
    unsafe {
        x86_64::instructions::port::Port::<u8>::new(0x21).write(0xff);
        x86_64::instructions::port::Port::<u8>::new(0xa1).write(0xff);
    }
}

/// Stops this CPU for good: interrupts off, then `hlt` in a loop (an NMI can still wake it).
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// The I/O port of QEMU's `isa-debug-exit` device when configured with `iobase=0xf4`.
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Ends the appliance after its guest powered off: on QEMU with an `isa-debug-exit` device at
/// port 0xf4 the emulator exits with status `(code << 1) | 1`; elsewhere the write goes
/// nowhere and the CPU halts.
pub fn power_off(code: u8) -> ! {
    // SAFETY: a port write with no memory effects; without the device it is ignored.
    unsafe { x86_64::instructions::port::Port::<u8>::new(DEBUG_EXIT_PORT).write(code) };
    halt_forever()
}
