//! Host memory advice for guest RAM: transparent huge pages, as QEMU asks for them.

use understudy_machine::Machine;

/// Asks the host kernel to back the machine's RAM with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`, which hosts with THP in "madvise" mode need): a guest's
/// random accesses over tens of MiB otherwise miss the host's TLB on nearly every access,
/// and each miss walks host page tables held in memory. Pages already touched stay as they
/// are until the kernel collapses them; only speed changes, never guest-visible state, so
/// a refusal is ignored.
pub fn advise_huge_pages(machine: &Machine) {
    let ram = machine.hart().ram();
    // madvise wants a page-aligned start; the hint covers the whole host pages inside RAM.
    let page_bytes = 4096;
    let start = (ram.as_ptr() as usize).next_multiple_of(page_bytes);
    let end = (ram.as_ptr() as usize + ram.len()) & !(page_bytes - 1);
    if end <= start {
        return;
    }
    // SAFETY: [start, end) lies inside the RAM vector's allocation, which stays mapped
    // while `machine` lives; MADV_HUGEPAGE changes how pages are backed, not their
    // contents.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
    }
}
