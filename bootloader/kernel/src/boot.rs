//! The boot entries: PVH and multiboot2 (32-bit protected mode, one shared entry) and our UEFI
//! loader's 64-bit entry; all reach long mode with SSE on and call `kernel_entry`.
//!
//! The PVH boot protocol (Xen `docs/misc/pvh.pandoc`, "x86/HVM direct boot ABI") enters at the
//! 32-bit address in the ELF note `XEN_ELFNOTE_PHYS32_ENTRY` (type 18) with paging off, flat
//! 4 GiB segments, and `%ebx` holding the physical address of `struct hvm_start_info`. There is
//! no stack. We zero `.bss`, turn on SSE (the prebuilt `core` uses it), identity-map the low
//! 4 GiB with 2 MiB pages, enable long mode (Intel SDM vol. 3A 9.8.5) and call Rust.

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4                 /* name size: "Xen\0" */
    .long 4                 /* descriptor size: a 32-bit entry address */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .long pvh_start32
    .p2align 2

    /* Shared by the 32-bit and 64-bit entries: the same text assembles in both modes. */
    .macro enable_sse ax
    /* SSE (SDM 3A 13.1.3): CR0.MP|NE on, CR0.EM|TS off; CR4.OSFXSR|OSXMMEXCPT, plus PAE. */
    mov %cr0, \ax
    and $-13, \ax
    or $0x22, \ax
    mov \ax, %cr0
    mov %cr4, \ax
    or $0x620, \ax
    mov \ax, %cr4
    fninit

    /* XSAVE present (CPUID.1:ECX[26]): CR4.OSXSAVE and XCR0 = x87|SSE. */
    movl $1, %eax
    cpuid
    testl $0x04000000, %ecx
    jz 1f
    mov %cr4, \ax
    or $0x40000, \ax
    mov \ax, %cr4
    xorl %ecx, %ecx
    xorl %edx, %edx
    movl $3, %eax
    xsetbv
1:
    .endm

    .macro build_identity_map
    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages: 0..4 GiB. */
    movl $boot_pdpt, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $3, %eax
    movl $boot_pdpt, %edi
    movl $4, %ecx
2:
    movl %eax, (%edi)
    addl $4096, %eax
    addl $8, %edi
    loop 2b
    movl $boot_pd, %edi
    movl $0x83, %eax                      /* present | writable | page size */
    movl $2048, %ecx
3:
    movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 3b

    .endm

    /* Multiboot2 header (Multiboot2 specification 3.1): within the file's first 32 KiB,
       8-byte aligned. GRUB loads the ELF segments and enters at e_entry, pvh_start32, with
       %eax = 0x36d76289 and %ebx = the multiboot2 information structure. */
    .section .text.multiboot2, "a"
    .p2align 3
multiboot2_header:
    .long 0xe85250d6                      /* magic */
    .long 0                               /* architecture: i386 protected mode */
    .long multiboot2_header_end - multiboot2_header
    .long -(0xe85250d6 + 0 + (multiboot2_header_end - multiboot2_header))
    .word 0, 0                            /* end tag: type 0, flags 0, size 8 */
    .long 8
multiboot2_header_end:

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, %ebp                       /* hvm_start_info or multiboot2 info, kept while .bss is zeroed */
    movl %eax, %esi                       /* multiboot2 magic, if entered by a multiboot2 loader */

    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    movl %ebp, pvh_start_info_paddr
    movl $1, boot_protocol                /* BootProtocol::Pvh */
    cmpl $0x36d76289, %esi
    jne 5f
    movl $3, boot_protocol                /* BootProtocol::Multiboot2 */
5:
    movl $boot_stack_top, %esp

    enable_sse %eax
    build_identity_map

    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx                /* IA32_EFER */
    rdmsr
    orl $0x100, %eax                      /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax                 /* PG | PE */
    movl %eax, %cr0
    lgdt boot_gdt_pointer
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl pvh_start_info_paddr, %edi
    movl boot_protocol, %esi
    call kernel_entry
4:
    cli
    hlt
    jmp 4b

    /* The 64-bit entry for our own UEFI loader, found through the "Understudy" ELF note:
       long mode, interrupts off, the low 4 GiB identity-mapped by the firmware's tables, %rdi
       holding an hvm_start_info the loader built. We switch to our own tables, GDT and stack. */
    .global understudy_start64
understudy_start64:
    cli
    cld
    movq %rdi, %rbp
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movq %rbp, pvh_start_info_paddr
    movl $2, boot_protocol                /* BootProtocol::UnderstudyLoader */
    movq $boot_stack_top, %rsp
    enable_sse %rax
    build_identity_map
    movq $boot_pml4, %rax
    movq %rax, %cr3
    lgdt boot_gdt_pointer64
    pushq $0x08
    leaq long_mode_entry(%rip), %rax
    pushq %rax
    lretq

    .section .note.understudy, "a", @note
    .p2align 2
    .long 11                /* name size: "Understudy\0" */
    .long 8                 /* descriptor size: a 64-bit entry address */
    .long 1                 /* UNDERSTUDY_NOTE_START64 */
    .asciz "Understudy"
    .p2align 2
    .quad understudy_start64
    .p2align 2

    .section .rodata.boot_gdt, "a"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF              /* 64-bit code, ring 0 */
    .quad 0x00CF92000000FFFF              /* data, ring 0 */
boot_gdt_end:
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .p2align 3
boot_gdt_pointer64:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .data.pvh_start_info, "aw"
    .p2align 3
    .global pvh_start_info_paddr
pvh_start_info_paddr:
    .quad 0
boot_protocol:
    .long 0

    .section .bss.boot, "aw", @nobits
    .p2align 12
    .global boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
    /* 2 MiB: building and running the guest's machine takes over 300 KiB of frames (the
       machine is moved by value through a few of them), and an overflow would run into the
       page tables just below. */
boot_stack:
    .skip 2048 * 1024
boot_stack_top:
"#,
    options(att_syntax)
);

/// The first gibibytes of physical memory that the boot code identity-maps.
pub const IDENTITY_MAPPED_BYTES: u64 = 4 << 30;

extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
    static boot_pml4: u8;
}

/// The physical range the kernel image occupies, `.bss` included.
pub fn kernel_image_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(__kernel_start) as u64,
        core::ptr::addr_of!(__kernel_end) as u64,
    )
}

/// The physical address of the boot PML4 (identity-mapped, so also its virtual address).
pub fn boot_pml4_address() -> u64 {
    core::ptr::addr_of!(boot_pml4) as u64
}
