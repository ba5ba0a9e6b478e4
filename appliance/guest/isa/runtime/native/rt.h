/* The benchmark guests' runtime (../rt.h) for a native build on the host: the same C source
   compiled for the host CPU and run as a process, the bare-metal reference of the CPU
   benchmark. Only what the benchmark guests use: the integer types, p() and CSR_READ, which
   reads 0 (a process has no minstret; the benchmark compares only the checksums). */
#ifndef RT_H
#define RT_H
#include <stdio.h>
#include <sys/mman.h>
#include "../rt_types.h"

#define CSR_READ(csr) ((u64)0)

/* "name 0x<16 hex digits>", as ../rt.c prints it. */
static inline void p(const char *name, u64 v)
{
    printf("%s 0x%016llx\n", name, (unsigned long long)v);
}

/* The guests' arrays live in .bss; our machine backs guest RAM with transparent huge pages,
   so the native process asks for them too (the host's THP mode may be "madvise"), lest a
   memory-bound guest pay TLB misses the guest does not. Linker-defined symbols. */
extern char __bss_start[], _end[];
#define RT_HUGE_PAGE_BYTES ((uintptr_t)2 << 20)
__attribute__((constructor)) static void rt_huge_pages(void)
{
    uintptr_t start = ((uintptr_t)__bss_start + RT_HUGE_PAGE_BYTES - 1) & ~(RT_HUGE_PAGE_BYTES - 1);
    uintptr_t end = (uintptr_t)_end & ~(RT_HUGE_PAGE_BYTES - 1);
    if (end > start)
        madvise((void *)start, end - start, MADV_HUGEPAGE);
}
#endif
