//! Executable memory for the translator's code cache in the hosted process (mmap).

use anyhow::{Context, Result};
use understudy_machine::{ExecutableMemory, Machine};

/// Size of the hosted code cache: twice what the Debian guest with httpd and redis makes hot
/// under redis-benchmark (65 MB); mapped on demand, so what is not used costs nothing.
pub const CODE_CACHE_BYTES: usize = 128 << 20;

/// An anonymous private mapping that is readable, writable and executable.
pub struct MappedCode {
    ptr: *mut u8,
    len_bytes: usize,
}

impl MappedCode {
    /// Maps `len_bytes` of RWX memory.
    pub fn new(len_bytes: usize) -> std::io::Result<MappedCode> {
        // SAFETY: an anonymous private mapping with no address hint has no preconditions;
        // the result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(MappedCode {
            ptr: ptr.cast(),
            len_bytes,
        })
    }
}

impl Drop for MappedCode {
    fn drop(&mut self) {
        // SAFETY: ptr and len_bytes are exactly the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len_bytes) };
    }
}

// SAFETY: the mapping belongs to this object alone; moving it moves sole access.
unsafe impl Send for MappedCode {}

// SAFETY: `new` maps len_bytes RWX bytes that stay mapped, at the same address, until drop.
unsafe impl ExecutableMemory for MappedCode {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }
    fn len_bytes(&self) -> usize {
        self.len_bytes
    }
}

/// Turns `machine`'s translator on with a fresh code cache of `CODE_CACHE_BYTES`,
/// translating a block once it has run `hot_executions` times.
pub fn enable_translator(machine: &mut Machine, hot_executions: u32) -> Result<()> {
    let memory = MappedCode::new(CODE_CACHE_BYTES)
        .context("cannot map executable memory for the translator")?;
    machine
        .enable_translator(Box::new(memory), hot_executions)
        .context("cannot start the translator")
}
